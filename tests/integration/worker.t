#!/usr/bin/env bash
# consort-worker over HTTP with a real model (models/external/stories260K): start on
# port 0, every endpoint, KV reuse through /metrics, bad input of every kind
# (nothing crashes, other sessions unaffected), concurrent clients, clean
# shutdown on SIGTERM, and the start-up errors (missing file, not GGUF);
# then models/b.gguf (GPT-2 BPE) survives bytes its tokenizer throws on.
# Access and limits: the token (missing, wrong, right; /metrics behind it,
# --metrics-public), the refusal to listen beyond loopback without one and
# --insecure, sessions bound to the token that opened them, the compute
# budgets refused fast, the deadline header and a client that hangs up, no
# internal paths in errors, and TLS end to end with curl --cacert.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${CONSORT_BUILD:-build}/consort-worker
MODEL=${CONSORT_ROOT:-$PWD}/models/external/stories260K.gguf
n=0; fails=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails+1)); fi; }
is() { [ "$1" = "$2" ]; local r=$?; [ $r = 0 ] || echo "#   got '$1', want '$2'"; ok $r "$3"; }
tmp=$(mktemp -d); pid=; pids=()
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
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
part() { metric "consort_worker_seconds_total{part=\"$1\"}"; }
d0=$(metric consort_worker_tokens_decoded_total)
st0=$(part step) dt0=$(part decode) sm0=$(part softmax)
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
# one caller at a time: its decodes and softmaxes lie inside its steps
awk -v st="$(part step)" -v d="$(part decode)" -v sm="$(part softmax)" -v st0="$st0" -v d0="$dt0" -v sm0="$sm0" \
  'BEGIN { st -= st0; d -= d0; sm -= sm0; exit !(d > 0 && sm > 0 && d + sm <= st && st < 600) }'
ok $? "the time parts of 11 steps add up: decode + softmax within the engine's step time (metrics)"
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

