#!/usr/bin/env bash
# bench/speculative_bench.sh: generation with and without speculative steps,
# side by side in one run, on workers started here: one member alone (the
# slower one), the same model twice (members that always agree) and a
# two-tokenizer mixture (members that often disagree); greedy, then sampled
# (temperature 1, a fixed seed).
#
#   bench/speculative_bench.sh [-a MODEL_A] [-b MODEL_B] [-d DRAFTER -t TARGET [-o OTHER_DRAFTER]] [-P]
#                              [-n TOKENS] [-r ROUNDS] [-s SEED] [BUILD_DIR]
#
# For each decoding, configuration and prompt: steps/s of `consort generate`
# (best of ROUNDS), round trips, and the steps decided from drafts (accepted
# of drafted). Text equality with and without is checked and reported (for
# sampling: the same seed, so the same text is expected).
#
# A drafting member (issue 11: `--draft-member NAME`): with -d and -t (the
# pair of bench/mkmodel_pair.sh: a fast drafter that agrees with a slow
# target on most greedy tokens; -o, its disagreeing drafter) a second table
# compares, per pair and prompt, greedy: the target alone (solo:t), the
# two-member mixture `--member d=DRAFTER --member t=TARGET --strategy mixture`
# plain, and the same with `--speculative --draft-member d` (d drafts, t
# verifies the drafted chunk in one batched decode). Reported: steps/s of
# each, speculative / plain and speculative / t alone, round trips (plain /
# speculative), accepted of drafted, steps per speculative round trip (the
# mean acceptance length, round trips counting drafter and verifier calls as
# the engine counts them) and whether the speculative text is the plain
# mixture's; then t with d drafting only (`--member d --member t --strategy
# solo:t --draft-member d`: d at weight 0 never decides, classic
# speculative decoding), its steps/s against t alone, accepted of drafted,
# and whether its text is t's own. The "disagreeing" rows run the same with
# -o as d. -P: that
# table only (no workers for -a and -b). PAIR_SAMPLED=1 adds the pair at
# temperature 1 with seed SEED.
# WORKER_ARGS: extra flags of each consort-worker (e.g. "-ngl all" to
# offload to a GPU: bench/gpu_bench.sh); THREADS: their threads (default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
MA=models/a.gguf MB=models/b.gguf N=128 ROUNDS=3 SEED=7 MD= MT= MO= PAIR_ONLY=0
usage="usage: $0 [-a MODEL_A] [-b MODEL_B] [-d DRAFTER -t TARGET [-o OTHER_DRAFTER]] [-P] [-n TOKENS] [-r ROUNDS] [-s SEED] [BUILD_DIR]"
while getopts "a:b:d:t:o:Pn:r:s:" o; do case $o in
  a) MA=$OPTARG ;; b) MB=$OPTARG ;; n) N=$OPTARG ;; r) ROUNDS=$OPTARG ;; s) SEED=$OPTARG ;;
  d) MD=$OPTARG ;; t) MT=$OPTARG ;; o) MO=$OPTARG ;; P) PAIR_ONLY=1 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac; done
if [ -n "$MD$MT$MO" ] && { [ -z "$MD" ] || [ -z "$MT" ]; }; then echo "$0: -d and -t go together" >&2; exit 2; fi
if [ "$PAIR_ONLY" = 1 ] && [ -z "$MD" ]; then echo "$0: -P needs -d and -t" >&2; exit 2; fi
shift $((OPTIND - 1))
B=${1:-build}
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # name model -> URL
  "$B/consort-worker" --model "$2" --port 0 --threads "${THREADS:-1}" --parallel 4 ${WORKER_ARGS:-} >"$tmp/$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 300); do
    URL=$(sed -n 's/^consort-worker listening on //p' "$tmp/$1.out" 2>/dev/null); [ -n "$URL" ] && return 0; sleep 0.1
  done
  echo "worker $1 did not start" >&2; exit 1
}
one() { # args... -> "steps/s rounds accepted drafted steps" (best of ROUNDS) and the text in $tmp/text
  local best=0 line=
  rm -f "$tmp/text"
  for _ in $(seq "$ROUNDS"); do
    "$B/consort" generate --json --max-tokens "$N" "$@" >"$tmp/g.json" 2>"$tmp/g.err" ||
      { echo "# failed: consort generate $*: $(grep -v ' info: ' "$tmp/g.err" | head -1)" >&2; echo "failed"; return; }
    # the acceptance counters: top level of generate --json (inside an
    # "ensemble" object, should they move there)
    read -r sps rest < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); e=d.get("ensemble", d)
print("%.1f %d %d %d %d" % (d["steps_per_second"], e.get("rounds", d.get("rounds", 0)), e.get("speculative_accepted", 0),
                            e.get("speculative_drafted", 0), d["steps"]))' "$tmp/g.json")
    if python3 -c "import sys; sys.exit(0 if $sps > $best else 1)"; then best=$sps; line="$sps $rest"; fi
  done
  python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["text"])' "$tmp/g.json" >"$tmp/text"
  echo "$line"
}
div() { python3 -c "print('%.2f' % ($1 / $2))" 2>/dev/null || echo "?"; }

