#!/usr/bin/env bash
# consort-worker over HTTP with a real model (models/external/stories260K): start on
# port 0, every endpoint, KV reuse through /metrics, bad input of every kind
# (nothing crashes, other sessions unaffected), concurrent clients, clean
# shutdown on SIGTERM, and the start-up errors (missing file, not GGUF);
# then models/b.gguf (GPT-2 BPE) survives bytes its tokenizer throws on.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${CONSORT_BUILD:-build}/consort-worker
MODEL=${CONSORT_ROOT:-$PWD}/models/external/stories260K.gguf
n=0; fails=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
is() { [ "$1" = "$2" ]; local r=$?; [ $r = 0 ] || echo "#   got '$1', want '$2'"; ok $r "$3"; }
tmp=$(mktemp -d); pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# ---- start-up errors ----
"$B" --help >"$tmp/help" 2>&1; is "$?" 0 "--help exits 0"
grep -q -- "--parallel" "$tmp/help"; ok $? "--help lists the flags"
"$B" --model "$tmp/none.gguf" --port 0 >"$tmp/o" 2>"$tmp/e"; r=$?
[ $r -ne 0 ] && grep -q "cannot open model file" "$tmp/e"; ok $? "missing model file: non-zero exit and a clear message"
echo "not a model" >"$tmp/bad.gguf"
"$B" --model "$tmp/bad.gguf" --port 0 >"$tmp/o" 2>"$tmp/e"; r=$?
[ $r -ne 0 ] && grep -q "not a GGUF file" "$tmp/e"; ok $? "not GGUF: non-zero exit and a clear message"
printf 'GGUF\003\000\000\000garbage' >"$tmp/trunc.gguf"
"$B" --model "$tmp/trunc.gguf" --port 0 >"$tmp/o" 2>"$tmp/e"; r=$?
[ $r -ne 0 ] && grep -q "could not load" "$tmp/e"; ok $? "corrupt GGUF: non-zero exit and a clear message"
"$B" --bogus >"$tmp/o" 2>"$tmp/e"; r=$?
[ $r -eq 2 ]; ok $? "unknown option exits 2"

