#!/usr/bin/env bash
# scripts/llama_tools.sh: print the directory holding llama.cpp's own
# `llama-server` and `rpc-server`, built from the same llama.cpp source that
# consort links against (the git bundle inside node-llama-cpp@3.22.1).
#
# Contract:
#   - stdout gets exactly one line: the bin directory (absolute path);
#     everything else (progress, compiler output) goes to stderr;
#   - the build lives outside the clone, in
#       ${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}/llama-<commit>-<flags hash>/
#     keyed by the llama.cpp commit of the bundle and a hash of the CMake
#     flags, so a flag change builds a new tree and an unchanged one is reused;
#   - it builds only when bin/ lacks one of the two programs; a lock (flock on
#     a file beside the tree) makes a second concurrent run wait for the first;
#   - it exits non-zero with a clear message when cmake, a C++ compiler, git
#     or the bundle is missing (scripts/deps.sh installs cmake and g++).
# The build is CPU only, with the RPC backend, static llama/ggml libraries
# (so the two programs need nothing from the build tree at run time), and no
# web UI download (the build machine may be offline).
set -euo pipefail

NLC_VERSION=3.22.1
here=$(cd "$(dirname "$0")/.." && pwd)
DEPS_DIR=${DEPS_DIR:-$here/.deps}
log() { printf 'llama_tools: %s\n' "$*" >&2; }
die() { printf 'llama_tools: error: %s\n' "$*" >&2; exit 1; }

FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_RPC=ON -DLLAMA_CURL=OFF \
-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF"
TARGETS="llama-server ggml-rpc-server"   # rpc-server's CMake target; installed as bin/rpc-server

need_tools() {
  command -v git >/dev/null || die "git is missing (apt-get install git)"
  command -v cmake >/dev/null || die "cmake is missing (run scripts/deps.sh as root, or apt-get install cmake)"
  command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null \
    || die "no C++ compiler (run scripts/deps.sh as root, or apt-get install g++)"
}

find_bundle() { # prints the bundle's path, fetching the npm package if needed
  local pkg=$DEPS_DIR/npm/node-llama-cpp
  if [ ! -f "$pkg/llama/gitRelease.bundle" ]; then
    command -v npm >/dev/null || die "npm is needed to fetch node-llama-cpp@$NLC_VERSION"
    log "fetching node-llama-cpp@$NLC_VERSION"
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-llama-cpp@$NLC_VERSION" >/dev/null) || die "npm pack failed"
    mkdir -p "$pkg" && tar xzf "$tmp"/*.tgz -C "$pkg" --strip-components=1 && rm -rf "$tmp"
  fi
  [ -f "$pkg/llama/gitRelease.bundle" ] || die "no llama/gitRelease.bundle in node-llama-cpp@$NLC_VERSION"
  printf '%s\n' "$pkg/llama/gitRelease.bundle"
}

build_into() { # bundle root
  local bundle=$1 root=$2
  rm -rf "$root/bin"
  if [ ! -f "$root/src/CMakeLists.txt" ]; then   # an interrupted build keeps its source and objects
    rm -rf "$root/src"
    log "cloning the llama.cpp bundle into $root/src"
    git clone -q "$bundle" "$root/src" >&2
  fi
  log "configuring ($FLAGS)"
  # shellcheck disable=SC2086
  cmake -S "$root/src" -B "$root/build" $FLAGS >&2
  log "building $TARGETS (many minutes on a small machine)"
  # shellcheck disable=SC2086
  cmake --build "$root/build" --target $TARGETS -j "${LLAMA_TOOLS_JOBS:-2}" >&2
  mkdir -p "$root/bin.tmp"
  cp "$root/build/bin/llama-server" "$root/bin.tmp/llama-server"
  cp "$root/build/bin/ggml-rpc-server" "$root/bin.tmp/rpc-server" 2>/dev/null ||
    cp "$root/build/bin/rpc-server" "$root/bin.tmp/rpc-server"
  mv "$root/bin.tmp" "$root/bin"
  rm -rf "$root/build"   # the two programs are static in llama/ggml: keep only them and the source
}

main() {
  local bundle commit hash cache root
  bundle=$(find_bundle)
  commit=$(git ls-remote "$bundle" HEAD 2>/dev/null | cut -c1-12)
  [ -n "$commit" ] || die "cannot read the commit of $bundle"
  hash=$(printf '%s %s' "$FLAGS" "$TARGETS" | sha256sum | cut -c1-10)
  cache=${CONSORT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consort}
  root=$cache/llama-$commit-$hash
  if [ -x "$root/bin/llama-server" ] && [ -x "$root/bin/rpc-server" ]; then
    printf '%s\n' "$root/bin"; return 0
  fi
  need_tools
  mkdir -p "$cache"
  exec 9>"$root.lock"
  if ! flock -n 9; then
    log "another build of $root is running; waiting for it"
    flock 9
  fi
  if [ ! -x "$root/bin/llama-server" ] || [ ! -x "$root/bin/rpc-server" ]; then
    mkdir -p "$root"
    build_into "$bundle" "$root"
  fi
  printf '%s\n' "$root/bin"
}

main "$@"
