#!/usr/bin/env bash
# consort ppl and consort ab end to end, on the two real tiny models with
# different SentencePiece vocabularies (models/external), with
# local workers spawned by consort. docs/ARCHITECTURE.md invariants 1, 2, 3, 5:
#  - one member's bits per byte equal a direct libllama computation
#    (tests/tools/ppl_direct: the same doc-start token, the same windows) to 1e-6;
#  - mixture_units with weights (1, 0) over different tokenizers = solo of the first;
#  - the same model twice = the model;
#  - the step-level rules (mixture, product, pool, selective) scored through
#    the engine's steps: weights (1, 0) = the first member walked through the
#    steps, which agrees with its own figure within the documented
#    approximation (docs/EVALUATION.md "Scoring through the steps");
#  - every byte scored; the --json shape;
#  - byte_pool: the covering walk (/v1/next_bytes; its HTTP refusals are in
#    worker.t) and the per-byte step walk (--byte-beam 0);
#    model A alone through the covering walk matches its own figure;
#  - ab writes report.md, report.json, report.svg and the SVG parses as XML.
set -uo pipefail
cd "${CONSORT_ROOT:-$(dirname "$0")/../..}"
B=${CONSORT_BUILD:-build}
EXT=$PWD/models/external
A=$EXT/stories260K.gguf
C=$EXT/TinyStories-656K-Q8_0.gguf
if [ ! -x "$B/consort" ] || [ ! -x "$B/consort-worker" ] || [ ! -x "$B/tools/ppl_direct" ]; then
  echo "1..0 # SKIP needs $B/consort, $B/consort-worker and $B/tools/ppl_direct"; exit 0
fi
if [ ! -f "$A" ] || [ ! -f "$C" ]; then echo "1..1"; echo "not ok 1 - the vendored models are missing under $EXT"; exit 1; fi
command -v python3 >/dev/null || { echo "1..0 # SKIP needs python3"; exit 0; }
export CONSORT_WORKER=${CONSORT_WORKER:-$B/consort-worker}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
py() { python3 -c "$@"; }

# documents: short ones, an empty one, UTF-8, and one longer than the 64-token context
python3 - "$tmp/docs.jsonl" "$tmp/ascii.jsonl" <<'PY'
import json, sys
docs = ["Once upon a time, there was a little girl named Lily. She loved to play outside.",
        "The dog ran to the park. He saw a big red ball!",
        "",
        "Tom said, \"I am happy.\" Mom smiled: caf\u00e9 and cake \u2014 yum.",
        " A story that starts with a space.",
        " ".join(["Lily and Ben went to the store to buy some apples and milk."] * 12)]
with open(sys.argv[1], "w") as f:
    for d in docs: f.write(json.dumps({"text": d}) + "\n")
# TinyStories-656K has no byte-fallback tokens for non-ASCII characters
# (llama.cpp cannot tokenize them with it), so the two-model runs use ASCII
with open(sys.argv[2], "w") as f:
    for d in docs: f.write(json.dumps({"text": d.replace("\u00e9", "e").replace("\u2014", "-")}) + "\n")
PY
common=(--threads 1 --ctx-size 64 --no-progress --resamples 50)

"$B/consort" ppl --member a="$A" --file "$tmp/docs.jsonl" --json "$tmp/one.json" "${common[@]}" > "$tmp/one.txt" 2> "$tmp/one.err"
ok $? "ppl with one member runs"
ctx=$(py "import json; print(json.load(open('$tmp/one.json'))['members'][0].get('n_ctx', 64))")
ov=$(py "import json; print(json.load(open('$tmp/one.json'))['members'][0].get('window_overlap', 32))")
"$B/tools/ppl_direct" --model "$A" --file "$tmp/docs.jsonl" --ctx "$ctx" --overlap "$ov" --threads 1 > "$tmp/direct.json"
ok $? "direct libllama reference runs (ctx $ctx, overlap $ov)"
py "
import json, sys
c = json.load(open('$tmp/one.json')); d = json.load(open('$tmp/direct.json'))
r = c['results'][0]
print('# consort %.9f bpb (%d tokens), direct %.9f bpb (%d tokens)' % (r['bits_per_byte'], c['members'][0]['tokens'], d['bits_per_byte'], d['tokens']))
sys.exit(0 if abs(r['bits_per_byte'] - d['bits_per_byte']) <= 1e-6 and c['members'][0]['tokens'] == d['tokens'] else 1)"
ok $? "one member's bits per byte = direct llama.cpp computation (1e-6), same token count"
py "
import json, sys
c = json.load(open('$tmp/one.json'))
text = sum(len(json.loads(l)['text'].encode()) for l in open('$tmp/docs.jsonl') if l.strip())
ok = c['documents'] == 6 and c['bytes'] == text and all(m['scored_bytes'] == text for m in c['members'])
ok = ok and c['unit'] == 'token' and c['file'].endswith('docs.jsonl')
r = c['results'][0]
ok = ok and r['name'] == 'solo:a' and all(k in r for k in ('bits_per_byte','byte_perplexity','word_perplexity','token_perplexity','ci95'))
sys.exit(0 if ok else 1)"
ok $? "every byte scored; JSON shape"

