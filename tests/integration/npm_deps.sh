#!/usr/bin/env bash
# npm_deps.sh DIR — installs the npm packages pinned by DIR/package.json and
# DIR/package-lock.json with `npm ci`, OUTSIDE the source tree, under
# ${TMPDIR:-/tmp}/kiln-npm-UID/<hash of package.json + lockfile>, reuses that
# install while the lockfile is unchanged, and prints the node_modules path.
# Needs Node.js >= 20 and a reachable npm registry on the first run; without
# them it fails (exit 1, the reason on stderr): tests that use it fail, they
# do not skip. Used by the SDK tests (test_sdk_*.py through kiln_server.py's
# npm_modules()).
set -uo pipefail
E2E=${1:?usage: npm_deps.sh DIR}
fail() { echo "npm_deps: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node not found: the SDK tests need Node.js >= 20"
command -v npm >/dev/null || fail "npm not found"
major=$(node -p 'process.versions.node.split(".")[0]') || fail "node does not run"
[ "$major" -ge 20 ] || fail "Node.js $(node --version) is too old: need >= 20"
[ -f "$E2E/package.json" ] && [ -f "$E2E/package-lock.json" ] || fail "missing $E2E/{package.json,package-lock.json}"
hash=$(cat "$E2E/package.json" "$E2E/package-lock.json" | sha256sum | cut -c1-16)
base=${TMPDIR:-/tmp}/kiln-npm-$(id -u)
deps=$base/$hash
if [ ! -f "$deps/.installed" ]; then
  mkdir -p "$base" || fail "cannot create $base"
  stage=$(mktemp -d "$base/stage.XXXXXX") || fail "mktemp in $base"
  cp "$E2E/package.json" "$E2E/package-lock.json" "$stage/"
  echo "npm_deps: installing $(basename "$E2E")'s pinned packages into $deps (npm ci) ..." >&2
  if ! (cd "$stage" && npm ci --no-audit --no-fund --fetch-retries=2 --fetch-retry-maxtimeout=20000) >"$stage.log" 2>&1; then
    cat "$stage.log" >&2
    rm -rf "$stage" "$stage.log"
    fail "npm ci failed (is the npm registry reachable? registry: $(npm config get registry 2>/dev/null))"
  fi
  rm -f "$stage.log"
  touch "$stage/.installed"
  # publish atomically; if a concurrent run got there first, keep theirs
  mv -T "$stage" "$deps" 2>/dev/null || rm -rf "$stage"
  [ -f "$deps/.installed" ] || fail "install into $deps did not complete"
fi
echo "$deps/node_modules"
