#!/usr/bin/env bash
# Local NVIDIA Triton (PyTriton's tritonserver binary, python backend, CPU-only) for tusou: serves every
# version of clip_image and clip_text that the configs' version_policy selects (the tiny models: versions
# 1 and 2) over KServe v2 HTTP :8000, gRPC :8001, metrics :8002 on 127.0.0.1. See deploy/local/README-triton.md.
#
#   deploy/local/triton.sh up        build/refresh .local/venv if requirements changed, start, wait until every
#                                    served model version is ready
#   deploy/local/triton.sh down      stop our process session (tritonserver, stubs, proxies), wait for free ports
#   deploy/local/triton.sh restart   down + up (e.g. after `make export-models` or a config.pbtxt change)
#   deploy/local/triton.sh status    exit 0 up and ready, 3 not running, 4 running but not ready
#   deploy/local/triton.sh logs [-f] last lines of .local/logs/triton.log (or follow)
#
# Environment overrides: TUSOU_PYTHON (base interpreter), TUSOU_MODEL_REPO, TUSOU_MODEL_VARIANT
# (auto|real|tiny), TRITON_READY_TIMEOUT (s, default 180), TRITON_ORT_THREADS (default 1),
# TRITON_QUEUE_TIMEOUT_US (override the configs' queue timeout; production values assume a GPU),
# TRITON_WARMUP=1 (also run the configs' model_warmup).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
VENV="$LOCAL/venv"
RUN="$LOCAL/run"
LOGS="$LOCAL/logs"
PIDFILE="$RUN/triton.pid"
SELFILE="$RUN/triton.selection"
SERVED="$RUN/triton.served"  # "<model> <version>" per line, written by triton_server.py before tritonserver starts
LOG="$LOGS/triton.log"
REQ="$ROOT/deploy/local/requirements-serve.txt"
SERVER="$ROOT/deploy/local/triton_server.py"
STAMP="$VENV/.tusou-requirements.sha256"
WHEELS="$LOCAL/cache/serve-wheels"
MODEL_REPO="${TUSOU_MODEL_REPO:-$ROOT/model_repository}"
VARIANT="${TUSOU_MODEL_VARIANT:-auto}"
READY_TIMEOUT="${TRITON_READY_TIMEOUT:-180}"
ORT_THREADS="${TRITON_ORT_THREADS:-1}"
EXTRA_ARGS=()
# The production queue timeouts (500 ms image, 200 ms text) assume a GPU that
# runs a batch in milliseconds; on this CPU one batch takes up to seconds, so
# the local stack allows 30 s by default (requests may still ask for less).
TRITON_QUEUE_TIMEOUT_US="${TRITON_QUEUE_TIMEOUT_US:-30000000}"
[[ -n "${TRITON_QUEUE_TIMEOUT_US}" ]] && EXTRA_ARGS+=(--queue-timeout-us "$TRITON_QUEUE_TIMEOUT_US")
[[ "${TRITON_WARMUP:-0}" == 1 ]] && EXTRA_ARGS+=(--warmup)
ADDR=127.0.0.1
HTTP_PORT=8000
GRPC_PORT=8001
METRICS_PORT=8002
PORTS=("$HTTP_PORT" "$GRPC_PORT" "$METRICS_PORT")
MODELS=(clip_image clip_text)
EMBED_DIM=512
BASE="http://$ADDR:$HTTP_PORT"

