#!/usr/bin/env bash
# setup.sh — install kiln's build and test dependencies from Debian 12 packages.
# Idempotent: when every package is already installed it does nothing.
# Runs apt-get non-interactively; needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  clang-14 libclang-rt-14-dev lld-14 llvm-14
  libmicrohttpd-dev libjansson-dev libpcre2-dev libzstd-dev liblmdb-dev
  libcurl4-openssl-dev libyaml-dev libssl-dev libxxhash-dev libcmocka-dev libicu-dev
  python3 python3-numpy
  prometheus  # for promtool (/usr/bin/promtool): tests check /metrics with `promtool check metrics`
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
