# deploy/local/lib.sh — shell helpers shared by the local stack's component scripts
# (sourced; each script defines log and die first).

# stop_pid_within PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL. Callers only
# pass a pid they have checked is theirs. Succeeds when the process is gone.
stop_pid_within() {
  local pid="$1" deadline=$((SECONDS + $2))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "pid $pid still alive after ${2}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local _
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      break
    fi
    sleep 0.2
  done
  ! kill -0 "$pid" 2>/dev/null
}

# lock_file DIR FILE: holds FILE (in DIR, created) on fd 9 until the script exits, so
# two runs of one script never start or stop the same component at once.
lock_file() {
  mkdir -p "$1"
  exec 9>"$2"
  flock -w 300 9 || die "could not lock $2 (another $(basename "$0") still running?)"
}

# fetch_pinned URL FILE SHA256 MAX_SECONDS: FILE holds URL's bytes with the pinned sha256 when
# this returns: a cached FILE is kept when it verifies, else downloaded again (to FILE.part,
# verified, then renamed, so an interrupted download never looks complete).
fetch_pinned() {
  local url="$1" file="$2" sha="$3" max="$4" got
  mkdir -p "$(dirname "$file")"
  if [[ -f "$file" ]]; then
    if [[ "$(sha256sum "$file" | cut -d' ' -f1)" == "$sha" ]]; then
      log "using cached $file"
      return 0
    fi
    log "cached $file has a wrong sha256, downloading again"
    rm -f "$file"
  fi
  log "downloading $url"
  curl -fSL --retry 3 --retry-delay 2 --connect-timeout 20 --max-time "$max" -sS \
    -o "$file.part" "$url" || { rm -f "$file.part"; die "download failed: $url"; }
  got="$(sha256sum "$file.part" | cut -d' ' -f1)"
  if [[ "$got" != "$sha" ]]; then
    rm -f "$file.part"
    die "sha256 mismatch for $url: got $got, pinned $sha"
  fi
  mv -f "$file.part" "$file"
  log "verified sha256 $sha"
}
