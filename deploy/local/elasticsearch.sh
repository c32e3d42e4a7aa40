#!/usr/bin/env bash
# deploy/local/elasticsearch.sh — a real single-node Elasticsearch for local dev and CI,
# without Docker.
#
#   deploy/local/elasticsearch.sh up       download (cached) + unpack + configure + start, wait for yellow
#   deploy/local/elasticsearch.sh down     stop exactly the node in .local/run/elasticsearch.pid
#   deploy/local/elasticsearch.sh status   print up/down + health; exit 0 up, 1 running but unhealthy, 3 down
#   deploy/local/elasticsearch.sh logs [-f] [N]   tail the server log
#
# The distribution is Maven Central's org.elasticsearch.distribution.integ-test-zip:elasticsearch
# (a runnable ES without bundled JDK and with only a few modules), pinned to ES_VERSION and
# verified against ES_SHA256 below. It runs on Java 17 (ES_JAVA_HOME). Elasticsearch refuses to
# run as root, so as root the node runs as the system user ES_USER (created on demand).
#
# State lives under .local/ in the repo root (git-ignored):
#   .local/cache/elasticsearch-<ver>.zip   download cache (a second `up` downloads nothing)
#   .local/es/<ver>/                       unpacked distribution; config/ is rendered on every start
#   .local/es/data, .local/es/logs         node data and logs (kept across restarts / version bumps)
#   .local/run/elasticsearch.pid           pid of the server JVM
# Config templates: deploy/local/elasticsearch/. See deploy/local/README.md.
#
# ES_NODE=secure (what deploy/local/elasticsearch-secure.sh sets) runs a second node from the
# same distribution with TLS and authentication on HTTPS 127.0.0.1:9250 (transport 9350, heap
# 384m), state under .local/es-secure/, pid .local/run/elasticsearch-secure.pid, and writes
# the credentials tests use to .local/es-secure.env (see "the secure node" below).
#
# Environment overrides (all optional):
#   ES_JAVA_HOME (default: Debian's Java 17 for this architecture, /usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)), ES_HEAP (512m), ES_HTTP_PORT (9200),
#   ES_START_TIMEOUT (120 s, wait for yellow), ES_LAUNCH_TIMEOUT (300 s, JVM launch), ES_STOP_TIMEOUT (60 s), ES_USER (tusou-es), ES_MAVEN_REPO
#   (https://repo1.maven.org/maven2), ES_JAVA_OPTS (passed through to the node).
set -euo pipefail

# ---- pinned distribution -------------------------------------------------------------------
# Newest 8.19.x on Maven Central when pinned (maven-metadata.xml <release>8.19.21</release>).
ES_VERSION="8.19.21"
# sha256 of elasticsearch-8.19.21.zip, computed on download and equal to Maven Central's
# published .sha256 (sha1 8861771bbfe2fab12ccc386bc8b4c5c6f9619865). Bump both together.
ES_SHA256="215d5f3dbf0609a149f6218a9e47b6ae2df34ebbff3c5754e35f15a5e5393c8a"
ES_MAVEN_REPO="${ES_MAVEN_REPO:-https://repo1.maven.org/maven2}"
ES_URL_PATH="org/elasticsearch/distribution/integ-test-zip/elasticsearch/${ES_VERSION}/elasticsearch-${ES_VERSION}.zip"

