#!/usr/bin/env bash
# tests/run.sh [unit|integration|all]: run the test programs with prove (TAP).
#
# Unit tests are the programs built from tests/unit/LAYER/test_*.c into
# $CONSORT_BUILD/tests/. Integration tests are the executable scripts
# tests/integration/*.t; they find binaries through $CONSORT_BUILD.
# With CONSORT_VALGRIND=1 every unit program runs under valgrind, and any
# leak or memory error fails it; then tests/integration/valgrind_serve.t
# runs consort serve under valgrind (an integration run in that stage).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONSORT_BUILD=${CONSORT_BUILD:-build}
export CONSORT_ROOT=$PWD
what=${1:-all}
tests=()
if [ "$what" = unit ] || [ "$what" = all ]; then
  for t in "$CONSORT_BUILD"/tests/test_*; do [ -x "$t" ] && tests+=("$t"); done
fi
if [ "$what" = integration ] || [ "$what" = all ]; then
  for t in tests/integration/*.t; do [ -x "$t" ] && tests+=("$t"); done
fi
[ ${#tests[@]} -gt 0 ] || { echo "no tests found under $CONSORT_BUILD" >&2; exit 1; }
# A failing run ends with the whole output of each failing test program
# again (tests/run_one.sh keeps it; its comments say why), so the tail of a
# long CI log shows it.
export CONSORT_TEST_LOGS
CONSORT_TEST_LOGS=$(mktemp -d)
trap 'rm -rf "$CONSORT_TEST_LOGS"' EXIT
summary=$(mktemp -p "$CONSORT_TEST_LOGS")
recap() {
  local f
  for f in $(awk '/^Test Summary Report/ {s = 1} s && /\(Wstat: / {print $1}' "$summary"); do
    echo
    echo "=== $f, its whole output again (ok lines left out) ==="
    grep -v '^ok ' "$CONSORT_TEST_LOGS/$(tr / _ <<<"$f")" 2>/dev/null | tail -n 200
  done
}
run_prove() { # RUNNER TESTS...
  local rc=0 runner=$1
  shift
  prove --comments --exec "bash tests/run_one.sh $runner" "$@" 2>&1 | tee "$summary" || rc=$?
  [ "$rc" = 0 ] || recap
  return "$rc"
}
if [ "${CONSORT_VALGRIND:-0}" = 1 ]; then
  run_prove 'valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect' "${tests[@]}"
  run_prove '' tests/integration/valgrind_serve.t
  exit
fi
run_prove '' "${tests[@]}"
