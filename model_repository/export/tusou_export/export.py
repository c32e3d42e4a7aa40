"""Export the production CLIP towers to ONNX for Triton, with a parity check against PyTorch.

Real models (needs the Hugging Face hub, or local copies of the two repositories)::

    PYTHONPATH=model_repository/export .local/venv-export/bin/python -m tusou_export export

writes ``model_repository/clip_image/1/model.onnx``, ``model_repository/clip_text/1/model.onnx``,
``model_repository/clip_text/tokenizer.json`` and ``model_repository/export_manifest.json``.
``--version N`` writes Triton model version N instead (``clip_*/N/model.onnx``, the tokenizer as
``clip_text/N/tokenizer.json``, ``export_manifest.vN.json``), leaving the other versions alone, so a new
generation can be served next to the current one (see the configs' version_policy).
``--image-model``/``--text-model`` accept a hub name or a local directory (e.g. a ``git clone`` of the hub repo).

Same architectures, randomly initialised, no download (proves the tooling on machines without the hub)::

    PYTHONPATH=model_repository/export .local/venv-export/bin/python -m tusou_export export --random-init

writes into a fresh temporary directory (never into the git tree) and prints its path.

Every export is checked with ONNX Runtime against the PyTorch module on several batches (cosine of each
row >= --min-cosine, default 0.9999 for fp32 and 0.999 for --fp16); the files are only moved into place if
the check passes, and a failing check exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime
import tokenizers
import torch
import transformers

from . import REPO_ROOT
from .models import (EMBED_DIM, full_image_config, full_text_config, pretrained_image_tower, pretrained_text_tower,
                     random_image_tower, random_text_tower, resolve_sentence_transformer)
from .onnx_io import (DEFAULT_OPSET, MIN_COSINE, ParityError, check_image, check_text, export_image, export_text,
                      parity_dicts, sha256)
from .tokenizer import SPECIAL_IDS, normalise_tokenizer_json, save_tokenizer, tokenizer_summary

IMAGE_MODEL = "openai/clip-vit-base-patch32"
TEXT_MODEL = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
DEFAULT_OUT = REPO_ROOT / "model_repository"
TINY_TOKENIZER = REPO_ROOT / "model_repository" / "tiny" / "clip_text" / "tokenizer.json"
RANDOM_SEED = 1234
MIN_COSINE_FP16 = 0.999


def _resolve_dir(name_or_path: str, revision: str | None, patterns: list[str]) -> tuple[Path, str]:
    """A local directory for a hub name (downloaded once into the HF cache) and the revision it is at."""
    p = Path(name_or_path)
    if p.is_dir():
        return p, f"local:{p.resolve()}"
    from huggingface_hub import snapshot_download

    local = Path(snapshot_download(name_or_path, revision=revision, allow_patterns=patterns))
    # .../snapshots/<commit sha>/ : the exact commit that was exported.
    return local, local.name if local.parent.name == "snapshots" else (revision or "unknown")


def _build_image(args) -> tuple[torch.nn.Module, dict]:
    if args.random_init:
        tower = random_image_tower(full_image_config(), RANDOM_SEED)
        return tower, {"model": f"random-init CLIPVisionConfig ViT-B/32 (seed {RANDOM_SEED})", "revision": None}
    path, rev = _resolve_dir(args.image_model, args.image_revision, ["*.json", "*.txt", "*.safetensors"])
    if not any(path.glob("*.safetensors")) and not Path(args.image_model).is_dir():  # older repos: .bin only
        path, rev = _resolve_dir(args.image_model, args.image_revision, ["*.json", "*.txt", "*.bin"])
    tower = pretrained_image_tower(str(path))
    return tower, {"model": args.image_model, "revision": rev}


def _build_text(args) -> tuple[torch.nn.Module, dict, Path | None]:
    """The text tower, its provenance, and the directory holding its tokenizer (None for random init)."""
    if args.random_init:
        tower = random_text_tower(full_text_config(), RANDOM_SEED + 1)
        return tower, {"model": f"random-init DistilBertConfig multilingual-cased (seed {RANDOM_SEED + 1})",
                       "revision": None}, None
    patterns = ["*.json", "*.txt", "*.safetensors", "*/*.json", "*/*.safetensors"]
    path, rev = _resolve_dir(args.text_model, args.text_revision, patterns)
    if not Path(args.text_model).is_dir():
        try:
            resolve_sentence_transformer(str(path))
            has_weights = any(path.glob("*.safetensors"))
        except FileNotFoundError:
            has_weights = False
        if not has_weights:  # older repos (this one included) ship pytorch_model.bin files
            path, rev = _resolve_dir(args.text_model, args.text_revision, patterns + ["*.bin", "*/*.bin"])
    parts = resolve_sentence_transformer(str(path))
    tower = pretrained_text_tower(parts)
    return tower, {"model": args.text_model, "revision": rev,
                   "pooling": parts.pooling_config, "dense": parts.dense_config,
                   "sentence_bert_config": parts.st_config}, parts.transformer_dir


def _write_tokenizer(src_dir: Path | None, dst: Path, model_vocab: int) -> dict:
    """tokenizer.json for the gateway; checks it fits the model's embedding table."""
    if src_dir is None:
        shutil.copyfile(TINY_TOKENIZER, dst)
        info = tokenizer_summary(tokenizers.Tokenizer.from_file(str(dst)))
        info["note"] = "random-init export: the tiny tokenizer (ids < its vocab size fit any larger table)"
    else:
        src = src_dir / "tokenizer.json"
        if src.exists():
            info = normalise_tokenizer_json(src, dst)
        else:  # older repos ship only vocab.txt: let transformers build the fast tokenizer
            fast = transformers.AutoTokenizer.from_pretrained(str(src_dir), use_fast=True)
            save_tokenizer(fast.backend_tokenizer, dst)
            info = normalise_tokenizer_json(dst, dst)
        if info["vocab_size"] != model_vocab:
            raise SystemExit(f"tokenizer vocab {info['vocab_size']} != text model vocab {model_vocab}")
        data = json.loads(dst.read_text(encoding="utf-8"))
        info["normalizer"] = data.get("normalizer")
        info["model_type"] = data.get("model", {}).get("type")
    missing = [t for t in SPECIAL_IDS if info.get(f"{t}_id") is None]
    if missing:
        raise SystemExit(f"tokenizer lacks special tokens {missing}")
    return info


