#!/usr/bin/env bash
# make bench: CLIP preprocessing throughput, reference Python stack vs Go, on
# real 1-12 MP JPEG photos, one core each, plus the fast mode's parity.
#
#   BENCH_TIME=2 preprocess/bench/run.sh      (CPU seconds per image and mode)
#
# Needs python3 >= 3.11 on PATH or $PYTHON (for .local/venv-preprocess), Go with cgo and
# libturbojpeg0-dev, apt access for the photos (fetch_photos.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.local/venv-preprocess/bin/python
if [ ! -x "$PY" ]; then
  "${PYTHON:-python3}" -m venv .local/venv-preprocess
  "$PY" -m pip install -q -r preprocess/bench/requirements.txt
fi
ls .local/cache/bench-photos/photos/*.jpg >/dev/null 2>&1 || preprocess/bench/fetch_photos.sh
OUT=.local/bench
mkdir -p "$OUT"
T=${BENCH_TIME:-2}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
echo "== reference: Pillow + transformers CLIPImageProcessorPil (taskset -c 0)"
taskset -c 0 "$PY" preprocess/bench/bench_pillow.py --time "$T" --draft --json "$OUT/pillow.json"
echo "== Go: preprocess (GOMAXPROCS=1, taskset -c 0)"
go build -o "$OUT/preprocess-bench" ./preprocess/bench
GOMAXPROCS=1 taskset -c 0 "$OUT/preprocess-bench" -time "${T}s" -json "$OUT/go.json" -tensors "$OUT/tensors"
echo "== comparison"
"$PY" preprocess/bench/compare.py "$OUT/pillow.json" "$OUT/go.json" "$OUT/tensors" model_repository/tiny/clip_image/1/model.onnx
