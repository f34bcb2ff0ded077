#!/usr/bin/env bash
# test_tokenize.sh — `kiln tokenize` / `kiln detokenize` on vocab-only GGUF
# files (and gemma4's, inside a model file): suite strings tokenize (--raw)
# to llama.cpp's ids, text round-trips
# byte for byte through tokenize | detokenize (with and without --raw),
# without --raw BOS is added and special text is parsed, and bad input gives
# exit 1 with a message.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}"
T="$KILN_SHARED/tokenizers"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0

# 1. a suite line through the CLI (--raw = no BOS, no special parsing)
printf ' Hello World' >"$tmp/in"
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-bpe.gguf" --raw <"$tmp/in")
[ "$got" = "22691 4435" ] || fail "llama-bpe ' Hello World' -> '$got'"
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-spm.gguf" --raw <"$tmp/in")
[ "$got" = "29871 15043 2787" ] || fail "llama-spm ' Hello World' -> '$got'"
pass=$((pass + 1))

# 2. round trips, including multi-byte text and a trailing newline
printf 'Hello, world! 🦙 Äpfel 你好\n\tcode(x) { return 42; }\n' >"$tmp/text"
for v in llama-spm llama-bpe qwen2 gpt-2 deepseek-coder refact; do
  for mode in --raw ""; do
    # shellcheck disable=SC2086
    "$KILN_BIN" tokenize -m "$T/ggml-vocab-$v.gguf" $mode <"$tmp/text" >"$tmp/ids" || fail "tokenize $v $mode"
    "$KILN_BIN" detokenize -m "$T/ggml-vocab-$v.gguf" <"$tmp/ids" >"$tmp/back" || fail "detokenize $v $mode"
    cmp -s "$tmp/text" "$tmp/back" || fail "round trip $v '$mode': $(od -c "$tmp/back" | head -3)"
  done
done
pass=$((pass + 1))

# 3. without --raw: BOS per the model, special text parsed
printf 'Hi<|eot_id|>' >"$tmp/in"
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-bpe.gguf" <"$tmp/in")
[ "$got" = "128000 13347 128009" ] || fail "llama-bpe with specials -> '$got'"
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-bpe.gguf" --raw <"$tmp/in")
case " $got " in *" 128009 "* | *" 128000 "*) fail "--raw parsed special text: '$got'" ;; esac
printf 'Hi' | "$KILN_BIN" tokenize -m "$T/ggml-vocab-gpt-2.gguf" >"$tmp/o"
[ "$(cat "$tmp/o")" = "17250" ] || fail "gpt-2 must add no BOS: $(cat "$tmp/o")"
printf 'hello world' | "$KILN_BIN" tokenize -m "$T/ggml-vocab-bert-bge.gguf" >"$tmp/o"
[ "$(cat "$tmp/o")" = "101 7592 2088 102" ] || fail "bert [CLS]/[SEP]: $(cat "$tmp/o")"
pass=$((pass + 1))

# 4. empty input: a line with only BOS (SPM) or nothing
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-spm.gguf" </dev/null)
[ "$got" = "1" ] || fail "empty SPM input -> '$got'"
got=$("$KILN_BIN" tokenize -m "$T/ggml-vocab-llama-spm.gguf" --raw </dev/null)
[ -z "$got" ] || fail "empty --raw input -> '$got'"
pass=$((pass + 1))

# 5. gemma4 (its vocab lives in the tiny Gemma model file): a suite line,
# BOS always added, a round trip through <0xNN> byte fallback
G4="$KILN_SHARED/models/tiny-gemma3-Q8_0.gguf"
printf ' Hello, world!' >"$tmp/in"
got=$("$KILN_BIN" tokenize -m "$G4" --raw <"$tmp/in")
[ "$got" = "26352 236764 1902 236888" ] || fail "gemma4 ' Hello, world!' -> '$got'"
got=$("$KILN_BIN" tokenize -m "$G4" <"$tmp/in")
[ "$got" = "2 26352 236764 1902 236888" ] || fail "gemma4 must add BOS: '$got'"
printf 'Hi \xf4\x8f\xbf\xbd\n\n\tx' >>"$tmp/text"
"$KILN_BIN" tokenize -m "$G4" <"$tmp/text" >"$tmp/ids" || fail "tokenize gemma4"
"$KILN_BIN" detokenize -m "$G4" <"$tmp/ids" >"$tmp/back" || fail "detokenize gemma4"
cmp -s "$tmp/text" "$tmp/back" || fail "round trip gemma4: $(od -c "$tmp/back" | head -3)"
pass=$((pass + 1))

# 6. errors: bad ids, missing model, not a GGUF, usage
for ids in "1 32000" "12 abc" "-1" "99999999999999999999"; do
  set +e
  echo "$ids" | "$KILN_BIN" detokenize -m "$T/ggml-vocab-llama-spm.gguf" >/dev/null 2>"$tmp/err"; rc=$?
  set -e
  [ "$rc" -eq 1 ] || fail "detokenize '$ids': exit $rc (want 1)"
  grep -q "token" "$tmp/err" || fail "no message for '$ids': $(cat "$tmp/err")"
done
set +e
echo "1" | "$KILN_BIN" detokenize -m "$T/ggml-vocab-llama-spm.gguf.inp" >/dev/null 2>"$tmp/err"; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "non-GGUF model: exit $rc"
set +e
"$KILN_BIN" tokenize </dev/null >/dev/null 2>&1; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "missing -m: exit $rc"
"$KILN_BIN" tokenize --help | grep -q "usage: kiln tokenize" || fail "tokenize --help"
"$KILN_BIN" detokenize --help | grep -q "usage: kiln detokenize" || fail "detokenize --help"
pass=$((pass + 1))

echo "$pass passed, 0 failed"
