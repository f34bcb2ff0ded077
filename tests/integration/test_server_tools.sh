#!/usr/bin/env bash
# test_server_tools.sh — runs test_server_tools.py (see its docstring) against the
# real `kiln serve` and `kiln run` from $KILN_BIN, with the shared models from $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_server_tools.py"
