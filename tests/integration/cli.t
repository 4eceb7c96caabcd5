#!/usr/bin/env bash
# The command lines of consort-worker and of every consort command (one
# parser, common/opt): --help and --version exit 0; unknown options,
# missing values, abbreviations and bad numbers exit 2 with a message that
# names the option, before any member is contacted; "--opt=value" and
# "--opt value" both work (servers really start on --port=0); the old
# worker spellings --ctx and --slots still work; and generate uses a
# --seed of 2^64-1 exactly (it reports the seed it used).
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
n=0 failed=0
W=$B/consort-worker C=$B/consort
# usage_error "what" PATTERN ARGS...: exit status 2 and PATTERN on stderr
usage_error() {
  local what=$1 pat=$2; shift 2
  "$@" >"$TMP/u.out" 2>"$TMP/u.err"
  local rc=$?
  check "$what: exit 2" test $rc -eq 2
  check "$what: says so" grep -q -- "$pat" "$TMP/u.err"
  [ $rc -eq 2 ] && grep -q -- "$pat" "$TMP/u.err" || sed 's/^/#   /' "$TMP/u.err"
}
NOBODY=a=http://127.0.0.1:1 # a member nobody answers for: contacting it would be exit 1

# ---- --help and --version everywhere ----------------------------------------
for prog in "$W" "$C" "$C generate" "$C serve" "$C run" "$C ppl" "$C ab"; do
  $prog --help >"$TMP/h" 2>&1; rc=$?
  check "$prog --help exits 0" test $rc -eq 0
  check "$prog --help lists --version" grep -q -- '--version' "$TMP/h"
  v=$($prog --version 2>&1); rc=$?
  check "$prog --version exits 0 and prints the version" bash -c "[ $rc -eq 0 ] && [[ '$v' =~ ^consort(-worker)?\ [0-9]+\.[0-9]+\.[0-9]+$ ]]"
done
check "worker --help: llama.cpp's names" bash -c "'$W' --help | grep -q -- '-c, --ctx-size N' && '$W' --help | grep -q -- '-np, --parallel N'"

# ---- bad command lines: exit 2, a message naming the option -------------------
usage_error "ab --max-tokens abc" "--max-tokens 'abc': expected an integer" \
  "$C" ab --member "$NOBODY" --prompts p.jsonl --strategies mixture --max-tokens abc
usage_error "ab --max-tokens=abc" "--max-tokens 'abc': expected an integer" \
  "$C" ab --member "$NOBODY" --prompts p.jsonl --strategies mixture --max-tokens=abc
usage_error "ab --temperature -1" "--temperature '-1'" \
  "$C" ab --member "$NOBODY" --prompts p.jsonl --strategies mixture --temperature -1
usage_error "ab --seed 2^64" "--seed '18446744073709551616'" \
  "$C" ab --member "$NOBODY" --prompts p.jsonl --strategies mixture --seed 18446744073709551616
usage_error "ppl --resamples=x" "--resamples 'x'" "$C" ppl --member "$NOBODY" --file f --resamples=x
usage_error "ppl --seed -1" "--seed '-1'" "$C" ppl --member "$NOBODY" --file f --seed -1
usage_error "generate --seed 1.5" "--seed '1.5'" "$C" generate --member "$NOBODY" --prompt x --seed 1.5
usage_error "generate --top-k 2.5" "--top-k '2.5'" "$C" generate --member "$NOBODY" --prompt x --top-k 2.5
usage_error "generate --max-tokens=" "--max-tokens ''" "$C" generate --member "$NOBODY" --prompt x --max-tokens=
usage_error "generate --threads 0" "--threads '0'" "$C" generate --member "$NOBODY" --prompt x --threads 0
usage_error "generate --step-timeout soon" "--step-timeout 'soon'" \
  "$C" generate --member "$NOBODY" --prompt x --step-timeout soon
usage_error "serve --port=70000" "--port '70000'" "$C" serve --member "$NOBODY" --port=70000
usage_error "run --port abc" "--port 'abc'" "$C" run "$M1" --port abc
usage_error "worker --port=x" "--port 'x'" "$W" --model "$M1" --port=x
usage_error "worker -np 65" "--parallel '65'" "$W" --model "$M1" -np 65
for cmd in generate serve run ppl ab; do
  usage_error "$cmd: unknown option" "unknown option '--frobnicate'" "$C" $cmd --member "$NOBODY" --frobnicate
  usage_error "$cmd: missing value" "missing value for option '--member'" "$C" $cmd --member
  usage_error "$cmd: abbreviation" "--strategy\b" "$C" $cmd --member "$NOBODY" --strat mixture
