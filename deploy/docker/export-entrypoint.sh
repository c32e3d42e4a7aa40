#!/bin/sh
# Entrypoint of the model-export image (deploy/docker/export.Dockerfile).
# Builds a complete Triton model repository in $MODEL_REPO_OUT (default
# /models), the layout Triton and the gateway expect:
#   clip_image/config.pbtxt  clip_image/configs/cpu.pbtxt  clip_image/<N>/model.onnx
#   clip_text/config.pbtxt   clip_text/configs/cpu.pbtxt   clip_text/<N>/model.onnx
#   clip_text/tokenizer.json (version 1's)  clip_text/<N>/tokenizer.json (N > 1)
# One numbered directory per Triton model version; each version is one model
# generation of the gateway (model_repository/README.md). config.pbtxt files
# are the committed production configs; configs/cpu.pbtxt are derived from
# them (triton_cpu_config.py) for CPU-only Triton.
#
# EXPORT_MODE=real (default) runs `python3 -m tusou_export export` (downloads
#   the real weights from the model hub); EXPORT_ARGS adds arguments to it
#   (e.g. "--image-revision <commit> --text-revision <commit>" to pin them,
#   "--version 2" to export the next generation as Triton version 2).
# EXPORT_MODE=random exports the same full-size architectures with random
#   weights (no download): proves the pipeline, never serve it.
# EXPORT_MODE=tiny copies the committed tiny test models, every version (1
#   and 2: two generations with different weights; same names, shapes and
#   512-d outputs, random weights: plumbing only, never search quality).
# EXPORT_FORCE=1 rebuilds even if a complete repository of the same mode,
#   arguments and source revision is already there (compose re-runs this on
#   every `up`).
set -eu

# TUSOU_HOME: where the image keeps the sources (tests point it elsewhere).
home="${TUSOU_HOME:-/opt/tusou}"
src="$home/model_repository"
out="${MODEL_REPO_OUT:-/models}"
mode="${EXPORT_MODE:-real}"
models="clip_image clip_text"
stamp_want="mode=${mode} args=${EXPORT_ARGS:-} source=$(cat "$home/SOURCE_DIGEST")"

if [ "${EXPORT_FORCE:-0}" != 1 ] && [ -f "$out/.tusou-export" ] \
   && [ "$(cat "$out/.tusou-export")" = "$stamp_want" ]; then
  echo "model repository in $out is complete ($stamp_want); EXPORT_FORCE=1 rebuilds it"
  exit 0
fi

stage="$out/.staging"
rm -rf "$stage"
mkdir -p "$stage"

PYTHONPATH="$src/export${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
case "$mode" in
  real)
    # shellcheck disable=SC2086 # EXPORT_ARGS is a list of words on purpose
    python3 -m tusou_export export --out "$stage" ${EXPORT_ARGS:-}
    ;;
  random)
    # shellcheck disable=SC2086
    python3 -m tusou_export export --random-init --out "$stage" ${EXPORT_ARGS:-}
    ;;
  tiny)
    for m in $models; do
      for d in "$src/tiny/$m"/[0-9]*/; do
        [ -d "$d" ] || continue
        v=$(basename "$d")
        mkdir -p "$stage/$m/$v"
        cp "$d/model.onnx" "$stage/$m/$v/model.onnx"
      done
    done
    # The tiny versions share one tokenizer; it goes where a real export puts
    # each version's own, so gateway configs are the same for both modes.
    cp "$src/tiny/clip_text/tokenizer.json" "$stage/clip_text/tokenizer.json"
    for d in "$stage/clip_text"/[0-9]*/; do
      [ -d "$d" ] && [ "$(basename "$d")" != 1 ] || continue
      cp "$src/tiny/clip_text/tokenizer.json" "$d/tokenizer.json"
    done
    ;;
  *)
    echo "EXPORT_MODE must be real, random or tiny, got '$mode'" >&2
    exit 2
    ;;
esac

for m in $models; do
  # The committed production config is the contract; the export must not
  # invent its own.
  cp "$src/$m/config.pbtxt" "$stage/$m/config.pbtxt"
  python3 "$home/bin/triton_cpu_config.py" "$stage/$m"
  versions=0
  for d in "$stage/$m"/[0-9]*/; do
    [ -d "$d" ] || continue
    v=$(basename "$d")
    test -s "$d/model.onnx" || { echo "missing $m/$v/model.onnx" >&2; exit 1; }
    versions=$((versions + 1))
  done
  [ "$versions" -gt 0 ] || { echo "no version of $m was exported" >&2; exit 1; }
done
# Every text version has its tokenizer (a missing one is an error in the
# gateway, never a fallback to another version's).
for d in "$stage/clip_text"/[0-9]*/; do
  [ -d "$d" ] || continue
  v=$(basename "$d")
  tok="clip_text/$v/tokenizer.json"
  [ "$v" != 1 ] || tok="clip_text/tokenizer.json"
  test -s "$stage/$tok" || { echo "missing $tok" >&2; exit 1; }
done

# Swap the finished models in; readers (Triton, the gateway) start only after
# this job completed, so no one sees a half-written repository.
rm -f "$out/.tusou-export"
for m in $models; do
  rm -rf "$out/$m"
  mv "$stage/$m" "$out/$m"
done
# Provenance of a real/random export (hub revisions, parity numbers, hashes):
# export_manifest.json for version 1, export_manifest.v<N>.json for N.
for f in "$stage"/export_manifest*.json; do
  if [ -f "$f" ]; then mv "$f" "$out/$(basename "$f")"; fi
done
rm -rf "$stage"
echo "$stamp_want" > "$out/.tusou-export"
echo "model repository ready in $out ($stamp_want)"
find "$out" -type f ! -name '.tusou-export' | sort