log() { printf '[triton] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# base_python prints the interpreter for the venv: $TUSOU_PYTHON, else the
# first of python3.11, 3.12, 3.10, 3.9, 3.8, python3 on PATH whose version is
# in PyTriton's supported range 3.8-3.12 (3.11 is the tested one).
base_python() {
  local p c
  if [[ -n "${TUSOU_PYTHON:-}" ]]; then
    [[ -x "$TUSOU_PYTHON" ]] || die "TUSOU_PYTHON=$TUSOU_PYTHON is not an executable"
    echo "$TUSOU_PYTHON"
    return
  fi
  for c in python3.11 python3.12 python3.10 python3.9 python3.8 python3; do
    p="$(command -v "$c" 2>/dev/null)" || continue
    # sys.executable: the real interpreter behind a pyenv shim (the venv stamp records it)
    if "$p" -c 'import sys; sys.exit(not ((3, 8) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
      "$p" -c 'import sys; print(sys.executable)'
      return
    fi
  done
  die "no Python 3.8-3.12 on PATH (PyTriton's range; 3.11 preferred, with libpython3.X.so): install one or set TUSOU_PYTHON=/path/to/python3.11"
}

# The python backend stub embeds libpython: its folder must be on LD_LIBRARY_PATH.
python_libdir() {
  local py="$1" dir lib
  dir="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  lib="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')"
  [[ -e "$dir/$lib" ]] || die "$dir/$lib missing: PyTriton needs a shared libpython (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"
  echo "$dir"
}

# (Re)build the venv only when requirements-serve.txt or the base interpreter changed.
ensure_venv() {
  local py want
  py="$(base_python)"
  want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$py" -VV; echo "$py"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    return 0
  fi
  log "building $VENV from $(basename "$REQ") (downloads ~130 MB the first time; pip log: $LOGS/venv-install.log)"
  rm -rf "$VENV"
  mkdir -p "$WHEELS" "$LOGS"
  "$py" -m venv "$VENV"
  # Wheels are kept in $WHEELS (pip's own cache does not keep them here), so a rebuild after a
  # requirements change downloads only what changed; the install itself is then offline.
  local pip=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip")
  if ! { "${pip[@]}" install --no-input --no-index --find-links "$WHEELS" -r "$REQ" ||
         { echo "--- offline install failed: downloading missing wheels ---" &&
           "${pip[@]}" download --no-input --only-binary=:all: -d "$WHEELS" -r "$REQ" &&
           "${pip[@]}" install --no-input --no-index --find-links "$WHEELS" -r "$REQ"; }
       } >"$LOGS/venv-install.log" 2>&1; then
    tail -n 30 "$LOGS/venv-install.log" >&2
    rm -rf "$VENV"
    die "pip install -r $REQ failed"
  fi
  "$VENV/bin/python" -c 'import pytriton, onnxruntime, tritonclient.grpc.model_config_pb2' \
    || { rm -rf "$VENV"; die "venv import check failed"; }
  echo "$want" >"$STAMP"
}

# pid of our running server (pid file + the process really is triton_server.py), or nothing.
server_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 0
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "triton_server.py"; then
    echo "$pid"
  fi
}

# Live (non-zombie) processes in session $1 (server_pid is the session leader: started with setsid).
session_pids() {
  ps -e -o pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ { print $1 }'
}

port_listening() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]
  else
    (exec 3<>"/dev/tcp/$ADDR/$1") 2>/dev/null
  fi
}

