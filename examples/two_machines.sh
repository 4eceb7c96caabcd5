#!/usr/bin/env bash
# examples/two_machines.sh: the two-machine recipe of docs/WORKER.md, run
# with network namespaces standing in for the machines (root and `ip netns`
# needed; tests/integration/lib_netns.sh builds them and removes them on
# exit). Machine A runs a worker on its own address; machine C runs the
# coordinator, whose members are that worker and a local worker it spawns;
# a client on C asks the API. Prints what each step did; exit 0 on success.
set -u
cd "$(dirname "$0")/.."
. tests/integration/lib_netns.sh
netns_need
netns_setup || { echo "could not create the namespaces" >&2; exit 1; }
echo "machine A: $NS_A ($ADDR_A); machine C: $NS_C ($ADDR_C_A)"
# machine A: consort-worker --model a.gguf --host ADDR_A --port 0
start_worker_in "$NS_A" a "$M1" "$ADDR_A" || exit 1
echo "A: $WORKER_URL"
# machine C: consort serve --member a=http://ADDR_A:PORT --member b=b.gguf
start_consort_in "$NS_C" serve serve --host "$ADDR_C_A" --port 0 --threads 1 \
  --member a="$WORKER_URL" --member b="$M2" || exit 1
echo "C: $SERVER_URL"
# a client that reaches C
in_ns "$NS_C" curl -s "$SERVER_URL/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The old man", "max_tokens": 16, "temperature": 0}' >"$TMP/answer" || exit 1
jq -r '"text: \(.choices[0].text | @json)", "members: \([.ensemble.members[] | "\(.name) steps_won=\(.steps_won)"] | join(", "))"' "$TMP/answer"
jq -e '.choices[0].text | length > 0' "$TMP/answer" >/dev/null
