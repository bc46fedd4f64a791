#!/usr/bin/env bash
# cache-slots.sh BIN -- a gateway whose CACHE_ENDPOINTS names hosts that do not resolve yet (compose
# services not started, StatefulSet-style pod names), tried for real.
#
# (The Helm chart uses CACHE_DNS instead: cache-dns.sh.) A host that does not exist has no DNS
# record; the gateway must treat it as a node that is down. This starts a store, two
# cache-nodes and a gateway whose CACHE_ENDPOINTS name them cache-0 and cache-1, with only cache-0
# resolvable (an /etc/hosts of our own, bind-mounted in a private mount namespace: needs root and
# unshare), and checks that
#   1. the gateway starts and is ready with cache-1 unresolvable (a node that is down), and serves;
#   2. once cache-1 resolves (the "pod" appears), the gateway uses it without a restart;
#   3. once cache-1's process stops (scale-down), the gateway marks it down and still serves.
# Prints "ok ..." lines or the reason, exit status 0 on success.
set -u
BIN=$1
. "$(dirname "$0")/../lib.sh"
private_etc_hosts "$0" "$BIN"
ports=($(free_ports 5))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
export DATA_DIR=$DIR LOG_LEVEL=error SYNC_MODE=none
export STORE_CMD_ENDPOINT=tcp://127.0.0.1:${ports[0]} STORE_PUB_ENDPOINT=tcp://127.0.0.1:${ports[1]}
"$BIN/store-node" & pids+=($!)
CACHE_ENDPOINT=tcp://127.0.0.1:${ports[2]} CACHE_ID=cache-0 "$BIN/cache-node" & pids+=($!)
CACHE_ENDPOINT=tcp://127.0.0.1:${ports[3]} CACHE_ID=cache-1 "$BIN/cache-node" & c1=$!
pids+=($c1)
echo "127.0.0.1 cache-0.presence-cache.test.svc.cluster.local" >>"$DIR/hosts"
gw=http://127.0.0.1:${ports[4]}
JWT_SECRET=0123456789abcdef0123456789abcdef SERVICE_ADDR=127.0.0.1 SERVICE_PORT=${ports[4]} GATEWAY_THREADS=2 \
    CACHE_ENDPOINTS=tcp://cache-0.presence-cache.test.svc.cluster.local:${ports[2]},tcp://cache-1.presence-cache.test.svc.cluster.local:${ports[3]} \
    "$BIN/gateway" & pids+=($!)

nodes_up() { curl -s "$gw/health/cache" | grep -q "\"nodes_up\":$1,"; }
serves() {
    local tok
    tok=$(JWT_SECRET=0123456789abcdef0123456789abcdef "$BIN/presence-token" "$1") &&
        curl -sf -X PUT "$gw/api/v2/presence/$1" -H "Authorization: Bearer $tok" -d '{"status":"busy"}' >/dev/null &&
        curl -sf "$gw/api/v2/presence/$1" | grep -q '"busy"'
}
fail() { echo "FAIL $1"; curl -s "$gw/health/cache"; echo; exit 1; }

until_ok 20 "$BIN/presence-probe" -t 500 "$gw/health/readiness" || fail "gateway not ready with cache-1 unresolvable"
nodes_up 1 || fail "expected exactly one cache-node up"
for u in u1 u2 u3 u4 u5 u6; do serves $u || fail "write+read of $u with one slot unresolvable"; done
echo "ok   ready and serving with cache-1 unresolvable (a pod the HPA has not created)"
echo "127.0.0.1 cache-1.presence-cache.test.svc.cluster.local" >>"$DIR/hosts"
until_ok 10 nodes_up 2 || fail "cache-1 not used after its name resolved"
echo "ok   cache-1 used once its name resolves, without restarting the gateway"
kill "$c1"
until_ok 10 nodes_up 1 || fail "cache-1 not marked down after it stopped"
for u in u1 u2 u3 u4 u5 u6 u7 u8; do serves $u || fail "write+read of $u after cache-1 went away"; done
echo "ok   cache-1 gone (scale-down): marked down, its keys served by cache-0"
