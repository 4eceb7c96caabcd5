#!/usr/bin/env bash
# bench/ppl_steps.sh [OUTDIR]: the held-out figures of issue 10 with three
# members (models/a.gguf, b.gguf, c.gguf): every member alone, the rules
# computed on units, and the step-level rules scored through the engine's
# own steps (docs/EVALUATION.md "Scoring through the steps"), with every
# weight and the pool's exponents tuned on data/brown-dev.jsonl only.
# Writes OUTDIR/heldout.txt (the table) and OUTDIR/heldout.json; takes
# about half an hour on two cores (one round of member calls per step).
# SUBSET=DxC scores the first C characters of the first D documents of
# both files instead (a quick look). STRATEGIES=LIST and NAME=BASE score
# other rules into OUTDIR/BASE.txt and .json (bench/ppl_byte_pool.sh);
# PPL_EXTRA adds options to consort ppl (word-split).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
OUT=${1:-bench/out}
mkdir -p "$OUT"
[ -x "$B/consort" ] || { echo "no $B/consort (make first)" >&2; exit 1; }
FILE=data/brown-heldout.jsonl
DEV=data/brown-dev.jsonl
if [ -n "${SUBSET:-}" ]; then
  cut_file() { python3 -c "
import json, sys
d, c = map(int, sys.argv[2].split('x'))
for i, l in enumerate(open(sys.argv[1])):
    if i >= d: break
    print(json.dumps({'text': json.loads(l)['text'][:c]}))" "$1" "$SUBSET"; }
  cut_file "$FILE" > "$OUT/heldout_subset.jsonl"; FILE=$OUT/heldout_subset.jsonl
  cut_file "$DEV" > "$OUT/dev_subset.jsonl"; DEV=$OUT/dev_subset.jsonl
fi
STRATEGIES=${STRATEGIES:-solo:a,solo:b,solo:c,mixture_units,product_bound,route_entropy,route_prev,oracle,mixture,pool,selective,product}
NAME=${NAME:-heldout}
uptime
"$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --member c=models/c.gguf -t 1 \
  --file "$FILE" --tune-weights "$DEV" --strategies "$STRATEGIES" ${PPL_EXTRA:-} \
  --no-progress --json "$OUT/$NAME.json" | tee "$OUT/$NAME.txt"
uptime