# ---- layout ----------------------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TEMPLATES="$ROOT/deploy/local/elasticsearch"
LOCAL="$ROOT/.local"
CACHE="$LOCAL/cache"
ES_BASE="$LOCAL/es"
ES_HOME="$ES_BASE/$ES_VERSION"
RUN_DIR="$LOCAL/run"
# ES_NODE picks the node: "" is the plain dev/CI node (HTTP :9200, security off); "secure" is
# a second node from the same distribution with TLS on HTTP and authentication (HTTPS :9250,
# see secure_setup), so the gateway's credential and CA settings meet a secured node in tests.
# Each node has its own config dir, data, logs, pid and lock; only the binaries are shared.
ES_NODE="${ES_NODE:-}"
case "$ES_NODE" in
  "")
    NODE_BASE="$ES_BASE"
    ES_CONF="$ES_HOME/config"
    CLUSTER_NAME="tusou-local"
    DEFAULT_HTTP_PORT=9200 DEFAULT_TRANSPORT_PORT=9300 DEFAULT_HEAP=512m SCHEME=http
    ;;
  secure)
    NODE_BASE="$LOCAL/es-secure"
    ES_CONF="$NODE_BASE/config"
    CLUSTER_NAME="tusou-local-secure"
    # Clear of the gateway (:8080), the listener (:9201) and Triton (8000-8002).
    DEFAULT_HTTP_PORT=9250 DEFAULT_TRANSPORT_PORT=9350 DEFAULT_HEAP=384m SCHEME=https
    ;;
  *) printf 'elasticsearch: ERROR: ES_NODE must be empty or "secure", got %s\n' "$ES_NODE" >&2; exit 2 ;;
esac
NODE_SUFFIX="${ES_NODE:+-$ES_NODE}"
SELF="deploy/local/elasticsearch$NODE_SUFFIX.sh"   # for messages
ES_DATA="$NODE_BASE/data"
ES_LOGS="$NODE_BASE/logs"
ES_TMP="$NODE_BASE/tmp"
# The node writes its own pid file here (must be writable by ES_USER); the script copies the
# pid to PIDFILE, the project-wide location other scripts look at.
ES_RUN="$NODE_BASE/run"
ES_OWN_PIDFILE="$ES_RUN/elasticsearch.pid"
PIDFILE="$RUN_DIR/elasticsearch$NODE_SUFFIX.pid"
LOCKFILE="$RUN_DIR/elasticsearch$NODE_SUFFIX.lock"
SERVER_LOG="$ES_LOGS/$CLUSTER_NAME.log"
STARTUP_LOG="$ES_LOGS/startup.log"

# default_java_home finds a Java 17 install: Debian's openjdk-17 for this
# machine's architecture (java-17-openjdk-amd64, -arm64, ...), else any
# java-17 folder under /usr/lib/jvm. It prints Debian's path for the
# architecture even when absent, so the missing-package message names it.
default_java_home() {
  local arch d
  arch="$(dpkg --print-architecture 2>/dev/null || true)"
  if [[ -n "$arch" && -x "/usr/lib/jvm/java-17-openjdk-$arch/bin/java" ]]; then
    echo "/usr/lib/jvm/java-17-openjdk-$arch"
    return
  fi
  for d in /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/java-17-*; do
    if [[ -x "$d/bin/java" ]]; then
      echo "$d"
      return
    fi
  done
  echo "/usr/lib/jvm/java-17-openjdk-${arch:-amd64}"
}
ES_JAVA_HOME="${ES_JAVA_HOME:-$(default_java_home)}"
ES_HEAP="${ES_HEAP:-$DEFAULT_HEAP}"
ES_HTTP_PORT="${ES_HTTP_PORT:-$DEFAULT_HTTP_PORT}"
ES_TRANSPORT_PORT="${ES_TRANSPORT_PORT:-$DEFAULT_TRANSPORT_PORT}"
ES_START_TIMEOUT="${ES_START_TIMEOUT:-120}"
# The JVM launch itself (before HTTP health can even be asked): ~15-25 s on an idle 2-core box,
# measured ~150 s with load average 20 on the same box, hence the generous default.
ES_LAUNCH_TIMEOUT="${ES_LAUNCH_TIMEOUT:-300}"
ES_STOP_TIMEOUT="${ES_STOP_TIMEOUT:-60}"
ES_USER="${ES_USER:-tusou-es}"
BASE_URL="$SCHEME://127.0.0.1:${ES_HTTP_PORT}"
# Extra curl arguments for every call to the node (the secure node: its CA and a user).
CURL_AUTH=()

