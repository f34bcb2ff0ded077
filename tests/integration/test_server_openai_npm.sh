#!/usr/bin/env bash
# test_server_openai_npm.sh — end-to-end test of `kiln serve` with the official
# `openai` npm package (pinned in tests/e2e/openai/package-lock.json).
#
# Installs the package with `npm ci` OUTSIDE the source tree, under
# ${TMPDIR:-/tmp}/kiln-e2e-openai-UID/<hash of package.json + lockfile>, and
# reuses that install while the lockfile is unchanged. Then starts
# `kiln serve -m stories260K.gguf --port 0 --api-key KEY`, waits for /health,
# runs tests/e2e/openai/test.mjs (chat, streaming, completions, embeddings,
# auth and not-found errors), stops the server with SIGTERM and requires exit 0.
# Needs Node.js >= 20 and a reachable npm registry (first run only): without
# them the test FAILS, it does not skip.
set -uo pipefail
K=${KILN_BIN:?KILN_BIN must name the kiln binary}
S=${KILN_SHARED:?KILN_SHARED must name the shared data directory}
SRC=${KILN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
E2E=$SRC/tests/e2e/openai
MODEL=$S/models/stories260K.gguf
PROMPT="Once upon a time"
N=16

fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-openai-npm.XXXXXX") || fail "mktemp"
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
show_log() { echo "--- kiln serve stderr (last 40 lines) ---" >&2; tail -n 40 "$tmp/serve.log" >&2; }

# ---- Node.js and the pinned openai package
command -v node >/dev/null || fail "node not found: this test needs Node.js >= 20"
command -v npm >/dev/null || fail "npm not found: this test needs npm"
major=$(node -p 'process.versions.node.split(".")[0]') || fail "node does not run"
[ "$major" -ge 20 ] || fail "Node.js $(node --version) is too old: need >= 20"
[ -f "$E2E/package.json" ] && [ -f "$E2E/package-lock.json" ] && [ -f "$E2E/test.mjs" ] \
  || fail "missing $E2E/{package.json,package-lock.json,test.mjs}"

hash=$(cat "$E2E/package.json" "$E2E/package-lock.json" | sha256sum | cut -c1-16)
base=${TMPDIR:-/tmp}/kiln-e2e-openai-$(id -u)
deps=$base/$hash
if [ ! -f "$deps/.installed" ]; then
  mkdir -p "$base" || fail "cannot create $base"
  stage=$(mktemp -d "$base/stage.XXXXXX") || fail "mktemp in $base"
  cp "$E2E/package.json" "$E2E/package-lock.json" "$stage/"
  echo "installing the openai npm package into $deps (npm ci) ..."
  if ! (cd "$stage" && npm ci --no-audit --no-fund --fetch-retries=2 --fetch-retry-maxtimeout=20000) \
       >"$tmp/npm.log" 2>&1; then
    cat "$tmp/npm.log" >&2
    rm -rf "$stage"
    fail "npm ci failed (is the npm registry reachable? registry: $(npm config get registry 2>/dev/null))"
  fi
  touch "$stage/.installed"
  # Publish atomically; if a concurrent run got there first, keep theirs.
  mv -T "$stage" "$deps" 2>/dev/null || rm -rf "$stage"
  [ -f "$deps/.installed" ] || fail "install into $deps did not complete"
fi
# ESM resolves packages from the importing file's directory, so the test runs
# from a copy next to a node_modules link.
mkdir -p "$tmp/run" && cp "$E2E/test.mjs" "$tmp/run/" && ln -s "$deps/node_modules" "$tmp/run/node_modules" \
  || fail "cannot set up $tmp/run"

# ---- reference text from kiln run (temperature 0 through the API must equal it)
"$K" run -m "$MODEL" -p "$PROMPT" -n "$N" --temp 0 -t 1 >"$tmp/run.txt" 2>"$tmp/run.err" \
  || { cat "$tmp/run.err" >&2; fail "kiln run for the reference text failed"; }

# ---- start the server
key="kiln-e2e-$RANDOM$RANDOM"
"$K" serve -m "$MODEL" --host 127.0.0.1 --port 0 -t 1 -c 256 --api-key "$key" --cache-dir "$tmp/cache" --response-cache=false --embedding-cache=false 2>"$tmp/serve.log" >/dev/null &
pid=$!
port=
for _ in $(seq 300); do   # 30 s
  port=$(grep -oE 'listening on http://[^ /]+:[0-9]+' "$tmp/serve.log" | head -n 1 | sed -E 's#.*:##')
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { show_log; fail "kiln serve exited before listening"; }
  sleep 0.1
done
[[ "$port" =~ ^[0-9]+$ ]] || { show_log; fail "no 'listening on http://HOST:PORT' line within 30 s (got port '$port')"; }
url=http://127.0.0.1:$port
code=
for _ in $(seq 300); do   # 30 s
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/health")
  [ "$code" = 200 ] && break
  kill -0 "$pid" 2>/dev/null || { show_log; fail "kiln serve exited while loading"; }
  sleep 0.1
done
[ "$code" = 200 ] || { show_log; fail "GET /health did not answer 200 within 30 s (last: $code)"; }
echo "kiln serve is up at $url (pid $pid)"

# ---- the client test
(cd "$tmp/run" && KILN_E2E_MODEL=stories260K KILN_E2E_PROMPT="$PROMPT" KILN_E2E_N=$N \
  KILN_E2E_RUN_TEXT="$tmp/run.txt" timeout 300 node test.mjs "$url/v1" "$key")
node_rc=$?
[ $node_rc -eq 0 ] || echo "FAIL: test.mjs exited $node_rc" >&2

# ---- graceful shutdown
kill -TERM "$pid"
for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done   # 40 s > default grace
if kill -0 "$pid" 2>/dev/null; then
  show_log
  fail "kiln serve still running 40 s after SIGTERM"
fi
wait "$pid"; rc=$?
pid=
if [ $rc -ne 0 ]; then
  show_log
  fail "kiln serve exited $rc after SIGTERM, expected 0"
fi
echo "ok   kiln serve exited 0 after SIGTERM"
[ $node_rc -eq 0 ] || { show_log; exit 1; }
echo "PASS"
