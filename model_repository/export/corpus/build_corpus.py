"""Assemble the text corpus that the TINY test tokenizer is trained on.

The output, ``tiny_corpus.txt`` next to this file, is committed so that tokenizer training is
reproducible on any machine; this script only needs re-running if the corpus is meant to change.
Every source is offline and deterministic:

* ``sentences.txt`` (next to this file): sentences written for this project in ~25 languages.
* The project's seed article (Chinese, about image search on Elasticsearch), from ``shared/seed``.
* CPython's own CJK codec test texts (``Lib/test/cjkencodings/*-utf8.txt``, PSF licence).
* CPython's ``LICENSE.txt`` and the module docstrings of a fixed list of stdlib modules (English).
* glibc locale data (``/usr/share/i18n/locales``): native month/day/language names for every locale.

Usage (from the repository root)::

    .local/venv-export/bin/python model_repository/export/corpus/build_corpus.py
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

# Stdlib modules whose docstrings provide ordinary technical English. Fixed list, sorted output.
STDLIB_MODULES = [
    "argparse.py", "base64.py", "calendar.py", "csv.py", "datetime.py", "difflib.py", "email/message.py",
    "fractions.py", "ftplib.py", "gzip.py", "heapq.py", "http/client.py", "http/server.py", "imaplib.py",
    "json/__init__.py", "logging/__init__.py", "mailbox.py", "pathlib.py", "pickle.py", "random.py",
    "shutil.py", "smtplib.py", "socket.py", "statistics.py", "string.py", "subprocess.py", "tarfile.py",
    "textwrap.py", "threading.py", "urllib/parse.py", "urllib/request.py", "uuid.py", "zipfile.py",
]

CJK_TEST_TEXTS = ["big5-utf8.txt", "cp949-utf8.txt", "euc_jp-utf8.txt", "euc_kr-utf8.txt",
                  "gb18030-utf8.txt", "gb2312-utf8.txt", "gbk-utf8.txt"]

# glibc locale keywords whose values are natural-language words in the locale's own script.
LOCALE_KEYS = ("day", "abday", "mon", "abmon", "lang_name", "country_name")
_UCODE = re.compile(r"<U([0-9A-Fa-f]{4,8})>")


def _docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
    return out


def _locale_words(locales_dir: Path) -> list[str]:
    lines = []
    for f in sorted(locales_dir.iterdir()):
        if not f.is_file():
            continue
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        words = []
        for raw in text.splitlines():
            parts = raw.strip().split(None, 1)
            if len(parts) != 2 or parts[0] not in LOCALE_KEYS:
                continue
            for quoted in re.findall(r'"([^"]*)"', parts[1]):
                word = _UCODE.sub(lambda m: chr(int(m.group(1), 16)), quoted).strip()
                if word and not word.isascii():
                    words.append(word)
        if words:
            lines.append(" ".join(dict.fromkeys(words)))
    return lines


def build(seed_dir: Path, locales_dir: Path) -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[str] = []

    for line in (HERE / "sentences.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            chunks.append(line.strip())

    for f in sorted(seed_dir.glob("*.txt")):
        chunks.extend(l.strip() for l in f.read_text(encoding="utf-8").splitlines() if l.strip())

    for name in CJK_TEST_TEXTS:
        f = stdlib / "test" / "cjkencodings" / name
        chunks.extend(l.strip() for l in f.read_text(encoding="utf-8").splitlines() if l.strip())

    lic = stdlib / "LICENSE.txt"
    chunks.extend(l.strip() for l in lic.read_text(encoding="utf-8").splitlines() if l.strip())
    for mod in STDLIB_MODULES:
        for doc in _docstrings(stdlib / mod):
            chunks.extend(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())

    if locales_dir.is_dir():
        chunks.extend(_locale_words(locales_dir))

    return "\n".join(chunks) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-dir", type=Path, default=REPO.parent / "shared" / "seed")
    ap.add_argument("--locales-dir", type=Path, default=Path("/usr/share/i18n/locales"))
    ap.add_argument("--out", type=Path, default=HERE / "tiny_corpus.txt")
    args = ap.parse_args(argv)
    if sys.version_info[:2] != (3, 11):
        print("warning: corpus was defined against CPython 3.11 stdlib docstrings", file=sys.stderr)
    text = build(args.seed_dir, args.locales_dir)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode())} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
