#!/usr/bin/env bash
# tests/integration/speculative.t: speculative ensemble steps (docs/STRATEGIES.md,
# "Speculative steps") with real consort-workers on the project's two models
# (models/a.gguf: SentencePiece, models/b.gguf: GPT-2 byte-level BPE).
#
# What must hold: greedy text with --speculative is the text without it, for
# solo, the cross-tokenizer mixture, weights (1,0) across tokenizers and the
# same model twice; the invariants still hold with it on (a one-member
# ensemble is that member's greedy text, (1,0) is member 0, a model twice is
# that model); steps were really decided from drafts (acceptance
# statistics); strategies where it is not exact are refused (CLI and API);
# sampling is allowed (its exactness: tests/integration/speculative_sampling.t).
set -u
cd "${CONSORT_ROOT:-$(dirname "$0")/../..}"
. tests/integration/lib_serve.sh # B, M1 (SentencePiece), M2 (GPT-2 BPE), TMP, start_worker, cleanup
need_stack
C=$B/consort
REF=$B/tools/greedy_ref
MA=$M1 MB=$M2 tmp=$TMP
[ -x "$REF" ] || skip_all "no $REF"
command -v python3 >/dev/null || skip_all "python3 needed for the JSON checks"
export CONSORT_LOG=${CONSORT_LOG:-warn}
n=0; failed=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }

start_worker a "$MA" && UA=$WORKER_URL
start_worker a2 "$MA" && UA2=$WORKER_URL
start_worker b "$MB" && UB=$WORKER_URL
[ -n "${UA:-}" ] && [ -n "${UA2:-}" ] && [ -n "${UB:-}" ] || skip_all "workers did not start"

N=64
P1="Once upon a time"
P2="She opened the door and"
text() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["text"])' "$1"; }
num() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], -1))' "$1" "$2"; }
gen() { "$C" generate --json --max-tokens $N "$@" 2>>"$tmp/gen.err"; }

# ---- the same text with and without speculative steps -----------------------------
check_same() { # description args...
  local d=$1; shift
  gen "$@" >"$tmp/plain.json"; gen "$@" --speculative >"$tmp/spec.json"
  [ -s "$tmp/plain.json" ] && [ "$(text "$tmp/plain.json")" = "$(text "$tmp/spec.json")" ]
  ok $? "$d: the same text with --speculative"
  rounds_add_up "$tmp/plain.json" "$tmp/spec.json"
}
# rounds_add_up PLAIN SPEC: for the same text, each step decided from drafts
# saves exactly the round trip it had without (a drafted state abandoned
# for a real round is not counted as accepted)
rounds_add_up() {
  local rp rs acc; rp=$(num "$1" rounds); rs=$(num "$2" rounds); acc=$(num "$2" speculative_accepted)
  [ "$rp" -ge 0 ] && [ "$rp" -eq $((rs + acc)) ]
  ok $? "... round trips: $rp without = $rs with + $acc steps accepted from drafts"
}
for P in "$P1" "$P2"; do
  check_same "solo:a, '$P'" --member a="$UA" --strategy solo:a --prompt "$P"
  [ "$(num "$tmp/spec.json" speculative_accepted)" -gt $((N / 2)) ]
  ok $? "... most steps decided from drafts (accepted $(num "$tmp/spec.json" speculative_accepted) of $N, $(num "$tmp/spec.json" rounds) rounds)"
  check_same "solo:b, '$P'" --member b="$UB" --strategy solo:b --prompt "$P"
  check_same "mixture a+b (two tokenizers), '$P'" --member a="$UA" --member b="$UB" --prompt "$P"
  [ "$(num "$tmp/spec.json" speculative_drafted)" -gt 0 ]; ok $? "... drafts were asked"
  [ "$(num "$tmp/spec.json" speculative_drafted)" -lt $N ]
  ok $? "... and backed off where walks accept little ($(num "$tmp/spec.json" speculative_drafted) drafted steps asked in $N steps; every call would ask at least 2)"
  check_same "weights 1,0 across tokenizers, '$P'" --member a="$UA" --member b="$UB" --weights 1,0 --prompt "$P"
  check_same "the same model twice, '$P'" --member a="$UA" --member a2="$UA2" --prompt "$P"
done

# ---- the invariants with speculative steps on -------------------------------------
"$REF" "$MA" "$P1" $N 1 >"$tmp/refA"
gen --member a="$UA" --prompt "$P1" --speculative >"$tmp/s1.json"
[ "$(text "$tmp/s1.json")" = "$(cat "$tmp/refA")" ]; ok $? "a one-member ensemble with --speculative is the member's own greedy text"
gen --member a="$UA" --member b="$UB" --weights 1,0 --prompt "$P1" --speculative >"$tmp/s10.json"
[ "$(text "$tmp/s10.json")" = "$(cat "$tmp/refA")" ]; ok $? "weights (1,0) across tokenizers with --speculative = member 0"
gen --member a="$UA" --member a2="$UA2" --prompt "$P1" --speculative >"$tmp/saa.json"
[ "$(text "$tmp/saa.json")" = "$(cat "$tmp/refA")" ]; ok $? "the same model twice with --speculative = that model"
[ "$(num "$tmp/saa.json" speculative_accepted)" -gt $((N / 2)) ]; ok $? "... mostly from drafts"

