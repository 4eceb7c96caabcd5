#!/usr/bin/env bash
# consort run and consort serve as commands: --help, usage errors, zero-setup
# `run` of two model files and of the project's models ($CONSORT_MODELS),
# clean shutdown on SIGTERM stopping the workers it spawned, and a server
# whose members are all down (--tolerate-down): /health and requests 503.
# Issue 9: supervision (a spawned worker killed is reaped, logged with its
# signal, restarted, and /health goes 503 degraded then 200 again), graceful
# shutdown (a running stream, a running plain request and a queued one,
# then SIGTERM: the stream ends with a final chunk and [DONE], the plain one
# is answered, the queued one gets 503 with Retry-After, the workers stop),
# the context check (400 context_length_exceeded, no address in any
# answer), the shared secret of spawned workers (from the environment,
# never on their command line) and --api-key-file.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
command -v curl >/dev/null || skip_all "curl is not installed"
n=0 failed=0
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
# ---- issue 9 ---------------------------------------------------------------------
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); exec("r=d"+sys.argv[2]); print(r)' "$@"; }
printf 'file-key-123\n' >"$TMP/apikey"; chmod 600 "$TMP/apikey"
if start_consort sup run --port 0 --threads 1 --parallel 2 --queue 1 --drain-timeout 3 --ctx-size 256 \
     --api-key-file "$TMP/apikey" "$M1" "$M2"; then
  AUTH=(-H 'Authorization: Bearer file-key-123')
  root=${SERVER_URL%/v1}
  st=$(status "$root/health"); check "supervised run: /health 200 with both up" test "$st" = 200
  st=$(status "$SERVER_URL/models"); check "--api-key-file: 401 without the key" test "$st" = 401
  st=$(status "$SERVER_URL/models" "${AUTH[@]}"); check "--api-key-file: 200 with it" test "$st" = 200
  check "the key is never logged" bash -c "! grep -q file-key-123 '$TMP/sup.err'"
  kids=$(children_of "$SERVER_PID")
  victim=$(echo "$kids" | head -1)
  check "spawned workers carry no token on their command line" bash -c \
    "! ps -o args= -p '$victim' | grep -qi token"
  check "spawned workers got a token through their environment" bash -c \
    "tr '\\0' '\\n' </proc/$victim/environ | grep -q '^CONSORT_TOKEN=.\\{32\\}'"
  kill -KILL "$victim"
  seen=0
  for _ in $(seq 1 30); do
    st=$(status "$root/health"); [ "$st" = 503 ] && { seen=1; cp "$TMP/body" "$TMP/degraded"; break; }
    sleep 0.1
  done
  check "a killed worker: /health 503" test $seen -eq 1
  check "/health lists the member down" bash -c "grep -q '\"members_down\":\\[\"' '$TMP/degraded' && grep -q degraded '$TMP/degraded'"
  back=0
  for _ in $(seq 1 100); do
    st=$(status "$root/health"); [ "$st" = 200 ] && { back=1; break; }
    sleep 0.1
  done
  check "the worker is restarted and /health is 200 again" test $back -eq 1
  check "the death was logged with its signal" grep -q "worker died (signal 9" "$TMP/sup.err"
  check "the restart was logged" grep -q "worker restarted" "$TMP/sup.err"
  st=$(status "$SERVER_URL/completions" "${AUTH[@]}" -H 'Content-Type: application/json' \
         -d '{"prompt":"Once upon a time","max_tokens":4,"temperature":0}')
  check "after the restart both members answer" bash -c "test '$st' = 200 && grep -q '\"failures\":0' '$TMP/body'"
  # the context check: 256 tokens of context, a prompt far longer, auto weights
  python3 -c 'import json; print(json.dumps({"prompt": "the jury said " * 2000, "max_tokens": 2, "ensemble": {"weights": "auto"}}))' >"$TMP/long.json"
  st=$(status "$SERVER_URL/completions" "${AUTH[@]}" -H 'Content-Type: application/json' -d @"$TMP/long.json")
  check "a prompt over the context: 400" test "$st" = 400
  check "code context_length_exceeded" grep -q '"context_length_exceeded"' "$TMP/body"
  check "no address in the error" bash -c "! grep -q '127.0.0.1\\|http://' '$TMP/body'"
  stop_consort; check "supervised run: clean exit" test $? -eq 0
