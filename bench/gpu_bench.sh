#!/usr/bin/env bash
# bench/gpu_bench.sh: issue 11's throughput benchmarks on a machine with an
# NVIDIA GPU, where a decode of many positions costs about as much as a
# decode of one (the machines consort is for; the development machine's CPU
# is not one: bench/RESULTS.md). Three stages, each re-runnable:
#
#   bench/gpu_bench.sh build        llama.cpp with CUDA from the same source
#                                   consort links against: its shared
#                                   libraries and llama-server, in $GPU_WORK
#   bench/gpu_bench.sh models       the decode-bound random-weight models
#                                   (tests/tools/mkmodel, the vocabularies of
#                                   models/a.gguf and models/b.gguf), the
#                                   drafter/target pair and its disagreeing
#                                   drafter (bench/mkmodel_pair.sh) and the
#                                   CPU member of mix_cpu
#   bench/gpu_bench.sh run OUT      the benchmarks, every table into OUT/
#
# Where things come from:
#   - llama.cpp's source: KIT/llama-src.tar.xz (bench/gpu_kit.sh), else the
#     node-llama-cpp bundle under .deps (scripts/llama_tools.sh fetches it);
#   - consort's programs: $CONSORT_GPU_BUILD (consort, consort-worker,
#     tools/mkmodel, tools/decode_batch_bench, tools/decode_ctx_bench,
#     tools/greedy_ref), else KIT/runtime.tar.xz
#     unpacked (bench/gpu_kit.sh: built on another machine against the same
#     llama.cpp headers, with the shared libraries they need), run through
#     small wrapper scripts. Either way the programs load this machine's
#     libllama (CUDA) through LD_LIBRARY_PATH. curl and jq must be installed.
# Settings (environment): GPU_WORK (default /tmp/consort-gpu), KIT (.gpu),
# CUDA_ARCH (CMake's CUDA architectures, default native), CUDA_FA (ON to
# compile llama.cpp's flash-attention kernels; default OFF: they are most of
# the build's time, and the big models' head size, 1024 with mkmodel's 4
# heads, has no such kernel, so consort and llama-server both run attention
# without them, as -fa auto decides), GPU_EMBD x
# GPU_LAYER GPU_TYPE (the big models, default 4096 x 32 q8_0: about 5.5G
# parameters, 6 GB, a few milliseconds per decode on a data-centre GPU),
# THREADS (CPU threads of every server, default 4), ROUNDS (default 3).
# The pair (bench/mkmodel_pair.sh): a GPU_EMBD x GPU_LAYER target whose
# first PAIR_LIVE (default 2) layers are a GPU_EMBD x PAIR_LIVE drafter's,
# the rest scaled by PAIR_TAIL (default 0.5; on the development machine
# 98% of the greedy bytes agree at 1024 x 16, 94% at 1024 x 32, 100% at
# 4096 x 4), and an amplified drafter of another seed that disagrees (2% at
# 1024 x 16, 14% at 1024 x 32, 1% at 4096 x 4 with its default
# amplification, 16 at that width). With AGREE=1, `models` also measures their
# agreement with tests/tools/greedy_ref on the CPU (AGREE_THREADS, default
# all CPUs; several minutes at 4096 x 32, so off by default: the spec_pair
# table's accepted-of-drafted column measures the same on its own text)
# into $GPU_WORK/models/pair-...-agreement-*.txt, which `run` copies to OUT.
# The CPU member of mix_cpu: big-b-CPU_B_EMBDxCPU_B_LAYER-q8_0 (default
# 1024 x 16, about 200M parameters, 252 MB: the development machine's big-b,
# 7-8 ms a decode on one of its threads, a few ms on CPU_B_THREADS, default
# 8, threads of the GPU host), on the CPU (-ngl 0; llama.cpp moves no
# operation of a decode of fewer than 32 positions to the GPU, and at 8
# concurrent requests the decodes are mostly smaller).
# MODELS (default "a b cpu_b pair") chooses which models `models` makes;
# the ctx, profile and conc sections need only a.
# CONC_LIST (default "1 4 8 16": conc's concurrencies; CONC_TINY=0 skips
# conc-tiny). SECTIONS (default "decode conc mix spec spec_pair mix_cpu";
# also "ctx" and "profile") chooses
# what `run` measures. The first four took about 6 minutes on an H200, the
# last two take about 2-3 (estimated, not yet run): run them on their own,
# SECTIONS="spec_pair mix_cpu", to stay within one 10-minute call.
#
# `run` writes: gpu.txt (the GPU, driver, load), and per section: ctx:
# ctx.md (bench/decode_ctx_bench: a decode under the worker's and
# llama-server's context settings, one changed at a time), profile:
# profile-big.md / profile-tiny.md (bench/step_profile.sh: one request's time
# taken apart, consort against llama-server, as is and with CUDA graphs
# off, or the '|'-separated PROFILE_VARIANTS), decode: decode-big.txt and
# decode-tiny.txt (bench/decode_batch_bench: a decode of B rows against B
# decodes of one), conc: conc-big.md / conc-tiny.md (bench/concurrency_bench.sh:
# one-member consort against llama-server at 1, 4, 8, 16 concurrent
# requests), mix: mix-big.md / mix-tiny.md (bench/mixture_concurrency_bench.sh:
# the two-member mixture against each member alone at 1, 8, 16), spec:
# spec-big.md (bench/speculative_bench.sh, members drafting on their own),
# spec_pair: spec-pair.md (bench/speculative_bench.sh -P: the pair's target
# alone, the pair mixture plain and with `--draft-member d`, on the agreeing
# and the disagreeing drafter, greedy, 128 steps) and pair-agreement.txt,
# mix_cpu: mix-cpu.md (bench/mixture_concurrency_bench.sh at 1 and 8
# concurrent, member a big-a on the GPU, member b the CPU member above on
# the CPU: two devices of their own, the closest one GPU comes to members on
# separate machines). Every server offloads all layers (-ngl) except mix_cpu's
# member b; consort's workers and llama-server get the same threads and slots.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${GPU_WORK:-/tmp/consort-gpu}
KIT=${KIT:-.gpu}
THREADS=${THREADS:-4} ROUNDS=${ROUNDS:-3} CONC_LIST=${CONC_LIST:-1 4 8 16}
EMBD=${GPU_EMBD:-4096} LAYER=${GPU_LAYER:-32} TYPE=${GPU_TYPE:-q8_0}
PAIR_LIVE=${PAIR_LIVE:-2} PAIR_TAIL=${PAIR_TAIL:-0.5}
CPU_B_EMBD=${CPU_B_EMBD:-1024} CPU_B_LAYER=${CPU_B_LAYER:-16} CPU_B_THREADS=${CPU_B_THREADS:-8}
SECTIONS=${SECTIONS:-decode conc mix spec spec_pair mix_cpu}
MODELS=${MODELS:-a b cpu_b pair}
export PATH=$PATH:/usr/local/cuda/bin
log() { printf 'gpu_bench: %s\n' "$*" >&2; }
die() { printf 'gpu_bench: error: %s\n' "$*" >&2; exit 1; }

