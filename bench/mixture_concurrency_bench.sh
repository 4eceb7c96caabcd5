#!/usr/bin/env bash
# bench/mixture_concurrency_bench.sh: throughput of the two-member mixture
# under concurrent requests against each member alone through the same
# consort, side by side in one run (issue 11's goal: the mixture at 8
# concurrent requests >= 0.9x its slower member alone at 8).
#
#   bench/mixture_concurrency_bench.sh [-a MODEL_A] [-b MODEL_B] [-n TOKENS]
#                                      [-c "8"] [-r ROUNDS] [-t THREADS] [BUILD_DIR[@FLAG,FLAG...]...]
#
# With several build directories (default: build), each gets its own
# workers and server, all measured in the same interleaved rounds (the tree
# before and after a change, side by side).
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
# to the slower member alone in each. A second table gives, per worker and
# over all rounds, the token positions per llama_decode (how well the
# worker batched the concurrent sessions) and the decodes per /v1/step.
# WORKER_ARGS: extra flags of each consort-worker (e.g. "-ngl all" to
# offload to a GPU: bench/gpu_bench.sh); WORKER_ARGS_A and WORKER_ARGS_B,
# when set, replace it for member a's and member b's worker, after
# --threads, so they may set their own (e.g. WORKER_ARGS_A="-ngl all"
# WORKER_ARGS_B="-ngl 0 -t 8": a on the GPU, b on 8 CPU threads, two
# devices of their own on one machine, as bench/gpu_bench.sh's mix_cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib_conc.sh
MA=models/a.gguf MB=models/b.gguf N=64 CONC=8 ROUNDS=2 THREADS=1
while getopts "a:b:n:c:r:t:" o; do case $o in
  a) MA=$OPTARG ;; b) MB=$OPTARG ;; n) N=$OPTARG ;; c) CONC=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
  *) echo "usage: $0 [-a MODEL_A] [-b MODEL_B] [-n TOKENS] [-c LIST] [-r ROUNDS] [-t THREADS] [BUILD_DIR...]" >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- build
SLOTS=0; for c in $CONC; do [ "$c" -gt "$SLOTS" ] && SLOTS=$c; done
TMP=$(mktemp -d)
trap conc_cleanup EXIT
port=18700
load0=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A url wurl d0 t0 q0
for B in "$@"; do # two workers and one mixture server per build (BUILD_DIR@FLAG,FLAG: with those serve flags)
  dir=${B%%@*} flags=""
  [ "$dir" != "$B" ] && flags=${B#*@} && flags=${flags//,/ }
  members=()
  for m in a b; do
    port=$((port + 1))
    model=$MA wargs=${WORKER_ARGS_A-${WORKER_ARGS:-}}
    [ $m = b ] && model=$MB wargs=${WORKER_ARGS_B-${WORKER_ARGS:-}}
    # shellcheck disable=SC2086
    "$dir/consort-worker" --model "$model" --port $port --threads "$THREADS" --parallel "$SLOTS" --name $m \
      $wargs >"$TMP/wk.$port.log" 2>&1 &
    PIDS+=($!)
    wait_health "http://127.0.0.1:$port" || { echo "$B: worker $m did not start:" >&2; tail "$TMP/wk.$port.log" >&2; exit 1; }
    members+=(--member "$m=http://127.0.0.1:$port")
    wurl[$B,$m]=http://127.0.0.1:$port
  done
  port=$((port + 1))
  # shellcheck disable=SC2086
  "$dir/consort" serve --port $port "${members[@]}" --strategy mixture --parallel "$SLOTS" $flags >"$TMP/serve.$port.log" 2>&1 &
  PIDS+=($!)
  url[$B]=http://127.0.0.1:$port
  wait_up "${url[$B]}" || { echo "$B: consort serve did not start:" >&2; tail "$TMP/serve.$port.log" >&2; exit 1; }
done

runs=(consort a b) # the request's model: the whole ensemble, or one member alone
declare -A steps bytes dec tok req
for B in "$@"; do for n in "${runs[@]}"; do : "$(burst "${url[$B]}" 1 "$n")"; done; done # warm-up
for r in $(seq "$ROUNDS"); do
  for c in $CONC; do
    for B in "$@"; do
      for n in "${runs[@]}"; do
        k="$B,$n,$c"
        for m in a b; do read -r d0[$m] t0[$m] q0[$m] < <(counters "${wurl[$B,$m]}"); done
        read -r s y < <(burst "${url[$B]}" "$c" "$n")
        for m in a b; do
          read -r d1 t1 q1 < <(counters "${wurl[$B,$m]}")
          dec["$k,$m"]=$((${dec[$k,$m]:-0} + d1 - d0[$m]))
          tok["$k,$m"]=$((${tok[$k,$m]:-0} + t1 - t0[$m]))
          req["$k,$m"]=$((${req[$k,$m]:-0} + q1 - q0[$m]))
        done
        echo "# round $r, $c concurrent, $B $n: $s steps/s, $y bytes/s" >&2
        steps[$k]=$(max_of "${steps[$k]:-0}" "$s")
        bytes[$k]=$(max_of "${bytes[$k]:-0}" "$y")
      done
    done
  done
done

ratio() { echo "$1 $2 $3" | awk '{m = ($2 < $3) ? $2 : $3; printf "%.2f", $1 / m}'; }
echo "| build | concurrent | mixture steps/s (bytes/s) | a alone steps/s (bytes/s) | b alone steps/s (bytes/s) | mixture / slower alone, steps (bytes) |"
echo "|---|---|---|---|---|---|"
for c in $CONC; do
  for B in "$@"; do
    printf '| %s | %s |' "$B" "$c"
    for n in "${runs[@]}"; do printf ' %s (%s) |' "${steps[$B,$n,$c]}" "${bytes[$B,$n,$c]}"; done
    printf ' %s (%s) |\n' "$(ratio "${steps[$B,consort,$c]}" "${steps[$B,a,$c]}" "${steps[$B,b,$c]}")" \
      "$(ratio "${bytes[$B,consort,$c]}" "${bytes[$B,a,$c]}" "${bytes[$B,b,$c]}")"
  done
done
echo
echo "| build | concurrent | run | worker a: positions per decode, decodes per step | worker b: positions per decode, decodes per step |"
echo "|---|---|---|---|---|"
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
for c in $CONC; do
  for B in "$@"; do
    for n in "${runs[@]}"; do
      k="$B,$n,$c"
      printf '| %s | %s | %s |' "$B" "$c" "$n"
      for m in a b; do printf ' %s, %s |' "$(per "${tok[$k,$m]}" "${dec[$k,$m]}")" "$(per "${dec[$k,$m]}" "${req[$k,$m]}")"; done
      echo
    done
  done
done
wa=${WORKER_ARGS_A-${WORKER_ARGS:-}} wb=${WORKER_ARGS_B-${WORKER_ARGS:-}}
echo "members a=$MA${wa:+ (worker flags $wa)} b=$MB${wb:+ (worker flags $wb)}, $N steps per request, $THREADS thread(s) per worker, $SLOTS slots, best of $ROUNDS interleaved rounds; load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