"$B/consort" ppl --member a="$A" --member b="$C" --weights 1,0 --strategies solo:a,solo:b,mixture_units,product_bound,route_entropy,oracle \
  --file "$tmp/ascii.jsonl" --json "$tmp/two.json" --per-doc "$tmp/two.csv" "${common[@]}" > "$tmp/two.txt" 2> "$tmp/two.err"
ok $? "ppl with two tokenizers runs"
py "
import json, sys
c = json.load(open('$tmp/two.json')); r = {x['name']: x for x in c['results']}
print('# solo:a %.9f  solo:b %.9f  mixture_units(1,0) %.9f' % (r['solo:a']['bits_per_byte'], r['solo:b']['bits_per_byte'], r['mixture_units']['bits_per_byte']))
sys.exit(0 if abs(r['mixture_units']['bits_per_byte'] - r['solo:a']['bits_per_byte']) <= 1e-6 else 1)"
ok $? "mixture_units with weights (1,0) over different tokenizers = solo of the first (1e-6)"
"$B/consort" ppl --member a="$A" --file "$tmp/ascii.jsonl" --json "$tmp/one_ascii.json" "${common[@]}" > /dev/null 2>&1
py "
import json, sys
a = json.load(open('$tmp/one_ascii.json'))['results'][0]['bits_per_byte']; b = {x['name']: x for x in json.load(open('$tmp/two.json'))['results']}['solo:a']['bits_per_byte']
sys.exit(0 if abs(a - b) <= 1e-9 else 1)"
ok $? "solo:a is the same alone and beside another member"
py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/two.json'))['results']}
o = r['oracle']
sys.exit(0 if o.get('upper_bound') and o['bits_per_byte'] <= min(r['solo:a']['bits_per_byte'], r['solo:b']['bits_per_byte']) + 1e-12 and r['mixture_units']['token_perplexity'] is None else 1)"
ok $? "oracle labelled and bounded; ensembles have no token perplexity"
[ "$(wc -l < "$tmp/two.csv")" = 7 ]; ok $? "per-document CSV: header + 6 lines"
grep -q "HINDSIGHT" "$tmp/two.txt"; ok $? "the table labels the oracle"
py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/two.json'))['results']}
sys.exit(0 if 'upper bound' in r['product_bound'].get('note', '') and 'hindsight' in r['oracle'].get('note', '') else 1)"
ok $? "the JSON labels product_bound and oracle as bounds (registry notes)"

# one name, one rule: ppl refuses the generation rules that have no
# distribution to score, naming the evaluation-only rule; generation refuses those
for s in min_ppl:route_entropy min_ppl_cross:route_prev; do
  "$B/consort" ppl --member a="$A" --member b="$C" --strategies "mixture,${s%%:*}" --file "$tmp/ascii.jsonl" \
    "${common[@]}" > /dev/null 2> "$tmp/refused.err"
  rc=$?
  [ $rc = 2 ] && grep -q "cannot be scored" "$tmp/refused.err" && grep -q "'${s#*:}'" "$tmp/refused.err"
  ok $? "ppl --strategies ${s%%:*}: exit 2, names ${s#*:} (rc $rc)"
done
"$B/consort" generate --member a="$A" --strategy route_entropy --prompt "Once" --max-tokens 2 --threads 1 \
  > /dev/null 2> "$tmp/gen_refused.err"