log() { printf 'elasticsearch%s: %s\n' "$NODE_SUFFIX" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- prerequisites -----------------------------------------------------------------------------
# Everything here is on a stock Debian 12 except possibly curl/unzip/Java; print the exact fix.
check_tools() {
  local missing=() pkgs=()
  command -v curl >/dev/null || { missing+=(curl); pkgs+=(curl ca-certificates); }
  command -v unzip >/dev/null || { missing+=(unzip); pkgs+=(unzip); }
  command -v sha256sum >/dev/null || { missing+=(sha256sum); pkgs+=(coreutils); }
  command -v flock >/dev/null || { missing+=(flock); pkgs+=(util-linux); }
  if [[ $EUID -eq 0 ]]; then
    command -v runuser >/dev/null || { missing+=(runuser); pkgs+=(util-linux); }
    command -v useradd >/dev/null || { missing+=(useradd); pkgs+=(passwd); }
  fi
  if [[ ! -x "$ES_JAVA_HOME/bin/java" ]]; then
    missing+=("java at $ES_JAVA_HOME/bin/java")
    pkgs+=(openjdk-17-jre-headless)
  fi
  if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    log "fix (Debian 12, as root): apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
    [[ " ${pkgs[*]} " == *" openjdk-17-jre-headless "* ]] &&
      log "(or point ES_JAVA_HOME at an existing Java 17 install)"
    exit 1
  fi
}

check_java() {
  local v major
  v="$("$ES_JAVA_HOME/bin/java" -version 2>&1 | head -n1)"
  major="$(sed -E 's/.*version "([0-9]+).*/\1/' <<<"$v")"
  # ES 8.19 needs >= 17; on 24+ it switches from the SecurityManager to a different sandbox
  # (entitlements) that this setup has not been verified with, so stay on 17..23.
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17 || major > 23)); then
    die "ES_JAVA_HOME=$ES_JAVA_HOME is '$v'; need Java 17 (fix: apt-get install -y openjdk-17-jre-headless)"
  fi
}

# ---- download / install ------------------------------------------------------------------------
fetch() { fetch_pinned "$ES_MAVEN_REPO/$ES_URL_PATH" "$CACHE/elasticsearch-${ES_VERSION}.zip" "$ES_SHA256" 900; }

install_dist() {
  [[ -f "$ES_HOME/.tusou-installed" ]] && return 0
  # Both nodes share the download and the unpacked distribution, and `make up` starts them
  # in parallel: one installs under this lock while the other waits, then finds it installed.
  mkdir -p "$RUN_DIR"
  (
    flock -w 900 8 || die "could not lock $RUN_DIR/elasticsearch-dist.lock (another install still running?)"
    [[ -f "$ES_HOME/.tusou-installed" ]] && exit 0
    fetch
    tmp="$ES_BASE/.unpack.$$"
    rm -rf "$tmp" "$ES_HOME"
    mkdir -p "$tmp"
    log "unpacking into $ES_HOME"
    unzip -q "$CACHE/elasticsearch-${ES_VERSION}.zip" -d "$tmp"
    mv "$tmp/elasticsearch-${ES_VERSION}" "$ES_HOME"
    rm -rf "$tmp"
    # Keep the pristine config to render from, so a re-render never stacks settings.
    cp -a "$ES_HOME/config" "$ES_HOME/config.dist"
    echo "$ES_SHA256" >"$ES_HOME/.tusou-installed"
  ) 8>"$RUN_DIR/elasticsearch-dist.lock"
}

has_module() { [[ -d "$ES_HOME/modules/$1" ]]; }

