#!/usr/bin/env bash
# tests/fuzz/run.sh: run every libFuzzer harness built into
# $CONSORT_BUILD/fuzz/ (make fuzz builds them into build-fuzz/) for
# FUZZ_SECONDS each, over its committed seeds in tests/fuzz/corpus/NAME/
# (read only; tests/fuzz/NAME.dict is its dictionary of tokens when there is
# one) plus a working corpus in $CONSORT_BUILD/fuzz-corpus/NAME/ that
# grows from run to run. TAP: one check per harness, which fails on any
# crash, sanitizer report, leak, timeout or broken property; the input that
# did it is left in $CONSORT_BUILD/fuzz-artifacts/NAME/ and named here.
set -uo pipefail
cd "$(dirname "$0")/../.."
export CONSORT_ROOT=$PWD
B=${CONSORT_BUILD:-build-fuzz}
S=${FUZZ_SECONDS:-15}
n=0; fails=0
for bin in "$B"/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=${bin##*/fuzz_}
  seeds=tests/fuzz/corpus/$name
  work=$B/fuzz-corpus/$name
  art=$B/fuzz-artifacts/$name
  log=$B/fuzz-logs/$name.log
  dict=(); [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  mkdir -p "$work" "$art" "${log%/*}"
  n=$((n+1))
  "$bin" -max_total_time="$S" -timeout=20 -rss_limit_mb=4096 -max_len=8192 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1
  r=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ $r = 0 ]; then
    echo "ok $n - fuzz_$name: ${S}s, ${runs:-?} inputs, $cov, no crash and no broken property"
  else
    echo "not ok $n - fuzz_$name: exit $r after ${runs:-?} inputs (log: $log)"
    grep -E 'property violated|ERROR: |SUMMARY|Test unit written|==[0-9]+==' "$log" | head -12 | sed 's/^/#   /'
    fails=$((fails+1))
  fi
done
[ $n -gt 0 ] || { echo "1..0 # SKIP no harnesses under $B/fuzz (run make fuzz)"; exit 0; }
echo "1..$n"
[ $fails = 0 ]
