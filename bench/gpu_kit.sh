#!/usr/bin/env bash
# bench/gpu_kit.sh: pack what bench/gpu_bench.sh needs on a CUDA machine that
# has a compiler, CMake and the CUDA toolkit but none of consort's Debian
# dependencies and no network (the lent GPU machine of the development
# workplace). Run it here, on the development machine, after `make`:
#
#   bench/gpu_kit.sh [KIT=.gpu]
#
# KIT/ (ignored by git; what travels is KIT/llama-src.tar.xz and
# KIT/runtime.tar.xz, the folders are their unpacked sources) then holds:
#   llama-src.tar.xz  the llama.cpp source consort links against (the git
#                     bundle of node-llama-cpp@3.22.1, scripts/llama_tools.sh),
#                     without its tests, examples, models and docs: the GPU
#                     machine builds llama.cpp with CUDA from it;
#   bin/              consort, consort-worker and the three tools the benchmarks
#                     use (mkmodel, decode_batch_bench, decode_ctx_bench,
#                     greedy_ref: the pair's agreement,
#                     bench/mkmodel_pair.sh; stripped), built in
#                     KIT/build against this
#                     machine's llama.cpp headers with no run path, so that
#                     the GPU machine's libllama (same commit, with CUDA) is
#                     found through LD_LIBRARY_PATH;
#   lib/              the shared libraries those programs and curl/jq need
#                     beyond the C and C++ runtimes (jansson, libmicrohttpd,
#                     libcurl and its own, libsentencepiece, jq's);
#                     and curl and jq (the benchmarks' HTTP client and JSON
#                     reader);
#   runtime.tar.xz    bin/ and lib/ packed (about 10 MB; llama-src.tar.xz 7 MB). A machine that has the Debian packages and llama.cpp
# installed needs no kit: build consort there and point CONSORT_GPU_BUILD at
# the build folder (bench/gpu_bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${1:-.gpu}
bundle=${DEPS_DIR:-.deps}/npm/node-llama-cpp/llama/gitRelease.bundle
[ -f "$bundle" ] || { echo "gpu_kit: no llama.cpp bundle at $bundle (run make first)" >&2; exit 1; }
rm -rf "$KIT/lib" "$KIT/bin"; mkdir -p "$KIT/lib" "$KIT/bin"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git clone -q --bare "$bundle" "$tmp/src.git"
git -C "$tmp/src.git" archive HEAD -- CMakeLists.txt cmake common ggml include src tools vendor scripts/ui-assets.cmake \
  licenses LICENSE app | xz -T2 -6 >"$KIT/llama-src.tar.xz"
git -C "$tmp/src.git" rev-parse --short=12 HEAD >"$KIT/llama-commit"

make -s -j2 BUILD="$KIT/build" LLAMA_RPATH= LLAMA_BACKEND_DIR= \
  "$KIT/build/consort" "$KIT/build/consort-worker" "$KIT/build/tools/mkmodel" "$KIT/build/tools/decode_batch_bench" \
  "$KIT/build/tools/greedy_ref" "$KIT/build/tools/decode_ctx_bench"

progs=("$KIT/build/consort" "$KIT/build/consort-worker" "$KIT/build/tools/mkmodel"
       "$KIT/build/tools/decode_batch_bench" "$KIT/build/tools/greedy_ref" "$KIT/build/tools/decode_ctx_bench"
       "$(command -v curl)" "$(command -v jq)")
cp "${progs[@]}" "$KIT/bin/"
strip "$KIT"/bin/*
# Every library the programs load, except the C/C++ runtimes (the GPU
# machine's own are newer and must serve its libllama too) and llama.cpp's.
ldd "${progs[@]}" | awk '/=> \// { print $3 }' | sort -u |
  grep -Ev '/(libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$KIT/lib/"; done
tar cJf "$KIT/runtime.tar.xz" -C "$KIT" bin lib
ls -l "$KIT/llama-src.tar.xz" "$KIT/runtime.tar.xz"
