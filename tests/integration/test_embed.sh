#!/usr/bin/env bash
# test_embed.sh — kiln embed against llama.cpp's pooled embeddings
# (every $KILN_SHARED/reference/*.embed.json; bounds in test_embed.py).
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/test_embed.py" "$KILN_BIN" "$KILN_SHARED"