def version_paths(version: int) -> dict[str, str]:
    """Where version N's files go, relative to the model repository root.

    Version 1 keeps the historical locations (clip_text/tokenizer.json, export_manifest.json) that the
    gateway configs, the Makefile and the k8s export job read; a later version's tokenizer lives in its
    own version directory, because another generation may bring another vocabulary.
    """
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    return {
        "image": f"clip_image/{version}/model.onnx",
        "text": f"clip_text/{version}/model.onnx",
        "tokenizer": "clip_text/tokenizer.json" if version == 1 else f"clip_text/{version}/tokenizer.json",
        "manifest": "export_manifest.json" if version == 1 else f"export_manifest.v{version}.json",
    }


def _inside_repo(p: Path) -> bool:
    try:
        p.resolve().relative_to(REPO_ROOT)
        return True
    except ValueError:
        return False


def run(args) -> dict:
    """Export, verify, then move into place. Returns the manifest."""
    fp16 = args.fp16
    min_cos = args.min_cosine if args.min_cosine is not None else (MIN_COSINE_FP16 if fp16 else MIN_COSINE)
    out: Path = args.out
    paths = version_paths(args.version)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))  # same filesystem -> atomic renames
    manifest: dict = {
        "kind": "random-init" if args.random_init else "pretrained",
        "version": args.version,
        "opset": args.opset,
        "fp16": fp16,
        "min_cosine": min_cos,
        "embedding_dim": EMBED_DIM,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__},
        "models": {}, "files": {}, "parity": {}, "seconds": {},
    }
    files: dict[str, Path] = {}
    try:
        if args.only in (None, "image"):
            t0 = time.monotonic()
            image, info = _build_image(args)
            manifest["models"]["clip_image"] = {**info, "opset": args.opset, "fp16": fp16}
            f = stage / paths["image"]
            export_image(image, f, args.opset, fp16)
            t1 = time.monotonic()
            manifest["parity"]["clip_image"] = parity_dicts(check_image(image, f, min_cos))
            manifest["seconds"]["clip_image"] = {"build_export": round(t1 - t0, 1),
                                                 "parity": round(time.monotonic() - t1, 1)}
            files[paths["image"]] = f
            del image

        if args.only in (None, "text"):
            t0 = time.monotonic()
            text, info, tok_dir = _build_text(args)
            manifest["models"]["clip_text"] = {**info, "opset": args.opset, "fp16": fp16}
            vocab = text.bert.config.vocab_size
            tok = stage / paths["tokenizer"]
            tok.parent.mkdir(parents=True, exist_ok=True)
            manifest["tokenizer"] = _write_tokenizer(tok_dir, tok, vocab)
            f = stage / paths["text"]
            export_text(text, f, args.opset, fp16)
            t1 = time.monotonic()
            manifest["parity"]["clip_text"] = parity_dicts(check_text(
                text, f, min(vocab, manifest["tokenizer"]["vocab_size"]), min_cos))
            manifest["seconds"]["clip_text"] = {"build_export": round(t1 - t0, 1),
                                                "parity": round(time.monotonic() - t1, 1)}
            files[paths["text"]] = f
            files[paths["tokenizer"]] = tok
            del text

        for rel, f in files.items():
            manifest["files"][rel] = {"sha256": sha256(f), "bytes": f.stat().st_size}
        for rel, f in files.items():  # all checks passed: move into place
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst)
        mf = out / paths["manifest"]
        if args.only and mf.exists():  # one tower re-exported: keep the other tower's record
            old = json.loads(mf.read_text())
            for key in ("models", "files", "parity", "seconds"):
                manifest[key] = {**{k: v for k, v in old.get(key, {}).items() if k.split("/")[0] not in
                                    {"clip_" + args.only}}, **manifest[key]}
            if "tokenizer" in old and "tokenizer" not in manifest:
                manifest["tokenizer"] = old["tokenizer"]
        mf.write_text(json.dumps(manifest, indent=2) + "\n")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tusou_export export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-model", default=IMAGE_MODEL, help="hub name or local dir (default: %(default)s)")
    ap.add_argument("--image-revision", default=None, help="hub branch/tag/commit to pin")
    ap.add_argument("--text-model", default=TEXT_MODEL, help="hub name or local dir (default: %(default)s)")
    ap.add_argument("--text-revision", default=None, help="hub branch/tag/commit to pin")
    ap.add_argument("--random-init", action="store_true",
                    help="build the same full-size architectures with random weights (no download)")
    ap.add_argument("--out", type=Path, default=None,
                    help="model repository root to write into (default: model_repository/, or a new temp dir "
                         "with --random-init)")
    ap.add_argument("--only", choices=("image", "text"), default=None, help="export one tower only")
    ap.add_argument("--version", type=int, default=1,
                    help="Triton model version to write (clip_*/<N>/model.onnx; default %(default)s). A new "
                         "generation gets the next number and is served beside the current one")
    ap.add_argument("--fp16", action="store_true",
                    help="fp16 weights/compute inside the graph; inputs/outputs stay FP32 (the contract)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--min-cosine", type=float, default=None,
                    help=f"parity threshold (default {MIN_COSINE}, or {MIN_COSINE_FP16} with --fp16)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    args = ap.parse_args(argv)
    if args.version < 1:
        ap.error(f"--version must be >= 1 (Triton model versions are positive integers), got {args.version}")

    torch.set_num_threads(args.threads)
    if args.random_init:
        if args.out is None:
            args.out = Path(tempfile.mkdtemp(prefix="tusou-export-random-"))
        elif _inside_repo(args.out):
            ap.error("--random-init output must be outside the git tree (random weights must never be "
                     "mistaken for the real models)")
    elif args.out is None:
        args.out = DEFAULT_OUT
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    try:
        manifest = run(args)
    except ParityError as e:
        print(f"export FAILED parity check, nothing written: {e}", file=sys.stderr)
        return 1
    summary = {
        "out": str(args.out),
        "seconds_total": round(time.monotonic() - t0, 1),
        "files": manifest["files"],
        "parity_min_cosine": {k: min(p["min_cosine"] for p in v) for k, v in manifest["parity"].items()},
        "parity_max_abs_diff": {k: max(p["max_abs_diff"] for p in v) for k, v in manifest["parity"].items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
