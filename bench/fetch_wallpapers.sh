#!/usr/bin/env bash
# Real photographs for the benchmarks, from Debian wallpaper packages (apt-get download +
# dpkg-deb -x; nothing is committed), then the ingest set: >= 500 distinct 1-12 MP JPEGs in
# .local/cache/bench-photos/ingest (see prepare_photos.py for how 38 photos become 500+).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CACHE=.local/cache/bench-photos
PKGS="plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04"
mkdir -p "$CACHE/debs" "$CACHE/x"
for p in $PKGS; do
  if ! ls "$CACHE/debs/${p}"_*.deb >/dev/null 2>&1; then
    (cd "$CACHE/debs" && apt-get download "$p" 2>/dev/null) || {
      echo "apt-get download $p failed; run 'apt-get update' first" >&2; exit 1; }
  fi
  dpkg-deb -x "$CACHE"/debs/"${p}"_*.deb "$CACHE/x"
done
bench_venv
if [ ! -f "$PHOTOS/manifest.json" ]; then
  rm -rf "$PHOTOS"
  "$BENCH_PY" bench/prepare_photos.py "$CACHE/x/usr/share" "$PHOTOS" --count "${BENCH_PHOTOS:-520}"
fi
