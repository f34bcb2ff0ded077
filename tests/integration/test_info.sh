#!/usr/bin/env bash
# test_info.sh — `kiln info --json` on the shared models must print pure JSON
# whose values match the files' known facts; hostile files give exit 1 and
# one stderr line naming the file.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}"
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# check FILE PYTHON_ASSERTIONS: runs kiln info --json FILE, parses stdout as
# JSON (it must be nothing else) into `j`, then evaluates the assertions.
check() {
  local f=$1 asserts=$2
  "$KILN_BIN" info --json "$f" >"$tmp/out.json" 2>"$tmp/err" || fail "kiln info --json $f exited $?: $(cat "$tmp/err")"
  $PY - "$tmp/out.json" "$f" <<PYEOF || fail "facts of $f"
import json, sys
j = json.load(open(sys.argv[1]))  # stdout must be exactly one JSON value
assert isinstance(j, dict), j
keys = ["architecture", "name", "parameters", "file_size", "tensor_types", "context_length",
        "embedding_length", "block_count", "head_count", "head_count_kv", "feed_forward_length",
        "rope_freq_base", "vocab_size", "tokenizer_model", "tokenizer_pre", "bos_id", "eos_id",
        "chat_template", "rope_scaling", "rope_scaling_factor", "rope_factors", "sliding_window", "experts"]
assert sorted(j) == sorted(keys), sorted(j)
import os
assert j["file_size"] == os.path.getsize(sys.argv[2]), j["file_size"]
$asserts
PYEOF
}

M=$KILN_SHARED/models
# the families' features (../shared/README.md, "Model families")
check "$M/tiny-gptoss-MXFP4.gguf" '
assert j["architecture"] == "gpt-oss" and j["sliding_window"] == 32
assert j["experts"] == {"count": 8, "used": 2, "feed_forward_length": 64}, j["experts"]
assert j["rope_scaling"] == "yarn" and j["rope_scaling_factor"] == 32 and j["rope_factors"] is None
assert j["tensor_types"].get("MXFP4") == 12, j["tensor_types"]'
check "$M/tiny-qwen3moe-Q8_0.gguf" '
assert j["architecture"] == "qwen3moe" and j["sliding_window"] is None
assert j["experts"] == {"count": 8, "used": 2, "feed_forward_length": 64}, j["experts"]'
check "$M/tiny-gemma3-Q8_0.gguf" '
assert j["architecture"] == "gemma3" and j["sliding_window"] == 32 and j["experts"] is None
assert j["rope_scaling"] == "linear" and j["rope_scaling_factor"] == 8'
check "$M/tiny-phi3-Q8_0.gguf" '
assert j["architecture"] == "phi3" and j["rope_factors"].startswith("long/short"), j["rope_factors"]
assert j["sliding_window"] is None'
check "$M/tiny-llama31-Q8_0.gguf" '
assert j["architecture"] == "llama" and j["rope_factors"].startswith("rope_freqs"), j["rope_factors"]
assert j["rope_scaling"] is None'
check "$M/stories260K.gguf" '
assert j["architecture"] == "llama" and j["name"] == "llama"
assert j["embedding_length"] == 64 and j["block_count"] == 5
assert j["head_count"] == 8 and j["head_count_kv"] == 4
assert j["feed_forward_length"] == 172 and j["context_length"] == 2048
assert j["vocab_size"] == 512 and j["tokenizer_model"] == "llama" and j["tokenizer_pre"] is None
assert j["bos_id"] == 1 and j["eos_id"] == 2 and j["chat_template"] is False
assert j["rope_freq_base"] is None
assert j["tensor_types"] == {"F32": 48}, j["tensor_types"]
assert j["parameters"] == 292800, j["parameters"]
'
check "$M/stories260K-Q8_0.gguf" '
assert j["tensor_types"] == {"F32": 11, "F16": 5, "Q8_0": 32}, j["tensor_types"]
assert j["parameters"] == 292800
'
check "$M/tiny-llama-Q4_K_M.gguf" '
assert j["architecture"] == "llama" and j["name"] == "tiny-llama"
assert j["embedding_length"] == 256 and j["block_count"] == 2 and j["head_count"] == 8 and j["head_count_kv"] == 4
assert j["feed_forward_length"] == 768 and j["vocab_size"] == 32000 and j["rope_freq_base"] == 10000.0
assert j["tensor_types"] == {"F32": 5, "Q4_K": 13, "Q6_K": 3}, j["tensor_types"]
assert j["tokenizer_pre"] == "default"
'
check "$M/tiny-qwen2-Q4_K_M.gguf" '
assert j["architecture"] == "qwen2" and j["embedding_length"] == 128
assert j["head_count"] == 4 and j["head_count_kv"] == 2 and j["rope_freq_base"] == 1000000.0
assert j["vocab_size"] == 151936 and j["tokenizer_model"] == "gpt2" and j["tokenizer_pre"] == "qwen2"
assert j["bos_id"] == 151643 and j["chat_template"] is True
assert "Q5_0" in j["tensor_types"] and "Q8_0" in j["tensor_types"], j["tensor_types"]
'
check "$M/quant-zoo.gguf" '
assert j["architecture"] == "quant-zoo" and j["vocab_size"] is None and j["block_count"] is None
assert j["tensor_types"] == {t: 1 for t in ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]}, j["tensor_types"]
assert j["parameters"] == 12 * 256 * 16
'
check "$M/tiny-bert-mean-f16.gguf" '
assert j["architecture"] == "bert" and j["vocab_size"] == 30522 and j["tokenizer_pre"] == "bert-bge"
'
# vocab-only files: no tensors, any architecture
check "$KILN_SHARED/tokenizers/ggml-vocab-refact.gguf" '
assert j["architecture"] == "refact" and j["parameters"] == 0 and j["tensor_types"] == {}
assert j["vocab_size"] == 49216 and j["bos_id"] == 0 and j["head_count_kv"] == 1
'
check "$KILN_SHARED/tokenizers/ggml-vocab-gpt-2.gguf" '
assert j["architecture"] == "gpt2" and j["head_count_kv"] is None and j["vocab_size"] == 50257
'

