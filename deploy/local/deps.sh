#!/usr/bin/env bash
# Installs the system packages the local stack, the build and the tests need,
# only those missing, so a warm run takes a fraction of a second.
#   - curl, ca-certificates, unzip: fetch and unpack Elasticsearch
#   - openssl: the secured Elasticsearch node's CA, certificate and passwords
#   - openjdk-17-jre-headless: Elasticsearch 8.19 runs on Java 17 here
#   - protobuf-compiler: regenerating / drift-checking the Triton stubs
#   - libturbojpeg0-dev, libpng-dev, pkg-config, gcc: the cgo libjpeg-turbo and libpng decoders (preprocess)
#   - iproute2: ss, used by the stack scripts to check ports
#   - chromium: the headless browser the search page's tests drive (app/ui_integration_test.go)
# Python (pyenv 3.11 with libpython3.11.so) and Go come with the machine image.
set -euo pipefail

PACKAGES=(curl ca-certificates unzip openssl openjdk-17-jre-headless protobuf-compiler
  libturbojpeg0-dev libpng-dev pkg-config gcc iproute2 procps chromium)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
