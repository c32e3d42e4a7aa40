#!/usr/bin/env bash
# deploy/local/s3.sh — a real S3-compatible object store for local dev and CI, without Docker:
# S3Proxy (https://github.com/gaul/s3proxy) over its filesystem backend, where the gateway keeps
# original images when blobs.backend is s3, and what the blob store's integration tests talk to.
#
#   deploy/local/s3.sh up       download (cached) + start on 127.0.0.1:9000, create the bucket, wait until ready
#   deploy/local/s3.sh down     stop exactly the JVM in .local/run/s3proxy.pid
#   deploy/local/s3.sh status   print up/down; exit 0 up, 1 running but not answering, 3 down
#   deploy/local/s3.sh logs [-f] [N]   tail the server log
#
# The server is Maven Central's org.gaul:s3proxy jar-with-dependencies, pinned to S3PROXY_VERSION
# and verified against S3PROXY_SHA256 below. It authenticates with AWS signatures (v2 or v4) and
# one identity/credential pair generated on the first `up` and reused afterwards.
#
# State lives under .local/ in the repo root (git-ignored):
#   .local/cache/s3proxy-<ver>-jar-with-dependencies.jar   download cache
#   .local/s3.env                 TUSOU_BLOBS_S3_ENDPOINT, TUSOU_BLOBS_S3_BUCKET, TUSOU_BLOBS_S3_ACCESS_KEY,
#                                 TUSOU_BLOBS_S3_SECRET_KEY (local test secrets; tests read the file through
#                                 internal/testutil.LoadS3, never the environment)
#   .local/s3/data/<bucket>/      the objects (jclouds filesystem-nio2 backend), kept across restarts
#   .local/s3/s3proxy.properties  rendered on every start from .local/s3.env
#   .local/s3/logs/s3proxy.log    server log
#   .local/run/s3proxy.pid        pid of the server JVM
#
# Java: S3_JAVA_HOME if set, else `java` on PATH when it is Java >= 17, else Debian's Java 17
# (the one deploy/local/deps.sh installs for Elasticsearch; the Elasticsearch test distribution
# bundles no JDK).
#
# Environment overrides (all optional): S3_JAVA_HOME, S3_PORT (9000), S3_BUCKET (tusou-originals),
# S3_HEAP (128m), S3_START_TIMEOUT (120 s), S3_STOP_TIMEOUT (30 s), S3_MAVEN_REPO
# (https://repo1.maven.org/maven2).
set -euo pipefail

# ---- pinned server ---------------------------------------------------------------------------
S3PROXY_VERSION="4.1.0"
# sha256 of s3proxy-4.1.0-jar-with-dependencies.jar from Maven Central. Bump both together.
S3PROXY_SHA256="a4d025969aaf796616ed4b1e2491d87d455ce84bb28cb9db086b2e6aaa68b48d"
S3_MAVEN_REPO="${S3_MAVEN_REPO:-https://repo1.maven.org/maven2}"
S3PROXY_JAR_NAME="s3proxy-${S3PROXY_VERSION}-jar-with-dependencies.jar"
S3PROXY_URL_PATH="org/gaul/s3proxy/${S3PROXY_VERSION}/${S3PROXY_JAR_NAME}"

# ---- layout ----------------------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
CACHE="$LOCAL/cache"
JAR="$CACHE/$S3PROXY_JAR_NAME"
S3_BASE="$LOCAL/s3"
S3_DATA="$S3_BASE/data"
S3_LOGS="$S3_BASE/logs"
PROPS="$S3_BASE/s3proxy.properties"
SERVER_LOG="$S3_LOGS/s3proxy.log"
ENV_FILE="$LOCAL/s3.env"
RUN_DIR="$LOCAL/run"
PIDFILE="$RUN_DIR/s3proxy.pid"
LOCKFILE="$RUN_DIR/s3proxy.lock"

S3_PORT="${S3_PORT:-9000}"
S3_BUCKET="${S3_BUCKET:-tusou-originals}"
# A file server with small buffers: 128m holds many 32 MiB uploads in flight (jclouds streams
# them to disk) on a 2-core box that also runs two Elasticsearch nodes and Triton.
S3_HEAP="${S3_HEAP:-128m}"
S3_START_TIMEOUT="${S3_START_TIMEOUT:-120}"
S3_STOP_TIMEOUT="${S3_STOP_TIMEOUT:-30}"
# S3Proxy checks signatures against the region the client signs for; any name works, this is
# the one blobs.s3.region defaults to.
S3_REGION="us-east-1"
ENDPOINT="127.0.0.1:$S3_PORT"
BASE_URL="http://$ENDPOINT"

