#!/usr/bin/env bash
# examples/quickstart.sh: the README's main job. Starts a local ensemble of
# the project's own models (one consort-worker per model, on loopback,
# combined by `consort run`), asks it for a completion and a streamed chat
# answer over the OpenAI-compatible API, prints them, and stops everything.
#
# Usage: examples/quickstart.sh [A.gguf B.gguf ...]   (default: models/a.gguf models/b.gguf)
# Environment: CONSORT_BUILD (default build), PORT (default: any free port).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
[ -x "$B/consort" ] || { echo "quickstart: $B/consort is missing: run make first" >&2; exit 1; }
command -v curl >/dev/null || { echo "quickstart: curl is needed (apt-get install curl)" >&2; exit 1; }

log=$(mktemp) errlog=$(mktemp)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -f "$log" "$errlog"
}
trap cleanup EXIT
fail() { echo "quickstart: $*" >&2; echo "--- consort's log:" >&2; cat "$errlog" >&2; exit 1; }
"$B/consort" run --port "${PORT:-0}" "$@" >"$log" 2>"$errlog" &
pid=$!
url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's/^consort listening on \(http[^ ]*\)$/\1/p' "$log")
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || fail "consort run exited early"
  sleep 0.1
done
[ -n "$url" ] || fail "consort did not start in 60 s"
echo "== ensemble up at $url"
curl -s "$url/models" | sed 's/^/   models: /'
echo

# Pull the text fields out of the JSON answers without needing jq.
texts() { sed -n 's/.*"\(text\|content\)":"\(\([^"\\]\|\\.\)*\)".*/\2/p' | tr -d '\n'; }

prompt="The committee said that the new school"
echo "== POST $url/completions  (greedy; the members' mixture)"
echo "   prompt:     $prompt"
answer=$(curl -sS "$url/completions" -H 'Content-Type: application/json' \
  -d "{\"prompt\": \"$prompt\", \"max_tokens\": 40, \"temperature\": 0}") || fail "request failed"
echo "   completion: $(printf '%s' "$answer" | texts)"
echo "   full JSON:  $answer"
echo
echo "== POST $url/chat/completions  (streamed as server-sent events, sampled with a seed)"
chunks=$(curl -sSN "$url/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages": [{"role": "user", "content": "Tell me about the city."}], "max_tokens": 40, "stream": true, "seed": 7, "temperature": 0.7}') || fail "request failed"
echo "   events:     $(printf '%s\n' "$chunks" | grep -c '^data:') (the last is data: [DONE])"
echo "   assistant:  $(printf '%s\n' "$chunks" | grep '^data: {' | texts)"
echo
echo "== done; stopping the ensemble (consort stops the workers it started)"
