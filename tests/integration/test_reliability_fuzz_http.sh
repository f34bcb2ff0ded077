#!/usr/bin/env bash
# test_reliability_fuzz_http.sh — runs test_reliability_fuzz_http.py (see its docstring):
# the black-box HTTP fuzzer fuzz_http.py against the real `kiln serve` from $KILN_BIN for
# KILN_FUZZ_HTTP_SECONDS (default 20), with the shared models from $KILN_SHARED.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_reliability_fuzz_http.py"
