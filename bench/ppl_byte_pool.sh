#!/usr/bin/env bash
# bench/ppl_byte_pool.sh [OUTDIR]: byte_pool (docs/EVALUATION.md, "byte_pool")
# beside every member alone and mixture_units, with three members
# (models/a.gguf, b.gguf, c.gguf) on data/brown-heldout.jsonl; mixture_units'
# weights and byte_pool's exponents tuned on data/brown-dev.jsonl only (the
# exponents on the first 3000 bytes of each dev document). Each member walks
# each document once over its covering tokenizations (POST /v1/next_bytes,
# beam BYTE_BEAM, default consort ppl's 4); SUBSET=DxC scores the first C
# characters of the first D documents of both files instead (SUBSET=10x6000
# is the first run in bench/RESULTS.md). BYTE_BEAM=0 runs the former
# per-byte step walk (one round of member calls per byte, 25-45 minutes for
# the whole file).
# Writes OUTDIR/byte_pool.txt (the table) and OUTDIR/byte_pool.json; the
# run itself is bench/ppl_steps.sh's.
set -euo pipefail
STRATEGIES=solo:a,solo:b,solo:c,mixture_units,byte_pool NAME=byte_pool \
  PPL_EXTRA="--byte-beam ${BYTE_BEAM:-4}" exec "$(dirname "$0")/ppl_steps.sh" "$@"
