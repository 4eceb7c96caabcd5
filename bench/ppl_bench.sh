#!/usr/bin/env bash
# bench/ppl_bench.sh [MODEL.gguf] [FILE] [THREADS]: scoring throughput of
# `consort ppl` with one member against a direct in-process llama.cpp
# scoring loop (build/tools/ppl_direct) on the same file, same context size,
# same window overlap, same thread count, run one after the other on this
# machine. tokens/s counts the member's scored tokens over the scoring wall
# time (model loading and worker start-up excluded on both sides; for
# consort it includes HTTP, JSON, and the worker's entropy/top-1 per token).
# Prints a markdown table row set for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
MODEL=${1:-models/a.gguf}
FILE=${2:-data/brown-heldout.jsonl}
T=${3:-2}
REPS=${REPS:-3}
CTX=${CTX:-}   # context size of the spawned worker (default: the worker's)
KV=${KV:-}     # also time the direct loop with a KV cache of KV cells (the worker's own cache size)
[ -x "$B/consort" ] || { echo "no $B/consort (make first)" >&2; exit 1; }
[ -x "$B/tools/ppl_direct" ] || { echo "no $B/tools/ppl_direct (make tests first)" >&2; exit 1; }
[ -f "$FILE" ] || { echo "no $FILE" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ -n "${SUBSET:-}" ]; then # SUBSET=DxC: the first C characters of the first D documents
  python3 -c "
import json, sys
d, c = map(int, sys.argv[2].split('x'))
for i, l in enumerate(open(sys.argv[1])):
    if i >= d: break
    print(json.dumps({'text': json.loads(l)['text'][:c]}))" "$FILE" "$SUBSET" > "$tmp/subset.jsonl"
  FILE=$tmp/subset.jsonl
fi
get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
best_c=0; best_d=0; best_k=0
for r in $(seq "$REPS"); do
  "$B/consort" ppl --member a="$MODEL" --threads "$T" ${CTX:+--ctx-size "$CTX"} --file "$FILE" \
    --json "$tmp/c.json" --no-progress --resamples 10 >/dev/null
  ctx=$(get "$tmp/c.json" "d['members'][0].get('n_ctx', 0)")
  ov=$(get "$tmp/c.json" "d['members'][0].get('window_overlap', 0)")
  "$B/tools/ppl_direct" --model "$MODEL" --file "$FILE" --ctx "$ctx" --overlap "$ov" --threads "$T" > "$tmp/d.json"
  tc=$(get "$tmp/c.json" "d['members'][0]['tokens'] / d['seconds']")
  td=$(get "$tmp/d.json" "d['tokens_per_s']")
  tk=0
  if [ -n "$KV" ]; then
    "$B/tools/ppl_direct" --model "$MODEL" --file "$FILE" --ctx "$ctx" --overlap "$ov" --threads "$T" --kv-size "$KV" > "$tmp/k.json"
    tk=$(get "$tmp/k.json" "d['tokens_per_s']")
    best_k=$(python3 -c "print(max($best_k, $tk))")
  fi
  echo "run $r: consort ppl $tc tokens/s, direct $td tokens/s${KV:+, direct with a $KV-cell KV cache $tk tokens/s}" >&2
  best_c=$(python3 -c "print(max($best_c, $tc))"); best_d=$(python3 -c "print(max($best_d, $td))")
done
bc=$(get "$tmp/c.json" "d['results'][0]['bits_per_byte']")
bd=$(get "$tmp/d.json" "d['bits_per_byte']")
tok=$(get "$tmp/c.json" "d['members'][0]['tokens']")
echo "| model | file | tokens | n_ctx / overlap | threads | consort ppl tokens/s | direct llama.cpp tokens/s | ratio | bpb consort / direct |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 -c "print('| %s | %s | %s | %s / %s | %s | %.0f | %.0f | %.3f | %.6f / %.6f |' % ('$(basename "$MODEL")', '$FILE', $tok, $ctx, $ov, $T, $best_c, $best_d, $best_c / $best_d, $bc, $bd))"
if [ -n "$KV" ]; then
  python3 -c "print('\\ncontrol: direct loop with a %s-cell KV cache: %.0f tokens/s; consort ppl / that = %.3f' % ('$KV', $best_k, $best_c / $best_k if $best_k else 0))"
fi
