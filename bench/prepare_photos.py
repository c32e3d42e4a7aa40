#!/usr/bin/env python3
"""Build the ingest benchmark's photo set: >= --count DISTINCT real photos, 1-12 MP JPEG.

Sources are the 38 photographs (not renders, logos, illustrations or photo-art composites) shipped in Debian's
plasma-workspace-wallpapers, mate-backgrounds and lomiri-wallpapers-{16,20}.04 packages
(fetch_wallpapers.sh extracts them). 38 photos are fewer than a benchmark needs, so the set is
completed with crops of them: each a different region (overlap with any earlier crop of the same
photo limited to IoU < 0.6 where the photo is large enough) at a different scale and aspect ratio,
downscaled to 1-12 MP where needed and re-encoded as baseline 4:2:0 JPEG at quality 80-95, like a
phone or web export. Originals of 1-12 MP are copied byte for byte. Nothing is synthesised, and
every file is a distinct image (distinct bytes, distinct crop box). Deterministic (seeded).

    prepare_photos.py SRC_ROOT DST_DIR [--count 520]
"""
import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys

from PIL import Image, ImageOps

# Photographs only, judged by eye on a contact sheet of every image in the packages.
PHOTOS = [
    "backgrounds/Bridge_by_Sander_Klootwijk.jpg", "backgrounds/Dragonfly_by_Bolly.jpg",
    "backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "backgrounds/Picture_0B_by_freespace.jpg", "backgrounds/Picture_1A_by_freespace.jpg",
    "backgrounds/Wine_by_Jakkub_Mede.jpg", "backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
    "backgrounds/analogpattern_by_Peter_Nerlich.jpg", "backgrounds/free_by_Peter_Nerlich.jpg",
    "backgrounds/friends_by_Aitzol_Berasategi.jpg", "backgrounds/greentock_by_Peter_Nerlich.jpg",
    "backgrounds/life_by_Aitzol_Berasategi.jpg", "backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "backgrounds/seeding_by_Clements_Engelhardt.jpg", "backgrounds/sunset_by_Aitzol_Berasategi.jpg",
] + ["backgrounds/mate/nature/%s.jpg" % n for n in [
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
    "TwoWings", "Wood", "YellowFlower"]] + ["wallpapers/%s/contents/images/2560x1600.jpg" % n for n in [
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am"]]

MIN_PX, MAX_PX = 1_000_000, 12_000_000
ASPECTS = [4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 9 / 16]


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def crop_box(rng, w, h, boxes):
    """A random crop of >= 1 MP whose IoU with every earlier box is small (relaxed if the photo is too small)."""
    for attempt in range(400):
        limit = 0.6 if attempt < 200 else 0.85
        aspect = rng.choice(ASPECTS)
        lo = MIN_PX / float(w * h)
        frac = math.exp(rng.uniform(math.log(max(lo, 0.2)), 0.0)) if lo < 1 else 1.0
        area = max(MIN_PX * 1.0001, frac * w * h)
        cw = min(w, int(round(math.sqrt(area * aspect))))
        ch = min(h, int(round(area / cw)))
        if cw * ch < MIN_PX:
            continue
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        box = (x0, y0, x0 + cw, y0 + ch)
        if box not in boxes and all(iou(box, b) < limit for b in boxes):
            return box
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--count", type=int, default=520)
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.dst, exist_ok=True)
    srcs = []
    for rel in PHOTOS:
        p = os.path.join(args.src, rel)
        if not os.path.exists(p):
            sys.exit("missing %s (run bench/fetch_wallpapers.sh)" % p)
        with Image.open(p) as im:
            srcs.append((rel, p, im.width * im.height))
    total = sum(a for _, _, a in srcs)
    # Crops per photo grow with its pixel count: a 20 MP photo holds many more distinct regions.
    quota = [max(4, int(round(args.count * a / total))) for _, _, a in srcs]
    while sum(quota) < args.count:
        quota[max(range(len(srcs)), key=lambda i: srcs[i][2] / quota[i])] += 1
    manifest, hashes, originals, crops = [], set(), 0, 0
    for (rel, path, area), n in zip(srcs, quota):
        name = rel.split("/contents")[0].split("/")[-1].rsplit(".", 1)[0]
        im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        w, h = im.size
        boxes = []
        if MIN_PX <= area <= MAX_PX:
            dst = os.path.join(args.dst, "%04d_%s_original.jpg" % (len(manifest), name))
            shutil.copyfile(path, dst)
            boxes.append((0, 0, w, h))
            manifest.append({"file": os.path.basename(dst), "source": rel, "box": [0, 0, w, h],
                             "width": w, "height": h, "quality": None})
            originals += 1
        while len(boxes) < n:
            box = crop_box(rng, w, h, boxes)
            if box is None:
                break
            boxes.append(box)
            c = im.crop(box)
            cw, ch = c.size
            # Scale: about two thirds keep the crop's own resolution (when <= 12 MP), the rest are downscaled
            # to a log-uniform 1-12 MP target, as exports and phone resizes are.
            top = min(MAX_PX, cw * ch)
            if cw * ch > MAX_PX or rng.random() < 0.35:
                target = math.exp(rng.uniform(math.log(MIN_PX * 1.01), math.log(top)))
                s = math.sqrt(target / (cw * ch))
                c = c.resize((max(1, int(cw * s)), max(1, int(ch * s))), Image.Resampling.LANCZOS)
            q = rng.randint(80, 95)
            dst = os.path.join(args.dst, "%04d_%s_%dx%d_q%d.jpg" % (len(manifest), name, c.width, c.height, q))
            c.save(dst, "JPEG", quality=q, subsampling="4:2:0")
            manifest.append({"file": os.path.basename(dst), "source": rel, "box": list(box),
                             "width": c.width, "height": c.height, "quality": q})
            crops += 1
    for m in manifest:
        data = open(os.path.join(args.dst, m["file"]), "rb").read()
        m["sha256"] = hashlib.sha256(data).hexdigest()
        m["bytes"] = len(data)
        assert m["sha256"] not in hashes, m
        hashes.add(m["sha256"])
        assert MIN_PX <= m["width"] * m["height"] <= MAX_PX, m
    mps = sorted(m["width"] * m["height"] / 1e6 for m in manifest)
    summary = {"files": len(manifest), "source_photos": len(srcs), "originals": originals, "crops": crops,
               "mp_min": mps[0], "mp_median": mps[len(mps) // 2], "mp_mean": sum(mps) / len(mps), "mp_max": mps[-1],
               "bytes_total": sum(m["bytes"] for m in manifest)}
    with open(os.path.join(args.dst, "manifest.json"), "w") as fh:
        json.dump({"summary": summary, "files": manifest}, fh, indent=1)
    print("%(files)d distinct photos from %(source_photos)d real photographs: %(originals)d originals byte for byte, "
          "%(crops)d distinct crops (different regions/scales, re-encoded JPEG q80-95); "
          "%(mp_min).1f-%(mp_max).1f MP, median %(mp_median).1f, mean %(mp_mean).1f MP, "
          "%(bytes_total)d bytes" % summary)


if __name__ == "__main__":
    main()