# Render the node's config dir from the distribution's pristine config plus
# deploy/local/elasticsearch/*.in (a <module>-<ES_NODE>.yml.in replaces <module>.yml.in).
render_config() {
  local conf="$ES_CONF"
  # Keep an existing keystore (the node creates an empty one on first start).
  local ks="$conf/elasticsearch.keystore" keep=""
  [[ -f "$ks" ]] && { keep="$NODE_BASE/.keystore.$$"; cp -p "$ks" "$keep"; }
  rm -rf "$conf"
  mkdir -p "$(dirname "$conf")"
  cp -a "$ES_HOME/config.dist" "$conf"
  [[ -n "$keep" ]] && mv "$keep" "$ks"
  subst() {
    sed -e "s|@HTTP_PORT@|$ES_HTTP_PORT|g" -e "s|@TRANSPORT_PORT@|$ES_TRANSPORT_PORT|g" \
      -e "s|@DATA_DIR@|$ES_DATA|g" -e "s|@LOGS_DIR@|$ES_LOGS|g" -e "s|@HEAP@|$ES_HEAP|g" \
      -e "s|@CLUSTER_NAME@|$CLUSTER_NAME|g" "$1"
  }
  subst "$TEMPLATES/elasticsearch.yml.in" >"$conf/elasticsearch.yml"
  # Unknown settings are fatal: only configure modules this distribution ships.
  local m t
  for m in x-pack-security ingest-geoip; do
    t="$TEMPLATES/$m.yml.in"
    [[ -n "$ES_NODE" && -f "$TEMPLATES/$m-$ES_NODE.yml.in" ]] && t="$TEMPLATES/$m-$ES_NODE.yml.in"
    if has_module "$m"; then subst "$t" >>"$conf/elasticsearch.yml"; fi
  done
  mkdir -p "$conf/jvm.options.d"
  subst "$TEMPLATES/jvm.options.d/tusou.options.in" >"$conf/jvm.options.d/tusou.options"
  # Names the node on its command line, so is_our_es tells the two nodes apart.
  [[ -n "$ES_NODE" ]] && echo "-Dtusou.node=$ES_NODE" >>"$conf/jvm.options.d/tusou.options"
  [[ "$ES_NODE" == secure ]] && secure_render
  return 0
}

# As root: run the node as ES_USER, which owns only the writable state (config for the
# keystore, data, logs, tmp, run), not the binaries.
ensure_user() {
  [[ $EUID -eq 0 ]] || return 0
  if ! id -u "$ES_USER" >/dev/null 2>&1; then
    log "creating system user $ES_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$ES_USER"
  fi
  chown -R "$ES_USER:$ES_USER" "$ES_CONF" "$ES_DATA" "$ES_LOGS" "$ES_TMP" "$ES_RUN"
  if ! runuser -u "$ES_USER" -- test -r "$ES_HOME/lib/elasticsearch-${ES_VERSION}.jar" -a -w "$ES_DATA"; then
    die "user $ES_USER cannot reach $ES_HOME (a parent directory is not world-executable, e.g. a checkout under /root).
  fix: chmod o+x on each parent of $ROOT (e.g. chmod o+x /root), or check out the repo elsewhere"
  fi
}

as_es_user() {
  if [[ $EUID -eq 0 ]]; then runuser -u "$ES_USER" -- "$@"; else "$@"; fi
}

# ---- process helpers ---------------------------------------------------------------------------
# A pid counts as "our node" only if it is an Elasticsearch server JVM whose home is under
# .local/es of this checkout, so a recycled pid is never signalled.
is_our_es() {
  local pid="$1" cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"org.elasticsearch.bootstrap.Elasticsearch"* && "$cmd" == *"-Des.path.home=$ES_BASE/"* ]] || return 1
  # The plain node carries no -Dtusou.node marker (render_config).
  if [[ -n "$ES_NODE" ]]; then [[ "$cmd" == *"-Dtusou.node=$ES_NODE "* ]]; else [[ "$cmd" != *"-Dtusou.node="* ]]; fi
}

port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n "$(ss -Hltn "sport = :$ES_HTTP_PORT" 2>/dev/null)" ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$ES_HTTP_PORT") 2>/dev/null
  fi
}

port_owner() {
  if command -v ss >/dev/null; then ss -Hltnp "sport = :$ES_HTTP_PORT" 2>/dev/null || true; fi
}

