#!/usr/bin/env bash
# bench/speculative_bench.sh: generation with and without speculative steps,
# side by side in one run, on workers started here: one member alone (the
# slower one), the same model twice (members that always agree) and a
# two-tokenizer mixture (members that often disagree); greedy, then sampled
# (temperature 1, a fixed seed).
#
#   bench/speculative_bench.sh [-a MODEL_A] [-b MODEL_B] [-n TOKENS] [-r ROUNDS] [-s SEED] [BUILD_DIR]
#
# For each decoding, configuration and prompt: steps/s of `consort generate`
# (best of ROUNDS), round trips, and the steps decided from drafts (accepted
# of drafted). Text equality with and without is checked and reported (for
# sampling: the same seed, so the same text is expected).
# WORKER_ARGS: extra flags of each consort-worker (e.g. "-ngl all" to
# offload to a GPU: bench/gpu_bench.sh); THREADS: their threads (default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
MA=models/a.gguf MB=models/b.gguf N=128 ROUNDS=3 SEED=7
while getopts "a:b:n:r:s:" o; do case $o in
  a) MA=$OPTARG ;; b) MB=$OPTARG ;; n) N=$OPTARG ;; r) ROUNDS=$OPTARG ;; s) SEED=$OPTARG ;;
  *) echo "usage: $0 [-a MODEL_A] [-b MODEL_B] [-n TOKENS] [-r ROUNDS] [-s SEED] [BUILD_DIR]" >&2; exit 2 ;;
esac; done
shift $((OPTIND - 1))
B=${1:-build}
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # name model -> URL
  "$B/consort-worker" --model "$2" --port 0 --threads "${THREADS:-1}" --parallel 4 ${WORKER_ARGS:-} >"$tmp/$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 300); do
    URL=$(sed -n 's/^consort-worker listening on //p' "$tmp/$1.out"); [ -n "$URL" ] && return 0; sleep 0.1
  done
  echo "worker $1 did not start" >&2; exit 1
}
start a "$MA"; UA=$URL
start a2 "$MA"; UA2=$URL
start b "$MB"; UB=$URL

one() { # spec? args... -> "steps/s rounds accepted drafted" (best of ROUNDS) and the text in $tmp/text
  local best=0 line=
  for _ in $(seq "$ROUNDS"); do
    "$B/consort" generate --json --max-tokens "$N" "$@" >"$tmp/g.json" 2>/dev/null || { echo "failed"; return; }
    read -r sps rest < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("%.1f %d %d %d" % (d["steps_per_second"], d["rounds"], d.get("speculative_accepted", 0), d.get("speculative_drafted", 0)))' "$tmp/g.json")
    if python3 -c "import sys; sys.exit(0 if $sps > $best else 1)"; then best=$sps; line="$sps $rest"; fi
  done
  python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["text"])' "$tmp/g.json" >"$tmp/text"
  echo "$line"
}

echo "| decoding | configuration | prompt | plain steps/s | speculative steps/s | ratio | round trips (plain / spec) | accepted of drafted | same text |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in "greedy|" "T=1, seed $SEED|--temperature 1 --seed $SEED"; do
  dec=${mode%%|*} dargs=${mode#*|}
  for P in "Once upon a time" "The committee said that"; do
    for cfg in "solo b|--member b=$UB --strategy solo:b" "solo a|--member a=$UA --strategy solo:a" \
               "a twice (agree)|--member a=$UA --member a2=$UA2" "a+b mixture|--member a=$UA --member b=$UB"; do
      name=${cfg%%|*}; args=${cfg#*|}
      # shellcheck disable=SC2086
      read -r p_sps p_rounds _ _ < <(one $args $dargs --prompt "$P"); cp "$tmp/text" "$tmp/plain"
      # shellcheck disable=SC2086
      read -r s_sps s_rounds s_acc s_dr < <(one $args $dargs --prompt "$P" --speculative)
      same=no; cmp -s "$tmp/plain" "$tmp/text" && same=yes
      ratio=$(python3 -c "print('%.2f' % ($s_sps / $p_sps))" 2>/dev/null || echo "?")
      echo "| $dec | $name | $P | $p_sps | $s_sps | $ratio | $p_rounds / $s_rounds | $s_acc of $s_dr | $same |"
    done
  done
done
