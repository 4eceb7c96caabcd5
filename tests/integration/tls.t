#!/usr/bin/env bash
# TLS and the shared secret end to end, on loopback, with a self-signed
# certificate made here (openssl): a worker serving HTTPS with a token; the
# coordinator reaching it as an https:// member with --tls-ca and the token
# from --token-file (the same text as over plain HTTP); refused without the
# CA, with a wrong token; and `consort serve` itself on HTTPS with an API key
# file (curl --cacert), 401 without the key. Secrets only in files or the
# environment.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/lib_serve.sh
need_stack
command -v curl >/dev/null || skip_all "curl is not installed"
command -v openssl >/dev/null || skip_all "openssl is not installed"
n=0 failed=0

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 ||
  skip_all "openssl could not make a certificate"
(umask 077; echo "members-secret-$$" >"$TMP/token"; echo "wrong-secret" >"$TMP/wrong"; echo "api-key-$$" >"$TMP/apikey")

# a worker on HTTPS with the token (from the environment), and a plain one
CONSORT_TOKEN="members-secret-$$" "$B/consort-worker" --model "$M1" --port 0 --threads 1 --name tls \
  --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" >"$TMP/tw.out" 2>"$TMP/tw.err" &
PIDS+=($!)
TW=$(wait_line "$TMP/tw.out" 'https://[0-9.:]*' $!) || { echo "# $(tail -3 "$TMP/tw.err")"; skip_all "the TLS worker did not start"; }
start_worker plain "$M1" || skip_all "the plain worker did not start"
PW=$WORKER_URL
check "the worker listens on https ($TW)" test -n "$TW"

gen() { "$B/consort" generate --json --prompt "The jury said that" --max-tokens 16 --temperature 0 "$@"; }
gen --member a="$PW" >"$TMP/plain.json" 2>"$TMP/plain.err"
gen --member a="$TW" --tls-ca "$TMP/cert.pem" --token-file "$TMP/token" >"$TMP/tls.json" 2>"$TMP/tls.err"
rc=$?
check "generate through an https:// member with --tls-ca and --token-file" test $rc -eq 0
same_text() { # same_text A.json B.json: the non-empty texts of two answers (generate --json or a completion) are equal
  python3 - "$@" <<'PY'
import json, sys
def text(f):
    d = json.load(open(f))
    return d["choices"][0]["text"] if "choices" in d else d["text"]
a, b = text(sys.argv[1]), text(sys.argv[2])
sys.exit(0 if a and a == b else 1)
PY
}
check "... the same text as over plain HTTP" same_text "$TMP/plain.json" "$TMP/tls.json"

gen --member a="$TW" --token-file "$TMP/token" >/dev/null 2>"$TMP/noca.err"
rc=$?
check "without --tls-ca the self-signed member is refused (exit $rc)" test $rc -ne 0
gen --member a="$TW" --tls-ca "$TMP/cert.pem" --token-file "$TMP/wrong" >/dev/null 2>"$TMP/wrong.err"
rc=$?
check "with a wrong token the member is refused (exit $rc)" test $rc -ne 0
check "... and no secret appears in the messages" bash -c "! grep -q -e 'members-secret' -e 'wrong-secret' '$TMP/noca.err' '$TMP/wrong.err' '$TMP/tls.err'"

# consort serve on HTTPS, members over https, clients with an API key file
"$B/consort" serve --port 0 --member a="$TW" --tls-ca "$TMP/cert.pem" --token-file "$TMP/token" \
  --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" --api-key-file "$TMP/apikey" >"$TMP/s.out" 2>"$TMP/s.err" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
SU=$(wait_line "$TMP/s.out" 'https://[0-9.:]*/v1' "$SERVER_PID") || { echo "# $(tail -3 "$TMP/s.err")"; }
check "consort serve listens on https ($SU)" test -n "$SU"
body='{"prompt": "The jury said that", "max_tokens": 16, "temperature": 0}'
st=$(curl -s -o "$TMP/c.json" -w '%{http_code}' --cacert "$TMP/cert.pem" -H "Authorization: Bearer api-key-$$" \
  -H 'Content-Type: application/json' -d "$body" "$SU/completions")
check "a completion over HTTPS with the API key: 200 ($st)" test "$st" = 200
check "... the member's text" same_text "$TMP/c.json" "$TMP/plain.json"
st=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TMP/cert.pem" -H 'Content-Type: application/json' -d "$body" "$SU/completions")
check "without the API key: 401 ($st)" test "$st" = 401
plain=${SU/https:/http:}
st=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -d "$body" "$plain/completions")
check "plain HTTP to the HTTPS port gets no answer ($st)" test "$st" = 000
check "no secret in the server's log" bash -c "! grep -q -e 'members-secret' -e 'api-key-' '$TMP/s.err'"

echo "1..$n"
[ "$failed" -eq 0 ]
