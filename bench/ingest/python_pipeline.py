#!/usr/bin/env python3
"""The baseline of the ingest benchmark: what a user writes without tusou.

Pillow -> transformers CLIPImageProcessor -> onnxruntime (the same tiny ONNX image model that the
local Triton serves) -> L2-normalise -> official elasticsearch client helpers.bulk, into a fresh
index with the gateway's mapping (int8_hnsw, cosine), then one refresh so that everything is
searchable, like the gateway's acknowledged ingest. One process, batches of --batch images per
onnxruntime call (onnxruntime uses every core for it). Prints one JSON line.
"""
import argparse
import hashlib
import io
import json
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from elasticsearch import Elasticsearch, helpers  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from transformers import CLIPImageProcessor  # noqa: E402


def mapping(dims):
    # The gateway's index (esproxy/index.go defaults), so both sides pay the same indexing cost.
    return {"properties": {
        "image_embedding": {"type": "dense_vector", "dims": dims, "index": True, "similarity": "cosine",
                            "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100}},
        "metadata": {"type": "flattened"},
        "sha256": {"type": "keyword"}, "width": {"type": "integer"}, "height": {"type": "integer"}}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--es", default="http://127.0.0.1:9200")
    ap.add_argument("--index", required=True)
    ap.add_argument("--model", default="model_repository/tiny/clip_image/1/model.onnx")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(args.dir) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg")))
    es = Elasticsearch(args.es, request_timeout=300)
    proc = CLIPImageProcessor()
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    dims = sess.get_outputs()[0].shape[-1]
    es.indices.create(index=args.index, settings={"number_of_shards": 1, "number_of_replicas": 0},
                      mappings=mapping(dims))

    def docs():
        for i in range(0, len(files), args.batch):
            batch = files[i:i + args.batch]
            datas = [open(p, "rb").read() for p in batch]
            images = [ImageOps.exif_transpose(Image.open(io.BytesIO(d))).convert("RGB") for d in datas]
            pixels = proc(images=images, return_tensors="np")["pixel_values"]
            emb = sess.run(None, {"pixel_values": pixels.astype(np.float32)})[0]
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            for p, d, im, e in zip(batch, datas, images, emb):
                yield {"_index": args.index, "_id": hashlib.sha256(d).hexdigest(), "_source": {
                    "image_embedding": e.tolist(), "sha256": hashlib.sha256(d).hexdigest(),
                    "width": im.width, "height": im.height,
                    "metadata": {"image_name": os.path.basename(p), "relative_path": os.path.relpath(p, args.dir)}}}

    t0 = time.perf_counter()
    ok, errors = helpers.bulk(es, docs(), chunk_size=args.batch * 4, raise_on_error=False)
    es.indices.refresh(index=args.index)
    secs = time.perf_counter() - t0
    count = es.count(index=args.index)["count"]
    if errors or count != len(files):
        sys.exit("python pipeline: %d errors, %d of %d documents indexed: %s" % (len(errors), count, len(files), errors[:3]))
    print(json.dumps({"pipeline": "python", "images": len(files), "seconds": secs, "img_per_s": len(files) / secs,
                      "processor": type(proc).__name__}))


if __name__ == "__main__":
    main()
