#!/usr/bin/env python3
"""Generate preprocess/ parity test data with the reference Python stack.

Writes, next to this script:
  images/<name>     small synthetic test images covering every decode path
                    (JPEG subsamplings, progressive, gray, CMYK, all 8 EXIF
                    orientations, XMP orientation, PNG modes incl. 16-bit,
                    palette+tRNS and eXIf, GIF first frame, WebP lossy/alpha/
                    lossless), generated from a fixed seed;
  expected/manifest.json  per image: oriented size, source mode, and the
                    sha256 of the reference 224x224x3 uint8 crop (packed RGB)
                    and of the float32 CHW tensor (little endian);
  expected/norm_lut.bin   3x256 float32: the processor's output for every
                    8-bit value per channel (rescale + normalise).

Reference definition (keep identical to the fixtures generator):
  PIL open -> ImageOps.exif_transpose -> first frame -> 16-bit gray >>8 ->
  transformers CLIPImageProcessorPil (convert_to_rgb composites alpha over
  white, BICUBIC shortest side 224, centre crop 224, /255, CLIP mean/std).

Run with the pinned venv (preprocess/bench/requirements.txt):
  .local/venv-preprocess/bin/python preprocess/testdata/gen_reference.py [--crops DIR]
--crops also writes the reference crops as PNG (not committed: the hashes are
enough for the test, the PNGs help diagnose a mismatch; point
PREPROCESS_REFERENCE_CROPS at DIR and the test reports per-pixel differences).
"""

import hashlib
import io
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageOps

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from transformers import CLIPImageProcessorPil  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "images")
EXPECTED = os.path.join(HERE, "expected")

PROC = CLIPImageProcessorPil()


def reference_image(data: bytes) -> Image.Image:
    """The reference decode: orientation, first frame, 16-bit -> 8-bit."""
    im = Image.open(io.BytesIO(data))
    im.seek(0)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.uint32) >> 8
        im = Image.fromarray(arr.astype(np.uint8), "L")
    return im


