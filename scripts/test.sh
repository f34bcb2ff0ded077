#!/usr/bin/env bash
# test.sh — install dependencies, build, and run every kiln test.
#
# Phases (each a separate build directory):
#   1. release   gcc, -Werror: the whole suite (unit + integration) but the
#                sanitizer soak (label "soak")
#   2. kernels   the kernel and engine unit tests again under every kernel set
#                this CPU supports (KILN_CPU=generic, avx2, avx512)
#   3. asan      clang, ASan+UBSan: the whole suite once
#   4. tsan      clang, ThreadSanitizer: the concurrent code (scheduler and
#                cache unit tests, server integration tests, the soak;
#                not test_server_tools and test_server_anthropic, whose
#                parsing, grammars and formatting are per request and which
#                ASan covers; test_server_responses, with its shared store,
#                runs)
#   5. fuzz      clang libFuzzer targets, ~20 s each from the seed corpus
# The last line is the total: "total: N passed, N failed".
# The 1100-token ".long" reference prompts run in the release phase only
# (KILN_SKIP_LONG=1 elsewhere) to keep the suite's time in bounds.
# Env: KILN_TEST_PHASES="release kernels asan tsan fuzz" to pick phases,
#      KILN_FUZZ_SECONDS (default 20), JOBS (default nproc).
# The long reliability runs (fuzzers >= 10 min each, 10,000 aborts, a 30-min
# soak with the RSS check) are scripts/reliability-long.sh, not part of this.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${KILN_SHARED:-$ROOT/../shared}
JOBS=${JOBS:-$(nproc)}
PHASES=${KILN_TEST_PHASES:-"release kernels asan tsan fuzz"}
FUZZ_SECONDS=${KILN_FUZZ_SECONDS:-20}

bash scripts/setup.sh || { echo "setup failed"; exit 1; }

passed=0 failed=0
declare -a failures=()

# run_ctest PHASE BUILD_DIR [ctest args...]: runs ctest, adds its counts.
run_ctest() {
  local phase=$1 dir=$2; shift 2
  local log="$dir/ctest-$phase.log"
  (cd "$dir" && ctest --output-on-failure --timeout 900 "$@") 2>&1 | tee "$log"
  local line total nfail
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)
  if [ -z "$line" ]; then
    if grep -q 'No tests were found' "$log"; then return 0; fi
    failed=$((failed + 1)); failures+=("$phase: ctest did not finish"); return 0
  fi
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  nfail=$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")
  passed=$((passed + total - nfail)); failed=$((failed + nfail))
  [ "$nfail" -gt 0 ] && failures+=("$phase: $nfail failed")
  return 0
}

# build DIR CC [cmake args...]
build() {
  local dir=$1 cc=$2; shift 2
  echo "=== build $dir ($cc $*)"
  CC=$cc cmake -S . -B "$dir" -DKILN_SHARED_DIR="$SHARED" "$@" >"$dir.cmake.log" 2>&1 ||
    { cat "$dir.cmake.log"; return 1; }
  cmake --build "$dir" -j "$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
  [ "${PIPESTATUS[0]}" -eq 0 ]
}

mkdir -p build-test
for phase in $PHASES; do
  case $phase in
  release)
    if build build-test/release gcc -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON; then
      run_ctest release build-test/release -LE soak
    else failed=$((failed + 1)); failures+=("release: build failed"); fi ;;
  kernels)
    [ -d build-test/release ] || build build-test/release gcc -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON
    for set in generic avx2 avx512; do
      if build-test/release/kiln bench kernels --check-cpu "$set" >/dev/null 2>&1; then
        echo "=== kernel set $set"
        KILN_CPU=$set KILN_SKIP_LONG=1 run_ctest "kernels-$set" build-test/release -L kernels
      else
        echo "=== kernel set $set: not supported by this CPU, skipped"
      fi
    done ;;
  asan)
    if build build-test/asan clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON -DKILN_WERROR=ON; then
      KILN_SKIP_LONG=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest asan build-test/asan
    else failed=$((failed + 1)); failures+=("asan: build failed"); fi ;;
  tsan)
    if build build-test/tsan clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON -DKILN_WERROR=ON; then
      KILN_SKIP_LONG=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        run_ctest tsan build-test/tsan -R 'engine_test_sched|integration_test_server|integration_test_soak|cache_test' -E 'openai_npm|server_tools|server_anthropic'
    else failed=$((failed + 1)); failures+=("tsan: build failed"); fi ;;
  fuzz)
    if build build-test/fuzz clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ=ON \
         -DKILN_SANITIZE=ON -DKILN_FUZZ_SECONDS="$FUZZ_SECONDS"; then
      run_ctest fuzz build-test/fuzz -L fuzz
    else failed=$((failed + 1)); failures+=("fuzz: build failed"); fi ;;
  *) echo "unknown phase $phase"; failed=$((failed + 1)) ;;
  esac
done

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
