#!/usr/bin/env bash
# tests/integration/speculative_sampling.t: speculative ensemble steps when
# sampling (docs/STRATEGIES.md, "Speculative steps"), with real
# consort-workers on the project's two models (models/a.gguf: SentencePiece,
# models/b.gguf: GPT-2 byte-level BPE) behind one `consort serve`, so that
# each sample is one HTTP request (keep-alive), not a process start.
#
# What must hold:
#  1. exact per seed: for 8 seeds at temperature 1 (and with top_p 0.9), solo,
#     the cross-tokenizer mixture and the same model twice give the same text
#     with speculative steps as without, and steps were decided from drafts;
#     the invariants hold when sampling with them on (the same model twice,
#     and weights (1,0) across tokenizers, are that model with the same seed);
#     the same with a drafting member (draft_member: the others verify its
#     draft);
#  2. the same distribution: over many seeds on a short horizon, the outcomes
#     with speculative steps (seeds 1..N) and without (seeds N+1..2N,
#     independent draws) pass a two-sample chi-square test of homogeneity at
#     alpha = 1e-3; the same test rejects when one arm is drawn at another
#     temperature (it has power: a broken acceptance rule would fail it).
# The outcomes are a function of the seeds, so the figures do not vary from
# run to run (beyond the KV cache's rounding); they are printed as comments.
# The cross-tokenizer mixture decides no sampled step from drafts (each
# member proposes several candidates, and a drafted answer never holds the
# masses of the other member's: every drafted decision is abandoned for a
# real round), so for it the per-seed check covers that path (nothing drawn
# by an abandoned decision); the distribution test runs where drafted
# decisions happen: one member, and the mixture of a model with itself.
. "$(dirname "$0")/lib_serve.sh"
need_stack
command -v python3 >/dev/null || skip_all "python3 needed for the samples and the chi-square"
export CONSORT_LOG=${CONSORT_LOG:-warn}

start_worker a "$M1" && UA=$WORKER_URL || skip_all "worker a did not start"
start_worker a2 "$M1" && UA2=$WORKER_URL || skip_all "worker a2 did not start"
start_worker b "$M2" && UB=$WORKER_URL || skip_all "worker b did not start"
start_consort serve serve --member a="$UA" --member a2="$UA2" --member b="$UB" --port 0 || skip_all "consort serve did not start"
S=$SERVER_URL

# sample FIRST COUNT BODY > FILE: one /v1/completions request per seed
# FIRST..FIRST+COUNT-1 (BODY with "seed" set); one JSON line each: seed,
# text, and the steps decided from drafts (accepted) of those drafted.
cat >"$TMP/sample.py" <<'EOF'
import http.client, json, sys, urllib.parse
url, first, count, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
for seed in range(first, first + count):
    body["seed"] = seed
    conn.request("POST", u.path + "/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    d = json.loads(r.read())
    if r.status != 200:
        sys.exit("seed %d: HTTP %d %s" % (seed, r.status, d))
    s = d.get("ensemble", {}).get("speculative", {})
    print(json.dumps({"seed": seed, "text": d["choices"][0]["text"],
                      "accepted": s.get("accepted", 0), "drafted": s.get("drafted", 0)}))
EOF
sample() { python3 "$TMP/sample.py" "$S" "$@"; }

# body TEMPERATURE SPECULATIVE MAX_TOKENS PROMPT ENSEMBLE_FIELDS [EXTRA_FIELDS]
body() {
  printf '{"prompt": "%s", "max_tokens": %s, "temperature": %s%s, "ensemble": {%s, "speculative": %s}}' \
    "$4" "$3" "$1" "${6:+, $6}" "$5" "$2"
}

# same_texts A B: every seed's text equal (the first difference as a comment)
same_texts() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
bad = [(x["seed"], x["text"], y["text"]) for x, y in zip(a, b) if x["text"] != y["text"]]
if bad or len(a) != len(b) or not a:
    print("#   %d of %d differ; seed %s: %r vs %r" % ((len(bad), len(a)) + (bad[0] if bad else (None, "", ""))))
sys.exit(1 if bad or len(a) != len(b) or not a else 0)
EOF
}
accepted() { python3 -c 'import json,sys; print(sum(json.loads(l)["accepted"] for l in open(sys.argv[1])))' "$1"; }

