#!/usr/bin/env bash
# scripts/check_protocol_names.sh: the member protocol's JSON field names
# are spelled only in its home (protocol/), its own tests
# (tests/unit/protocol/, and tests/integration/worker.t, which speaks the
# protocol over HTTP to a real worker) and docs/PROTOCOL.md. Anywhere else a
# quoted field name means hand-built protocol JSON. Prints each hit and
# exits 1; silent and 0 when clean. (Names that consort ppl's own report
# format shares, such as doc_start or window_overlap, are left out.)
set -euo pipefail
cd "$(dirname "$0")/.."
names='logp|append_b64|candidates_b64|residue_b64|s_b64|text_b64|tokens_b64|end_logq|logq|heal_prompt|n_past|space_prefix|strip_space_prefix|has_chat_template|n_ctx_train|slots_in_use|vocab_type|add_special|parse_special'
hits=$(git grep -nE "\"($names)\"" -- '*.c' '*.h' '*.sh' '*.t' '*.mjs' '*.py' \
  ':!protocol/' ':!tests/unit/protocol/' ':!tests/integration/worker.t' 2>/dev/null || true)
# llama-server's own API (coordinator/engine/member_llama.c speaks it) has
# three fields of the same name (/tokenize's add_special and parse_special,
# /v1/models' n_ctx_train): allowed in that file only.
hits=$(printf '%s\n' "$hits" | grep -vE '^coordinator/engine/member_llama\.c:[0-9]+:.*"(add_special|parse_special|n_ctx_train)"' \
  | grep -v '^$' || true)
if [ -n "$hits" ]; then
  echo "protocol field names outside protocol/ (use protocol/proto.h):" >&2
  echo "$hits" >&2
  exit 1
fi
