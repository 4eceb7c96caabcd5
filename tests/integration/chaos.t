#!/usr/bin/env bash
# Chaos and soak (issue 9), bounded (about a minute): `consort run` over the
# project's two models serves 320 requests at 16 concurrent, mixed plain and
# streamed, while worker a is killed (SIGKILL; supervision restarts it),
# worker b is stopped for 10 s (SIGSTOP/SIGCONT), and one client in five
# hangs up early. Shows:
#  - zero wrong answers: every 200 whose members all stayed up carries a
#    greedy text of its own prompt taken before the chaos (alone, and under
#    the same load), or a near-tie variant of one (concurrent sessions share
#    the workers' KV caches, so a greedy choice at an exact tie may flip with
#    the batch a step shares: README), and those are rare; never another
#    prompt's text (crossed sessions) or no text at all. Requests begun
#    after the kill meet a restarted worker and are not held to the bound
#    on variants. The others are complete valid answers (a stream ends with
#    [DONE]) or clear errors (429/503 with an error object);
#  - every request answered or refused with a clear status, none past its
#    deadline (--request-timeout 20, plus slack);
#  - the killed worker was restarted and /health is 200 at the end;
#  - RSS of the coordinator and of worker b before/after, flat within 64 MiB.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
command -v curl >/dev/null || skip_all "curl is not installed"
command -v python3 >/dev/null || skip_all "python3 is not installed"
n=0 failed=0
check() {
  local what=$1; shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_consort chaos run --port 0 --threads 1 --parallel 4 --queue 64 --request-timeout 20 --step-timeout 2 \
  "$M1" "$M2" || { check "consort run starts" false; echo "1..$n"; exit 1; }
check "consort run starts" true
kids=($(ps -o pid= --ppid "$SERVER_PID" | tr -d ' '))
[ ${#kids[@]} -eq 2 ] || { check "two workers spawned" false; echo "1..$n"; exit 1; }
# which child serves which model: the command line names it
for k in "${kids[@]}"; do
  case "$(ps -o args= -p "$k")" in *"$M1"*) WA=$k ;; *) WB=$k ;; esac
done
rss_c0=$(rss_kb "$SERVER_PID") rss_b0=$(rss_kb "$WB")

python3 - "$SERVER_URL" "$WA" "$WB" "$TMP" <<'PY'
import json, os, signal, sys, threading, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
url, wa, wb, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
PROMPTS = ["Once upon a time", "The jury said", "In the morning the", "He went to the",
           "The committee", "It was a", "She looked at", "There is no"]
MAXT = 16

def call(prompt, stream, timeout):
    body = json.dumps({"prompt": prompt, "max_tokens": MAXT, "temperature": 0, "stream": stream}).encode()
    req = urllib.request.Request(url + "/completions", body, {"Content-Type": "application/json"})
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read().decode()
            return r.status, data, time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.time() - t0
    except Exception as e:  # timeout: the client hung up on purpose (or the server hung)
        return 0, repr(e), time.time() - t0

def text_of(stream, data):
    if not stream:
        return json.loads(data)["choices"][0]["text"]
    events = [l[6:] for l in data.split("\n") if l.startswith("data: ")]
    return "".join(o["choices"][0]["text"] for o in map(json.loads, events[:-1]) if o.get("choices"))

# The reference: each prompt's greedy text alone, plus what 160 requests at 16
# concurrent give before any chaos (concurrent sessions share the workers'
# KV caches, so a greedy choice at an exact near-tie may differ with the
# batch a step shares with other requests:
# README, notes for operators). A wrong answer is a text outside this set.
ref = {p: set() for p in PROMPTS}
for p in PROMPTS:
    st, data, _ = call(p, False, 30)
    if st != 200:
        print("ref failed", st, data); sys.exit(1)
    ref[p].add(text_of(False, data))
def warm(i):  # the same mix as below, early hang-ups included, without chaos
    p, stream, early = PROMPTS[i % len(PROMPTS)], i % 2 == 1, i % 5 == 4
    st, data, _ = call(p, stream, 0.05 if early else 30)
    if st == 200: ref[p].add(text_of(stream, data))
with ThreadPoolExecutor(16) as ex:
    list(ex.map(warm, range(160)))
ties = sum(len(v) > 1 for v in ref.values())

def judge(p, text, strict):
    """right: a text this prompt gave before the chaos. A text that another
    prompt gave is WRONG (answers crossed between sessions), and so is
    text that is empty or not what 16 steps produce. Any other text is a
    near-tie variant: the same greedy run with a choice flipped at an exact
    tie by the batch it shared (counted, and bounded below). Requests begun
    after the kill meet a restarted member and are not held to the bound."""
    if text in ref[p]: return "right"
    if not text or any(text in ref[q] for q in PROMPTS if q != p):
        return "WRONG"
    return "near-tie variant" if strict else "valid, restarted member"

t_kill = [1e18]
def chaos():
    time.sleep(2.0)
    t_kill[0] = time.time()
    os.kill(wa, signal.SIGKILL)
    time.sleep(3.0)
    os.kill(wb, signal.SIGSTOP)
    time.sleep(10.0)
    os.kill(wb, signal.SIGCONT)
th = threading.Thread(target=chaos); th.start()

def one(i):
    p = PROMPTS[i % len(PROMPTS)]
    stream = i % 2 == 1
    early = i % 5 == 4
    began = time.time()
    st, data, dt = call(p, stream, 0.05 if early else 30)
    # a member restarted by supervision is a new process: its greedy text may
    # differ at a near-tie, so only requests begun before the kill are held
    # to the reference; later ones must be complete valid answers
    strict = began < t_kill[0]
    r = {"i": i, "stream": stream, "early": early, "status": st, "seconds": dt, "verdict": "?"}
    if st == 0:
        r["verdict"] = "hung up (client)" if early else "NO ANSWER"
    elif st == 200 and not stream:
        j = json.loads(data)
        ok_members = j["ensemble"]["failures"] == 0
        text = j["choices"][0]["text"]
        r["verdict"] = judge(p, text, strict) if ok_members else "degraded answer"
        if r["verdict"] in ("WRONG", "near-tie variant"): r["text"], r["ref"] = text, sorted(ref[p])
    elif st == 200:
        events = [l[6:] for l in data.split("\n") if l.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            r["verdict"] = "STREAM WITHOUT [DONE]"
        else:
            objs = [json.loads(e) for e in events[:-1]]
            if any("error" in o for o in objs):
                r["verdict"] = "stream error event"
            else:
                text = "".join(o["choices"][0]["text"] for o in objs if o.get("choices"))
                fin = [o for o in objs if o.get("ensemble")]
                ok_members = fin and fin[-1]["ensemble"]["failures"] == 0
                r["verdict"] = judge(p, text, strict) if ok_members else "degraded answer"
                if r["verdict"] in ("WRONG", "near-tie variant"): r["text"], r["ref"] = text, sorted(ref[p])
    elif st in (429, 503):
        try:
            code = json.loads(data)["error"]["code"]
            r["verdict"] = "refused " + str(code)
        except Exception:
            r["verdict"] = "REFUSED WITHOUT ERROR OBJECT"
    else:
        r["verdict"] = "UNEXPECTED STATUS"
    return r

t0 = time.time()
with ThreadPoolExecutor(16) as ex:
    results = list(ex.map(one, range(320)))
th.join()
summary = {}
for r in results:
    summary[r["verdict"]] = summary.get(r["verdict"], 0) + 1
json.dump({"results": results, "summary": summary, "ties": ties, "seconds": time.time() - t0,
           "max_seconds": max(r["seconds"] for r in results)}, open(tmp + "/chaos.json", "w"))
PY
check "the client driver ran" test -s "$TMP/chaos.json"
py() { python3 -c "import json,sys; d=json.load(open('$TMP/chaos.json')); $1"; }
echo "# $(py 'print(d["summary"], round(d["seconds"],1), "s, slowest", round(d["max_seconds"],2), "s;", d["ties"], "prompt(s) with a near-tie under load")')"
py '[print("# wrong:", json.dumps(r)[:700]) for r in d["results"] if r["verdict"] == "WRONG"]'
check "zero wrong answers (no crossed sessions, no garbage)" py 'sys.exit(1 if d["summary"].get("WRONG") else 0)'
check "near-tie variants are rare (at most 1 in 10 answers held to the reference)" py \
  's = d["summary"]; v = s.get("near-tie variant", 0); sys.exit(0 if v * 10 <= v + s.get("right", 0) else 1)'
check "every request answered or refused with a clear status" py \
  'sys.exit(1 if any(k.startswith(("NO ","STREAM W","REFUSED W","UNEXP")) for k in d["summary"]) else 0)'
check "enough answers held to the reference (the chaos did not swallow the run)" py 'sys.exit(0 if d["summary"].get("right",0) >= 25 else 1)'
check "no request past its deadline (20 s + 5 s slack)" py 'sys.exit(0 if d["max_seconds"] < 25 else 1)'
check "the killed worker's death was logged with its signal" grep -q "worker died (signal 9" "$TMP/chaos.err"
back=0
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "${SERVER_URL%/v1}/health")" = 200 ] && { back=1; break; }
  sleep 0.2
done
check "after the chaos /health is 200 (a restarted, b resumed)" test $back -eq 1
rss_c1=$(rss_kb "$SERVER_PID") rss_b1=$(rss_kb "$WB")
echo "# RSS coordinator ${rss_c0} -> ${rss_c1} kB, worker b ${rss_b0} -> ${rss_b1} kB"
if [ -n "${ASAN_OPTIONS:-}" ]; then # AddressSanitizer's quarantine keeps freed memory: RSS says nothing there
  n=$((n + 1)); echo "ok $n # SKIP coordinator RSS under AddressSanitizer"
  n=$((n + 1)); echo "ok $n # SKIP worker RSS under AddressSanitizer"
else
  check "coordinator RSS flat (within 64 MiB)" test $((rss_c1 - rss_c0)) -lt 65536
  check "worker b RSS flat (within 64 MiB)" test $((rss_b1 - rss_b0)) -lt 65536
fi
stop_consort; check "clean exit after the chaos" test $? -eq 0
echo "1..$n"
[ $failed -eq 0 ]
