#!/usr/bin/env bash
# The tree's rules, checked on the tree and shown to bite: the layer rule for
# #include lines (scripts/check_layers.sh) and "the member protocol's field
# names live in protocol/" (scripts/check_protocol_names.sh). Each check runs
# on the real tree (must pass) and on a scratch copy with one planted
# violation (must fail and name it).
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_tap.sh
n=0 failed=0
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

check "the tree keeps its layers" scripts/check_layers.sh
check "protocol field names only in protocol/" scripts/check_protocol_names.sh

# A scratch repository: the scripts and the folders they read, as committed.
mkdir -p "$TMP/r"
git archive HEAD scripts common protocol vocab_align sampler worker coordinator | tar -x -C "$TMP/r"
(cd "$TMP/r" && git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm base)
check "scratch copy is clean" bash -c "cd '$TMP/r' && scripts/check_layers.sh && scripts/check_protocol_names.sh"

# 1. the engine includes the API (a layer above it)
echo '#include "coordinator/api/api.h"' >>"$TMP/r/coordinator/engine/members.c"
out=$(cd "$TMP/r" && scripts/check_layers.sh 2>&1); rc=$?
check "an upward #include fails the layer check" test $rc -ne 0
check "... and names the file and the header" bash -c "grep -q 'coordinator/engine/members.c includes \"coordinator/api/api.h\"' <<<'$out'"
(cd "$TMP/r" && git checkout -q -- coordinator/engine/members.c)

# 2. hand-built protocol JSON in the engine
field=candidates_b64 # (spelled apart here so that this file itself passes the check)
echo "static const char *k = \"$field\";" >>"$TMP/r/coordinator/engine/members.c"
(cd "$TMP/r" && git add -A)
out=$(cd "$TMP/r" && scripts/check_protocol_names.sh 2>&1); rc=$?
check "a protocol field name outside protocol/ fails the check" test $rc -ne 0
check "... and names where" bash -c "grep -q 'coordinator/engine/members.c:.*candidates_b64' <<<'$out'"

echo "1..$n"
[ "$failed" -eq 0 ]
