#!/usr/bin/env bash
# A running llama.cpp llama-server as a member (--member NAME=llama+URL,
# coordinator/engine/member_llama.c), against the real server built from the
# bundled llama.cpp source (scripts/llama_tools.sh):
#   1. a one-member ensemble of it reproduces llama-server's own greedy text
#      (its /completion at temperature 0), for two prompts;
#   2. weights (1,0) with a consort-worker member give that worker's text
#      exactly (the llama-server member's masses do not leak in);
#   3. a mixture of a llama-server member (models/b.gguf, GPT-2 BPE) and a
#      worker with a different tokenizer (models/a.gguf, SentencePiece) runs
#      through the OpenAI API, streaming included; the response's ensemble
#      stats and /v1/models mark the llama-server member approximate.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
. tests/integration/lib_llama.sh
need_llama_tools

STEPS=24
start_llama_server llb "$M2" || { echo "1..1"; echo "not ok 1 - llama-server starts"; exit 1; }
LLB=$LLAMA_URL LLB_PID=$LLAMA_PID
start_worker wa "$M1" || { echo "1..1"; echo "not ok 1 - worker starts"; exit 1; }
WA=$WORKER_URL

# 1. one-member ensemble = llama-server's own greedy text
if start_consort solo serve --port 0 --member lb=llama+$LLB; then
  for prompt in "The old man said that" "It was a dark and stormy night, and"; do
    want=$(llama_greedy "$LLB" "$prompt" $STEPS)
    got=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
    check "one llama-server member: text is not empty ($prompt)" test -n "$got"
    [ -n "$got" ] || sed 's/^/#   consort: /' "$TMP/solo.err" | tail -n 12 # (seen once under CI load: say why)
    same "one llama-server member = llama-server's greedy text ($prompt)" "$got" "$want"
  done
  # llama-server's lists are one softmax: their masses are consistent, so
  # consort has nothing to scale (an own-path probability left unset in
  # member_align.c once made them sum past 1, and a text end at step 0)
  check "one llama-server member: its masses needed no scaling" bash -c "! grep -q 'summing to' '$TMP/solo.err'"
  models=$(curl -s "$SERVER_URL/models")
  check "/v1/models: the member's kind is llama-server, approximate" bash -c \
    "jq -e '.data[] | select(.id == \"lb\") | .member_kind == \"llama-server\" and .exact == false' <<<'$models' >/dev/null"
  stop_consort
else
  check "consort serve with a llama-server member starts" false
fi

# 2. weights (1,0): the worker's text exactly
prompt="She opened the door and"
if start_consort wonly serve --port 0 --member a=$WA; then
  want=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
  stop_consort
  if start_consort w10 serve --port 0 --member a=$WA --member lb=llama+$LLB --weights 1,0; then
    got=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
    check "weights (1,0): a text" test -n "$got"
    same "weights (1,0) with a llama-server member = the worker's own text" "$got" "$want"
    stop_consort
  else
    check "consort serve with a worker and a llama-server member starts" false
  fi
else
  check "consort serve with one worker starts" false
fi

# 3. a mixture across tokenizers, through the OpenAI API, streaming too
if start_consort mix serve --port 0 --member a=$WA --member lb=llama+$LLB; then
  body=$(curl -s "$SERVER_URL/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "The committee reported that", "max_tokens": 16, "temperature": 0}')
  check "mixture: a completion text" bash -c "jq -e '.choices[0].text | length > 0' <<<'$body' >/dev/null"
  check "mixture: the ensemble stats mark lb approximate, a not" bash -c \
    "jq -e '(.ensemble.members[] | select(.name == \"lb\") | .approximate == true) and (.ensemble.members[] | select(.name == \"a\") | has(\"approximate\") | not)' <<<'$body' >/dev/null"
  check "mixture: no member failed" bash -c "jq -e '.ensemble.failures == 0' <<<'$body' >/dev/null"
  curl -sN "$SERVER_URL/chat/completions" -H 'Content-Type: application/json' \
    -d '{"messages": [{"role": "user", "content": "Tell me about the city."}], "max_tokens": 12, "temperature": 0.7, "seed": 3, "stream": true}' \
    >"$TMP/stream"
  check "mixture, chat, streaming: chunks and [DONE]" bash -c \
    "grep -q '^data: {.*chat.completion.chunk' '$TMP/stream' && tail -n 3 '$TMP/stream' | grep -q '^data: \[DONE\]'"
  check "mixture, chat, streaming: no error event" bash -c "! grep -q '\"error\"' '$TMP/stream'"
  stop_consort
else
  check "consort serve with a mixture starts" false
fi

# 4. a llama-server that stops answering: a clear 503 naming the member by
#    name, never its address (the address is in consort's log only)
if start_consort stall serve --port 0 --member lb=llama+$LLB --step-timeout 1; then
  kill -STOP "$LLB_PID"
  code=$(curl -s -o "$TMP/stall.body" -w '%{http_code}' "$SERVER_URL/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "The old man said that", "max_tokens": 8, "temperature": 0}')
  kill -CONT "$LLB_PID"
  check "a stalled llama-server member: 503 with an error object" bash -c \
    "[ '$code' = 503 ] && jq -e '.error.message | length > 0' '$TMP/stall.body' >/dev/null"
  check "... whose message has no address" bash -c "! grep -q '127.0.0.1\\|http://' '$TMP/stall.body'"
  check "... which consort's log has" grep -q "lb.*http://127.0.0.1" "$TMP/stall.err"
  stop_consort
else
  check "consort serve with a llama-server member starts (stall)" false
fi

echo "1..$n"
[ $failed -eq 0 ]
