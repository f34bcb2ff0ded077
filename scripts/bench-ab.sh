#!/usr/bin/env bash
# bench-ab.sh — two kiln builds side by side on `kiln bench server`, in one
# run: for each model, ROUNDS rounds that each start OLD's server, run the
# scenarios, stop it, then the same with NEW (alternating, so that a noisy
# machine hurts both alike). Prints every figure, then per scenario the
# medians of OLD and NEW and NEW/OLD.
#
#   bash scripts/bench-ab.sh OLD_KILN NEW_KILN MODEL.gguf [MODEL.gguf...]
#
# Env: ROUNDS (default 3), PORT (default 18471), THREADS (default 2),
#      SLOTS (default 8), CONC (throughput concurrency, default 8),
#      DURATION (throughput seconds, default 20), REQUESTS (latency requests,
#      default 5), WORDS (prompt words, default 64), TOKENS (default 64).
# The bench client is NEW's. The response cache is off in both servers
# (every request is computed), so the figures are the engine's.
set -uo pipefail
OLD=${1:?usage: bench-ab.sh OLD_KILN NEW_KILN MODEL.gguf...} NEW=${2:?} ; shift 2
[ $# -ge 1 ] || { echo "usage: bench-ab.sh OLD_KILN NEW_KILN MODEL.gguf..." >&2; exit 2; }
ROUNDS=${ROUNDS:-3} PORT=${PORT:-18471} THREADS=${THREADS:-2} SLOTS=${SLOTS:-8}
CONC=${CONC:-8} DURATION=${DURATION:-20} REQUESTS=${REQUESTS:-5} WORDS=${WORDS:-64} TOKENS=${TOKENS:-64}
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null' EXIT

serve() { # serve BIN MODEL: starts the server and waits for /health
  "$1" serve -m "$2" -np "$SLOTS" -c 1024 -t "$THREADS" --port "$PORT" \
    --response-cache=false --embedding-cache=false >"$out/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start:" >&2; tail -5 "$out/serve.log" >&2; return 1
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }

# run NAME MODEL_ID ARGS...: one scenario, its JSON to $out/NAME.json
run() {
  local name=$1 id=$2; shift 2
  "$NEW" bench server --url "http://127.0.0.1:$PORT" --model "$id" --prompt-words "$WORDS" --max-tokens "$TOKENS" \
    --ignore-eos --seed 1 --timeout 300 --quiet --json "$@" >"$out/$name.json" 2>"$out/$name.err"
}

# figure FILE EXPR: a number from a result (python3 reads the JSON)
figure() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || echo nan; }

printf '%-14s %-4s %5s %12s %12s %12s %12s\n' model bin round "thr tok/s" "thr ttft p50" "lat e2e p50" "lat ttft p50"
for model in "$@"; do
  id=$(basename "$model" .gguf)
  for r in $(seq "$ROUNDS"); do
    for which in old new; do
      bin=$OLD; [ $which = new ] && bin=$NEW
      serve "$bin" "$model" || exit 1
      run warm "$id" --scenario latency --requests 2
      run lat "$id" --scenario latency --requests "$REQUESTS"
      run thr "$id" --scenario throughput --concurrency "$CONC" --duration "$DURATION"
      stop
      t=$(figure "$out/thr.json" "d['output_tok_s']")
      tt=$(figure "$out/thr.json" "d['ttft_s']['p50']*1e3")
      le=$(figure "$out/lat.json" "d['e2e_s']['p50']*1e3")
      lt=$(figure "$out/lat.json" "d['ttft_s']['p50']*1e3")
      printf '%-14s %-4s %5d %12.1f %12.1f %12.1f %12.1f\n' "$id" "$which" "$r" "$t" "$tt" "$le" "$lt" | tee -a "$out/rows"
    done
  done
done
echo
python3 - "$out/rows" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cols = ["throughput tok/s", "throughput TTFT p50 ms", "latency e2e p50 ms", "latency TTFT p50 ms"]
for model in dict.fromkeys(r[0] for r in rows):
    print(model)
    for c, name in enumerate(cols):
        med = {w: statistics.median(float(r[3 + c]) for r in rows if r[0] == model and r[1] == w) for w in ("old", "new")}
        print("  %-24s old %9.1f   new %9.1f   new/old %.3f" % (name, med["old"], med["new"],
                                                               med["new"] / med["old"] if med["old"] else float("nan")))
EOF
