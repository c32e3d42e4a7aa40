#!/usr/bin/env python3
"""Markdown tables of the benchmark results: report.py ingest|recall OUT_DIR."""
import json
import os
import sys


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def ingest(out):
    print()
    machine = open(os.path.join(out, "ingest-machine.txt")).read().strip()
    print(machine)
    print()
    py = load(os.path.join(out, "ingest-python.json"))
    rows = [("Python: Pillow → CLIPImageProcessor → onnxruntime → helpers.bulk", py),
            ("`tusou ingest DIR`", load(os.path.join(out, "ingest-cli.json"))),
            ("`tusou ingest DIR` again (folder already indexed)", load(os.path.join(out, "ingest-cli-rerun.json"))),
            ("single-file `POST /v1/images`, c=1", load(os.path.join(out, "ingest-single-c1.json"))),
            ("single-file `POST /v1/images`, c=8", load(os.path.join(out, "ingest-single-c8.json"))),
            ("diagnostic: single-file c=1 with `?refresh=false` (not searchable on ack)",
             load(os.path.join(out, "ingest-single-c1-norefresh.json")))]
    print("| pipeline | images | s | img/s | vs Python | p50 ms | p99 ms | gateway CPU s | client CPU s | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def f(r, k, fmt="%.1f"):
        return fmt % r[k] if r and k in r else "–"
    for name, r in rows:
        if r is None:
            print("| %s | not run | | | | | | | | |" % name)
            continue
        ratio = "%.2f×" % (r["img_per_s"] / py["img_per_s"]) if py else "–"
        load_ = "%s→%s" % (f(r, "loadavg_start"), f(r, "loadavg_end")) if "loadavg_start" in r else "–"
        print("| %s | %d | %.1f | %.1f | %s | %s | %s | %s | %s | %s |" % (
            name, r["images"], r["seconds"], r["img_per_s"], ratio, f(r, "p50_ms"), f(r, "p99_ms"),
            f(r, "gateway_cpu_s"), f(r, "client_cpu_s"), load_))
    print()
    cli, c1, c8 = rows[1][1], rows[3][1], rows[4][1]

    def verdict(ok):
        return "met" if ok else "MISSED"
    if py and cli:
        r = cli["img_per_s"] / py["img_per_s"]
        print("- target `tusou ingest` ≥ 5× Python: %.2f× — %s" % (r, verdict(r >= 5)))
    if c1:
        print("- target single-file p50 ≤ 60 ms at c=1: %.1f ms — %s" % (c1["p50_ms"], verdict(c1["p50_ms"] <= 60)))
    if py and c8:
        r = c8["img_per_s"] / py["img_per_s"]
        print("- target single-file c=8 ≥ 1× Python: %.2f× — %s" % (r, verdict(r >= 1)))
    stages(out)


def metrics(path):
    """Sums and counts of the gateway's histograms, keyed by name and labels."""
    m = {}
    for line in open(path):
        if line.startswith("#") or "_bucket{" in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.endswith(("_sum", "_count")) or "_sum{" in name or "_count{" in name:
            m[name] = float(value)
    return m


STAGES = [  # (label, histogram name and labels, per what)
    ("POST /v1/images (whole request)", 'tusou_http_request_duration_seconds{code="201",method="POST",route="/v1/images"}'),
    ("Triton clip_image queue wait", 'tusou_triton_queue_wait_seconds{model="clip_image"}'),
    ("Triton clip_image infer", 'tusou_triton_infer_duration_seconds{model="clip_image",outcome="ok"}'),
    ("Elasticsearch single-document write, refresh wait included (op=index)",
     'tusou_es_request_duration_seconds{op="index"}'),
    ("Elasticsearch bulk (op=bulk)", 'tusou_es_request_duration_seconds{op="bulk"}'),
    ("Elasticsearch existence check (op=exists)", 'tusou_es_request_duration_seconds{op="exists"}'),
    ("Elasticsearch refresh call", 'tusou_es_request_duration_seconds{op="refresh"}'),
    ("writer's wait for the coalesced refresh", "tusou_es_refresh_wait_seconds"),
]


def stages(out):
    runs = [(n, os.path.join(out, "metrics-%s.txt" % n)) for n in ("cli", "c1", "c8", "c1nr")]
    runs = [(n, metrics(p)) for n, p in runs if os.path.exists(p)]
    if not runs:
        return
    print()
    print("Where the time goes (gateway /metrics of each run: calls, mean ms per call):")
    print()
    print("| stage | " + " | ".join({"cli": "`tusou ingest`", "c1": "c=1", "c8": "c=8", "c1nr": "c=1 refresh=false"}[n] for n, _ in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for label, key in STAGES:
        cells = []
        for _, m in runs:
            base, brace, labels = key.partition("{")
            s, c = m.get(base + "_sum" + brace + labels), m.get(base + "_count" + brace + labels)
            cells.append("%d × %.1f" % (c, 1000 * s / c) if c else "–")
        print("| %s | %s |" % (label, " | ".join(cells)))
    wr = [(n, m.get("tusou_es_refresh_writers_sum"), m.get("tusou_es_refresh_writers_count")) for n, m in runs]
    print()
    print("writers per refresh: " + ", ".join("%s %.1f" % (n, s / c) for n, s, c in wr if c))


def recall(out):
    r = load(os.path.join(out, "recall.json"))
    print()
    print("%d vectors × %d dims, int8_hnsw (m=16, ef_construction=100, cosine), %d segment(s), not force-merged; "
          "bulk load + refresh %.0f s; %d queries (half image-like, half text-like), k=%d, num_candidates=%d"
          % (r["vectors"], r["dims"], r["segments"], r["load_s"], r["queries"], r["k"], r["num_candidates"]))
    print()
    print("| kNN | recall@%d | image-like | text-like | max abs(score − exact cosine) | p50 ms | p99 ms | ES took p50 ms |" % r["k"])
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, key in (("int8_hnsw, no rescoring", "plain"),
                      ("int8_hnsw + `rescore_vector` oversample %g" % r["oversample"], "rescore")):
        v = r["variants"][key]
        print("| %s | %.3f | %.3f | %.3f | %.2e | %.1f | %.1f | %.1f |" % (
            name, v["recall_at_k"], v["recall_image_like"], v["recall_text_like"], v["max_abs_score_error"],
            v["p50_ms"], v["p99_ms"], v["took_p50_ms"]))
    p, s = r["variants"]["plain"], r["variants"]["rescore"]
    print()
    print("rescoring costs %+.1f ms p50 per query (client-side), %+.1f ms in ES `took`; exact top-1 cosine median: "
          "image-like %.2f, text-like %.2f" % (s["p50_ms"] - p["p50_ms"], s["took_p50_ms"] - p["took_p50_ms"],
                                              r["exact_top1_cosine"]["image-like"], r["exact_top1_cosine"]["text-like"]))


if __name__ == "__main__":
    {"ingest": ingest, "recall": recall}[sys.argv[1]](sys.argv[2])
