#!/usr/bin/env bash
# A worker ready to deploy:
#   - `make install PREFIX=<temp>` installs consort and consort-worker whose
#     run path points into the prefix (not into the clone), with the llama.cpp
#     libraries copied into PREFIX/lib/consort; from another directory both
#     programs answer --version and a tiny generation runs (the installed
#     consort spawns the installed worker next to it);
#   - the worker's deployment flags (named like llama.cpp's): bad values are
#     usage errors naming the flag; --n-gpu-layers 0 --flash-attn on
#     --cache-type-k q8_0 --cache-type-v q8_0 --no-mmap --mlock load and
#     generate, and with the defaults named explicitly the greedy text is
#     the default one.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
[ -f build/config.mk ] || skip_all "no build/config.mk (run make first)"
n=0 failed=0
check() {
  local what=$1; shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}

P=$TMP/prefix
# the install build is the normal one (BUILD=build), whatever stage runs us
make -s install PREFIX="$P" >"$TMP/install.log" 2>&1
check "make install PREFIX=... succeeds" test $? -eq 0
check "both programs installed" test -x "$P/bin/consort" -a -x "$P/bin/consort-worker"
check "the run path is the prefix's" bash -c \
  "readelf -d '$P/bin/consort-worker' | grep -q 'path: \[$P/lib/consort' || ! grep -q llama-lib build/config.mk"
check "no reference to the clone in the installed programs" bash -c \
  "! grep -q '$ROOT' '$P/bin/consort' && ! grep -q '$ROOT' '$P/bin/consort-worker'"
mkdir -p "$TMP/elsewhere"
cp "$M1" "$TMP/elsewhere/m.gguf"
(cd "$TMP/elsewhere" && "$P/bin/consort" --version) >"$TMP/v1" 2>&1
check "installed consort --version (from another directory)" grep -q '^consort ' "$TMP/v1"
(cd "$TMP/elsewhere" && "$P/bin/consort-worker" --version) >"$TMP/v2" 2>&1
check "installed consort-worker --version" grep -q '^consort-worker ' "$TMP/v2"
(cd "$TMP/elsewhere" && env -u CONSORT_WORKER "$P/bin/consort" generate --member m=m.gguf --threads 1 \
  -p "Once upon a time" -n 8) >"$TMP/gen" 2>"$TMP/gen.err"
check "installed consort generates with the installed worker" test -s "$TMP/gen"
[ -s "$TMP/gen" ] || sed 's/^/# /' "$TMP/gen.err" | tail -5

# deployment flags
W=$B/consort-worker
for bad in "--cache-type-k q9:--cache-type-k" "--cache-type-v x:--cache-type-v" "--flash-attn maybe:--flash-attn" \
           "-ngl lots:--n-gpu-layers" "-fa:-fa"; do
  args=${bad%%:*} flag=${bad#*:}
  # shellcheck disable=SC2086
  "$W" --model "$M1" $args >/dev/null 2>"$TMP/err"; rc=$?
  check "worker $args: usage error naming $flag" bash -c "[ $rc -eq 2 ] && grep -q -- '$flag' '$TMP/err'"
done
gen() { # ARGS...: a greedy text of a one-member ensemble of a worker started with ARGS
  : >"$TMP/w.out" # (truncated before the background start: the file is reused by every call)
  "$W" --model "$M1" --port 0 --threads 1 "$@" >"$TMP/w.out" 2>"$TMP/w.err" &
  local pid=$!
  PIDS+=("$pid")
  local url
  url=$(wait_line "$TMP/w.out" 'http://[0-9.:]*' "$pid") || { kill "$pid"; return 1; }
  "$B/consort" generate --member w="$url" -p "The old man said that" -n 16
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
}
base=$(gen)
check "worker with default flags: a text" test -n "$base"
q8=$(gen --n-gpu-layers 0 --flash-attn on --cache-type-k q8_0 --cache-type-v q8_0 --no-mmap --mlock)
check "worker with -ngl 0 -fa on q8_0 caches --no-mmap --mlock: a text" test -n "$q8"
f16=$(gen -ngl all -fa auto -ctk f16 -ctv f16)
check "worker with the defaults named explicitly (-ngl all -fa auto f16 caches): the default text" test "$f16" = "$base"
[ "$f16" = "$base" ] || printf '#   got:  %q\n#   want: %q\n' "$f16" "$base"

echo "1..$n"
[ $failed -eq 0 ]
