#!/usr/bin/env bash
# test_reliability_memory.sh — runs test_reliability_memory.py (see its
# docstring): a --memory-budget holding one of two generation models, with
# concurrent requests alternating between them, against the real `kiln serve`
# from $KILN_BIN over temporary symlinks to the models in $KILN_SHARED.
# KILN_MEM_REQUESTS / KILN_MEM_THREADS scale it (default 40 / 4).
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_reliability_memory.py"
