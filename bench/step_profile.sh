#!/usr/bin/env bash
# bench/step_profile.sh: one request's time taken apart, a one-member
# consort (`consort serve --strategy solo:m` over one consort-worker)
# against llama.cpp's llama-server on the same model, threads and slots:
# where does consort's extra time per token go?
#
#   bench/step_profile.sh [-m MODEL] [-n TOKENS] [-r ROUNDS] [-t THREADS] BUILD_DIR
#   LLAMA_SERVER=/path/to/llama-server ...   (adds llama-server)
#   WORKER_ARGS="-ngl all" LLAMA_ARGS="-ngl 999" ...   (extra flags, as in
#   bench/concurrency_bench.sh)
#   VARIANTS="|GGML_CUDA_DISABLE_GRAPHS=1|@--ctx 512"   ('|'-separated
#   variants, each measured in turn: environment assignments both servers
#   are started with, then after an '@' extra flags of the worker alone;
#   the default is one empty variant: the environment and flags as they
#   are)
#
# Each round sends one request of TOKENS tokens and one of 2 tokens to each
# server in turn (greedy /v1/completions, one at a time; ignore_eos for
# llama-server); per token = (wall(TOKENS) - wall(2)) / (tokens - 2), the
# fixed part = wall(2) - 2 x per token, best (least) of ROUNDS. The worker's
# /metrics, read around the TOKENS requests, take its side apart per step:
# the /v1/step handler (HTTP body to answer), the engine's step inside it,
# the decode (llama_decode and the rows' delivery, per llama_decode), the
# softmax and the leader's lingering; what is left of consort's per-token
# time beyond the handler is the coordinator: its decision, the HTTP round
# trip and the JSON on both ends. The fixed part's column also gives the
# worker's share of a 2-token request (its /v1/step handler time and the
# decodes in it, mean over the rounds). llama-server's own `timings` give its
# time per predicted token as it measures it.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/lib_conc.sh
MODEL=models/a.gguf N=64 ROUNDS=3 THREADS=1
while getopts "m:n:r:t:" o; do case $o in
  m) MODEL=$OPTARG ;; n) N=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) THREADS=$OPTARG ;;
  *) echo "usage: $0 [-m MODEL] [-n TOKENS] [-r ROUNDS] [-t THREADS] BUILD_DIR" >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
