#!/usr/bin/env bash
# configs.sh -- the same read and write mix against several node configurations, side by side.
#
#   tests/bench/configs.sh "GATEWAY_THREADS=2 CACHE_NODES=1" "GATEWAY_THREADS=1 CACHE_NODES=1" ...
#   ("" is make run's defaults; D=seconds per run (5), ROUNDS (3))
#
# How the defaults of GATEWAY_THREADS and CACHE_NODES were chosen (DESIGN.md, "Reads"): every
# configuration runs at once (idle ones cost nothing), each loaded with u1..u10000, and the rounds
# go round-robin over them -- cached GET (zipf.lua), 100-user multi-get (mget.lua), 90/10 GET/PUT
# (wrk -t1 -c64 each) -- so a noisy machine disturbs all of them alike. Prints the medians.
# Processes are stopped by pid; everything lives in a temp dir.
set -u
cd "$(dirname "$0")/../.."
BIN=$PWD/build/bin
SECRET=bench-secret-0123456789abcdef0123456789
D=${D:-5}
ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d /tmp/cfgs-XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait; rm -rf "$dir"' EXIT
[ $# -gt 0 ] || set -- "" "GATEWAY_THREADS=1 CACHE_NODES=1"
adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin | tail -n 1)
declare -a PORT
for k in $(seq 1 $#); do
    cfg=${!k}
    mkdir -p "$dir/$k"
    env SERVICE_ADDR=127.0.0.1 SERVICE_PORT=0 $cfg DATA_DIR="$dir/$k/d" JWT_SECRET=$SECRET LOG_LEVEL=warn \
        "$BIN/presenced" > "$dir/$k/out" 2> "$dir/$k/err" &
    PIDS+=($!)
    for _ in $(seq 300); do grep -q '^ready' "$dir/$k/out" 2>/dev/null && break; sleep 0.05; done
    PORT[$k]=$(sed -nE 's/^ready http=127.0.0.1:([0-9]+).*/\1/p' "$dir/$k/out")
    for b in $(seq 0 500 9999); do # users u1..u10000, as make bench loads them
        body=$(seq $((b + 1)) $((b + 500)) | sed 's/.*/{"user_id":"u&","status":"online","message":"benchmarking"}/' | paste -sd,)
        curl -s -o /dev/null -X POST -H "Authorization: Bearer $adm" --data "{\"presences\":[$body]}" \
            "http://127.0.0.1:${PORT[$k]}/api/v2/presence/batch"
    done
    wrk -t1 -c64 -d2s -s tests/bench/zipf.lua "http://127.0.0.1:${PORT[$k]}" -- 10000 0.99 /api/v2/presence/ > /dev/null 2>&1
done
res() { sed -nE 's/.*rps ([0-9]+) p50_ms ([0-9.]+) p99_ms ([0-9.]+).*/\1 \3/p'; }
for _ in $(seq 1 "$ROUNDS"); do
    for k in $(seq 1 $#); do
        u=http://127.0.0.1:${PORT[$k]}
        echo "$k get $(wrk -t1 -c64 -d"${D}s" --latency -s tests/bench/zipf.lua "$u" -- 10000 0.99 /api/v2/presence/ 2>&1 | res)" >> "$dir/res"
        echo "$k mget $(wrk -t1 -c64 -d"${D}s" --latency -s tests/bench/mget.lua "$u" -- 10000 0.99 100 2>&1 | res)" >> "$dir/res"
        echo "$k mix $(wrk -t1 -c64 -d"${D}s" --latency -s tests/bench/zipf.lua "$u" -- 10000 0.99 /api/v2/presence/ 10 /api/v2/presence/ "$adm" 2>&1 | res)" >> "$dir/res"
    done
done
med() { awk -v k="$1" -v w="$2" -v c="$3" '$1 == k && $2 == w {print $c}' "$dir/res" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf '| configuration | cached GET req/s | p99 ms | multi-get (100) req/s | 90/10 GET/PUT req/s | p99 ms |\n|---|---:|---:|---:|---:|---:|\n'
for k in $(seq 1 $#); do
    cfg=${!k}
    printf '| %s | %s | %s | %s | %s | %s |\n' "${cfg:-make run defaults}" "$(med "$k" get 3)" "$(med "$k" get 4)" \
        "$(med "$k" mget 3)" "$(med "$k" mix 3)" "$(med "$k" mix 4)"
done
