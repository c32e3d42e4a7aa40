#!/usr/bin/env bash
# deploy/local/stack.sh — the whole local stack (Elasticsearch, the secured Elasticsearch
# node, Triton, the S3-compatible object store) without Docker.
#
#   deploy/local/stack.sh up       start both Elasticsearch nodes, then Triton and S3 (in parallel), print total time
#   deploy/local/stack.sh down     stop them all
#   deploy/local/stack.sh status   status of each; exit 0 all up, 3 all down, 1 otherwise
#
# Each component has its own script with the same verbs and exit codes (0 up, 3 down):
#   deploy/local/elasticsearch.sh (HTTP :9200, security off), deploy/local/elasticsearch-secure.sh
#   (HTTPS :9250 with authentication, for the tests of credentials and TLS), deploy/local/triton.sh,
#   deploy/local/s3.sh (S3Proxy :9000, credentials in .local/s3.env) (each called only if it exists).
# STACK_SERIAL=1 starts them one after the other instead of in parallel (easier to read logs;
# on a 2-core box the parallel start mostly overlaps ES's JVM warm-up with Triton's).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMPONENTS=(elasticsearch elasticsearch-secure triton s3)

log() { printf 'stack: %s\n' "$*" >&2; }

script_of() { echo "$HERE/$1.sh"; }
present() { [[ -f "$(script_of "$1")" ]]; }

# Run one component's verb with its output prefixed by its name (unless a line already starts
# with "[name]" or "name:"), so parallel output stays readable; returns its exit code.
run_prefixed() {
  local name="$1" verb="$2"
  bash "$(script_of "$name")" "$verb" 2>&1 |
    sed -u -e "/^\[$name\]/b" -e "/^$name:/b" -e "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}

cmd_up() {
  local start=$SECONDS rc=0 name
  local -A pids=() rcs=()
  for name in "${COMPONENTS[@]}"; do
    if ! present "$name"; then
      log "skipping $name: $(script_of "$name") does not exist"
      continue
    fi
    if [[ -n "${STACK_SERIAL:-}" ]]; then
      run_prefixed "$name" up; rcs[$name]=$?
    else
      # Elasticsearch is started first; the others follow immediately in parallel.
      run_prefixed "$name" up &
      pids[$name]=$!
    fi
  done
  for name in "${!pids[@]}"; do
    wait "${pids[$name]}"; rcs[$name]=$?
  done
  for name in "${COMPONENTS[@]}"; do
    [[ -n "${rcs[$name]+x}" ]] || continue
    if ((rcs[$name] != 0)); then log "$name: up FAILED (exit ${rcs[$name]})"; rc=1
    else log "$name: up"; fi
  done
  log "up finished in $((SECONDS - start)) s$( ((rc)) && echo ' with errors')"
  return "$rc"
}

cmd_down() {
  local rc=0 name i
  # Reverse order: clients of Elasticsearch (if any) go first.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name="${COMPONENTS[$i]}"
    present "$name" || continue
    run_prefixed "$name" down || { log "$name: down FAILED"; rc=1; }
  done
  return "$rc"
}

cmd_status() {
  local name r nup=0 ndown=0 nother=0
  for name in "${COMPONENTS[@]}"; do
    if ! present "$name"; then
      log "$name: not part of this checkout ($(script_of "$name") absent)"
      continue
    fi
    run_prefixed "$name" status; r=$?
    case "$r" in 0) nup=$((nup + 1)) ;; 3) ndown=$((ndown + 1)) ;; *) nother=$((nother + 1)) ;; esac
  done
  if ((nother == 0 && ndown == 0)); then return 0; fi
  if ((nother == 0 && nup == 0)); then return 3; fi
  return 1
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
