#!/usr/bin/env bash
# test_server_models.sh — runs test_server_models.py (see its docstring): the model
# manager (names, lazy loading, keep-alive, memory budget, automatic context, /api/ps)
# against the real `kiln serve` from $KILN_BIN, over a temporary directory of symlinks
# to the shared models in $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_server_models.py"