log() { printf 's3: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- prerequisites -----------------------------------------------------------------------------
java_major() {
  local v
  v="$("$1" -version 2>&1 | head -n1)" || return 1
  v="$(sed -E 's/.*version "([0-9]+).*/\1/' <<<"$v")"
  [[ "$v" =~ ^[0-9]+$ ]] && echo "$v"
}

# find_java prints a java binary of version >= 17 (S3Proxy 4 needs 17).
find_java() {
  local j m arch d
  if [[ -n "${S3_JAVA_HOME:-}" ]]; then
    j="$S3_JAVA_HOME/bin/java"
    [[ -x "$j" ]] || die "S3_JAVA_HOME=$S3_JAVA_HOME has no bin/java"
    m="$(java_major "$j")" && ((m >= 17)) || die "S3_JAVA_HOME=$S3_JAVA_HOME is not Java >= 17"
    echo "$j"; return
  fi
  if j="$(command -v java 2>/dev/null)" && m="$(java_major "$j")" && ((m >= 17)); then
    echo "$j"; return
  fi
  arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
  for d in "/usr/lib/jvm/java-17-openjdk-$arch" /usr/lib/jvm/java-17-*; do
    if [[ -x "$d/bin/java" ]]; then echo "$d/bin/java"; return; fi
  done
  die "no Java >= 17 (fix, Debian 12 as root: apt-get install -y --no-install-recommends openjdk-17-jre-headless; or set S3_JAVA_HOME)"
}

check_tools() {
  local missing=() pkgs=()
  command -v curl >/dev/null || { missing+=(curl); pkgs+=(curl ca-certificates); }
  command -v openssl >/dev/null || { missing+=(openssl); pkgs+=(openssl); }
  command -v sha256sum >/dev/null || { missing+=(sha256sum); pkgs+=(coreutils); }
  command -v flock >/dev/null || { missing+=(flock); pkgs+=(util-linux); }
  command -v setsid >/dev/null || { missing+=(setsid); pkgs+=(util-linux); }
  if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    die "fix (Debian 12, as root): apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
  fi
  # Signing requests for the bucket check needs curl's --aws-sigv4 (curl >= 7.75; Debian 12 has 7.88).
  curl --help all 2>/dev/null | grep -q -- '--aws-sigv4' || die "curl $(curl -V | head -n1 | cut -d' ' -f2) lacks --aws-sigv4 (need >= 7.75)"
}

# ---- download ----------------------------------------------------------------------------------
fetch() { fetch_pinned "$S3_MAVEN_REPO/$S3PROXY_URL_PATH" "$JAR" "$S3PROXY_SHA256" 600; }

# ---- credentials and config --------------------------------------------------------------------
# ensure_credentials generates the identity/credential once; later ups reuse them, so objects
# written by earlier runs stay readable with the same settings. The file is rewritten on every
# up, so endpoint and bucket follow S3_PORT and S3_BUCKET.
ensure_credentials() {
  if ! load_credentials; then
    log "generating credentials ($ENV_FILE)"
    ACCESS_KEY="tusou-$(openssl rand -hex 8)"
    SECRET_KEY="$(openssl rand -hex 20)"
  fi
  (umask 077
   cat >"$ENV_FILE.tmp" <<ENV
# The local stack's S3-compatible object store (S3Proxy), written by deploy/local/s3.sh on
# \`make up\`. Local test secrets: never commit.
TUSOU_BLOBS_S3_ENDPOINT=$ENDPOINT
TUSOU_BLOBS_S3_BUCKET=$S3_BUCKET
TUSOU_BLOBS_S3_REGION=$S3_REGION
TUSOU_BLOBS_S3_ACCESS_KEY=$ACCESS_KEY
TUSOU_BLOBS_S3_SECRET_KEY=$SECRET_KEY
ENV
  )
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

# load_credentials reads ACCESS_KEY and SECRET_KEY from ENV_FILE; 1 when it has none.
load_credentials() {
  [[ -s "$ENV_FILE" ]] || return 1
  ACCESS_KEY="$(sed -n 's/^TUSOU_BLOBS_S3_ACCESS_KEY=//p' "$ENV_FILE")"
  SECRET_KEY="$(sed -n 's/^TUSOU_BLOBS_S3_SECRET_KEY=//p' "$ENV_FILE")"
  [[ -n "$ACCESS_KEY" && -n "$SECRET_KEY" ]]
}

render_properties() {
  mkdir -p "$S3_BASE" "$S3_DATA" "$S3_LOGS"
  (umask 077
   cat >"$PROPS.tmp" <<PROPS
s3proxy.endpoint=$BASE_URL
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$ACCESS_KEY
s3proxy.credential=$SECRET_KEY
jclouds.provider=filesystem-nio2
jclouds.identity=unused
jclouds.credential=unused
jclouds.filesystem.basedir=$S3_DATA
PROPS
  )
  mv -f "$PROPS.tmp" "$PROPS"
}

# ---- process -----------------------------------------------------------------------------------
# is_ours: the JVM runs our pinned jar with our properties file (so another S3Proxy, or
# another checkout's, is never signalled).
is_ours() {
  local pid="$1" cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"-jar $JAR "* && "$cmd" == *"--properties $PROPS"* ]]
}

