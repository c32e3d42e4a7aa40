#!/usr/bin/env python3
"""Regenerate tusou's reference fixtures (images, crops, embeddings, token ids).

Run from anywhere with the pinned venv (see README.md in this folder):

    .local/venv-fixtures/bin/python model_repository/testdata/generate.py

What it does, in order:

1. Fetches the source wheels that ship the licensed sample photos
   (scikit-learn, scikit-image, matplotlib; ``pip download --no-deps`` into
   ``.local/cache/fixture-wheels``), reads the originals straight out of the
   wheel zips (nothing is installed or imported) and checks their sha256.
2. Derives ``images/*`` deterministically (formats, modes, EXIF orientations,
   alpha, 16-bit, CMYK, extreme sizes, a near-duplicate pair) and writes
   ``images/SOURCES.md``.
3. Runs the reference preprocessing (README.md, "Reference definition") on each
   image: the expected 224x224 uint8 crop goes to ``expected/crops/*.png``, the
   normalised tensor's stats and sha256 plus the tiny ONNX image model's raw
   ``image_embeds`` go to ``expected/images.json``.
4. Tokenises ``TEXTS`` (and a generated multilingual corpus) with the tiny
   HF ``tokenizer.json`` via the ``tokenizers`` library (truncation 128) and
   runs the tiny ONNX text model: ``texts.json`` and
   ``expected/tokenizer_corpus.json``.

Everything is deterministic: a second run rewrites byte-identical files
(``--check`` regenerates into a temporary folder and compares).
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import io
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, features

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TINY = REPO / "model_repository" / "tiny"
IMAGE_MODEL = TINY / "clip_image" / "1" / "model.onnx"
TEXT_MODEL = TINY / "clip_text" / "1" / "model.onnx"
TOKENIZER = TINY / "clip_text" / "tokenizer.json"
DEFAULT_WHEEL_CACHE = REPO / ".local" / "cache" / "fixture-wheels"

MAX_TOKENS = 128  # contract: max 128 tokens incl. [CLS]/[SEP]
CROP = 224
SHORTEST_EDGE = 224
# OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, spelled out so a transformers upgrade that
# changed them would be caught by the assertion in reference_tensor().
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# --------------------------------------------------------------------------
# Originals: photos that ship inside PyPI wheels, with their licences.
# --------------------------------------------------------------------------

WHEELS = {
    "scikit-learn": "1.9.1",
    "scikit-image": "0.26.0",
    "matplotlib": "3.11.2",
}

ORIGINALS = {
    "china": dict(
        dist="scikit-learn", path="sklearn/datasets/images/china.jpg",
        sha256="8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
        licence="CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)",
        credit="danielbuechele on Flickr (photo 6061409035), per sklearn/datasets/images/README.txt",
    ),
    "flower": dict(
        dist="scikit-learn", path="sklearn/datasets/images/flower.jpg",
        sha256="a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
        licence="CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)",
        credit=("vultilion on Flickr (photo 6056698931); sklearn/datasets/images/README.txt "
                "says 'Some rights reserved by danielbuechele' but links vultilion's photo"),
    ),
    "astronaut": dict(
        dist="scikit-image", path="skimage/data/astronaut.png",
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        licence="Public domain (NASA; 'No known copyright restrictions, released into the public domain')",
        credit="NASA Great Images database (Eileen Collins), per skimage.data.astronaut docstring",
    ),
    "chelsea": dict(
        dist="scikit-image", path="skimage/data/chelsea.png",
        sha256="596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        licence="CC0 (photographer Stefan van der Walt)",
        credit="skimage.data.chelsea docstring",
    ),
    "coffee": dict(
        dist="scikit-image", path="skimage/data/coffee.png",
        sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        licence="CC0 (photographer Rachel Michetti)",
        credit="skimage.data.coffee docstring",
    ),
    "camera": dict(
        dist="scikit-image", path="skimage/data/camera.png",
        sha256="b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        licence="CC0 (photographer Lav Varshney)",
        credit="skimage.data.camera docstring",
    ),
    "coins": dict(
        dist="scikit-image", path="skimage/data/coins.png",
        sha256="f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
        licence="No known copyright restrictions (Brooklyn Museum open collection)",
        credit="skimage.data.coins docstring",
    ),
    "horse": dict(
        dist="scikit-image", path="skimage/data/horse.png",
        sha256="c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
        licence="CC0 (Andreas Preuss / marauder, openclipart)",
        credit="skimage.data.horse docstring",
    ),
    "rocket": dict(
        dist="scikit-image", path="skimage/data/rocket.jpg",
        sha256="c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        licence="Public domain (SpaceX released its photos into the public domain)",
        credit="SpaceX, DSCOVR launch on Falcon 9, per skimage.data.rocket docstring",
    ),
    "hubble": dict(
        dist="scikit-image", path="skimage/data/hubble_deep_field.jpg",
        sha256="3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        licence="Public domain (NASA)",
        credit="NASA/Hubble, per skimage.data.hubble_deep_field docstring",
    ),
    "hopper": dict(
        dist="matplotlib", path="matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        sha256="a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        licence=("Public domain as a U.S. Navy official photograph (work of the U.S. federal "
                 "government); matplotlib's wheel carries no licence note for this file"),
        credit="Official portrait of Grace Hopper, shipped as matplotlib sample data",
    ),
}


def fetch_wheels(cache: Path) -> dict[str, Path]:
    """Returns dist -> wheel path, downloading missing wheels with pip."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for dist, version in WHEELS.items():
        stem = dist.replace("-", "_")
        found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "-d", str(cache), f"{dist}=={version}"],
                check=True)
            found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
        if not found:
            sys.exit(f"could not fetch wheel {dist}=={version} into {cache}")
        out[dist] = found[0]
    return out


