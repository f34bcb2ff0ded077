#!/usr/bin/env bash
# test_cache_cli.sh — `kiln cache stats|clear` without a store: the errors a
# user meets first, and that a read-only `stats` never creates anything.
#  - stats/clear on a missing or empty directory: exit 1, one message naming
#    the path, and no file or directory created;
#  - the default directory: $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln;
#  - a data.mdb that is not LMDB, and a directory of other files: refused;
#  - --type other than response|embedding|all, --model NAME:QUANT: exit 1;
#  - --help on each subcommand (exit 0); unknown flags/subcommands (exit 2).
# Checks on a populated store run in the server's cache integration test
# (the server writes the entries); the L2 code itself is tested by
# tests/unit/cache/test_l2.c.
set -euo pipefail
: "${KILN_BIN:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect CODE STDERR_SUBSTRING CMD...: runs CMD, checks its exit status and
# that stderr holds the substring.
expect() {
  local code=$1 want=$2; shift 2
  local got=0
  "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
  [ "$got" = "$code" ] || fail "$* exited $got, wanted $code: $(cat "$tmp/err")"
  grep -qF -- "$want" "$tmp/err" || fail "$*: stderr lacks '$want': $(cat "$tmp/err")"
}

K=$KILN_BIN
# missing directory: named, and not created
expect 1 "no kiln cache at $tmp/none" "$K" cache stats --cache-dir "$tmp/none"
[ ! -e "$tmp/none" ] || fail "stats created $tmp/none"
expect 1 "no kiln cache at $tmp/none" "$K" cache clear --cache-dir "$tmp/none"
[ ! -e "$tmp/none" ] || fail "clear created $tmp/none"
# empty directory: stays empty
mkdir "$tmp/empty"
expect 1 "no kiln cache at $tmp/empty" "$K" cache stats --cache-dir "$tmp/empty" --json
[ -z "$(ls -A "$tmp/empty")" ] || fail "stats wrote into an empty dir: $(ls -A "$tmp/empty")"
[ ! -s "$tmp/out" ] || fail "stats --json printed something on failure: $(cat "$tmp/out")"
expect 1 "no kiln cache at $tmp/empty" "$K" cache clear --cache-dir "$tmp/empty" --type embedding
[ -z "$(ls -A "$tmp/empty")" ] || fail "clear wrote into an empty dir"

# default directory
expect 1 "$tmp/xdg/kiln" env XDG_CACHE_HOME="$tmp/xdg" HOME="$tmp/home" "$K" cache stats
expect 1 "$tmp/home/.cache/kiln" env -u XDG_CACHE_HOME HOME="$tmp/home" "$K" cache stats
expect 1 "$tmp/home/.cache/kiln" env XDG_CACHE_HOME=relative HOME="$tmp/home" "$K" cache clear
[ ! -e "$tmp/xdg" ] && [ ! -e "$tmp/home" ] || fail "the default directory was created"

# not a kiln cache
mkdir "$tmp/garbage"
head -c 100000 /dev/zero | tr '\0' 'x' >"$tmp/garbage/data.mdb"
expect 1 "not a kiln cache" "$K" cache stats --cache-dir "$tmp/garbage"
expect 1 "not a kiln cache" "$K" cache clear --cache-dir "$tmp/garbage"
cmp -s <(head -c 100000 /dev/zero | tr '\0' 'x') "$tmp/garbage/data.mdb" || fail "a foreign data.mdb was modified"
mkdir "$tmp/other"
echo mine >"$tmp/other/notes.txt"
expect 1 "$tmp/other" "$K" cache stats --cache-dir "$tmp/other"
[ "$(ls -A "$tmp/other")" = notes.txt ] || fail "stats wrote into a foreign dir"

# bad values: exit 1 before touching anything
expect 1 "--type must be response, embedding or all, not 'everything'" \
  "$K" cache clear --cache-dir "$tmp/empty" --type everything
expect 1 "file id" "$K" cache clear --cache-dir "$tmp/empty" --model tiny-llama:Q4_K_M

# usage
"$K" cache stats --help >"$tmp/out" || fail "cache stats --help exited $?"
grep -q "usage: kiln cache stats" "$tmp/out" || fail "stats --help: $(cat "$tmp/out")"
"$K" cache clear --help >"$tmp/out" || fail "cache clear --help exited $?"
grep -q -- "--model ID" "$tmp/out" || fail "clear --help: $(cat "$tmp/out")"
expect 2 "unknown subcommand 'wipe'" "$K" cache wipe
expect 2 "unknown argument '--json'" "$K" cache clear --json
expect 2 "needs a value" "$K" cache stats --cache-dir
expect 2 "usage" "$K" cache
echo "test_cache_cli: ok"