# ---- the next-byte walk (POST /v1/next_bytes) ----
errobj() { python3 -c "
import json, sys
e = json.load(open('$tmp/body'))['error']
sys.exit(0 if e['type'] == 'invalid_request_error' and e['message'] and e['code'] == '$1' and e.get('param') == '$2' else 1)"; }
is "$(req POST /v1/next_bytes '{"text_b64": "***"}')" 400 "next_bytes: invalid base64 is 400"
errobj invalid_base64 text_b64; ok $? "next_bytes: an OpenAI-style error object, code invalid_base64, param text_b64"
is "$(req POST /v1/next_bytes '{"text_b64": "YWJj", "beam": 0}')" 400 "next_bytes: beam 0 is 400"
errobj invalid_value beam; ok $? "next_bytes: code invalid_value, param beam"
is "$(req POST /v1/next_bytes '{"text_b64": ""}')" 400 "next_bytes: an empty text is 400"
errobj invalid_value text_b64; ok $? "next_bytes: code invalid_value, param text_b64"
is "$(req POST /v1/next_bytes '{"beam": 4}')" 400 "next_bytes: no text_b64 is 400"
is "$(req GET /v1/next_bytes)" 405 "next_bytes: GET is 405"
is "$(req POST /v1/next_bytes '{"text_b64": "T25jZSB1cG9uIGEgdGltZQ==", "beam": 2}')" 200 "next_bytes: a text is walked"
python3 -c "
import json, sys, base64, struct, math
j = json.load(open('$tmp/body')); d = base64.b64decode(j['dist_b64'])
rows = [struct.unpack_from('<257f', d, 4 * 257 * i) for i in range(j['n_bytes'])]
sums = [sum(math.exp(x) for x in r if x > -1e30) for r in rows]
sys.exit(0 if j['n_bytes'] == 16 and len(d) == 16 * 257 * 4 and all(abs(s - 1) < 1e-4 for s in sums) else 1)"
ok $? "next_bytes: 16 rows of 257 little-endian float32 log-probabilities, each summing to 1"

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

# ---- sessions belong to the token that opened them ----
A='Authorization: Bearer token-a'; Bt='Authorization: Bearer token-b'
areq() { # header method path [body] -> status
  curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -H "$1" -X "$2" --data-binary "${4-}" "$U$3"
}
is "$(areq "$A" POST /v1/step '{"session":"own","prompt":"Once upon","k":2}')" 200 "a session opened under token a"
areq "$A" POST /v1/step '{"session":"own","k":2}' >/dev/null; owned=$(body)
is "$(areq "$Bt" POST /v1/step '{"session":"own","k":2}')" 404 "token b cannot step it"
is "$(code)" session_not_found "... it reads as an unknown session"
is "$(req POST /v1/step '{"session":"own","k":2}')" 404 "no token cannot step it either"
is "$(areq "$Bt" DELETE /v1/session/own)" 404 "token b cannot delete it"
is "$(areq "$Bt" POST /v1/step '{"session":"own","prompt":"Lily","append_b64":"IGE=","k":2}')" 200 \
  "token b opening the same id gets a session of its own"
is "$(areq "$A" POST /v1/step '{"session":"own","k":2}')" 200 "token a still steps its session"
[ "$(body)" = "$owned" ]; ok $? "... unchanged by token b's requests"
is "$(areq "$A" DELETE /v1/session/own)" 200 "token a deletes it"

# ---- deadline header ----
is "$(curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -H 'X-Consort-Deadline-Ms: soon' --data-binary '{"session":"g","k":3}' "$U/v1/step")" 400 \
  "a deadline header that is not a number is 400"
is "$(code)" invalid_value "... invalid_value"
longtext=$(for i in $(seq 250); do printf 'the cat sat on the mat and then it went home. '; done)
printf '{"text":"%s"}' "$longtext" >"$tmp/long.json"
t0=$(date +%s%N)
st=$(curl -s -m 60 -o "$tmp/body" -w '%{http_code}' -H 'X-Consort-Deadline-Ms: 200' --data-binary @"$tmp/long.json" "$U/v1/score")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
is "$st" 503 "a /v1/score past its deadline is 503 (after $ms ms)"
is "$(code)" deadline_exceeded "... deadline_exceeded"
[ "$ms" -lt 3000 ]; ok $? "... and stops early (deadline 200 ms, answered in $ms ms)"
req POST /v1/step '{"session":"dl","prompt":"Once upon a time","k":3}' >/dev/null
req POST /v1/step '{"session":"dl","k":3}' >/dev/null; dlstate=$(body)
# A client that gives up after 1.5 s while its long /v1/score runs (a text
# four times longer than the one above, so that its scoring outlasts the
# client's 1.5 s even on a quiet machine). Steps are not held up by it (the
# decode scheduler gives a step its batch between the score's chunks); a
# step whose 200 ms deadline passes before the worker has its whole body
# (sent chunked, 0.6 s late) is refused when it starts.
printf '{"text":"%s%s%s%s"}' "$longtext" "$longtext" "$longtext" "$longtext" >"$tmp/longer.json"
curl -s -m 1.5 -o /dev/null --data-binary @"$tmp/longer.json" "$U/v1/score" &
bg=$!
sleep 0.3
dlreq="{\"session\":\"dl\",\"append_b64\":\"IGE=\",\"candidates_b64\":[\"$(printf ' and then' | base64)\"],\"k\":3}"
is "$( (sleep 0.6; printf '%s' "$dlreq") | curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -X POST -H 'X-Consort-Deadline-Ms: 200' -H 'Transfer-Encoding: chunked' -T - "$U/v1/step")" \
  503 "a step whose deadline passed before it could start is 503"
is "$(code)" deadline_exceeded "... deadline_exceeded"
wait $bg
for _ in $(seq 150); do grep -q 'rejected 503 cancelled' "$tmp/err" && break; sleep 0.1; done
grep -q "rejected 503 cancelled" "$tmp/err"; ok $? "a client that hangs up stops its /v1/score (logged as cancelled)"
is "$(req POST /v1/step '{"session":"dl","k":3}')" 200 "the session after a step past its deadline"
[ "$(body)" = "$dlstate" ]; ok $? "... is as it was"

# ---- speculative steps: draft and steps_b64 ----
is "$(req POST /v1/step '{"session":"sp","prompt":"Once upon a time","k":1,"draft":3}')" 200 "a step with draft 3"
drafts=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["draft"]), d["draft"][0]["n_past"] > d["n_past"], "session" in d["draft"][0])' "$tmp/body")
is "$drafts" "3 True False" "... answers 3 drafted steps (no session field, further along)"
p1=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["top"][0]["s_b64"], d["draft"][0]["top"][0]["s_b64"], d["draft"][1]["n_past"])' "$tmp/body")
set -- $p1
is "$(req POST /v1/step "{\"session\":\"sp\",\"k\":1,\"steps_b64\":[\"$1\"],\"append_b64\":\"$2\"}")" 200 "steps_b64 + append of the first two drafted strings"
is "$(field n_past)" "$3" "... reaches the second drafted state"
is "$(req POST /v1/step '{"session":"sp","k":1,"draft":17}')" 400 "draft over 16 is 400"
# draft_b64: another member's pieces (" the", " cat", " sat"), answered after each
is "$(req POST /v1/step '{"session":"sp","k":2,"draft_b64":["IHRoZQ==","IGNhdA==","IHNhdA=="]}')" 200 "a step with draft_b64 of 3 pieces"
drafts=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["draft"]), d["draft"][2]["n_past"] > d["n_past"], len(d["draft"][0]["top"]))' "$tmp/body")
is "$drafts" "3 True 2" "... answers 3 drafted steps, further along, k entries each"
is "$(req POST /v1/step '{"session":"sp","k":1,"draft":2,"draft_b64":["IHRoZQ=="]}')" 400 "draft with draft_b64 is 400"
is "$(code)" invalid_request "... invalid_request"
is "$(req POST /v1/step '{"session":"sp","k":1,"draft_b64":["IHRoZQ==",""]}')" 400 "an empty draft_b64 piece is 400"
seventeen=$(python3 -c 'import json; print(json.dumps(["IHRoZQ=="] * 17))')
is "$(req POST /v1/step "{\"session\":\"sp\",\"k\":1,\"draft_b64\":$seventeen}")" 400 "17 draft_b64 pieces is 400"

