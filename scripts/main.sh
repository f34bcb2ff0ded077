#!/usr/bin/env bash
# main.sh — install, build, and run kiln's main job on the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
MODEL=${KILN_MODEL:-../shared/models/stories260K.gguf}
PROMPT="Once upon a time"
# kiln run streams only the continuation; show the prompt it continues.
printf '%s' "$PROMPT"
exec ./build/kiln run -m "$MODEL" -p "$PROMPT" -n 256 "$@"
