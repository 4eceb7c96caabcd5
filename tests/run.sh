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
if [ "${CONSORT_VALGRIND:-0}" = 1 ]; then
  prove --comments --exec 'valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect' "${tests[@]}"
  exec prove --comments --exec '' tests/integration/valgrind_serve.t
fi
exec prove --comments --exec '' "${tests[@]}"
