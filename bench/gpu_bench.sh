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
#                                   models/a.gguf and models/b.gguf)
#   bench/gpu_bench.sh run OUT      the benchmarks, every table into OUT/
#
# Where things come from:
#   - llama.cpp's source: KIT/llama-src.tar.xz (bench/gpu_kit.sh), else the
#     node-llama-cpp bundle under .deps (scripts/llama_tools.sh fetches it);
#   - consort's programs: $CONSORT_GPU_BUILD (consort, consort-worker,
#     tools/mkmodel, tools/decode_batch_bench), else KIT/runtime.tar.xz
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
#
# `run` writes: gpu.txt (the GPU, driver, load), decode-big.txt and
# decode-tiny.txt (bench/decode_batch_bench: a decode of B rows against B
# decodes of one), conc-big.md / conc-tiny.md (bench/concurrency_bench.sh:
# one-member consort against llama-server at 1, 4, 8, 16 concurrent
# requests), mix-big.md / mix-tiny.md (bench/mixture_concurrency_bench.sh:
# the two-member mixture against each member alone at 1, 8, 16) and
# spec-big.md (bench/speculative_bench.sh). Every server offloads all layers
# (-ngl); consort's workers and llama-server get the same threads and slots.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${GPU_WORK:-/tmp/consort-gpu}
KIT=${KIT:-.gpu}
THREADS=${THREADS:-4} ROUNDS=${ROUNDS:-3}
EMBD=${GPU_EMBD:-4096} LAYER=${GPU_LAYER:-32} TYPE=${GPU_TYPE:-q8_0}
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
  for p in mkmodel decode_batch_bench; do wrap $p "$BIN/tools/$p"; done
  command -v curl >/dev/null || die "curl is missing"
  command -v jq >/dev/null || die "jq is missing"
}

big_model() { echo "$WORK/models/big-$1-${EMBD}x$LAYER-$TYPE.gguf"; }

stage_models() {
  consort_bin
  mkdir -p "$WORK/models"
  local seed=1 pids=() v
  for v in a b; do
    local out; out=$(big_model $v)
    if [ ! -s "$out" ]; then
      "$BIN/tools/mkmodel" "models/$v.gguf" "$out.tmp" "$EMBD" "$LAYER" "$seed" "$TYPE" && mv "$out.tmp" "$out" &
      pids+=($!)
    fi
    seed=$((seed + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || die "mkmodel failed"; done
  ls -l "$WORK/models" >&2
}

stage_run() {
  local out=${1:?run needs an output folder}
  consort_bin
  mkdir -p "$out"
  local A B; A=$(big_model a) B=$(big_model b)
  [ -s "$A" ] && [ -s "$B" ] || die "no big models: run the models stage first"
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    echo "cpus $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg)"; date -u; } >"$out/gpu.txt"
  export WORKER_ARGS="-ngl all" LLAMA_ARGS="-ngl 999" LLAMA_SERVER=$WORK/build/bin/llama-server
  log "decode cost by batch size"
  "$BIN/tools/decode_batch_bench" --model "$A" --threads "$THREADS" --steps 32 --rounds "$ROUNDS" \
    --batches "1 2 4 8 16" >"$out/decode-big.txt" 2>&1 || true
  "$BIN/tools/decode_batch_bench" --model "$REPO/models/a.gguf" --threads "$THREADS" --steps 32 \
    --rounds "$ROUNDS" --batches "1 2 4 8 16" >"$out/decode-tiny.txt" 2>&1 || true
  log "one member against llama-server"
  bench/concurrency_bench.sh -m "$A" -n 64 -c "1 4 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" >"$out/conc-big.md" 2>"$out/conc-big.log" || true
  bench/concurrency_bench.sh -m "$REPO/models/a.gguf" -n 64 -c "1 4 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" \
    >"$out/conc-tiny.md" 2>"$out/conc-tiny.log" || true
  log "the mixture against each member alone"
  bench/mixture_concurrency_bench.sh -a "$A" -b "$B" -n 64 -c "1 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" \
    >"$out/mix-big.md" 2>"$out/mix-big.log" || true
  bench/mixture_concurrency_bench.sh -n 64 -c "1 8 16" -r "$ROUNDS" -t "$THREADS" "$BIN" \
    >"$out/mix-tiny.md" 2>"$out/mix-tiny.log" || true
  log "speculative steps"
  THREADS=$THREADS timeout "${SPEC_TIMEOUT:-900}" bench/speculative_bench.sh -a "$A" -b "$B" -n 128 -r 2 "$BIN" >"$out/spec-big.md" 2>"$out/spec-big.log" || true
  echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/gpu.txt"
}

case ${1:-} in
  build) stage_build ;;
  models) stage_models ;;
  run) shift; stage_run "$@" ;;
  *) echo "usage: $0 build | models | run OUT" >&2; exit 2 ;;
esac
