#!/usr/bin/env bash
# make bench-recall: recall@10 of the int8_hnsw index vs exact brute force at 100k CLIP-like 512-d
# vectors, with and without kNN rescore_vector, and the latency cost (recall.py says how and why).
#   BENCH_RECALL_ARGS="--n 200000 --queries 400" bench/recall/run.sh
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
bench_venv
echo "machine: $(machine); load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH_PY" bench/recall/recall.py ${BENCH_RECALL_ARGS:-} >"$BENCH_OUT/recall.json"
"$BENCH_PY" bench/report.py recall "$BENCH_OUT" | tee "$BENCH_OUT/recall.md"