done
usage_error "worker: unknown option" "unknown option '--frobnicate'" "$W" --frobnicate
usage_error "worker: a flag given a value" "takes no value" "$W" --model "$M1" --help=1
usage_error "generate: a stray argument" "unexpected argument 'stray'" "$C" generate --member "$NOBODY" --prompt x stray
usage_error "consort: unknown command" "unknown command" "$C" frobnicate

# ---- --opt=value really works: servers start on --port=0 --------------------
"$W" --model="$M1" --port=0 --threads=1 --ctx=128 --slots=2 --name=eq >"$TMP/w.out" 2>"$TMP/w.err" &
WP=$!; PIDS+=("$WP")
WURL=$(wait_line "$TMP/w.out" 'http://[0-9.:]*' "$WP")
check "worker --port=0 (and the old --ctx=, --slots=): listening" test -n "$WURL"
info=$(curl -s "$WURL/v1/info")
check "worker: --ctx=128 and --slots=2 took effect" bash -c "grep -q '\"slots\":2' <<<'$info' && grep -q '\"n_ctx\":128' <<<'$info'"
"$W" -m "$M1" --port 0 -t 1 -c 64 -np 3 >"$TMP/w2.out" 2>"$TMP/w2.err" &
W2=$!; PIDS+=("$W2")
W2URL=$(wait_line "$TMP/w2.out" 'http://[0-9.:]*' "$W2")
info=$(curl -s "$W2URL/v1/info")
check "worker -m -t -c -np: listening with 3 slots and 64 tokens" \
  bash -c "grep -q '\"slots\":3' <<<'$info' && grep -q '\"n_ctx\":64' <<<'$info'"
if start_consort serve serve --member=w="$WURL" --port=0 --host=127.0.0.1 -np 1; then
  check "serve --port=0 --member=...: listening" true
  check "serve: /v1/models answers" bash -c "curl -s '$SERVER_URL/models' | grep -q '\"w\"'"
  stop_consort
else
  check "serve --port=0 --member=...: listening" false
fi
if start_consort run run --port=0 --threads=1 "$M1"; then
  check "run --port=0 with a model file: listening" true
  stop_consort
else
  check "run --port=0 with a model file: listening" false
fi

# ---- generate: the exact seed, the = form, short names --------------------------
gen() { "$C" generate --member=w="$WURL" --prompt="The jury" --max-tokens=6 --temperature=1 --json "$@"; }
gen --seed=18446744073709551615 >"$TMP/g1.json" 2>"$TMP/g1.err"
check "generate --seed=2^64-1: runs" test $? -eq 0
check "generate --seed=2^64-1: the seed used is exactly 18446744073709551615" \
  grep -q '"seed": "18446744073709551615"' "$TMP/g1.json"
"$C" generate --member w="$WURL" -p "The jury" -n 6 --temp 1 -s 18446744073709551614 --json >"$TMP/g2.json" 2>&1
check "generate -p -n --temp -s: the seed used is exactly 18446744073709551614" \
  grep -q '"seed": "18446744073709551614"' "$TMP/g2.json"
gen --seed 18446744073709551615 >"$TMP/g3.json" 2>&1
t1=$(grep '"text"' "$TMP/g1.json" | head -1) t3=$(grep '"text"' "$TMP/g3.json" | head -1)
check "generate: --seed=S and --seed S give the same text" test -n "$t1" -a "$t1" = "$t3"

# ---- ppl and ab with the = form ------------------------------------------------------
printf '{"text": "The jury said that the city had been well run."}\n' >"$TMP/docs.jsonl"
"$C" ppl --member=w="$WURL" --file="$TMP/docs.jsonl" --resamples=20 --seed=18446744073709551615 \
  --no-progress --json="$TMP/p.json" >"$TMP/p.out" 2>"$TMP/p.err"
check "ppl with --opt=value: runs" test $? -eq 0
check "ppl: --seed=2^64-1 (exactly) and --resamples=20 took effect" \
  bash -c "grep -q '\"seed\": \"18446744073709551615\"' '$TMP/p.json' && grep -q '\"resamples\": 20' '$TMP/p.json'"
printf 'The jury\n' >"$TMP/prompts.txt"
"$C" ab --member=w="$WURL" --prompts="$TMP/prompts.txt" --strategies=solo:w --max-tokens=3 --resamples=20 \
  --out="$TMP/ab" >"$TMP/ab.out" 2>"$TMP/ab.err"
check "ab with --opt=value: runs and writes the report" test $? -eq 0 -a -f "$TMP/ab/report.json"
check "ab: --max-tokens=3 took effect" grep -q '"max_tokens": 3' "$TMP/ab/report.json"

echo "1..$n"
[ $failed -eq 0 ]
