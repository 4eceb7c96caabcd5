#!/usr/bin/env bash
# bench/ensemble_bench.sh: greedy generation speed of `mixture` over two
# members vs each member alone through the same coordinator, and the
# coordinator's own CPU time per step. Results go in bench/RESULTS.md.
#
#   bench/ensemble_bench.sh [TOKENS] [REPEATS]
#
# Models: $CONSORT_BENCH_MODEL_A / _B (default: the two external TinyStories
# models). Workers: $CONSORT_BUILD/consort-worker (or $CONSORT_WORKER), one
# thread each, started once and shared by every run (so every run sees warm
# workers). Every figure is the median over REPEATS runs of `consort
# generate --json` (steps/s = completion steps per wall second of the
# request; cpu us/step = the coordinator thread's CPU time / steps).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
EXT=${CONSORT_MODELS:-$PWD/../shared/models/external}
MA=${CONSORT_BENCH_MODEL_A:-$EXT/stories260K.gguf}
MB=${CONSORT_BENCH_MODEL_B:-$EXT/TinyStories-656K-Q8_0.gguf}
WORKER=${CONSORT_WORKER:-$B/consort-worker}
C=$B/consort
N=${1:-200}
R=${2:-5}
[ -x "$WORKER" ] || { echo "no worker binary at $WORKER" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
start() { # name model -> URL (runs in this shell so the pid is kept)
  : >"$tmp/$1.out"
  "$WORKER" --model "$2" --port 0 --threads 1 --name "$1" >"$tmp/$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 300); do
    u=$(sed -n 's/^consort-worker listening on \(http[^ ]*\).*/\1/p' "$tmp/$1.out")
    [ -n "$u" ] && { URL=$u; return; }
    sleep 0.1
  done
  echo "worker $1 did not start" >&2; exit 1
}
start a "$MA"; UA=$URL
start b "$MB"; UB=$URL
prompt="Once upon a time, there was a little"
labels="solo_a solo_b mixture product min_ppl selective"
strategy_of() { case $1 in solo_a) echo solo:a;; solo_b) echo solo:b;; *) echo "$1";; esac; }
# Runs are interleaved (each repeat runs every strategy once) so that load
# from other processes falls on all of them alike.
for i in $(seq "$R"); do
  for l in $labels; do
    "$C" generate --json --member a="$UA" --member b="$UB" --strategy "$(strategy_of $l)" --prompt "$prompt" \
      --max-tokens "$N" --stop "<|end_story|>" 2>/dev/null >"$tmp/$l.$i.json"
  done
done
echo "models: a=$(basename "$MA"), b=$(basename "$MB"); $N greedy steps, median of $R interleaved runs; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run       | steps | steps/s  | bytes/s  | cpu us/step | 2nd rounds | skipped | member round trip ms (tokens decoded/step) |"
echo "|-----------|-------|----------|----------|-------------|------------|---------|--------------------------------------------|"
for l in $labels; do
  python3 - "$l" "$tmp" "$R" <<'PY'
import json, sys, statistics as st
label, tmp, r = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = [json.load(open(f"{tmp}/{label}.{i}.json")) for i in range(1, r + 1)]
med = lambda k: st.median(x[k] for x in d)
sps = st.median(x["steps"] / x["seconds"] for x in d)
bps = st.median(x["bytes"] / x["seconds"] for x in d)
sr = st.median(x["second_rounds"] / max(1, x["steps"]) for x in d)
sk = st.median(x.get("skipped_rounds", 0) / max(1, x["steps"]) for x in d)
ms = " ".join(f'{m["name"]}={m["mean_step_ms"]:.2f} ({(m.get("decoded", 0) - m["prompt_tokens"]) / max(1, d[0]["steps"]):.1f} dec/step)'
              for m in d[0]["members"] if m["mean_step_ms"] > 0)
print(f"| {label:<9} | {med('steps'):>5.0f} | {sps:>8.1f} | {bps:>8.1f} | {med('cpu_us_per_step'):>11.1f} | {100*sr:>9.1f}% | {100*sk:>6.1f}% | {ms} |")
open(f"{tmp}/{label}.sps", "w").write(str(sps))
PY
done
python3 - "$tmp" <<'PY'
import sys
t = sys.argv[1]
v = {k: float(open(f"{t}/{k}.sps").read()) for k in ("solo_a", "solo_b", "mixture")}
slow = min(v["solo_a"], v["solo_b"])
print(f"\nmixture / slower member alone = {v['mixture']:.1f} / {slow:.1f} = {v['mixture']/slow:.2f} (target >= 0.8)")
PY
