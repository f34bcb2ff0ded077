#!/usr/bin/env bash
# fuzz-long.sh [SECONDS] — long fuzzing runs (default 600 s per target),
# separate from the test command. Builds the libFuzzer targets with clang
# and ASan+UBSan, runs each from its seed corpus and prints the stats.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
bash scripts/setup.sh
CC=clang-14 cmake -S . -B build-fuzz-long -DKILN_FUZZ=ON -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz-long -j "$(nproc)" >/dev/null
for f in build-fuzz-long/tests/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f"); short=${name#fuzz_}
  echo "=== $name for ${SECS}s"
  KILN_SHARED=${KILN_SHARED:-$(pwd)/../shared} bash scripts/run-fuzzer.sh "$(pwd)/$f" "$(pwd)/tests/fuzz/corpus/$short" "$SECS"
done