else
  check "supervised run: listening" false
fi

# graceful shutdown, over workers behind 10 ms relays (so that a stream runs
# for seconds): a long stream and a plain request run (--parallel 2), a third
# waits in line, then SIGTERM with --drain-timeout 2
relay() { # relay NAME TARGET_URL: sets RELAY_URL
  "$B/tools/delay_relay" --listen 127.0.0.1:0 --target "${2#http://}" --delay-ms 10 >"$TMP/$1.relay" 2>&1 &
  PIDS+=($!)
  RELAY_URL=http://$(wait_line "$TMP/$1.relay" '127.0.0.1:[0-9]*' $!) || return 1
}
if [ -x "$B/tools/delay_relay" ] && start_worker ga "$M1" && relay ga "$WORKER_URL" && RA=$RELAY_URL &&
   start_worker gb "$M2" && relay gb "$WORKER_URL" && RB=$RELAY_URL &&
   start_consort drain serve --member a="$RA" --member b="$RB" --port 0 --parallel 2 --queue 1 --drain-timeout 2; then
  curl -s -N -H 'Content-Type: application/json' "$SERVER_URL/completions" \
    -d '{"prompt":"Once upon a time","max_tokens":2000,"temperature":0,"stream":true}' >"$TMP/stream.out" &
  c1=$!
  curl -s -o "$TMP/plain.out" -w '%{http_code}' -H 'Content-Type: application/json' "$SERVER_URL/completions" \
    -d '{"prompt":"The jury","max_tokens":40,"temperature":0}' >"$TMP/plain.st" &
  c2=$!
  sleep 0.2
  curl -s -D "$TMP/queued.hdr" -o "$TMP/queued.out" -w '%{http_code}' -H 'Content-Type: application/json' \
    "$SERVER_URL/completions" -d '{"prompt":"x","max_tokens":4}' >"$TMP/queued.st" &
  c3=$!
  sleep 0.2
  t0=$(date +%s.%N)
  stop_consort; rc=$?
  t1=$(date +%s.%N)
  wait $c1 $c2 $c3
  echo "# shutdown took $(python3 -c "print(round($t1 - $t0, 2))") s"
  check "SIGTERM: clean exit" test $rc -eq 0
  check "SIGTERM: about the drain timeout (2 s), not the stream's length" python3 -c "import sys; sys.exit(0 if 1.5 < $t1 - $t0 < 6 else 1)"
  check "SIGTERM: the cut stream got a final chunk and [DONE]" bash -c \
    "grep -q '\"finish_reason\":\"' '$TMP/stream.out' && tail -c 20 '$TMP/stream.out' | grep -q 'data: \[DONE\]'"
  check "SIGTERM: the running plain request was answered (200)" bash -c \
    "test \"\$(cat '$TMP/plain.st')\" = 200 && grep -q '\"text_completion\"' '$TMP/plain.out'"
  check "SIGTERM: the queued request got 503 shutting_down" bash -c \
    "test \"\$(cat '$TMP/queued.st')\" = 503 && grep -q shutting_down '$TMP/queued.out'"
  check "SIGTERM: with Retry-After" grep -qi '^Retry-After:' "$TMP/queued.hdr"
  check "SIGTERM: the drain was logged" grep -q "draining: 2 generation(s) running, 1 waiting" "$TMP/drain.err"
else
  check "graceful shutdown setup (workers, relays, serve)" false
fi

echo "1..$n"
[ $failed -eq 0 ]