# The running node's pid: from the pid file, else (pid file lost) the listener on the port if it
# is ours. Prints nothing when not running.
running_pid() {
  local pid=""
  [[ -f "$PIDFILE" ]] && pid="$(tr -dc '0-9' <"$PIDFILE")"
  if [[ -n "$pid" ]] && is_our_es "$pid"; then echo "$pid"; return 0; fi
  if command -v ss >/dev/null; then
    for pid in $(port_owner | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      if is_our_es "$pid"; then echo "$pid"; return 0; fi
    done
  fi
  return 0
}

health() { curl -fsS -m "${2:-3}" "${CURL_AUTH[@]}" "$BASE_URL/_cluster/health${1:-}" 2>/dev/null; }

health_summary() {
  local h; h="$(health '' 3)" || { echo "no HTTP answer on $BASE_URL"; return 1; }
  local status shards
  status="$(grep -o '"status":"[a-z]*"' <<<"$h" | cut -d'"' -f4)"
  shards="$(grep -o '"active_shards":[0-9]*' <<<"$h" | cut -d: -f2)"
  echo "health=$status active_shards=$shards"
}

print_log_tail() {
  # startup.log: launcher output of the last start only, minus the server log lines it repeats.
  if [[ -s "$STARTUP_LOG" ]]; then
    log "---- launcher output of the last start ($STARTUP_LOG) ----"
    awk '/^==== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$STARTUP_LOG" |
      grep -v '^\[[0-9]\{4\}-' | tail -n 40 >&2 || true
  fi
  if [[ -s "$SERVER_LOG" ]]; then
    log "---- last 40 lines of $SERVER_LOG ----"
    tail -n 40 "$SERVER_LOG" >&2
  fi
}

# Wait for yellow, then check that this is really the pinned Elasticsearch.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + ES_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "node (pid $pid) exited during startup"
      return 1
    fi
    if health '?wait_for_status=yellow&timeout=5s' 8 | grep -q '"status":"\(yellow\|green\)"'; then
      break
    fi
    ((SECONDS < deadline)) || { log "not yellow after ${ES_START_TIMEOUT}s"; return 1; }
    sleep 1
  done
  # GET / (client Info/Ping) is not served by the integ-test distribution (its rest-root module is
  # absent, GET / answers 405), so read the version from the nodes API. Every REST response,
  # this one included, must carry the product header that go-elasticsearch checks.
  local hdrs body
  hdrs="$(mktemp)"; body="$(mktemp)"
  if ! curl -fsS -m 5 "${CURL_AUTH[@]}" -D "$hdrs" -o "$body" "$BASE_URL/_nodes/_local?filter_path=nodes.*.version"; then
    rm -f "$hdrs" "$body"; log "GET /_nodes/_local failed"; return 1
  fi
  if ! grep -qi '^x-elastic-product: *Elasticsearch' "$hdrs"; then
    log "response lacks 'X-Elastic-Product: Elasticsearch' (go-elasticsearch would reject it)"
    rm -f "$hdrs" "$body"; return 1
  fi
  if ! grep -q "\"version\":\"$ES_VERSION\"" "$body"; then
    log "version mismatch: wanted $ES_VERSION, node says: $(cat "$body")"
    rm -f "$hdrs" "$body"; return 1
  fi
  rm -f "$hdrs" "$body"
  return 0
}

report_up() {
  log "up: $BASE_URL (Elasticsearch $ES_VERSION, pid $1, $(health_summary))"
  log "logs: $SERVER_LOG (startup: $STARTUP_LOG; or: $SELF logs)"
}

# SIGTERM, wait ES_STOP_TIMEOUT, then SIGKILL. Only ever signals a pid that is_our_es.
stop_pid() { stop_pid_within "$1" "$ES_STOP_TIMEOUT"; }

lock() { lock_file "$RUN_DIR" "$LOCKFILE"; }