# ---- 1. the same text per seed --------------------------------------------------
SEEDS=8 N_TOK=12
P1="Once upon a time"
SOLO_A='"strategy": "solo:a", "members": ["a"]'
SOLO_B='"strategy": "solo:b", "members": ["b"]'
MIX_AB='"strategy": "mixture", "members": ["a", "b"]'
TWICE='"strategy": "mixture", "members": ["a", "a2"]'
W10='"strategy": "mixture", "members": ["a", "b"], "weights": [1, 0]'
acc_total=0
exact() { # name ensemble_fields [extra]
  sample 1 $SEEDS "$(body 1 false $N_TOK "$P1" "$2" "${3:-}")" >"$TMP/plain.jsonl"
  sample 1 $SEEDS "$(body 1 true $N_TOK "$P1" "$2" "${3:-}")" >"$TMP/spec.jsonl"
  check "$1: the same text per seed with speculative steps ($SEEDS seeds, temperature 1)" \
    same_texts "$TMP/plain.jsonl" "$TMP/spec.jsonl"
  acc=$(accepted "$TMP/spec.jsonl"); acc_total=$((acc_total + acc))
  echo "#   $1: $acc of $((SEEDS * N_TOK)) steps decided from drafts"
}
exact "solo:a" "$SOLO_A"; cp "$TMP/plain.jsonl" "$TMP/solo_a.jsonl"
exact "solo:b" "$SOLO_B"
exact "mixture a+b (two tokenizers)" "$MIX_AB"
exact "the same model twice" "$TWICE"
check "... a model twice with speculative steps = that model alone, per seed" same_texts "$TMP/spec.jsonl" "$TMP/solo_a.jsonl"
exact "weights (1,0) across tokenizers" "$W10"
check "... (1,0) with speculative steps = member 0 alone, per seed" same_texts "$TMP/spec.jsonl" "$TMP/solo_a.jsonl"
exact "solo:a, top_p 0.9" "$SOLO_A" '"top_p": 0.9'
exact "mixture a+b, top_p 0.9, top_k 20" "$MIX_AB" '"top_p": 0.9, "top_k": 20'
exact "the same model twice, a2 drafting" "$TWICE, \"draft_member\": \"a2\""
check "... a2 drafting = that model alone, per seed" same_texts "$TMP/spec.jsonl" "$TMP/solo_a.jsonl"
exact "mixture a+b, b drafting" "$MIX_AB, \"draft_member\": \"b\""
exact "solo:a, a2 drafting only (weight 0)" '"strategy": "solo:a", "members": ["a", "a2"], "draft_member": "a2"'
check "... a2 drafting only = a alone, per seed" same_texts "$TMP/spec.jsonl" "$TMP/solo_a.jsonl"
check "... steps were decided from a2's drafts ($acc)" test "$acc" -gt 0
check "steps were decided from drafts ($acc_total over the runs)" test "$acc_total" -gt 0

# The acceptance statistics of `consort generate --json`: for the same text,
# every step decided from drafts saves exactly the round trip it had without
# (a drafted state abandoned for a real round is not counted as accepted).
num() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], -1))' "$1" "$2"; }
rounds_add_up() { # name member args...
  local name=$1; shift
  "$B/consort" generate --json --max-tokens 32 --temperature 1 --seed 3 --prompt "$P1" "$@" >"$TMP/gp.json"
  "$B/consort" generate --json --max-tokens 32 --temperature 1 --seed 3 --prompt "$P1" "$@" --speculative >"$TMP/gs.json"
  local rp rs acc; rp=$(num "$TMP/gp.json" rounds); rs=$(num "$TMP/gs.json" rounds); acc=$(num "$TMP/gs.json" speculative_accepted)
  same "generate --json, $name, seed 3: the same text" "$(num "$TMP/gs.json" text)" "$(num "$TMP/gp.json" text)"
  check "... round trips: $rp without = $rs with + $acc steps accepted from drafts" \
    test "$rp" -gt 0 -a "$rp" -eq $((rs + acc))
}
rounds_add_up "solo:a" --member a="$UA" --strategy solo:a
rounds_add_up "mixture a+b" --member a="$UA" --member b="$UB"

# ---- 2. the same distribution: a two-sample chi-square -----------------------------
# chi2 A B: Pearson's chi-square of homogeneity between the outcome texts of
# two samples; categories with a pooled count below 10 (an expected count
# under 5 per arm) pooled into one; the p-value from the chi-square survival
# function Q(df/2, x/2) (regularised upper incomplete gamma: its series, or
# Lentz's continued fraction). Prints "chi2 df p".
cat >"$TMP/chi2.py" <<'EOF'
import json, math, sys
from collections import Counter
a, b = (Counter(json.loads(l)["text"] for l in open(f)) for f in sys.argv[1:3])
na, nb = sum(a.values()), sum(b.values())
cells, other = [], [0, 0]
for t in sorted(set(a) | set(b)):
    if a[t] + b[t] >= 10:
        cells.append((a[t], b[t]))
    else:
        other[0] += a[t]; other[1] += b[t]
