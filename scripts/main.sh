#!/usr/bin/env bash
# main.sh — install, build, and start kiln's server on the shared models, with
# stories260K as the default model. It prints the URL and a ready-made curl
# line; stop it with Ctrl-C. Extra arguments go to `kiln serve` (for example
# --port 9000); KILN_MODELS and KILN_DEFAULT_MODEL pick other models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
exec ./build/kiln serve --models "${KILN_MODELS:-../shared/models}" \
  --default-model "${KILN_DEFAULT_MODEL:-stories260K}" "$@"
