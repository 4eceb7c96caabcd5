#!/usr/bin/env bash
# bench/concurrency_bench.sh: completion tokens per second of a one-member
# consort (`consort run --member m=MODEL --strategy solo:m`) at several
# numbers of concurrent requests, for one or more builds side by side in one
# run (e.g. the tree before and after a change), and optionally llama.cpp's
# own llama-server on the same model, threads and slots.
#
#   bench/concurrency_bench.sh [-m MODEL] [-n TOKENS] [-c "1 4 8 16"] [-r ROUNDS]
#                              [-t THREADS] BUILD_DIR...
#   LLAMA_SERVER=/path/to/llama-server bench/concurrency_bench.sh ... (adds it)
#
# consort is `consort serve --strategy solo:m` over a consort-worker started
# with --parallel SLOTS (session slots = the largest concurrency, as
# llama-server's -np). Each request is /v1/completions with temperature 0 and max_tokens TOKENS
# (and ignore_eos for llama-server, so that it does not stop early); tokens/s = the sum of
# completion_tokens over all requests / wall seconds from the first request
# sent to the last answer. Best of ROUNDS. Slots: the largest concurrency.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=models/a.gguf N=64 CONC="1 4 8 16" ROUNDS=2 THREADS=1
while getopts "m:n:c:r:t:" o; do case $o in
  m) MODEL=$OPTARG ;; n) N=$OPTARG ;; c) CONC=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
  *) echo "usage: $0 [-m MODEL] [-n TOKENS] [-c LIST] [-r ROUNDS] [-t THREADS] BUILD_DIR..." >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "$0: name at least one build directory" >&2; exit 2; }
SLOTS=0; for c in $CONC; do [ "$c" -gt "$SLOTS" ] && SLOTS=$c; done
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

wait_up() { # url
  for _ in $(seq 600); do curl -s -m 1 "$1/v1/models" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1
}

burst() { # url conc [extra JSON fields] -> tokens/s
  local url=$1 c=$2 t0 t1 tok=0
  local body="{\"model\":\"m\",\"prompt\":\"The committee said that\",\"max_tokens\":$N,\"temperature\":0${3:-}}"
  t0=$(date +%s.%N)
  for i in $(seq "$c"); do
    curl -s -m 300 "$url/v1/completions" -H 'Content-Type: application/json' -d "$body" >"$tmp/r.$i" &
  done
  wait
  t1=$(date +%s.%N)
  for i in $(seq "$c"); do
    tok=$((tok + $(jq -r '.usage.completion_tokens // 0' "$tmp/r.$i" 2>/dev/null || echo 0)))
  done
  echo "$tok $t0 $t1" | awk '{printf "%.1f", $1 / ($3 - $2)}'
}

best_of() { # url conc [extra JSON fields]
  local best=0 v
  for _ in $(seq "$ROUNDS"); do
    v=$(burst "$1" "$2" "${3:-}")
    best=$(echo "$best $v" | awk '{print ($2 > $1) ? $2 : $1}')
  done
  echo "$best"
}

port=18600
declare -A rate
names=()
for b in "$@"; do
  port=$((port + 1))
  # the worker gets as many session slots as requests run at once (as
  # llama-server gets -np): `consort run` would spawn it with the default 4
  "$b/consort-worker" --model "$MODEL" --port $((port + 100)) --threads "$THREADS" --parallel "$SLOTS" \
    >"$tmp/wk.$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do curl -s -m 1 "http://127.0.0.1:$((port + 100))/health" >/dev/null 2>&1 && break; sleep 0.2; done
  "$b/consort" serve --port $port --member m="http://127.0.0.1:$((port + 100))" --strategy solo:m --parallel "$SLOTS" \
    >"$tmp/run.$port.log" 2>&1 &
  pids+=($!)
  wait_up "http://127.0.0.1:$port" || { echo "$b did not start:" >&2; cat "$tmp/run.$port.log" >&2; exit 1; }
  : "$(burst "http://127.0.0.1:$port" 1)" # warm-up (in a subshell: burst waits for its children)
  names+=("$b"); for c in $CONC; do rate["$b,$c"]=$(best_of "http://127.0.0.1:$port" "$c"); done
  kill "${pids[-1]}" "${pids[-2]}"; wait "${pids[-1]}" "${pids[-2]}" 2>/dev/null
done
if [ -n "${LLAMA_SERVER:-}" ]; then
  port=$((port + 1))
  "$LLAMA_SERVER" -m "$MODEL" --port $port -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -c $((SLOTS * 512)) \
    >"$tmp/ls.log" 2>&1 &
  pids+=($!)
  wait_up "http://127.0.0.1:$port" || { echo "llama-server did not start" >&2; tail "$tmp/ls.log" >&2; exit 1; }
  : "$(burst "http://127.0.0.1:$port" 1 ',"ignore_eos":true')" # warm-up (the model loaded)
  names+=(llama-server); for c in $CONC; do rate["llama-server,$c"]=$(best_of "http://127.0.0.1:$port" "$c" ',"ignore_eos":true'); done
fi
printf '| concurrent |'; for n in "${names[@]}"; do printf ' %s tok/s |' "$n"; done; echo
printf '|---|'; for _ in "${names[@]}"; do printf -- '---|'; done; echo
for c in $CONC; do
  printf '| %s |' "$c"; for n in "${names[@]}"; do printf ' %s |' "${rate[$n,$c]}"; done; echo
done
echo "model $MODEL, $N tokens per request, $THREADS thread(s), $SLOTS slots, best of $ROUNDS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
