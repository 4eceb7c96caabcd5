# tests/integration/lib_serve.sh: helpers sourced by the server's integration
# tests (openai_sdk.t, serve_run.t): skip rules, starting workers and servers
# on ephemeral ports, waiting for their "listening on" lines, and cleanup of
# exactly the processes started here (by pid).
. "$(dirname "${BASH_SOURCE[0]}")/lib_tap.sh"
B=${CONSORT_BUILD:-build}
ROOT=${CONSORT_ROOT:-$PWD}
# The project's own models (SentencePiece and GPT-2 BPE vocabularies). The
# external TinyStories-656K has tokens with exactly tied logits, so greedy
# text under concurrent sessions (float sums in another order) flipped at
# those ties; CONSORT_TEST_MODEL_A/_B override.
M1=${CONSORT_TEST_MODEL_A:-$ROOT/models/a.gguf}
M2=${CONSORT_TEST_MODEL_B:-$ROOT/models/b.gguf}
TMP=$(mktemp -d)
PIDS=()

skip_all() { echo "1..0 # SKIP $*"; exit 0; }
need_stack() {
  [ -x "$B/consort" ] || skip_all "no $B/consort"
  [ -x "$B/consort-worker" ] || skip_all "no $B/consort-worker"
  [ -f "$M1" ] && [ -f "$M2" ] || skip_all "test models missing: $M1 $M2"
  "$B/consort" serve --help 2>/dev/null | grep -q -- --member || skip_all "consort has no serve command yet"
}
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${KEEP_TMP:-}" ] && echo "# kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

# wait_line FILE PATTERN PID [SECONDS]: prints the first match of PATTERN in FILE
wait_line() {
  local f=$1 pat=$2 pid=$3 t=${4:-120} i
  for ((i = 0; i < t * 10; i++)); do
    if grep -q "$pat" "$f" 2>/dev/null; then grep -o "$pat" "$f" | head -1; return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_worker NAME MODEL [FLAGS...]: sets WORKER_URL and WORKER_PID
start_worker() {
  : >"$TMP/$1.out" # (truncated here, not in the background child: a name used twice must not show the old URL)
  "$B/consort-worker" --model "$2" --port 0 --threads 1 --name "$1" "${@:3}" >"$TMP/$1.out" 2>"$TMP/$1.err" &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
  WORKER_URL=$(wait_line "$TMP/$1.out" 'http://[0-9.:]*' "$WORKER_PID") || {
    echo "# worker $1 did not start:" >&2; tail -5 "$TMP/$1.err" >&2; return 1; }
}

# start_consort OUTNAME ARGS...: sets SERVER_URL (…/v1) and SERVER_PID
start_consort() {
  local name=$1; shift
  : >"$TMP/$name.out" # (see start_worker)
  "$B/consort" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL=$(wait_line "$TMP/$name.out" 'http://[0-9.:]*/v1' "$SERVER_PID") || {
    echo "# consort $* did not start:" >&2; tail -5 "$TMP/$name.err" >&2; return 1; }
}

# stop_consort: SIGTERM, then the exit status (124 if it did not stop in 20 s)
stop_consort() {
  kill -TERM "$SERVER_PID" 2>/dev/null
  local i
  for ((i = 0; i < 200; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; return 124; fi
  wait "$SERVER_PID"
}
