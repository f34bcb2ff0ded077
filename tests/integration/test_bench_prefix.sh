#!/usr/bin/env bash
# test_bench_prefix.sh — runs test_bench_prefix.py (see its docstring): the
# prefix, shared-prefix and spec scenarios of `kiln bench server` against the
# real `kiln serve` from $KILN_BIN on the shared stories260K model, and
# against an in-process server without /metrics.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_bench_prefix.py"
