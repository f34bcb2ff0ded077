#!/usr/bin/env bash
# test_schema_suite.sh — runs test_schema_suite.py (see its docstring): the realistic
# JSON Schema suite (tests/e2e/sdk/schemas) through the real `kiln serve` from $KILN_BIN,
# validated with ajv; the shared models from $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_schema_suite.py"