# ---- a drafting member (--draft-member): the others verify its draft -------------
check_same_drafter() { # description drafter args...
  local d=$1 dm=$2; shift 2
  gen "$@" >"$tmp/plain.json"; gen "$@" --draft-member "$dm" >"$tmp/spec.json"
  [ -s "$tmp/plain.json" ] && [ "$(text "$tmp/plain.json")" = "$(text "$tmp/spec.json")" ]
  ok $? "$d: the same text with --draft-member $dm"
}
for P in "$P1" "$P2"; do
  check_same_drafter "mixture a+b, '$P'" a --member a="$UA" --member b="$UB" --prompt "$P"
  check_same_drafter "mixture a+b, '$P'" b --member a="$UA" --member b="$UB" --prompt "$P"
  check_same_drafter "the same model twice, '$P'" a --member a="$UA" --member a2="$UA2" --prompt "$P"
  [ "$(num "$tmp/spec.json" speculative_accepted)" -gt $((N / 2)) ]
  ok $? "... most steps decided from the drafter's draft (accepted $(num "$tmp/spec.json" speculative_accepted) of $N, $(num "$tmp/spec.json" rounds) round trips)"
done
# a drafter at weight 0 drafts only: it never decides, the text is the
# deciding members' own
member() { # FILE NAME FIELD: a member's statistic in generate --json
  python3 -c 'import json,sys; print(next(m for m in json.load(open(sys.argv[1]))["members"] if m["name"] == sys.argv[2])[sys.argv[3]])' "$@"; }
gen --member a="$UA" --member b="$UB" --weights 1,0 --prompt "$P1" --draft-member b >"$tmp/d10.json"
[ "$(text "$tmp/d10.json")" = "$(cat "$tmp/refA")" ]; ok $? "weights (1,0), b drafting at weight 0 (drafting only, across tokenizers) = member 0"
[ "$(member "$tmp/d10.json" b decoded)" -gt 0 ] && [ "$(member "$tmp/d10.json" b steps_won)" = 0 ]
ok $? "... b was called and drafted ($(member "$tmp/d10.json" b decoded) positions), and won no step"
gen --member a="$UA" --member a2="$UA2" --strategy solo:a --prompt "$P1" --draft-member a2 >"$tmp/dsolo.json"
[ "$(text "$tmp/dsolo.json")" = "$(cat "$tmp/refA")" ]; ok $? "solo:a with a2 drafting only (a model and its drafter) = a's greedy text"
acc=$(num "$tmp/dsolo.json" speculative_accepted) rt=$(num "$tmp/dsolo.json" rounds)
[ "$acc" -gt $((N / 2)) ] && [ "$rt" -lt $((N / 2)) ] && [ "$(member "$tmp/dsolo.json" a2 decoded)" -gt 0 ]
ok $? "... most steps from a2's drafts (a2 decoded $(member "$tmp/dsolo.json" a2 decoded) positions), verified by a in fewer round trips (accepted $acc of $N, $rt round trips)"
# a drafter that mostly disagrees: called beside b at every step, it is asked
# to draft only after a step that committed its own proposal (as a deciding
# drafter is); the back-off alone used to let 20 of 64 steps be drafted, 2
# of them accepted (10 now)
"$REF" "$MB" "$P1" $N 1 >"$tmp/refB"
gen --member b="$UB" --member a="$UA" --strategy solo:b --prompt "$P1" --draft-member a >"$tmp/dba.json"
dr=$(num "$tmp/dba.json" speculative_drafted) acc=$(num "$tmp/dba.json" speculative_accepted)
[ "$(text "$tmp/dba.json")" = "$(cat "$tmp/refB")" ] && [ "$dr" -le $((N / 4)) ]
ok $? "solo:b with a disagreeing a drafting only: b's text, drafts asked only after agreement ($dr of $N steps drafted, $acc accepted)"
gen --member a="$UA" --member z=http://127.0.0.1:1 --tolerate-down --strategy solo:a --prompt "$P1" --draft-member z >"$tmp/dz.json"
[ "$(text "$tmp/dz.json")" = "$(cat "$tmp/refA")" ]; ok $? "solo:a with a drafter that is down: a's own text (it drafts its own)"
if start_worker small "$MA" --ctx-size 24; then # a drafter whose context fills up before the text ends
  gen --member a="$UA" --member s="$WORKER_URL" --strategy solo:a --prompt "$P1" --draft-member s >"$tmp/ds.json"
  [ "$(text "$tmp/ds.json")" = "$(cat "$tmp/refA")" ] && grep -q "drafting member 's' left out" "$tmp/gen.err"
  ok $? "solo:a with a drafter whose calls start failing midway: left out, a's own text to the end"
else
  ok 1 "a worker with --ctx-size 24 starts"
