#!/usr/bin/env bash
# bench-vs-llama.sh — kiln against llama.cpp on one model, side by side in
# one run: prefill (pp512), decode (tg128) and 16-sequence batched decode,
# 2 threads each, printed as a table of t/s and kiln/llama.cpp ratios.
#
#   scripts/bench-vs-llama.sh MODEL.gguf LLAMA_BIN_DIR [REPS] [KILN_BIN]
#
# LLAMA_BIN_DIR holds llama.cpp's llama-bench and llama-batched-bench (build
# llama.cpp under /tmp; it is an instrument, never a dependency). The pair is
# run twice in alternating order (kiln, llama.cpp, llama.cpp, kiln) so that
# a drifting load on a shared machine hits both alike; each figure is the
# mean of its two runs. docs/performance.md records the results.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,13p "$0"; exit 2; }
model=$1 lbin=$2 reps=${3:-3}
kiln=${4:-$(dirname "$0")/../build/kiln}
T=2 P=512 N=128 B=16 BP=128
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_kiln() {
  "$kiln" bench model -m "$model" -t $T -p $P -n $N -b $B --bp $BP -r "$reps" --json >"$tmp/kiln.$1.json"
}
run_llama() {
  "$lbin/llama-bench" -m "$model" -t $T -p $P -n $N -r "$reps" -o json >"$tmp/llama.$1.json" 2>/dev/null
  "$lbin/llama-batched-bench" -m "$model" -t $T -c $((B * (BP + N))) -b 2048 -ub 512 -npp $BP -ntg $N -npl $B \
    --output-format jsonl 2>/dev/null | grep '^{' >"$tmp/batched.$1.jsonl"
}
echo "model: $model, $T threads, $reps repetitions, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
run_kiln 1; run_llama 1; run_llama 2; run_kiln 2

/usr/bin/python3 - "$tmp" <<'PY'
import json, sys, statistics as st
d = sys.argv[1]
def kiln(i):
    j = json.load(open(f"{d}/kiln.{i}.json"))
    b = [x for x in j["batched"] if x["seqs"] == 16][0] if "batched" in j else None
    return j["pp_tok_s"], j["tg_tok_s"], (b["tok_s"] if b else None), j.get("tg_roofline_frac"), j.get("bandwidth_gb_s")
def llama(i):
    rows = json.load(open(f"{d}/llama.{i}.json"))
    pp = [r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0][0]
    tg = [r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0][0]
    b = [json.loads(l) for l in open(f"{d}/batched.{i}.jsonl")]
    s_tg = [x["speed_tg"] for x in b if x["pl"] == 16][0]
    return pp, tg, s_tg
k = [kiln(1), kiln(2)]; l = [llama(1), llama(2)]
mean = lambda xs: st.mean([x for x in xs if x is not None])
names = ["pp512", "tg128", "16-seq decode"]
print("| test | kiln t/s | llama.cpp t/s | kiln / llama.cpp |")
print("|---|---|---|---|")
for i, n in enumerate(names):
    kv, lv = mean([x[i] for x in k]), mean([x[i] for x in l])
    print(f"| {n} | {kv:.1f} | {lv:.1f} | {kv / lv:.2f}x |")
roof = mean([x[3] for x in k]); bw = mean([x[4] for x in k])
print(f"\nkiln tg128 at {100 * roof:.0f}% of the decode roofline ({bw:.1f} GB/s measured; "
      "a mixture of experts counts only the experts a token uses)")
PY
