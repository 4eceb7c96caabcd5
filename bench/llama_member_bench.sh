#!/usr/bin/env bash
# bench/llama_member_bench.sh [MODEL.gguf]: what a llama-server member's
# approximation costs (docs/MEMBERS.md). The same model (default
# models/a.gguf) served twice at once, as a consort-worker and as llama.cpp's
# own llama-server (scripts/llama_tools.sh), each with 1 thread and a
# 256-token context, measured side by side in one run:
#   - bits/byte on held-out text (`consort ppl`, both members in one run;
#     SUBSET=DxC scores the first C characters of the first D documents,
#     default 10x2000; SUBSET=all the whole file);
#   - greedy text over STEPS steps (default 200) from each of PROMPTS, as a
#     one-member ensemble of each: identical texts, and the common prefix;
#   - speed: steps/s of those generations (the coordinator's wall time).
# And in a mixture across tokenizers: MODEL as a worker with MODEL2 (default
# models/b.gguf) once as a worker and once as a llama-server member, greedy
# text over STEPS steps (where the lists' lower bounds can change a choice).
# NPROBS (default 512) is the llama-server member's list length.
# The same server is also measured as an OpenAI-compatible member
# (openai+URL/v1 with --tokenizer MODEL, docs/MEMBERS.md): with NPROBS
# alternatives and with OA_CAP (default 20, what vLLM and many servers allow)
# alternatives per list; those columns follow the llama-server one.
# Prints markdown rows for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONSORT_BUILD:-build}
MODEL=${1:-models/a.gguf}
MODEL2=${MODEL2:-models/b.gguf}
FILE=${FILE:-data/brown-heldout.jsonl}
SUBSET=${SUBSET:-10x2000}
STEPS=${STEPS:-200}
NPROBS=${NPROBS:-512}
OA_CAP=${OA_CAP:-20}
[ -x "$B/consort" ] || { echo "no $B/consort (make first)" >&2; exit 1; }
LLAMA_BIN=$(scripts/llama_tools.sh)
TMP=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$TMP"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$port" -t 1 -c 256 -np 1 --no-webui \
  >"$TMP/ls.out" 2>&1 &
PIDS+=("$!")
LURL=http://127.0.0.1:$port
"$B/consort-worker" --model "$MODEL" --port 0 --threads 1 --parallel 1 >"$TMP/w.out" 2>"$TMP/w.err" &
PIDS+=("$!")
for _ in $(seq 600); do
  curl -s "$LURL/health" | grep -q '"ok"' && grep -q 'http://' "$TMP/w.out" && break
  sleep 0.1
done
WURL=$(grep -o 'http://[0-9.:]*' "$TMP/w.out" | head -1)
port2=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$LLAMA_BIN/llama-server" -m "$MODEL2" --host 127.0.0.1 --port "$port2" -t 1 -c 256 -np 1 --no-webui \
  >"$TMP/ls2.out" 2>&1 &
PIDS+=("$!")
LURL2=http://127.0.0.1:$port2
"$B/consort-worker" --model "$MODEL2" --port 0 --threads 1 --parallel 1 >"$TMP/w2.out" 2>"$TMP/w2.err" &
PIDS+=("$!")
for _ in $(seq 600); do
  curl -s "$LURL2/health" | grep -q '"ok"' && grep -q 'http://' "$TMP/w2.out" && break
  sleep 0.1
done
WURL2=$(grep -o 'http://[0-9.:]*' "$TMP/w2.out" | head -1)

if [ "$SUBSET" = all ]; then cp "$FILE" "$TMP/text.jsonl"; else
  python3 -c "
import json, sys
d, c = map(int, sys.argv[2].split('x'))
for i, l in enumerate(open(sys.argv[1])):
    if i >= d: break
    print(json.dumps({'text': json.loads(l)['text'][:c]}))" "$FILE" "$SUBSET" >"$TMP/text.jsonl"
fi
"$B/consort" ppl --member worker="$WURL" --member llama="llama+$LURL" --member openai="openai+$LURL/v1" \
  --tokenizer openai="$MODEL" --member-nprobs "$NPROBS" \
  --file "$TMP/text.jsonl" --strategies mixture --json "$TMP/ppl.json" --no-progress --resamples 10 >/dev/null
