#!/usr/bin/env bash
# Two hosts for real: the coordinator and each worker in a network namespace
# of its own, joined by veth links (tests/integration/lib_netns.sh has the
# picture), with and without 5 ms of added latency each way
# (tests/tools/delay_relay). Shows that
#  - greedy generation (`consort generate`, and `consort serve` answered
#    plainly and streamed) gives exactly the text it gives on loopback;
#  - `consort ppl` gives the same bits per byte (1e-9);
#  - a link cut (veth down) in the middle of a streamed request is handled
#    like a dead member: the stream finishes with the other member and
#    [DONE], within the step timeout, the coordinator keeps answering
#    /health and requests; with both links cut a request gets a clear 503.
# Skipped (1..0) unless root with a working `ip netns`.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_netns.sh
need_stack
netns_need
command -v curl >/dev/null || skip_all "curl is not installed"
n=0 failed=0
finish() { echo "1..$n"; [ $failed -eq 0 ]; exit $?; }
bail() { check "$1" false; finish; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
same_file() { cmp -s "$1" "$2" && [ -s "$1" ]; }

STEP_TIMEOUT=1
PROMPT="The committee said that"
GEN=(generate --json --strategy mixture --prompt "$PROMPT" --max-tokens 48 --temperature 0 --step-timeout $STEP_TIMEOUT)

netns_setup || bail "namespaces and veth links created"
check "namespaces and veth links created" true

# ---- workers: on loopback here, and one per namespace -------------------------
start_worker a "$M1" || bail "loopback worker a starts"; LA=$WORKER_URL
start_worker b "$M2" || bail "loopback worker b starts"; LB=$WORKER_URL
start_worker_in "$NS_A" a "$M1" "$ADDR_A" || bail "worker a starts in its namespace"; UA=$WORKER_URL
start_worker_in "$NS_B" b "$M2" "$ADDR_B" || bail "worker b starts in its namespace"; UB=$WORKER_URL
check "workers listen on their namespace addresses ($UA, $UB)" \
  test "${UA%:*}" = "http://$ADDR_A" -a "${UB%:*}" = "http://$ADDR_B"
st=$(in_ns "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$UA/health")
check "the coordinator's namespace reaches worker a over the link" test "$st" = 200
st=$(in_ns "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$LA/health")
check "the coordinator's namespace cannot reach the loopback workers (separate hosts)" test "$st" = 000

# ---- consort generate ------------------------------------------------------------
"$B/consort" "${GEN[@]}" --member a="$LA" --member b="$LB" >"$TMP/gen.lo.json" 2>"$TMP/gen.lo.err"
check "generate on loopback" test $? -eq 0
in_ns "$NS_C" "$B/consort" "${GEN[@]}" --member a="$UA" --member b="$UB" >"$TMP/gen.ns.json" 2>"$TMP/gen.ns.err"
check "generate across the namespaces" test $? -eq 0
json_field "$TMP/gen.lo.json" text >"$TMP/text.lo" 2>/dev/null
json_field "$TMP/gen.ns.json" text >"$TMP/text.ns" 2>/dev/null
echo "# loopback text: $(head -c 80 "$TMP/text.lo" | tr '\n' ' ')"
check "generate: the same text across the namespaces as on loopback" same_file "$TMP/text.lo" "$TMP/text.ns"
check "generate: both members used over the links, neither failed" python3 - "$TMP/gen.ns.json" "$ADDR_A" "$ADDR_B" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
m = {x["name"]: x for x in d["members"]}
sys.exit(0 if sys.argv[2] in m["a"]["url"] and sys.argv[3] in m["b"]["url"]
         and not m["a"]["failed"] and not m["b"]["failed"] and m["a"]["steps_won"] + m["b"]["steps_won"] > 0 else 1)
PY

# ---- the same with 5 ms each way (a relay per member in the coordinator's namespace)
start_relay_in "$NS_C" a "$UA" 5 || bail "relay in front of a starts"; RA=$RELAY_URL RA_PID=$RELAY_PID RA_OUT=$RELAY_OUT
start_relay_in "$NS_C" b "$UB" 5 || bail "relay in front of b starts"; RB=$RELAY_URL RB_PID=$RELAY_PID RB_OUT=$RELAY_OUT
in_ns "$NS_C" "$B/consort" "${GEN[@]}" --member a="$RA" --member b="$RB" >"$TMP/gen.slow.json" 2>"$TMP/gen.slow.err"
check "generate through the 5 ms relays" test $? -eq 0
json_field "$TMP/gen.slow.json" text >"$TMP/text.slow" 2>/dev/null
check "generate: the same text with 5 ms each way" same_file "$TMP/text.lo" "$TMP/text.slow"
check "the delay is in the path: every member round trip >= 10 ms" python3 - "$TMP/gen.slow.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("# mean member round trip: " + ", ".join("%s %.1f ms" % (m["name"], m["mean_step_ms"]) for m in d["members"]))
sys.exit(0 if all(m["mean_step_ms"] >= 10.0 for m in d["members"]) else 1)
PY
read -r ua da < <(relay_bytes "$RA_PID" "$RA_OUT")
read -r ub db < <(relay_bytes "$RB_PID" "$RB_OUT")
echo "# bytes on the wire: a up $ua down $da, b up $ub down $db"
check "the relays forwarded requests and answers of both members" test "${ua:-0}" -gt 0 -a "${da:-0}" -gt 0 -a "${ub:-0}" -gt 0 -a "${db:-0}" -gt 0

# ---- consort ppl ---------------------------------------------------------------------
python3 - "$TMP/docs.jsonl" <<'PY'
import json, sys
docs = ["The committee said that the new school would open in the fall.",
        "Mr. Jones told the jury that he had not seen the car before.",
        " ".join(["The city council voted to raise the tax on land and homes."] * 6)]
with open(sys.argv[1], "w") as f:
    for d in docs: f.write(json.dumps({"text": d}) + "\n")
PY
PPL=(ppl --file "$TMP/docs.jsonl" --strategies solo:a,solo:b,mixture --no-progress --resamples 20)
"$B/consort" "${PPL[@]}" --member a="$LA" --member b="$LB" --json "$TMP/ppl.lo.json" >/dev/null 2>"$TMP/ppl.lo.err"
check "ppl on loopback" test $? -eq 0
in_ns "$NS_C" "$B/consort" "${PPL[@]}" --member a="$UA" --member b="$UB" --json "$TMP/ppl.ns.json" >/dev/null 2>"$TMP/ppl.ns.err"
check "ppl across the namespaces" test $? -eq 0
check "ppl: the same bits per byte across the namespaces as on loopback (1e-9)" python3 - "$TMP/ppl.lo.json" "$TMP/ppl.ns.json" <<'PY'
import json, sys
lo, ns = ({r["name"]: r["bits_per_byte"] for r in json.load(open(f))["results"]} for f in sys.argv[1:3])
print("# " + ", ".join("%s %.9f / %.9f" % (k, lo[k], ns.get(k, float("nan"))) for k in lo))
sys.exit(0 if len(lo) == 3 and lo.keys() == ns.keys() and all(abs(lo[k] - ns[k]) <= 1e-9 for k in lo) else 1)
PY

# ---- consort serve: plain and streamed ---------------------------------------------
BODY='{"prompt":"The committee said that","max_tokens":48,"temperature":0}'
SBODY='{"prompt":"The committee said that","max_tokens":48,"temperature":0,"stream":true}'
post() { curl -s --max-time 30 "$1/completions" -H 'Content-Type: application/json' -d "$2"; }
post_in() { local ns=$1; shift; in_ns "$ns" curl -s --max-time 30 "$1/completions" -H 'Content-Type: application/json' -d "$2"; }
completion_text() { python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])'; }
stream_text() { python3 -c '
import json, sys
ev = [l[6:].strip() for l in sys.stdin if l.startswith("data: ")]
assert ev and ev[-1] == "[DONE]"
print("".join(c["text"] for e in ev[:-1] for c in json.loads(e)["choices"]))'; }
SERVE=(serve --port 0 --strategy mixture --step-timeout $STEP_TIMEOUT)
start_consort lo "${SERVE[@]}" --member a="$LA" --member b="$LB" || bail "serve on loopback starts"
post "$SERVER_URL" "$BODY" | completion_text >"$TMP/serve.lo" 2>/dev/null
stop_consort
start_consort_in "$NS_C" ns "${SERVE[@]}" --member a="$RA" --member b="$RB" || bail "serve across the namespaces starts"
NS_URL=$SERVER_URL
post_in "$NS_C" "$NS_URL" "$BODY" | completion_text >"$TMP/serve.ns" 2>/dev/null
post_in "$NS_C" "$NS_URL" "$SBODY" | stream_text >"$TMP/serve.ns.stream" 2>/dev/null
check "serve: the same completion across the namespaces (5 ms each way) as on loopback" same_file "$TMP/serve.lo" "$TMP/serve.ns"
check "serve: the streamed text is the same too, ending with [DONE]" same_file "$TMP/serve.lo" "$TMP/serve.ns.stream"
stop_consort

# ---- a link cut in the middle of a streamed request ----------------------------------
cat >"$TMP/stream_cut.py" <<'PY'
# stream_cut.py URL CUT_AFTER_CHUNKS CUT_COMMAND...: streams a long completion,
# runs CUT_COMMAND after that many chunks, reports what arrived as JSON.
import http.client, json, subprocess, sys, time, urllib.parse
url = urllib.parse.urlparse(sys.argv[1]); cut_after = int(sys.argv[2]); cut = sys.argv[3:]
c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
body = {"prompt": "The committee said that", "max_tokens": 200, "temperature": 0, "stream": True}
c.request("POST", url.path + "/completions", json.dumps(body), {"Content-Type": "application/json"})
r = c.getresponse()
out = {"status": r.status, "chunks": 0, "after_cut": 0, "done": False, "error": None, "ensemble": None, "text": ""}
t_cut = None; t_start = time.monotonic()
for line in r:
    line = line.decode().strip()
    if not line.startswith("data: "): continue
    data = line[6:]
    if data == "[DONE]": out["done"] = True; break
    ev = json.loads(data)
    if "error" in ev: out["error"] = ev["error"]; continue
    out["chunks"] += 1
    if t_cut is not None: out["after_cut"] += 1
    for ch in ev.get("choices", []):
        out["text"] += ch.get("text", "")
        if ch.get("finish_reason"): out["finish_reason"] = ch["finish_reason"]
    if "ensemble" in ev: out["ensemble"] = ev["ensemble"]
    if out["chunks"] == cut_after:
        out["chunks_before_cut"] = cut_after
        t_cut = time.monotonic(); out["seconds_before_cut"] = t_cut - t_start
        subprocess.run(cut, check=True)
out["seconds_after_cut"] = time.monotonic() - t_cut if t_cut else None
print(json.dumps(out))
PY
start_consort_in "$NS_C" cut "${SERVE[@]}" --member a="$RA" --member b="$RB" || bail "serve for the link cut starts"
CUT_URL=$SERVER_URL
in_ns "$NS_C" timeout 60 python3 "$TMP/stream_cut.py" "$CUT_URL" 20 ip -n "$NS_C" link set to-b down >"$TMP/cut.json" 2>"$TMP/cut.err"
check "link cut: the stream's client ran to its end" test $? -eq 0
echo "# $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("text"); print(json.dumps(d))' "$TMP/cut.json" 2>/dev/null)"
check "link cut: the stream finished (finish_reason, [DONE], no error event) with chunks after the cut" python3 - "$TMP/cut.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["status"] == 200 and d["done"] and d["error"] is None and d.get("finish_reason") and d["after_cut"] > 1 else 1)
PY
check "link cut: b is reported failed, a finished the text" python3 - "$TMP/cut.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["ensemble"]
m = {x["name"]: x for x in e["members"]}
sys.exit(0 if e["failures"] >= 1 and m["b"]["failed"] and not m["a"]["failed"] else 1)
PY
check "link cut: nothing waited much past the step timeout (${STEP_TIMEOUT} s)" python3 - "$TMP/cut.json" "$STEP_TIMEOUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
# Allowed: one step timeout for the cut member, plus the chunks after the
# cut at twice the pace of those before it (two members then, one after),
# plus 3 s of slack for a loaded machine. A hang (TCP retransmissions, the
# default 30 s step deadline) is far beyond.
pace = d["seconds_before_cut"] / d["chunks_before_cut"]
bound = float(sys.argv[2]) + 2 * pace * d["after_cut"] + 3
print("# %.2f s from the cut to [DONE], bound %.2f s" % (d["seconds_after_cut"], bound))
sys.exit(0 if d["seconds_after_cut"] < bound else 1)
PY
st=$(in_ns "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${CUT_URL%/v1}/health")
echo "# /health after the cut: $st"
check "link cut: the coordinator still answers /health" test "$st" != 000
t0=$(date +%s.%N)
in_ns "$NS_C" curl -s -o "$TMP/after.json" -w '%{http_code}' --max-time 20 "$CUT_URL/completions" \
  -H 'Content-Type: application/json' -d "$BODY" >"$TMP/after.st"
t1=$(date +%s.%N)
check "link cut: the next request is answered 200 by the member left" test "$(cat "$TMP/after.st")" = 200
check "link cut: ... within the step timeout's bound" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < $STEP_TIMEOUT + 6 else 1)"
in_ns "$NS_C" ip link set to-a down
t0=$(date +%s.%N)
st=$(in_ns "$NS_C" curl -s -o "$TMP/none.json" -w '%{http_code}' --max-time 20 "$CUT_URL/completions" \
  -H 'Content-Type: application/json' -d "$BODY")
t1=$(date +%s.%N)
echo "# both links cut: $st $(head -c 200 "$TMP/none.json") ($(python3 -c "print('%.1f' % ($t1 - $t0))") s)"
check "both links cut: a clear 503 no_member_available" bash -c "test '$st' = 503 && grep -q no_member_available '$TMP/none.json'"
check "both links cut: ... within the step timeout's bound" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 2 * $STEP_TIMEOUT + 6 else 1)"
st=$(in_ns "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${CUT_URL%/v1}/health")
check "both links cut: /health still answers (503)" test "$st" = 503
stop_consort; check "the coordinator exits cleanly on SIGTERM after the cuts" test $? -eq 0
finish
