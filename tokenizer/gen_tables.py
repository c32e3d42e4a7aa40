#!/usr/bin/env python3
"""Generates tables.go and testdata/hf_strip_accents.txt from HF `tokenizers`.

The HF BERT normalizer and pre-tokenizer classify characters with tables that
are NOT Go's `unicode` package: punctuation and Mn come from the Rust
`unicode_categories` crate (an old Unicode version), lowercasing from Rust's
std (a newer one), control/whitespace from a mix. Rather than transcribe those
rules, this script asks the pinned `tokenizers` library about every code point
and writes exact range tables, so the Go tokenizer matches HF bit for bit.

Run with the fixtures venv (model_repository/testdata/requirements.txt):

    .local/venv-fixtures/bin/python tokenizer/gen_tables.py

Deterministic: rerunning with the same `tokenizers` version rewrites identical files.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import tokenizers
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

HERE = Path(__file__).resolve().parent


def scan():
    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    cjk = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    pre = BertPreTokenizer()
    sets = {k: [] for k in ("control", "clean_space", "chinese", "punct", "space", "mn")}
    lower_map = {}
    strip_map = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # not representable in a Python str passed to Rust
        c = chr(cp)
        o = clean.normalize_str(c)
        if o == "":
            sets["control"].append(cp)
        elif o == " ":
            sets["clean_space"].append(cp)
        elif o != c:
            raise SystemExit(f"clean_text: unexpected U+{cp:04X} -> {o!r}")
        o = cjk.normalize_str(c)
        if o == f" {c} ":
            sets["chinese"].append(cp)
        elif o != c:
            raise SystemExit(f"chinese: unexpected U+{cp:04X} -> {o!r}")
        parts = pre.pre_tokenize_str(f"a{c}b")
        if len(parts) == 3:
            sets["punct"].append(cp)
        elif len(parts) == 2:
            sets["space"].append(cp)
        elif len(parts) != 1:
            raise SystemExit(f"pre-tokenizer: unexpected U+{cp:04X} -> {parts!r}")
        o = lower.normalize_str(c)
        if o != c:
            lower_map[cp] = o
        o = strip.normalize_str(c)
        if o == "":
            sets["mn"].append(cp)  # removed after NFD: a nonspacing mark (or only marks)
        elif o != c:
            strip_map[cp] = o
    return sets, lower_map, strip_map


def ranges(cps):
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def range_table(name: str, doc: str, cps) -> str:
    rs = ranges(cps)
    r16 = [r for r in rs if r[1] <= 0xFFFF]
    r32 = [r for r in rs if r[0] > 0xFFFF]
    split = [r for r in rs if r[0] <= 0xFFFF < r[1]]
    for lo, hi in split:  # a range crossing 0xFFFF goes into both halves
        r16.append([lo, 0xFFFF])
        r32.insert(0, [0x10000, hi])
    latin = sum(1 for r in r16 if r[1] <= 0xFF)
    lines = [f"// {name} {doc}", f"var {name} = &unicode.RangeTable{{"]
    if r16:
        lines.append("\tR16: []unicode.Range16{")
        lines += [f"\t\t{{0x{lo:04x}, 0x{hi:04x}, 1}}," for lo, hi in r16]
        lines.append("\t},")
    if r32:
        lines.append("\tR32: []unicode.Range32{")
        lines += [f"\t\t{{0x{lo:x}, 0x{hi:x}, 1}}," for lo, hi in r32]
        lines.append("\t},")
    lines.append(f"\tLatinOffset: {latin},")
    lines.append("}")
    return "\n".join(lines)


def go_string(s: str) -> str:
    return '"' + "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else
                         (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}") for c in s) + '"'


def main() -> None:
    sets, lower_map, strip_map = scan()
    v = tokenizers.__version__
    docs = {
        "control": "is what BertNormalizer's clean_text deletes: NUL, U+FFFD and HF's is_control "
                   "(Cc, Cf, Co except tab, LF, CR), per the tokenizers crate's own tables.",
        "clean_space": "is what clean_text maps to a plain space (tab, LF, CR and Rust's "
                       "char::is_whitespace that is not a control character).",
        "chinese": "is what handle_chinese_chars surrounds with spaces: HF's CJK ideograph "
                   "ranges (note the gap U+2B820..U+2B91F, unlike Google BERT).",
        "punct": "is what BertPreTokenizer isolates: ASCII punctuation and symbols plus the "
                 "unicode_categories crate's P* categories (an old Unicode version).",
        "space": "is what BertPreTokenizer splits on and drops: Rust's char::is_whitespace.",
        "mn": "is what strip_accents deletes after NFD: the unicode_categories crate's Mn "
              "(an old Unicode version; later marks are kept).",
    }
    names = {"control": "hfControl", "clean_space": "hfCleanSpace", "chinese": "hfChinese",
             "punct": "hfPunct", "space": "hfSpace", "mn": "hfMn"}
    out = [
        f"// Code generated by gen_tables.py from HF tokenizers {v}; DO NOT EDIT.",
        "",
        "package tokenizer",
        "",
        'import "unicode"',
        "",
        f"// hfTokenizersVersion is the tokenizers release these tables were read from.",
        f'const hfTokenizersVersion = "{v}"',
        "",
    ]
    for key in ("control", "clean_space", "chinese", "punct", "space", "mn"):
        out.append(range_table(names[key], docs[key], sets[key]))
        out.append("")
    out.append("// hfLower maps every rune that BertNormalizer's lowercase changes to its")
    out.append("// lowercase form (Rust char::to_lowercase: full mappings, e.g. U+0130 -> \"i\\u0307\").")
    out.append("var hfLower = map[rune]string{")
    for cp in sorted(lower_map):
        out.append(f"\t0x{cp:05x}: {go_string(lower_map[cp])},")
    out.append("}")
    out.append("")
    (HERE / "tables.go").write_text("\n".join(out), encoding="utf-8")

    (HERE / "testdata").mkdir(exist_ok=True)
    lines = [f"# HF tokenizers {v} strip_accents (NFD, then drop Mn) for every code point it",
             "# changes to a non-empty string. Columns: code point, result code points. Generated by",
             "# gen_tables.py; the Go test checks x/text NFD + hfMn reproduces each line."]
    for cp in sorted(strip_map):
        lines.append(f"{cp:04X}\t" + " ".join(f"{ord(c):04X}" for c in strip_map[cp]))
    (HERE / "testdata" / "hf_strip_accents.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print({k: len(v) for k, v in sets.items()}, "lower", len(lower_map), "strip", len(strip_map))


if __name__ == "__main__":
    main()
