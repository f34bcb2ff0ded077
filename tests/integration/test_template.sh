#!/usr/bin/env bash
# test_template.sh — `kiln template` on every case of the shared chat templates
# (stdout must equal `expected` byte for byte, or exit 1 with exactly `error`
# on stderr), the -m path (model template, built-in fallback, model BOS), and
# the error/usage exits.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}"
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Split every case into files: <n>.messages.json, .tools.json, .args, .expected / .error
$PY - "$KILN_SHARED/chat_templates" "$tmp" <<'PYEOF'
import json, os, sys, glob
src, out = sys.argv[1], sys.argv[2]
n = 0
with open(os.path.join(out, "index"), "w") as idx:
    for jf in sorted(glob.glob(os.path.join(src, "*.json"))):
        doc = json.load(open(jf, encoding="utf-8"))
        for c in doc["cases"]:
            p = os.path.join(out, str(n))
            json.dump(c["messages"], open(p + ".messages.json", "w", encoding="utf-8"), ensure_ascii=False)
            if "tools" in c:
                json.dump(c["tools"], open(p + ".tools.json", "w", encoding="utf-8"), ensure_ascii=False)
            with open(p + ".args", "w") as a:
                a.write("1\n" if c["add_generation_prompt"] else "0\n")
                a.write(c["bos_token"] + "\n" + c["eos_token"] + "\n")
            key = "expected" if "expected" in c else "error"
            open(p + "." + key, "wb").write(c[key].encode("utf-8"))
            idx.write("%d\t%s\t%s\n" % (n, jf[:-5] + ".jinja", c["name"]))
            n += 1
PYEOF

count=0
while IFS=$'\t' read -r n tmpl cname; do
  p="$tmp/$n"
  { read -r gen; read -r bos; read -r eos; } <"$p.args"
  args=(template --template "$tmpl" --messages "$p.messages.json" --bos "$bos" --eos "$eos" --now 2024-07-26T12:00:00)
  [[ -f "$p.tools.json" ]] && args+=(--tools "$p.tools.json")
  [[ "$gen" == 1 ]] || args+=(--no-generation-prompt)
  set +e
  "$KILN_BIN" "${args[@]}" >"$p.out" 2>"$p.err"
  rc=$?
  set -e
  if [[ -f "$p.expected" ]]; then
    [[ $rc == 0 ]] || fail "$(basename "$tmpl") / $cname: exit $rc: $(cat "$p.err")"
    cmp -s "$p.out" "$p.expected" || { diff <(cat "$p.expected"; echo) <(cat "$p.out"; echo) >&2 || true; fail "$(basename "$tmpl") / $cname: output differs"; }
  else
    [[ $rc == 1 ]] || fail "$(basename "$tmpl") / $cname: expected exit 1, got $rc"
    [[ ! -s "$p.out" ]] || fail "$(basename "$tmpl") / $cname: output on error"
    printf '%s\n' "$(cat "$p.error")" | cmp -s - "$p.err" || fail "$(basename "$tmpl") / $cname: stderr '$(cat "$p.err")' != '$(cat "$p.error")'"
  fi
  count=$((count + 1))
done <"$tmp/index"
[[ $count -ge 40 ]] || fail "only $count cases found"
echo "kiln template: $count shared cases match"

# -m: a model with its own template (Qwen2) uses it
printf '[{"role": "user", "content": "Hi"}]' >"$tmp/m.json"
"$KILN_BIN" template -m "$KILN_SHARED/models/tiny-qwen2-Q4_K_M.gguf" --messages "$tmp/m.json" >"$tmp/q.out"
printf '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n' | cmp -s - "$tmp/q.out" \
  || fail "qwen2 model template: $(cat "$tmp/q.out")"
