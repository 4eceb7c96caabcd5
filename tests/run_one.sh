#!/usr/bin/env bash
# tests/run_one.sh [RUNNER...] TEST: runs one test program for prove (its
# --exec), copying what it writes (stdout and stderr) into
# $CONSORT_TEST_LOGS/<TEST with / as _>, so tests/run.sh can show a failing
# test's whole output again at the end of a long run.
f=${!#}
out=${CONSORT_TEST_LOGS:-/tmp}/$(tr / _ <<<"$f")
: >"$out"
{ "$@" 2> >(tee -a "$out" >&2); } | tee -a "$out"
exit "${PIPESTATUS[0]}"
