#!/usr/bin/env bash
# test_quantize.sh — `kiln quantize` from the command line: an F16 model from
# tools/synth_gguf.py quantized to Q4_K_M must be readable by an independent
# GGUF reader (shared/tools/ggufio.py) with llama.cpp's Q4_K_M type mix and all
# metadata; bad TYPE gives exit 2 with the list of types; unreadable input
# gives exit 1 with one stderr line naming the file. (The numeric checks of
# the quantized tensors are in tests/unit/gguf/test_quantize.c.)
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}"
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

$PY "$KILN_SHARED/tools/synth_gguf.py" --vocab "$KILN_SHARED/tokenizers/ggml-vocab-llama-spm.gguf" \
  --dim 256 --layers 2 --heads 4 --kv-heads 2 --ffn 512 --seed 1 --f16 --out "$tmp/m.gguf" >/dev/null
"$KILN_BIN" quantize "$tmp/m.gguf" "$tmp/q.gguf" Q4_K_M --threads 2 >"$tmp/out" 2>"$tmp/err" \
  || fail "kiln quantize exited $?: $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "stdout not empty"
grep -q "quantize \[" "$tmp/err" || fail "no progress line"
grep -q "MiB -> .* MiB" "$tmp/err" || fail "no size summary: $(cat "$tmp/err")"
[ ! -e "$tmp/q.gguf.part" ] || fail "temporary file left behind"

$PY - "$KILN_SHARED/tools" "$tmp/m.gguf" "$tmp/q.gguf" <<'PYEOF' || fail "independent reader check"
import sys
sys.path.insert(0, sys.argv[1])
import ggufio
a, b = ggufio.Reader(sys.argv[2]), ggufio.Reader(sys.argv[3])
assert b.b[4] == 3  # GGUF v3
for k, v in a.kv.items():
    if k in ("general.file_type", "general.quantization_version"):
        continue
    assert b.kv.get(k) == v, k
assert b.kv["general.file_type"][1] == 15, b.kv["general.file_type"]
names_a = [(t[0], t[1]) for t in a.tensors]
names_b = [(t[0], t[1]) for t in b.tensors]
assert names_a == names_b
Q4_K, Q6_K, F32 = 12, 14, 0
for name, dims, ty, off in b.tensors:
    assert off % 32 == 0, (name, off)
    if len(dims) == 1:
        want = F32
    elif name in ("output.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"):
        want = Q6_K
    else:
        want = Q4_K
    assert ty == want, (name, ty, want)
# the last tensor's data ends inside the file
name, dims, ty, off = b.tensors[-1]
n = 1
for d in dims: n *= d
size = {Q4_K: 144, Q6_K: 210}.get(ty, 4) * (n // 256 if ty in (Q4_K, Q6_K) else n)
hdr_end = b.o + (-b.o) % 32
assert hdr_end + off + size <= len(b.b)
PYEOF

"$KILN_BIN" info --json "$tmp/q.gguf" | $PY -c '
import json, sys
j = json.load(sys.stdin)
assert j["tensor_types"] == {"F32": 5, "Q4_K": 13, "Q6_K": 3}, j["tensor_types"]
assert j["vocab_size"] == 32000 and j["embedding_length"] == 256
' || fail "kiln info on the output"

# bad input
rc=0; "$KILN_BIN" quantize "$tmp/m.gguf" "$tmp/x.gguf" Q4_K_XL 2>"$tmp/err" || rc=$?
[ "$rc" = 2 ] || fail "unknown TYPE: exit $rc, expected 2"
grep -q "Q4_K_XL" "$tmp/err" && grep -q "Q8_0, Q4_0" "$tmp/err" && grep -q "Q5_K_M, Q6_K" "$tmp/err" \
  || fail "unknown TYPE message: $(cat "$tmp/err")"
[ ! -e "$tmp/x.gguf" ] || fail "output written for a bad TYPE"
for bad in "$tmp/nope.gguf" "$tmp"; do
  rc=0; "$KILN_BIN" quantize "$bad" "$tmp/x.gguf" Q8_0 2>"$tmp/err" || rc=$?
  [ "$rc" = 1 ] || fail "unreadable input $bad: exit $rc, expected 1"
  [ "$(wc -l <"$tmp/err")" = 1 ] || fail "expected one stderr line: $(cat "$tmp/err")"
  grep -q "^kiln quantize: $bad: " "$tmp/err" || fail "message does not name $bad: $(cat "$tmp/err")"
done
head -c 3000 "$tmp/m.gguf" >"$tmp/cut.gguf"
rc=0; "$KILN_BIN" quantize "$tmp/cut.gguf" "$tmp/x.gguf" Q8_0 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] && grep -q "cut.gguf: " "$tmp/err" || fail "truncated input: exit $rc: $(cat "$tmp/err")"
[ ! -e "$tmp/x.gguf" ] && [ ! -e "$tmp/x.gguf.part" ] || fail "output left behind after a failure"
rc=0; "$KILN_BIN" quantize "$tmp/m.gguf" "$tmp/no-such-dir/x.gguf" Q8_0 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] || fail "unwritable output: exit $rc"
rc=0; "$KILN_BIN" quantize "$tmp/m.gguf" "$tmp/x.gguf" Q8_0 --threads 0 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--threads 0: exit $rc, expected 2"
"$KILN_BIN" quantize --help | grep -q "usage: kiln quantize" || fail "--help"
echo "test_quantize: ok"
