#!/usr/bin/env bash
# test_soak.sh — the bounded soak of issue 11: runs soak.py (see its docstring)
# for KILN_SOAK_SECONDS (default 60) of mixed traffic against the real
# `kiln serve` from $KILN_BIN: chat, completions, Ollama generate/chat (streamed
# and not), embeddings, cache-hit repeats, sampled requests, client aborts, and
# models loading and unloading under a 2 s TTL. It fails on any sanitizer
# report, a 5xx other than 503, a stuck request, requests left running or
# waiting, no load/unload cycles, no cache hit, or an unclean SIGTERM exit.
# Meant for the ASan+UBSan and TSan builds; KILN_SOAK_SEED picks the traffic.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
# defaults for a TSan/UBSan build (the test script may set its own)
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
exec python3 "$KILN_SRC/tests/integration/soak.py" --seconds "${KILN_SOAK_SECONDS:-60}" \
    --seed "${KILN_SOAK_SEED:-1}"
