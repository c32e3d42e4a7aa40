# Sourced by the bench scripts: repository root, the bench venv and the photo cache.
# PYTHON picks the interpreter that creates the venv (default: python3 from PATH, 3.11 or newer).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_PY=.local/venv-bench/bin/python
BENCH_OUT=${BENCH_OUT:-.local/bench}
PHOTOS=.local/cache/bench-photos/ingest
mkdir -p "$BENCH_OUT"

bench_venv() {
  if [ ! -x "$BENCH_PY" ] || ! cmp -s bench/requirements.txt .local/venv-bench/requirements.txt; then
    "${PYTHON:-python3}" -m venv .local/venv-bench
    "$BENCH_PY" -m pip install -q --disable-pip-version-check -r bench/requirements.txt
    cp bench/requirements.txt .local/venv-bench/requirements.txt
  fi
}

machine() {
  echo "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/{print $2}') GiB"
}