# ---- the secure node (ES_NODE=secure) ----------------------------------------------------------
# The integ-test distribution has x-pack-security but not the analysis-common module, and the
# .security system index's mapping needs it (its "email" analyzer uses pattern_capture): the
# native realm, roles made through the security API and API keys all live in that index and
# fail with "Unknown filter type [pattern_capture]". So users and roles are file-based, as the
# file realm and roles.yml allow on any cluster:
#   roles   deploy/local/elasticsearch/roles-secure.yml.in, appended to config/roles.yml:
#           tusou_test_all (all on tusou-*) and tusou_test_no_delete (read, view_index_metadata,
#           create_index, create_doc, index on tusou-*: every write but delete; Elasticsearch's
#           "write" privilege would include delete); both with cluster monitor.
#   users   tusou_gateway (tusou_test_all) and tusou_no_delete (tusou_test_no_delete), made once
#           with bin/elasticsearch-users into realm/users and realm/users_roles.
# Generated once, kept across restarts under .local/es-secure/ (git-ignored, never committed):
#   certs/ca.crt, certs/node.{crt,key}   a throw-away CA and the node's HTTPS certificate
#                                        (SAN 127.0.0.1, localhost); the CA key is discarded
#   secrets.env                          the users' random passwords
#   realm/users, realm/users_roles       the file realm, copied into config/ on every start
# Tests read SECURE_ENV_FILE (internal/testutil.LoadSecureES).
CERTS="$NODE_BASE/certs"
REALM="$NODE_BASE/realm"
SECRETS="$NODE_BASE/secrets.env"
SECURE_ENV_FILE="$LOCAL/es-secure.env"

# secure_load reads the passwords (if generated) and sets CURL_AUTH for the script's own calls
# (health, version: the tusou_gateway user has cluster monitor).
secure_load() {
  [[ -s "$SECRETS" ]] || return 0
  # shellcheck disable=SC1090
  source "$SECRETS"
  CURL_AUTH=(--cacert "$CERTS/ca.crt" -u "tusou_gateway:$GATEWAY_PASSWORD")
}

# secure_prepare generates, once, the passwords, the CA and the node certificate.
secure_prepare() {
  command -v openssl >/dev/null || die "missing openssl (fix: apt-get install -y openssl)"
  has_module x-pack-security || die "this distribution has no modules/x-pack-security; the secure node needs it"
  mkdir -p "$NODE_BASE"
  if [[ ! -s "$SECRETS" ]]; then
    log "generating passwords ($SECRETS)"
    (umask 077
     printf 'GATEWAY_PASSWORD=%s\nNODELETE_PASSWORD=%s\n' "$(openssl rand -hex 16)" "$(openssl rand -hex 16)" >"$SECRETS.tmp")
    mv -f "$SECRETS.tmp" "$SECRETS"
    # Users made with earlier passwords must be made again.
    rm -rf "$REALM" "$SECURE_ENV_FILE"
  fi
  if [[ ! -s "$CERTS/node.crt" || ! -s "$CERTS/node.key" || ! -s "$CERTS/ca.crt" ]]; then
    log "generating a CA and the node certificate ($CERTS)"
    local tmp="$NODE_BASE/.certs.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$tmp" && umask 077 &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tusou local test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.crt 2>/dev/null &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$CLUSTER_NAME" -keyout node.key -out node.csr 2>/dev/null &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
        "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" >node.ext &&
      openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile node.ext -out node.crt 2>/dev/null &&
      rm -f ca.key ca.srl node.csr node.ext && chmod 644 ca.crt node.crt) ||
      { rm -rf "$tmp"; die "openssl failed to generate the certificates"; }
    rm -rf "$CERTS" && mv "$tmp" "$CERTS"
    rm -f "$SECURE_ENV_FILE"
  fi
  secure_load
}

