#!/usr/bin/env bash
# Fetch real photographs for the preprocessing benchmark from Debian's
# plasma-workspace-wallpapers package (KDE wallpapers, GPL-2+; photos taken
# by KDE contributors) with the ordinary apt client, and derive a 1-12 MP set
# from them in .local/cache/bench-photos/photos/. Nothing is committed.
#
# Usage: preprocess/bench/fetch_photos.sh   (needs .local/venv-preprocess)
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=.local/cache/bench-photos
PY=${PY:-.local/venv-preprocess/bin/python}
mkdir -p "$CACHE/debs" "$CACHE/x"
if ! ls "$CACHE"/debs/plasma-workspace-wallpapers_*.deb >/dev/null 2>&1; then
  if ! (cd "$CACHE/debs" && apt-get download plasma-workspace-wallpapers); then
    echo "apt-get download failed; run 'apt-get update' first" >&2
    exit 1
  fi
fi
for d in "$CACHE"/debs/*.deb; do dpkg-deb -x "$d" "$CACHE/x"; done
"$PY" preprocess/bench/prepare_photos.py "$CACHE/x/usr/share/wallpapers" "$CACHE/photos"
