#!/usr/bin/env bash
# scripts/fuzz.sh — run every Go fuzz target in the repository (every `func Fuzz...`
# in a *_test.go file, found anew on each run) for FUZZTIME each, one at a time.
#
#   scripts/fuzz.sh                  FUZZTIME=60s per target (`make fuzz`)
#   FUZZTIME=5s scripts/fuzz.sh      a short pass
#   FUZZ_PARALLEL=2                  fuzzing workers per target (default: go test's, GOMAXPROCS)
#
# `go test` alone already runs every target's seeds (testdata/fuzz/<Target>/). A failing
# input is written there by go test: commit it with the fix, it becomes a regression test.
# Exit status: 0 all passed, 1 some target failed (all are run and listed first).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZTIME="${FUZZTIME:-60s}"
GO="${GO:-go}"
par=()
[[ -n "${FUZZ_PARALLEL:-}" ]] && par=(-parallel "$FUZZ_PARALLEL")

# Packages with fuzz targets: a cheap grep over tracked and new test files picks the
# packages; `go test -list` then names the targets as the compiler sees them.
mapfile -t pkgs < <(git ls-files -co --exclude-standard -- '*_test.go' |
  xargs -r grep -l '^func Fuzz[A-Z0-9_]' -- 2>/dev/null | xargs -r -n1 dirname | sort -u)
if ((${#pkgs[@]} == 0)); then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

declare -a passed=() failed=()
start=$SECONDS
for dir in "${pkgs[@]}"; do
  if ! targets=$("$GO" test -list '^Fuzz' "./$dir" 2>&1); then
    echo "$targets" >&2
    failed+=("./$dir (does not build)")
    continue
  fi
  for target in $(grep -E '^Fuzz' <<<"$targets"); do
    echo "fuzz: ./$dir $target for $FUZZTIME" >&2
    if "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "${par[@]}" "./$dir"; then
      passed+=("./$dir $target")
    else
      failed+=("./$dir $target")
    fi
  done
done

echo "fuzz: ${#passed[@]} target(s) passed, ${#failed[@]} failed in $((SECONDS - start)) s (FUZZTIME=$FUZZTIME)" >&2
for f in "${failed[@]}"; do echo "fuzz: FAILED $f (the input is under its testdata/fuzz/)" >&2; done
((${#failed[@]} == 0))