# secure_render adds the secure node's files to the freshly rendered config dir.
secure_render() {
  local conf="$ES_CONF"
  # Elasticsearch reads TLS files only from inside its config dir.
  cp -a "$CERTS" "$conf/certs"
  cat "$TEMPLATES/roles-secure.yml.in" >>"$conf/roles.yml"
  if [[ -s "$REALM/users" ]]; then
    cp "$REALM/users" "$REALM/users_roles" "$conf/"
    return 0
  fi
  # First start: two JVM launches of the distribution's own tool (it writes the bcrypt hashes).
  log "creating the file-realm users tusou_gateway and tusou_no_delete"
  local u name pw role
  for u in "tusou_gateway:$GATEWAY_PASSWORD:tusou_test_all" "tusou_no_delete:$NODELETE_PASSWORD:tusou_test_no_delete"; do
    IFS=: read -r name pw role <<<"$u"
    env -i PATH=/usr/bin:/bin "ES_JAVA_HOME=$ES_JAVA_HOME" "ES_PATH_CONF=$conf" \
      "$ES_HOME/bin/elasticsearch-users" useradd "$name" -p "$pw" -r "$role" >/dev/null ||
      die "elasticsearch-users useradd $name failed"
  done
  mkdir -p "$REALM.tmp"
  cp "$conf/users" "$conf/users_roles" "$REALM.tmp/"
  rm -rf "$REALM" && mv "$REALM.tmp" "$REALM"
}

# authenticates returns 0 if the node accepts the credentials in curl arguments "$@".
authenticates() {
  curl -fsS -m 10 -o /dev/null --cacert "$CERTS/ca.crt" "$@" "$BASE_URL/_security/_authenticate" 2>/dev/null
}

# secure_setup checks that both users authenticate and that anonymous requests get 401, then
# writes SECURE_ENV_FILE (three requests when already up).
secure_setup() {
  authenticates -u "tusou_gateway:$GATEWAY_PASSWORD" || die "the node refuses tusou_gateway (remove $NODE_BASE after down to start over)"
  authenticates -u "tusou_no_delete:$NODELETE_PASSWORD" || die "the node refuses tusou_no_delete (remove $NODE_BASE after down to start over)"
  local code
  code="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca.crt" "$BASE_URL/_security/_authenticate" 2>/dev/null || true)"
  [[ "$code" == 401 ]] || die "an anonymous request got HTTP $code, want 401: security is not on"
  (umask 077
   cat >"$SECURE_ENV_FILE.tmp" <<ENV
# The secured Elasticsearch node of the local stack, written by
# deploy/local/elasticsearch-secure.sh on \`make up\`. Local test secrets: never commit.
TUSOU_SECURE_ES_URL=$BASE_URL
TUSOU_SECURE_ES_CA_CERT=$CERTS/ca.crt
TUSOU_SECURE_ES_USERNAME=tusou_gateway
TUSOU_SECURE_ES_PASSWORD=$GATEWAY_PASSWORD
TUSOU_SECURE_ES_NODELETE_USERNAME=tusou_no_delete
TUSOU_SECURE_ES_NODELETE_PASSWORD=$NODELETE_PASSWORD
TUSOU_SECURE_ES_INDEX_PATTERN=tusou-*
ENV
  )
  mv -f "$SECURE_ENV_FILE.tmp" "$SECURE_ENV_FILE"
  log "users tusou_gateway, tusou_no_delete authenticate; credentials in $SECURE_ENV_FILE"
}

