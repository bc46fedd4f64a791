#!/usr/bin/env bash
# ws_gateway.sh -- the WebSocket endpoint of a real node (GET /api/v2/presence/connect) against the
# bare h2o yardstick (tests/bench/h2o_bare.c, /ws-raw: the same framing, no auth, no store), in one
# run on this machine. Prints markdown table rows (run.sh's `ws` section puts them in results.md).
#
#   tests/bench/ws_gateway.sh [hold|watch|kill ...]     default: all three
#
#   hold   CONNS connections (WS_CONNS, default 18000: what RLIMIT_NOFILE lets one process hold here)
#          opened at WS_RATE/s (5000), held WS_HOLD_S s, closed at WS_RATE/s. Every connect is a session
#          made live in the store before the 101. Reported: connects/s and the handshake (101 + welcome)
#          p50/p99, gateway RSS growth per connection (fresh process; with the verified-token cache on
#          -- every connection is another user's token -- and off), disconnects/s, and the CPU time
#          (utime + stime of gateway, cache-nodes and store-node) per connection's whole life; the
#          same for h2o_bare. (PRESENCE_GRACE_MS=1000 so the session ends fall inside the run.)
#   watch  WS_WATCHERS (10000) connections each watching WS_PER (5) of WS_USERS (100) users; one writer
#          PUTs WS_WRITES (500) changes at WS_WRITE_RATE/s (50); delay from the PUT's send to each
#          watcher's `presence` frame of that version: p50/p99/max and how many never arrived. Same
#          against h2o_bare (which fans out without a store).
#   kill   WS_KILL_CONNS (10000) users connected to one gateway; SIGKILL it; a second gateway on the
#          same cache-nodes reads all of them until every one is offline: the time from the kill to
#          the last one's offline (updated_at, the store's clock) vs GATEWAY_LEASE_MS (default 15000).
#
# Processes are started here and stopped by pid; data in a temp dir. Loopback only. The machine is
# shared: quote medians of several runs, compare within one run.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/build/bin}
SECRET=bench-secret-0123456789abcdef0123456789
CONNS=${WS_CONNS:-18000}
RATE=${WS_RATE:-5000}
HOLD_S=${WS_HOLD_S:-10}
WATCHERS=${WS_WATCHERS:-10000}
USERS=${WS_USERS:-100}
PER=${WS_PER:-5}
WRITES=${WS_WRITES:-500}
WRITE_RATE=${WS_WRITE_RATE:-50}
KILL_CONNS=${WS_KILL_CONNS:-10000}
LEASE_MS=${WS_LEASE_MS:-15000}
WHAT=${*:-hold watch kill}
TMP=$(mktemp -d /tmp/wsb-XXXXXX)
PIDS=()
stop_pids() {
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do
        for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
    done
}
cleanup() { stop_pids "${PIDS[@]}"; PIDS=(); }
trap 'cleanup; rm -rf "$TMP"' EXIT
field() { sed -nE "s/.* $1=([0-9.]+).*/\1/p"; }

JWT_SECRET=$SECRET "$BIN/mktokens" $(( CONNS > WATCHERS ? CONNS : WATCHERS )) > "$TMP/tokens.txt"

# A whole node (presenced) with extra env; NODE_PORT, NODE_PID, GW_PID set.
start_node() {
    local name=$1; shift
    mkdir -p "$TMP/$name"
    env SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 "$@" DATA_DIR="$TMP/$name/data" JWT_SECRET=$SECRET LOG_LEVEL=warn \
        RATE_LIMIT_WRITES=0 "$BIN/presenced" \
        > "$TMP/$name/out" 2> "$TMP/$name/err" &
    NODE_PID=$!
    PIDS+=($NODE_PID)
    for _ in $(seq 1 400); do grep -q '^ready' "$TMP/$name/out" 2>/dev/null && break; sleep 0.05; done
    NODE_PORT=$(sed -nE 's/^ready http=127.0.0.1:([0-9]+).*/\1/p' "$TMP/$name/out")
    GW_PID=$(pgrep -P "$NODE_PID" -f bin/gateway)
}

# h2o_bare on one thread; BARE_PORT, BARE_PID set.
start_bare() {
    "$BIN/h2o_bare" -p 0 > "$TMP/bare.out" 2>&1 &
    BARE_PID=$!
    PIDS+=($BARE_PID)
    for _ in $(seq 1 100); do grep -q '^ready' "$TMP/bare.out" && break; sleep 0.05; done
    BARE_PORT=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/bare.out" | head -1)
}

# CPU time (ms, utime + stime) of the given processes together.
cpu_ms() {
    local t=0 p
    for p in "$@"; do
        t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    done
    echo $(( t * 1000 / $(getconf CLK_TCK) ))
}

hold_row() { # label load-output cpu-us-per-connection
    local r=$2
    echo "| $1 | $(echo "$r" | field welcomed) | $(echo "$r" | field connects_per_s) | $(echo "$r" | field welcome_p50_ms) | $(echo "$r" | field welcome_p99_ms) | $(echo "$r" | field rss_per_conn_b) B | $(echo "$r" | field disconnects_per_s) | $3 |"
}