def reference(data: bytes):
    im = reference_image(data)
    tensor = PROC(images=im, return_tensors="np")["pixel_values"][0]
    crop = PROC(images=im, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    assert tensor.dtype == np.float32 and tensor.shape == (3, 224, 224)
    assert crop.dtype == np.uint8
    return im.size, np.ascontiguousarray(crop.transpose(1, 2, 0)), tensor


# ---------------------------------------------------------------- content


def photo_like(w: int, h: int, seed: int, noise: float = 0.8) -> Image.Image:
    """Smooth gradients + texture + hard edges + text: stresses ringing and
    clipping in the bicubic filter and chroma edges in JPEG."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.uniform(0.5, 6, 2) * 2 * np.pi / np.array([w, h])
            ph = rng.uniform(0, 2 * np.pi)
            img[..., c] += rng.uniform(20, 60) * np.sin(fx * xx + fy * yy + ph)
        img[..., c] += rng.uniform(80, 170)
    img += rng.normal(0, noise, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        x1, y1 = x0 + rng.randint(4, max(5, w // 3)), y0 + rng.randint(4, max(5, h // 3))
        col = tuple(int(v) for v in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.ellipse([x0, y0, x1, y1], outline=col, width=3)
    for i in range(6):
        d.text((rng.randint(0, w), rng.randint(0, h)), "tusou %d" % i, fill=(255, 255, 255))
        d.line([(rng.randint(0, w), rng.randint(0, h)), (rng.randint(0, w), rng.randint(0, h))],
               fill=(0, 0, 0), width=1)
    return im


def exif_orientation(o: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def jpeg(im, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def png(im, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def webp(im, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "WEBP", **kw)
    return b.getvalue()


def alpha_ramp(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    a = ((xx * 255) // max(1, w - 1)).astype(np.uint8)
    a[: h // 4] = 0
    a[h // 4 : h // 2] = 255
    return a


def with_xmp_orientation(data: bytes, o: int) -> bytes:
    """Insert an XMP APP1 carrying tiff:Orientation after SOI."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="%d"/></rdf:RDF></x:xmpmeta>' % o)
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    seg = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + seg + data[2:]


def build():
    out = {}
    base = photo_like(1024, 768, 1)
    out["jpeg_420_q90.jpg"] = jpeg(base, quality=90)
    out["jpeg_444_q95.jpg"] = jpeg(photo_like(800, 600, 2), quality=95, subsampling=0)
    out["jpeg_422_q85.jpg"] = jpeg(photo_like(640, 960, 3), quality=85, subsampling=1)
    out["jpeg_progressive.jpg"] = jpeg(photo_like(1200, 700, 4), quality=88, progressive=True)
    out["jpeg_optimized_restart.jpg"] = jpeg(photo_like(900, 900, 5), quality=80, optimize=True)
    out["jpeg_gray_1000x900.jpg"] = jpeg(photo_like(1000, 900, 6).convert("L"), quality=90)
    out["jpeg_cmyk.jpg"] = jpeg(photo_like(600, 450, 7).convert("CMYK"), quality=92)
    out["jpeg_cmyk_1000x900.jpg"] = jpeg(photo_like(1000, 900, 14).convert("CMYK"), quality=85)
    # One side exactly 224 after orientation: no resampling at all, the crop
    # is read through the transposed view.
    out["jpeg_300x224_orientation_6.jpg"] = jpeg(photo_like(300, 224, 15), quality=90, exif=exif_orientation(6))
    out["jpeg_odd_333x517.jpg"] = jpeg(photo_like(333, 517, 8), quality=90)
    out["jpeg_tiny_upscale_37x23.jpg"] = jpeg(photo_like(37, 23, 9), quality=95)
    out["jpeg_exact_224.jpg"] = jpeg(photo_like(224, 224, 10), quality=90)
    out["jpeg_large_3000x2000.jpg"] = jpeg(photo_like(3000, 2000, 11, noise=1.5), quality=75)
    orient_src = photo_like(640, 400, 12)
    for o in range(1, 9):
        out["jpeg_orientation_%d.jpg" % o] = jpeg(orient_src, quality=90, exif=exif_orientation(o))
    out["jpeg_large_orientation_6.jpg"] = jpeg(photo_like(1800, 1200, 13, noise=1.5), quality=75, exif=exif_orientation(6))
    out["jpeg_xmp_orientation_8.jpg"] = with_xmp_orientation(jpeg(orient_src, quality=90), 8)

    p = photo_like(320, 240, 20, noise=1.0)
    out["png_rgb.png"] = png(p)
    rgba = p.copy()
    rgba.putalpha(Image.fromarray(alpha_ramp(320, 240)))
    out["png_rgba.png"] = png(rgba)
    la = p.convert("L")
    la.putalpha(Image.fromarray(alpha_ramp(320, 240)))
    out["png_la.png"] = png(la.convert("LA"))
    out["png_gray.png"] = png(p.convert("L"))
    out["png_palette.png"] = png(p.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    pal = p.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    out["png_palette_trns.png"] = png(pal, transparency=3)
    out["png_rgb_trns.png"] = png(p.quantize(16).convert("RGB"), transparency=tuple(p.quantize(16).convert("RGB").getpixel((0, 0))))
    yy, xx = np.mgrid[0:240, 0:320]
    g16 = (np.asarray(p.convert("L")).astype(np.uint16) * 256 + ((xx * 7 + yy * 3) % 256)).astype(np.uint16)
    out["png_gray16.png"] = png(Image.fromarray(g16))
    out["png_1bit.png"] = png(p.convert("1"))
    out["png_interlaced.png"] = interlaced_png(p)
    out["png_exif_orientation_6.png"] = png(p, exif=exif_orientation(6))
    out["png_wide_2000x300.png"] = png(photo_like(1600, 240, 22, noise=1.0))
    out["png_upscale_100x80.png"] = png(photo_like(100, 80, 23))
    rgb16, rgba16 = png16(photo_like(192, 144, 25, noise=0.5))
    out["png_rgb16.png"] = rgb16
    out["png_rgba16.png"] = rgba16

    g = photo_like(400, 300, 30)
    f1 = g.convert("P", palette=Image.Palette.ADAPTIVE, colors=128)
    f2 = photo_like(400, 300, 31).convert("P", palette=Image.Palette.ADAPTIVE, colors=128)
    b = io.BytesIO()
    f1.save(b, "GIF", save_all=True, append_images=[f2], duration=100, loop=0)
    out["gif_animated.gif"] = b.getvalue()
    b = io.BytesIO()
    f1.save(b, "GIF", transparency=5)
    out["gif_transparent.gif"] = b.getvalue()

    out["gif_offset_frame.gif"] = gif_offset(photo_like(100, 80, 32), None)
    out["gif_offset_frame_transparent.gif"] = gif_offset(photo_like(100, 80, 33), 7)

    w = photo_like(640, 480, 40)
    out["webp_lossy.webp"] = webp(w, quality=80)
    out["webp_lossy_odd_331x213.webp"] = webp(photo_like(331, 213, 41), quality=75)
    wa = w.copy()
    wa.putalpha(Image.fromarray(alpha_ramp(640, 480)))
    out["webp_lossy_alpha.webp"] = webp(wa, quality=80)
    wl = photo_like(320, 240, 42, noise=1.0)
    wl.putalpha(Image.fromarray(alpha_ramp(320, 240)))
    out["webp_lossless.webp"] = webp(wl, lossless=True)
    out["webp_exif_orientation_6.webp"] = webp(w, quality=80, exif=exif_orientation(6))
    return out


def gif_offset(im: Image.Image, transparency) -> bytes:
    """A GIF whose first frame (100x80) sits at (30, 20) on a 160x120 logical
    screen: Pillow fills the rest with the transparent index, else index 0."""
    fr = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    b = io.BytesIO()
    if transparency is None:
        fr.save(b, "GIF")
    else:
        fr.save(b, "GIF", transparency=transparency)
    d = bytearray(b.getvalue())
    d[6:8] = (160).to_bytes(2, "little")
    d[8:10] = (120).to_bytes(2, "little")
    p = 13
    if d[10] & 0x80:
        p += 3 * (2 ** ((d[10] & 7) + 1))
    while d[p] == 0x21:
        p += 2
        while d[p] != 0:
            p += d[p] + 1
        p += 1
    assert d[p] == 0x2C
    d[p + 1 : p + 3] = (30).to_bytes(2, "little")
    d[p + 3 : p + 5] = (20).to_bytes(2, "little")
    return bytes(d)


def interlaced_png(im: Image.Image) -> bytes:
    """Adam7 PNG via a minimal encoder (Pillow cannot write interlaced)."""
    import struct
    import zlib

    arr = np.asarray(im.convert("RGB"))
    h, w, _ = arr.shape
    raw = b""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\x00" + row.tobytes()

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png16(im: Image.Image):
    """16-bit RGB and RGBA PNGs (Pillow cannot write them)."""
    import struct
    import zlib

    yy, xx = np.mgrid[0 : im.height, 0 : im.width]
    low = ((xx * 5 + yy * 11) % 256)[..., None]
    arr = np.asarray(im.convert("RGB")).astype(np.uint16) * 256 + low
    arr = arr.astype(">u2")
    alpha = (alpha_ramp(im.width, im.height).astype(np.uint16) * 257).astype(">u2")[..., None]

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    def enc(a, ctype):
        h, w, _ = a.shape
        raw = b"".join(b"\x00" + row.tobytes() for row in a)
        ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")

    return enc(arr, 2), enc(np.concatenate([arr, alpha], axis=2), 6)


def main():
    crops_dir = ""
    if len(sys.argv) == 3 and sys.argv[1] == "--crops":
        crops_dir = sys.argv[2]
        os.makedirs(crops_dir, exist_ok=True)
    os.makedirs(IMAGES, exist_ok=True)
    os.makedirs(EXPECTED, exist_ok=True)
    images = build()
    manifest = {}
    for name, data in sorted(images.items()):
        with open(os.path.join(IMAGES, name), "wb") as f:
            f.write(data)
        size, crop, tensor = reference(data)
        if crops_dir:
            Image.fromarray(crop, "RGB").save(os.path.join(crops_dir, name + ".png"))
        raw = Image.open(io.BytesIO(data))
        manifest[name] = {
            "width": size[0],
            "height": size[1],
            "mode": raw.mode,
            "crop_sha256": hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest(),
            "tensor_sha256": hashlib.sha256(tensor.astype("<f4").tobytes()).hexdigest(),
        }
    # Normalisation LUT: a 224x224 image holding every value in each channel
    # goes through the processor without resampling (224 -> 224 is a copy).
    v = np.arange(224 * 224) % 256
    arr = np.stack([v, (v + 85) % 256, (v + 170) % 256], axis=1).reshape(224, 224, 3).astype(np.uint8)
    t = PROC(images=Image.fromarray(arr, "RGB"), return_tensors="np")["pixel_values"][0]
    lut = np.zeros((3, 256), np.float32)
    for c in range(3):
        flat = arr[..., c].reshape(-1)
        lut[c, flat] = t[c].reshape(-1)
    lut.astype("<f4").tofile(os.path.join(EXPECTED, "norm_lut.bin"))
    import PIL
    import transformers

    manifest_doc = {
        "generator": "preprocess/testdata/gen_reference.py",
        "pillow": PIL.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "images": manifest,
    }
    with open(os.path.join(EXPECTED, "manifest.json"), "w") as f:
        json.dump(manifest_doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %d images" % len(images), file=sys.stderr)


if __name__ == "__main__":
    main()