# ---- verbs -------------------------------------------------------------------------------------
cmd_up() {
  check_tools
  lock
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "$pid" >"$PIDFILE"
    if health '?wait_for_status=yellow&timeout=1s' 3 | grep -q '"status":"\(yellow\|green\)"'; then
      log "already up"
      report_up "$pid"
      after_ready
      return 0
    fi
    log "pid $pid is running but not yet yellow; waiting up to ${ES_START_TIMEOUT}s"
    if wait_ready "$pid"; then report_up "$pid"; after_ready; return 0; fi
    print_log_tail
    die "node pid $pid is running but not healthy ($SELF down, then up)"
  fi
  rm -f "$PIDFILE"
  if port_in_use; then
    die "port $ES_HTTP_PORT is already in use by another process: $(port_owner)"
  fi
  check_java
  install_dist
  mkdir -p "$ES_DATA" "$ES_LOGS" "$ES_TMP" "$ES_RUN"
  rm -f "$ES_OWN_PIDFILE"
  [[ "$ES_NODE" == secure ]] && secure_prepare
  render_config
  ensure_user

  local who; if [[ $EUID -eq 0 ]]; then who="$ES_USER"; else who="$(id -un)"; fi
  log "starting Elasticsearch $ES_VERSION (heap $ES_HEAP, java $ES_JAVA_HOME) as user $who"
  printf '\n==== %s: starting Elasticsearch %s ====\n' "$(date -Is)" "$ES_VERSION" >>"$STARTUP_LOG"
  local env_args=(
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "LANG=C.UTF-8" "HOME=$ES_RUN"
    "ES_JAVA_HOME=$ES_JAVA_HOME" "ES_PATH_CONF=$ES_CONF" "ES_TMPDIR=$ES_TMP"
  )
  [[ -n "${ES_JAVA_OPTS:-}" ]] && env_args+=("ES_JAVA_OPTS=$ES_JAVA_OPTS")
  # Run from the logs dir: jvm.options writes gc.log (and hs_err files) relative to the cwd.
  # -d: the launcher returns once the node has started (or failed), the server JVM stays.
  # 9>&-: the node must not inherit the lock fd, or it would hold the lock for its lifetime.
  local rc=0
  (cd "$ES_LOGS" && as_es_user env -i "${env_args[@]}" \
    timeout "$ES_LAUNCH_TIMEOUT" "$ES_HOME/bin/elasticsearch" -d -p "$ES_OWN_PIDFILE") \
    >>"$STARTUP_LOG" 2>&1 9>&- || rc=$?
  pid=""
  [[ -f "$ES_OWN_PIDFILE" ]] && pid="$(tr -dc '0-9' <"$ES_OWN_PIDFILE")"
  if ((rc != 0)) || [[ -z "$pid" ]]; then
    print_log_tail
    if [[ -n "$pid" ]] && is_our_es "$pid"; then stop_pid "$pid" || true; fi
    die "Elasticsearch failed to start (launcher exit $rc); logs: $ES_LOGS"
  fi
  echo "$pid" >"$PIDFILE"
  if ! wait_ready "$pid"; then
    print_log_tail
    if is_our_es "$pid"; then stop_pid "$pid" || true; fi
    rm -f "$PIDFILE"
    die "Elasticsearch did not become healthy; logs: $ES_LOGS"
  fi
  report_up "$pid"
  after_ready
}

# after_ready is what a node needs once it answers: the secure node's users and API key.
after_ready() {
  if [[ "$ES_NODE" == secure ]]; then secure_setup; fi
}

cmd_down() {
  lock
  local pid; pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PIDFILE"
    log "already down"
  else
    log "stopping pid $pid (SIGTERM, SIGKILL after ${ES_STOP_TIMEOUT}s)"
    stop_pid "$pid" || die "pid $pid did not exit"
    rm -f "$PIDFILE" "$ES_OWN_PIDFILE"
    log "stopped"
  fi
  local _
  for _ in $(seq 50); do port_in_use || break; sleep 0.1; done
  if port_in_use; then
    die "port $ES_HTTP_PORT is still in use (not by our node): $(port_owner)"
  fi
  log "port $ES_HTTP_PORT is free"
}

cmd_status() {
  local pid; pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    if [[ -f "$PIDFILE" ]]; then log "down (stale pid file $PIDFILE removed)"; rm -f "$PIDFILE" 2>/dev/null || true
    else log "down"; fi
    if port_in_use; then log "note: port $ES_HTTP_PORT is in use by something else: $(port_owner)"; fi
    return 3
  fi
  local s
  if s="$(health_summary)"; then
    log "up: $BASE_URL pid $pid $s (logs: $SERVER_LOG)"
    return 0
  fi
  log "running (pid $pid) but not answering: $s (starting, or hung; see $SELF logs)"
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

[[ "$ES_NODE" == secure ]] && secure_load
case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 up|down|status|logs [-f] [N]" >&2; exit 2 ;;
esac