# ---- no internal paths in answers ----
grep -h -o '"message":"[^"]*"' "$tmp"/body 2>/dev/null >/dev/null
for probe in "POST /v1/step {\"session\":\"zz\",\"k\":1}" "POST /v1/score {\"text\":5}" "GET /nowhere" "POST /v1/step {\"session\":\"x\",\"prompt\":\"$long\"}"; do
  set -- $probe; req "$1" "$2" "${3-}" >/dev/null
  ! grep -qE "$MODEL|$PWD|/models/|\.gguf" "$tmp/body"; ok $? "no internal path in the answer to $1 $2"
done

# ---- access: a token, loopback, TLS ----
start_worker() { # out-file args... -> URL in $W (pid appended to pids)
  local out=$1; shift
  : >"$out"
  "$B" --model "$MODEL" --port 0 --threads 1 --ctx-size 128 "$@" >"$out" 2>"$out.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
  W=$(sed -n 's/^consort-worker listening on //p' "$out")
}
"$B" --model "$MODEL" --host 0.0.0.0 --port 0 >"$tmp/o" 2>"$tmp/e"; r=$?
is "$r" 2 "0.0.0.0 without a token: refuses to start (exit 2)"
grep -q "refusing to listen on 0.0.0.0 without a token" "$tmp/e"; ok $? "... with a clear message"
CONSORT_TOKEN= start_worker "$tmp/ins" --host 0.0.0.0 --insecure
[ -n "$W" ]; ok $? "0.0.0.0 with --insecure starts"
grep -q "without a token (--insecure)" "$tmp/ins.err"; ok $? "... and warns"

printf 'file-secret-123\n' >"$tmp/tok"; chmod 644 "$tmp/tok"
start_worker "$tmp/tw" --token-file "$tmp/tok" --name tw
grep -q "can be read by others" "$tmp/tw.err"; ok $? "a token file readable by others gets a warning"
treq() { curl -s -m 20 -o "$tmp/body" -w '%{http_code}' "$@"; }
is "$(treq "$W/health")" 200 "with a token: /health is open"
is "$(treq "$W/v1/info")" 401 "with a token: /v1/info without it is 401"
is "$(code)" invalid_api_key "... invalid_api_key"
is "$(treq -H 'Authorization: Bearer wrong' "$W/v1/info")" 401 "a wrong token is 401"
is "$(treq -H 'Authorization: Bearer file-secret-123' "$W/v1/info")" 200 "the right token is 200"
is "$(treq -X POST --data-binary '{"session":"s","prompt":"Hi"}' "$W/v1/step")" 401 "/v1/step without the token is 401"
is "$(treq "$W/metrics")" 401 "/metrics is behind the token"
is "$(treq -H 'Authorization: Bearer file-secret-123' "$W/metrics")" 200 "... and open with it"
! grep -q "file-secret-123" "$tmp/tw.err"; ok $? "the token is not in the log"
grep -q "rejected 401 invalid_api_key" "$tmp/tw.err"; ok $? "each 401 is logged"

