#!/usr/bin/env bash
# bench/netns_bench.sh: how a two-member mixture's step latency grows with
# the link latency between the coordinator and its members, and how many
# bytes cross the link per member and step. Results go in bench/RESULTS.md.
#
#   bench/netns_bench.sh [TOKENS] [REPEATS]      (root: it creates network namespaces)
#
# Setup (tests/integration/lib_netns.sh): the coordinator and the workers a
# (models/a.gguf) and b (models/b.gguf) each in a network namespace of their
# own, joined by veth links; in the coordinator's namespace one
# tests/tools/delay_relay per member and delay (0, 1, 2, 5, 10 ms one way;
# this kernel has no netem), so every row goes through a relay and differs
# only in the delay. Each run is `consort generate --json --strategy mixture
# --temperature 0 --max-tokens TOKENS` with the same prompt (the same greedy
# text each time, checked); runs are interleaved (each repeat runs every
# delay once) so machine load falls on all rows alike; figures are medians.
#
# Columns: ms/step = request seconds / steps; ratio = to the 0 ms row;
# round trips/step = the engine's rounds per step (a step needs a second
# round when a proposal needs masses the first answers lacked); predicted =
# ms/step at 0 ms + round trips/step x 2 x delay; a rt, b rt = each member's
# mean round trip as the coordinator saw it. Bytes: the relays' counters
# (TCP payload: HTTP headers and JSON bodies) per member and step, request
# (up) and answer (down), from the difference between a TOKENS run and a
# 1-token run (what one more step costs), plus the fixed bytes of a request.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-64}
R=${2:-5}
DELAYS=${DELAYS:-0 1 2 5 10}
[ "$(id -u)" = 0 ] || { echo "netns_bench: needs root (ip netns)" >&2; exit 1; }
set +u
. tests/integration/lib_netns.sh
set -u
for f in "$B/consort" "$B/consort-worker" "$B/tools/delay_relay"; do
  [ -x "$f" ] || { echo "netns_bench: no $f (make tests)" >&2; exit 1; }
done
echo "before: $(uptime)"
netns_setup || { echo "netns_bench: cannot create the namespaces" >&2; exit 1; }
start_worker_in "$NS_A" a "$M1" "$ADDR_A"; UA=$WORKER_URL
start_worker_in "$NS_B" b "$M2" "$ADDR_B"; UB=$WORKER_URL
declare -A RURL RPID ROUT
for d in $DELAYS; do
  for m in a b; do
    [ $m = a ] && target=$UA || target=$UB
    start_relay_in "$NS_C" "$m$d" "$target" "$d"
    RURL[$m$d]=$RELAY_URL RPID[$m$d]=$RELAY_PID ROUT[$m$d]=$RELAY_OUT
  done
done
prompt="The committee said that the new school"
# run DELAY TOKENS OUT: one generate through the relays of DELAY; writes OUT
# (generate's JSON) and OUT.bytes ("a_up a_down b_up b_down" of this run)
run() {
  local d=$1 n=$2 out=$3 a0 a1 b0 b1
  a0=$(relay_bytes "${RPID[a$d]}" "${ROUT[a$d]}"); b0=$(relay_bytes "${RPID[b$d]}" "${ROUT[b$d]}")
  in_ns "$NS_C" "$B/consort" generate --json --member a="${RURL[a$d]}" --member b="${RURL[b$d]}" \
    --strategy mixture --prompt "$prompt" --max-tokens "$n" --temperature 0 >"$out" 2>"$out.err"
  a1=$(relay_bytes "${RPID[a$d]}" "${ROUT[a$d]}"); b1=$(relay_bytes "${RPID[b$d]}" "${ROUT[b$d]}")
  echo "$a0 $a1 $b0 $b1" | awk '{print $3-$1, $4-$2, $7-$5, $8-$6}' >"$out.bytes"
}
for i in $(seq "$R"); do
  for d in $DELAYS; do run "$d" "$N" "$TMP/run.$d.$i.json"; done
done
for d in $DELAYS; do run "$d" 1 "$TMP/one.$d.json"; done
echo "after: $(uptime)"
python3 - "$TMP" "$N" "$R" "$DELAYS" <<'PY'
import json, statistics as st, sys
tmp, n, r, delays = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [float(x) for x in sys.argv[4].split()]
def load(path):
    d = json.load(open(path))
    d["wire"] = [int(x) for x in open(path + ".bytes").read().split()]
    return d
rows, texts = [], set()
for dl in delays:
    tag = ("%g" % dl)
    runs = [load(f"{tmp}/run.{tag}.{i}.json") for i in range(1, r + 1)]
    one = load(f"{tmp}/one.{tag}.json")
    texts.update(x["text"] for x in runs)
    m = lambda f: st.median(f(x) for x in runs)
    rt = {mm["name"]: st.median(x2["mean_step_ms"] for x in runs for x2 in x["members"] if x2["name"] == mm["name"])
          for mm in runs[0]["members"]}
    steps = m(lambda x: x["steps"])
    per_step = [m(lambda x, k=k: (x["wire"][k] - one["wire"][k]) / (x["steps"] - one["steps"])) for k in range(4)]
    rows.append(dict(d=dl, ms=m(lambda x: 1000 * x["seconds"] / x["steps"]), rounds=m(lambda x: x["rounds"] / x["steps"]),
                     steps=steps, rt=rt, per_step=per_step, fixed=[one["wire"][k] - per_step[k] * one["steps"] for k in range(4)]))
base = rows[0]["ms"]
print(f"\n{n} greedy steps of mixture(a, b), median of {r} interleaved runs; same text in every run: {'yes' if len(texts) == 1 else 'NO'}\n")
print("| one-way delay | ms/step | ratio to 0 ms | round trips/step | predicted ms/step | a rt ms | b rt ms | a bytes/step up / down | b bytes/step up / down |")
print("|---|---|---|---|---|---|---|---|---|")
for x in rows:
    p = x["per_step"]
    print(f"| {x['d']:g} ms | {x['ms']:.2f} | {x['ms'] / base:.2f} | {x['rounds']:.2f} | {base + x['rounds'] * 2 * x['d']:.2f} | "
          f"{x['rt']['a']:.2f} | {x['rt']['b']:.2f} | {p[0]:.0f} / {p[1]:.0f} | {p[2]:.0f} / {p[3]:.0f} |")
f = rows[0]["fixed"]
print(f"\nfixed bytes per request (member info, session open and close; 0 ms row): a {f[0]:.0f} up / {f[1]:.0f} down, b {f[2]:.0f} up / {f[3]:.0f} down")
PY
