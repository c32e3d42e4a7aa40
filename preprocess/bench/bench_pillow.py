#!/usr/bin/env python3
"""Time the reference stack on one core: bytes -> PIL open -> exif_transpose
-> transformers CLIPImageProcessorPil (slow, PIL) -> pixel_values.

Reports images per CPU-second of this process (time.process_time: user +
system, all threads), which stays meaningful on a shared machine. Run pinned
to one core with thread pools at 1 (run.sh does: taskset -c 0, OMP/MKL/
OPENBLAS_NUM_THREADS=1).
"""
import argparse
import glob
import io
import json
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from transformers import CLIPImageProcessorPil  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".local/cache/bench-photos/photos")
    ap.add_argument("--time", type=float, default=2.0, help="minimum CPU seconds per image")
    ap.add_argument("--json", default="")
    ap.add_argument("--draft", action="store_true", help="also time Pillow with JPEG draft (DCT scaling)")
    args = ap.parse_args()
    proc = CLIPImageProcessorPil()

    def run(data, draft=False):
        im = Image.open(io.BytesIO(data))
        if draft:
            # What a tuned Pillow service would do: DCT-scale to >= 2x224.
            im.draft("RGB", (448, 448))
        im = ImageOps.exif_transpose(im)
        return proc(images=im, return_tensors="np")["pixel_values"]

    def rate(f):
        f()
        n, t0 = 0, time.process_time()
        while n < 3 or time.process_time() - t0 < args.time:
            f()
            n += 1
        return n / (time.process_time() - t0)

    files = sorted(glob.glob(os.path.join(args.dir, "*.jp*g")))
    if not files:
        sys.exit("no JPEGs in %s (run preprocess/bench/fetch_photos.sh)" % args.dir)
    import PIL
    import transformers

    print("Pillow %s, transformers %s, numpy %s" % (PIL.__version__, transformers.__version__, np.__version__))
    print("%-44s %10s %6s %10s %10s" % ("file", "size", "MP", "pillow/s", "draft/s"))
    results = []
    for f in files:
        data = open(f, "rb").read()
        w, h = Image.open(io.BytesIO(data)).size
        r = {"file": os.path.basename(f), "width": w, "height": h, "mp": w * h / 1e6,
             "pillow_img_per_s": rate(lambda: run(data))}
        if args.draft:
            r["pillow_draft_img_per_s"] = rate(lambda: run(data, True))
        results.append(r)
        print("%-44s %10s %6.1f %10.1f %10s" % (r["file"][:44], "%dx%d" % (w, h), r["mp"], r["pillow_img_per_s"],
                                                "%.1f" % r["pillow_draft_img_per_s"] if args.draft else "-"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"pillow": PIL.__version__, "transformers": transformers.__version__, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