[ $# = 1 ] || { echo "$0: name one build directory" >&2; exit 2; }
[ "$N" -gt 4 ] || { echo "$0: -n must be more than 4" >&2; exit 2; }
B=$1
TMP=$(mktemp -d)
trap conc_cleanup EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# one URL MAX_TOKENS EXTRA -> "wall_s completion_tokens predicted_per_token_ms" (the last: llama-server's own, else -)
one() {
  local body="{\"model\":\"m\",\"prompt\":\"The committee said that\",\"max_tokens\":$2,\"temperature\":0$3}"
  local wall
  wall=$(curl --noproxy '*' -s -m 600 -o "$TMP/one.json" -w '%{time_total}' "$1/v1/completions" \
    -H 'Content-Type: application/json' -d "$body") || { echo "0 0 -"; return; }
  echo "$wall $(jq -r '"\(.usage.completion_tokens // 0) \(.timings.predicted_per_token_ms // "-")"' "$TMP/one.json" 2>/dev/null || echo "0 -")"
}

# parts URL -> the worker's counters: step handler sum, steps, engine step, decode, linger, softmax (s), decodes, graphs reused
parts() {
  curl --noproxy '*' -s -m 5 "$1/metrics" | awk '
    /^consort_worker_step_seconds_sum / { h = $2 }
    /^consort_worker_step_seconds_count / { n = $2 }
    /^consort_worker_seconds_total\{part="step"\} / { st = $2 }
    /^consort_worker_seconds_total\{part="decode"\} / { d = $2 }
    /^consort_worker_seconds_total\{part="linger"\} / { l = $2 }
    /^consort_worker_seconds_total\{part="softmax"\} / { sm = $2 }
    /^consort_worker_decodes_total / { nd = $2 }
    /^consort_worker_graphs_reused_total / { gr = $2 }
    END { printf "%s %s %s %s %s %s %s %s", h, n, st, d, l, sm, nd, gr + 0 }'
}

# per_token W2 T2 WN TN -> "ms per token, fixed ms"
per_token() { echo "$1 $2 $3 $4" | awk '{ d = $4 - $2; if (d <= 0) { print "- -"; exit }
  pt = ($3 - $1) / d; printf "%.3f %.1f", 1000 * pt, 1000 * ($1 - $2 * pt) }'; }

printf '| variant | server | ms per token | fixed ms per request | worker /v1/step handler ms | engine step ms | decode ms (per llama_decode) | softmax ms | linger ms | coordinator and round trip ms | graphs reused | llama-server own ms per token |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
IFS='|' read -r -a variants <<<"${VARIANTS:-}"
[ ${#variants[@]} = 0 ] && variants=("")
port=18640
for v in "${variants[@]}"; do
  port=$((port + 3))
  wurl="http://127.0.0.1:$((port + 1))" curl_c="http://127.0.0.1:$port" lurl="http://127.0.0.1:$((port + 2))"
  venv=${v%%@*} vflags=""
  [ "$venv" != "$v" ] && vflags=${v#*@}
  env $venv "$B/consort-worker" --model "$MODEL" --port $((port + 1)) --threads "$THREADS" --parallel 4 \
    ${WORKER_ARGS:-} $vflags >"$TMP/wk.$port.log" 2>&1 &
  PIDS+=($!)
  wait_health "$wurl" || { echo "the worker did not start ($v):" >&2; tail "$TMP/wk.$port.log" >&2; exit 1; }
  "$B/consort" serve --port "$port" --member m="$wurl" --strategy solo:m --parallel 4 >"$TMP/run.$port.log" 2>&1 &
  PIDS+=($!)
  wait_up "$curl_c" || { echo "consort did not start ($v):" >&2; tail "$TMP/run.$port.log" >&2; exit 1; }
  names=(consort)
  if [ -n "${LLAMA_SERVER:-}" ]; then
    env $venv "$LLAMA_SERVER" -m "$MODEL" --port $((port + 2)) -t "$THREADS" -tb "$THREADS" -np 4 -c 2048 \
      ${LLAMA_ARGS:-} >"$TMP/ls.$port.log" 2>&1 &
    PIDS+=($!)
    wait_up "$lurl" || { echo "llama-server did not start ($v)" >&2; tail "$TMP/ls.$port.log" >&2; exit 1; }
    names+=(llama-server)
  fi
  declare -A best2=() bestN=() tok2=() tokN=() own=()
  ws=0 wn=0 wst=0 wd=0 wl=0 wsm=0 wnd=0 wgr=0 f_h=0 f_d=0
  for r in $(seq 0 "$ROUNDS"); do # round 0 warms up
    for n in "${names[@]}"; do
      u=$curl_c x=""
      [ "$n" = llama-server ] && u=$lurl x=',"ignore_eos":true'
      [ "$n" = consort ] && read -r -a q0 <<<"$(parts "$wurl")"
      read -r w2 t2 _ <<<"$(one "$u" 2 "$x")"
      [ "$n" = consort ] && read -r -a p0 <<<"$(parts "$wurl")"
      if [ "$n" = consort ] && [ "$r" -gt 0 ]; then # the 2-token request's worker handler and decode time
        read -r f_h f_d <<<"$(echo "$f_h $f_d ${q0[0]} ${q0[3]} ${p0[0]} ${p0[3]}" | awk '{ printf "%s %s", $1 + $5 - $3, $2 + $6 - $4 }')"
      fi
      read -r wN tN o <<<"$(one "$u" "$N" "$x")"
      if [ "$n" = consort ] && [ "$r" -gt 0 ]; then
        read -r -a p1 <<<"$(parts "$wurl")"
        read -r ws wn wst wd wl wsm wnd wgr <<<"$(echo "$ws $wn $wst $wd $wl $wsm $wnd $wgr ${p0[*]} ${p1[*]}" |
          awk '{ for (i = 1; i <= 8; i++) printf "%s ", $i + $(i + 16) - $(i + 8) }')"
      fi
      [ "$r" = 0 ] && continue
      echo "# $v round $r $n: 2 -> $w2 s ($t2 tokens), $N -> $wN s ($tN tokens)" >&2
      if [ -z "${bestN[$n]:-}" ] || awk "BEGIN { exit !($wN / ($tN + 1e-9) < ${bestN[$n]} / (${tokN[$n]} + 1e-9)) }"; then
        bestN[$n]=$wN tokN[$n]=$tN own[$n]=$o
      fi
      if [ -z "${best2[$n]:-}" ] || awk "BEGIN { exit !($w2 < ${best2[$n]}) }"; then best2[$n]=$w2 tok2[$n]=$t2; fi
    done
  done
  for n in "${names[@]}"; do
    read -r pt fx <<<"$(per_token "${best2[$n]}" "${tok2[$n]}" "${bestN[$n]}" "${tokN[$n]}")"
    if [ "$n" = consort ]; then
      echo "$ws $wn $wst $wd $wl $wsm $wnd $wgr $pt $f_h $f_d" | awk -v v="${v:-as is}" -v fx="$fx" -v R="$ROUNDS" '{
        s = $2 > 0 ? $2 : 1; nd = $7 > 0 ? $7 : 1
        printf "| %s | consort | %s | %s (worker %.1f, its decodes %.1f) | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %d of %d |  - |\n",
          v, $9, fx, 1000 * $10 / R, 1000 * $11 / R,
          1000 * $1 / s, 1000 * $3 / s, 1000 * $4 / nd, 1000 * $6 / s, 1000 * $5 / s, $9 - 1000 * $1 / s, $8, $7 }'
    else
      printf '| %s | llama-server | %s | %s | - | - | - | - | - | - | - | %s |\n' "${v:-as is}" "$pt" "$fx" "${own[$n]}"
    fi
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  PIDS=()
  unset best2 bestN tok2 tokN own
done
echo "model $MODEL, ${WORKER_ARGS:+worker flags $WORKER_ARGS, }${LLAMA_ARGS:+llama-server flags $LLAMA_ARGS, }$N and 2 tokens per request, $THREADS thread(s), 4 slots, best of $ROUNDS rounds (the worker's parts: summed over every round's $N-token request); load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
