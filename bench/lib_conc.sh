# bench/lib_conc.sh: helpers sourced by the concurrency benchmarks
# (concurrency_bench.sh, mixture_concurrency_bench.sh): cleanup of exactly
# the processes started (PIDS), waiting for a server, and one burst of C
# concurrent greedy /v1/completions requests measured from the first request
# sent to the last answer. The caller sets N (max_tokens) and TMP.
PIDS=()
conc_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$TMP"; }

wait_up() { # url
  for _ in $(seq 600); do curl --noproxy '*' -s -m 1 "$1/v1/models" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1
}

wait_health() { # url of a consort-worker
  for _ in $(seq 600); do curl --noproxy '*' -s -m 1 "$1/health" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1
}

# burst URL C MODEL [extra JSON fields] -> "completion_tokens/s text_bytes/s"
burst() {
  local url=$1 c=$2 model=$3 t0 t1 tok=0 bytes=0 i
  local body="{\"model\":\"$model\",\"prompt\":\"The committee said that\",\"max_tokens\":$N,\"temperature\":0${4:-}}"
  t0=$(date +%s.%N)
  for i in $(seq "$c"); do
    curl --noproxy '*' -s -m 600 "$url/v1/completions" -H 'Content-Type: application/json' -d "$body" >"$TMP/r.$i" &
  done
  wait
  t1=$(date +%s.%N)
  for i in $(seq "$c"); do
    tok=$((tok + $(jq -r '.usage.completion_tokens // 0' "$TMP/r.$i" 2>/dev/null || echo 0)))
    bytes=$((bytes + $(jq -r '(.choices[0].text // "") | utf8bytelength' "$TMP/r.$i" 2>/dev/null || echo 0)))
  done
  echo "$tok $bytes $t0 $t1" | awk '{printf "%.1f %.1f", $1 / ($4 - $3), $2 / ($4 - $3)}'
}

max_of() { echo "$1 $2" | awk '{print ($2 > $1) ? $2 : $1}'; }

# counters URL -> "decodes tokens steps" of a consort-worker (its /metrics):
# llama_decode calls, token positions decoded, /v1/step requests
counters() {
  curl --noproxy '*' -s -m 5 "$1/metrics" | awk '
    /^consort_worker_decodes_total / { d = $2 }
    /^consort_worker_tokens_decoded_total / { t = $2 }
    /^consort_worker_requests_total\{endpoint="step"\} / { s = $2 }
    END { printf "%d %d %d", d, t, s }'
}
