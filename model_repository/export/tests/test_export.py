"""Export tooling tests (PyTorch needed: run by `make export-test`, not `make test`).

* the tiny models regenerate byte for byte, and tokenizer training is deterministic;
* the pretrained code path (hub layout) works on local checkpoints made here with the real library
  layouts (CLIPModel + sentence-transformers Transformer/Pooling/Dense), and the ONNX text model equals
  sentence-transformers' own ``encode``;
* fp16 export keeps FP32 I/O and stays within its parity threshold;
* full-size random-init export (ViT-B/32 + multilingual DistilBERT) passes parity (marked ``slow``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tusou_export import export as export_mod  # noqa: E402
from tusou_export import tiny  # noqa: E402
from tusou_export.models import tiny_image_config, tiny_text_config  # noqa: E402
from tusou_export.onnx_io import session, sha256  # noqa: E402
from tusou_export.tokenizer import train_tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.torch


def test_tokenizer_training_is_deterministic():
    lines = tiny.CORPUS.read_text(encoding="utf-8").splitlines()
    a = train_tiny_tokenizer(lines).to_str()
    b = train_tiny_tokenizer(lines).to_str()
    assert a == b


def test_tiny_models_regenerate_byte_for_byte(tmp_path, tiny_dir):
    manifest = tiny.generate(tmp_path)
    for rel in tiny.FILES:
        assert sha256(tmp_path / rel) == sha256(tiny_dir / rel), f"{rel} differs from the committed file"
    assert manifest["tokenizer"]["vocab_size"] == 10000
    assert sorted(manifest["versions"], key=int) == [str(v) for v in tiny.VERSIONS]
    for v in manifest["versions"].values():
        for results in v["parity"].values():
            assert results and all(r["min_cosine"] >= 0.9999 for r in results)


# --------------------------------------------------------------------------------------------------------
# Local checkpoints in the hub layouts of openai/clip-vit-base-patch32 and
# sentence-transformers/clip-ViT-B-32-multilingual-v1, but tiny and random.


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A full CLIPModel checkpoint (text + vision), like the hub repo; only the vision half is exported."""
    d = tmp_path_factory.mktemp("clip")
    vision = tiny_image_config().to_dict()
    text = transformers.CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=100, max_position_embeddings=16)
    cfg = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision, projection_dim=512)
    torch.manual_seed(7)
    transformers.CLIPModel(cfg).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def st_checkpoint(tmp_path_factory, tiny_dir) -> Path:
    """A sentence-transformers directory: DistilBERT at the root, 1_Pooling (mean), 2_Dense (no bias)."""
    st = pytest.importorskip("sentence_transformers")
    d = tmp_path_factory.mktemp("st")
    bert_dir = d / "bert"
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tiny_dir / "clip_text" / "tokenizer.json"), unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(8)
    transformers.DistilBertModel(tiny_text_config(tok.vocab_size)).save_pretrained(str(bert_dir))
    tok.save_pretrained(str(bert_dir))
    mods = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    word = mods.Transformer(str(bert_dir), max_seq_length=128)
    dim = tiny_text_config(tok.vocab_size).dim
    pool = mods.Pooling(dim, pooling_mode="mean")
    dense = mods.Dense(dim, 512, bias=False,
                            activation_function=torch.nn.Identity())
    model = st.SentenceTransformer(modules=[word, pool, dense], device="cpu")
    out = d / "model"
    model.save(str(out))
    return out


def test_pretrained_path_on_local_checkpoints(tmp_path, clip_checkpoint, st_checkpoint):
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "repo"
    rc = export_mod.main(["--image-model", str(clip_checkpoint), "--text-model", str(st_checkpoint),
                          "--out", str(out), "--threads", "1"])
    assert rc == 0
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["kind"] == "pretrained"
    assert set(manifest["files"]) == {"clip_image/1/model.onnx", "clip_text/1/model.onnx",
                                      "clip_text/tokenizer.json"}
    for rel, info in manifest["files"].items():
        assert sha256(out / rel) == info["sha256"]
    assert manifest["tokenizer"]["[PAD]_id"] == 0 and manifest["tokenizer"]["vocab_size"] == 10000
    assert manifest["models"]["clip_text"]["dense"]["bias"] is False
    assert not list(out.glob(".export-*")), "staging directory left behind"

    # Image: ONNX equals CLIPModel.get_image_features of the full checkpoint.
    clip = transformers.CLIPModel.from_pretrained(str(clip_checkpoint)).eval()
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=torch.from_numpy(x))
    ref = (ref if isinstance(ref, torch.Tensor) else ref.pooler_output).numpy()
    (got,) = session(out / "clip_image" / "1" / "model.onnx").run(["image_embeds"], {"pixel_values": x})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)

    # Text: gateway-style tokenisation with the exported tokenizer.json, ONNX == sentence-transformers.
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(out / "clip_text" / "tokenizer.json"))
    texts = ["a red car parked on a quiet street", "一只在雪地里玩耍的狗", "x"]
    encs = [tok.encode(t).ids for t in texts]
    longest = max(map(len, encs))
    ids = np.zeros((len(encs), longest), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e)], mask[i, :len(e)] = e, 1
    (got,) = session(out / "clip_text" / "1" / "model.onnx").run(
        ["text_embeds"], {"input_ids": ids, "attention_mask": mask})
    ref = st.SentenceTransformer(str(st_checkpoint), device="cpu").encode(texts, convert_to_numpy=True,
                                                                           normalize_embeddings=False)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_fp16_export_keeps_fp32_io(tmp_path, clip_checkpoint, st_checkpoint):
    out = tmp_path / "repo16"
    rc = export_mod.main(["--image-model", str(clip_checkpoint), "--text-model", str(st_checkpoint),
                          "--out", str(out), "--fp16", "--threads", "1"])
    assert rc == 0
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["fp16"] is True and manifest["min_cosine"] == export_mod.MIN_COSINE_FP16
    sess = session(out / "clip_image" / "1" / "model.onnx")
    assert [i.type for i in sess.get_inputs()] == ["tensor(float)"]
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"]


