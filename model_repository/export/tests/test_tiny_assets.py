"""The committed tiny models and tokenizer behave as documented (model_repository/tiny/README.md).

Needs only ``tokenizers``, ``onnxruntime`` and ``numpy``: no PyTorch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

MBERT_SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
MAX_TOKENS = 128


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return tokenizers.Tokenizer.from_file(str(tiny_dir / "clip_text" / "tokenizer.json"))


@pytest.fixture(scope="module")
def tok_json(tiny_dir):
    return json.loads((tiny_dir / "clip_text" / "tokenizer.json").read_text(encoding="utf-8"))


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_tokenizer_pipeline_is_mbert_cased(tok_json):
    assert tok_json["normalizer"] == {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                      "strip_accents": None, "lowercase": False}
    assert tok_json["pre_tokenizer"] == {"type": "BertPreTokenizer"}
    m = tok_json["model"]
    assert (m["type"], m["unk_token"], m["continuing_subword_prefix"], m["max_input_chars_per_word"]) == \
        ("WordPiece", "[UNK]", "##", 100)
    assert tok_json["truncation"] is None and tok_json["padding"] is None
    single = tok_json["post_processor"]["single"]
    assert [next(iter(x.values()))["id"] for x in single] == ["[CLS]", "A", "[SEP]"]


def test_special_token_ids(tok, tok_json):
    vocab = tok.get_vocab()
    assert {t: vocab[t] for t in MBERT_SPECIALS} == MBERT_SPECIALS
    assert {a["content"]: a["id"] for a in tok_json["added_tokens"]} == MBERT_SPECIALS
    assert all(vocab[f"[unused{i}]"] == i for i in range(1, 100))
    assert sorted(vocab.values()) == list(range(tok.get_vocab_size()))


def test_cjk_characters_are_single_tokens(tok):
    text = "夜晚停在安静街道上的一辆红色汽车"
    enc = tok.encode(text)
    assert enc.tokens[1:-1] == list(text)
    assert 100 not in enc.ids


def test_cased_and_accents_kept(tok):
    assert tok.encode("Café").ids != tok.encode("cafe").ids
    assert tok.decode(tok.encode("naïve Größe").ids) == "naïve Größe"


def test_every_known_character_has_continuation_form(tok):
    """A word made of known (non-ideograph) characters never becomes [UNK]."""
    for word in ("Straßenbahnhaltestelle", "красная", "صورة", "ひらがなカタカナ", "Ærø"):
        assert 100 not in tok.encode(word).ids, word


def test_long_word_is_one_unk(tok):
    ids = tok.encode("a" * 101).ids
    assert ids == [101, 100, 102]


def _text_batch(tok, texts):
    encs = [tok.encode(t) for t in texts]
    ids = [e.ids[:MAX_TOKENS - 1] + [102] if len(e.ids) > MAX_TOKENS else e.ids for e in encs]
    longest = max(map(len, ids))
    input_ids = np.zeros((len(ids), longest), dtype=np.int64)  # [PAD] = 0
    mask = np.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return input_ids, mask


VERSIONS = [1, 2]  # the committed tiny generations (local stack: `a` = 1, `b` = 2)


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("version", VERSIONS)
def test_tiny_text_model_runs_and_ignores_padding(tok, tiny_dir, version):
    sess = _session(tiny_dir / "clip_text" / str(version) / "model.onnx")
    texts = ["a red car", "一只在雪地里玩耍的狗的照片", "Поиск по картинкам находит фотографии, похожие на "
             "загруженное изображение, даже если " + "очень " * 20 + "длинный текст",
             "x", "naïve café", "画像検索", "밤에 조용한 거리", "صورة لكلب"]
    ids, mask = _text_batch(tok, texts)
    assert ids.shape[1] >= 40
    (batch,) = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})
    assert batch.shape == (8, 512) and batch.dtype == np.float32 and np.isfinite(batch).all()
    for i in range(len(texts)):
        n = int(mask[i].sum())
        (one,) = sess.run(["text_embeds"], {"input_ids": ids[i:i + 1, :n], "attention_mask": mask[i:i + 1, :n]})
        np.testing.assert_allclose(one[0], batch[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("batch", [1, 8])
def test_tiny_image_model_runs(tiny_dir, batch, version):
    sess = _session(tiny_dir / "clip_image" / str(version) / "model.onnx")
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    (out,) = sess.run(["image_embeds"], {"pixel_values": x})
    assert out.shape == (batch, 512) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[-1]) or batch == 1
    (first,) = sess.run(["image_embeds"], {"pixel_values": x[:1]})
    np.testing.assert_allclose(first[0], out[0], rtol=1e-4, atol=1e-5)


def test_tiny_versions_are_different_generations(tok, tiny_dir):
    """Version 2 has the same signature as version 1 but its own weights: a different embedding space."""
    x = np.random.default_rng(3).standard_normal((4, 3, 224, 224)).astype(np.float32)
    img = [_session(tiny_dir / "clip_image" / str(v) / "model.onnx").run(["image_embeds"], {"pixel_values": x})[0]
           for v in VERSIONS]
    assert img[0].shape == img[1].shape == (4, 512)
    assert (_cos(img[0], img[1]) < 0.99).all(), _cos(img[0], img[1])

    ids, mask = _text_batch(tok, ["a red car", "一只狗", "naïve café"])
    txt = [_session(tiny_dir / "clip_text" / str(v) / "model.onnx").run(
        ["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0] for v in VERSIONS]
    assert txt[0].shape == txt[1].shape == (3, 512)
    assert (_cos(txt[0], txt[1]) < 0.99).all(), _cos(txt[0], txt[1])


def test_manifest_records_every_version(tiny_dir):
    import hashlib

    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert sorted(manifest["versions"], key=int) == [str(v) for v in VERSIONS]
    assert manifest["tokenizer_shared_by_versions"] == VERSIONS
    seeds = [s for v in manifest["versions"].values() for s in v["seeds"].values()]
    assert len(set(seeds)) == len(seeds), "every version and tower has its own seed"
    want = {f"clip_{t}/{v}/model.onnx" for t in ("image", "text") for v in VERSIONS} | {"clip_text/tokenizer.json"}
    assert set(manifest["files"]) == want
    for rel, info in manifest["files"].items():
        data = (tiny_dir / rel).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (info["sha256"], info["bytes"]), rel
