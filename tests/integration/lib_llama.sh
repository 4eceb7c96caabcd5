# tests/integration/lib_llama.sh: helpers for the tests that run llama.cpp's
# own programs (llama_member.t, rpc_split.t), sourced after lib_serve.sh.
# The programs come from scripts/llama_tools.sh (built once per machine from
# the bundled llama.cpp source, cached outside the clone; the first run on a
# new machine builds them, which takes many minutes).

# need_llama_tools: sets LLAMA_BIN, or fails the whole test with a reason
# (CONSORT_SKIP_LLAMA_TOOLS=1 skips instead, for machines without cmake).
need_llama_tools() { # (also: the stack, curl and jq, which these tests use)
  need_stack
  command -v curl >/dev/null && command -v jq >/dev/null || skip_all "curl and jq are needed"
  if ! LLAMA_BIN=$(scripts/llama_tools.sh 2>"$TMP/llama_tools.err"); then
    [ "${CONSORT_SKIP_LLAMA_TOOLS:-0}" = 1 ] && skip_all "llama tools not built (CONSORT_SKIP_LLAMA_TOOLS=1)"
    echo "1..1"
    echo "not ok 1 - scripts/llama_tools.sh failed:"
    sed 's/^/# /' "$TMP/llama_tools.err" | tail -5
    exit 1
  fi
}

# free_port: an unused loopback TCP port
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_llama_server NAME MODEL [ARGS...]: sets LLAMA_URL and LLAMA_PID once
# /health answers ok (one slot, the model's own 256-token context, 1 thread).
start_llama_server() {
  local name=$1 model=$2 port i
  shift 2
  port=$(free_port)
  : >"$TMP/$name.out" # (see start_worker in lib_serve.sh)
  "$LLAMA_BIN/llama-server" -m "$model" --host 127.0.0.1 --port "$port" -t 1 -c 256 -np 1 \
    --no-webui "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  LLAMA_PID=$!
  PIDS+=("$LLAMA_PID")
  LLAMA_URL=http://127.0.0.1:$port
  for ((i = 0; i < 600; i++)); do
    curl -s "$LLAMA_URL/health" 2>/dev/null | grep -q '"ok"' && return 0
    kill -0 "$LLAMA_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "# llama-server $name did not start:" >&2
  tail -5 "$TMP/$name.err" | sed 's/^/# /' >&2
  return 1
}

# llama_greedy URL PROMPT N: llama-server's own greedy text (its /completion
# at temperature 0), raw bytes on stdout
llama_greedy() {
  curl -s "$1/completion" -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg p "$2" --argjson n "$3" '{prompt: $p, n_predict: $n, temperature: 0, cache_prompt: false}')" |
    jq -j .content
}

# consort_text URL PROMPT N [EXTRA_JSON]: a greedy /v1/completions text
# (an answer without a text is shown on stderr as a TAP comment, so a failing
# comparison says what the server answered)
consort_text() {
  local body
  body=$(curl -s -w '\n%{http_code}' "$1/completions" -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg p "$2" --argjson n "$3" --argjson x "${4:-{\}}" '{prompt: $p, max_tokens: $n, temperature: 0} + $x')")
  jq -j '.choices[0].text // empty' <<<"${body%$'\n'*}" 2>/dev/null || true
  jq -e '.choices[0].text' >/dev/null 2>&1 <<<"${body%$'\n'*}" ||
    printf '# consort_text: HTTP %s: %s\n' "${body##*$'\n'}" "$(head -c 300 <<<"${body%$'\n'*}")" >&2
}
