#!/usr/bin/env bash
# bench/mkmodel_big.sh: write the two random-weight models on which the
# throughput benchmarks of issue 11 run, where one decode costs several
# milliseconds (bench/RESULTS.md: about 7-8 ms at batch 1 on one thread of the
# development machine) instead of the 1 ms of models/a.gguf and models/b.gguf.
#
#   bench/mkmodel_big.sh [N_EMBD=1024] [N_LAYER=16] [TYPE=q8_0]
#
# Writes $CONSORT_BUILD/models/big-a-EMBDxLAYER-TYPE.gguf (the SentencePiece
# vocabulary of models/a.gguf, 32000 tokens) and big-b-... (the GPT-2 BPE
# vocabulary of models/b.gguf, 50257 tokens), so that a two-tokenizer
# mixture exists; prints their two paths, one a line. Weights from
# tests/tools/mkmodel with fixed seeds (1 for a, 2 for b): the same files on
# every run. A file already there is kept. The folder is ignored by git
# (build/). 1024 x 16 in q8_0 is about 200M parameters (214 MB and 252 MB):
# stored as real members are stored, with a decode bound by reading the
# weights, as on the machines consort is for.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
EMBD=${1:-1024} LAYER=${2:-16} TYPE=${3:-q8_0}
[ -x "$B/tools/mkmodel" ] || make -s tests >/dev/null
mkdir -p "$B/models"
seed=1
for v in a b; do
  out="$B/models/big-$v-${EMBD}x$LAYER-$TYPE.gguf"
  if [ ! -s "$out" ]; then
    "$B/tools/mkmodel" "models/$v.gguf" "$out.tmp" "$EMBD" "$LAYER" "$seed" "$TYPE"
    mv "$out.tmp" "$out"
  fi
  echo "$out"
  seed=$((seed + 1))
done
