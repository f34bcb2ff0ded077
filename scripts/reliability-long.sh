#!/usr/bin/env bash
# reliability-long.sh — the long runs of the reliability suite (issue 11),
# separate from the test command (scripts/test.sh runs the short versions).
#
#   fuzz     every libFuzzer target for FUZZ_SECONDS (default 600) each
#            (scripts/fuzz-long.sh), ASan+UBSan
#   http     the black-box HTTP fuzzer for HTTP_SECONDS (default 600) against
#            an ASan+UBSan server
#   aborts   ABORTS (default 10000) streams aborted at random points against
#            an ASan+UBSan (LSan) server, then the leak, KV, slot and gauge
#            checks
#   soak     the mixed-traffic soak for SOAK_SECONDS (default 1800) against an
#            ASan+UBSan server and again against a TSan server
#   rss      the soak for SOAK_SECONDS against a Release server with the RSS
#            check (growth under 5% from minute 5 to the end)
#
# STEPS="fuzz http aborts soak rss" picks steps (default: all, about 2.5 h on
# a 2-core machine). Logs go to build-long/<step>.log; the last lines say
# which steps passed. docs/reliability.md records the figures of a run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${KILN_SHARED:-$ROOT/../shared}
STEPS=${STEPS:-"fuzz http aborts soak rss"}
FUZZ_SECONDS=${FUZZ_SECONDS:-600}
HTTP_SECONDS=${HTTP_SECONDS:-600}
ABORTS=${ABORTS:-10000}
SOAK_SECONDS=${SOAK_SECONDS:-1800}
JOBS=${JOBS:-$(nproc)}
OUT=$ROOT/build-long
mkdir -p "$OUT"

bash scripts/setup.sh >/dev/null || { echo "setup failed"; exit 1; }

build() { # build DIR CC [cmake args...]
  local dir=$1 cc=$2; shift 2
  [ -x "$dir/kiln" ] && cmake --build "$dir" -j "$JOBS" >/dev/null 2>&1 && return 0
  CC=$cc cmake -S . -B "$dir" -DKILN_SHARED_DIR="$SHARED" "$@" >/dev/null &&
    cmake --build "$dir" -j "$JOBS" >/dev/null
}

declare -a results=()
step() { # step NAME LOG COMMAND...: runs it, records pass/fail
  local name=$1 log=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S)), log $log"
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  tail -n 5 "$log"
  results+=("$name: $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s")
}

asan_env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
tsan_env=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1)
common_env=(KILN_SHARED="$SHARED" KILN_SRC="$ROOT")

for s in $STEPS; do
  case $s in
  fuzz)
    step fuzz "$OUT/fuzz.log" bash scripts/fuzz-long.sh "$FUZZ_SECONDS" ;;
  http)
    build "$OUT/asan" clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON || { results+=("http: build failed"); continue; }
    step http "$OUT/http.log" env "${common_env[@]}" "${asan_env[@]}" KILN_BIN="$OUT/asan/kiln" \
      KILN_FUZZ_HTTP_SECONDS="$HTTP_SECONDS" bash tests/integration/test_reliability_fuzz_http.sh ;;
  aborts)
    build "$OUT/asan" clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON || { results+=("aborts: build failed"); continue; }
    step aborts "$OUT/aborts.log" env "${common_env[@]}" "${asan_env[@]}" KILN_BIN="$OUT/asan/kiln" \
      KILN_ABORTS="$ABORTS" bash tests/integration/test_reliability_clients.sh ;;
  soak)
    build "$OUT/asan" clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON || { results+=("soak: build failed"); continue; }
    step soak-asan "$OUT/soak-asan.log" env "${common_env[@]}" "${asan_env[@]}" KILN_BIN="$OUT/asan/kiln" \
      KILN_SOAK_SECONDS="$SOAK_SECONDS" bash tests/integration/test_soak.sh
    build "$OUT/tsan" clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON || { results+=("soak-tsan: build failed"); continue; }
    step soak-tsan "$OUT/soak-tsan.log" env "${common_env[@]}" "${tsan_env[@]}" KILN_BIN="$OUT/tsan/kiln" \
      KILN_SOAK_SECONDS="$SOAK_SECONDS" bash tests/integration/test_soak.sh ;;
  rss)
    build "$OUT/release" gcc -DCMAKE_BUILD_TYPE=Release || { results+=("rss: build failed"); continue; }
    step rss "$OUT/rss.log" env "${common_env[@]}" KILN_BIN="$OUT/release/kiln" \
      python3 tests/integration/soak.py --seconds "$SOAK_SECONDS" --rss ;;
  *) results+=("$s: unknown step") ;;
  esac
done

echo
failed=0
for r in "${results[@]}"; do
  echo "$r"
  case $r in *passed*) ;; *) failed=1 ;; esac
done
exit $failed