busy_ports() {
  local p out=()
  for p in "${PORTS[@]}"; do port_listening "$p" && out+=("$p"); done
  echo "${out[*]:-}"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE$1" 2>/dev/null || true; }

# Ready = server ready AND every served version of every model ready (the server reports ready before
# models finish loading; each version loads on its own).
all_ready() {
  local m v n=0
  [[ "$(http_code /v2/health/ready)" == 200 ]] || return 1
  if [[ ! -s "$SERVED" ]]; then  # a server started by an older checkout: each model's default version
    for m in "${MODELS[@]}"; do [[ "$(http_code "/v2/models/$m/ready")" == 200 ]] || return 1; done
    return 0
  fi
  while read -r m v; do
    [[ "$(http_code "/v2/models/$m/versions/$v/ready")" == 200 ]] || return 1
    n=$((n + 1))
  done <"$SERVED"
  for m in "${MODELS[@]}"; do  # every model must have at least one served version
    grep -q "^$m " "$SERVED" || return 1
  done
  ((n > 0))
}

# Model metadata of every served version must show every output as FP32 [-1, 512]; prints server version
# and shapes.
check_metadata() {
  "$VENV/bin/python" - "$BASE" "$EMBED_DIM" "$SERVED" <<'EOF'
import json, sys, urllib.request
base, dim, served = sys.argv[1], int(sys.argv[2]), sys.argv[3]
get = lambda p: json.load(urllib.request.urlopen(base + p, timeout=5))
srv = get("/v2")
bad = []
for line in open(served):
    m, v = line.split()
    md = get(f"/v2/models/{m}/versions/{v}")
    for o in md["outputs"]:
        if o["datatype"] != "FP32" or int(o["shape"][-1]) != dim:
            bad.append(f"{m} v{v}.{o['name']}: {o['datatype']} {o['shape']} (want FP32 [..., {dim}])")
    print(f"[triton]   {m} version {v}: in {[(i['name'], i['datatype'], i['shape']) for i in md['inputs']]} "
          f"out {[(o['name'], o['datatype'], o['shape']) for o in md['outputs']]}", file=sys.stderr)
if bad:
    sys.exit("[triton] ERROR: " + "; ".join(bad))
print(f"[triton]   server {srv['name']} {srv['version']}", file=sys.stderr)
EOF
}

# What `up` would serve now: per model the ONNX files of every version (real or tiny, as
# triton_server.py picks them) and the config, with size+mtime.
selection() {
  local m dir onnx=()
  for m in "${MODELS[@]}"; do
    dir="$MODEL_REPO/$m"
    if [[ "$VARIANT" == tiny ]] || [[ "$VARIANT" == auto && -z "$(compgen -G "$dir/[0-9]*/model.onnx")" ]]; then
      dir="$MODEL_REPO/tiny/$m"
    fi
    mapfile -t onnx < <(compgen -G "$dir/[0-9]*/model.onnx" | sort -V)
    if ((${#onnx[@]} == 0)); then echo "$dir/<N>/model.onnx MISSING"; continue; fi
    stat -c '%n %s %Y' "${onnx[@]}" "$MODEL_REPO/$m/config.pbtxt" 2>/dev/null || echo "$MODEL_REPO/$m/config.pbtxt MISSING"
  done
}

# Stop session $1 entirely: SIGTERM to the leader (orderly tritonserver shutdown), then SIGTERM/SIGKILL
# to every process left in the session. Then remove the shared-memory segments they had mapped.
stop_session() {
  local sid="$1" t shm=() p f
  for p in $(session_pids "$sid"); do
    while read -r f; do shm+=("$f"); done < <(grep -ho '/dev/shm/[^ ]*' "/proc/$p/maps" 2>/dev/null | sort -u)
  done
  if [[ -n "$(server_pid)" ]]; then
    kill -TERM "$sid" 2>/dev/null || true  # leader alive: it stops tritonserver in order
  else
    for p in $(session_pids "$sid"); do kill -TERM "$p" 2>/dev/null || true; done
  fi
  for ((t = 0; t < 150; t++)); do  # tritonserver's shutdown takes ~2-10 s (exit_timeout 10 s)
    [[ -z "$(session_pids "$sid")" ]] && break
    sleep 0.2
  done
  if [[ -n "$(session_pids "$sid")" ]]; then
    log "session $sid still has processes after 30 s: SIGTERM, then SIGKILL"
    for p in $(session_pids "$sid"); do kill -TERM "$p" 2>/dev/null || true; done
    sleep 3
    for p in $(session_pids "$sid"); do kill -KILL "$p" 2>/dev/null || true; done
    for ((t = 0; t < 50; t++)); do [[ -z "$(session_pids "$sid")" ]] && break; sleep 0.2; done
  fi
  [[ -z "$(session_pids "$sid")" ]] || die "processes of session $sid survived SIGKILL: $(session_pids "$sid" | tr '\n' ' ')"
  for f in "${shm[@]}"; do [[ -e "$f" ]] && rm -f "$f"; done
  return 0
}

wait_ports_free() {
  local t b
  for ((t = 0; t < 150; t++)); do
    b="$(busy_ports)"
    [[ -z "$b" ]] && return 0
    sleep 0.2
  done
  die "ports still in use after 30 s: $b"
}

cmd_down() {
  local pid sid
  pid="$(server_pid)"
  sid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ -z "$pid" && "$sid" =~ ^[0-9]+$ && -n "$(session_pids "$sid")" ]]; then
    # Leader gone (e.g. SIGKILLed) but its children live on (tritonserver, stubs). A session id is the
    # pid of its leader, so while that pid is free (or a zombie) only our leader's descendants can be
    # in session $sid. If the pid was reused by a live process, the session is not ours.
    if [[ -e "/proc/$sid" && "$(ps -o stat= -p "$sid" 2>/dev/null)" != Z* ]]; then
      log "WARNING: pid $sid from $PIDFILE now belongs to another process; not touching session $sid"
    else
      pid="$sid"
    fi
  fi
  if [[ -z "$pid" ]]; then
    rm -f "$PIDFILE"
    log "not running"
  else
    log "stopping session $pid ($(session_pids "$pid" | wc -l) processes)"
    stop_session "$pid"
    rm -f "$PIDFILE"
  fi
  # pytriton-workspace: left by the PyTriton-bound server of older checkouts
  rm -rf "$RUN/pytriton-workspace" "$RUN/model-repo" "$RUN/triton-backends" "$SERVED"
  wait_ports_free
  log "down"
}

cmd_status() {
  local pid
  pid="$(server_pid)"
  if [[ -z "$pid" ]]; then echo "triton: down"; return 3; fi
  if all_ready; then
    echo "triton: up (pid $pid, http $ADDR:$HTTP_PORT grpc $ADDR:$GRPC_PORT metrics $ADDR:$METRICS_PORT)"
    [[ -f "$SELFILE" ]] && sed 's/^/  serving: /' "$SELFILE"
    return 0
  fi
  echo "triton: running (pid $pid) but not ready"
  return 4
}

cmd_up() {
  local pid py libdir t0 t deadline sel
  t0=$(date +%s)
  command -v curl >/dev/null || die "curl is required (apt-get install -y curl)"
  pid="$(server_pid)"
  if [[ -n "$pid" ]] && all_ready; then
    sel="$(selection)"
    if [[ ! -f "$SELFILE" || "$sel" != "$(cat "$SELFILE")" ]]; then
      log "WARNING: models or configs changed since start; run '$0 restart' to serve them"
    fi
    [[ -f "$STAMP" ]] || log "WARNING: venv stamp missing; '$0 restart' rebuilds it"
    log "already up (pid $pid)"
    return 0
  fi
  if [[ -z "$pid" ]]; then
    [[ -f "$PIDFILE" ]] && cmd_down  # clean a stale pid file / orphaned session
    local busy; busy="$(busy_ports)"
    if [[ -n "$busy" ]]; then
      ss -ltnp 2>/dev/null | grep -E ":($(IFS='|'; echo "${PORTS[*]}"))\b" >&2 || true
      die "ports $busy are in use by another process"
    fi
    ensure_venv
    py="$(base_python)"
    libdir="$(python_libdir "$py")"
    mkdir -p "$RUN" "$LOGS"
    [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
    selection >"$SELFILE"
    rm -f "$SERVED"
    log "starting (log: $LOG)"
    # setsid: the server leads its own session, so `down` can find every process it spawned
    # (tritonserver, one python backend stub per model version) by session id.
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      setsid nohup "$VENV/bin/python" -u "$SERVER" \
        --repo "$MODEL_REPO" --variant "$VARIANT" --address "$ADDR" \
        --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" \
        --threads "$ORT_THREADS" --run-dir "$RUN" --log-file "$LOG" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} \
        </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
  fi
  deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until all_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "server exited during start-up; last log lines:"
      tail -n 60 "$LOG" >&2 || true
      cmd_down || true
      exit 1
    fi
    if (( $(date +%s) >= deadline )); then
      log "not ready after ${READY_TIMEOUT}s; last log lines:"
      tail -n 60 "$LOG" >&2 || true
      cmd_down || true
      exit 1
    fi
    sleep 0.5
  done
  if ! check_metadata; then
    tail -n 20 "$LOG" >&2 || true
    cmd_down || true
    exit 1
  fi
  grep '^MODEL ' "$LOG" | sed 's/^/[triton]   /' >&2 || true
  t=$(( $(date +%s) - t0 ))
  log "up in ${t}s: http $ADDR:$HTTP_PORT grpc $ADDR:$GRPC_PORT metrics $ADDR:$METRICS_PORT (pid $pid)"
}

cmd_logs() {
  if [[ "${1:-}" == "-f" ]]; then exec tail -n 50 -F "$LOG"; fi
  tail -n "${1:-100}" "$LOG"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  restart) cmd_down; cmd_up ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 up|down|restart|status|logs [-f|N]" >&2; exit 2 ;;
esac
