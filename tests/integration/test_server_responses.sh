#!/usr/bin/env bash
# test_server_responses.sh — runs test_server_responses.py (see its docstring) against the
# real `kiln serve` from $KILN_BIN, with the shared models from $KILN_SHARED and the openai
# npm SDK (tests/e2e/sdk).
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_server_responses.py"