python3 - "$TMP/ppl.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = {x['name']: x for x in d['results']}
w, l, o = r['solo:worker'], r['solo:llama'], r['solo:openai']
print(f"| held-out bits/byte ({d['bytes']} bytes, {d['documents']} docs) | {w['bits_per_byte']:.6f} | {l['bits_per_byte']:.6f} | {o['bits_per_byte']:.6f} | (same scoring) | {l['bits_per_byte'] - w['bits_per_byte']:+.2e} / {o['bits_per_byte'] - w['bits_per_byte']:+.2e} |")
print(f"| scoring wall time, the three members in one run | {d['seconds']:.1f} s (together) | | | | |")
PY

gen() { # URLSPEC PROMPT [URLSPEC2]: prints the text; the wall seconds go to $TMP/secs
  local t0 t1
  t0=$(date +%s.%N)
  "$B/consort" generate --member m="$1" ${3:+--member m2="$3"} --member-nprobs "${GEN_NPROBS:-$NPROBS}" \
    ${TOK:+--tokenizer "$TOK"} -p "$2" -n "$STEPS" >"$TMP/gen"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l >"$TMP/secs"
  cat "$TMP/gen"
}
common_of() { python3 -c "import sys; a,b=sys.argv[1].encode(),sys.argv[2].encode(); n=0
while n<min(len(a),len(b)) and a[n]==b[n]: n+=1
print(n)" "$1" "$2"; }
same=0 same_o=0 same_c=0 total=0 wsec=0 lsec=0 osec=0 csec=0
for prompt in "The old man said that" "In the morning the committee" "She opened the door and"; do
  wt=$(gen "$WURL" "$prompt"); ws=$(cat "$TMP/secs")
  lt=$(gen "llama+$LURL" "$prompt"); ls=$(cat "$TMP/secs")
  ot=$(TOK="m=$MODEL" gen "openai+$LURL/v1" "$prompt"); os=$(cat "$TMP/secs")
  ct=$(TOK="m=$MODEL" GEN_NPROBS=$OA_CAP gen "openai+$LURL/v1" "$prompt"); cs=$(cat "$TMP/secs")
  total=$((total + 1))
  [ "$wt" = "$lt" ] && same=$((same + 1)); [ "$wt" = "$ot" ] && same_o=$((same_o + 1)); [ "$wt" = "$ct" ] && same_c=$((same_c + 1))
  wsec=$(echo "$wsec + $ws" | bc -l); lsec=$(echo "$lsec + $ls" | bc -l)
  osec=$(echo "$osec + $os" | bc -l); csec=$(echo "$csec + $cs" | bc -l)
  echo "| greedy $STEPS steps, \"$prompt\": length, and bytes in common with the worker | ${#wt} | ${#lt} / $(common_of "$wt" "$lt") | ${#ot} / $(common_of "$wt" "$ot") | ${#ct} / $(common_of "$wt" "$ct") | |"
done
echo "| greedy texts identical to the worker's | | $same of $total | $same_o of $total | $same_c of $total | |"
sps() { echo "$total * $STEPS / $1" | bc -l; }
printf '| speed, one-member greedy generation (steps/s) | %.1f | %.1f | %.1f | %.1f | |\n' \
  "$(sps "$wsec")" "$(sps "$lsec")" "$(sps "$osec")" "$(sps "$csec")"

same=0 total=0
for prompt in "The old man said that" "In the morning the committee" "She opened the door and"; do
  wt=$(gen "$WURL" "$prompt" "$WURL2")
  lt=$(gen "$WURL" "$prompt" "llama+$LURL2")
  common=$(python3 -c "import sys; a,b=sys.argv[1].encode(),sys.argv[2].encode(); n=0
while n<min(len(a),len(b)) and a[n]==b[n]: n+=1
print(n, len(a), len(b))" "$wt" "$lt")
  set -- $common
  total=$((total + 1)); [ "$wt" = "$lt" ] && same=$((same + 1))
  echo "| mixture A(worker)+B, greedy $STEPS steps, \"$prompt\": B as worker / as llama-server | $2 bytes | $3 bytes | $1 bytes in common |"
done
echo "| mixture greedy texts identical | | | $same of $total |"
