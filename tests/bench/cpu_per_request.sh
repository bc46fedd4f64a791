#!/usr/bin/env bash
# cpu_per_request.sh -- CPU each process spends per request (ms of CPU per 1,000 requests).
#
#   tests/bench/cpu_per_request.sh            # heartbeats; GATEWAY_THREADS=1 CACHE_NODES=1, wrk -t1 -c64, 8 s
#   tests/bench/cpu_per_request.sh get        # cached GETs (Zipf over 10,000 users, as make bench)
#
# Starts a node with presenced, warms it with one wrk run, then reads utime+stime of each child
# (/proc/PID/stat) around a second run and divides by the requests wrk completed. Needs wrk and a
# built tree (make). Everything lives in a temp dir; the node is stopped by pid.
set -u
cd "$(dirname "$0")/../.."
BIN=$PWD/build/bin
SECRET=bench-secret-0123456789abcdef0123456789
dir=$(mktemp -d /tmp/cpu-XXXXXX)
trap 'kill "$L" 2>/dev/null; wait "$L" 2>/dev/null; rm -rf "$dir"' EXIT
env GATEWAY_THREADS=${GT:-1} CACHE_NODES=${CN:-1} RATE_LIMIT_WRITES=0 SERVICE_ADDR=127.0.0.1 SERVICE_PORT=0 DATA_DIR="$dir/d" \
    JWT_SECRET=$SECRET LOG_LEVEL=warn "$BIN/presenced" >"$dir/out" 2>"$dir/err" &
L=$!
for _ in $(seq 300); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
P=$(sed -nE 's/^ready http=127.0.0.1:([0-9]+).*/\1/p' "$dir/out")
JWT_SECRET=$SECRET "$BIN/mktokens" 10000 >"$dir/tok"
kids=$(cat /proc/$L/task/*/children)
snap() { for k in $kids; do echo "$(cat /proc/$k/comm) $(awk '{print $14 + $15}' /proc/$k/stat)"; done; }
what=heartbeats
run() { wrk -t1 -c64 -d"${D:-8}s" -s tests/bench/heartbeat.lua "http://127.0.0.1:$P" -- "$dir/tok"; }
if [ "${1:-}" = get ]; then
    what="cached GETs"
    adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin | tail -n 1)
    for b in $(seq 0 500 9999); do # users u1..u10000, as make bench loads them
        body=$(seq $((b + 1)) $((b + 500)) | sed 's/.*/{"user_id":"u&","status":"online","message":"benchmarking"}/' | paste -sd,)
        curl -s -o /dev/null -X POST -H "Authorization: Bearer $adm" --data "{\"presences\":[$body]}" \
            "http://127.0.0.1:$P/api/v2/presence/batch"
    done
    run() { wrk -t1 -c64 -d"${D:-8}s" -s tests/bench/zipf.lua "http://127.0.0.1:$P" -- 10000 1.0 /api/v2/presence/; }
fi
run >/dev/null # warm: creates the users, fills the caches
snap >"$dir/s0"
run | tee "$dir/w" | grep RESULT
snap >"$dir/s1"
N=$(sed -nE 's/.*RESULT requests ([0-9]+).*/\1/p' "$dir/w")
hz=$(getconf CLK_TCK)
paste "$dir/s0" "$dir/s1" | awk -v n="$N" -v hz="$hz" \
    -v what="$what" '{ ms = ($4 - $2) * 1000 / hz * 1000 / n; tot += ms; printf "%-12s %6.1f ms CPU per 1000 %s\n", $1, ms, what }
     END { printf "%-12s %6.1f ms CPU per 1000 %s\n", "total", tot, what }'