rc=$?
[ $rc = 2 ] && grep -q "evaluation-only" "$tmp/gen_refused.err"
ok $? "generate --strategy route_entropy: exit 2, an evaluation-only rule (rc $rc)"
"$B/consort" ab --member a="$A" --prompts "$tmp/docs.jsonl" --strategies mixture,oracle --out "$tmp/ab_refused" \
  > /dev/null 2> "$tmp/ab_refused.err"
rc=$?
[ $rc = 2 ] && grep -q "evaluation-only" "$tmp/ab_refused.err" && [ ! -e "$tmp/ab_refused" ]
ok $? "ab --strategies mixture,oracle: exit 2 before generating (rc $rc)"

"$B/consort" ppl --member a="$A" --member b="$A" --strategies solo:a,mixture_units,product_bound,route_entropy,mixture,product,pool \
  --file "$tmp/docs.jsonl" --json "$tmp/same.json" "${common[@]}" > "$tmp/same.txt" 2>&1
ok $? "the same model twice runs"
py "
import json, sys
r = {x['name']: x['bits_per_byte'] for x in json.load(open('$tmp/same.json'))['results']}
print('# ' + str(r))
units = all(abs(r[k] - r['solo:a']) <= 1e-9 for k in ('mixture_units', 'product_bound', 'route_entropy'))
steps = all(abs(r[k] - r['mixture']) <= 1e-9 for k in ('product', 'pool'))
sys.exit(0 if units and steps else 1)"
ok $? "the same model twice = the model: on units exactly; through the steps mixture = product = pool (1e-9)"
grep -q "windows re-opened" "$tmp/same.txt" && ! grep -q " 0 windows re-opened" "$tmp/same.txt"
ok $? "the long document fills the 64-token context: windows are re-opened"

"$B/consort" ppl --member a="$A" --member b="$A" --strategies solo:a,byte_pool --file "$tmp/docs.jsonl" \
  --json "$tmp/bytes.json" "${common[@]}" > "$tmp/bytes.txt" 2>&1
py "
import json, sys
j = json.load(open('$tmp/bytes.json')); r = {x['name']: x for x in j['results']}
b = r['byte_pool']['bits_per_byte']
print('# solo:a %.4f, byte_pool of the model with itself %.4f bits/byte' % (r['solo:a']['bits_per_byte'], b))
sys.exit(0 if b is not None and 0 < b < 8 and j['byte_pool_exponents'] == [0.5, 0.5] and r['byte_pool'].get('byte_level') and not r['byte_pool'].get('steps') else 1)"
ok $? "byte_pool runs (covering walk, one /v1/next_bytes call per member per document), finite, default exponents 1/M"
grep -q "byte_pool: .*covering tokenizations (beam 4).* windows rolled" "$tmp/bytes.txt" && ! grep -q "byte_pool: .* 0 windows rolled" "$tmp/bytes.txt"
ok $? "byte_pool: default beam 4; the long document fills the 64-token context, the worker rolls its window"
"$B/consort" ppl --member a="$A" --member b="$A" --strategies solo:a,byte_pool --byte-beam 0 --file "$tmp/docs.jsonl" \
  --json "$tmp/bytes0.json" "${common[@]}" > "$tmp/bytes0.txt" 2>&1
grep -q "byte_pool: .*canonical prefix.* windows re-opened" "$tmp/bytes0.txt" && ! grep -q "byte_pool: .* 0 windows re-opened" "$tmp/bytes0.txt"
ok $? "byte_pool --byte-beam 0: the per-byte step walk, windows re-opened"
"$B/consort" ppl --member a="$A" --strategies byte_pool --byte-beam 257 --file "$tmp/docs.jsonl" "${common[@]}" > /dev/null 2> "$tmp/beam.err"
[ $? = 2 ] && grep -q -- "--byte-beam" "$tmp/beam.err"
ok $? "--byte-beam 257: exit 2 naming the flag"


"$B/consort" ppl --member a="$A" --member b="$C" --tune-weights "$tmp/ascii.jsonl" --strategies mixture_units \
  --file "$tmp/ascii.jsonl" "${common[@]}" > "$tmp/tune.txt" 2>&1
ok $? "--tune-weights runs"
grep -q "weights tuned on" "$tmp/tune.txt"; ok $? "tuned weights reported"

