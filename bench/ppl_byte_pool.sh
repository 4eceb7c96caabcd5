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
# Writes OUTDIR/byte_pool.txt (the table) and OUTDIR/byte_pool.json; the
# run itself is bench/ppl_steps.sh's.
set -euo pipefail
STRATEGIES=solo:a,solo:b,solo:c,mixture_units,byte_pool NAME=byte_pool exec "$(dirname "$0")/ppl_steps.sh" "$@"
