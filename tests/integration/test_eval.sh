#!/usr/bin/env bash
# test_eval.sh — kiln eval / kiln run against llama.cpp's references
# (see check_eval.py for the bounds).
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/check_eval.py" "$KILN_BIN" "$KILN_SHARED"
