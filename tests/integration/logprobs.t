#!/usr/bin/env bash
# tests/integration/logprobs.t: the API's logprobs are true probabilities of
# the text (docs/STRATEGIES.md "Events", "Reported probabilities").
#
#  1. One member alone ("model": NAME), greedy, through
#     POST /v1/completions with logprobs: each chunk's token_logprob equals
#     the member's own teacher-forced log-probability of that token
#     (the worker's POST /v1/score of prompt + completion, after the
#     document-start token only when the model adds BOS, as generation
#     does) to 1e-4, for
#     both project models (SentencePiece and BPE vocabularies).
#  2. The same model twice under mixture: the same numbers (the mixture of
#     two equal members is that member).
#  3. The old renormalised numbers are gone: the completion's summed
#     logprob is far below 0 (it was about -0.3 nats for 16 tokens).
set -u
cd "${CONSORT_ROOT:-$(dirname "$0")/../..}"
. tests/integration/lib_serve.sh
need_stack
command -v curl >/dev/null || skip_all "curl is not installed"
command -v python3 >/dev/null || skip_all "python3 is not installed"

n=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }

start_worker a "$M1" || skip_all "worker a did not start"; UA=$WORKER_URL
start_worker a2 "$M1" || skip_all "worker a2 did not start"; UA2=$WORKER_URL
start_worker b "$M2" || skip_all "worker b did not start"; UB=$WORKER_URL
start_consort srv serve --member a="$UA" --member a2="$UA2" --member b="$UB" --port 0 || skip_all "consort did not start"

PROMPT="Once upon a time, there was a little"

# compare MODEL [EXTRA_JSON] WORKER_URL: prints "OK n worst sum" or "BAD why"
compare() {
  local model=$1 extra=$2 wurl=$3
  curl -s "$SERVER_URL/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"$model\", \"prompt\": \"$PROMPT\", \"max_tokens\": 16, \"temperature\": 0, \"logprobs\": 1 $extra}" \
    >"$TMP/$model.completion.json"
  python3 - "$TMP/$model.completion.json" "$wurl" "$PROMPT" <<'EOF'
import json, sys, urllib.request
comp = json.load(open(sys.argv[1]))
url, prompt = sys.argv[2], sys.argv[3]
ch = comp["choices"][0]
lp = ch["logprobs"]
toks, lps = lp["tokens"], lp["token_logprobs"]
text = ch["text"]
# the generation's context starts with BOS only when the model adds one (a
# BPE model without BOS starts from the prompt itself): score the same way
info = json.load(urllib.request.urlopen(url + "/v1/info"))
req = urllib.request.Request(url + "/v1/score", data=json.dumps({"text": prompt + text, "doc_start": bool(info["add_bos"])}).encode(),
                             headers={"Content-Type": "application/json"})
score = json.load(urllib.request.urlopen(req))
start = len(prompt.encode())
ref = [t["logprob"] for t in score["tokens"] if t["start"] >= start]
if len(ref) != len(lps):
    print("BAD %d chunks against %d scored tokens (%r)" % (len(lps), len(ref), toks)); sys.exit()
worst = max(abs(a - b) for a, b in zip(lps, ref)) if ref else 0
print("OK %d %.3g %.4f" % (len(ref), worst, sum(lps)))
EOF
}

for m in a b; do
  u=$UA; [ $m = b ] && u=$UB
  read -r st cnt worst sum <<<"$(compare $m "" "$u")"
  [ "$st" = OK ] && python3 -c "import sys; sys.exit(0 if float('$worst') <= 1e-4 and int('$cnt') > 0 else 1)"
  ok $? "member $m alone: $cnt token logprobs equal its own /v1/score to 1e-4 (worst $worst)"
  python3 -c "import sys; sys.exit(0 if float('$sum') < -2 else 1)" 2>/dev/null
  ok $? "member $m alone: the completion's logprob ($sum nats) is a probability of the text, not renormalised"
done

read -r st cnt worst sum <<<"$(compare ens ", \"ensemble\": {\"strategy\": \"mixture\", \"members\": [\"a\", \"a2\"]}" "$UA")"
[ "$st" = OK ] && python3 -c "import sys; sys.exit(0 if float('$worst') <= 1e-4 else 1)"
ok $? "mixture of a model with itself: $cnt logprobs equal the model's /v1/score (worst $worst)"

echo "1..$n"
