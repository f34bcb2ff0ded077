#!/usr/bin/env bash
# test_store.sh — `kiln pull`, `kiln ls` and `kiln rm` against a local mock
# hub (tests/integration/mock_hub.py; no internet). The hub serves the shared
# stories260K.gguf under several quantization file names of a fake repository,
# plus a corrupt file, a split model and a file in a subdirectory. Checks:
#  - pull of the default quant (Q4_K_M) and of a lower-case :q8_0 (hub URL from
#    $KILN_HUB_URL): the file NAME-QUANT.gguf has the source's bytes; the
#    requests were the API ones (info, tree, resolve + redirect);
#  - a second pull is "up to date" and downloads nothing;
#  - unknown quant lists the available ones; unknown repo is a 404 error;
#    a split model is refused; bad repo/quant names are refused before any
#    request, and nothing is written anywhere;
#  - an interrupted download keeps DIR/.NAME-QUANT.gguf.part, the next pull
#    sends "Range: bytes=N-" and completes with identical bytes; a hub that
#    ignores Range restarts the file and still gives identical bytes;
#  - a wrong sha256 fails and leaves neither the final file nor the .part;
#    a file that is not GGUF is deleted;
#  - kiln ls (table and --json) lists the models with quant, size, mtime;
#  - kiln serve --models DIR serves a pulled model (one completion);
#  - kiln rm removes NAME:QUANT and file-stem names, refuses bad names and
#    lists what exists for unknown ones.
set -euo pipefail
: "${KILN_BIN:?}" "${KILN_SHARED:?}" "${KILN_SRC:?}"
PY=/usr/bin/python3
SRC_MODEL="$KILN_SHARED/models/stories260K.gguf"
tmp=$(mktemp -d)
hub_pid=
cleanup() {
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

# ---- the hub's repositories
R="$tmp/hub/testorg/Stories-GGUF"
mkdir -p "$R" "$tmp/hub/testorg/Sub-GGUF/Q6_K"
for f in stories-Q4_K_M.gguf stories.Q8_0.gguf stories-f16.gguf stories-Q6_K.gguf stories-IQ4_XS.gguf \
         mmproj-stories-f16.gguf stories-Q2_K-00001-of-00002.gguf stories-Q2_K-00002-of-00002.gguf; do
  ln -s "$SRC_MODEL" "$R/$f"
done
head -c 70000 "$SRC_MODEL" > "$tmp/trunc.bin"
$PY -c 'import sys; d=bytearray(open(sys.argv[1],"rb").read()); d[0:4]=b"GGUX"; open(sys.argv[2],"wb").write(d)' \
  "$tmp/trunc.bin" "$R/stories-Q5_K_M.gguf"
echo "# fake" > "$R/README.md"
ln -s "$SRC_MODEL" "$tmp/hub/testorg/Sub-GGUF/Q6_K/sub-model-Q6_K.gguf"

$PY "$KILN_SRC/tests/integration/mock_hub.py" --root "$tmp/hub" > "$tmp/hub.out" 2> "$tmp/hub.err" &
hub_pid=$!
for _ in $(seq 1 200); do grep -q '^PORT ' "$tmp/hub.out" && break; sleep 0.05; done
port=$(awk '/^PORT /{print $2}' "$tmp/hub.out")
[ -n "$port" ] || fail "mock hub did not start: $(cat "$tmp/hub.err")"
HUB="http://127.0.0.1:$port"
M="$tmp/models"
export KILN_MODELS="$tmp/not-used" # --models wins over the environment

hub_log() { curl -sf "$HUB/_log"; }
control() { curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$HUB/_control" >/dev/null; }
nreq() { hub_log | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# Runs kiln with stdout in $tmp/out and stderr in $tmp/err; any sanitizer
# report fails the test (negative cases would otherwise hide a leak's exit code).
k() {
  local rc=0
  "$KILN_BIN" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if grep -q "Sanitizer\|runtime error:" "$tmp/err"; then
    echo "FAIL: sanitizer report from kiln $*" >&2; cat "$tmp/err" >&2; exit 1
  fi
  return $rc
}
pull() { k pull "$@" --models "$M"; }

# ---- help
for c in pull ls rm; do
  k "$c" --help && grep -q "usage: kiln $c" "$tmp/out" || fail "kiln $c --help"
done
ok "help"

# ---- default quant
pull testorg/Stories-GGUF --from "$HUB" -q || fail "pull default: $(cat "$tmp/err")"
[ "$(cat "$tmp/out")" = "$M/Stories-GGUF-Q4_K_M.gguf" ] || fail "pull printed '$(cat "$tmp/out")'"
cmp -s "$M/Stories-GGUF-Q4_K_M.gguf" "$SRC_MODEL" || fail "Q4_K_M bytes differ"
grep -q "sha256 verified" "$tmp/err" || fail "no sha256 verified: $(cat "$tmp/err")"
hub_log | $PY -c '
import json, sys
paths = [r["path"] for r in json.load(sys.stdin)]
want = ["/api/models/testorg/Stories-GGUF", "/api/models/testorg/Stories-GGUF/tree/main",
        "/testorg/Stories-GGUF/resolve/main/stories-Q4_K_M.gguf", "/_cdn/testorg/Stories-GGUF/stories-Q4_K_M.gguf"]
assert paths == want, paths
' || fail "unexpected hub requests"
ok "pull default quant Q4_K_M"

# ---- lower-case quant, '.' separator in the hub name, hub from the environment, progress line
n0=$(nreq)
KILN_HUB_URL="$HUB/" pull testorg/Stories-GGUF:q8_0 || fail "pull q8_0: $(cat "$tmp/err")"
cmp -s "$M/Stories-GGUF-Q8_0.gguf" "$SRC_MODEL" || fail "Q8_0 bytes differ"
grep -q "pull Stories-GGUF-Q8_0 \[" "$tmp/err" || fail "no progress line: $(cat "$tmp/err")"
[ "$(nreq)" -gt "$n0" ] || fail "KILN_HUB_URL not used"
ok "pull :q8_0 via KILN_HUB_URL (stories.Q8_0.gguf)"

# ---- F16 picks stories-f16.gguf, not the mmproj file
pull testorg/Stories-GGUF:F16 --from "$HUB" -q || fail "pull F16: $(cat "$tmp/err")"
grep -q "(stories-f16.gguf" "$tmp/err" || fail "F16 picked another file: $(cat "$tmp/err")"
ok "pull F16 skips mmproj"

# ---- up to date
n0=$(nreq)
pull testorg/Stories-GGUF --from "$HUB" -q || fail "second pull: $(cat "$tmp/err")"
grep -q "up to date" "$tmp/err" || fail "not up to date: $(cat "$tmp/err")"
hub_log | $PY -c "
import json, sys
new = json.load(sys.stdin)[$n0:]
assert not any('/_cdn/' in r['path'] or '/resolve/' in r['path'] for r in new), new
" || fail "an up-to-date pull downloaded"
ok "second pull is up to date"

# ---- unknown quant, unknown repo, split model
if pull testorg/Stories-GGUF:Q3_K_S --from "$HUB" -q; then fail "unknown quant accepted"; fi
for q in Q4_K_M Q8_0 F16 Q6_K IQ4_XS Q5_K_M; do
  grep -q "available:.*\b$q\b" "$tmp/err" || fail "available list lacks $q: $(cat "$tmp/err")"
done
if grep -q "Q2_K\|mmproj" "$tmp/err"; then fail "split/mmproj listed: $(cat "$tmp/err")"; fi
[ ! -e "$M/Stories-GGUF-Q3_K_S.gguf" ] || fail "file for unknown quant"
ok "unknown quant lists the available ones"
if pull testorg/NoSuchRepo --from "$HUB" -q; then fail "unknown repo accepted"; fi
grep -q "unknown repository testorg/NoSuchRepo.*404" "$tmp/err" || fail "unknown repo message: $(cat "$tmp/err")"
ok "unknown repo"
if pull testorg/Stories-GGUF:Q2_K --from "$HUB" -q; then fail "split model accepted"; fi
grep -q "split" "$tmp/err" || fail "split message: $(cat "$tmp/err")"
ok "split model refused"

# ---- network error
if pull testorg/Stories-GGUF --from "http://127.0.0.1:1" -q; then
  fail "unreachable hub accepted"
fi
grep -q "cannot fetch http://127.0.0.1:1/api/models" "$tmp/err" || fail "network error message: $(cat "$tmp/err")"
ok "unreachable hub"

# ---- bad names: refused before any request, nothing written
n0=$(nreq)
touch "$tmp/mark"
sleep 0.01
for bad in "../etc" "/abs/x" "a/b/c" "a/.." "../x:Q4_K_M" "owner/na me" "testorg/Stories-GGUF:../../x" \
           "testorg/Stories-GGUF:Q4/K" "testorg/.hidden" "testorg/a..b" "noslash" "" "testorg/Stories-GGUF:" \
           "testorg/Stories-GGUF:.Q4"; do
  rc=0; pull "$bad" --from "$HUB" -q || rc=$?
  [ "$rc" = 2 ] || fail "bad name '$bad' exit $rc"
  grep -q "bad \|empty" "$tmp/err" || fail "bad name '$bad' message: $(cat "$tmp/err")"
done
if pull testorg/Stories-GGUF --from "ftp://127.0.0.1:$port" -q; then
  fail "ftp hub accepted"
fi
grep -q "bad hub URL" "$tmp/err" || fail "bad hub message: $(cat "$tmp/err")"
[ "$(nreq)" = "$n0" ] || fail "a bad name reached the hub"
new=$(find "$tmp" -newer "$tmp/mark" ! -name out ! -name err ! -path "$tmp")
[ -z "$new" ] || fail "bad names wrote: $new"
ok "bad names refused"

# ---- interrupted download, then resume with Range
control '{"cut_after": 300000}'
if pull testorg/Stories-GGUF:Q6_K --from "$HUB" -q; then fail "cut download succeeded"; fi
grep -q "interrupted after 300000 of 1185376 bytes.*run the same kiln pull again" "$tmp/err" \
  || fail "interrupted message: $(cat "$tmp/err")"
part="$M/.Stories-GGUF-Q6_K.gguf.part"
[ "$(stat -c %s "$part")" = 300000 ] || fail ".part size $(stat -c %s "$part" 2>&1)"
[ ! -e "$M/Stories-GGUF-Q6_K.gguf" ] || fail "final file after an interrupted download"
n0=$(nreq)
pull testorg/Stories-GGUF:Q6_K --from "$HUB" -q || fail "resume: $(cat "$tmp/err")"
cmp -s "$M/Stories-GGUF-Q6_K.gguf" "$SRC_MODEL" || fail "resumed bytes differ"
[ ! -e "$part" ] || fail ".part left after resume"
grep -q "resumed" "$tmp/err" || fail "no resumed note: $(cat "$tmp/err")"
hub_log | $PY -c "
import json, sys
new = [r for r in json.load(sys.stdin)[$n0:] if r['path'].startswith('/_cdn/')]
assert len(new) == 1 and new[0]['range'] == 'bytes=300000-', new
" || fail "resume did not send Range: bytes=300000-"
ok "interrupted download resumes with Range"

# ---- resume against a hub that ignores Range
rm -f "$M/Stories-GGUF-Q6_K.gguf"
control '{"cut_after": 500000}'
if pull testorg/Stories-GGUF:Q6_K --from "$HUB" -q; then fail "cut download succeeded"; fi
control '{"no_range": true}'
pull testorg/Stories-GGUF:Q6_K --from "$HUB" -q || fail "restart: $(cat "$tmp/err")"
control '{"no_range": false}'
cmp -s "$M/Stories-GGUF-Q6_K.gguf" "$SRC_MODEL" || fail "restarted bytes differ"
grep -q "ignored the Range" "$tmp/err" || fail "no restart warning: $(cat "$tmp/err")"
ok "hub without Range support restarts the file"

# ---- sha256 mismatch
control '{"bad_sha": true}'
if pull testorg/Stories-GGUF:IQ4_XS --from "$HUB" -q; then fail "bad sha256 accepted"; fi
control '{"bad_sha": false}'
grep -q "sha256 mismatch.*deleted" "$tmp/err" || fail "sha message: $(cat "$tmp/err")"
[ ! -e "$M/Stories-GGUF-IQ4_XS.gguf" ] || fail "final file after a sha256 mismatch"
[ ! -e "$M/.Stories-GGUF-IQ4_XS.gguf.part" ] || fail ".part after a sha256 mismatch"
ok "sha256 mismatch deletes the download"

# ---- not a GGUF file
if pull testorg/Stories-GGUF:Q5_K_M --from "$HUB" -q; then fail "corrupt GGUF accepted"; fi
grep -q "not a valid GGUF file.*deleted" "$tmp/err" || fail "corrupt message: $(cat "$tmp/err")"
[ ! -e "$M/Stories-GGUF-Q5_K_M.gguf" ] && [ ! -e "$M/.Stories-GGUF-Q5_K_M.gguf.part" ] || fail "corrupt file kept"
ok "corrupt GGUF deleted"

# ---- a file in a subdirectory of the repo (tree/main/DIR)
pull testorg/Sub-GGUF:Q6_K --from "$HUB" -q || fail "subdir pull: $(cat "$tmp/err")"
cmp -s "$M/Sub-GGUF-Q6_K.gguf" "$SRC_MODEL" || fail "subdir bytes differ"
grep -q "sha256 verified" "$tmp/err" || fail "subdir not verified: $(cat "$tmp/err")"
ok "file in a repo subdirectory"

# ---- kiln ls
cp "$SRC_MODEL" "$M/plain.gguf" # no quant suffix: label from the GGUF (general.file_type or tensor types)
touch "$M/.hidden.gguf" "$M/notes.txt"
k ls --models "$M" || fail "ls: $(cat "$tmp/err")"
head -1 "$tmp/out" | grep -q "NAME.*QUANT.*SIZE.*MODIFIED" || fail "ls header: $(cat "$tmp/out")"
grep -q "^Stories-GGUF:Q4_K_M  *Q4_K_M  *1.2 MB" "$tmp/out" || fail "ls row: $(cat "$tmp/out")"
[ "$(wc -l < "$tmp/out")" = 7 ] || fail "ls rows: $(cat "$tmp/out")"
k ls --models "$M" --json && cp "$tmp/out" "$tmp/ls.json" || fail "ls --json"
$PY - "$tmp/ls.json" "$M" <<'PYEOF' || fail "ls --json content: $(cat "$tmp/ls.json")"
import json, os, sys
j = json.load(open(sys.argv[1]))
m = {e["name"]: e for e in j["models"]}
assert sorted(m) == ["Stories-GGUF:F16", "Stories-GGUF:Q4_K_M", "Stories-GGUF:Q6_K", "Stories-GGUF:Q8_0",
                     "Sub-GGUF:Q6_K", "plain"], sorted(m)
for e in j["models"]:
    st = os.stat(os.path.join(sys.argv[2], e["file"]))
    assert e["size"] == st.st_size and e["mtime"] == int(st.st_mtime), e
q = m["Stories-GGUF:Q4_K_M"]
assert q["model"] == "Stories-GGUF" and q["quantization"] == "Q4_K_M" and q["quantization_source"] == "name", q
assert m["plain"]["quantization_source"] == "gguf" and m["plain"]["quantization"] == "F32", m["plain"]
assert m["plain"]["modified"].endswith("Z"), m["plain"]
PYEOF
if k ls --models "$tmp/none"; then fail "ls of a missing dir"; fi
grep -q "cannot read model directory" "$tmp/err" || fail "ls missing dir message"
ok "kiln ls (table and --json)"

# ---- kiln serve serves a pulled model
$PY - "$M" <<'PYEOF' || fail "serve a pulled model"
import os, sys
sys.path.insert(0, os.path.join(os.environ["KILN_SRC"], "tests", "integration"))
import kiln_server as ks
srv = ks.Server(["--models", sys.argv[1], "-c", "256", "--threads", "1"])
try:
    ids = [m["id"] for m in srv.get("/v1/models").json()["data"]]
    cands = [i for i in ids if "Stories-GGUF" in i]
    name = ([i for i in cands if "Q4_K_M" in i.upper()] or cands)[0]
    r = srv.post_json("/v1/completions", {"model": name, "prompt": "Once upon a time", "max_tokens": 8,
                                          "temperature": 0})
    assert r["choices"][0]["text"], r
    assert r["usage"]["completion_tokens"] > 0, r
    print("served %s: %r" % (name, r["choices"][0]["text"]))
finally:
    srv.stop()
reports = ks.sanitizer_reports(srv.log())
assert not reports, reports
PYEOF
ok "kiln serve --models serves the pulled model"

# ---- kiln rm
for bad in "../hub" "/etc/passwd" ".hidden" "a/b" "x:../y"; do
  if k rm "$bad" --models "$M"; then fail "rm '$bad' accepted"; fi
  grep -q "bad model name" "$tmp/err" || fail "rm '$bad' message: $(cat "$tmp/err")"
done
[ -e "$M/.hidden.gguf" ] || fail "rm removed a hidden file"
if k rm nope --models "$M"; then fail "rm of an unknown name"; fi
grep -q "no model 'nope'; the models are: .*Stories-GGUF:Q4_K_M" "$tmp/err" || fail "rm unknown: $(cat "$tmp/err")"
if k rm Stories-GGUF:q8_0 nope --models "$M"; then fail "rm with one unknown name"; fi
[ -e "$M/Stories-GGUF-Q8_0.gguf" ] || fail "rm removed a file although a name was unknown"
k rm Stories-GGUF:q4_k_m --models "$M" || fail "rm: $(cat "$tmp/err")"
[ ! -e "$M/Stories-GGUF-Q4_K_M.gguf" ] || fail "rm NAME:QUANT left the file"
k rm Stories-GGUF-Q8_0.gguf plain --models "$M" || fail "rm stems: $(cat "$tmp/err")"
[ ! -e "$M/Stories-GGUF-Q8_0.gguf" ] && [ ! -e "$M/plain.gguf" ] || fail "rm by file name"
KILN_MODELS="$M" k rm Sub-GGUF:Q6_K || fail "rm via KILN_MODELS: $(cat "$tmp/err")"
[ ! -e "$M/Sub-GGUF-Q6_K.gguf" ] || fail "rm via KILN_MODELS"
[ -e "$SRC_MODEL" ] || fail "the shared model is gone"
ok "kiln rm"
echo "PASS"
