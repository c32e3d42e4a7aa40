"""BERT WordPiece tokenizer files (HF ``tokenizer.json``) for the ``clip_text`` model.

The gateway tokenises in Go from a ``tokenizer.json``; this module makes that file:

* :func:`train_tiny_tokenizer` trains a small multilingual WordPiece vocabulary for the tiny test model,
  configured exactly like ``distilbert-base-multilingual-cased`` (cased, accents kept, CJK ideographs split
  into single characters) and with mBERT's special-token ids.
* :func:`normalise_tokenizer_json` prepares the production tokenizer (from the hub) for the gateway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# mBERT (bert-base-multilingual-cased / distilbert-base-multilingual-cased) vocabulary layout:
# [PAD]=0, [unused1]..[unused99]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_IDS = {PAD: 0, UNK: 100, CLS: 101, SEP: 102, MASK: 103}
N_UNUSED = 99
MAX_INPUT_CHARS_PER_WORD = 100
DEFAULT_TINY_VOCAB = 10000


def common_cjk_characters() -> list[str]:
    """GB2312 level-1 hanzi (the 3755 most common simplified Chinese characters), from Python's codec.

    Decoding the GB2312 rows 16-55 is a deterministic, offline way to name "common" characters; they
    also cover most everyday Japanese kanji. Each becomes a single token (BERT splits ideographs apart).
    """
    chars = []
    for row in range(0xB0, 0xD8):
        for col in range(0xA1, 0xFF):
            try:
                ch = bytes([row, col]).decode("gb2312")
            except UnicodeDecodeError:
                continue
            chars.append(ch)
    return chars


def kana_characters() -> list[str]:
    """Hiragana and katakana (incl. the prolonged sound mark), which BERT does NOT split apart."""
    return [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)] + ["\u30fc"]


def _configure(tok: Tokenizer) -> None:
    """Apply distilbert-base-multilingual-cased's pipeline (everything except the vocabulary)."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)


def build_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """A BERT WordPiece tokenizer over ``vocab`` with mBERT's normaliser, pre-tokeniser and template."""
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##",
                                     max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    _configure(tok)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    # Same flags as the hub file: matched before normalisation, never split.
    tok.add_special_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                       special=True) for t in sorted(SPECIAL_IDS, key=SPECIAL_IDS.get)])
    tok.no_truncation()
    tok.no_padding()
    return tok


def train_tiny_tokenizer(lines: Iterable[str], vocab_size: int = DEFAULT_TINY_VOCAB) -> Tokenizer:
    """Train a WordPiece vocabulary on ``lines`` and lay it out with mBERT's special-token ids.

    Deterministic for a given corpus. The ``tokenizers`` trainer numbers new continuation pieces
    (``##x``) in hash-map order, and equal-count merges are then broken by those numbers, so two runs
    can differ. Registering every ``##x`` up front (as trainer special tokens, in code-point order)
    fixes all initial ids; the alphabet itself is sorted by code point by the trainer, and merges are
    ordered by (count, pair ids), so the result is reproducible.
    """
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    lines = list(lines)
    alphabet = common_cjk_characters() + kana_characters()
    chars = set(alphabet)
    for line in lines:
        chars.update(line)
    # Every non-ideograph character also gets its continuation form, so that a word made of known
    # characters never collapses to [UNK] (mBERT's vocabulary has the same property).
    continuation = ["##" + c for c in sorted(chars)
                    if c.isprintable() and not c.isspace() and not _is_cjk_ideograph(c)]

    tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##",
                                     max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    _configure(tok)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size - N_UNUSED,  # [unused1..99] are added below
        min_frequency=2,
        special_tokens=[PAD, UNK, CLS, SEP, MASK] + continuation,
        initial_alphabet=alphabet,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    learned = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t not in SPECIAL_IDS]

    vocab: dict[str, int] = {PAD: 0}
    for i in range(1, N_UNUSED + 1):
        vocab[f"[unused{i}]"] = i
    vocab.update({UNK: 100, CLS: 101, SEP: 102, MASK: 103})
    for t in learned:
        vocab.setdefault(t, len(vocab))
    return build_tokenizer(vocab)


def _is_cjk_ideograph(ch: str) -> bool:
    """Same ranges as BERT's ``_is_chinese_char`` (characters the normaliser isolates)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    """Write ``tokenizer.json`` with stable formatting (pretty, sorted vocab by id) for small diffs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(tok.to_str())
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def normalise_tokenizer_json(src: Path, dst: Path) -> dict:
    """Copy a hub ``tokenizer.json`` for the gateway: truncation/padding switched off (the gateway owns
    both: max 128 tokens, pad to the batch's longest with [PAD]). Returns a summary for the manifest."""
    tok = Tokenizer.from_file(str(src))
    tok.no_truncation()
    tok.no_padding()
    save_tokenizer(tok, dst)
    return tokenizer_summary(tok)


def tokenizer_summary(tok: Tokenizer) -> dict:
    """Facts the Go tokenizer needs: vocabulary size and special-token ids."""
    v = tok.get_vocab()
    return {"vocab_size": tok.get_vocab_size(), **{f"{t}_id": v.get(t) for t in SPECIAL_IDS}}
