#!/usr/bin/env bash
# A member whose model spans machines: a llama-server whose model is split
# over two rpc-server processes (llama.cpp's RPC backend; two loopback ports
# stand in for two machines), ensembled with an ordinary consort-worker. Its
# results equal those with the same llama-server unsplit:
#   - llama-server's own top-20 next-token probabilities, split vs unsplit,
#     agree to 1e-4 (absolute, on probabilities) with the same ids in order;
#   - the ensemble's greedy text (worker + split member) equals the text with
#     the unsplit member, and a one-member ensemble of the split member
#     reproduces the unsplit server's greedy text.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
. tests/integration/lib_llama.sh
need_llama_tools
check() {
  local what=$1; shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}

start_rpc() { # NAME: sets RPC_ADDR once the port accepts connections
  local port i
  port=$(free_port)
  "$LLAMA_BIN/rpc-server" -H 127.0.0.1 -p "$port" -t 1 >"$TMP/$1.out" 2>"$TMP/$1.err" &
  PIDS+=("$!")
  RPC_ADDR=127.0.0.1:$port
  for ((i = 0; i < 300; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_rpc rpc1 && R1=$RPC_ADDR && start_rpc rpc2 && R2=$RPC_ADDR ||
  { echo "1..1"; echo "not ok 1 - two rpc-servers start"; exit 1; }
start_llama_server split "$M2" --rpc "$R1,$R2" -ngl 99 -v ||
  { echo "1..1"; echo "not ok 1 - llama-server over two rpc-servers starts"; exit 1; }
SPLIT=$LLAMA_URL
check "the split server put layers on both RPC devices" bash -c \
  "grep -q 'layer .* assigned to device RPC0' '$TMP/split.err' && grep -q 'layer .* assigned to device RPC1' '$TMP/split.err'"
start_llama_server whole "$M2" ||
  { echo "1..1"; echo "not ok 1 - unsplit llama-server starts"; exit 1; }
WHOLE=$LLAMA_URL
start_worker wa "$M1" || { echo "1..1"; echo "not ok 1 - worker starts"; exit 1; }

probs() { # URL PROMPT: "id prob" lines of the top 20 next tokens
  curl -s "$1/completion" -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg p "$2" '{prompt: $p, n_predict: 1, n_probs: 20, temperature: 0, cache_prompt: false}')" |
    jq -r '.completion_probabilities[0].top_logprobs[] | "\(.id) \(.logprob | exp)"'
}
for prompt in "The old man said that" "In the morning the"; do
  probs "$SPLIT" "$prompt" >"$TMP/p_split"
  probs "$WHOLE" "$prompt" >"$TMP/p_whole"
  check "top-20 ids equal, split vs unsplit ($prompt)" bash -c \
    "[ -s '$TMP/p_split' ] && diff <(cut -d' ' -f1 '$TMP/p_split') <(cut -d' ' -f1 '$TMP/p_whole') >/dev/null"
  check "top-20 probabilities within 1e-4 ($prompt)" bash -c \
    "paste -d' ' '$TMP/p_split' '$TMP/p_whole' | awk '{ d = \$2 - \$4; if (d < 0) d = -d; if (d > 1e-4) bad = 1 } END { exit bad }'"
done

prompt="The committee reported that"
texts=()
for url in "$SPLIT" "$WHOLE"; do
  if start_consort mix serve --port 0 --member a=$WORKER_URL --member lb=llama+$url; then
    texts+=("$(consort_text "$SERVER_URL" "$prompt" 24)")
    stop_consort
  else
    texts+=("(no server)")
  fi
done
check "ensemble with the split member: a text" test -n "${texts[0]}"
check "ensemble text, split member = unsplit member" test "${texts[0]}" = "${texts[1]}"
[ "${texts[0]}" = "${texts[1]}" ] || printf '#   split:   %q\n#   unsplit: %q\n' "${texts[0]}" "${texts[1]}"
if start_consort solo serve --port 0 --member lb=llama+$SPLIT; then
  got=$(consort_text "$SERVER_URL" "$prompt" 24)
  stop_consort
  want=$(llama_greedy "$WHOLE" "$prompt" 24)
  check "one split member = the unsplit server's greedy text" test "$got" = "$want"
else
  check "consort serve with the split member starts" false
fi

echo "1..$n"
[ $failed -eq 0 ]