if sum(other):
    cells.append(tuple(other))
x = sum((c - (ca + cb) * n / (na + nb)) ** 2 / ((ca + cb) * n / (na + nb))
        for ca, cb in cells for c, n in ((ca, na), (cb, nb)))
df = len(cells) - 1
def upper_gamma_q(s, z):
    if z <= 0:
        return 1.0
    front = math.exp(-z + s * math.log(z) - math.lgamma(s))
    if z < s + 1:  # P(s, z) by its series; Q = 1 - P
        term = total = 1.0 / s
        k = s
        while term > total * 1e-16:
            k += 1; term *= z / k; total += term
        return max(0.0, 1.0 - front * total)
    tiny = 1e-300  # Q(s, z) by its continued fraction (modified Lentz)
    bk = z + 1 - s; c = 1 / tiny; d = 1 / bk; h = d
    for i in range(1, 1000):
        an = -i * (i - s); bk += 2
        d = an * d + bk; d = tiny if abs(d) < tiny else d
        c = bk + an / c; c = tiny if abs(c) < tiny else c
        d = 1 / d; h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return front * h
print("%.2f %d %.3g" % (x, df, upper_gamma_q(df / 2, x / 2) if df > 0 else 1.0))
EOF
chi2() { python3 "$TMP/chi2.py" "$1" "$2"; }

# The p-value function itself, against known quantiles of the chi-square
# distribution (0.001 critical values for df 1, 7, 15, 30; the median of df 2).
python3 - "$TMP/chi2.py" <<'EOF' >"$TMP/q.out"
import sys
src = open(sys.argv[1]).read()
fn = src[src.index("def upper_gamma_q"):src.index("print(")]
exec("import math\n" + fn)
for df, x, want in ((1, 10.828, 1e-3), (7, 24.322, 1e-3), (15, 37.697, 1e-3), (30, 59.703, 1e-3), (2, 1.3863, 0.5)):
    p = upper_gamma_q(df / 2, x / 2)
    print(df, x, p, want)
    if abs(p - want) > 2e-3 * want:
        sys.exit(1)
EOF
rc=$?
check "the chi-square p-value matches tabulated quantiles" test $rc = 0
[ $rc = 0 ] || sed 's/^/#   /' "$TMP/q.out"

ALPHA=1e-3
# homogeneity NAME N PROMPT MAX_TOKENS ENSEMBLE_FIELDS EXTRA: arms A (speculative,
# seeds 1..N), B (without, N+1..2N) and C (speculative at temperature 0.5,
# 2N+1..3N); A vs B must pass at ALPHA, A vs C must be rejected at ALPHA.
homogeneity() {
  local name=$1 ns=$2 p=$3 h=$4 ens=$5 extra=$6
  sample 1 "$ns" "$(body 1 true "$h" "$p" "$ens" "$extra")" >"$TMP/A.jsonl"
  sample $((ns + 1)) "$ns" "$(body 1 false "$h" "$p" "$ens" "$extra")" >"$TMP/B.jsonl"
  sample $((2 * ns + 1)) "$ns" "$(body 0.5 true "$h" "$p" "$ens" "$extra")" >"$TMP/C.jsonl"
  read -r x df pv < <(chi2 "$TMP/A.jsonl" "$TMP/B.jsonl")
  read -r xc dfc pc < <(chi2 "$TMP/A.jsonl" "$TMP/C.jsonl")
  local acc; acc=$(accepted "$TMP/A.jsonl")
  echo "#   $name: $ns samples per arm of $h steps, $acc of $((ns * h)) steps decided from drafts"
  check "$name: with vs without speculative steps, chi2 $x, df $df, p $pv >= alpha $ALPHA" \
    python3 -c "import sys; sys.exit(0 if $pv >= $ALPHA and $df >= 3 else 1)"
  check "$name: the same test rejects temperature 0.5 vs 1: chi2 $xc, df $dfc, p $pc < alpha $ALPHA" \
    python3 -c "import sys; sys.exit(0 if $pc < $ALPHA else 1)"
  check "$name: the speculative arm decided steps from drafts ($acc)" test "$acc" -gt 0
}
homogeneity "solo:a" 500 "Once upon a time" 4 "$SOLO_A" '"top_k": 2'
homogeneity "mixture, a model twice" 300 "She opened the door and" 3 "$TWICE" '"top_k": 2'
homogeneity "mixture, a model twice, a2 drafting" 300 "She opened the door and" 3 "$TWICE, \"draft_member\": \"a2\"" '"top_k": 2'

stop_consort; check "consort serve stops cleanly" test $? = 0
tap_done
