#!/usr/bin/env bash
# Any OpenAI-compatible server as a member (--member NAME=openai+URL/v1
# --tokenizer NAME=PATH, coordinator/engine/member_openai.c), against the
# real llama-server built from the bundled llama.cpp source
# (scripts/llama_tools.sh), spoken to only through its OpenAI /v1 API, with
# the model's GGUF as the local tokenizer (vocabulary only):
#   1. a one-member ensemble of it reproduces llama-server's own greedy text
#      (its /completion at temperature 0), for two prompts; /v1/models lists
#      it with kind "openai" and exact false;
#   2. weights (1,0) with a consort-worker member give that worker's text
#      exactly;
#   3. a mixture of an openai+ member (models/b.gguf, GPT-2 BPE) and a worker
#      with a different tokenizer (models/a.gguf, SentencePiece) runs through
#      the OpenAI API, streaming included; the stats mark it approximate;
#   4. the errors: no --tokenizer, an unreadable one, a file that is no
#      tokenizer, a --tokenizer for no member; --help names the option.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
. tests/integration/lib_llama.sh
need_llama_tools

STEPS=24
start_llama_server lla "$M1" || { echo "1..1"; echo "not ok 1 - llama-server (a) starts"; exit 1; }
LLA=$LLAMA_URL
start_llama_server llb "$M2" || { echo "1..1"; echo "not ok 1 - llama-server (b) starts"; exit 1; }
LLB=$LLAMA_URL
start_worker wa "$M1" || { echo "1..1"; echo "not ok 1 - worker starts"; exit 1; }
WA=$WORKER_URL

# 1. one-member ensemble = llama-server's own greedy text, for both tokenizers
for pair in "oa|$LLA|$M1" "ob|$LLB|$M2"; do
  IFS='|' read -r name url model <<<"$pair"
  if start_consort "solo$name" serve --port 0 --member "$name=openai+$url/v1" --tokenizer "$name=$model"; then
    for prompt in "The old man said that" "It was a dark and stormy night, and"; do
      want=$(llama_greedy "$url" "$prompt" $STEPS)
      got=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
      check "one openai+ member ($name): text is not empty ($prompt)" test -n "$got"
      same "one openai+ member ($name) = llama-server's greedy text ($prompt)" "$got" "$want"
    done
    models=$(curl -s "$SERVER_URL/models")
    check "/v1/models: $name's kind is openai, exact false" bash -c \
      "jq -e '.data[] | select(.id == \"$name\") | .member_kind == \"openai\" and .exact == false' <<<'$models' >/dev/null"
    stop_consort
  else
    check "consort serve with an openai+ member ($name) starts" false
  fi
done

# 2. weights (1,0): the worker's text exactly
prompt="She opened the door and"
if start_consort wonly serve --port 0 --member a=$WA; then
  want=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
  stop_consort
  if start_consort w10 serve --port 0 --member a=$WA --member ob=openai+$LLB/v1 --tokenizer ob=$M2 --weights 1,0; then
    got=$(consort_text "$SERVER_URL" "$prompt" $STEPS)
    check "weights (1,0): a text" test -n "$got"
    same "weights (1,0) with an openai+ member = the worker's own text" "$got" "$want"
    stop_consort
  else
    check "consort serve with a worker and an openai+ member starts" false
  fi
else
  check "consort serve with one worker starts" false
fi

# 3. a mixture across tokenizers, through the OpenAI API, streaming too
if start_consort mix serve --port 0 --member a=$WA --member ob=openai+$LLB/v1 --tokenizer ob=$M2; then
  body=$(curl -s "$SERVER_URL/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "The committee reported that", "max_tokens": 16, "temperature": 0}')
  check "mixture: a completion text" bash -c "jq -e '.choices[0].text | length > 0' <<<'$body' >/dev/null"
  check "mixture: the ensemble stats mark ob approximate, a not" bash -c \
    "jq -e '(.ensemble.members[] | select(.name == \"ob\") | .approximate == true) and (.ensemble.members[] | select(.name == \"a\") | has(\"approximate\") | not)' <<<'$body' >/dev/null"
  check "mixture: no member failed" bash -c "jq -e '.ensemble.failures == 0' <<<'$body' >/dev/null"
  check "mixture: ob won some steps (its masses count)" bash -c \
    "jq -e '.ensemble.members[] | select(.name == \"ob\") | .steps_won > 0' <<<'$body' >/dev/null"
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

# 4. errors: clear messages, non-zero exit, nothing started
err_of() { "$B/consort" generate --prompt x --max-tokens 1 "$@" 2>&1 >/dev/null; echo "rc=$?"; }
out=$(err_of --member ob=openai+$LLB/v1)
check "no --tokenizer: refused, the message names the option" bash -c \
  "grep -q 'rc=2' <<<'$out' && grep -q -- '--tokenizer ob=PATH' <<<'$out'"
out=$(err_of --member ob=openai+$LLB/v1 --tokenizer ob=$TMP/missing.gguf)
check "unreadable --tokenizer: refused with the path" bash -c \
  "grep -q 'rc=2' <<<'$out' && grep -q 'cannot read' <<<'$out' && grep -q 'missing.gguf' <<<'$out'"
echo "not a tokenizer" >"$TMP/junk.model"
out=$(err_of --member ob=openai+$LLB/v1 --tokenizer ob=$TMP/junk.model)
check "a file that is no tokenizer: refused, not a crash" bash -c \
  "! grep -q 'rc=0' <<<'$out' && ! grep -q 'rc=1[3-9][0-9]' <<<'$out' && grep -q 'neither a GGUF file nor a SentencePiece model' <<<'$out'"
out=$(err_of --member ob=openai+$LLB/v1 --tokenizer ob=$M2 --tokenizer zz=$M1)
has() { grep -qF -- "$2" <<<"$1"; }
check "--tokenizer for no member: refused" eval 'has "$out" rc=2 && has "$out" "no member named '"'zz'"'"' 
check "consort serve --help documents --tokenizer and openai+" bash -c \
  "'$B/consort' serve --help | grep -q -- '--tokenizer NAME=PATH' && '$B/consort' serve --help | grep -q 'openai+http'"

tap_done
