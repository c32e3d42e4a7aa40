#!/usr/bin/env python3
"""Print the Pillow-vs-Go comparison from bench_pillow.py and the Go bench
JSON, per image and per size class, plus embedding-level parity of the fast
mode (cosine between tiny-model embeddings of the exact and fast tensors,
when onnxruntime and the tensors dumped by the Go bench are available)."""
import glob
import json
import os
import platform
import sys

import numpy as np


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(pillow_json, go_json, tensors_dir="", model=""):
    py = {r["file"]: r for r in json.load(open(pillow_json))["results"]}
    go = json.load(open(go_json))
    rows = []
    for r in go["results"]:
        p = py.get(r["file"])
        if not p:
            continue
        rows.append((r, p))
    rows.sort(key=lambda rp: rp[0]["mp"])
    print("machine: %s, %d CPUs online; each side pinned to one core; rates are images per CPU-second"
          % (cpu_model(), os.cpu_count()))
    print("pillow = PIL open + exif_transpose + CLIPImageProcessorPil; draft = same with JPEG draft to >=448 px")
    print("%-26s %6s %8s %8s %8s %8s %7s %7s %6s %9s %7s" % (
        "file", "MP", "pillow", "draft", "go-exact", "go-fast", "exact/x", "fast/x", "scale", "maxdiff", "PSNR"))
    for r, p in rows:
        print("%-26s %6.1f %8.1f %8s %8.1f %8.1f %7.1f %7.1f %6s %9.4f %7.1f" % (
            r["file"][:26], r["mp"], p["pillow_img_per_s"],
            "%.1f" % p["pillow_draft_img_per_s"] if "pillow_draft_img_per_s" in p else "-",
            r["exact_img_per_s"], r["fast_img_per_s"],
            r["exact_img_per_s"] / p["pillow_img_per_s"], r["fast_img_per_s"] / p["pillow_img_per_s"],
            "1/%d" % r["fast_decode_scale"], r["fast_tensor_max_abs_diff"], r["fast_crop_psnr_db"]))
    print()
    print("per size class (geometric mean of per-image rates):")
    classes = {}
    for r, p in rows:
        classes.setdefault(round(r["mp"], 1), []).append((r, p))

    def gm(xs):
        return float(np.exp(np.mean(np.log(xs))))

    print("%6s %3s %8s %8s %8s %8s %8s" % ("MP", "n", "pillow", "go-exact", "go-fast", "exact/x", "fast/x"))
    for mp in sorted(classes):
        rs = classes[mp]
        pl = gm([p["pillow_img_per_s"] for _, p in rs])
        ex = gm([r["exact_img_per_s"] for r, _ in rs])
        fa = gm([r["fast_img_per_s"] for r, _ in rs])
        print("%6.1f %3d %8.1f %8.1f %8.1f %8.1f %8.1f" % (mp, len(rs), pl, ex, fa, ex / pl, fa / pl))
    if tensors_dir and model and os.path.exists(model):
        try:
            import onnxruntime as ort
        except ImportError:
            print("\n(onnxruntime not installed: no embedding-level parity)")
            return
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        print("\nembedding parity, fast vs exact (%s; random-init tiny model, so this checks numerics only):" % model)
        for f in sorted(glob.glob(os.path.join(tensors_dir, "*.exact.f32"))):
            e = np.fromfile(f, "<f4").reshape(1, 3, 224, 224)
            fa = np.fromfile(f.replace(".exact.", ".fast."), "<f4").reshape(1, 3, 224, 224)
            ee = sess.run(None, {"pixel_values": e})[0][0]
            fe = sess.run(None, {"pixel_values": fa})[0][0]
            cos = float(np.dot(ee, fe) / (np.linalg.norm(ee) * np.linalg.norm(fe)))
            print("  %-30s cosine %.6f" % (os.path.basename(f)[:-10], cos))


if __name__ == "__main__":
    main(*sys.argv[1:])
