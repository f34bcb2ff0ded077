#!/usr/bin/env bash
# test_bench_cache.sh — runs test_bench_cache.py (see its docstring): the
# cache scenario of `kiln bench server` against the real `kiln serve` from
# $KILN_BIN on the shared stories260K model with its response cache on, a
# server with it off, and in-process servers that are not kiln.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_bench_cache.py"
