#!/usr/bin/env python3
"""Recall benchmark: kNN on an int8_hnsw index vs exact brute force, with and without rescore_vector.

Vectors: --n (default 100k) CLIP-like 512-d unit vectors, bulk-loaded straight into Elasticsearch
(no inference: this measures the index, not the model). The tiny test model cannot supply them: its
random weights put every image within a few thousandths of cosine of every other, which says
nothing about recall. So the generator reproduces the geometry of real CLIP ViT-B/32 embeddings
that matters to HNSW and to int8 scalar quantisation:
  * a cone: all vectors share a common direction (unrelated CLIP images have cosine ~0.2-0.5, not 0);
  * clusters of very different sizes (topics, near-duplicates): log-normal sizes over --clusters
    centres, members at cosine ~0.75 of their centre's neighbours;
  * anisotropic dimensions, a few with large magnitude (CLIP has "outlier" dimensions), which
    stretch the int8 quantisation range of every other dimension.
Queries come from the same generator but are not indexed: half image-like (as close to their
cluster as members are), half text-like (much farther from everything: CLIP's modality gap puts
text at cosine ~0.3 of the best images, where quantisation error matters most).

Exact top-k by numpy brute force on the float32 values Elasticsearch parsed (the vectors are sent
rounded to 6 decimals and the reference uses those same numbers). Elasticsearch's cosine score is
(1 + cos) / 2, so the reported cosine is 2*score - 1. Prints one JSON line.
"""
import argparse
import json
import os
import time

import numpy as np
from elasticsearch import Elasticsearch, helpers


def generate(rng, n, dims, clusters):
    mu = rng.standard_normal(dims)
    mu[rng.choice(dims, 4, replace=False)] *= 4.0  # outlier dimensions
    mu /= np.linalg.norm(mu)
    scale = np.exp(rng.normal(0.0, 0.4, dims))  # anisotropic per-dimension spread

    def noise(m):
        g = rng.standard_normal((m, dims)) * scale
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    centres = 0.8 * mu + noise(clusters)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = rng.lognormal(0.0, 1.0, clusters)

    def sample(m, sigma):
        c = rng.choice(clusters, m, p=sizes / sizes.sum())
        v = centres[c] + sigma * noise(m)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return sample


def pct(xs, p):
    return float(np.percentile(np.asarray(xs), p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--es", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="tusou-bench-recall-%d" % os.getpid())
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--num-candidates", type=int, default=100, help="the gateway's default: k * 10")
    ap.add_argument("--oversample", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the index afterwards")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sample = generate(rng, args.n, args.dims, args.clusters)
    # 6 decimals in JSON; the reference uses the same numbers, as float32 like Elasticsearch stores them.
    x64 = np.round(sample(args.n, 0.6), 6)
    x = x64.astype(np.float32)
    half = args.queries // 2
    q = np.round(np.vstack([sample(half, 0.6), sample(args.queries - half, 1.6)]), 6).astype(np.float32)
    qkind = ["image-like"] * half + ["text-like"] * (args.queries - half)

    es = Elasticsearch(args.es, request_timeout=600)
    es.indices.create(index=args.index, settings={
        "number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"}, mappings={
        "dynamic": "strict", "properties": {"v": {
            "type": "dense_vector", "dims": args.dims, "index": True, "similarity": "cosine",
            # the gateway's defaults (esproxy/config.go)
            "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100}}}})
    try:
        t0 = time.perf_counter()
        rows = x64.tolist()
        actions = ({"_index": args.index, "_id": str(i), "_source": {"v": rows[i]}} for i in range(args.n))
        for ok, item in helpers.parallel_bulk(es, actions, thread_count=2, chunk_size=1000, queue_size=4):
            if not ok:
                raise SystemExit("bulk item failed: %s" % item)
        es.indices.refresh(index=args.index)
        load_s = time.perf_counter() - t0
        count = es.count(index=args.index)["count"]
        assert count == args.n, count
        segments = len(es.cat.segments(index=args.index, format="json"))

        # Exact answers.
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        exact = qn @ xn.T
        top = np.argsort(-exact, axis=1)[:, :args.k]

        def knn(qv, rescore):
            body = {"field": "v", "query_vector": qv.tolist(), "k": args.k, "num_candidates": args.num_candidates}
            if rescore:
                body["rescore_vector"] = {"oversample": args.oversample}
            t = time.perf_counter()
            r = es.search(index=args.index, knn=body, size=args.k, source=False)
            return r, (time.perf_counter() - t) * 1000

        for i in range(min(20, args.queries)):  # warm-up: load the graph and vectors into the page cache
            knn(q[i], False)
            knn(q[i], True)
        out = {"vectors": args.n, "dims": args.dims, "queries": args.queries, "k": args.k,
               "num_candidates": args.num_candidates, "oversample": args.oversample, "load_s": load_s,
               "segments": segments, "force_merged": False, "variants": {}}
        res = {v: {"recall": [], "err": [], "ms": [], "took": [], "kind": []} for v in ("plain", "rescore")}
        for i in range(args.queries):
            for variant in (("plain", "rescore") if i % 2 == 0 else ("rescore", "plain")):
                r, ms = knn(q[i], variant == "rescore")
                ids = [int(h["_id"]) for h in r["hits"]["hits"]]
                got = np.array([2 * h["_score"] - 1 for h in r["hits"]["hits"]])
                d = res[variant]
                d["recall"].append(len(set(ids) & set(top[i].tolist())) / args.k)
                d["err"].append(float(np.max(np.abs(got - exact[i, ids]))) if ids else 0.0)
                d["ms"].append(ms)
                d["took"].append(r["took"])
                d["kind"].append(qkind[i])
        for v, d in res.items():
            kinds = np.array(d["kind"])
            out["variants"][v] = {
                "recall_at_k": float(np.mean(d["recall"])),
                "recall_image_like": float(np.mean(np.array(d["recall"])[kinds == "image-like"])),
                "recall_text_like": float(np.mean(np.array(d["recall"])[kinds == "text-like"])),
                "max_abs_score_error": float(np.max(d["err"])),
                "p50_ms": pct(d["ms"], 50), "p99_ms": pct(d["ms"], 99), "took_p50_ms": pct(d["took"], 50)}
        best = exact[np.arange(args.queries), top[:, 0]]
        out["exact_top1_cosine"] = {"image-like": float(np.median(best[:half])), "text-like": float(np.median(best[half:]))}
        print(json.dumps(out))
    finally:
        if not args.keep:
            es.indices.delete(index=args.index, ignore_unavailable=True)


if __name__ == "__main__":
    main()
