#!/usr/bin/env bash
# run-fuzzer.sh BINARY SEED_CORPUS_DIR SECONDS
# Runs one libFuzzer target for a bounded time from a scratch copy of the
# checked-in seed corpus (the checked-in corpus is never modified).
set -uo pipefail
bin=$1 seeds=$2 secs=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
if [ -d "$seeds" ]; then cp -r "$seeds"/. "$work/corpus/"; fi
cd "$work"
# a crash, leak or timeout input is kept (printed path) for replay: BINARY FILE
art=${KILN_FUZZ_ARTIFACTS:-${TMPDIR:-/tmp}/kiln-fuzz-artifacts}/$(basename "$bin")
mkdir -p "$art"
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -artifact_prefix="$art/" -print_final_stats=1 "$work/corpus" 2>"$work/log"
rc=$?
grep -E "^(==[0-9]+==|SUMMARY|artifact_prefix|Test unit written|    #[0-9]+ )" "$work/log" | head -n 60
tail -n 8 "$work/log"
exit $rc
