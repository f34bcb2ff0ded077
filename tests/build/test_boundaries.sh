#!/usr/bin/env bash
# test_boundaries.sh — the module boundaries are enforced by the build.
#
# Every module under src/ is compiled with a view of the public headers it
# may use (build/include-view/<module>/kiln/, made by CMakeLists.txt from
# its KILN_PUB_/KILN_PRIV_ tables; build/module-views.txt lists them). This
# test shows that the view is the wall:
#  1. for every pair of modules (m, d), a file of m that includes
#     "kiln/d.h" compiles exactly when d is in m's view: an allowed include
#     compiles (so the check can fail), a forbidden one is an error;
#  2. DESIGN.md's never-edges hold in the table: kernels (tensor) know no
#     architecture, the model knows no tokenizer or HTTP, the engine no
#     HTTP or dialect, the server neither GGUF nor the model, the cache no
#     model, the chat syntax no model, tokenizer or HTTP, and bench is only
#     an HTTP client;
#  3. one include style: no source includes a path with "../", and every
#     "kiln/X.h" a module's file names is in its view (the compiler checks
#     it too, this says where).
# Usage: test_boundaries.sh CC VIEW_DIR MODULE_VIEWS_TXT SOURCE_DIR
set -uo pipefail
CC=$1 VIEW=$2 TABLE=$3 SRC=$4
fails=0 total=0
check() { # check NAME CONDITION...
  local name=$1; shift
  total=$((total + 1))
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
declare -A VIS
modules=()
while read -r m vis; do
  [ -n "$m" ] || continue
  modules+=("$m")
  VIS[$m]=",$vis,"
done <"$TABLE"
check "the module table lists the modules" test "${#modules[@]}" -ge 10

compiles() { # compiles MODULE HEADER
  printf '#include "kiln/%s.h"\nint kiln_probe;\n' "$2" >"$tmp/probe.c"
  "$CC" -std=c11 -D_GNU_SOURCE -fsyntax-only -I "$VIEW/$1" -I "$SRC/src/$1" "$tmp/probe.c" 2>"$tmp/err"
}

# 1. every pair, both ways
for m in "${modules[@]}"; do
  allowed=() refused=()
  for d in "${modules[@]}"; do
    if [[ ${VIS[$m]} == *",$d,"* ]]; then
      compiles "$m" "$d" && allowed+=("$d") || { echo "   $m cannot include kiln/$d.h:"; head -3 "$tmp/err"; fails=$((fails + 1)); }
    else
      if compiles "$m" "$d"; then echo "   $m can include kiln/$d.h, which it may not"; fails=$((fails + 1)); else refused+=("$d"); fi
    fi
    total=$((total + 1))
  done
  echo "ok   $m: includes ${allowed[*]:-nothing}; refused: ${refused[*]:-none}"
done
compiles server model
check "src/server including kiln/model.h fails the build" test $? -ne 0
check "  ... with 'No such file' for the header" grep -q "kiln/model.h" "$tmp/err"

# 2. DESIGN.md's never-edges
never() { # never MODULE HEADER...
  local m=$1; shift
  for d in "$@"; do
    check "never-edge: $m does not see $d" test "${VIS[$m]}" = "${VIS[$m]/,$d,/}"
  done
}
never tensor model tokenizer engine runtime server
never model tokenizer engine runtime server cache
never engine server bench
never server gguf model kv tensor tokenizer
never cache model engine runtime tensor
never bench gguf model tensor engine runtime server cache tokenizer kv
never kv model tensor
never chat model tokenizer gguf engine runtime server

# 3. one include style
rel=$(grep -rnE '#include "\.\./' "$SRC/src" "$SRC/tests" "$SRC/include" 2>/dev/null)
check "no include climbs out of its folder with ../" test -z "$rel"
[ -z "$rel" ] || echo "$rel" | head -5
bad=0
for m in "${modules[@]}"; do
  while IFS= read -r line; do
    h=$(sed -E 's/.*"kiln\/([a-z]+)\.h".*/\1/' <<<"$line")
    if [[ ${VIS[$m]} != *",$h,"* ]]; then echo "   $line: $m may not include kiln/$h.h"; bad=$((bad + 1)); fi
  done < <(grep -rn '#include "kiln/' "$SRC/src/$m" || true)
done
check "every kiln/X.h a module includes is in its view" test "$bad" -eq 0

echo "$((total - fails)) passed, $fails failed"
[ $fails -eq 0 ]
