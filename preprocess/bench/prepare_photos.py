#!/usr/bin/env python3
"""Build the benchmark photo set from the KDE wallpaper photographs.

Originals (2560x1600, 4.1 MP; Volna 5120x2880, 14.7 MP) are copied byte for
byte. Other sizes are derived from real photos without synthesising content:
downscaled (1.0 and 2.3 MP, Pillow LANCZOS) or cropped (8.0 and 11.8 MP from
the 14.7 MP photo), then re-encoded as baseline 4:2:0 JPEG at quality 90, like
a phone or web export.
"""
import os
import shutil
import sys

from PIL import Image

PHOTOS = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
          "FallenLeaf", "Kite", "OneStandsOut", "Path", "summer_1am"]


def main(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    out = []

    def orig(name):
        return os.path.join(src, name, "contents", "images", "2560x1600.jpg")

    for name in PHOTOS[:4]:
        d = os.path.join(dst, "4.1mp_%s.jpg" % name)
        shutil.copyfile(orig(name), d)
        out.append(d)
    for name, size, tag in [("EveningGlow", (1280, 800), "1.0mp"), ("Path", (1280, 800), "1.0mp"),
                            ("FallenLeaf", (1920, 1200), "2.3mp"), ("OneStandsOut", (1920, 1200), "2.3mp")]:
        im = Image.open(orig(name)).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        d = os.path.join(dst, "%s_%s.jpg" % (tag, name))
        im.save(d, quality=90)
        out.append(d)
    volna = os.path.join(src, "Volna", "contents", "images", "5120x2880.jpg")
    im = Image.open(volna).convert("RGB")
    for (w, h), tag in [((3456, 2304), "8.0mp"), ((4096, 2880), "11.8mp")]:
        x0, y0 = (im.width - w) // 2, (im.height - h) // 2
        d = os.path.join(dst, "%s_Volna.jpg" % tag)
        im.crop((x0, y0, x0 + w, y0 + h)).save(d, quality=90)
        out.append(d)
    for p in out:
        with Image.open(p) as im:
            print("%-40s %dx%d %.1f MP %d KB" % (os.path.basename(p), im.width, im.height,
                                                 im.width * im.height / 1e6, os.path.getsize(p) // 1024))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