def load_originals(cache: Path) -> dict[str, bytes]:
    wheels = fetch_wheels(cache)
    data = {}
    for name, o in ORIGINALS.items():
        with zipfile.ZipFile(wheels[o["dist"]]) as z:
            b = z.read(o["path"])
        got = hashlib.sha256(b).hexdigest()
        if got != o["sha256"]:
            sys.exit(f"{name}: sha256 {got} != pinned {o['sha256']} ({o['path']})")
        data[name] = b
    return data


# --------------------------------------------------------------------------
# Derived images.
# --------------------------------------------------------------------------


def png16(arr: np.ndarray) -> bytes:
    """Encodes a uint16 HxW (gray) or HxWx3 (RGB) array as a 16-bit PNG.

    Pillow cannot write 48-bit RGB PNGs, so this is a minimal encoder
    (filter 0 on every row, zlib level 9, no ancillary chunks).
    """
    assert arr.dtype == np.uint16
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def enc(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(im: Image.Image, **kw) -> bytes:
    kw.setdefault("quality", 90)
    kw.setdefault("optimize", False)
    return enc(im, "JPEG", **kw)


def png(im: Image.Image, **kw) -> bytes:
    return enc(im, "PNG", compress_level=9, **kw)


# Inverse of the transform ImageOps.exif_transpose applies for each orientation,
# so that the stored pixels display upright once the tag is honoured.
EXIF_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,   # exif_transpose applies ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # exif_transpose applies ROTATE_90
}


def with_orientation(upright: Image.Image, orientation: int) -> bytes:
    op = EXIF_STORE[orientation]
    stored = upright if op is None else upright.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(stored, quality=90, exif=exif.tobytes())