running_pid() {
  local pid=""
  [[ -f "$PIDFILE" ]] && pid="$(tr -dc '0-9' <"$PIDFILE")"
  if [[ -n "$pid" ]] && is_ours "$pid"; then echo "$pid"; fi
  return 0
}

port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n "$(ss -Hltn "sport = :$S3_PORT" 2>/dev/null)" ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null
  fi
}

port_owner() {
  if command -v ss >/dev/null; then ss -Hltnp "sport = :$S3_PORT" 2>/dev/null || true; fi
}

EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# s3_status prints the HTTP status of a signed request: s3_status METHOD PATH.
s3_status() {
  local method="$1" path="$2" head=()
  [[ "$method" == HEAD ]] && head=(-I)
  # curl 7.88 signs no payload hash of its own; S3 wants one (this is the empty body's).
  curl -sS -m 10 -o /dev/null -w '%{http_code}' ${head[@]+"${head[@]}"} -X "$method" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" \
    --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$BASE_URL$path" 2>/dev/null || true
}

# wait_ready waits until a signed HEAD of the bucket gets an answer that proves the server
# checks our signature (200 or 404), then creates the bucket if it is missing.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + S3_START_TIMEOUT)) code
  while :; do
    kill -0 "$pid" 2>/dev/null || { log "server (pid $pid) exited during startup"; return 1; }
    code="$(s3_status HEAD "/$S3_BUCKET")"
    case "$code" in
      200 | 404) break ;;
      401 | 403) log "the server refuses the credentials in $ENV_FILE (HTTP $code)"; return 1 ;;
    esac
    ((SECONDS < deadline)) || { log "no answer on $BASE_URL after ${S3_START_TIMEOUT}s (last HTTP ${code:-none})"; return 1; }
    sleep 0.5
  done
  ensure_bucket
}

ensure_bucket() {
  local code
  code="$(s3_status HEAD "/$S3_BUCKET")"
  [[ "$code" == 200 ]] && return 0
  code="$(s3_status PUT "/$S3_BUCKET")"
  case "$code" in
    200 | 409) ;;  # 409: created meanwhile (BucketAlreadyOwnedByYou)
    *) log "creating bucket $S3_BUCKET failed (HTTP $code)"; return 1 ;;
  esac
  [[ "$(s3_status HEAD "/$S3_BUCKET")" == 200 ]] || { log "bucket $S3_BUCKET is still missing after PUT"; return 1; }
  log "created bucket $S3_BUCKET"
}

stop_pid() { stop_pid_within "$1" "$S3_STOP_TIMEOUT"; }

lock() { lock_file "$RUN_DIR" "$LOCKFILE"; }

print_log_tail() {
  [[ -s "$SERVER_LOG" ]] || return 0
  log "---- last 40 lines of $SERVER_LOG ----"
  tail -n 40 "$SERVER_LOG" >&2
}

