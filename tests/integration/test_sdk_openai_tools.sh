#!/usr/bin/env bash
# test_sdk_openai_tools.sh — runs test_sdk_openai_tools.py (see its docstring) against the real `kiln serve`
# from $KILN_BIN with the shared models and chat templates from $KILN_SHARED; needs
# Node.js >= 20 and the pinned npm packages of tests/e2e/sdk (npm_deps.sh).
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
exec python3 "$KILN_SRC/tests/integration/test_sdk_openai_tools.py"
