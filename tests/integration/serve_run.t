#!/usr/bin/env bash
# consort run and consort serve as commands: --help, usage errors, zero-setup
# `run` of two model files and of the project's models ($CONSORT_MODELS),
# clean shutdown on SIGTERM stopping the workers it spawned, and a server
# whose members are all down (--tolerate-down): /health and requests 503.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
command -v curl >/dev/null || skip_all "curl is not installed"
n=0 failed=0
check() { # check "what" command...
  local what=$1; shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}
status() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }

check "consort serve --help" bash -c "'$B/consort' serve --help | grep -q -- '--port'"
check "consort run --help" bash -c "'$B/consort' run --help | grep -q -- 'gguf'"
"$B/consort" serve >/dev/null 2>&1; check "serve without members: usage error (2)" test $? -eq 2
"$B/consort" serve --member a=http://127.0.0.1:1 --bogus >/dev/null 2>&1
check "unknown option: usage error (2)" test $? -eq 2
"$B/consort" run /nonexistent.gguf >/dev/null 2>&1; check "run of a missing file: usage error" test $? -eq 2

# zero-setup run of two files
N1=$(basename "$M1" .gguf) N2=$(basename "$M2" .gguf) # member names: file names
if start_consort run run --port 0 --threads 1 "$M1" "$M2"; then
  check "run: listening" true
  check "run: /v1/models lists both members" bash -c \
    "curl -s '$SERVER_URL/models' | grep -q '\"$N1\"' && curl -s '$SERVER_URL/models' | grep -q '\"$N2\"'"
  st=$(status "$SERVER_URL/completions" -H 'Content-Type: application/json' \
         -d '{"prompt":"Once upon a time","max_tokens":8,"temperature":0}')
  check "run: a completion (200)" test "$st" = 200
  check "run: completion text present" grep -q '"text_completion"' "$TMP/body"
  kids=$(children_of "$SERVER_PID")
  check "run: spawned two workers" test "$(echo "$kids" | grep -c .)" -eq 2
  stop_consort; rc=$?
  check "run: clean exit on SIGTERM" test $rc -eq 0
  alive=0
  for k in $kids; do kill -0 "$k" 2>/dev/null && alive=1; done
  check "run: its workers are gone after shutdown" test $alive -eq 0
  check "run: logged the members and the listening URL" bash -c \
    "grep -q 'member $N1' '$TMP/run.err' && grep -q 'OpenAI-compatible API at http' '$TMP/run.err'"
else
  check "run: listening" false
fi

# zero-setup run of the project's models, found through $CONSORT_MODELS
mkdir -p "$TMP/models"
ln -s "$M1" "$TMP/models/a.gguf"
ln -s "$M2" "$TMP/models/b.gguf"
if CONSORT_MODELS=$TMP/models start_consort run2 run --port 0 --threads 1; then
  check "run without files: serves a and b" bash -c \
    "curl -s '$SERVER_URL/models' | grep -q '\"id\":\"a\"' && curl -s '$SERVER_URL/models' | grep -q '\"id\":\"b\"'"
  stop_consort; check "run without files: clean exit" test $? -eq 0
else
  check "run without files: listening" false
fi

# all members down
# (with an API key from the environment)
if CONSORT_API_KEY=sekrit start_consort down serve --member a=http://127.0.0.1:9 --member b=http://127.0.0.1:9 --tolerate-down --port 0; then
  st=$(status "${SERVER_URL%/v1}/health")
  check "all down: /health 503" test "$st" = 503
  st=$(status "$SERVER_URL/models")
  check "api key: 401 without it" test "$st" = 401
  check "api key: invalid_api_key" grep -q '"invalid_api_key"' "$TMP/body"
  st=$(status "$SERVER_URL/models" -H 'Authorization: Bearer sekrit')
  check "api key: 200 with it" test "$st" = 200
  st=$(status "$SERVER_URL/chat/completions" -H 'Content-Type: application/json' -H 'Authorization: Bearer sekrit' \
         -d '{"messages":[{"role":"user","content":"hi"}]}')
  check "all down: chat 503" test "$st" = 503
  check "all down: error object" grep -q '"no_member_available"' "$TMP/body"
  st=$(status "$SERVER_URL/completions" -H 'Content-Type: application/json' -H 'Authorization: Bearer sekrit' \
         -d '{"prompt":"x","stream":true}')
  check "all down: streaming request 503 too" test "$st" = 503
  stop_consort; check "all down: clean exit" test $? -eq 0
else
  echo "# serve --tolerate-down did not start; log:" >&2; tail -5 "$TMP/down.err" >&2
  check "all down: server starts with --tolerate-down" false
fi
echo "1..$n"
[ $failed -eq 0 ]
