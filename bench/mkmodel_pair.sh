#!/usr/bin/env bash
# bench/mkmodel_pair.sh: write a drafter/target pair of random-weight models
# that agree on most greedy tokens, and a second drafter that does not, for
# the speculative-steps benchmark with `--draft-member` (issue 11:
# bench/speculative_bench.sh -d -t -o, bench/gpu_bench.sh).
#
#   bench/mkmodel_pair.sh [N_EMBD=1024] [N_LAYER=16] [LIVE=2] [TAIL=0.5] [TYPE=q8_0]
#
# Writes into $PAIR_DIR (default $CONSORT_BUILD/models, CONSORT_BUILD
# default build), with the vocabulary of models/$VOCAB.gguf (VOCAB=a, the
# SentencePiece one, default; VOCAB=b, GPT-2 BPE) and seed SEED (default 1):
#   pair-V-draft-EMBDxLIVE-TYPE-sSEED.gguf     the drafter: LIVE layers;
#   pair-V-target-EMBDxLAYER-live..-tail..-TYPE-sSEED.gguf
#                                              the target: N_LAYER layers, its
#                                              first LIVE exactly the drafter's,
#                                              the rest's residual writers
#                                              scaled by TAIL (tests/tools/mkmodel's
#                                              live and tail arguments);
#   pair-V-other-EMBDxLIVE-TYPE-s(SEED+1)-tailOTHER_TAIL.gguf
#                                              the disagreeing drafter: the
#                                              drafter's size, another seed,
#                                              every layer's residual writers
#                                              scaled by OTHER_TAIL (default 4,
#                                              4 x N_EMBD / 1024 above 1024).
# Prints the three paths, one a line, in that order. A file already there is
# kept.
#
# Why the other drafter is amplified: mkmodel's random models mostly repeat
# the last token (the tied embedding dominates the residual stream), so two
# of them, whatever their seeds, agree on most steps of a text that one of
# them wrote. With its layers amplified a model falls into tokens of its
# own instead, and disagrees with the target on almost every step. The
# amplification must grow with the width (the last token's own logit, its
# embedding's squared norm, grows faster than what random layers add):
# measured here, 4 is enough at N_EMBD 1024 (2% agreement) but not at 4096
# (78% against a 4096 x 4 target), where 16 is (1%).
#
# Agreement (unless AGREE=0): from each of 4 prompts, tests/tools/greedy_ref
# (GREEDY_REF, default $CONSORT_BUILD/tools/greedy_ref, AGREE_THREADS
# threads, default 1) writes 64 greedy tokens of the target and of each
# drafter: "first divergence" is the common byte prefix in % of the
# target's bytes; then the target's text is walked in 8 windows of 8 tokens,
# both models restarted from the prompt and the target's text so far at
# each window: "per window" is the share of the target's window bytes that
# the drafter's greedy window reproduces before it diverges (what a draft of
# 8 steps verified by the target would keep, up to re-tokenization of the
# context). Printed to stderr and kept in pair-V-...-agreement.txt next to
# the target.
#
# Sizes. Here (2 shared CPU cores): a 1024 x 16 q8_0 target (about 200M
# parameters, 7-8 ms a decode on one thread, like big-a of
# bench/mkmodel_big.sh) and a 1024 x 2 drafter (about 1 ms). On a GPU
# (bench/gpu_bench.sh): `bench/mkmodel_pair.sh 4096 32 2 0.5 q8_0`, a
# 4096 x 32 target (5.5G parameters, about 4 ms a decode on an H200) and a
# 4096 x 2 drafter. Measured here at 1024 x 16, LIVE 2: TAIL 0.1 and 0.3
# agree on 100% of the window bytes, 0.5 on 98% (the default: most but not
# all), 1 (the plain 16-layer model) on 88%; the other drafter on 2%. With
# TAIL 0.5: 94% at 1024 x 32 (other drafter 14%), 100% at 4096 x 4 (other
# drafter, tail 16, 1%); 4096 x 32 was not measured here (too big for this
# machine): the agreement grows with the width and falls with the layers.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
EMBD=${1:-1024} LAYER=${2:-16} LIVE=${3:-2} TAIL=${4:-0.5} TYPE=${5:-q8_0}
V=${VOCAB:-a} SEED=${SEED:-1} OTAIL=${OTHER_TAIL:-$((EMBD > 1024 ? 4 * EMBD / 1024 : 4))}
DIR=${PAIR_DIR:-$B/models}
MK=${MKMODEL:-$B/tools/mkmodel} REF=${GREEDY_REF:-$B/tools/greedy_ref}
[ -f "models/$V.gguf" ] || { echo "mkmodel_pair: no models/$V.gguf (VOCAB is a or b)" >&2; exit 2; }
[ "$LIVE" -ge 1 ] && [ "$LIVE" -lt "$LAYER" ] || { echo "mkmodel_pair: need 1 <= LIVE < N_LAYER" >&2; exit 2; }
mkdir -p "$DIR"
draft=$DIR/pair-$V-draft-${EMBD}x$LIVE-$TYPE-s$SEED.gguf
target=$DIR/pair-$V-target-${EMBD}x$LAYER-live$LIVE-tail$TAIL-$TYPE-s$SEED.gguf
other=$DIR/pair-$V-other-${EMBD}x$LIVE-$TYPE-s$((SEED + 1))-tail$OTAIL.gguf
make_one() { # out args... (mkmodel's arguments after VOCAB OUT)
  local out=$1; shift
  [ -s "$out" ] && return 0
  [ -x "$MK" ] || { echo "mkmodel_pair: no $MK (make tests, or set MKMODEL)" >&2; return 1; }
  "$MK" "models/$V.gguf" "$out.tmp" "$@" && mv "$out.tmp" "$out"
}
make_one "$draft" "$EMBD" "$LIVE" "$SEED" "$TYPE" &
p1=$!
make_one "$other" "$EMBD" "$LIVE" $((SEED + 1)) "$TYPE" 0 "$OTAIL" &
p2=$!
make_one "$target" "$EMBD" "$LAYER" "$SEED" "$TYPE" "$LIVE" "$TAIL"
wait $p1 && wait $p2
printf '%s\n' "$draft" "$target" "$other"

