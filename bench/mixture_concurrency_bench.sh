#!/usr/bin/env bash
# bench/mixture_concurrency_bench.sh: throughput of the two-member mixture
# under concurrent requests against each member alone through the same
# consort, side by side in one run (issue 11's goal: the mixture at 8
# concurrent requests >= 0.9x its slower member alone at 8).
#
#   bench/mixture_concurrency_bench.sh [-a MODEL_A] [-b MODEL_B] [-n TOKENS]
#                                      [-c "8"] [-r ROUNDS] [-t THREADS] [BUILD_DIR]
#
# Two consort-workers (THREADS llama.cpp threads and --parallel SLOTS each,
# SLOTS = the largest concurrency) and one `consort serve --member a=...
# --member b=... --strategy mixture --parallel SLOTS` are started once and
# stay up. Each round runs every concurrency for the mixture (model
# "consort"), member a alone and member b alone (model "a" / "b": strategy
# solo:NAME over the same workers, the other member idle), interleaved, so
# that load from other processes falls on all alike. Each request is
# /v1/completions, temperature 0, max_tokens TOKENS steps. Reported, best of
# ROUNDS after one warm-up request each: steps/s (the sum of
# completion_tokens, which counts steps, over wall seconds from the first
# request sent to the last answer) and text bytes/s (a mixture step may
# commit a longer string than one member's token), and the mixture's ratio
# to the slower member alone in each.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib_conc.sh
MA=models/a.gguf MB=models/b.gguf N=64 CONC=8 ROUNDS=2 THREADS=1
while getopts "a:b:n:c:r:t:" o; do case $o in
  a) MA=$OPTARG ;; b) MB=$OPTARG ;; n) N=$OPTARG ;; c) CONC=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
  *) echo "usage: $0 [-a MODEL_A] [-b MODEL_B] [-n TOKENS] [-c LIST] [-r ROUNDS] [-t THREADS] [BUILD_DIR]" >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
B=${1:-build}
SLOTS=0; for c in $CONC; do [ "$c" -gt "$SLOTS" ] && SLOTS=$c; done
TMP=$(mktemp -d)
trap conc_cleanup EXIT
port=18700
load0=$(cut -d' ' -f1-3 /proc/loadavg)

members=()
for m in a b; do
  port=$((port + 1))
  model=$MA; [ $m = b ] && model=$MB
  "$B/consort-worker" --model "$model" --port $port --threads "$THREADS" --parallel "$SLOTS" --name $m \
    >"$TMP/wk.$m.log" 2>&1 &
  PIDS+=($!)
  wait_health "http://127.0.0.1:$port" || { echo "worker $m did not start:" >&2; tail "$TMP/wk.$m.log" >&2; exit 1; }
  members+=(--member "$m=http://127.0.0.1:$port")
done
port=$((port + 1))
"$B/consort" serve --port $port "${members[@]}" --strategy mixture --parallel "$SLOTS" >"$TMP/serve.log" 2>&1 &
PIDS+=($!)
URL=http://127.0.0.1:$port
wait_up "$URL" || { echo "consort serve did not start:" >&2; tail "$TMP/serve.log" >&2; exit 1; }

runs=(consort a b)
declare -A steps bytes
for n in "${runs[@]}"; do : "$(burst "$URL" 1 "$n")"; done # warm-up
for r in $(seq "$ROUNDS"); do
  for c in $CONC; do
    for n in "${runs[@]}"; do
      read -r s y < <(burst "$URL" "$c" "$n")
      echo "# round $r, $c concurrent, $n: $s steps/s, $y bytes/s" >&2
      steps["$n,$c"]=$(max_of "${steps[$n,$c]:-0}" "$s")
      bytes["$n,$c"]=$(max_of "${bytes[$n,$c]:-0}" "$y")
    done
  done
done

ratio() { echo "$1 $2 $3" | awk '{m = ($2 < $3) ? $2 : $3; printf "%.2f", $1 / m}'; }
echo "| concurrent | mixture steps/s (bytes/s) | a alone steps/s (bytes/s) | b alone steps/s (bytes/s) | mixture / slower alone, steps (bytes) |"
echo "|---|---|---|---|---|"
for c in $CONC; do
  printf '| %s |' "$c"
  for n in "${runs[@]}"; do printf ' %s (%s) |' "${steps[$n,$c]}" "${bytes[$n,$c]}"; done
  printf ' %s (%s) |\n' "$(ratio "${steps[consort,$c]}" "${steps[a,$c]}" "${steps[b,$c]}")" \
    "$(ratio "${bytes[consort,$c]}" "${bytes[a,$c]}" "${bytes[b,$c]}")"
done
echo "members a=$MA b=$MB, $N steps per request, $THREADS thread(s) per worker, $SLOTS slots, best of $ROUNDS interleaved rounds; load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
