#!/usr/bin/env bash
# bench/concurrency_bench.sh: completion tokens per second of a one-member
# consort (`consort serve --strategy solo:m` over one consort-worker) at
# several numbers of concurrent requests, for one or more builds side by side
# in one run (e.g. the tree before and after a change), and optionally
# llama.cpp's own llama-server on the same model, threads and slots.
#
#   bench/concurrency_bench.sh [-m MODEL] [-n TOKENS] [-c "1 4 8 16"] [-r ROUNDS]
#                              [-t THREADS] BUILD_DIR[@FLAG,FLAG...]...
#   (BUILD_DIR@--speculative: that build's consort serve with those flags,
#   e.g. the same build with and without a feature, side by side)
#   LLAMA_SERVER=/path/to/llama-server bench/concurrency_bench.sh ... (adds it)
#   WORKER_ARGS="-ngl all" LLAMA_ARGS="-ngl 999" ... (extra flags of each
#   consort-worker and of llama-server, e.g. to offload to a GPU:
#   bench/gpu_bench.sh)
#
# Every server is started first and stays up; then each round runs every
# concurrency on every server in turn (interleaved, so that load from other
# processes on a shared machine falls on all alike). The worker gets
# --parallel SLOTS (session slots = the largest concurrency, as
# llama-server's -np). Each request is /v1/completions with temperature 0
# and max_tokens TOKENS (and ignore_eos for llama-server, so that it does
# not stop early); tokens/s = the sum of completion_tokens over all requests
# / wall seconds from the first request sent to the last answer. Best of
# ROUNDS, after one warm-up request per server.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib_conc.sh
MODEL=models/a.gguf N=64 CONC="1 4 8 16" ROUNDS=2 THREADS=1
while getopts "m:n:c:r:t:" o; do case $o in
  m) MODEL=$OPTARG ;; n) N=$OPTARG ;; c) CONC=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
  *) echo "usage: $0 [-m MODEL] [-n TOKENS] [-c LIST] [-r ROUNDS] [-t THREADS] BUILD_DIR..." >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "$0: name at least one build directory" >&2; exit 2; }
SLOTS=0; for c in $CONC; do [ "$c" -gt "$SLOTS" ] && SLOTS=$c; done
TMP=$(mktemp -d)
trap conc_cleanup EXIT

port=18600
declare -A url extra rate
names=()
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for spec in "$@"; do
  b=${spec%%@*} flags=""
  [ "$b" != "$spec" ] && flags=${spec#*@} && flags=${flags//,/ }
  port=$((port + 2))
  "$b/consort-worker" --model "$MODEL" --port $((port + 1)) --threads "$THREADS" --parallel "$SLOTS" \
    ${WORKER_ARGS:-} >"$TMP/wk.$port.log" 2>&1 &
  PIDS+=($!)
  wait_health "http://127.0.0.1:$((port + 1))" || { echo "$b's worker did not start:" >&2; tail "$TMP/wk.$port.log" >&2; exit 1; }
  "$b/consort" serve --port $port --member m="http://127.0.0.1:$((port + 1))" --strategy solo:m --parallel "$SLOTS" \
    $flags >"$TMP/run.$port.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$port" || { echo "$b did not start:" >&2; tail "$TMP/run.$port.log" >&2; exit 1; }
  names+=("$spec"); url[$spec]="http://127.0.0.1:$port"; extra[$spec]=""
done
if [ -n "${LLAMA_SERVER:-}" ]; then
  port=$((port + 2))
  "$LLAMA_SERVER" -m "$MODEL" --port $port -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -c $((SLOTS * 512)) \
    ${LLAMA_ARGS:-} >"$TMP/ls.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$port" || { echo "llama-server did not start" >&2; tail "$TMP/ls.log" >&2; exit 1; }
  names+=(llama-server); url[llama-server]="http://127.0.0.1:$port"; extra[llama-server]=',"ignore_eos":true'
fi
for n in "${names[@]}"; do : "$(burst "${url[$n]}" 1 m "${extra[$n]}")"; done # warm-up (in a subshell: burst waits for its children)
for r in $(seq "$ROUNDS"); do
  for c in $CONC; do
    for n in "${names[@]}"; do
      v=$(burst "${url[$n]}" "$c" m "${extra[$n]}"); v=${v%% *}
      echo "# round $r, $c concurrent, $n: $v tok/s" >&2
      rate["$n,$c"]=$(max_of "${rate[$n,$c]:-0}" "$v")
    done
  done
done
printf '| concurrent |'; for n in "${names[@]}"; do printf ' %s tok/s |' "$n"; done
[ ${#names[@]} -gt 1 ] && printf ' %s / %s |' "${names[0]}" "${names[-1]}"; echo
printf '|---|'; for _ in "${names[@]}"; do printf -- '---|'; done; [ ${#names[@]} -gt 1 ] && printf -- '---|'; echo
for c in $CONC; do
  printf '| %s |' "$c"; for n in "${names[@]}"; do printf ' %s |' "${rate[$n,$c]}"; done
  [ ${#names[@]} -gt 1 ] && printf ' %s |' "$(echo "${rate[${names[0]},$c]} ${rate[${names[-1]},$c]}" | awk '{printf "%.2f", $1 / $2}')"
  echo
done
echo "model $MODEL, ${WORKER_ARGS:+worker flags $WORKER_ARGS, }${LLAMA_ARGS:+llama-server flags $LLAMA_ARGS, }$N tokens per request, $THREADS thread(s), $SLOTS slots, best of $ROUNDS interleaved rounds; load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