CONSORT_TOKEN=env-secret start_worker "$tmp/te" --metrics-public --max-forced 4 --max-score-tokens 50
H='Authorization: Bearer env-secret'
is "$(treq "$W/metrics")" 200 "--metrics-public: /metrics without the token"
is "$(treq "$W/v1/info")" 401 "CONSORT_TOKEN: /v1/info needs it"
is "$(treq -H "$H" "$W/v1/info")" 200 "CONSORT_TOKEN: the right token is 200"
python3 - "$tmp/big.json" <<'PY'
import base64, json, sys
json.dump({"session": "b", "prompt": "Once upon a time",
           "candidates_b64": [base64.b64encode(b"x" * 200).decode()] * 512}, open(sys.argv[1], "w"))
PY
t0=$(date +%s%N)
is "$(treq -H "$H" --data-binary @"$tmp/big.json" "$W/v1/step")" 400 "512 candidates of 200 bytes: 400"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
is "$(code)" budget_exceeded "... budget_exceeded"
grep -q '"param":"candidates_b64"' "$tmp/body"; ok $? "... naming candidates_b64"
[ "$ms" -lt 2000 ]; ok $? "... refused fast ($ms ms)"
is "$(treq -H "$H" --data-binary '{"session":"f","prompt":"Once upon a time","k":2}' "$W/v1/step")" 200 "a session for the forced budget"
# The state (text, tokens, proposals), not the numbers: the refused step may
# have decoded its own token already, so the re-ask re-decodes one position
# and its floats agree to rounding only.
shape() { sed -e 's/"decoded":[0-9]*//' -e 's/logq":[^,}]*//g' -e 's/logp":[^,}]*//g' "$tmp/body"; }
treq -H "$H" --data-binary '{"session":"f","k":2}' "$W/v1/step" >/dev/null; fstate=$(shape)
c1=$(printf ' there was a little girl' | base64); c2=$(printf ' she went to the park' | base64)
is "$(treq -H "$H" --data-binary "{\"session\":\"f\",\"append_b64\":\"$(printf ' there' | base64)\",\"candidates_b64\":[\"$c1\",\"$c2\"],\"k\":2}" "$W/v1/step")" 400 \
  "more teacher-forced positions than --max-forced: 400"
is "$(code)" budget_exceeded "... budget_exceeded"
is "$(treq -H "$H" --data-binary '{"session":"f","k":2}' "$W/v1/step")" 200 "the session after a refused step"
[ "$(shape)" = "$fstate" ]; ok $? "... is as it was (text, tokens, proposals)"
is "$(treq -H "$H" --data-binary @"$tmp/long.json" "$W/v1/score")" 400 "a /v1/score text over --max-score-tokens: 400"
is "$(code)" budget_exceeded "... budget_exceeded"

if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1
  CONSORT_TOKEN=tls-secret start_worker "$tmp/tl" --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"
  [[ "$W" =~ ^https://127\.0\.0\.1:[0-9]+$ ]]; ok $? "TLS: the listening line says https ($W)"
  is "$(treq --cacert "$tmp/cert.pem" -H 'Authorization: Bearer tls-secret' "$W/v1/info")" 200 "TLS: curl --cacert with the token"
  is "$(treq --cacert "$tmp/cert.pem" --data-binary '{"session":"t","prompt":"Once","k":2}' -H 'Authorization: Bearer tls-secret' "$W/v1/step")" 200 "TLS: a step"
  treq "$W/health" >/dev/null; ok $(( $? == 0 )) "TLS: curl without the CA refuses the certificate"
  plain=${W/https:/http:}
  [ "$(treq "$plain/health")" != 200 ]; ok $? "TLS: plain HTTP to it fails"
else
  echo "ok $((n+1)) # SKIP no openssl"; n=$((n+1))
fi

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
