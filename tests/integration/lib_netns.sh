# tests/integration/lib_netns.sh: helpers sourced by netns.t and
# bench/netns_bench.sh: three network namespaces joined by veth pairs, so the
# coordinator and each of two workers have a host of their own, plus the
# delaying relay (tests/tools/delay_relay) for link latency.
#
# Topology (every address exists only inside the test's namespaces; nothing
# is configured in the caller's namespace and no traffic leaves them):
#
#   NS_C (coordinator)              NS_A (worker a)
#     to-a 10.231.1.1/24  <--veth-->  eth0 10.231.1.2/24
#   NS_C                            NS_B (worker b)
#     to-b 10.231.2.1/24  <--veth-->  eth0 10.231.2.2/24
#
# Namespace names carry the shell's pid, so runs do not collide, and
# netns_cleanup (on EXIT, also after a failure, also under set -e) stops the processes started
# here (by pid) and deletes the namespaces. It sources lib_serve.sh for B,
# ROOT, M1/M2, TMP, PIDS, wait_line, start_worker (loopback) and skip_all.
. "$(dirname "${BASH_SOURCE[0]}")/lib_serve.sh"

NS_C=consort-$$-c NS_A=consort-$$-a NS_B=consort-$$-b
ADDR_C_A=10.231.1.1 ADDR_A=10.231.1.2
ADDR_C_B=10.231.2.1 ADDR_B=10.231.2.2
NETNS_MADE=()

# A shared secret for coordinator and workers, from the environment (never on
# a command line): workers on a non-loopback address may require one.
CONSORT_TOKEN=${CONSORT_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export CONSORT_TOKEN

netns_cleanup() {
  local p ns
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "${NETNS_MADE[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap netns_cleanup EXIT
trap 'exit 130' INT TERM

# netns_need: skips the whole test unless we are root with a working `ip netns`.
netns_need() {
  [ "$(id -u)" = 0 ] || skip_all "needs root (ip netns)"
  command -v ip >/dev/null || skip_all "no ip command (Debian package iproute2)"
  [ -x "$B/tools/delay_relay" ] || skip_all "no $B/tools/delay_relay"
  command -v python3 >/dev/null || skip_all "needs python3"
  local probe=consort-$$-probe
  ip netns add "$probe" 2>/dev/null || skip_all "ip netns add is not permitted here"
  ip netns del "$probe"
}

# netns_setup: creates the three namespaces and both links; 0 on success.
netns_setup() {
  local ns
  for ns in "$NS_C" "$NS_A" "$NS_B"; do
    ip netns add "$ns" || return 1
    NETNS_MADE+=("$ns")
    ip -n "$ns" link set lo up || return 1
  done
  netns_link to-a "$NS_A" "$ADDR_C_A" "$ADDR_A" && netns_link to-b "$NS_B" "$ADDR_C_B" "$ADDR_B"
}

# netns_link IFNAME PEER_NS ADDR_IN_C ADDR_IN_PEER: a veth pair C <-> PEER_NS
netns_link() {
  ip -n "$NS_C" link add "$1" type veth peer name eth0 netns "$2" &&
    ip -n "$NS_C" addr add "$3/24" dev "$1" && ip -n "$2" addr add "$4/24" dev eth0 &&
    ip -n "$NS_C" link set "$1" up && ip -n "$2" link set eth0 up
}

# in_ns NS COMMAND...: runs COMMAND inside the namespace NS
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# start_worker_in NS NAME MODEL ADDR: a worker inside NS listening on ADDR;
# sets WORKER_URL and WORKER_PID
start_worker_in() {
  : >"$TMP/$2.$1.out" # (see start_worker in lib_serve.sh)
  ip netns exec "$1" "$B/consort-worker" --model "$3" --host "$4" --port 0 --threads 1 --name "$2" \
    >"$TMP/$2.$1.out" 2>"$TMP/$2.$1.err" &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
  WORKER_URL=$(wait_line "$TMP/$2.$1.out" 'http://[0-9.:]*' "$WORKER_PID") || {
    echo "# worker $2 in $1 did not start:" >&2; tail -5 "$TMP/$2.$1.err" >&2; return 1; }
}

# start_relay_in NS NAME TARGET_URL DELAY_MS: a delay_relay inside NS on
# 127.0.0.1 in front of TARGET_URL; sets RELAY_URL, RELAY_PID, RELAY_OUT
start_relay_in() {
  local target=${3#http://}
  RELAY_OUT=$TMP/relay.$2.out
  ip netns exec "$1" "$B/tools/delay_relay" --listen 127.0.0.1:0 --target "$target" --delay-ms "$4" \
    >"$RELAY_OUT" 2>"$TMP/relay.$2.err" &
  RELAY_PID=$!
  PIDS+=("$RELAY_PID")
  local hp
  hp=$(wait_line "$RELAY_OUT" 'listening on [0-9.:]*' "$RELAY_PID" 10) || {
    echo "# relay $2 did not start:" >&2; cat "$TMP/relay.$2.err" >&2; return 1; }
  RELAY_URL=http://${hp#listening on }
}

# relay_bytes PID OUTFILE: asks a relay for its counters (SIGUSR1) and
# prints "UP DOWN" (bytes client->target, target->client so far)
relay_bytes() {
  local before i
  before=$(grep -c 'delay_relay bytes' "$2")
  kill -USR1 "$1" || return 1
  for ((i = 0; i < 50; i++)); do
    [ "$(grep -c 'delay_relay bytes' "$2")" -gt "$before" ] && break
    sleep 0.02
  done
  grep 'delay_relay bytes' "$2" | tail -1 | sed 's/.*up=\([0-9]*\) down=\([0-9]*\).*/\1 \2/'
}

# start_consort_in NS OUTNAME ARGS...: consort inside NS; sets SERVER_URL, SERVER_PID
start_consort_in() {
  local ns=$1 name=$2; shift 2
  : >"$TMP/$name.out" # (see start_worker in lib_serve.sh)
  ip netns exec "$ns" "$B/consort" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL=$(wait_line "$TMP/$name.out" 'http://[0-9.:]*/v1' "$SERVER_PID" 60) || {
    echo "# consort $* in $ns did not start:" >&2; tail -5 "$TMP/$name.err" >&2; return 1; }
}