if [ -n "$MD" ]; then
  start d "$MD"; UD=$URL
  start t "$MT"; UT=$URL
  if [ -n "$MO" ]; then start o "$MO"; UO=$URL; fi
  modes=("greedy|")
  [ "${PAIR_SAMPLED:-0}" = 1 ] && modes+=("T=1, seed $SEED|--temperature 1 --seed $SEED")
  echo "| decoding | pair | prompt | t alone steps/s | mixture plain steps/s | speculative (--draft-member d) steps/s | spec / plain | spec / t alone | round trips (plain / spec) | accepted of drafted | steps per spec round trip | same text | t, d drafting only steps/s | / t alone | accepted of drafted | = t's text |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  pairs=("agreeing|$UD")
  [ -n "$MO" ] && pairs+=("disagreeing|$UO")
  for mode in "${modes[@]}"; do
    dec=${mode%%|*} dargs=${mode#*|}
    for P in "Once upon a time" "The committee said that"; do
      # shellcheck disable=SC2086
      read -r t_sps _ < <(one --member t="$UT" --strategy solo:t $dargs --prompt "$P")
      cp "$tmp/text" "$tmp/t_alone" 2>/dev/null || rm -f "$tmp/t_alone"
      for pr in "${pairs[@]}"; do
        name=${pr%%|*} ud=${pr#*|}
        args=(--member d="$ud" --member t="$UT" --strategy mixture)
        # shellcheck disable=SC2086
        read -r p_sps p_rounds _ _ _ < <(one "${args[@]}" $dargs --prompt "$P")
        cp "$tmp/text" "$tmp/plain" 2>/dev/null || rm -f "$tmp/plain"
        # shellcheck disable=SC2086
        read -r s_sps s_rounds s_acc s_dr s_steps < <(one "${args[@]}" $dargs --prompt "$P" --speculative --draft-member d)
        same=no; [ -f "$tmp/plain" ] && cmp -s "$tmp/plain" "$tmp/text" && same=yes
        # shellcheck disable=SC2086
        read -r o_sps _ o_acc o_dr _ < <(one --member d="$ud" --member t="$UT" --strategy solo:t $dargs --prompt "$P" \
          --draft-member d)
        o_same=no; [ -f "$tmp/t_alone" ] && cmp -s "$tmp/t_alone" "$tmp/text" && o_same=yes
        echo "| $dec | $name | $P | $t_sps | $p_sps | $s_sps | $(div "$s_sps" "$p_sps") | $(div "$s_sps" "$t_sps") |" \
          "$p_rounds / $s_rounds | $s_acc of $s_dr | $(div "$s_steps" "$s_rounds") | $same |" \
          "$o_sps | $(div "$o_sps" "$t_sps") | $o_acc of $o_dr | $o_same |"
      done
    done
  done
  echo
  echo "pair: d=$MD t=$MT${MO:+ other d=$MO}, $N steps, best of $ROUNDS, ${THREADS:-1} thread(s) per worker${WORKER_ARGS:+, worker flags $WORKER_ARGS}"
  [ "$PAIR_ONLY" = 1 ] && exit 0
  echo
fi

start a "$MA"; UA=$URL
start a2 "$MA"; UA2=$URL
start b "$MB"; UB=$URL

echo "| decoding | configuration | prompt | plain steps/s | speculative steps/s | ratio | round trips (plain / spec) | accepted of drafted | same text |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in "greedy|" "T=1, seed $SEED|--temperature 1 --seed $SEED"; do
  dec=${mode%%|*} dargs=${mode#*|}
  for P in "Once upon a time" "The committee said that"; do
    for cfg in "solo b|--member b=$UB --strategy solo:b" "solo a|--member a=$UA --strategy solo:a" \
               "a twice (agree)|--member a=$UA --member a2=$UA2" "a+b mixture|--member a=$UA --member b=$UB"; do
      name=${cfg%%|*}; args=${cfg#*|}
      # shellcheck disable=SC2086
      read -r p_sps p_rounds _ < <(one $args $dargs --prompt "$P")
      cp "$tmp/text" "$tmp/plain" 2>/dev/null || rm -f "$tmp/plain"
      # shellcheck disable=SC2086
      read -r s_sps s_rounds s_acc s_dr _ < <(one $args $dargs --prompt "$P" --speculative)
      same=no; [ -f "$tmp/plain" ] && cmp -s "$tmp/plain" "$tmp/text" && same=yes
      ratio=$(python3 -c "print('%.2f' % ($s_sps / $p_sps))" 2>/dev/null || echo "?")
      echo "| $dec | $name | $P | $p_sps | $s_sps | $ratio | $p_rounds / $s_rounds | $s_acc of $s_dr | $same |"
    done
  done
done