if [[ " $WHAT " == *" hold "* ]]; then
    echo "| server | connections held | connects/s (target $RATE) | 101 + first frame p50 ms | p99 ms | RSS growth per connection | disconnects/s | CPU per connection (connect, hold, close, session end; all processes) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for cache in 65536 0; do
        start_node hold$cache JWT_CACHE_SIZE=$cache PRESENCE_GRACE_MS=1000
        procs=$(pgrep -P "$NODE_PID" | tr '\n' ' ')
        c0=$(cpu_ms $procs)
        r=$("$BIN/wsload" hold -p "$NODE_PORT" -n "$CONNS" -r "$RATE" -d "$HOLD_S" -c "$RATE" -T "$TMP/tokens.txt" \
            -P "$GW_PID" -w 20000 2>&1 | grep '^wsload ')
        sleep 2 # the graces (1 s) end the sessions: their writes are part of a connection's cost
        c1=$(cpu_ms $procs)
        n=$(echo "$r" | field welcomed)
        hold_row "gateway (2 threads, store + 2 cache-nodes; JWT_CACHE_SIZE=$cache)" "$r" \
            "$(awk -v a="$c0" -v b="$c1" -v n="${n:-0}" 'BEGIN {printf "%.0f us", n ? (b - a) * 1000 / n : 0}')"
        cleanup
    done
    start_bare
    c0=$(cpu_ms "$BARE_PID")
    r=$("$BIN/wsload" hold -p "$BARE_PORT" -n "$CONNS" -r "$RATE" -d "$HOLD_S" -c "$RATE" -u /ws-raw -P "$BARE_PID" \
        -w 20000 2>&1 | grep '^wsload ')
    c1=$(cpu_ms "$BARE_PID")
    n=$(echo "$r" | field welcomed)
    hold_row "h2o_bare /ws-raw (1 thread, no auth, no store)" "$r" \
        "$(awk -v a="$c0" -v b="$c1" -v n="${n:-0}" 'BEGIN {printf "%.0f us", n ? (b - a) * 1000 / n : 0}')"
    cleanup
    echo
fi

watch_row() {
    local r=$2
    echo "| $1 | $(echo "$r" | field welcomed) | $(echo "$r" | field deliveries) | $(echo "$r" | field missing) | $(echo "$r" | field lat_p50_ms) | $(echo "$r" | field lat_p99_ms) | $(echo "$r" | field lat_max_ms) |"
}

if [[ " $WHAT " == *" watch "* ]]; then
    echo "| server | watchers | deliveries | missing | p50 ms | p99 ms | max ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    start_node watch
    r=$("$BIN/wsload" watch -p "$NODE_PORT" -n "$WATCHERS" -r "$RATE" -U "$USERS" -k "$PER" -m "$WRITES" \
        -R "$WRITE_RATE" -d 0 -T "$TMP/tokens.txt" -w 20000 2>&1 | grep '^wsload ')
    watch_row "gateway (change: PUT -> store -> stream -> watch hub)" "$r"
    cleanup
    start_bare
    r=$("$BIN/wsload" watch -p "$BARE_PORT" -n "$WATCHERS" -r "$RATE" -U "$USERS" -k "$PER" -m "$WRITES" \
        -R "$WRITE_RATE" -d 0 -u /ws-raw -w 20000 2>&1 | grep '^wsload ')
    watch_row "h2o_bare /ws-raw (PUT fanned out in-process)" "$r"
    cleanup
    echo
fi

if [[ " $WHAT " == *" kill "* ]]; then
    start_node kill GATEWAY_LEASE_MS=$LEASE_MS
    port=$NODE_PORT gw=$GW_PID
    # A second gateway on the same node's cache-nodes (as a second pod would be).
    DATA_DIR="$TMP/kill/data" JWT_SECRET=$SECRET LOG_LEVEL=notice SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 \
        NODE_ID=node-2 "$BIN/gateway" > "$TMP/gw2.out" 2> "$TMP/gw2.err" &
    PIDS+=($!)
    for _ in $(seq 1 200); do grep -q 'ready http' "$TMP/gw2.err" && break; sleep 0.05; done
    port2=$(sed -nE 's/.*ready http=127.0.0.1:([0-9]+).*/\1/p' "$TMP/gw2.err" | head -1)
    "$BIN/wsload" hold -p "$port" -n "$KILL_CONNS" -r "$RATE" -d 600 -T "$TMP/tokens.txt" -w 20000 \
        > "$TMP/kill.load" 2>&1 &
    load=$!
    PIDS+=($load)
    for _ in $(seq 1 600); do
        n=$(curl -s "http://127.0.0.1:$port/metrics" | sed -nE 's/^ws_connections ([0-9]+)/\1/p')
        [ "${n:-0}" -ge "$KILL_CONNS" ] && break
        sleep 0.1
    done
    killed_us=$(date +%s%6N)
    kill -KILL "$gw"
    adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin)
    python3 - "$port2" "$KILL_CONNS" "$killed_us" "$adm" "$LEASE_MS" <<'EOF'
import json, sys, time, urllib.request, datetime
port, n, killed, adm, lease = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ids = ["u%d" % i for i in range(1, n + 1)]
def us(t):
    d = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp()) * 1000000 + d.microsecond
deadline, last = time.time() + lease / 1000 + 30, {}
while time.time() < deadline:
    for i in range(0, n, 1000):
        body = json.dumps({"user_ids": ids[i:i + 1000]}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d/api/v2/presence/batch" % port, data=body, method="POST",
                                     headers={"Authorization": "Bearer " + adm})
        for uid, r in json.load(urllib.request.urlopen(req))["data"].items():
            if r["status"] == "offline":
                last[uid] = us(r["updated_at"])
    if len(last) == n:
        break
    time.sleep(0.2)
off = sorted(v - killed for v in last.values())
print("| connections | offline | first offline after the kill | last offline after the kill | GATEWAY_LEASE_MS |")
print("|---:|---:|---:|---:|---:|")
print("| %d | %d | %.0f ms | %.0f ms | %d |" % (n, len(off), off[0] / 1000 if off else -1, off[-1] / 1000 if off else -1, lease))
EOF
    cleanup
    echo
fi
