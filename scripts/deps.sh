#!/usr/bin/env bash
# scripts/deps.sh: make sure everything consort builds against is present,
# then write the make variables that describe it to build/config.mk.
#
# Order of preference for llama.cpp (the README states the same):
#   1. pkg-config `llama` (Homebrew on macOS, a user's own install);
#   2. LLAMA_PREFIX=/path (a user's own build: include/ and lib/ under it);
#   3. the pinned npm packages node-llama-cpp@3.22.1 (headers, gguf-py, vocab
#      test files, from its git bundle) and @node-llama-cpp/linux-x64@3.22.1
#      (prebuilt libllama/libggml), unpacked into $DEPS_DIR (default .deps).
# The source bundle is fetched in every case: the tests need its vocab-only
# GGUF files and the model trainer needs its gguf-py.
#
# Debian packages are installed with apt-get when missing and we are root
# (clang is for the libFuzzer harnesses of `make fuzz`, part of `make test`;
# cmake and g++ build llama.cpp's own llama-server and rpc-server for the
# tests of llama-server members: scripts/llama_tools.sh);
# otherwise we say exactly which ones to install and stop.
set -euo pipefail

NLC_VERSION=3.22.1
here=$(cd "$(dirname "$0")/.." && pwd)
DEPS_DIR=${DEPS_DIR:-$here/.deps}
OUT=${1:-$here/build/config.mk}
log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

# ---- Debian packages ------------------------------------------------------
debian_pkgs="clang cmake curl g++ iproute2 jq libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev libsentencepiece-dev openssl pkg-config valgrind"
if command -v dpkg-query >/dev/null 2>&1; then
  missing=""
  for p in $debian_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing Debian packages:$missing"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
    else
      die "missing packages:$missing (run: sudo apt-get install$missing)"
    fi
  fi
elif [ "$(uname)" = Darwin ]; then
  for p in jansson libmicrohttpd; do
    pkg-config --exists "$p" || die "missing $p (run: brew install jansson libmicrohttpd curl pkg-config llama.cpp)"
  done
fi
for p in jansson libmicrohttpd libcurl sentencepiece; do
  pkg-config --exists "$p" || die "pkg-config cannot find $p"
done

# ---- npm packages (pinned), unpacked into $DEPS_DIR -------------------------
npm_fetch() { # name@version dest
  local spec=$1 dest=$2
  [ -f "$dest/package.json" ] && return 0
  command -v npm >/dev/null || die "npm is needed to fetch $spec (apt-get install npm, or set LLAMA_PREFIX)"
  log "fetching $spec"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/err") || { cat "$tmp/err" >&2; die "npm pack $spec failed"; }
  mkdir -p "$dest"
  tar xzf "$tmp"/*.tgz -C "$dest" --strip-components=1
  rm -rf "$tmp"
}

src=$DEPS_DIR/llama.cpp
if [ ! -f "$src/include/llama.h" ]; then
  npm_fetch "node-llama-cpp@$NLC_VERSION" "$DEPS_DIR/npm/node-llama-cpp"
  bundle=$DEPS_DIR/npm/node-llama-cpp/llama/gitRelease.bundle
  [ -f "$bundle" ] || die "no git bundle in node-llama-cpp@$NLC_VERSION"
  log "unpacking the llama.cpp source bundle (headers, gguf-py, vocab files)"
  rm -rf "$src.tmp"
  git clone -q --no-checkout "$bundle" "$src.tmp" 2>/dev/null
  git -C "$src.tmp" -c advice.detachedHead=false checkout -q HEAD -- include ggml/include gguf-py LICENSE \
    $(git -C "$src.tmp" ls-tree --name-only HEAD models/ | grep -E '^models/ggml-vocab-.*\.gguf$')
  rm -rf "$src.tmp/.git"
  mv "$src.tmp" "$src"
fi

LLAMA_CFLAGS="" LLAMA_LIBS="" LLAMA_BACKEND_DIR="" LLAMA_RPATH=""
if [ -n "${LLAMA_PREFIX:-}" ]; then
  [ -f "$LLAMA_PREFIX/include/llama.h" ] || die "LLAMA_PREFIX=$LLAMA_PREFIX has no include/llama.h"
  LLAMA_CFLAGS="-I$LLAMA_PREFIX/include"
  LLAMA_LIBS="-L$LLAMA_PREFIX/lib -lllama -lggml -lggml-base"
  LLAMA_RPATH="$LLAMA_PREFIX/lib"
  log "llama.cpp from LLAMA_PREFIX=$LLAMA_PREFIX"
elif pkg-config --exists llama 2>/dev/null; then
  LLAMA_CFLAGS=$(pkg-config --cflags llama)
  LLAMA_LIBS=$(pkg-config --libs llama)
  log "llama.cpp from pkg-config ($(pkg-config --modversion llama))"
else
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "no llama.cpp found: install it (brew install llama.cpp) or set LLAMA_PREFIX" ;;
  esac
  npm_fetch "@node-llama-cpp/linux-x64@$NLC_VERSION" "$DEPS_DIR/npm/linux-x64"
  lib=$DEPS_DIR/llama-lib
  if [ ! -f "$lib/libllama.so" ]; then
    mkdir -p "$lib"
    cp "$DEPS_DIR"/npm/linux-x64/bins/linux-x64/*.so "$lib/"
    ln -sf libllama.v0.5.0.so "$lib/libllama.so"
    ln -sf libggml.v0.5.0.so "$lib/libggml.so"
  fi
  LLAMA_CFLAGS="-I$src/include -I$src/ggml/include"
  LLAMA_LIBS="-L$lib -lllama -lggml -lggml-base"
  LLAMA_RPATH=$lib
  LLAMA_BACKEND_DIR=$lib   # CPU variants are dlopen'ed from here at run time
  log "llama.cpp from npm @node-llama-cpp/linux-x64@$NLC_VERSION"
fi

mkdir -p "$(dirname "$OUT")"
cat >"$OUT" <<MK
# written by scripts/deps.sh; delete it to redetect
LLAMA_CFLAGS := $LLAMA_CFLAGS
LLAMA_LIBS := $LLAMA_LIBS
LLAMA_RPATH := $LLAMA_RPATH
LLAMA_BACKEND_DIR := $LLAMA_BACKEND_DIR
LLAMA_SRC := $src
DEP_CFLAGS := $(pkg-config --cflags jansson libmicrohttpd libcurl sentencepiece)
DEP_LIBS := $(pkg-config --libs jansson libmicrohttpd libcurl) -lsentencepiece
MK
log "wrote $OUT"
