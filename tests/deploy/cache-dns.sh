#!/usr/bin/env bash
# cache-dns.sh BIN -- the Helm chart's cache tier (a Deployment scaled by an HPA behind a headless
# Service) rests on the gateway's CACHE_DNS discovery; this tries it for real.
#
# A headless Service's name resolves to the address of every ready pod. Here the name is an
# /etc/hosts entry of our own (bind-mounted in a private mount namespace: needs root and unshare;
# /etc/host.conf's "multi on" makes glibc return every line for a name), and the "pods" are
# cache-nodes on 127.0.0.2, 127.0.0.3, ... all on the same port, as pods are. It checks that
#   1. the gateway starts with one address, is ready and serves;
#   2. a second address (scale-up) is used without a restart, and every key is still served;
#   3. an address that leaves the name (scale-down) and whose process stops is dropped, the
#      remaining node serves every key, and the last acknowledged writes are still there;
#   4. with no address at all the gateway stays up and says unready, and recovers when one returns.
# Prints "ok ..." lines or the reason, exit status 0 on success.
set -u
BIN=$1
. "$(dirname "$0")/../lib.sh"
private_etc_hosts "$0" "$BIN"
ports=($(free_ports 4))
name=presence-cache.test.svc.cluster.local
cport=${ports[2]}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
export DATA_DIR=$DIR LOG_LEVEL=error SYNC_MODE=none
export STORE_CMD_ENDPOINT=tcp://127.0.0.1:${ports[0]} STORE_PUB_ENDPOINT=tcp://127.0.0.1:${ports[1]}
"$BIN/store-node" & pids+=($!)
CACHE_ENDPOINT=tcp://127.0.0.2:$cport CACHE_ID=cache-a "$BIN/cache-node" & pids+=($!)
CACHE_ENDPOINT=tcp://127.0.0.3:$cport CACHE_ID=cache-b "$BIN/cache-node" & cb=$!
pids+=($cb)
hosts() { # hosts ADDR...: the name resolves to exactly these addresses
    { grep -v " $name\$" "$DIR/hosts"; for a in "$@"; do echo "$a $name"; done; } >"$DIR/hosts.new"
    cat "$DIR/hosts.new" >"$DIR/hosts" # same inode: the bind mount sees it
}
hosts 127.0.0.2
gw=http://127.0.0.1:${ports[3]}
SECRET=0123456789abcdef0123456789abcdef
JWT_SECRET=$SECRET SERVICE_ADDR=127.0.0.1 SERVICE_PORT=${ports[3]} GATEWAY_THREADS=2 \
    CACHE_DNS=$name:$cport CACHE_DNS_INTERVAL_MS=200 "$BIN/gateway" & pids+=($!)

# listed N: /health/cache lists N nodes, all reachable
listed() {
    local h
    h=$(curl -s "$gw/health/cache") &&
        [ "$(grep -o '"endpoint"' <<<"$h" | wc -l)" = "$1" ] && grep -q "\"nodes_up\":$1," <<<"$h"
}
declare -A want
write() { # write USER STATUS: PUT, remembered as the last acknowledged status
    local tok
    tok=$(JWT_SECRET=$SECRET "$BIN/presence-token" "$1") &&
        curl -sf -X PUT "$gw/api/v2/presence/$1" -H "Authorization: Bearer $tok" -d "{\"status\":\"$2\"}" >/dev/null &&
        want[$1]=$2
}
reads() { curl -sf "$gw/api/v2/presence/$1" | grep -q "\"status\":\"${want[$1]}\""; }
fail() { echo "FAIL $1"; curl -s "$gw/health/cache"; echo; exit 1; }
users="u1 u2 u3 u4 u5 u6 u7 u8 u9 u10"

until_ok 20 "$BIN/presence-probe" -t 500 "$gw/health/readiness" || fail "gateway not ready with one address"
listed 1 || fail "expected exactly one cache-node"
for u in $users; do write "$u" busy && reads "$u" || fail "write+read of $u with one cache-node"; done
echo "ok   ready and serving with one address behind $name"

hosts 127.0.0.2 127.0.0.3
until_ok 10 listed 2 || fail "the second address was not used (scale-up)"
for u in $users; do reads "$u" || fail "$u not served after scale-up"; done
for u in $users; do write "$u" away && reads "$u" || fail "write+read of $u after scale-up"; done
echo "ok   scale-up: the new address used without a restart; every key served, old and new writes"

hosts 127.0.0.2
kill "$cb"
until_ok 10 listed 1 || fail "the address that left was not dropped (scale-down)"
for u in $users; do reads "$u" || fail "$u lost its last acknowledged write after scale-down"; done
for u in $users; do write "$u" online && reads "$u" || fail "write+read of $u after scale-down"; done
echo "ok   scale-down: the address that left dropped; last acknowledged writes all served"

hosts
until_ok 10 listed 0 || fail "no address: nodes still listed"
code=$(curl -s -o /dev/null -w '%{http_code}' "$gw/health/readiness")
[ "$code" = 503 ] || fail "no address: readiness said $code, not 503"
curl -sf "$gw/health/liveness" >/dev/null || fail "no address: the gateway is not alive"
hosts 127.0.0.2
until_ok 10 "$BIN/presence-probe" -t 500 "$gw/health/readiness" || fail "not ready again after the address returned"
for u in $users; do until_ok 5 reads "$u" || fail "$u not served after the address returned"; done
echo "ok   no address: alive and unready; ready and serving again when it returns"
