#!/usr/bin/env bash
# test_reliability_faults.sh — runs test_reliability_faults.py (see its docstring):
# disk full (tmpfs) under the L2 cache and `kiln pull`, kill -9 during pulls and
# L2 writes, model files truncated/replaced on disk, path containment. Needs root
# for the tmpfs mounts (exit 77 otherwise).
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_reliability_faults.py"
