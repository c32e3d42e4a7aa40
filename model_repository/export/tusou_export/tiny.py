"""Regenerate the tiny committed test models under ``model_repository/tiny/``.

    PYTHONPATH=model_repository/export .local/venv-export/bin/python -m tusou_export tiny

Everything is deterministic: the tokenizer is trained on the committed corpus
(``model_repository/export/corpus/tiny_corpus.txt``) and the weights come from fixed seeds, so re-running
this reproduces the committed files byte for byte (``--check`` verifies that without writing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from . import REPO_ROOT
from .models import random_image_tower, random_text_tower, tiny_image_config, tiny_text_config
from .onnx_io import DEFAULT_OPSET, check_image, check_text, export_image, export_text, parity_dicts, sha256
from .tokenizer import save_tokenizer, tokenizer_summary, train_tiny_tokenizer

CORPUS = REPO_ROOT / "model_repository" / "export" / "corpus" / "tiny_corpus.txt"
TINY_DIR = REPO_ROOT / "model_repository" / "tiny"
IMAGE_SEED = 20240601
TEXT_SEED = 20240602

FILES = ("clip_image/1/model.onnx", "clip_text/1/model.onnx", "clip_text/tokenizer.json")


def generate(out_dir: Path, opset: int = DEFAULT_OPSET) -> dict:
    """Write the tiny tokenizer and both tiny ONNX models under ``out_dir``; returns a manifest."""
    tok = train_tiny_tokenizer(CORPUS.read_text(encoding="utf-8").splitlines())
    tok_path = out_dir / "clip_text" / "tokenizer.json"
    save_tokenizer(tok, tok_path)
    tok_info = tokenizer_summary(tok)

    image = random_image_tower(tiny_image_config(), IMAGE_SEED)
    image_path = out_dir / "clip_image" / "1" / "model.onnx"
    export_image(image, image_path, opset)
    image_parity = check_image(image, image_path)

    text = random_text_tower(tiny_text_config(tok_info["vocab_size"]), TEXT_SEED)
    text_path = out_dir / "clip_text" / "1" / "model.onnx"
    export_text(text, text_path, opset)
    text_parity = check_text(text, text_path, tok_info["vocab_size"])

    return {
        "kind": "tiny-random-init",
        "opset": opset,
        "seeds": {"clip_image": IMAGE_SEED, "clip_text": TEXT_SEED},
        "tokenizer": tok_info,
        "params": {"clip_image": sum(p.numel() for p in image.parameters()),
                   "clip_text": sum(p.numel() for p in text.parameters())},
        "files": {f: {"sha256": sha256(out_dir / f), "bytes": (out_dir / f).stat().st_size} for f in FILES},
        "parity": {"clip_image": parity_dicts(image_parity), "clip_text": parity_dicts(text_parity)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tusou_export tiny", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=TINY_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and fail if it differs from --out (writes nothing)")
    args = ap.parse_args(argv)

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = generate(Path(tmp))
            diff = [f for f in FILES
                    if not (args.out / f).exists() or sha256(args.out / f) != manifest["files"][f]["sha256"]]
        if diff:
            print(f"tiny models are stale or not reproducible: {diff}")
            return 1
        print("tiny models reproduce byte for byte")
        return 0

    manifest = generate(args.out)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: manifest[k] for k in ("tokenizer", "params", "files")}, indent=2))
    return 0