[ "${AGREE:-1}" = 0 ] && exit 0
if [ ! -x "$REF" ]; then echo "mkmodel_pair: no $REF: agreement not measured" >&2; exit 0; fi
agree=${target%.gguf}-agreement-s$((SEED + 1))-tail$OTAIL.txt
if [ ! -s "$agree" ]; then
  python3 - "$REF" "${AGREE_THREADS:-1}" "$target" "$draft" "$other" >"$agree.tmp" <<'EOF'
import os, subprocess, sys
ref, threads, target = sys.argv[1:4]
prompts = ["Once upon a time", "The committee said that", "In the beginning of the year", "She opened the door and"]
def greedy(model, prompt, n):
    return subprocess.run([ref, model, prompt.decode("utf-8", "replace"), str(n), threads],
                          capture_output=True, check=True).stdout
def common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
full = {p: greedy(target, p.encode(), 64) for p in prompts}
for name, drafter in zip(("agreeing", "disagreeing"), sys.argv[4:6]):
    first, kept, total = [], 0, 0
    for p in prompts:
        t = full[p]
        first.append(100 * common(t, greedy(drafter, p.encode(), 64)) // max(1, len(t)))
        ctx = p.encode()
        for _ in range(8):
            tw = greedy(target, ctx, 8)
            if not tw:
                break
            kept += common(tw, greedy(drafter, ctx, 8))
            total += len(tw)
            ctx += tw
    print("%s drafter %s: per window %.0f%% of the target's bytes; first divergence at %s%% of 64 tokens (4 prompts)"
          % (name, os.path.basename(drafter), 100.0 * kept / max(1, total), ", ".join(map(str, first))))
EOF
  mv "$agree.tmp" "$agree"
fi
sed "s|^|# |" "$agree" >&2
