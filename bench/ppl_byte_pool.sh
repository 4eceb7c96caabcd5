#!/usr/bin/env bash
# bench/ppl_byte_pool.sh [OUTDIR]: byte_pool (docs/EVALUATION.md, "byte_pool")
# beside every member alone and mixture_units, with three members
# (models/a.gguf, b.gguf, c.gguf) on data/brown-heldout.jsonl; mixture_units'
# weights and byte_pool's exponents tuned on data/brown-dev.jsonl only (the
# exponents on the first 1000 bytes of each dev document). One round of
# member calls per byte: 12-23 ms per byte with three members on two shared
# cores, so the whole held-out file takes 25-45 minutes. SUBSET=DxC scores
# the first C characters of the first D documents of both files instead
# (SUBSET=10x6000 is the run in bench/RESULTS.md).
# Writes OUTDIR/byte_pool.txt (the table) and OUTDIR/byte_pool.json.
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
uptime
"$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --member c=models/c.gguf -t 1 \
  --file "$FILE" --tune-weights "$DEV" --strategies solo:a,solo:b,solo:c,mixture_units,byte_pool \
  --no-progress --json "$OUT/byte_pool.json" | tee "$OUT/byte_pool.txt"
uptime
