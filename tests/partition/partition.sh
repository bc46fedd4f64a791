#!/usr/bin/env bash
# partition.sh BIN -- a real network partition between a center and a leaf region.
#
# Two network namespaces of our own joined by a veth pair (10.213.7.1 center, 10.213.7.2 leaf);
# a center (`presenced`, NODE_TYPE=center, CENTER_PORT) in one, a leaf (NODE_TYPE=leaf) in the
# other, talking over the veth. Then the leaf's end of the link is taken down -- packets vanish,
# no connection is reset, as in a real partition -- and brought back. Checks:
#   1. across the link: a write at the leaf is acknowledged and served at the center, and a write
#      at the center reaches the leaf within 1 s;
#   2. partitioned: the leaf keeps serving cached reads, marked X-Presence-Stale: true once it
#      knows; leaf writes and misses answer 503/504 within REQUEST_TIMEOUT_MS (never a hang);
#      the center goes on taking writes;
#   3. healed: the leaf catches up on its own (the write made at the center during the partition is
#      served, not stale), leaf writes work again, and nothing older than the center's record is
#      left at the leaf.
# Needs root and `ip netns` (iproute2); otherwise it says why and counts itself skipped.
# Ends with "test-partition: N passed, N failed, N skipped".
set -u
BIN=$1
. "$(dirname "$0")/../lib.sh"
pass=0
fail=0
skipped=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
summary() { echo "test-partition: $pass passed, $fail failed, $skipped skipped"; }

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
    echo "skip test-partition (needs root and ip from iproute2)"
    skipped=1
    summary
    exit 0
fi
tag=$$
nsc=pc$tag nsl=pl$tag vc=vc$tag vl=vl$tag
if ! ip netns add "$nsc" 2>/dev/null; then
    echo "skip test-partition (cannot create a network namespace here)"
    skipped=1
    summary
    exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/partition.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    ip netns del "$nsc" 2>/dev/null
    ip netns del "$nsl" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$nsl" || { bad "ip netns add"; summary; exit 1; }
ip link add "$vc" type veth peer name "$vl" || { bad "veth pair"; summary; exit 1; }
ip link set "$vc" netns "$nsc" && ip link set "$vl" netns "$nsl" &&
    ip -n "$nsc" addr add 10.213.7.1/30 dev "$vc" && ip -n "$nsl" addr add 10.213.7.2/30 dev "$vl" &&
    ip -n "$nsc" link set lo up && ip -n "$nsl" link set lo up &&
    ip -n "$nsc" link set "$vc" up && ip -n "$nsl" link set "$vl" up || { bad "namespace network"; summary; exit 1; }

SECRET=0123456789abcdef0123456789abcdef-partition
TIMEOUT_MS=1500
# Each namespace is new and empty, so fixed ports are free by construction.
common=(JWT_SECRET=$SECRET LOG_LEVEL=error SERVICE_PORT=8080 REQUEST_TIMEOUT_MS=$TIMEOUT_MS RATE_LIMIT_WRITES=0
        SYNC_MODE=none PATH=$BIN:$PATH)
mkdir -p "$dir/c" "$dir/l"
ip netns exec "$nsc" env "${common[@]}" NODE_TYPE=center NODE_ID=center CENTER_PORT=7422 CENTER_INSECURE=true CENTER_BIND_ADDR=0.0.0.0 DATA_DIR="$dir/c/data" \
    "$BIN/presenced" >"$dir/c/out" 2>"$dir/c/err" &
pids+=($!)
# The leaf's gateway reads through to its cache-node (NEAR_CACHE_BYTES=0): this test watches what the
# cache-node holds and serves across the cut (its hit counter included). The near cache bypasses
# itself while the stream is not live, which tests/integ/integ_near.c covers.
ip netns exec "$nsl" env "${common[@]}" NODE_TYPE=leaf NODE_ID=leaf CENTER_ENDPOINT=tcp://10.213.7.1:7422 CENTER_INSECURE=true \
    NEAR_CACHE_BYTES=0 DATA_DIR="$dir/l/data" "$BIN/presenced" >"$dir/l/out" 2>"$dir/l/err" &
pids+=($!)

