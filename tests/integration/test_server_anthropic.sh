#!/usr/bin/env bash
# test_server_anthropic.sh — runs test_server_anthropic.py (see its docstring) against the
# real `kiln serve` from $KILN_BIN, with the shared models from $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_server_anthropic.py"