# the text form names every field
"$KILN_BIN" info "$M/tiny-llama3-Q8_0.gguf" >"$tmp/text"
for label in architecture name parameters "file size" "tensor types" "context length" "embedding length" \
    layers heads "kv heads" "ffn length" "rope theta" "vocab size" "tokenizer model" "tokenizer pre" \
    "bos id" "eos id" "chat template"; do
  grep -q "^$label:" "$tmp/text" || fail "text output lacks '$label'"
done
grep -q "^rope theta: *500000$" "$tmp/text" || fail "rope theta: $(grep rope "$tmp/text")"
grep -q "^vocab size: *128256$" "$tmp/text" || fail "vocab size"

# hostile files: exit 1, nothing on stdout, one stderr line naming file and problem
hostile() {
  local f=$1 want=$2 rc=0
  for flag in "" --json; do
    rc=0
    "$KILN_BIN" info $flag "$f" >"$tmp/hout" 2>"$tmp/herr" || rc=$?
    [ "$rc" = 1 ] || fail "$f: exit $rc, expected 1"
    [ ! -s "$tmp/hout" ] || fail "$f: stdout not empty: $(cat "$tmp/hout")"
    [ "$(wc -l <"$tmp/herr")" = 1 ] || fail "$f: expected one stderr line, got: $(cat "$tmp/herr")"
    grep -q "^kiln info: $f: .*$want" "$tmp/herr" || fail "$f: stderr '$(cat "$tmp/herr")' lacks '$want'"
  done
}
head -c 5000 "$M/stories260K.gguf" >"$tmp/truncated.gguf"
hostile "$tmp/truncated.gguf" "truncated\|bytes left"
head -c 1100000 "$M/stories260K.gguf" >"$tmp/cut-data.gguf"
hostile "$tmp/cut-data.gguf" "extends past end of file"
printf 'hello world, not gguf' >"$tmp/text.gguf"
hostile "$tmp/text.gguf" "bad magic"
: >"$tmp/empty.gguf"
hostile "$tmp/empty.gguf" "empty"
hostile "$tmp/does-not-exist.gguf" "cannot open"
$PY - "$tmp/bigcount.gguf" <<'PYEOF'
import struct, sys
open(sys.argv[1], "wb").write(b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0) + b"\0" * 64)
PYEOF
hostile "$tmp/bigcount.gguf" "tensor count 1152921504606846976"

# usage
"$KILN_BIN" info --help | grep -q "usage: kiln info" || fail "--help"
rc=0; "$KILN_BIN" info 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "no FILE: exit $rc, expected 2"
echo "test_info: ok"
