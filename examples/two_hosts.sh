#!/usr/bin/env bash
# examples/two_hosts.sh: an ensemble across machines, with the shared secret
# and the API key in files (never on a command line, where `ps` shows them).
# Prints the commands to run on each machine; nothing is started here.
#
#   examples/two_hosts.sh WORKER_HOST_A WORKER_HOST_B
set -euo pipefail
a=${1:-10.0.0.2} b=${2:-10.0.0.3}
cat <<EOT
# once: a secret shared by the coordinator and the workers, and a client key
umask 077
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' >consort.token; echo >>consort.token
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' >consort.apikey; echo >>consort.apikey
# copy consort.token to both worker machines (scp, your secret store, ...)

# on $a (a worker off loopback refuses to start without a token):
consort-worker --model models/a.gguf --host 0.0.0.0 --port 9000 --name a --token-file consort.token
# on $b:
consort-worker --model models/b.gguf --host 0.0.0.0 --port 9000 --name b --token-file consort.token

# on the coordinator:
consort serve --member a=http://$a:9000 --member b=http://$b:9000 \\
    --token-file consort.token --api-key-file consort.apikey --port 8080
# (or CONSORT_TOKEN=... and CONSORT_API_KEY=... in the environment instead of the files)

# a client:
curl -s localhost:8080/v1/completions -H "Authorization: Bearer \$(cat consort.apikey)" \\
    -H 'Content-Type: application/json' -d '{"prompt": "The jury", "max_tokens": 20}'
EOT