report_up() {
  log "up: $BASE_URL (S3Proxy $S3PROXY_VERSION, pid $1, bucket $S3_BUCKET; credentials in $ENV_FILE)"
  log "logs: $SERVER_LOG (or: deploy/local/s3.sh logs)"
}

# ---- verbs -------------------------------------------------------------------------------------
cmd_up() {
  check_tools
  lock
  ensure_credentials
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    if wait_ready "$pid"; then log "already up"; report_up "$pid"; return 0; fi
    print_log_tail
    die "server pid $pid is running but not healthy (deploy/local/s3.sh down, then up)"
  fi
  rm -f "$PIDFILE"
  port_in_use && die "port $S3_PORT is already in use by another process: $(port_owner)"
  local java; java="$(find_java)"
  fetch
  render_properties
  [[ -f "$SERVER_LOG" ]] && mv -f "$SERVER_LOG" "$SERVER_LOG.1"
  log "starting S3Proxy $S3PROXY_VERSION on $BASE_URL (heap $S3_HEAP, $java)"
  # setsid + nohup: the server outlives this script and `make up`'s terminal (setsid may fork,
  # so the pid is written by the shell that then becomes the JVM); 9>&-: it must not inherit
  # the lock fd. SerialGC and two JIT threads (the least tiered compilation allows) keep it
  # light on 2 cores.
  rm -f "$PIDFILE"
  (cd "$S3_BASE" && exec setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$java" -Xms32m -Xmx"$S3_HEAP" -XX:+UseSerialGC -XX:CICompilerCount=2 \
    -Djava.io.tmpdir="$S3_BASE" -jar "$JAR" --properties "$PROPS") \
    </dev/null >>"$SERVER_LOG" 2>&1 9>&- &
  local _
  for _ in $(seq 100); do [[ -s "$PIDFILE" ]] && break; sleep 0.05; done
  pid="$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || die "the server did not start (no pid in $PIDFILE); log: $SERVER_LOG"
  if ! wait_ready "$pid"; then
    print_log_tail
    is_ours "$pid" && { stop_pid "$pid" || true; }
    rm -f "$PIDFILE"
    die "S3Proxy did not become ready; log: $SERVER_LOG"
  fi
  report_up "$pid"
}

cmd_down() {
  lock
  local pid; pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PIDFILE"
    log "already down"
  else
    log "stopping pid $pid"
    stop_pid "$pid" || die "pid $pid did not exit"
    rm -f "$PIDFILE"
    log "stopped"
  fi
  local _
  for _ in $(seq 50); do port_in_use || break; sleep 0.1; done
  port_in_use && die "port $S3_PORT is still in use (not by our server): $(port_owner)"
  log "port $S3_PORT is free"
}

cmd_status() {
  local pid; pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    if [[ -f "$PIDFILE" ]]; then log "down (stale pid file $PIDFILE removed)"; rm -f "$PIDFILE" 2>/dev/null || true
    else log "down"; fi
    port_in_use && log "note: port $S3_PORT is in use by something else: $(port_owner)"
    return 3
  fi
  load_credentials || { log "running (pid $pid) but $ENV_FILE is missing (deploy/local/s3.sh down, then up)"; return 1; }
  local code; code="$(s3_status HEAD "/$S3_BUCKET")"
  if [[ "$code" == 200 ]]; then
    log "up: $BASE_URL pid $pid, bucket $S3_BUCKET (logs: $SERVER_LOG)"
    return 0
  fi
  log "running (pid $pid) but HEAD /$S3_BUCKET answers HTTP ${code:-none} (starting, hung, or the bucket is gone: deploy/local/s3.sh up)"
  return 1
}

cmd_logs() {
  local follow="" n=200 a
  for a in "$@"; do
    case "$a" in -f) follow=1 ;; *[!0-9]*) die "usage: $0 logs [-f] [N]" ;; *) n="$a" ;; esac
  done
  [[ -f "$SERVER_LOG" ]] || die "no log yet at $SERVER_LOG"
  if [[ -n "$follow" ]]; then exec tail -n "$n" -F "$SERVER_LOG"; fi
  tail -n "$n" "$SERVER_LOG"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 up|down|status|logs [-f] [N]" >&2; exit 2 ;;
esac
