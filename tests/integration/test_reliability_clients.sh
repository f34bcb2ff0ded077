#!/usr/bin/env bash
# test_reliability_clients.sh — runs test_reliability_clients.py (see its docstring): idle,
# slow, aborting and never-reading clients against the real `kiln serve` from $KILN_BIN,
# with the shared models from $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_reliability_clients.py"
