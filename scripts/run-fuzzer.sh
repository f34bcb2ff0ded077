#!/usr/bin/env bash
# run-fuzzer.sh BINARY SEED_CORPUS_DIR SECONDS
# Runs one libFuzzer target for a bounded time from a scratch copy of the
# checked-in seed corpus (the checked-in corpus is never modified).
set -euo pipefail
bin=$1 seeds=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
if [ -d "$seeds" ]; then cp -r "$seeds"/. "$work/corpus/"; fi
cd "$work"
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 "$work/corpus" 2>&1 | tail -n 25
