#!/usr/bin/env bash
# tests/tools/mkmodel's storage types (f32, f16, q8_0; bench/mkmodel_big.sh
# makes the decode-bound benchmark models with them): without a type, and
# with f32, it writes the same bytes as before the type existed (the tests'
# models do not change); f16 and q8_0 models are smaller by their storage
# and are the same model up to rounding (greedy text equal, log-probabilities
# of each step within 0.01 (f16) and 0.1 (q8_0) nats of f32's, where a model
# of another seed differs by about 1.5); q8_0 refuses an n_embd that is not
# a multiple of its block, and an unknown type is refused.
# live and tail (bench/mkmodel_pair.sh's drafter/target pairs): live =
# n_layer, or tail 1, writes the same bytes as without them; a 3-layer model
# whose layers 1-2 are scaled by 0 computes the 1-layer model of the same
# seed (same greedy text, log-probabilities within 1e-4), while with tail 1
# it is another model; a bad live or tail is refused.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
MK=$B/tools/mkmodel
[ -x "$MK" ] || skip_all "no $MK"
n=0 failed=0

"$MK" "$M1" "$TMP/default.gguf" 64 1
"$MK" "$M1" "$TMP/f32.gguf" 64 1 1 f32
"$MK" "$M1" "$TMP/f16.gguf" 64 1 1 f16
"$MK" "$M1" "$TMP/q8_0.gguf" 64 1 1 q8_0
"$MK" "$M1" "$TMP/seed2.gguf" 64 1 2
check "no type and f32 write the same bytes" cmp -s "$TMP/default.gguf" "$TMP/f32.gguf"
size() { stat -c %s "$1"; }
# matrices: 32000 x 64 embeddings + 4 x 64 x 64 + 3 x 64 x 128, 2,088,960 weights
W=2088960
check "f16 stores the matrices in 2 bytes a weight" \
  test $(($(size "$TMP/f32.gguf") - $(size "$TMP/f16.gguf"))) -eq $((2 * W))
check "q8_0 stores them in 34 bytes a block of 32" \
  test $(($(size "$TMP/f32.gguf") - $(size "$TMP/q8_0.gguf"))) -eq $((4 * W - 34 * W / 32))

gen() { # MODEL -> greedy text, then each step's log-probability, one a line
  "$B/consort" generate --member m="$1" -p "Once upon a time, in a land" -n 6 --json --logprobs 1 -t 1 \
    2>"$TMP/gen.err" | jq -r '.text, (.chunks[] | .logprob)'
}
max_diff() { # FILE FILE -> the largest difference of the numeric lines
  paste "$1" "$2" | awk 'NR > 1 { d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%.6f", m + 0 }'
}
for m in f32 f16 q8_0 seed2; do gen "$TMP/$m.gguf" >"$TMP/$m.txt"; done
check "the f32 model generates" test "$(wc -l <"$TMP/f32.txt")" -eq 7
for m in f16 q8_0; do
  same "$m: the same greedy text as f32" "$(head -1 "$TMP/$m.txt")" "$(head -1 "$TMP/f32.txt")"
done
d16=$(max_diff "$TMP/f16.txt" "$TMP/f32.txt") d8=$(max_diff "$TMP/q8_0.txt" "$TMP/f32.txt")
ds=$(max_diff "$TMP/seed2.txt" "$TMP/f32.txt")
echo "# largest log-probability difference to f32: f16 $d16, q8_0 $d8, another seed $ds"
check "f16 log-probabilities within 0.01 of f32's" awk -v d="$d16" 'BEGIN { exit !(d < 0.01) }'
check "q8_0 log-probabilities within 0.1 of f32's" awk -v d="$d8" 'BEGIN { exit !(d < 0.1) }'
check "another seed is another model (the comparison can fail)" awk -v d="$ds" 'BEGIN { exit !(d > 0.5) }'

"$MK" "$M1" "$TMP/bad.gguf" 36 1 1 q8_0 2>"$TMP/bad.err"
check "q8_0 with n_embd 36: exit 2" test $? -eq 2
check "q8_0 with n_embd 36: says why" grep -q "multiple of 32" "$TMP/bad.err"
"$MK" "$M1" "$TMP/bad.gguf" 64 1 1 q4_k 2>"$TMP/bad.err"
check "an unknown type: exit 2" test $? -eq 2
check "an unknown type: names the types" grep -q "f32, f16 or q8_0" "$TMP/bad.err"

"$MK" "$M1" "$TMP/l3.gguf" 64 3 1 f32
"$MK" "$M1" "$TMP/l3-live3.gguf" 64 3 1 f32 3 0
"$MK" "$M1" "$TMP/l3-tail1.gguf" 64 3 1 f32 0 1
"$MK" "$M1" "$TMP/l3-tail0.gguf" 64 3 1 f32 1 0
check "live = n_layer writes the same bytes as without" cmp -s "$TMP/l3.gguf" "$TMP/l3-live3.gguf"
check "tail 1 writes the same bytes as without" cmp -s "$TMP/l3.gguf" "$TMP/l3-tail1.gguf"
check "tail 0 changes the file" bash -c '! cmp -s "$1" "$2"' _ "$TMP/l3.gguf" "$TMP/l3-tail0.gguf"
for m in l3 l3-tail0; do gen "$TMP/$m.gguf" >"$TMP/$m.txt"; done
check "the 3-layer model generates" test "$(wc -l <"$TMP/l3.txt")" -eq 7
same "tail 0 beyond layer 1: the 1-layer model's greedy text" "$(head -1 "$TMP/l3-tail0.txt")" "$(head -1 "$TMP/f32.txt")"
dz=$(max_diff "$TMP/l3-tail0.txt" "$TMP/f32.txt") d3=$(max_diff "$TMP/l3.txt" "$TMP/f32.txt")
echo "# largest log-probability difference to the 1-layer model: tail 0 $dz, tail 1 $d3"
check "tail 0: log-probabilities within 1e-4 of the 1-layer model's" awk -v d="$dz" 'BEGIN { exit !(d < 1e-4) }'
check "tail 1: another model (the comparison can fail)" awk -v d="$d3" 'BEGIN { exit !(d > 0.1) }'
"$MK" "$M1" "$TMP/bad.gguf" 64 3 1 f32 4 0 2>"$TMP/bad.err"
check "live > n_layer: exit 2" test $? -eq 2
"$MK" "$M1" "$TMP/bad.gguf" 64 3 1 f32 1 x 2>"$TMP/bad.err"
check "a tail that is not a number: exit 2" test $? -eq 2
check "a bad tail: says why" grep -q "tail must be" "$TMP/bad.err"
tap_done
