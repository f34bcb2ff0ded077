#!/usr/bin/env bash
# test_bench_server.sh — runs test_bench_server.py (see its docstring):
# `kiln bench server` (latency, throughput, ramp, SLA PASS/FAIL, HTML report,
# errors by kind, a server killed or hung mid-run) against the real
# `kiln serve` from $KILN_BIN on the shared stories260K model.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_bench_server.py"