# the project's own models A (Llama-2 SentencePiece) and B (GPT-2 BPE) on a
# bounded slice of the held-out text (3 documents, 1500 characters each)
if [ -f models/a.gguf ] && [ -f models/b.gguf ] && [ -f data/brown-heldout.jsonl ]; then
  python3 -c "
import json
for i, l in enumerate(open('data/brown-heldout.jsonl')):
    if i >= 3: break
    print(json.dumps({'text': json.loads(l)['text'][:1500]}))" > "$tmp/brown.jsonl"
  "$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --weights 1,0 \
    --strategies solo:a,solo:b,mixture_units,mixture,pool --file "$tmp/brown.jsonl" --json "$tmp/ab10.json" \
    --threads 1 --no-progress --resamples 50 > /dev/null 2>&1
  ok $? "ppl with models A and B runs"
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/ab10.json'))['results']}
print('# A %.9f  B %.9f  mixture_units(1,0) %.9f' % (r['solo:a']['bits_per_byte'], r['solo:b']['bits_per_byte'], r['mixture_units']['bits_per_byte']))
sys.exit(0 if abs(r['mixture_units']['bits_per_byte'] - r['solo:a']['bits_per_byte']) <= 1e-6 else 1)"
  ok $? "A and B (SentencePiece vs GPT-2 BPE): mixture_units (1,0) = solo:a (1e-6)"
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/ab10.json'))['results']}
a, m, p = r['solo:a']['bits_per_byte'], r['mixture']['bits_per_byte'], r['pool']['bits_per_byte']
print('# A alone: own figure %.6f, through the steps %.6f (%+.2f%%); pool(1,0) %.9f' % (a, m, 100 * (m - a) / a, p))
sys.exit(0 if abs(m - a) <= 0.01 * a and abs(p - m) <= 1e-9 and r['mixture'].get('steps') else 1)"
  ok $? "A walked through the steps (mixture 1,0) = its own /v1/score figure within 1%; pool (1,0) the same (1e-9)"
  "$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --strategies mixture,product,pool,selective \
    --file "$tmp/brown.jsonl" --json "$tmp/abeq.json" --threads 1 --no-progress --resamples 200 > "$tmp/abeq.txt" 2>&1
  py "
import json, sys
j = json.load(open('$tmp/abeq.json')); r = {x['name']: x for x in j['results']}
m = r['mixture']
print('# mixture %.4f bpb, %+.4f vs %s [%+.4f, %+.4f]' % (m['bits_per_byte'], m['diff_vs_best_member'], j['best_member'], m['diff_ci95'][0], m['diff_ci95'][1]))
sys.exit(0 if j['best_member'] in ('solo:a', 'solo:b') and len(m['diff_ci95']) == 2 and m['diff_ci95'][0] <= m['diff_vs_best_member'] <= m['diff_ci95'][1] else 1)"
  ok $? "the report states the ensemble's difference from the best member with its interval"
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/abeq.json'))['results']}
print('# ' + '  '.join('%s %s' % (k, r[k]['bits_per_byte']) for k in ('mixture', 'product', 'pool', 'selective')))
sys.exit(0 if all(r[k].get('steps') and r[k]['bits_per_byte'] is not None and 0 < r[k]['bits_per_byte'] < 8 for k in ('mixture', 'pool', 'selective')) else 1)"
  ok $? "mixture, pool and selective are scored through the steps, finite"
  python3 -c "