def rgba_astronaut(astronaut: Image.Image) -> Image.Image:
    """256x256 RGBA: alpha ramps 0..255 left to right, a fully transparent disc
    (whose hidden RGB stays the photo, i.e. not white), an opaque bottom band."""
    rgb = np.asarray(astronaut.resize((256, 256), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:256, 0:256]
    alpha = (xx * 255 // 255).astype(np.uint8)
    alpha[(yy - 80) ** 2 + (xx - 170) ** 2 < 40 ** 2] = 0
    alpha[yy >= 226] = 255
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def la_camera(camera: Image.Image) -> Image.Image:
    """200x200 LA: opaque disc, soft edge, transparent corners."""
    g = np.asarray(camera.resize((200, 200), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:200, 0:200]
    r = np.sqrt((yy - 100.0) ** 2 + (xx - 100.0) ** 2)
    alpha = np.clip((95.0 - r) * 255.0 / 20.0, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([g, alpha]), "LA")


def palette_trns_horse(horse: Image.Image) -> Image.Image:
    """P image with a tRNS chunk: index 0 is pure green and fully transparent
    (so dropping transparency shows green, compositing shows white)."""
    rgba = np.asarray(horse.convert("RGBA"))
    opaque = rgba[..., 3] >= 128
    rgb = Image.fromarray(rgba[..., :3].copy(), "RGB")
    q = rgb.quantize(colors=15, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    idx = np.asarray(q).astype(np.uint8) + 1
    idx[~opaque] = 0
    pal = [0, 255, 0] + q.getpalette()[: 15 * 3]
    out = Image.fromarray(idx, "P")
    out.putpalette(pal)
    out.info["transparency"] = 0
    return out


def animated_gif(frames: list[Image.Image]) -> bytes:
    ps = [f.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
          for f in frames]
    buf = io.BytesIO()
    ps[0].save(buf, "GIF", save_all=True, append_images=ps[1:], duration=[200, 200, 200],
               loop=0, optimize=False, disposal=1)
    return buf.getvalue()


def build_images(orig: dict[str, bytes]) -> list[dict]:
    """Returns the fixture list: dicts with name, bytes, source, derivation, tags."""
    op = {k: Image.open(io.BytesIO(v)) for k, v in orig.items()}
    for im in op.values():
        im.load()
    astronaut = op["astronaut"].convert("RGB")
    chelsea = op["chelsea"].convert("RGB")
    coffee = op["coffee"].convert("RGB")
    hopper = op["hopper"].convert("RGB")
    camera = op["camera"].convert("L")
    flower = op["flower"].convert("RGB")
    rocket = op["rocket"].convert("RGB")
    china = op["china"].convert("RGB")
    bicubic = Image.Resampling.BICUBIC
    lanczos = Image.Resampling.LANCZOS

    items = []

    def add(name, data, source, how, **tags):
        items.append(dict(file=name, data=data, source=source, derivation=how, tags=tags))

    add("china_original.jpg", orig["china"], "china",
        "byte-for-byte copy of the original (baseline JPEG from a real-world encoder)")
    add("flower_progressive.jpg", jpeg(flower, quality=85, progressive=True, subsampling=2),
        "flower", "re-encoded: progressive JPEG, quality 85, 4:2:0")
    add("rocket_444.jpg", jpeg(rocket, quality=90, subsampling=0), "rocket",
        "re-encoded: baseline JPEG, quality 90, 4:4:4 (no chroma subsampling)")
    add("coffee_420.jpg", jpeg(coffee, quality=85, subsampling=2), "coffee",
        "PNG original encoded as baseline JPEG, quality 85, 4:2:0")
    add("hopper_gray.jpg", jpeg(hopper.convert("L"), quality=85), "hopper",
        "converted to L (Pillow ITU-R 601-2 luma), single-component grayscale JPEG q85")
    add("coffee_cmyk.jpg", jpeg(coffee.resize((300, 200), bicubic).convert("CMYK"), quality=90),
        "coffee", "resized to 300x200 (bicubic), converted to CMYK by Pillow, CMYK JPEG q90 "
        "(Pillow writes an Adobe APP14 marker and inverted CMYK, like Photoshop)")
    for o in (1, 3, 5, 6, 8):
        add(f"chelsea_exif{o}.jpg", with_orientation(chelsea, o), "chelsea",
            f"pixels stored with the inverse of EXIF orientation {o} applied, tag 0x0112={o}, "
            "JPEG q90; displays upright (same content as chelsea_exif1.jpg) when the tag is honoured",
            group="exif_chelsea")
    add("chelsea.png", orig["chelsea"], "chelsea", "byte-for-byte copy of the original RGB PNG")
    add("coins_gray.png", orig["coins"], "coins", "byte-for-byte copy of the original 8-bit gray PNG")
    add("astronaut_rgba.png", png(rgba_astronaut(astronaut)), "astronaut",
        "resized to 256x256 (bicubic), alpha = horizontal ramp 0..255, fully transparent disc "
        "(hidden RGB = photo), opaque bottom band of 30 rows; RGBA PNG")
    add("camera_la.png", png(la_camera(camera)), "camera",
        "resized to 200x200 (bicubic), alpha = opaque disc r<75 with a 20px soft edge; LA PNG")
    add("horse_palette_trns.png", png(palette_trns_horse(op["horse"])), "horse",
        "palette PNG with tRNS: index 0 = pure green, fully transparent (the original's "
        "alpha<128 area); other pixels = 15-colour median-cut quantisation of the RGB")
    add("coffee_palette.png",
        png(coffee.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)),
        "coffee", "256-colour median-cut palette PNG, no dithering, no transparency")
    a192 = np.asarray(astronaut.resize((192, 192), bicubic)).astype(np.uint16)
    yy, xx = np.mgrid[0:192, 0:192]
    low = np.stack([(xx * 5 + yy * 3 + c * 85) & 0xFF for c in range(3)], axis=-1).astype(np.uint16)
    add("astronaut_rgb16.png", png16((a192 << 8) | low), "astronaut",
        "resized to 192x192 (bicubic); 16-bit RGB PNG with value = v8<<8 | pattern "
        "(low byte (5x+3y+85c)&255, so >>8 gives v8 exactly but v/257 rounding does not)")
    c256 = np.asarray(camera.resize((256, 256), bicubic)).astype(np.uint16)
    yy, xx = np.mgrid[0:256, 0:256]
    add("camera_gray16.png", png(Image.fromarray((c256 << 8) | ((xx * 7 + yy * 13) & 0xFF).astype(np.uint16))),
        "camera", "resized to 256x256 (bicubic); 16-bit gray PNG (Pillow mode I;16) with "
        "value = v8<<8 | ((7x+13y)&255)")
    add("chelsea_animated.gif",
        animated_gif([chelsea.resize((225, 150), bicubic), coffee.resize((225, 150), bicubic),
                      astronaut.resize((225, 150), bicubic)]),
        "chelsea", "3-frame animated GIF (225x150, 256-colour median cut, no dither): frame 0 "
        "chelsea, frame 1 coffee, frame 2 astronaut; only frame 0 counts",
        extra_sources=["coffee", "astronaut"])
    add("flower_lossy.webp", enc(flower, "WEBP", quality=80, method=4), "flower",
        "lossy WebP quality 80, method 4")
    add("astronaut_lossless_alpha.webp",
        enc(rgba_astronaut(astronaut), "WEBP", lossless=True, quality=100, method=4),
        "astronaut", "the astronaut_rgba.png pixels as lossless WebP with alpha (libwebp may "
        "rewrite RGB under alpha=0, which compositing hides)")
    add("tiny_1x1.png", png(Image.new("RGB", (1, 1), (200, 30, 90))), "synthetic",
        "single RGB pixel (200,30,90)")
    add("strip_7x300.png", png(rocket.crop((306, 120, 313, 420))), "rocket",
        "7x300 column cut from the rocket photo (x 306..312, y 120..419: sky/rocket edge); "
        "extreme aspect")
    add("strip_300x3.png", png(flower.crop((150, 200, 450, 203))), "flower",
        "300x3 row band cut from the flower photo (x 150..449, y 200..202); height 3 is "
        "ambiguous for transformers' channel inference")
    add("china_64x43.jpg", jpeg(china.resize((64, 43), lanczos), quality=90), "china",
        "downscaled to 64x43 (Lanczos), JPEG q90: the reference upscales it")
    big = op["hubble"].convert("RGB").crop((0, 100, 1000, 767)).resize((3000, 2000), bicubic)
    add("hubble_3000x2000.jpg", jpeg(big, quality=30, subsampling=2), "hubble",
        "1000x667 crop (y 100..766) upscaled to 3000x2000 (bicubic), JPEG q30 4:2:0: large "
        "dimensions, small file")
    near_a = jpeg(astronaut, quality=90)
    add("neardup_a.jpg", near_a, "astronaut", "512x512 JPEG q90", group="near_duplicate")
    a_dec = Image.open(io.BytesIO(near_a)).convert("RGB")
    add("neardup_b.jpg", jpeg(a_dec.resize((307, 307), lanczos), quality=70), "astronaut",
        "neardup_a.jpg decoded, resized 0.6x to 307x307 (Lanczos), JPEG q70",
        group="near_duplicate")
    return items


def write_sources_md(items: list[dict], path: Path) -> None:
    lines = [
        "# Fixture images: sources and licences",
        "",
        "Generated by `../generate.py` (do not edit by hand). Every image is derived",
        "deterministically from an original that ships inside a PyPI wheel; the",
        "originals are read from the wheel zip and checked against the sha256 below.",
        "",
        "## Originals",
        "",
        "| id | package (wheel) | path in wheel | licence | credit | sha256 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, o in ORIGINALS.items():
        lines.append(f"| {name} | {o['dist']}=={WHEELS[o['dist']]} | `{o['path']}` | "
                     f"{o['licence']} | {o['credit']} | `{o['sha256'][:16]}…` |")
    lines += ["", "CC BY 2.0 requires attribution: the credits above are it.", "",
              "## Files", "", "| file | bytes | from | how derived |", "| --- | --- | --- | --- |"]
    for it in items:
        src = it["source"]
        extra = it["tags"].get("extra_sources")
        if extra:
            src = ", ".join([src] + extra)
        lines.append(f"| `{it['file']}` | {len(it['data'])} | {src} | {it['derivation']} |")
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------
# Reference preprocessing.
# --------------------------------------------------------------------------

ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def decode_reference(data: bytes) -> tuple[Image.Image, dict]:
    """Steps 1-6 of the reference definition: bytes -> upright 8-bit RGB image."""
    im = Image.open(io.BytesIO(data))
    meta = dict(
        format=im.format,
        mode=im.mode,
        size=list(im.size),
        n_frames=getattr(im, "n_frames", 1),
        exif_orientation=int(im.getexif().get(0x0112, 1)),
    )
    if im.format == "JPEG":
        meta["jpeg_progressive"] = bool(im.info.get("progressive", 0) or im.info.get("progression", 0))
        meta["jpeg_subsampling"] = {-1: "n/a", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(
            JpegImagePlugin.get_sampling(im), "other")
        meta["jpeg_adobe_transform"] = im.info.get("adobe_transform")
    im.seek(0)  # first frame
    im = ImageOps.exif_transpose(im)  # new single-frame image, upright
    meta["upright_size"] = list(im.size)
    mode = im.mode
    has_alpha = mode in ALPHA_MODES or "transparency" in im.info
    meta["has_alpha"] = has_alpha
    if mode in SIXTEEN_BIT_MODES:
        # Pillow's I;16 -> L/RGB conversion clips at 255; scale with >>8 instead.
        assert not has_alpha, "16-bit gray with tRNS is not covered"
        v = np.asarray(im).astype(np.uint32)
        assert v.max() <= 0xFFFF
        im = Image.fromarray((v >> 8).astype(np.uint8), "L")
        mode = "L"
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
        a = rgba[..., 3:4]
        rgb = (rgba[..., :3] * a + 255 * (255 - a) + 127) // 255  # over white, round half up
        out = Image.fromarray(rgb.astype(np.uint8), "RGB")
        # Same numbers as Pillow's own alpha_composite over an opaque white image.
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        assert np.array_equal(np.asarray(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")),
                              np.asarray(out))
        im = out
    else:
        im = im.convert("RGB")
    return im, meta


def check_alpha_formula() -> None:
    """Step 5's integer formula equals Pillow's alpha_composite for every (c, a)."""
    c, a = np.meshgrid(np.arange(256, dtype=np.uint32), np.arange(256, dtype=np.uint32))
    rgba = np.stack([c, c, c, a], axis=-1).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    pil = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")).convert("RGB"))[..., 0]
    mine = (c * a + 255 * (255 - a) + 127) // 255
    assert np.array_equal(pil.astype(np.uint32), mine), "alpha formula differs from Pillow"


def make_processor():
    from transformers import CLIPImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

    assert tuple(OPENAI_CLIP_MEAN) == CLIP_MEAN and tuple(OPENAI_CLIP_STD) == CLIP_STD
    # openai/clip-vit-base-patch32 preprocessor_config.json, built in code (no hub).
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": SHORTEST_EDGE}, resample=PILImageResampling.BICUBIC,
        do_center_crop=True, crop_size={"height": CROP, "width": CROP},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True)


def resize_size(w: int, h: int) -> tuple[int, int]:
    """transformers.get_resize_output_image_size(shortest_edge=224, default_to_square=False)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(SHORTEST_EDGE * long / short)
    return (SHORTEST_EDGE, new_long) if w <= h else (new_long, SHORTEST_EDGE)


def reference_tensor(proc, rgb: Image.Image) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Returns (crop uint8 HWC, pixel_values float32 CHW, resized (w, h))."""
    kw = dict(return_tensors="np", input_data_format="channels_last")
    pv = proc(images=rgb, **kw)["pixel_values"][0]
    raw = proc(images=rgb, do_rescale=False, do_normalize=False, **kw)["pixel_values"][0]
    assert pv.dtype == np.float32 and pv.shape == (3, CROP, CROP), (pv.dtype, pv.shape)
    assert raw.dtype == np.uint8 and raw.shape == (3, CROP, CROP), (raw.dtype, raw.shape)
    crop = np.ascontiguousarray(raw.transpose(1, 2, 0))
    # Independent replica: PIL bicubic resize of the 8-bit image + floor-centred crop.
    rw, rh = resize_size(*rgb.size)
    resized = rgb.resize((rw, rh), Image.Resampling.BICUBIC)
    top, left = (rh - CROP) // 2, (rw - CROP) // 2
    mine = np.asarray(resized)[top:top + CROP, left:left + CROP]
    assert np.array_equal(mine, crop), "replicated resize+crop differs from CLIPImageProcessor"
    # The float path, step by step as transformers does it (float64 rescale -> float32,
    # then float32 (x - mean) / std), must reproduce the processor bit for bit.
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    assert np.array_equal(x.transpose(2, 0, 1), pv), "float path differs from CLIPImageProcessor"
    return crop, pv, (rw, rh)


def f32(x) -> float:
    """A float32 value as the Python float that represents it exactly."""
    return float(np.float32(x))


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # determinism and a fair share of the 2 shared cores
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# JSON output: indented objects, numeric lists on one line.
# --------------------------------------------------------------------------


def dumps(obj, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        parts = [f'{pad}  {json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(isinstance(v, (int, float, str, bool)) or v is None for v in obj) and \
                not any(isinstance(v, str) and len(v) > 40 for v in obj):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in obj) + "]"
        parts = [f"{pad}  {dumps(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(parts) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj) -> None:
    path.write_text(dumps(obj) + "\n", encoding="utf-8")


def versions() -> dict:
    import onnxruntime
    import tokenizers
    import transformers
    import PIL

    return {
        "python": sys.version.split()[0],
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libwebp": features.version("webp"),
        "zlib": features.version("zlib"),
        "numpy": np.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


# --------------------------------------------------------------------------
# Images: fixtures + expected outputs.
# --------------------------------------------------------------------------


def generate_images(out: Path, orig: dict[str, bytes]) -> None:
    img_dir = out / "images"
    crop_dir = out / "expected" / "crops"
    img_dir.mkdir(parents=True, exist_ok=True)
    crop_dir.mkdir(parents=True, exist_ok=True)
    items = build_images(orig)
    names = [it["file"] for it in items]
    assert len(set(names)) == len(names)
    for it in items:
        (img_dir / it["file"]).write_bytes(it["data"])
    write_sources_md(items, img_dir / "SOURCES.md")

    check_alpha_formula()
    proc = make_processor()
    sess = ort_session(IMAGE_MODEL)
    in_name = sess.get_inputs()[0].name
    assert in_name == "pixel_values", in_name

    entries = []
    for it in items:
        rgb, meta = decode_reference(it["data"])
        crop, pv, (rw, rh) = reference_tensor(proc, rgb)
        crop_name = Path(it["file"]).stem + ".png"
        (crop_dir / crop_name).write_bytes(png(Image.fromarray(crop, "RGB")))
        emb = sess.run(["image_embeds"], {in_name: pv[None]})[0][0]
        assert emb.shape == (512,) and emb.dtype == np.float32
        e = {"file": it["file"], "bytes": len(it["data"]),
             "sha256": hashlib.sha256(it["data"]).hexdigest(), "source": it["source"]}
        e.update(meta)
        e["resized_size"] = [rw, rh]
        e["crop_offset"] = [(rw - CROP) // 2, (rh - CROP) // 2]
        e["crop"] = "crops/" + crop_name
        e["crop_rgb_sha256"] = hashlib.sha256(crop.tobytes()).hexdigest()
        e["pixel_values_f32le_sha256"] = hashlib.sha256(pv.astype("<f4").tobytes()).hexdigest()
        e["pixel_values_mean"] = [f32(pv[c].mean(dtype=np.float64)) for c in range(3)]
        e["pixel_values_std"] = [f32(pv[c].std(dtype=np.float64)) for c in range(3)]
        e["pixel_values_min"] = [f32(pv[c].min()) for c in range(3)]
        e["pixel_values_max"] = [f32(pv[c].max()) for c in range(3)]
        e.update({k: v for k, v in it["tags"].items() if k != "extra_sources"})
        e["image_embeds"] = [f32(v) for v in emb]
        entries.append(e)

    groups = {}
    for e in entries:
        if "group" in e:
            groups.setdefault(e["group"], []).append(e["file"])
    doc = {
        "reference": "see README.md, 'Reference definition'",
        "crop_size": CROP,
        "shortest_edge": SHORTEST_EDGE,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "model": str(IMAGE_MODEL.relative_to(REPO)),
        "model_sha256": sha256_file(IMAGE_MODEL),
        "embeds_normalised": False,
        "groups": groups,
        "versions": versions(),
        "images": entries,
    }
    write_json(out / "expected" / "images.json", doc)


# --------------------------------------------------------------------------
# Texts.
# --------------------------------------------------------------------------

TEXTS = [
    ("english", "A photo of a cat sleeping on a red sofa."),
    ("english_punct", "Hello, world! It's 3:45pm -- isn't it? (yes) [maybe] {no} \"quoted\" #tag @user"),
    ("german_umlauts", "Größenverhältnisse: Ärger über Öl, süße Äpfel und Straße."),
    ("french_accents", "Œuvre d'art: élève, garçon, à côté du théâtre, naïveté."),
    ("spanish", "¿Dónde está el niño? ¡Mañana iremos a la montaña!"),
    ("chinese_simplified", "一只猫在红色的沙发上睡觉。"),
    ("chinese_traditional", "一隻貓在紅色的沙發上睡覺。"),
    ("japanese", "赤いソファの上で猫が寝ています。カタカナとひらがな。"),
    ("korean", "빨간 소파 위에서 고양이가 자고 있습니다."),
    ("arabic", "قطة نائمة على أريكة حمراء."),
    ("russian", "Кошка спит на красном диване. Ёжик!"),
    ("hindi", "लाल सोफे पर एक बिल्ली सो रही है।"),
    ("greek", "Μια γάτα κοιμάται σε έναν κόκκινο καναπέ. ΣΟΦΟΣ"),
    ("emoji", "cats 🐱🐈‍⬛ love 👍🏽 and ❤️ pizza 🍕!"),
    ("mixed_script", "iPhone 15 Pro 价格 ¥7999, Tokyo東京 München Москва 2024年"),
    ("whitespace_control",
     "  tabs\tand\nnewlines\r\nzero\u200bwidth\u00a0nbsp\u3000ideographic\x00nul\x07bell\ufffdrepl\u00adsoft  "),
    ("empty", ""),
    ("only_spaces", "   \t\n "),
    ("special_tokens_in_text", "a [MASK] in the text and [CLS] [SEP] [PAD] [UNK] literally"),
    ("accents_combining", "Cafe\u0301 vs Café, n\u0303, A\u030a vs Å, ﬁ ligature, ① circled, Ｆｕｌｌ width"),
    ("long_word", "pneumonoultramicroscopicsilicovolcanoconiosis " + "x" * 120),
    ("very_long", " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 20)
     + " 最后的中文字符"),
]


# BertNormalizer flag sets checked in addition to the tokenizer's own config.
VARIANT_NORMALIZERS = [
    {"lowercase": True, "strip_accents": None},   # uncased BERT: lowercase + strip accents
    {"lowercase": False, "strip_accents": True},  # strip accents only
    {"lowercase": True, "strip_accents": False},  # lowercase, keep accents
    {"clean_text": False, "handle_chinese_chars": False},
]


def corpus_strings() -> list[str]:
    """A few hundred deterministic strings stressing the tokenizer's edges."""
    rng = random.Random(20240611)
    pools = {
        "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "latin1": "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞßİıŁłŒœŠšŽžƒ",
        "greek": "αβγδεζηθικλμνξοπρσςτυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰ",
        "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯіїєґ",
        "cjk": "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出要於會說國們東車貓紅沙發",
        "kana": "あいうえおかきくけこさしすせそたちつてとアイウエオカキクケコサシスセソーッャュョ",
        "hangul": "가나다라마바사아자차카타파하고양이소파빨간위에서있습니다",
        "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي،؛؟ًٌٍَُِّْ",
        "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौंः्।",
        "hebrew_thai": "אבגדהוזחטיכלמנסעפצקרשתกขคงจฉชซญดตถทนบปผพฟภมยรลวศษสหอฮะาิีึืุู่้๊๋",
        "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’“”„‹›–—…·•§¶†‡°′″※、。，．：；！？「」『』（）【】《》〈〉",
        "symbols": "€£¥₹©®™✓✗★☆♥♦♣♠←→↑↓∀∂∃∅∇∈∑√∞≈≠≤≥⊂⊃∧∨¬",
        "emoji": "😀😂🥰😍🤔👍👎🙏🔥✨🎉🐱🐶🍕🍣🚀🌍❤️🏳️‍🌈👨‍👩‍👧🏽",
        "combining": "\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0331\u0651\u093c\u200d\u200c",
        "space": " \t\n\r\u00a0\u2003\u3000\u200b\u2028\u0085\x0b\x0c",
        "control": "\x00\x01\x1b\x7f\u00ad\u200e\u2066\ufeff\ufffd\ue000\U000f0000",
        # Characters where Go's unicode tables (Unicode 15) and the tokenizers crate's
        # tables disagree: newer punctuation, late Mn marks, Cf, Rust-only case maps.
        "table_edges": "\u061d\u09fd\u0a76\u0c77\u166d\u1b7d\u2e43\u2e4f\u2e52\u2e55\u2e5d\u0890\u08e2"
                       "\u07fd\u0898\u08ca\u0afa\u0130\u1c89\ua7cb\U0002b820\U0002b91f\U0002b920\U0002ebf0"
                       "\U00030000\U00010ead\U00010f55\U00013430",
    }
    out = []
    names = sorted(pools)
    for i in range(360):
        k = rng.randint(1, 4)
        chosen = [pools[rng.choice(names)] for _ in range(k)]
        parts = []
        for _ in range(rng.randint(1, 12)):
            pool = rng.choice(chosen)
            word = "".join(rng.choice(pool) for _ in range(rng.randint(1, 9)))
            parts.append(word)
            parts.append(rng.choice([" ", " ", " ", "", "  ", "-", ", ", "\n"]))
        out.append("".join(parts))
    # Real words for realistic WordPiece merges.
    words = [t for _, t in TEXTS]
    for i in range(40):
        a, b = rng.choice(words), rng.choice(words)
        ca, cb = rng.randint(0, len(a)), rng.randint(0, len(b))
        out.append(a[:ca] + b[cb:])
    out.append("x" * 100)   # max_input_chars_per_word boundary
    out.append("x" * 101)
    out.append("é" * 100 + " " + "é" * 101)
    out.append("[MASK][MASK]x[SEP]y [CLS]z")
    out += ["[MAS[MASK]K]", "[[CLS]]", "[CLS", "a[PAD]b", "[UNK][UNK]", "[mask] [Mask]"]
    # Truncation next to an added token, and inputs longer than the Go
    # tokenizer's 4096-byte normalisation chunk.
    out.append("word " * 125 + "[MASK] tail")
    out.append("word " * 126 + "[MASK] tail")
    out.append(" " * 5000 + "hello world")
    out.append("\x00" * 5000 + "abc def")
    out.append("x" * 5000 + " abc")
    out.append("Ärger " * 900 + "END")
    out.append("猫" * 300)
    return out


def generate_texts(out: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    sess = ort_session(TEXT_MODEL)
    in_names = [i.name for i in sess.get_inputs()]
    assert sorted(in_names) == ["attention_mask", "input_ids"], in_names

    entries = []
    for name, text in TEXTS:
        enc_ = tok.encode(text)
        ids = np.array(enc_.ids, dtype=np.int64)[None]
        mask = np.array(enc_.attention_mask, dtype=np.int64)[None]
        emb = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0][0]
        assert emb.shape == (512,) and emb.dtype == np.float32
        entries.append({
            "name": name,
            "text": text,
            "tokens": enc_.tokens,
            "input_ids": enc_.ids,
            "attention_mask": enc_.attention_mask,
            "truncated": len(enc_.overflowing) > 0,
            "text_embeds": [f32(v) for v in emb],
        })
    # The model must give (nearly) the same embeddings for a padded batch: mean pooling
    # over the mask. Checked here, not stored (batch results may differ in the last ulp).
    batch = tok.encode_batch([t for _, t in TEXTS])
    seq = max(len(e.ids) for e in batch)
    pad_id = tok.token_to_id("[PAD]")
    ids = np.full((len(batch), seq), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), seq), dtype=np.int64)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    got = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]
    want = np.array([e["text_embeds"] for e in entries], dtype=np.float32)
    assert np.allclose(got, want, atol=1e-4, rtol=1e-4), np.abs(got - want).max()

    cfg = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    doc = {
        "tokenizer": str(TOKENIZER.relative_to(REPO)),
        "tokenizer_sha256": sha256_file(TOKENIZER),
        "model": str(TEXT_MODEL.relative_to(REPO)),
        "model_sha256": sha256_file(TEXT_MODEL),
        "max_length": MAX_TOKENS,
        "pad_id": pad_id,
        "normalizer": cfg.get("normalizer"),
        "embeds_normalised": False,
        "versions": versions(),
        "texts": entries,
    }
    write_json(out / "texts.json", doc)

    strings = corpus_strings() + [t for _, t in TEXTS]
    corpus = []
    for s in strings:
        e = tok.encode(s)
        corpus.append({"text": s, "input_ids": e.ids})
    # The same strings through the same vocabulary with other BertNormalizer flags, so
    # the Go tokenizer's lowercase / strip_accents / no-clean / no-CJK paths are pinned
    # too (the tiny tokenizer itself is cased, like production).
    variants = []
    for flags in VARIANT_NORMALIZERS:
        vcfg = json.loads(TOKENIZER.read_text(encoding="utf-8"))
        vcfg["normalizer"].update(flags)
        vtok = Tokenizer.from_str(json.dumps(vcfg))
        vtok.no_padding()
        vtok.enable_truncation(max_length=MAX_TOKENS)
        variants.append({"normalizer": vcfg["normalizer"],
                         "input_ids": [vtok.encode(s).ids for s in strings]})
    write_json(out / "expected" / "tokenizer_corpus.json", {
        "tokenizer_sha256": sha256_file(TOKENIZER),
        "max_length": MAX_TOKENS,
        "tokenizers_version": versions()["tokenizers"],
        "cases": corpus,
        "variants": variants,
    })


# --------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument("--wheel-cache", type=Path, default=DEFAULT_WHEEL_CACHE)
    ap.add_argument("--skip-texts", action="store_true", help="images only (no tokenizer needed)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp folder and fail if anything differs from --out")
    args = ap.parse_args()
    missing = [p for p in (IMAGE_MODEL,) + (() if args.skip_texts else (TEXT_MODEL, TOKENIZER))
               if not p.exists()]
    if missing:
        sys.exit("missing tiny model files (make them first): " + ", ".join(map(str, missing)))

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            gen(Path(tmp), args)
            diffs = compare_trees(Path(tmp), args.out, args.skip_texts)
        if diffs:
            sys.exit("fixtures are stale or generation is not deterministic:\n  " + "\n  ".join(diffs))
        print("fixtures up to date")
        return
    gen(args.out, args)


OUTPUTS = ("images", "expected/crops", "expected/images.json")
TEXT_OUTPUTS = ("texts.json", "expected/tokenizer_corpus.json")


def gen(out: Path, args) -> None:
    for rel in ("images", "expected/crops"):
        if (out / rel).exists():
            shutil.rmtree(out / rel)  # no stale files from renamed fixtures
    orig = load_originals(args.wheel_cache)
    generate_images(out, orig)
    if not args.skip_texts:
        generate_texts(out)


def compare_trees(a: Path, b: Path, skip_texts: bool) -> list[str]:
    diffs = []
    rels = OUTPUTS + (() if skip_texts else TEXT_OUTPUTS)
    for rel in rels:
        pa, pb = a / rel, b / rel
        if pa.is_dir():
            fa = sorted(p.relative_to(pa) for p in pa.rglob("*") if p.is_file())
            fb = sorted(p.relative_to(pb) for p in pb.rglob("*") if p.is_file()) if pb.is_dir() else []
            if fa != fb:
                diffs.append(f"{rel}: file lists differ")
            for f in fa:
                if (pb / f).exists() and not filecmp.cmp(pa / f, pb / f, shallow=False):
                    diffs.append(f"{rel}/{f}")
        elif not pb.exists():
            diffs.append(rel)
        elif not filecmp.cmp(pa, pb, shallow=False):
            # ONNX Runtime picks CPU kernels at run time (AVX2 / AVX-512 ...), so
            # embeddings made on another machine may differ in the last bits.
            # Accept that, and only that.
            ja = json.loads(pa.read_text(encoding="utf-8"))
            jb = json.loads(pb.read_text(encoding="utf-8"))
            why = json_diff(ja, jb, rel)
            if why:
                diffs.append(why)
            else:
                print(f"{rel}: embeddings differ from the committed ones only within tolerance")
    return diffs


def json_diff(a, b, path: str, embeds: bool = False) -> str | None:
    """First difference between two JSON values; floats under *_embeds keys
    compare with a tolerance, everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys differ"
        for k in a:
            d = json_diff(a[k], b[k], f"{path}.{k}", embeds or k.endswith("_embeds"))
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            d = json_diff(x, y, f"{path}[{i}]", embeds)
            if d:
                return d
        return None
    if embeds and isinstance(a, float) and isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) else f"{path}: {a} != {b}"
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} != {b!r}"


if __name__ == "__main__":
    main()
