#!/usr/bin/env bash
# Fails (exit 1) when the committed Triton stubs in triton/inferencepb differ
# from what scripts/gen-proto.sh generates from triton/proto, i.e. someone
# edited a .proto without regenerating, or edited generated code by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$ROOT/scripts/gen-proto.sh" "$TMP/inferencepb"

# Compare only generated files; a hand-written file in the package is not drift.
status=0
for f in "$TMP"/inferencepb/*.pb.go; do
  name="$(basename "$f")"
  if ! diff -u "$ROOT/triton/inferencepb/$name" "$f"; then
    status=1
  fi
done
for f in "$ROOT"/triton/inferencepb/*.pb.go; do
  name="$(basename "$f")"
  if [[ ! -e "$TMP/inferencepb/$name" ]]; then
    echo "check-proto-drift: triton/inferencepb/$name is not generated from triton/proto any more" >&2
    status=1
  fi
done
if [[ $status -ne 0 ]]; then
  echo "check-proto-drift: triton/inferencepb is out of date; run scripts/gen-proto.sh and commit the result" >&2
  exit 1
fi
echo "check-proto-drift: triton/inferencepb matches triton/proto" >&2