import json
for i, l in enumerate(open('data/brown-heldout.jsonl')):
    if i >= 2: break
    print(json.dumps({'text': json.loads(l)['text'][:300]}))" > "$tmp/brown_short.jsonl"
  "$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --strategies solo:a,solo:b,byte_pool \
    --file "$tmp/brown_short.jsonl" --json "$tmp/abbytes.json" --threads 1 --no-progress --resamples 50 > /dev/null 2>&1
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/abbytes.json'))['results']}
b = r['byte_pool']['bits_per_byte']
print('# 600 bytes of the held-out text: A %.4f  B %.4f  byte_pool %s bits/byte' % (r['solo:a']['bits_per_byte'], r['solo:b']['bits_per_byte'], b))
sys.exit(0 if b is not None and 0 < b < 8 else 1)"
  ok $? "byte_pool on models A and B (two tokenizers): a finite figure"
  "$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --weights 1,0 --pool-exponents 1,0 \
    --strategies solo:a,byte_pool --file "$tmp/brown_short.jsonl" --json "$tmp/abytes.json" --threads 1 \
    --no-progress --resamples 50 > /dev/null 2>&1
  "$B/consort" ppl --member a=models/a.gguf --member b=models/b.gguf --weights 1,0 --pool-exponents 1,0 --byte-beam 0 \
    --strategies solo:a,byte_pool --file "$tmp/brown_short.jsonl" --json "$tmp/abytes0.json" --threads 1 \
    --no-progress --resamples 50 > /dev/null 2>&1
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/abytes.json'))['results']}
r0 = {x['name']: x for x in json.load(open('$tmp/abytes0.json'))['results']}
a, c, k = r['solo:a']['bits_per_byte'], r['byte_pool']['bits_per_byte'], r0['byte_pool']['bits_per_byte']
print('# A alone: /v1/score %.4f, byte walk over covering tokenizations %.4f, canonical prefix (beam 0) %.4f bits/byte' % (a, c, k))
sys.exit(0 if c <= a + 0.005 and c < k - 0.05 else 1)"
  ok $? "A (SentencePiece) alone byte by byte: the covering walk closes the canonical prefix's gap (within 0.005 of /v1/score)"
  "$B/tools/ppl_direct" --model models/b.gguf --file "$tmp/brown.jsonl" --ctx 256 --overlap 128 --threads 1 > "$tmp/bdirect.json"
  py "
import json, sys
r = {x['name']: x for x in json.load(open('$tmp/ab10.json'))['results']}; d = json.load(open('$tmp/bdirect.json'))
print('# B: consort %.9f, direct %.9f' % (r['solo:b']['bits_per_byte'], d['bits_per_byte']))
sys.exit(0 if abs(r['solo:b']['bits_per_byte'] - d['bits_per_byte']) <= 1e-6 else 1)"
  ok $? "model B (GPT-2 BPE, <|endoftext|> as doc start): consort = direct llama.cpp (1e-6)"
fi

# ab
printf '{"prompt": "Once upon a time"}\n{"prompt": "The little dog"}\n' > "$tmp/prompts.jsonl"
"$B/consort" ab --member a="$A" --member b="$C" --prompts "$tmp/prompts.jsonl" --strategies solo:a,mixture \
  --max-tokens 8 --judge j="$A" --out "$tmp/ab" --threads 1 --resamples 50 > "$tmp/ab.txt" 2> "$tmp/ab.err"
ok $? "ab runs"
[ -s "$tmp/ab/report.md" ] && [ -s "$tmp/ab/report.json" ] && [ -s "$tmp/ab/report.svg" ]
ok $? "ab writes report.md, report.json, report.svg"
py "
import json, sys, xml.etree.ElementTree as E
root = E.parse('$tmp/ab/report.svg').getroot()
j = json.load(open('$tmp/ab/report.json'))
sys.exit(0 if root.tag.endswith('svg') and len(j['summary']) == 2 and j['judge'] == 'j' else 1)"
ok $? "the SVG is well-formed XML; report.json has a summary per strategy"
py "
import json, sys, xml.etree.ElementTree as E
ns = '{http://www.w3.org/2000/svg}'
root = E.parse('$tmp/ab/report.svg').getroot()
cls = [e.get('class') for e in root.iter()]
texts = ' '.join(e.text or '' for e in root.iter(ns + 'text'))
j = json.load(open('$tmp/ab/report.json')); s = {x['strategy']: x for x in j['summary']}
ok = cls.count('tick') >= 4 and 'axis' in cls and 'solo' in cls and 'ensemble' in cls and 'legend' in cls
ok = ok and 'caption' in cls and 'Judge: j' in texts and 'consort ' in texts and 'temperature' in texts
ok = ok and j['best_solo'] == 'solo:a' and s['mixture']['kind'] == 'ensemble' and s['mixture']['diff_ci95'][0] is not None
ok = ok and set(s['mixture']['member_agreement']) == {'a', 'b'}
sys.exit(0 if ok else 1)"
ok $? "ab: the SVG has axes, ticks, a legend and a caption (members, judge, settings, date, version); the JSON the paired difference from the best solo strategy and the member agreement"
echo "1..$n"
