#!/usr/bin/env bash
# fuzz-long.sh [SECONDS] — long fuzzing runs (default 600 s per target),
# separate from the test command. Builds the libFuzzer targets with clang
# and ASan+UBSan, runs each from its seed corpus and prints the stats
# (executions, new coverage units). A crash, leak or timeout input is kept
# under $KILN_FUZZ_ARTIFACTS (default /tmp/kiln-fuzz-artifacts/<target>/);
# the exit status is nonzero when any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
bash scripts/setup.sh >/dev/null || exit 1
CC=clang-14 cmake -S . -B build-fuzz-long -DKILN_FUZZ=ON -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
  cmake --build build-fuzz-long -j "$(nproc)" >/dev/null || { echo "build failed"; exit 1; }
failed=0
for f in build-fuzz-long/tests/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f"); short=${name#fuzz_}
  echo "=== $name for ${SECS}s"
  if KILN_SHARED=${KILN_SHARED:-$(pwd)/../shared} bash scripts/run-fuzzer.sh "$(pwd)/$f" "$(pwd)/tests/fuzz/corpus/$short" "$SECS"; then
    echo "=== $name: no finding"
  else
    echo "=== $name: FAILED"; failed=1
  fi
done
exit $failed
