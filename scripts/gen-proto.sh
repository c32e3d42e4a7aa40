#!/usr/bin/env bash
# Regenerates the Triton gRPC stubs (triton/inferencepb) from triton/proto.
#
# Usage: scripts/gen-proto.sh [OUT_DIR]   (default: triton/inferencepb)
#
# The generated files carry the generator versions in their headers, so every
# machine must use the same ones or scripts/check-proto-drift.sh reports drift:
#   protoc              3.21.12  Debian 12: apt-get install -y protobuf-compiler
#   protoc-gen-go       v1.36.12 same as google.golang.org/protobuf in go.mod
#   protoc-gen-go-grpc  v1.6.2   generated code needs grpc >= 1.64 (go.mod: 1.85.0)
# The two Go plugins are installed here, pinned, into .local/bin when missing or
# at another version (needs the Go module proxy). protoc must be on PATH (or set
# PROTOC).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/triton/inferencepb}"
PROTO_DIR="$ROOT/triton/proto"

PROTOC_VERSION="3.21.12"
PROTOC_GEN_GO_VERSION="v1.36.12"
PROTOC_GEN_GO_GRPC_VERSION="v1.6.2"

BIN="$ROOT/.local/bin"
mkdir -p "$BIN"
export PATH="$BIN:$PATH"

PROTOC="${PROTOC:-protoc}"
if ! command -v "$PROTOC" >/dev/null 2>&1; then
  echo "gen-proto: protoc not found; install it: apt-get install -y protobuf-compiler (want $PROTOC_VERSION)" >&2
  exit 1
fi
have="$("$PROTOC" --version | awk '{print $2}')"
if [[ "$have" != "$PROTOC_VERSION" ]]; then
  echo "gen-proto: protoc is $have, want $PROTOC_VERSION (Debian 12 protobuf-compiler); the version is written into the generated headers" >&2
  exit 1
fi

# ensure_plugin NAME PACKAGE VERSION WANT_OUTPUT
ensure_plugin() {
  local name="$1" pkg="$2" version="$3" want="$4"
  if [[ -x "$BIN/$name" ]] && [[ "$("$BIN/$name" --version 2>/dev/null)" == "$want" ]]; then
    return
  fi
  echo "gen-proto: installing $pkg@$version into $BIN" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$pkg@$version"
  if [[ "$("$BIN/$name" --version)" != "$want" ]]; then
    echo "gen-proto: $BIN/$name --version is not '$want'" >&2
    exit 1
  fi
}
ensure_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
  "$PROTOC_GEN_GO_VERSION" "protoc-gen-go $PROTOC_GEN_GO_VERSION"
ensure_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  "$PROTOC_GEN_GO_GRPC_VERSION" "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}"

mkdir -p "$OUT"
rm -f "$OUT"/*.pb.go
(
  cd "$PROTO_DIR"
  "$PROTOC" -I . \
    --plugin=protoc-gen-go="$BIN/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
    --go_out="$OUT" --go_opt=paths=source_relative \
    --go-grpc_out="$OUT" --go-grpc_opt=paths=source_relative \
    model_config.proto grpc_service.proto
)
echo "gen-proto: wrote $(ls "$OUT"/*.pb.go | wc -l) files to $OUT" >&2