in_c() { ip netns exec "$nsc" "$@"; }
in_l() { ip netns exec "$nsl" "$@"; }
ready() { "$1" curl -sf -m 2 http://127.0.0.1:8080/health/readiness; }
tok() { JWT_SECRET=$SECRET "$BIN/presence-token" "$1"; }
# put NS USER MESSAGE: prints "CODE SECONDS"
put() {
    "$1" curl -s -o /dev/null -m 10 -w '%{http_code} %{time_total}' -X PUT "http://127.0.0.1:8080/api/v2/presence/$2" \
        -H "Authorization: Bearer $(tok "$2")" -d "{\"status\":\"online\",\"message\":\"$3\"}"
}
# get NS USER: prints "CODE STALE MESSAGE SECONDS"
get() {
    local out
    out=$("$1" curl -s -m 10 -D "$dir/h" -w '\n%{http_code} %{time_total}' "http://127.0.0.1:8080/api/v2/presence/$2")
    local msg stale=no
    msg=$(head -n 1 <<<"$out" | sed -nE 's/.*"message":"([^"]*)".*/\1/p')
    grep -qi '^x-presence-stale: *true' "$dir/h" && stale=stale
    set -- $(tail -n 1 <<<"$out")
    echo "$1 $stale ${msg:--} $2"
}
serves() { # serves NS USER MESSAGE [fresh]
    local r
    r=($(get "$1" "$2"))
    [ "${r[0]}" = 200 ] && [ "${r[2]}" = "$3" ] && { [ "${4:-}" != fresh ] || [ "${r[1]}" = no ]; }
}
stale_served() { local r; r=($(get "$1" "$2")); [ "${r[0]}" = 200 ] && [ "${r[1]}" = stale ] && [ "${r[2]}" = "$3" ]; }
quick() { awk -v t="$1" -v b="$2" 'BEGIN { exit !(t * 1000 <= b) }'; }

if ! until_ok 30 ready in_c || ! until_ok 30 ready in_l; then
    bad "center and leaf ready in their namespaces"
    cat "$dir/c/err" "$dir/l/err" | tail -20
    summary
    exit 1
fi
ok "center (10.213.7.1) and leaf (10.213.7.2) ready in their own network namespaces"

# ---- 1. across the link -----------------------------------------------------------------------
r=($(put in_l ann before))
if [ "${r[0]}" = 200 ] && until_ok 5 serves in_c ann before && serves in_l ann before; then
    ok "write at the leaf acknowledged (center commit), served at the leaf and the center"
else
    bad "write at the leaf: ${r[*]}"
fi
r=($(put in_c bob c1))
start=$SECONDS
if [ "${r[0]}" = 200 ] && until_ok 1 serves in_l bob c1; then
    ok "write at the center served at the leaf within 1 s"
else
    bad "write at the center not at the leaf within 1 s: ${r[*]} $(get in_l bob)"
fi

# The leaf must hold ann in its cache for the partition to show a cached read: a read counts as a
# cache hit only once the leaf's caches are live and past their start-up read-through window.
hits() { in_l curl -s -H "Authorization: Bearer $(tok probe)" http://127.0.0.1:8080/api/v2/cache/metrics |
         sed -nE 's/^\{"hits":([0-9]+),.*/\1/p'; }
cached_hit() {
    local h0 h1
    h0=$(hits) && serves in_l ann before && h1=$(hits) && [ -n "$h0" ] && [ -n "$h1" ] && [ "$h1" -gt "$h0" ]
}
until_ok 15 cached_hit || bad "ann never became a cache hit at the leaf"

# ---- 2. partitioned -----------------------------------------------------------------------------
ip -n "$nsl" link set "$vl" down
if until_ok 15 stale_served in_l ann before; then
    ok "partitioned: the leaf serves its cached record, marked X-Presence-Stale: true"
else
    bad "partitioned: cached read at the leaf: $(get in_l ann)"
fi
r=($(put in_l ann during-leaf))
if { [ "${r[0]}" = 503 ] || [ "${r[0]}" = 504 ]; } && quick "${r[1]}" $((TIMEOUT_MS + 500)); then
    ok "partitioned: a leaf write answers ${r[0]} in ${r[1]} s (REQUEST_TIMEOUT_MS $TIMEOUT_MS)"
else
    bad "partitioned: a leaf write answered ${r[*]}"
fi
r=($(get in_l nobody))
if { [ "${r[0]}" = 503 ] || [ "${r[0]}" = 504 ]; } && quick "${r[3]}" $((TIMEOUT_MS + 500)); then
    ok "partitioned: a leaf miss answers ${r[0]} in ${r[3]} s"
else
    bad "partitioned: a leaf miss answered ${r[*]}"
fi
r=($(put in_c ann during))
r2=($(put in_c bob c2))
if [ "${r[0]}" = 200 ] && [ "${r2[0]}" = 200 ]; then
    ok "partitioned: the center goes on taking writes"
else
    bad "partitioned: center writes answered ${r[*]} / ${r2[*]}"
fi

# ---- 3. healed --------------------------------------------------------------------------------
ip -n "$nsl" link set "$vl" up
if until_ok 20 serves in_l ann during fresh && until_ok 5 serves in_l bob c2 fresh; then
    ok "healed: the leaf caught up on its own (writes made at the center meanwhile served, not stale)"
else
    bad "healed: the leaf serves ann=$(get in_l ann) bob=$(get in_l bob)"
fi
if until_ok 10 eval '[ "$(put in_l cid after | cut -d" " -f1)" = 200 ]' && until_ok 5 serves in_c cid after; then
    ok "healed: leaf writes work again and reach the center"
else
    bad "healed: leaf write: $(put in_l cid after)"
fi
# The leaf write that timed out during the partition sat in the link's TCP buffer; when the link
# came back it reached the center after the center's own (acknowledged) write. It carries its
# sender's deadline, so the center refuses it instead of letting it undo that write.
c=($(get in_c ann)) l=($(get in_l ann))
expired=$(in_c curl -s http://127.0.0.1:8080/metrics | sed -nE 's/^store_expired_writes_total(\{[^}]*\})? ([0-9]+).*/\2/p' | head -n 1)
if [ "${c[2]}" = during ] && [ "${l[2]}" = during ] && [ "${l[1]}" = no ]; then
    ok "healed: the leaf and the center agree (ann: during); the leaf write that timed out did not undo the center's acknowledged one (center refused ${expired:-?} expired writes)"
else
    bad "healed: center ann=${c[*]} leaf ann=${l[*]} (the acknowledged center write was 'during'; expired writes refused: ${expired:-?})"
fi
summary
[ $fail = 0 ]