# -m: no template -> a logged built-in, BOS text from the model's vocabulary
"$KILN_BIN" template -m "$KILN_SHARED/models/stories260K.gguf" --messages "$tmp/m.json" >"$tmp/s.out" 2>"$tmp/s.err"
printf '<s>[INST] Hi [/INST]' | cmp -s - "$tmp/s.out" || fail "stories260K built-in: $(cat "$tmp/s.out")"
grep -q "built-in 'llama2'" "$tmp/s.err" || fail "built-in choice not logged: $(cat "$tmp/s.err")"
"$KILN_BIN" template -m "$KILN_SHARED/models/tiny-llama3-Q8_0.gguf" --messages "$tmp/m.json" --no-generation-prompt >"$tmp/l.out" 2>/dev/null
printf '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>' | cmp -s - "$tmp/l.out" || fail "llama3 built-in: $(cat "$tmp/l.out")"

# --builtin and --vars
printf '{"enable_thinking": false}' >"$tmp/vars.json"
"$KILN_BIN" template --builtin chatml --messages "$tmp/m.json" >"$tmp/c.out"
printf '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n' | cmp -s - "$tmp/c.out" || fail "--builtin chatml: $(cat "$tmp/c.out")"
"$KILN_BIN" template --builtin qwen3 --vars "$tmp/vars.json" --messages "$tmp/m.json" >"$tmp/q3.out"
printf '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' | cmp -s - "$tmp/q3.out" \
  || fail "--builtin qwen3 --vars: $(cat "$tmp/q3.out")"
# a gpt-oss file without a template whose vocabulary is Llama 3's gets llama3 (harmony's markers are no tokens there)
"$KILN_BIN" template -m "$KILN_SHARED/models/tiny-gptoss-MXFP4.gguf" --messages "$tmp/m.json" >/dev/null 2>"$tmp/g.err"
grep -q "built-in 'llama3' (vocabulary has <|start_header_id|>)" "$tmp/g.err" || fail "gpt-oss choice: $(cat "$tmp/g.err")"
printf '{%% if enable_thinking is defined and not enable_thinking %%}no-think{%% endif %%}' >"$tmp/v.jinja"
"$KILN_BIN" template --template "$tmp/v.jinja" --vars "$tmp/vars.json" --messages "$tmp/m.json" >"$tmp/v.out"
[[ "$(cat "$tmp/v.out")" == "no-think" ]] || fail "--vars: $(cat "$tmp/v.out")"

# error paths
printf 'ok\n{{ raise_exception("Bad role: " ~ messages[0].role) }}' >"$tmp/r.jinja"
set +e
"$KILN_BIN" template --template "$tmp/r.jinja" --messages "$tmp/m.json" >"$tmp/r.out" 2>"$tmp/r.err"; rc=$?
set -e
[[ $rc == 1 ]] || fail "raise_exception: exit $rc"
[[ "$(cat "$tmp/r.err")" == "Bad role: user" ]] || fail "raise_exception stderr: $(cat "$tmp/r.err")"
[[ ! -s "$tmp/r.out" ]] || fail "raise_exception: stdout not empty"
printf '{%% for x in y %%}' >"$tmp/bad.jinja"
set +e
"$KILN_BIN" template --template "$tmp/bad.jinja" --messages "$tmp/m.json" >/dev/null 2>"$tmp/b.err"; rc=$?
set -e
[[ $rc == 1 ]] || fail "syntax error: exit $rc"
grep -q "line 1" "$tmp/b.err" || fail "syntax error message: $(cat "$tmp/b.err")"
set +e
"$KILN_BIN" template --template "$tmp/r.jinja" --messages "$tmp/missing.json" >/dev/null 2>&1; rc=$?
[[ $rc == 1 ]] || fail "missing messages file: exit $rc"
"$KILN_BIN" template --messages "$tmp/m.json" >/dev/null 2>&1; rc=$?
[[ $rc == 2 ]] || fail "usage error: exit $rc"
"$KILN_BIN" template --help >/dev/null; rc=$?
[[ $rc == 0 ]] || fail "--help: exit $rc"
set -e
echo "kiln template: OK"
