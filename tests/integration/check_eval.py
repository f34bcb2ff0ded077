#!/usr/bin/env python3
"""check_eval.py KILN SHARED — `kiln eval --top-k 32` against every llama.cpp
reference in SHARED/reference, with the engine issue's bounds:

- prompt_tokens must equal the reference's exactly;
- stories260K (trained, F32): same top-1 everywhere (near ties < 0.1 count),
  every reference top-8 logit within 0.05, logsumexp within 0.05;
- quantized / random-weight models: top-1 agreement >= 99% (ids within 0.5
  of the reference's top count as tied); over the reference top-8 logits,
  mean |diff| <= 0.1, p99 <= 0.35, max <= 0.6; logsumexp within 0.6.

Also `kiln run --temp 0 -n 24` on stories260K's story prompt must reproduce
greedy_text_hex exactly. Set KILN_EVAL_FILTER to a substring to check fewer
files; KILN_SKIP_LONG=1 skips the 1100-token .long prompts (the test script
sets it outside the release phase). Exits 1 on any failure.
"""
import glob
import json
import math
import os
import subprocess
import sys

kiln, shared = sys.argv[1], sys.argv[2]
flt = os.environ.get("KILN_EVAL_FILTER", "")
fails = 0
checked = 0
for ref_path in sorted(glob.glob(os.path.join(shared, "reference", "*.json"))):
    name = os.path.basename(ref_path)
    if ".embed." in name or name.startswith("quant-zoo") or flt not in name:
        continue
    if ".long." in name and os.environ.get("KILN_SKIP_LONG"):
        continue
    model_name, prompt_name = name[:-5].rsplit(".", 1)
    model = os.path.join(shared, "models", model_name + ".gguf")
    prompt = os.path.join(shared, "reference", "prompts", prompt_name + ".txt")
    ref = json.load(open(ref_path))
    p = subprocess.run([kiln, "eval", "-m", model, "-f", prompt, "--top-k", "32", "--json"],
                       capture_output=True)
    checked += 1
    if p.returncode != 0:
        print(f"FAIL {name}: exit {p.returncode}: {p.stderr.decode(errors='replace')[-500:]}")
        fails += 1
        continue
    out = json.loads(p.stdout)
    if out["prompt_tokens"] != ref["prompt_tokens"]:
        a, b = out["prompt_tokens"], ref["prompt_tokens"]
        i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        print(f"FAIL {name}: prompt tokens differ at {i}: {a[i:i+5]} vs reference {b[i:i+5]}")
        fails += 1
        continue
    trained = model_name == "stories260K"
    tie = 0.1 if trained else 0.5
    top1 = 0
    diffs = []
    lse_max = 0.0
    for pos, (mine, theirs) in enumerate(zip(out["positions"], ref["prompt_logits_topk"])):
        my = dict(zip(mine["ids"], mine["logits"]))
        best = mine["ids"][0]
        rtop = theirs["logits"][0]
        near = {i for i, l in zip(theirs["ids"], theirs["logits"]) if rtop - l <= tie}
        top1 += best in near
        for i, l in zip(theirs["ids"], theirs["logits"]):
            if i in my:
                diffs.append(abs(my[i] - l))
            else:
                diffs.append(float("inf"))  # a reference top-8 id outside our top-32
        lse_max = max(lse_max, abs(mine["logsumexp"] - theirs["logsumexp"]))
    n = len(ref["prompt_tokens"])
    diffs.sort()
    mean = sum(diffs) / len(diffs)
    p99 = diffs[int(0.99 * (len(diffs) - 1))]
    mx = diffs[-1]
    if trained:
        ok = top1 == n and mx <= 0.05 and lse_max <= 0.05
    else:
        ok = top1 >= 0.99 * n and mean <= 0.1 and p99 <= 0.35 and mx <= 0.6 and lse_max <= 0.6
    print(f"{'ok  ' if ok else 'FAIL'} {name:42s} n={n:4d} top1 {top1}/{n} mean {mean:.4f} p99 {p99:.4f} "
          f"max {mx:.4f} lse {lse_max:.4f}")
    fails += not ok

if flt in "stories260K.story.json":
    ref = json.load(open(os.path.join(shared, "reference", "stories260K.story.json")))
    p = subprocess.run([kiln, "run", "-m", os.path.join(shared, "models", "stories260K.gguf"), "-f",
                        os.path.join(shared, "reference", "prompts", "story.txt"), "--temp", "0", "-n", "24"],
                       capture_output=True)
    want = bytes.fromhex(ref["greedy_text_hex"])
    got = p.stdout
    ok = p.returncode == 0 and (got == want or got == want + b"\n")
    print(f"{'ok  ' if ok else 'FAIL'} greedy run stories260K story: {got!r}")
    if not ok:
        print(f"     expected {want!r}")
    fails += not ok
    checked += 1

print(f"checked {checked}, failed {fails}")
sys.exit(1 if fails or not checked else 0)