fi
gen --member a="$UA" --member a2="$UA2" --prompt "$P1" --draft-member a2 >"$tmp/daa.json"
[ "$(text "$tmp/daa.json")" = "$(cat "$tmp/refA")" ]; ok $? "the same model twice, a2 drafting = that model"
gen --member a="$UA" --prompt "$P1" --draft-member a >"$tmp/d1.json"
[ "$(text "$tmp/d1.json")" = "$(cat "$tmp/refA")" ]; ok $? "one member drafting for itself = its greedy text"
"$C" generate --member a="$UA" --prompt "$P1" --max-tokens 4 --draft-member z >/dev/null 2>"$tmp/z.err"
[ $? -ne 0 ] && grep -q "draft-member z" "$tmp/z.err"; ok $? "--draft-member naming no member: a clear error"

# ---- refused where it is not exact ------------------------------------------------
gen --member a="$UA" --prompt "$P1" --speculative --temperature 0.8 --seed 5 >"$tmp/t.json"
[ "$(num "$tmp/t.json" speculative_drafted)" -gt 0 ]; ok $? "--speculative with sampling: allowed, drafts asked"
"$C" generate --member a="$UA" --member b="$UB" --strategy product --prompt "$P1" --max-tokens 4 --speculative >/dev/null 2>"$tmp/p.err"
[ $? -ne 0 ] && grep -q "mixture and solo" "$tmp/p.err"; ok $? "--speculative with product: a clear error"

# ---- the API: ensemble.speculative, its statistics, /metrics, 400 -----------------
"$C" serve --member a="$UA" --member b="$UB" --port 0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
PIDS+=($!)
S=
for _ in $(seq 100); do S=$(grep -o 'http://[0-9.:]*/v1' "$tmp/serve.out" | head -1); [ -n "$S" ] && break; sleep 0.1; done
if [ -n "$S" ]; then
  post() { curl -s -m 60 -o "$tmp/resp.json" -w '%{http_code}' -H 'Content-Type: application/json' -d "$1" "$S/completions"; }
  answer_is() { # a Python condition on the answer d, its ensemble.speculative s and the reference text ref
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); ref = open(sys.argv[2]).read()
s = d["ensemble"]["speculative"]
sys.exit(0 if eval(sys.argv[3]) else 1)' "$tmp/resp.json" "$tmp/refA" "$1"
  }
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":$N,\"temperature\":0,\"ensemble\":{\"strategy\":\"solo:a\",\"speculative\":true}}")
  [ "$code" = 200 ] && answer_is 'd["choices"][0]["text"] == ref and s["accepted"] > 0 and s["drafted"] >= s["accepted"]'
  ok $? "ensemble.speculative: the member's text, acceptance statistics in the ensemble object"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":4,\"temperature\":0.9,\"ensemble\":{\"speculative\":true}}")
  [ "$code" = 200 ]; ok $? "ensemble.speculative with sampling: allowed"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":4,\"temperature\":0.9,\"ensemble\":{\"strategy\":\"pool\",\"speculative\":true}}")
  [ "$code" = 400 ] && grep -q speculative_unsupported "$tmp/resp.json"; ok $? "ensemble.speculative with pool: 400 speculative_unsupported"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":$N,\"temperature\":0,\"ensemble\":{\"members\":[\"a\"],\"speculative\":true,\"draft_member\":\"a\"}}")
  [ "$code" = 200 ] && answer_is 'd["choices"][0]["text"] == ref and s["accepted"] > 0'
  ok $? "ensemble.draft_member: the member's text, steps accepted"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":$N,\"temperature\":0,\"ensemble\":{\"strategy\":\"solo:a\",\"speculative\":true,\"draft_member\":\"b\"}}")
  [ "$code" = 200 ] && answer_is 'd["choices"][0]["text"] == ref and s["drafted"] > 0'
  ok $? "ensemble solo:a with draft_member b (weight 0: drafting only): a's text, drafts asked"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":4,\"ensemble\":{\"speculative\":true,\"draft_member\":\"zz\"}}")
  [ "$code" = 400 ] && grep -q "zz" "$tmp/resp.json"; ok $? "ensemble.draft_member naming no member: 400"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":4,\"ensemble\":{\"draft_member\":3}}")
  [ "$code" = 400 ]; ok $? "ensemble.draft_member not a string: 400"
  code=$(post "{\"model\":\"ensemble\",\"prompt\":\"$P1\",\"max_tokens\":4,\"ensemble\":{\"speculative\":\"yes\"}}")
  [ "$code" = 400 ]; ok $? "ensemble.speculative not a boolean: 400"
  curl -s -m 10 "$S/../metrics" 2>/dev/null | grep -q '^consort_speculative_accepted_total [1-9]' ||
    curl -s -m 10 "${S%/v1}/metrics" | grep -q '^consort_speculative_accepted_total [1-9]'
  ok $? "/metrics counts the steps decided from drafts"
else
  ok 1 "consort serve did not start: $(tail -2 "$tmp/serve.err")"
fi
echo "1..$n"
[ $failed = 0 ]
