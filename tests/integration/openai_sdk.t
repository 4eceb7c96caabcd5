#!/usr/bin/env bash
# consort serve over two real workers (two tiny models with different
# tokenizers), driven by the official openai npm SDK (tests/node): shapes of
# completions and chat, streaming and not, streamed = non-streamed text for
# greedy, logprobs, 400s with error objects, /health and /metrics; then the
# FAULT tests: one worker SIGKILLed mid-stream (the stream finishes from the
# other and reports the loss), then the other (503). The server must survive
# all that and exit 0 on SIGTERM (under ASan: without leaks).
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
command -v node >/dev/null || skip_all "node is not installed"
if [ ! -f tests/node/node_modules/openai/package.json ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error >&2) || skip_all "npm ci failed in tests/node"
fi
start_worker a "$M1" || { echo "1..1"; echo "not ok 1 - worker a starts"; exit 1; }
PID_A=$WORKER_PID URL_A=$WORKER_URL
start_worker b "${CONSORT_TEST_MODEL_B:-$M2}" || { echo "1..1"; echo "not ok 1 - worker b starts"; exit 1; }
PID_B=$WORKER_PID URL_B=$WORKER_URL
start_consort serve serve --member "a=$URL_A" --member "b=$URL_B" --port 0 --strategy mixture \
  || { echo "1..1"; echo "not ok 1 - consort serve starts"; exit 1; }
# node's TAP carries YAML diagnostics that prove's YAML reader rejects: keep
# them as comments.
CONSORT_URL=$SERVER_URL CONSORT_MODEL=consort CONSORT_FAULT_PIDS=$PID_A,$PID_B \
  timeout 600 node --test --test-reporter=tap tests/node/openai_sdk.test.mjs |
  awk '/^[ \t]*---$/ { y = 1 } { if (y) print "# " $0; else print } /^[ \t]*\.\.\.$/ { y = 0 }'
rc=${PIPESTATUS[0]}
stop_consort
src=$?
if [ $rc -ne 0 ] || [ $src -ne 0 ]; then
  echo "# node exit $rc, consort serve exit $src; server log tail:" >&2
  tail -25 "$TMP/serve.err" | sed 's/^/#   /' >&2
fi
[ $src -eq 0 ] || { echo "# consort serve did not exit cleanly on SIGTERM (status $src)" >&2; exit 1; }
exit $rc