llama_source() { # unpacks llama.cpp's source into $WORK/src
  [ -f "$WORK/src/CMakeLists.txt" ] && return 0
  mkdir -p "$WORK/src"
  if [ -f "$KIT/llama-src.tar.xz" ]; then
    tar xJf "$KIT/llama-src.tar.xz" -C "$WORK/src"
  else
    local bundle=${DEPS_DIR:-.deps}/npm/node-llama-cpp/llama/gitRelease.bundle
    [ -f "$bundle" ] || die "no $KIT/llama-src.tar.xz and no bundle at $bundle"
    rm -rf "$WORK/src" && git clone -q "$bundle" "$WORK/src"
  fi
}

stage_build() {
  command -v nvcc >/dev/null || die "nvcc is missing (CUDA toolkit)"
  command -v cmake >/dev/null || die "cmake is missing"
  llama_source
  local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  log "configuring llama.cpp with CUDA (architectures ${CUDA_ARCH:-native})"
  cmake -S "$WORK/src" -B "$WORK/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-native}" -DGGML_CUDA_FA="${CUDA_FA:-OFF}" \
    -DGGML_CUDA_NCCL=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF >"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log" >&2; die "cmake failed"; }
  log "building llama and llama-server"
  cmake --build "$WORK/build" --target llama llama-server -j "$(nproc)" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; die "build failed"; }
  rm -rf "$WORK/lib" && mkdir -p "$WORK/lib"
  cp -P "$WORK"/build/bin/*.so* "$WORK/lib/"
  # consort was linked against node-llama-cpp's file names for the same libraries
  ln -sf libllama.so "$WORK/lib/libllama.v0.5.0.so"
  ln -sf libggml.so "$WORK/lib/libggml.v0.5.0.so"
  log "built: $(ls "$WORK/lib" | tr '\n' ' ')"
}

consort_bin() { # sets BIN: a folder with consort, consort-worker and tools/
  if [ -n "${CONSORT_GPU_BUILD:-}" ]; then
    BIN=$CONSORT_GPU_BUILD
    [ -d "$WORK/lib" ] || die "no $WORK/lib: run the build stage first"
    export LD_LIBRARY_PATH=$WORK/lib
    return 0
  fi
  [ -f "$KIT/runtime.tar.xz" ] || die "set CONSORT_GPU_BUILD or bring $KIT/runtime.tar.xz (bench/gpu_kit.sh)"
  [ -d "$WORK/lib" ] || die "no $WORK/lib: run the build stage first"
  mkdir -p "$WORK/kit" && tar xJf "$KIT/runtime.tar.xz" -C "$WORK/kit"
  # Wrappers, not an exported LD_LIBRARY_PATH: the kit's libraries (Debian's
  # libcurl, libjq) must not reach this machine's own curl and jq, which the
  # benchmarks call (a newer curl against an older libcurl fails to load, and
  # every health check then times out).
  BIN=$WORK/kit/consort
  mkdir -p "$BIN/tools"
  wrap() { # program -> a script that runs the kit's program with the libraries
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib:%s/kit/lib exec %s/kit/bin/%s "$@"\n' \
      "$WORK" "$WORK" "$WORK" "$1" >"$2" && chmod +x "$2"
  }
  for p in consort consort-worker; do wrap $p "$BIN/$p"; done
  for p in mkmodel decode_batch_bench decode_ctx_bench greedy_ref; do wrap $p "$BIN/tools/$p"; done
  command -v curl >/dev/null || die "curl is missing"
  command -v jq >/dev/null || die "jq is missing"
}

big_model() { echo "$WORK/models/big-$1-${EMBD}x$LAYER-$TYPE.gguf"; }
cpu_b_model() { echo "$WORK/models/big-b-${CPU_B_EMBD}x$CPU_B_LAYER-q8_0.gguf"; }
pair_models() { # [AGREE=...] -> the drafter, the target, the other drafter, one a line (made when missing)
  PAIR_DIR=$WORK/models MKMODEL=$BIN/tools/mkmodel GREEDY_REF=$BIN/tools/greedy_ref \
    AGREE_THREADS=${AGREE_THREADS:-$(nproc)} bench/mkmodel_pair.sh "$EMBD" "$LAYER" "$PAIR_LIVE" "$PAIR_TAIL" "$TYPE"
}
in_sections() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
in_models() { case " $MODELS " in *" $1 "*) return 0 ;; esac; return 1; }

stage_models() {
  consort_bin
  mkdir -p "$WORK/models"
  local seed=1 pids=() v
  for v in a b; do
    in_models "$v" || { seed=$((seed + 1)); continue; }
    local out; out=$(big_model $v)
    if [ ! -s "$out" ]; then
      "$BIN/tools/mkmodel" "models/$v.gguf" "$out.tmp" "$EMBD" "$LAYER" "$seed" "$TYPE" && mv "$out.tmp" "$out" &
      pids+=($!)
    fi
    seed=$((seed + 1))
  done
  local cb; cb=$(cpu_b_model)
  if in_models cpu_b && [ ! -s "$cb" ]; then
    "$BIN/tools/mkmodel" models/b.gguf "$cb.tmp" "$CPU_B_EMBD" "$CPU_B_LAYER" 2 q8_0 && mv "$cb.tmp" "$cb" &
    pids+=($!)
  fi
  if in_models pair; then
    AGREE=0 pair_models >/dev/null & # with the others (mkmodel holds a model's f32 draws: 22 GB at 4096 x 32)
    pids+=($!)
  fi
  for p in "${pids[@]}"; do wait "$p" || die "mkmodel failed"; done
  [ "${AGREE:-0}" = 1 ] && { log "greedy agreement of the pair (CPU)"; pair_models >/dev/null; }
  ls -l "$WORK/models" >&2
}

stage_run() {
  local out=${1:?run needs an output folder}
  consort_bin
  mkdir -p "$out"
  local A B; A=$(big_model a) B=$(big_model b)
  [ -s "$A" ] || die "no big model a: run the models stage first"
  log "sections: $SECTIONS"
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    echo "cpus $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg)"; date -u; } >"$out/gpu.txt"
  export WORKER_ARGS="-ngl all" LLAMA_ARGS="-ngl 999" LLAMA_SERVER=$WORK/build/bin/llama-server
  if in_sections decode; then
    log "decode cost by batch size"
    "$BIN/tools/decode_batch_bench" --model "$A" --threads "$THREADS" --steps 32 --rounds "$ROUNDS" \
      --batches "1 2 4 8 16" >"$out/decode-big.txt" 2>&1 || true
    "$BIN/tools/decode_batch_bench" --model "$REPO/models/a.gguf" --threads "$THREADS" --steps 32 \
      --rounds "$ROUNDS" --batches "1 2 4 8 16" >"$out/decode-tiny.txt" 2>&1 || true
  fi
  if in_sections ctx; then
    log "one decode under the worker's and llama-server's context settings"
    "$BIN/tools/decode_ctx_bench" --model "$A" --threads "$THREADS" --steps 64 --rounds "$ROUNDS" \
      >"$out/ctx.md" 2>"$out/ctx.log" || true
  fi
  if in_sections profile; then
    log "one request taken apart"
    local kind model
    for kind in big tiny; do
      model=$A; [ $kind = tiny ] && model=$REPO/models/a.gguf
      VARIANTS=${PROFILE_VARIANTS:-"|GGML_CUDA_DISABLE_GRAPHS=1"} bench/step_profile.sh -m "$model" -n 64 \
        -r "$ROUNDS" -t "$THREADS" "$BIN" >"$out/profile-$kind.md" 2>"$out/profile-$kind.log" || true
    done
  fi
  if in_sections conc; then
    log "one member against llama-server"
    bench/concurrency_bench.sh -m "$A" -n 64 -c "$CONC_LIST" -r "$ROUNDS" -t "$THREADS" "$BIN" >"$out/conc-big.md" 2>"$out/conc-big.log" || true
    if [ "${CONC_TINY:-1}" = 1 ]; then
      bench/concurrency_bench.sh -m "$REPO/models/a.gguf" -n 64 -c "$CONC_LIST" -r "$ROUNDS" -t "$THREADS" "$BIN" \
        >"$out/conc-tiny.md" 2>"$out/conc-tiny.log" || true
    fi
  fi
  if in_sections mix || in_sections spec || in_sections mix_cpu; then
    [ -s "$B" ] || die "no big model b: run the models stage with it"
  fi
  if in_sections mix; then
    log "the mixture against each member alone"
    bench/mixture_concurrency_bench.sh -a "$A" -b "$B" -n 64 -c "1 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" \
      >"$out/mix-big.md" 2>"$out/mix-big.log" || true
    bench/mixture_concurrency_bench.sh -n 64 -c "1 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" \
      >"$out/mix-tiny.md" 2>"$out/mix-tiny.log" || true
  fi
  if in_sections spec; then
    log "speculative steps"
    THREADS=$THREADS timeout "${SPEC_TIMEOUT:-900}" bench/speculative_bench.sh -a "$A" -b "$B" -n 128 -r 2 "$BIN" >"$out/spec-big.md" 2>"$out/spec-big.log" || true
  fi
  if in_sections spec_pair; then
    log "speculative steps with a drafting member (the pair)"
    local pair; mapfile -t pair < <(AGREE=0 pair_models || true)
    if [ ${#pair[@]} = 3 ]; then
      cat "${pair[1]%.gguf}"-agreement-*.txt >"$out/pair-agreement.txt" 2>/dev/null || true
      THREADS=$THREADS timeout "${SPEC_PAIR_TIMEOUT:-300}" bench/speculative_bench.sh -P -d "${pair[0]}" -t "${pair[1]}" \
        -o "${pair[2]}" -n 128 -r 2 "$BIN" >"$out/spec-pair.md" 2>"$out/spec-pair.log" || true
    else
      log "no pair models: spec_pair skipped"
    fi
  fi
  if in_sections mix_cpu; then
    log "the mixture with member b on the CPU"
    local cb; cb=$(cpu_b_model)
    if [ -s "$cb" ]; then
      WORKER_ARGS_A="-ngl all" WORKER_ARGS_B="-ngl 0 -t $CPU_B_THREADS" \
        bench/mixture_concurrency_bench.sh -a "$A" -b "$cb" -n 64 -c "1 8" -r "$ROUNDS" -t "$THREADS" "$BIN" \
        >"$out/mix-cpu.md" 2>"$out/mix-cpu.log" || true
    else
      log "no $cb (the models stage makes it): mix_cpu skipped"
    fi
  fi
  echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/gpu.txt"
}

case ${1:-} in
  build) stage_build ;;
  models) stage_models ;;
  run) shift; stage_run "$@" ;;
  *) echo "usage: $0 build | models | run OUT" >&2; exit 2 ;;
esac