def test_parity_failure_fails_the_export(tmp_path, clip_checkpoint):
    out = tmp_path / "repo_fail"
    rc = export_mod.main(["--image-model", str(clip_checkpoint), "--only", "image", "--out", str(out),
                          "--min-cosine", "1.5", "--threads", "1"])  # an impossible threshold
    assert rc == 1
    assert not (out / "clip_image" / "1" / "model.onnx").exists(), "failed export must not be moved in place"


def test_export_as_version_n_leaves_other_versions_alone(tmp_path, clip_checkpoint, st_checkpoint):
    """--version 2 writes Triton version 2 beside an existing version 1 (a second generation), with its own
    tokenizer and manifest, and never touches version 1's files."""
    out = tmp_path / "repo"
    common = ["--image-model", str(clip_checkpoint), "--text-model", str(st_checkpoint), "--out", str(out),
              "--threads", "1"]
    assert export_mod.main(common) == 0
    v1 = {rel: sha256(out / rel) for rel in ("clip_image/1/model.onnx", "clip_text/1/model.onnx",
                                             "clip_text/tokenizer.json", "export_manifest.json")}

    assert export_mod.main(common + ["--version", "2"]) == 0
    assert {rel: sha256(out / rel) for rel in v1} == v1, "exporting version 2 changed version 1's files"
    manifest = json.loads((out / "export_manifest.v2.json").read_text())
    assert manifest["version"] == 2
    assert set(manifest["files"]) == {"clip_image/2/model.onnx", "clip_text/2/model.onnx",
                                      "clip_text/2/tokenizer.json"}
    for rel, info in manifest["files"].items():
        assert sha256(out / rel) == info["sha256"]
    assert json.loads((out / "export_manifest.json").read_text())["version"] == 1
    # Triton's layout: numbered directories under each model, nothing else created.
    assert sorted(p.name for p in (out / "clip_image").iterdir()) == ["1", "2"]
    assert not list(out.glob(".export-*")), "staging directory left behind"

    # Same checkpoint, so version 2 computes exactly what version 1 does: only the place changed.
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (a,) = session(out / "clip_image" / "1" / "model.onnx").run(["image_embeds"], {"pixel_values": x})
    (b,) = session(out / "clip_image" / "2" / "model.onnx").run(["image_embeds"], {"pixel_values": x})
    np.testing.assert_array_equal(a, b)


def test_export_version_must_be_positive(tmp_path, clip_checkpoint):
    with pytest.raises(SystemExit):
        export_mod.main(["--image-model", str(clip_checkpoint), "--only", "image", "--out", str(tmp_path),
                         "--version", "0"])
    assert not list(tmp_path.rglob("*.onnx"))


def test_tiny_versions_have_distinct_seeds_and_version_1_is_unchanged():
    assert tiny.seeds(1) == {"clip_image": tiny.IMAGE_SEED, "clip_text": tiny.TEXT_SEED}
    all_seeds = [s for v in (1, 2, 3) for s in tiny.seeds(v).values()]
    assert len(set(all_seeds)) == len(all_seeds)
    with pytest.raises(ValueError):
        tiny.seeds(0)


def test_tiny_single_version_regenerates_into_its_directory(tmp_path, tiny_dir):
    """`tiny --version 2` writes only version 2's models (and the shared tokenizer), byte for byte."""
    assert tiny.main(["--out", str(tmp_path), "--version", "2"]) == 0
    assert not (tmp_path / "clip_image" / "1").exists()
    for rel in tiny.files((2,)):
        assert sha256(tmp_path / rel) == sha256(tiny_dir / rel), rel
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["versions"]) == ["2"]
    assert manifest["versions"]["2"]["seeds"] == tiny.seeds(2)


def test_random_init_refuses_git_tree(repo_root):
    with pytest.raises(SystemExit):
        export_mod.main(["--random-init", "--out", str(repo_root / "model_repository")])


@pytest.mark.slow
def test_random_init_full_size_export(tmp_path):
    out = tmp_path / "full"
    assert export_mod.main(["--random-init", "--out", str(out)]) == 0
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["kind"] == "random-init"
    for name, results in manifest["parity"].items():
        assert results and all(r["min_cosine"] >= 0.9999 for r in results), name
    # Full-size graphs: ViT-B/32 (~88 M params) and multilingual DistilBERT (~135 M params) in fp32.
    assert manifest["files"]["clip_image/1/model.onnx"]["bytes"] > 300e6
    assert manifest["files"]["clip_text/1/model.onnx"]["bytes"] > 500e6
    sess = session(out / "clip_text" / "1" / "model.onnx")
    ids = np.array([[101, 5000, 119546, 102]], dtype=np.int64)  # highest id of the 119,547-token vocab
    (emb,) = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert emb.shape == (1, 512)


def test_pooling_config_formats():
    """The hub repo uses the sentence-transformers < 6 format; 6.x saves the new one. Both must work."""
    from tusou_export.models import pooling_modes

    old = {"word_embedding_dimension": 768, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
           "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
    assert pooling_modes(old) == ["mean"]
    assert pooling_modes({**old, "pooling_mode_cls_token": True}) == ["cls", "mean"]
    assert pooling_modes({"embedding_dimension": 768, "pooling_mode": "mean"}) == ["mean"]
    assert pooling_modes({"pooling_mode": ["mean", "max"]}) == ["mean", "max"]
