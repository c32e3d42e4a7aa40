"""Regenerate the tiny committed test models under ``model_repository/tiny/``.

    PYTHONPATH=model_repository/export .local/venv-export/bin/python -m tusou_export tiny

Each tiny *version* (Triton model version, ``clip_image/<N>/model.onnx`` and ``clip_text/<N>/model.onnx``)
has the same architecture and I/O with its own random weights, so the local stack can serve two embedding
generations of the same model names at once. All versions share one tokenizer (same architecture and
vocabulary), ``clip_text/tokenizer.json``.

Everything is deterministic: the tokenizer is trained on the committed corpus
(``model_repository/export/corpus/tiny_corpus.txt``) and the weights come from fixed per-version seeds, so
re-running this reproduces the committed files byte for byte (``--check`` verifies that without writing).
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
# Seeds move by this much per version; version 1 keeps the original seeds (its files never change).
SEED_STEP = 1000
# The committed versions: 1 and 2 are the local stack's generations `a` and `b`.
VERSIONS = (1, 2)
TOKENIZER = "clip_text/tokenizer.json"


def seeds(version: int) -> dict:
    """The torch seeds of one tiny version's towers."""
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    step = SEED_STEP * (version - 1)
    return {"clip_image": IMAGE_SEED + step, "clip_text": TEXT_SEED + step}


def version_files(version: int) -> tuple[str, str]:
    """The two ONNX files of one version, relative to the tiny directory."""
    return f"clip_image/{version}/model.onnx", f"clip_text/{version}/model.onnx"


def files(versions=VERSIONS) -> tuple[str, ...]:
    """Every committed file that ``generate(versions=...)`` writes (the manifest aside)."""
    return tuple(f for v in versions for f in version_files(v)) + (TOKENIZER,)


FILES = files()


def generate(out_dir: Path, opset: int = DEFAULT_OPSET, versions=VERSIONS) -> dict:
    """Write the tiny tokenizer and both tiny ONNX models of each version under ``out_dir``; returns a manifest."""
    tok = train_tiny_tokenizer(CORPUS.read_text(encoding="utf-8").splitlines())
    save_tokenizer(tok, out_dir / TOKENIZER)
    tok_info = tokenizer_summary(tok)

    per_version = {}
    for v in versions:
        s = seeds(v)
        image_rel, text_rel = version_files(v)
        image = random_image_tower(tiny_image_config(), s["clip_image"])
        export_image(image, out_dir / image_rel, opset)
        image_parity = check_image(image, out_dir / image_rel)

        text = random_text_tower(tiny_text_config(tok_info["vocab_size"]), s["clip_text"])
        export_text(text, out_dir / text_rel, opset)
        text_parity = check_text(text, out_dir / text_rel, tok_info["vocab_size"])

        per_version[str(v)] = {
            "seeds": s,
            "params": {"clip_image": sum(p.numel() for p in image.parameters()),
                       "clip_text": sum(p.numel() for p in text.parameters())},
            "parity": {"clip_image": parity_dicts(image_parity), "clip_text": parity_dicts(text_parity)},
        }

    return {
        "kind": "tiny-random-init",
        "opset": opset,
        "tokenizer": tok_info,
        "tokenizer_shared_by_versions": [int(v) for v in versions],
        "versions": per_version,
        "files": {f: {"sha256": sha256(out_dir / f), "bytes": (out_dir / f).stat().st_size}
                  for f in files(versions)},
    }


def _versions(arg: str | None) -> tuple[int, ...]:
    if arg is None:
        return VERSIONS
    try:
        vs = tuple(sorted({int(x) for x in arg.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--version wants comma-separated integers, got {arg!r}")
    if not vs or vs[0] < 1:
        raise argparse.ArgumentTypeError(f"--version wants versions >= 1, got {arg!r}")
    return vs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tusou_export tiny", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=TINY_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--version", type=_versions, default=VERSIONS, metavar="N[,N...]",
                    help="tiny version(s) to generate: version N is seeded with the version-1 seeds + "
                         f"{SEED_STEP}*(N-1) (default: the committed versions {','.join(map(str, VERSIONS))})")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and fail if it differs from --out (writes nothing)")
    args = ap.parse_args(argv)

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = generate(Path(tmp), versions=args.version)
            diff = [f for f in files(args.version)
                    if not (args.out / f).exists() or sha256(args.out / f) != manifest["files"][f]["sha256"]]
        if diff:
            print(f"tiny models are stale or not reproducible: {diff}")
            return 1
        print(f"tiny models (versions {list(args.version)}) reproduce byte for byte")
        return 0

    manifest = generate(args.out, versions=args.version)
    mf = args.out / "manifest.json"
    if mf.exists() and set(args.version) != set(VERSIONS):
        # Some versions only: keep the other versions' records.
        old = json.loads(mf.read_text())
        manifest["versions"] = {**old.get("versions", {}), **manifest["versions"]}
        manifest["files"] = {**old.get("files", {}), **manifest["files"]}
        manifest["tokenizer_shared_by_versions"] = sorted(int(v) for v in manifest["versions"])
    manifest["versions"] = dict(sorted(manifest["versions"].items(), key=lambda kv: int(kv[0])))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    mf.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: manifest[k] for k in ("tokenizer", "files")}, indent=2))
    return 0