# ---- start ----
"$B" --model "$MODEL" --port 0 --threads 1 --ctx-size 128 --parallel 4 --name tiny --max-body 65536 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" && break; sleep 0.1; done
line=$(head -1 "$tmp/out")
[[ "$line" =~ ^consort-worker\ listening\ on\ http://127\.0\.0\.1:[0-9]+$ ]]; ok $? "prints the listening line ($line)"
U=${line#consort-worker listening on }
req() { # method path [body] -> "status body"
  local m=$1 p=$2 b=${3-}
  if [ -n "$b" ]; then curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -X "$m" -H 'Content-Type: application/json' --data-binary "$b" "$U$p"
  else curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -X "$m" "$U$p"; fi
}
body() { cat "$tmp/body"; }
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$tmp/body" | head -1; }
code() { sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$tmp/body"; }
metric() { curl -s -m 10 "$U/metrics" | sed -n "s/^$1 \([0-9.e+]*\)$/\1/p"; }

is "$(req GET /health)" 200 "GET /health"
grep -q '"status":"ok"' "$tmp/body" && grep -q '"name":"tiny"' "$tmp/body"; ok $? "health says ok with the name"
is "$(req GET /v1/info)" 200 "GET /v1/info"
is "$(field vocab_size)" 512 "info: vocab size"
is "$(field bos)" 1 "info: bos"
is "$(field has_chat_template)" false "info: no chat template"
is "$(req GET /v1/vocab)" 200 "GET /v1/vocab"
[ "$(grep -o '"byte"' "$tmp/body" | wc -l)" = 256 ] && [ "$(grep -o '"normal"' "$tmp/body" | wc -l)" -gt 200 ]; ok $? "vocab lists token kinds (256 byte-fallback tokens)"
is "$(req POST /v1/tokenize '{"text":"Once upon a time"}')" 200 "POST /v1/tokenize"
toks=$(sed -n 's/.*"tokens":\(\[[^]]*\]\).*/\1/p' "$tmp/body")
is "$(req POST /v1/detokenize "{\"tokens\":$toks}")" 200 "POST /v1/detokenize"
is "$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' "$tmp/body")" " Once upon a time" "detokenize gives the raw token bytes (SentencePiece's leading space included)"
is "$(req POST /v1/detokenize "{\"tokens\":$toks,\"strip_space_prefix\":true}")" 200 "POST /v1/detokenize, strip_space_prefix"
is "$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' "$tmp/body")" "Once upon a time" "detokenize(tokenize(x), strip_space_prefix) = x"

# ---- steps and KV reuse ----
d0=$(metric consort_worker_tokens_decoded_total)
is "$(req POST /v1/step '{"session":"g","prompt":"Once upon a time","k":3}')" 200 "step creates a session"
first=$(body)
npast=$(field n_past)
text=""
for i in $(seq 10); do
  s=$(sed -n 's/.*"top":\[{"s_b64":"\([^"]*\)".*/\1/p' "$tmp/body")
  text="$text$(printf %s "$s" | base64 -d)"
  req POST /v1/step "{\"session\":\"g\",\"append_b64\":\"$s\",\"k\":3}" >/dev/null
done
d1=$(metric consort_worker_tokens_decoded_total)
is "$((d1 - d0))" "$((npast + 10))" "prompt + 10 greedy steps decoded prompt + 10 tokens (metrics)"
echo "# greedy: $text"
is "$(field n_past)" "$((npast + 10))" "n_past grew by one per step"
is "$(req POST /v1/step '{"session":"g","k":3}')" 200 "re-asking the same state"
is "$(field decoded)" 0 "re-asking decodes nothing"
state=$(body)

# ---- bad input: nothing crashes, the session is unaffected ----
is "$(req POST /v1/step '{"session": "g", "k": ')" 400 "malformed JSON is 400"
is "$(code)" invalid_json "malformed JSON code"
is "$(req POST /v1/step '[1,2]')" 400 "a non-object body is 400"
is "$(req POST /v1/step '{"session":"g","k":"5"}')" 400 "k of the wrong type is 400"
is "$(code)" invalid_type "wrong type code"
is "$(req POST /v1/step '{"session":7}')" 400 "session of the wrong type is 400"
is "$(req POST /v1/step '{"session":"g","candidates_b64":"abc"}')" 400 "candidates not an array is 400"
is "$(req POST /v1/step '{"session":"g","heal_prompt":1}')" 400 "heal_prompt not a boolean is 400"
is "$(req POST /v1/step '{"session":"nobody","k":3}')" 404 "unknown session is 404"
is "$(code)" session_not_found "unknown session code"
is "$(req POST /v1/step '{"session":"bad id!","prompt":"x"}')" 400 "a bad session id is 400"
is "$(req POST /v1/step '{"session":"g","k":257}')" 400 "k above 256 is 400"
is "$(req POST /v1/step '{"session":"g","k":-1}')" 400 "negative k is 400"
is "$(req POST /v1/step '{"session":"g","append_b64":"***"}')" 400 "invalid base64 is 400"
is "$(req POST /v1/step $'{"session":"x","prompt":"\xff\xfe"}')" 400 "invalid UTF-8 in a prompt is 400"
is "$(req POST /v1/step '{"session":"x","prompt":"a","messages":[{"role":"user","content":"b"}]}')" 400 "prompt and messages together is 400"
is "$(req POST /v1/step '{"session":"x","messages":[{"role":"user"}]}')" 400 "a message without content is 400"
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
is "$(req POST /v1/step "{\"session\":\"x\",\"prompt\":\"$big\"}")" 413 "a body over --max-body is 413"
is "$(code)" body_too_large "413 code"
long=$(for i in $(seq 60); do printf 'the cat sat on the mat. '; done)
is "$(req POST /v1/step "{\"session\":\"x\",\"prompt\":\"$long\"}")" 400 "a prompt over the context is 400"
is "$(code)" context_length_exceeded "context overflow code"
is "$(req POST /v1/detokenize '{"tokens":[1,99999]}')" 400 "detokenize of an unknown id is 400"
is "$(req POST /v1/score '{"text":5}')" 400 "score text of the wrong type is 400"
is "$(req GET /v1/step)" 405 "GET /v1/step is 405"
is "$(req GET /nowhere)" 404 "unknown endpoint is 404"
is "$(req POST /v1/step '{"session":"g","k":3}')" 200 "the session still answers"
[ "$(body)" = "$state" ]; ok $? "... exactly as before the bad requests"

# ---- chat messages (fallback rendering) ----
is "$(req POST /v1/step '{"session":"c","messages":[{"role":"user","content":"Hi"}],"k":2}')" 200 "a chat prompt through the fallback template"

# ---- score ----
is "$(req POST /v1/score '{"text":"Once upon a time, there was a girl."}')" 200 "POST /v1/score"
[ "$(grep -o '"logprob"' "$tmp/body" | wc -l)" = "$(field n_tokens)" ]; ok $? "one entry per token"
is "$(req POST /v1/score "{\"text\":\"$long\"}")" 200 "a text longer than the context is scored in windows"
is "$(field window_overlap)" 64 "window overlap is half the context"

# ---- concurrency: three clients at once give what each gives alone ----
run_client() { # session prompt -> greedy strings
  local sid=$1 p=$2 out=$3 s
  curl -s -m 20 -X POST --data-binary "{\"session\":\"$sid\",\"prompt\":\"$p\",\"k\":2}" "$U/v1/step" >"$out.json"
  : >"$out"
  for i in $(seq 8); do
    s=$(sed -n 's/.*"top":\[{"s_b64":"\([^"]*\)".*/\1/p' "$out.json")
    echo "$s" >>"$out"
    curl -s -m 20 -X POST --data-binary "{\"session\":\"$sid\",\"append_b64\":\"$s\",\"k\":2}" "$U/v1/step" >"$out.json"
  done
}
prompts=("Once upon a time" "The dog" "Lily saw")
for i in 0 1 2; do run_client "solo$i" "${prompts[$i]}" "$tmp/solo$i"; done
for i in 0 1 2; do run_client "par$i" "${prompts[$i]}" "$tmp/par$i" & done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
same=0
for i in 0 1 2; do cmp -s "$tmp/solo$i" "$tmp/par$i" || same=1; done
ok $same "three concurrent clients get the same greedy text as alone"

# ---- sessions, metrics, shutdown ----
req POST /v1/step '{"session":"d","prompt":"Hi","k":1}' >/dev/null
is "$(req DELETE /v1/session/d)" 200 "DELETE a session"
is "$(req DELETE /v1/session/d)" 404 "DELETE it again is 404"
is "$(req POST /v1/step '{"session":"d","k":1}')" 404 "a deleted session is gone"
m=$(curl -s -m 10 "$U/metrics")
for k in 'consort_worker_requests_total{endpoint="step"}' consort_worker_tokens_decoded_total \
         'consort_worker_step_seconds_bucket{le="+Inf"}' consort_worker_sessions_in_use consort_worker_errors_total; do
  grep -qF "$k" <<<"$m"; ok $? "metrics has $k"
done
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
wait "$pid"; r=$?; pid=
is "$r" 0 "SIGTERM: clean exit 0"

# ---- bytes that make llama.cpp throw (GPT-2 BPE, models/b.gguf) ----
# F4 90 80 80 (9JCAgA==) is beyond U+10FFFF: llama_tokenize throws on it, which
# aborted the worker. Now the step falls back to longest match and the worker
# keeps serving (tests/unit/worker/test_wk_hostile_bytes.c has the details).
"$B" --model "${CONSORT_ROOT:-$PWD}/models/b.gguf" --port 0 --threads 1 --ctx-size 128 --parallel 2 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" && break; sleep 0.1; done
U=$(sed -n 's/^consort-worker listening on //p' "$tmp/out")
is "$(req POST /v1/step '{"session":"h","prompt":"Hello world","k":2}')" 200 "b.gguf: a session starts"
is "$(req POST /v1/step '{"session":"h","candidates_b64":["9JCAgA==","IHRoZQ=="],"k":2}')" 200 "b.gguf: candidates 9JCAgA== are answered"
is "$(req POST /v1/step '{"session":"h","append_b64":"9JCAgA==","k":2}')" 200 "b.gguf: append_b64 9JCAgA== is answered"
is "$(field residue_b64)" '"gA=="' "b.gguf: committed byte by byte, the last byte is the residue"
kill -0 "$pid" 2>/dev/null; ok $? "b.gguf: the worker is still running"
is "$(req POST /v1/step '{"session":"h","append_b64":"IGFuZA==","k":2}')" 200 "b.gguf: the session then serves a normal step"
is "$(req POST /v1/step '{"session":"h2","prompt":"Once","k":2}')" 200 "b.gguf: and a new session"
kill -TERM "$pid"; wait "$pid"; r=$?; pid=
is "$r" 0 "b.gguf: SIGTERM: clean exit 0"
echo "1..$n"
[ $fails = 0 ]
