#!/usr/bin/env bash
# make bench-ingest: one run, same Elasticsearch + Triton + tiny model, >= 500 distinct real photos
# (bench/fetch_wallpapers.sh), each pipeline into its own fresh index:
#   python       Pillow -> CLIPImageProcessor -> onnxruntime -> helpers.bulk (python_pipeline.py)
#   tusou ingest the CLI against a gateway started here (then a re-run of the completed folder)
#   single-file  POST /v1/images, raw image/jpeg, default refresh, concurrency 1 and 8 (main.go)
# The gateway is bin/tusou serve on 127.0.0.1:$BENCH_PORT (default 18180), sidecar off, its own
# alias and blob folder per pipeline, so nothing collides with other users of the stack.
# BENCH_PROFILE=1 also records a CPU profile of the gateway (perf) during each gateway pipeline.
# Results: $BENCH_OUT/ingest-*.json, table: bench/report.py.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
PORT=${BENCH_PORT:-18180}
URL=http://127.0.0.1:$PORT
ES=${BENCH_ES:-http://127.0.0.1:9200}
RUN=$(date +%s)
# The tokenizer of the clip_text model the stack serves, as `make run` picks it.
TOKENIZER=${BENCH_TOKENIZER:-$(ls model_repository/clip_text/tokenizer.json 2>/dev/null || echo model_repository/tiny/clip_text/tokenizer.json)}
TUSOU=${BENCH_TUSOU:-bin/tusou}
if [ "${BENCH_PROFILE:-0}" = 1 ] && [ -z "${BENCH_TUSOU:-}" ]; then
  # bin/tusou is stripped (-s -w): perf needs the symbol table.
  CGO_ENABLED=1 go build -o "$BENCH_OUT/tusou-symbols" ./cmd/tusou
  TUSOU=$BENCH_OUT/tusou-symbols
fi
[ -x "$TUSOU" ] || { echo "$TUSOU missing: make build" >&2; exit 1; }
bench_venv
[ -f "$PHOTOS/manifest.json" ] || bench/fetch_wallpapers.sh
go build -o "$BENCH_OUT/ingest-client" ./bench/ingest
N=$(ls "$PHOTOS"/*.jpg | wc -l)
rm -f "$BENCH_OUT"/ingest-*.json
echo "machine: $(machine); $N photos ($("$BENCH_PY" -c "import json,sys;s=json.load(open(sys.argv[1]))['summary'];print('%(source_photos)d real photographs, %(originals)d originals + %(crops)d distinct crops, %(mp_min).1f-%(mp_max).1f MP, mean %(mp_mean).1f MP' % s)" "$PHOTOS/manifest.json"))" | tee "$BENCH_OUT/ingest-machine.txt"

loadavg() { cut -d' ' -f1 /proc/loadavg; }
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }  # calc EXPR: arithmetic with a leading zero (valid JSON)
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }  # utime+stime

# annotate FILE KEY=VALUE...: add fields to the JSON object in FILE.
annotate() {
  "$BENCH_PY" - "$@" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p))
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try: v = float(v)
    except ValueError: pass
    d[k] = v
json.dump(d, open(p, "w"))
PY
}

GW_PID=
stop_gateway() {
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; GW_PID=; fi
}
drop_alias() {  # delete the concrete index behind the bench alias $1 (created by this script)
  local idx
  idx=$(curl -s "$ES/_alias/$1" | "$BENCH_PY" -c 'import json,sys; print(" ".join(json.load(sys.stdin).keys()))' 2>/dev/null || true)
  for i in $idx; do [[ $i == tusou-bench-* ]] && curl -s -o /dev/null -XDELETE "$ES/$i"; done
  return 0
}
ALIASES=()
cleanup() { stop_gateway; for a in "${ALIASES[@]}"; do drop_alias "$a"; done; rm -rf "$BENCH_OUT/blobs-$RUN"; }
trap cleanup EXIT

start_gateway() {  # start_gateway NAME: a fresh alias and blob folder
  local alias=tusou-bench-$1-$RUN
  ALIASES+=("$alias")
  "$TUSOU" serve --listen "127.0.0.1:$PORT" --set sidecar.enabled=false --set text.tokenizer_path="$TOKENIZER" \
    --set elasticsearch.index="$alias" --set elasticsearch.replicas=0 \
    --set blobs.dir="$BENCH_OUT/blobs-$RUN/$1" >"$BENCH_OUT/gateway-$1.log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$URL/readyz" && return 0
    kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$BENCH_OUT/gateway-$1.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "gateway not ready after 60 s" >&2; tail -20 "$BENCH_OUT/gateway-$1.log" >&2; exit 1
}
count() { curl -s "$ES/$1/_count" | "$BENCH_PY" -c 'import json,sys; print(json.load(sys.stdin)["count"])'; }

# gateway_run NAME CMD...: a fresh gateway, CMD timed against it, gateway CPU and metrics recorded.
gateway_run() {
  local name=$1; shift
  start_gateway "$name"
  local perf_pid= l0 c0 t0 t1
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    perf record -F 499 -g -p "$GW_PID" -o "$BENCH_OUT/perf-$name.data" >/dev/null 2>&1 & perf_pid=$!
  fi
  l0=$(loadavg); c0=$(cpu_s "$GW_PID"); t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  annotate_last=("gateway_cpu_s=$(calc "$(cpu_s "$GW_PID") - $c0")" "loadavg_start=$l0" "loadavg_end=$(loadavg)")
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    for sort in dso dso,symbol; do
      perf report -i "$BENCH_OUT/perf-$name.data" --no-children -g none --percent-limit 0.7 --sort $sort --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -25
    done >"$BENCH_OUT/perf-$name.txt" || true
  fi
  curl -s "$URL/metrics" >"$BENCH_OUT/metrics-$name.txt"
  # Without a refresh the count proves that every acknowledged image is searchable; refresh=false
  # (c1nr) promises less, so refresh first there.
  [ "$name" != c1nr ] || curl -s -o /dev/null -XPOST "$ES/tusou-bench-$name-$RUN/_refresh"
  local got; got=$(count "tusou-bench-$name-$RUN")
  [ "$got" = "$N" ] || { echo "$name: $got of $N images indexed" >&2; exit 1; }
  stop_gateway
  drop_alias "tusou-bench-$name-$RUN"
}

echo "== python: Pillow -> CLIPImageProcessor -> onnxruntime -> helpers.bulk"
l0=$(loadavg)
/usr/bin/time -f %U,%S -o "$BENCH_OUT/time-python.txt" \
  "$BENCH_PY" bench/ingest/python_pipeline.py --dir "$PHOTOS" --es "$ES" --index "tusou-bench-python-$RUN" >"$BENCH_OUT/ingest-python.json"
curl -s -o /dev/null -XDELETE "$ES/tusou-bench-python-$RUN"
annotate "$BENCH_OUT/ingest-python.json" "client_cpu_s=$(calc "$(tr , + <"$BENCH_OUT/time-python.txt")")" "loadavg_start=$l0" "loadavg_end=$(loadavg)"
cat "$BENCH_OUT/ingest-python.json"; echo

echo "== tusou ingest ${BENCH_INGEST_FLAGS:-} (then a re-run of the completed folder)"
ingest_twice() {
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f %U,%S -o "$BENCH_OUT/time-cli.txt" "$TUSOU" ingest --url "$URL" --report "$BENCH_OUT/cli-report.jsonl" ${BENCH_INGEST_FLAGS:-} "$PHOTOS" \
    >"$BENCH_OUT/cli-stdout.txt" 2>"$BENCH_OUT/cli-stderr.txt" </dev/null
  t1=$(date +%s.%N)
  echo "{\"pipeline\":\"tusou ingest\",\"images\":$N,\"seconds\":$(calc "$t1 - $t0"),\"img_per_s\":$(calc "$N / ($t1 - $t0)"),\"client_cpu_s\":$(calc "$(tr , + <"$BENCH_OUT/time-cli.txt")")}" >"$BENCH_OUT/ingest-cli.json"
  t0=$(date +%s.%N)
  "$TUSOU" ingest --url "$URL" --report "$BENCH_OUT/cli-report.jsonl" ${BENCH_INGEST_FLAGS:-} "$PHOTOS" >"$BENCH_OUT/cli-rerun-stdout.txt" 2>"$BENCH_OUT/cli-rerun-stderr.txt" </dev/null
  t1=$(date +%s.%N)
  echo "{\"pipeline\":\"tusou ingest, re-run of the completed folder\",\"images\":$N,\"seconds\":$(calc "$t1 - $t0"),\"img_per_s\":$(calc "$N / ($t1 - $t0)")}" >"$BENCH_OUT/ingest-cli-rerun.json"
}
gateway_run cli ingest_twice
annotate "$BENCH_OUT/ingest-cli.json" "${annotate_last[@]}"
cat "$BENCH_OUT/ingest-cli.json"; echo; tail -n 3 "$BENCH_OUT/cli-stdout.txt" "$BENCH_OUT/cli-stderr.txt" 2>/dev/null || true

for c in 1 8; do
  echo "== single-file POST /v1/images, concurrency $c"
  gateway_run "c$c" sh -c "'$BENCH_OUT/ingest-client' -url '$URL' -dir '$PHOTOS' -c $c >'$BENCH_OUT/ingest-single-c$c.json'"
  annotate "$BENCH_OUT/ingest-single-c$c.json" "${annotate_last[@]}"
  cat "$BENCH_OUT/ingest-single-c$c.json"; echo
done

# Diagnostic: the same c=1 run acknowledged before the refresh (?refresh=false), to show what the
# searchable-on-ack wait costs at c=1, where no writers can share a refresh.
echo "== single-file POST /v1/images?refresh=false, concurrency 1 (diagnostic)"
gateway_run c1nr sh -c "'$BENCH_OUT/ingest-client' -url '$URL' -dir '$PHOTOS' -c 1 -query refresh=false >'$BENCH_OUT/ingest-single-c1-norefresh.json'"
annotate "$BENCH_OUT/ingest-single-c1-norefresh.json" "${annotate_last[@]}"
cat "$BENCH_OUT/ingest-single-c1-norefresh.json"; echo

"$BENCH_PY" bench/report.py ingest "$BENCH_OUT" | tee "$BENCH_OUT/ingest.md"
