#!/usr/bin/env bash
# bench/run.sh: greedy tokens/s through consort-worker's /v1/step over
# loopback vs a direct in-process libllama loop, side by side in one run
# (bench/worker_bench.c). Models: the project's own models/a.gguf and
# models/b.gguf (the defaults of `consort run`), the real tiny stories260K
# (models/external: a 0.13 ms decode, the worst case, where the per-step HTTP
# cost is as large as the decode), and a larger random-weight llama model
# made here with tests/tools/mkmodel (llama-spm tokenizer, n_embd 512, 8
# layers: a decode cost closer to the real models consort is for).
# MODELS="x.gguf y.gguf" replaces the list. Results: stdout; bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
THREADS=${THREADS:-1}
TOKENS=${TOKENS:-64}
make -s tests >/dev/null
mkdir -p "$B/models"
mid="$B/models/bench-spm-512x8.gguf"
[ -f "$mid" ] || "$B/tools/mkmodel" .deps/llama.cpp/models/ggml-vocab-llama-spm.gguf "$mid" 512 8
for m in ${MODELS:-models/a.gguf models/b.gguf models/external/stories260K.gguf "$mid"}; do
  echo "== $m"
  "$B/tools/worker_bench" --model "$m" --worker "$B/consort-worker" --tokens "$TOKENS" --threads "$THREADS" --rounds ${ROUNDS:-5}
done
