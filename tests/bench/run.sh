#!/usr/bin/env bash
# run.sh -- `make bench`: every benchmark of BENCHMARKS.md, on this machine, in one run.
#
#   tests/bench/run.sh [section...]      sections: reads store cache cachemem gateway heartbeat sse propagation
#                                        webhooks ws hostile replication sessions
#
# `reads` runs the stack as `make run` starts it beside the bare-h2o yardstick (tests/bench/h2o_bare.c)
# and, when BENCH_BASE names a git ref (default main; "none" skips), the stack built from that ref
# (built once into build/bench/base-<sha>): cached GET (HTTP/1.1 and HTTP/2) and 100-user multi-gets,
# rounds interleaved between the targets so the machine's noise hits all of them alike.
#
# Results go to stdout and to build/bench/results.md (markdown tables, with the commands).
# Processes are started here and stopped by pid; data lives in a temp dir that is removed.
# This machine is shared and noisy: compare ratios within one run and quote medians
# (BENCH_ROUNDS, default 3, for the wrk comparisons).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/build/bin
OUT=$ROOT/build/bench
mkdir -p "$OUT"
RES=$OUT/results.md
SECONDS_PER=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
SECRET=bench-secret-0123456789abcdef0123456789
TMP=$(mktemp -d /tmp/pb-XXXXXX)
PIDS=()   # the nodes of the current measurement
AUX=()    # Redis and webdis, kept across measurements
SECTIONS=${*:-reads store cache cachemem gateway heartbeat sse propagation webhooks ws hostile replication sessions}

stop_pids() {
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
    done
}
cleanup() { stop_pids "${PIDS[@]}"; PIDS=(); }
trap 'cleanup; stop_pids "${AUX[@]}"; rm -rf "$TMP"' EXIT

say() { echo "$@" | tee -a "$RES"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'; }
field() { sed -nE "s/.*$1 ([0-9.]+).*/\1/p"; }

# Start a launcher (a whole node) in the background and wait for its ready line; its port is left
# in NODE_PORT and its pid in NODE_PID (not echoed: a $(...) subshell would lose the pid list).
start_node() { # name env...
    local name=$1; shift
    mkdir -p "$TMP/$name"
    env SERVICE_ADDR=127.0.0.1 SERVICE_PORT=0 "$@" DATA_DIR="$TMP/$name/data" JWT_SECRET=$SECRET LOG_LEVEL=warn \
        "${NODE_BIN:-$BIN}/presenced" \
        > "$TMP/$name/out" 2> "$TMP/$name/err" &
    NODE_PID=$!
    PIDS+=($NODE_PID)
    for _ in $(seq 1 300); do grep -q '^ready' "$TMP/$name/out" 2>/dev/null && break; sleep 0.05; done
    NODE_PORT=$(sed -nE 's/^ready http=127.0.0.1:([0-9]+).*/\1/p' "$TMP/$name/out")
}

: > "$RES"
say "# Benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MiB"}' /proc/meminfo)"
say ""

# ---- store-node: acknowledged writes straight to the ROUTER -----------------------------------
if [[ " $SECTIONS " == *" store "* ]]; then
    say "## Store-node: acknowledged writes/s (storebench, straight to the store-node)"
    say ""
    say "| SYNC_MODE | writers in flight | writes/s | p50 ms | p99 ms |"
    say "|---|---:|---:|---:|---:|"
    for mode in full none; do
        for w in 1 64 1024; do
            d=$TMP/store-$mode-$w; mkdir -p "$d"
            DATA_DIR=$d SYNC_MODE=$mode LOG_LEVEL=warn "$BIN/store-node" 2> "$d/err" &
            sp=$!; PIDS+=($sp)
            for _ in $(seq 1 100); do [ -S "$d/run/store-cmd.sock" ] && break; sleep 0.05; done
            r=$("$BIN/storebench" "ipc://$d/run/store-cmd.sock" "$w" "$SECONDS_PER" 100000)
            say "| $mode | $w | $(echo "$r" | field rate) | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) |"
            cleanup
        done
    done
    say ""
    say "Command: \`build/bin/storebench ipc://DATA_DIR/run/store-cmd.sock W $SECONDS_PER 100000\` against \`SYNC_MODE=M build/bin/store-node\` (fresh data dir, 100,000 users, single-record PUTs)."
    say ""
fi

# ---- cache hit ratios -------------------------------------------------------------------------
if [[ " $SECTIONS " == *" cache "* ]]; then
    say "## Cache hit ratios (cachesim over shared/traces)"
    say ""
    if [ -x tests/bench/cache_goals.sh ]; then
        tests/bench/cache_goals.sh "$BIN/../cachesim" | tee -a "$RES"
    else
        say "(tests/bench/cache_goals.sh missing)"
    fi
    say ""
fi

# ---- cache-node memory ------------------------------------------------------------------------
if [[ " $SECTIONS " == *" cachemem "* ]]; then
    say "## Cache-node memory with 1,000,000 cached presence records"
    say ""
    d=$TMP/cm; mkdir -p "$d/run"
    DATA_DIR=$d LOG_LEVEL=warn "$BIN/store-node" 2> /dev/null & PIDS+=($!)
    DATA_DIR=$d CACHE_MAX_COST=1073741824 LOG_LEVEL=warn "$BIN/cache-node" 2> /dev/null & cp=$!; PIDS+=($cp)
    for _ in $(seq 1 100); do [ -S "$d/run/cache-1.sock" ] && break; sleep 0.05; done
    r=$("$BIN/fillcache" "ipc://$d/run/cache-1.sock" "$cp" 1000000)
    say "| records | RSS before | RSS after | bytes per record (RSS growth / items) |"
    say "|---:|---:|---:|---:|"
    say "| $(echo "$r" | field items) | $(echo "$r" | field rss_before_kb) kB | $(echo "$r" | field rss_after_kb) kB | $(echo "$r" | field bytes_per_record) |"
    say ""
    say "Command: \`build/bin/fillcache ipc://DATA_DIR/run/cache-1.sock PID 1000000\` (PUTs through the cache-node of records with a 24-byte message, cached as the store acknowledges them; RSS from /proc/PID/status)."
    say ""
    cleanup
fi

# ---- gateway vs Redis + webdis ----------------------------------------------------------------
load_users() { # port token
    local port=$1 tok=$2 i b body
    for b in $(seq 0 499 9999); do
        body='{"presences":['
        for i in $(seq $((b + 1)) $((b + 500))); do
            [ "$i" -gt 10000 ] && break
            body+="{\"user_id\":\"u$i\",\"status\":\"online\",\"message\":\"benchmarking\",\"ttl\":3600},"
        done
        body="${body%,}]}"
        curl -s -o /dev/null -X POST -H "Authorization: Bearer $tok" --data "$body" "http://127.0.0.1:$port/api/v2/presence/batch"
    done
}

wrk_run() { # url script args...
    local url=$1 script=$2; shift 2
    wrk -t2 -c64 -d"${SECONDS_PER}s" --timeout 2s --latency -s "$script" "$url" -- "$@" 2>&1 | grep RESULT
}

# ---- reads against the bare-h2o ceiling ---------------------------------------------------------
# The previous build as a second yardstick: BENCH_BASE=<git ref> (default main; none: skip), built
# once into build/bench/base-<sha>. Sets BASE_BIN and BASE_LABEL, or returns 1.
base_build() {
    local ref=${BENCH_BASE:-main} sha dir
    [ "$ref" = none ] && return 1
    sha=$(git rev-parse --short=12 "$ref^{commit}" 2>/dev/null) || return 1
    [ "$sha" = "$(git rev-parse --short=12 HEAD)" ] && return 1 # the same build: nothing to compare
    dir=$OUT/base-$sha
    if [ ! -x "$dir/build/bin/gateway" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        echo "building $ref ($sha) into $dir ..." >&2
        git archive "$sha" | tar -x -C "$dir" &&
            make -C "$dir" -j2 build/bin/presenced build/bin/gateway build/bin/cache-node build/bin/store-node \
                build/bin/presence-token > "$dir.log" 2>&1 || { echo "base build failed: $dir.log" >&2; return 1; }
    fi
    BASE_BIN=$dir/build/bin
    BASE_LABEL="$ref ($sha)"
}

# Zipf URIs for h2load (the same skew as zipf.lua): uri_list BASE_URL COUNT
uri_list() {
    awk -v n=10000 -v s=0.99 -v count="$2" -v base="$1" 'BEGIN { srand(7); sum = 0
        for (i = 1; i <= n; i++) { sum += 1 / (i ^ s); cdf[i] = sum }
        for (i = 1; i <= n; i++) { cdf[i] /= sum; perm[i] = i }
        for (i = n; i >= 2; i--) { j = int(rand() * i) + 1; t = perm[i]; perm[i] = perm[j]; perm[j] = t }
        for (r = 0; r < count; r++) { u = rand(); lo = 1; hi = n
            while (lo < hi) { mid = int((lo + hi) / 2); if (cdf[mid] < u) lo = mid + 1; else hi = mid }
            print base "/api/v2/presence/u" perm[lo] } }'
}

# One measurement: prints "rps p50_ms p99_ms" (h2load: "rps mean_ms -").
read_once() { # kind url [args]
    local kind=$1 url=$2 r
    case $kind in
    get) r=$(wrk -t1 -c64 -d"${SECONDS_PER}s" --timeout 2s --latency -s tests/bench/zipf.lua "$url" -- 10000 0.99 /api/v2/presence/ 2>&1 | grep RESULT) ;;
    bare) r=$(wrk -t1 -c64 -d"${SECONDS_PER}s" --timeout 2s --latency -s tests/bench/fixed.lua "$url" -- /json 2>&1 | grep RESULT) ;;
    mget) r=$(wrk -t1 -c64 -d"${SECONDS_PER}s" --timeout 5s --latency -s tests/bench/mget.lua "$url" -- 10000 0.99 100 2>&1 | grep RESULT) ;;
    h2)
        r=$(h2load -t1 -c64 -m8 -D "$SECONDS_PER" -i "$3" 2>&1)
        echo "$r" | awk '/^finished in/ {rps = $4} /^time for request:/ {m = $4; if (m ~ /us$/) {sub(/us$/, "", m); m /= 1000} else if (m ~ /ms$/) sub(/ms$/, "", m); else if (m ~ /s$/) {sub(/s$/, "", m); m *= 1000}} END {printf "%.0f %s -\n", rps, m}'
        return ;;
    esac
    echo "$(echo "$r" | field rps) $(echo "$r" | field p50_ms) $(echo "$r" | field p99_ms)"
}

if [[ " $SECTIONS " == *" reads "* ]]; then
    say "## Reads against the bare-h2o ceiling (make run's defaults; wrk -t1 -c64, Zipf 0.99 over 10,000 cached users)"
    say ""
    # The ceiling: h2o alone, on one event loop (the issue's yardstick) and on as many as the
    # gateway runs by default (one per core), so neither side gets more of the scheduler.
    ncpu=$(nproc)
    bport=$((30000 + RANDOM % 10000)); b2port=$((40000 + RANDOM % 10000))
    "$BIN/h2o_bare" -p "$bport" -t 1 > "$TMP/bare.out" 2>&1 &
    PIDS+=($!)
    "$BIN/h2o_bare" -p "$b2port" -t "$ncpu" > "$TMP/bare2.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$bport/json" && curl -s -o /dev/null "http://127.0.0.1:$b2port/json" && break; sleep 0.05; done
    adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin)
    start_node reads; nport=$NODE_PORT
    load_users "$nport" "$adm"
    targets="bare bareN new"
    if base_build; then
        NODE_BIN=$BASE_BIN start_node reads-base; oport=$NODE_PORT
        load_users "$oport" "$adm"
        targets="bare bareN new base"
    fi
    declare -A URL=([bare]="http://127.0.0.1:$bport" [bareN]="http://127.0.0.1:$b2port" [new]="http://127.0.0.1:$nport"
                    [base]="http://127.0.0.1:${oport:-0}")
    declare -A RR=()
    for t in $targets; do
        if [ "${t#bare}" != "$t" ]; then
            echo "${URL[$t]}/json" > "$TMP/uris-$t"
            wrk -t1 -c64 -d2s -s tests/bench/fixed.lua "${URL[$t]}" -- /json > /dev/null 2>&1 # warm up
        else
            uri_list "${URL[$t]}" 20000 > "$TMP/uris-$t"
            wrk -t1 -c64 -d2s -s tests/bench/zipf.lua "${URL[$t]}" -- 10000 0.99 /api/v2/presence/ > /dev/null 2>&1
        fi
    done
    for round in $(seq 1 "$ROUNDS"); do
        for t in $targets; do
            [ "${t#bare}" != "$t" ] && kind=bare || kind=get
            RR[$t.get]+="$(read_once $kind "${URL[$t]}")"$'\n'
            RR[$t.h2]+="$(read_once h2 "${URL[$t]}" "$TMP/uris-$t")"$'\n'
            [ $kind = get ] && RR[$t.mget]+="$(read_once mget "${URL[$t]}")"$'\n'
        done
    done
    col() { printf '%s' "${RR[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
    bare_get=$(col bare.get 1); bare_h2=$(col bare.h2 1); bareN_get=$(col bareN.get 1); bareN_h2=$(col bareN.h2 1)
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
    say "| target | workload | req/s (median of $ROUNDS) | records/s | p50 ms | p99 ms | vs bare h2o, 1 loop | vs bare h2o, $ncpu loops |"
    say "|---|---|---:|---:|---:|---:|---:|---:|"
    for t in $targets; do
        case $t in
        bare) label="bare h2o (h2o_bare -t 1, fixed body)" ;;
        bareN) label="bare h2o (h2o_bare -t $ncpu, fixed body)" ;;
        new) label="presence, this build (make run defaults)" ;;
        base) label="presence, $BASE_LABEL (make run defaults)" ;;
        esac
        g=$(col $t.get 1)
        say "| $label | GET, HTTP/1.1 | $g | $g | $(col $t.get 2) | $(col $t.get 3) | $(ratio "$g" "$bare_get") | $(ratio "$g" "$bareN_get") |"
        h=$(col $t.h2 1)
        say "| $label | GET, HTTP/2 (h2load -m8) | $h | $h | mean $(col $t.h2 2) | - | $(ratio "$h" "$bare_h2") | $(ratio "$h" "$bareN_h2") |"
        if [ "${t#bare}" = "$t" ]; then
            m=$(col $t.mget 1)
            say "| $label | multi-get, 100 users | $m | $(awk -v m="$m" 'BEGIN {printf "%.0f", m * 100}') | $(col $t.mget 2) | $(col $t.mget 3) | - | - |"
        fi
    done
    say ""
    say "Commands: bare \`wrk -t1 -c64 -d${SECONDS_PER}s --latency -s tests/bench/fixed.lua http://127.0.0.1:PORT -- /json\` (h2o_bare -t 1, and -t $ncpu); presence \`wrk -t1 -c64 -d${SECONDS_PER}s --latency -s tests/bench/zipf.lua URL -- 10000 0.99 /api/v2/presence/\` after a batch load of u1..u10000; multi-get \`-s tests/bench/mget.lua URL -- 10000 0.99 100\` (GET /api/v2/presence?users= 100 distinct Zipf users); HTTP/2 \`h2load -t1 -c64 -m8 -D ${SECONDS_PER} -i URIS\` (20,000 Zipf URIs; prior knowledge). $ROUNDS rounds, targets interleaved within each round. Run by \`tests/bench/run.sh reads\` (BENCH_BASE=ref|none)."
    say ""
    cleanup
fi

if [[ " $SECTIONS " == *" gateway "* ]]; then
    say "## Gateway: cached GET and a 90/10 GET/PUT mix, against Redis + webdis (wrk -t2 -c64, Zipf s=1.0 over 10,000 users)"
    say ""
    # Redis + webdis holding the same JSON under the same keys.
    mkdir -p "$TMP/redis"
    redis-server --port 16399 --bind 127.0.0.1 --save "" --appendonly no > "$TMP/redis/log" 2>&1 & AUX+=($!)
    printf '{"redis_host":"127.0.0.1","redis_port":16399,"http_host":"127.0.0.1","http_port":17399,"threads":2,"daemonize":false,"database":0,"verbosity":0,"logfile":"%s/redis/webdis.log"}' "$TMP" > "$TMP/redis/webdis.json"
    for _ in $(seq 1 100); do redis-cli -p 16399 ping > /dev/null 2>&1 && break; sleep 0.05; done
    webdis "$TMP/redis/webdis.json" > /dev/null 2>&1 & AUX+=($!)
    ts=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
    for i in $(seq 1 10000); do
        printf 'SET presence:u%d {"success":true,"data":{"u%d":{"user_id":"u%d","status":"online","message":"benchmarking","last_seen":"%s","updated_at":"%s","expires_at":"%s","node_id":"node-1","ttl":3600,"version":%d}}}\n' "$i" "$i" "$i" "$ts" "$ts" "$ts" "$i"
    done | redis-cli -p 16399 > /dev/null
    for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:17399/GET/presence:u1 && break; sleep 0.05; done

    say "| system | workload | req/s (median of $ROUNDS) | p50 ms | p99 ms |"
    say "|---|---|---:|---:|---:|"
    measure() { # label url workload-args...
        local label=$1 url=$2; shift 2
        local rps=() p50=() p99=() r
        wrk -t2 -c64 -d2s -s tests/bench/zipf.lua "$url" -- "$@" > /dev/null 2>&1 # warm up
        for _ in $(seq 1 "$ROUNDS"); do
            r=$(wrk_run "$url" tests/bench/zipf.lua "$@")
            rps+=("$(echo "$r" | field rps)"); p50+=("$(echo "$r" | field p50_ms)"); p99+=("$(echo "$r" | field p99_ms)")
        done
        say "| $label | $(printf '%s\n' "${rps[@]}" | median) | $(printf '%s\n' "${p50[@]}" | median) | $(printf '%s\n' "${p99[@]}" | median) |"
    }
    # make run's defaults (sized to this machine), and the old fixed configuration without the near cache
    for cfg in "" "GATEWAY_THREADS=2 CACHE_NODES=2 NEAR_CACHE_BYTES=0"; do
        rm -rf "$TMP/gw"
        start_node gw $cfg RATE_LIMIT_WRITES=0 RATE_LIMIT_READS=0; port=$NODE_PORT
        adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin)
        load_users "$port" "$adm"
        measure "presence (${cfg:-make run defaults}) | cached GET" "http://127.0.0.1:$port" 10000 1.0 /api/v2/presence/
        measure "presence (${cfg:-make run defaults}) | 90/10 GET/PUT" "http://127.0.0.1:$port" 10000 1.0 /api/v2/presence/ 10 /api/v2/presence/ "$adm"
        cleanup
    done
    measure "Redis 7 + webdis (2 threads) | GET" http://127.0.0.1:17399 10000 1.0 /GET/presence:
    measure "Redis 7 + webdis (2 threads) | 90/10 GET/SET" http://127.0.0.1:17399 10000 1.0 /GET/presence: 10 /SET/presence: "" webdis
    stop_pids "${AUX[@]}"; AUX=()
    say ""
    say "Commands: \`wrk -t2 -c64 -d${SECONDS_PER}s --latency -s tests/bench/zipf.lua http://127.0.0.1:PORT -- 10000 1.0 /api/v2/presence/ [10 /api/v2/presence/ ADMIN_TOKEN]\`; webdis: the same script with \`/GET/presence:\` (and \`10 /SET/presence: '' webdis\`). Writes are PUTs with a JSON body (presence) and SET commands (webdis). Run by \`tests/bench/run.sh gateway\`."
    say ""
fi

# ---- heartbeats --------------------------------------------------------------------------------
if [[ " $SECTIONS " == *" heartbeat "* ]]; then
    say "## Heartbeats one node absorbs"
    say ""
    say "| client | node | heartbeats/s | requests/s | p50 ms | p99 ms |"
    say "|---|---|---:|---:|---:|---:|"
    JWT_SECRET=$SECRET "$BIN/mktokens" 20000 > "$TMP/tokens.txt"
    for cfg in "" "GATEWAY_THREADS=2 CACHE_NODES=2 NEAR_CACHE_BYTES=0"; do
        start_node hb $cfg; port=$NODE_PORT
        wrk -t2 -c64 -d2s -s tests/bench/heartbeat.lua "http://127.0.0.1:$port" -- "$TMP/tokens.txt" > /dev/null 2>&1
        r=$(wrk_run "http://127.0.0.1:$port" tests/bench/heartbeat.lua "$TMP/tokens.txt")
        say "| one user per request (20,000 users, own tokens) | ${cfg:-make run defaults} | $(echo "$r" | field rps) | $(echo "$r" | field rps) | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) |"
        cleanup
        rm -rf "$TMP/hb"
        start_node hb $cfg; port=$NODE_PORT
        adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" ws-tier presence:admin)
        r=$(wrk -t2 -c8 -d"${SECONDS_PER}s" --timeout 5s --latency -s tests/bench/bulkbeat.lua "http://127.0.0.1:$port" -- "$adm" 500 20000 2>&1 | grep RESULT)
        rq=$(echo "$r" | field rps)
        say "| bulk: 500 users per request (20,000 users) | ${cfg:-make run defaults} | $(awk -v r="$rq" 'BEGIN {printf "%.0f", r * 500}') | $rq | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) |"
        cleanup
        rm -rf "$TMP/hb"
    done
    say ""
    say "Commands: \`wrk -t2 -c64 -d${SECONDS_PER}s --latency -s tests/bench/heartbeat.lua URL -- TOKENS\` (POST /api/v2/presence/{id}/heartbeat, tokens from build/bin/mktokens 20000); bulk: \`wrk -t2 -c8 -s tests/bench/bulkbeat.lua URL -- ADMIN_TOKEN 500 20000\` (POST /api/v2/presence/batch {\"heartbeats\":[...]})."
    say ""
fi

# ---- SSE watchers -------------------------------------------------------------------------------
if [[ " $SECTIONS " == *" sse "* ]]; then
    say "## SSE: 10,000 concurrent watch streams on one gateway"
    say ""
    # One client address holds all 10,000 streams: no per-address bound here.
    start_node sse SSE_MAX_PER_IP=0 MAX_CONNECTIONS=12000; port=$NODE_PORT
    gwpid=$(pgrep -P "$NODE_PID" -f bin/gateway)
    rss0=$(awk '/VmRSS/ {print $2}' /proc/"$gwpid"/status)
    SSEBENCH_HOLD=1 "$BIN/ssebench" "$port" 10000 5 5 10000 > "$TMP/sse.out" 2>&1 & sb=$!
    for _ in $(seq 1 600); do grep -q streams "$TMP/sse.out" && break; sleep 0.1; done
    rss1=$(awk '/VmRSS/ {print $2}' /proc/"$gwpid"/status)
    kill "$sb"
    say "| streams | connected | gateway RSS before | with the streams | per stream |"
    say "|---:|---:|---:|---:|---:|"
    say "| 10000 | $(field connected < "$TMP/sse.out") | $rss0 kB | $rss1 kB | $(awk -v a="$rss0" -v b="$rss1" 'BEGIN {printf "%.1f kB", (b - a) / 10000}') |"
    say ""
    say "Command: \`build/bin/ssebench PORT 10000 5 5 10000\` (each stream watches 5 users); RSS from /proc/PID/status of the gateway."
    say ""
    cleanup
fi

# ---- propagation between leaves ------------------------------------------------------------------
if [[ " $SECTIONS " == *" propagation "* ]]; then
    say "## Propagation: acknowledged write at leaf A -> event at leaf B (10,000 writes)"
    say ""
    cport=$(( 20000 + RANDOM % 20000 ))
    start_node center CENTER_PORT=$cport CENTER_BIND_ADDR=127.0.0.1 CENTER_INSECURE=true RATE_LIMIT_WRITES=0
    start_node leafa NODE_TYPE=leaf CENTER_INSECURE=true CENTER_ENDPOINT=tcp://127.0.0.1:$cport NODE_ID=leaf-a RATE_LIMIT_WRITES=0; pa=$NODE_PORT
    start_node leafb NODE_TYPE=leaf CENTER_INSECURE=true CENTER_ENDPOINT=tcp://127.0.0.1:$cport NODE_ID=leaf-b RATE_LIMIT_WRITES=0; pb=$NODE_PORT
    JWT_SECRET=$SECRET "$BIN/mktokens" 100 > "$TMP/t100.txt"
    r=$("$BIN/propbench" "$pa" "$pb" 10000 "$TMP/t100.txt")
    say "| writes | events received | p50 ms | p99 ms | max ms |"
    say "|---:|---:|---:|---:|---:|"
    say "| $(echo "$r" | field writes) | $(echo "$r" | field received) | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) | $(echo "$r" | field max_ms) |"
    say ""
    say "Command: \`build/bin/propbench PORT_A PORT_B 10000 TOKENS\` with a center (CENTER_PORT) and two leaves started by presenced on this machine; delay = SSE event at B minus the PUT's acknowledgement at A (0 when the event arrives first)."
    say ""
    cleanup
fi
# ---- webhooks: events/s the notifier delivers ----------------------------------------------------
if [[ " $SECTIONS " == *" webhooks "* ]]; then
    say "## Webhooks: events/s the notifier delivers to a local receiver (200,000 status changes)"
    say ""
    say "| batch (WEBHOOK_BATCH_MAX) | live: events/s end to end | store write time s | notifier CPU us/event | backlog: events/s | notifier CPU us/event | latency at 2,000 events/s: p50 / p99 / max ms |"
    say "|---:|---:|---:|---:|---:|---:|---|"
    for batch in 500 50; do
        r=$(WEBHOOK_BENCH=200000 WEBHOOK_BENCH_BATCH=$batch CK_RUN_CASE=bench PRESENCE_BIN=$BIN \
            build/tests/integ/integ_webhooks 2>&1)
        live=$(grep '^bench live' <<<"$r"); back=$(grep '^bench backlog' <<<"$r"); lat=$(grep '^bench latency' <<<"$r")
        say "| $batch | $(sed -nE 's/.*= ([0-9]+) events\/s end to end.*/\1/p' <<<"$live") | $(sed -nE 's/.*store took ([0-9.]+) s.*/\1/p' <<<"$live") | $(sed -nE 's/.*\(([0-9.]+) us per event\).*/\1/p' <<<"$live") | $(sed -nE 's/.*= ([0-9]+) events\/s.*/\1/p' <<<"$back") | $(sed -nE 's/.*\(([0-9.]+) us per event\).*/\1/p' <<<"$back") | $(sed -nE 's/.*p50 ([0-9.]+) ms p99 ([0-9.]+) ms max ([0-9.]+) ms.*/\1 \/ \2 \/ \3/p' <<<"$lat") |"
    done
    say ""
    say "Command: \`WEBHOOK_BENCH=200000 [WEBHOOK_BENCH_BATCH=N] CK_RUN_CASE=bench build/tests/integ/integ_webhooks\` (store-node, cache-node, gateway and notifier as processes; PUT batches of 1,000 records over 10,000 users straight to the store, each write a status change = one event; the receiver is the test's own HTTP/1.1 server). live: from the first write to the last event received; backlog: the receiver answers 500 while another 200,000 changes are logged, then 200 -- the notifier's delivery rate from its log. latency: 2,000 status changes/s for 5 s (PUTs of 10), from the store's acknowledgement of a write to the receiver answering the POST that carried its event."
    say ""
fi
# ---- WebSocket ----------------------------------------------------------------------------------
if [[ " $SECTIONS " == *" ws "* ]]; then
    say "## WebSocket: connections held, memory per connection, connects/s, delivery to 10,000 watchers, SIGKILL of a gateway"
    say ""
    tests/bench/ws_gateway.sh | tee -a "$RES"
    say "Commands: \`tests/bench/ws_gateway.sh\` (hold: \`build/bin/wsload hold -p PORT -n 18000 -r 5000 -d 10 -c 5000 -T TOKENS -P GATEWAY_PID\`; watch: \`build/bin/wsload watch -p PORT -n 10000 -r 5000 -U 100 -k 5 -m 500 -R 50 -T TOKENS\`; the same against \`build/bin/h2o_bare\` on \`/ws-raw\`; kill: 10,000 connections on one gateway, SIGKILL, a second gateway reads them until all are offline). One process holds at most RLIMIT_NOFILE (20,000 here) connections."
    say ""
fi

# ---- hostile clients: HTTP/2 load, rapid reset -------------------------------------------------------
# p50/p99/max (ms) of an h2load --log-file: "start_us status elapsed_us" lines.
lat() { awk '{print $3}' "$1" | sort -n | awk '{a[NR]=$1} END {if (!NR) {print "0 0 0"; exit}
        printf "%.3f %.3f %.3f", a[int(NR*0.5)+1]/1000, a[int(NR*0.99)+1]/1000, a[NR]/1000}'; }
if [[ " $SECTIONS " == *" hostile "* ]]; then
    say "## Hostile clients: HTTP/2 load, and a normal client while another rapid-resets"
    say ""
    start_node hostile RATE_LIMIT_WRITES=0; port=$NODE_PORT
    tok=$(DATA_DIR="$TMP/hostile/data" JWT_SECRET=$SECRET "$BIN/presence-token" u1)
    curl -s -o /dev/null -X PUT "http://127.0.0.1:$port/api/v2/presence/u1" -H "Authorization: Bearer $tok" -d '{"status":"online"}'
    url=http://127.0.0.1:$port/api/v2/presence/u1
    h2load -n 5000 -c 4 "$url" > /dev/null 2>&1
    h2load -c 400 -m 100 -D "$SECONDS_PER" "$url" > "$TMP/h2l.out" 2>&1
    say "| h2load -c 400 -m 100 (cached GET) | req/s | requests | failed | errored | 2xx |"
    say "|---|---:|---:|---:|---:|---:|"
    say "| ${SECONDS_PER} s | $(sed -nE 's/.*finished in [0-9.]+s, ([0-9.]+) req\/s.*/\1/p' "$TMP/h2l.out") | $(sed -nE 's/^requests: ([0-9]+) total.*/\1/p' "$TMP/h2l.out") | $(sed -nE 's/^requests:.* ([0-9]+) failed.*/\1/p' "$TMP/h2l.out") | $(sed -nE 's/^requests:.* ([0-9]+) errored.*/\1/p' "$TMP/h2l.out") | $(sed -nE 's/^status codes: ([0-9]+) 2xx.*/\1/p' "$TMP/h2l.out") |"
    say ""
    h2load -c 10 -m 1 -D 8 --log-file="$TMP/alone.log" "$url" > /dev/null 2>&1
    "$BIN/h2reset" "$port" 10 > "$TMP/h2r.out" 2>&1 & ar=$!
    sleep 1
    h2load -c 10 -m 1 -D 8 --log-file="$TMP/attack.log" "$url" > /dev/null 2>&1
    wait "$ar"
    m=$(curl -s "http://127.0.0.1:$port/metrics")
    say "| normal client (h2load -c 10 -m 1, 8 s) | requests | p50 ms | p99 ms | max ms |"
    say "|---|---:|---:|---:|---:|"
    read -r a50 a99 amax < <(lat "$TMP/alone.log")
    read -r b50 b99 bmax < <(lat "$TMP/attack.log")
    say "| alone | $(wc -l < "$TMP/alone.log") | $a50 | $a99 | $amax |"
    say "| while one client (127.0.0.2) rapid-resets | $(wc -l < "$TMP/attack.log") | $b50 | $b99 | $bmax |"
    say ""
    say "Attacker: \`$(cat "$TMP/h2r.out")\`; gateway: $(echo "$m" | grep -E '^http2_(connections_cut|connections_refused|streams_cancelled)_total' | tr '\n' ' ')"
    say ""
    say "Commands: \`h2load -c 400 -m 100 -D ${SECONDS_PER} URL\` against a cached GET; \`h2load -c 10 -m 1 -D 8 --log-file=F URL\` alone and while \`build/bin/h2reset PORT 10\` sends HEADERS+RST_STREAM pairs from 127.0.0.2 (RELIABILITY.md, Hostile clients)."
    say ""
    cleanup
fi
# ---- a replicated center (STORE_REPLICAS=3) against one store-node --------------------------------
if [[ " $SECTIONS " == *" replication "* ]]; then
    say "## Replication: acknowledged writes with 3 replicas against one store-node, and failover"
    say ""
    BENCH_SECONDS=$SECONDS_PER BENCH_ROUNDS=$ROUNDS tests/bench/replication.sh | tee -a "$RES"
fi
# ---- sessions: opens/ends per second, bytes per session, the sweeper's bulk expiry ----------------
if [[ " $SECTIONS " == *" sessions "* ]]; then
    # A bare store-node in a fresh data dir (its pid joins PIDS).
    ses_start() { # dir env...
        local d=$1; shift
        mkdir -p "$d/run"
        env "$@" DATA_DIR="$d" LOG_LEVEL=warn "$BIN/store-node" 2> "$d/err" & PIDS+=($!)
        for _ in $(seq 1 100); do [ -S "$d/run/store-cmd.sock" ] && break; sleep 0.05; done
    }
    m() { printf '%s\n' "$@" | median; }
    # What a process wrote (wchar) and its CPU ticks; per command between two samples (100,000 each).
    ses_io() { echo "$(awk '/^wchar/ {print $2}' /proc/"$1"/io) $(awk '{print $14 + $15}' /proc/"$1"/stat)"; }
    ses_kb() { awk -v x="$1" -v y="$2" 'BEGIN {split(x, p); split(y, q); printf "%.1f", (q[1] - p[1]) / 100000 / 1024}'; }
    ses_us() { awk -v x="$1" -v y="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {split(x, p); split(y, q); printf "%.0f", (q[2] - p[2]) * 1e6 / hz / 100000}'; }
    say "## Sessions: opens and ends per second straight to the store-node (sesbench, median of $ROUNDS)"
    say ""
    costs=()
    say "| SYNC_MODE | what is opened | opens/s, fresh file | opens/s | p50 ms | p99 ms | ends/s | p50 ms | p99 ms |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for mode in full nometa; do
        for kind in plain rest conn; do
            f1=() ors=() op50=() op99=() ers=() ep50=() ep99=() okb=() ocpu=() ekb=() ecpu=()
            for round in $(seq 1 "$ROUNDS"); do
                d=$TMP/ses-$mode-$kind-$round
                ses_start "$d" SYNC_MODE=$mode; sp=${PIDS[-1]}
                ep="ipc://$d/run/store-cmd.sock"
                # Cycle 1 on a fresh file, then cycle 2 (the steady state) phase by phase, with what
                # the store-node wrote (/proc/PID/io wchar) and its CPU time (utime + stime) around each.
                f=$("$BIN/sesbench" "$ep" "$kind" 100000 1 256 both)
                a=$(ses_io "$sp"); o=$("$BIN/sesbench" "$ep" "$kind" 100000 1 256 open)
                b=$(ses_io "$sp"); e=$("$BIN/sesbench" "$ep" "$kind" 100000 1 256 end)
                c=$(ses_io "$sp")
                okb+=("$(ses_kb "$a" "$b")"); ocpu+=("$(ses_us "$a" "$b")"); ekb+=("$(ses_kb "$b" "$c")"); ecpu+=("$(ses_us "$b" "$c")")
                f1+=("$(echo "$f" | grep '^phase open' | field rate)")
                ors+=("$(echo "$o" | field rate)"); op50+=("$(echo "$o" | field p50_ms)"); op99+=("$(echo "$o" | field p99_ms)")
                ers+=("$(echo "$e" | field rate)"); ep50+=("$(echo "$e" | field p50_ms)"); ep99+=("$(echo "$e" | field p99_ms)")
                cleanup; rm -rf "$d"
            done
            case $kind in
                plain) label="2.0 PUT online / offline (no session)" ;;
                rest) label="REST session (PUT session, ttl) / PUT offline" ;;
                conn) label="connection session (lease, F_OPEN) / PUT offline" ;;
            esac
            say "| $mode | $label | $(m "${f1[@]}") | $(m "${ors[@]}") | $(m "${op50[@]}") | $(m "${op99[@]}") | $(m "${ers[@]}") | $(m "${ep50[@]}") | $(m "${ep99[@]}") |"
            costs+=("| $mode | $label | $(m "${okb[@]}") | $(m "${ocpu[@]}") | $(m "${ekb[@]}") | $(m "${ecpu[@]}") |")
        done
    done
    say ""
    say "What one command costs the store-node in the same runs (second cycle; written = bytes passed to write calls, /proc/PID/io wchar; CPU = utime + stime of the whole process):"
    say ""
    say "| SYNC_MODE | what is opened | KB written / open | CPU us / open | KB written / end | CPU us / end |"
    say "|---|---|---:|---:|---:|---:|"
    for row in "${costs[@]}"; do say "$row"; done
    say ""
    say "Commands: \`build/bin/sesbench ipc://DATA_DIR/run/store-cmd.sock KIND 100000 1 256 both\` (the first cycle, on a fresh file), then \`... KIND 100000 1 256 open\` and \`... KIND 100000 1 256 end\` (the second cycle), against \`SYNC_MODE=M build/bin/store-node\` (fresh data dir each round; 100,000 users with one session each, 256 commands in flight, opened in a random order and ended in another). \"fresh file\": the first cycle's opens, which extend a new file; the other columns are the second cycle, when LMDB reuses the pages it freed (the steady state of a store in use). Goal (issue 14): 20,000 opens/s and 20,000 ends/s."
    say ""

    say "## Sessions: bytes per session in LMDB and per cached record in a cache-node (100,000 sessions)"
    say ""
    say "| what is opened | users x sessions | sessions (ses + lses) B/session | record + due B/user | changelog B/change | all data pages B/session | file high-water B/session | cache cost B/record | cache RSS B/record |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for spec in "plain 100000 1" "rest 100000 1" "conn 100000 1" "rest 25000 4" "conn 25000 4"; do
        set -- $spec
        d=$TMP/sesb-$1-$2-$3
        ses_start "$d"
        DATA_DIR=$d CACHE_MAX_COST=1073741824 LOG_LEVEL=warn "$BIN/cache-node" 2> /dev/null & cp=$!; PIDS+=($cp)
        for _ in $(seq 1 100); do [ -S "$d/run/cache-1.sock" ] && break; sleep 0.05; done
        "$BIN/sesbench" "ipc://$d/run/store-cmd.sock" "$1" "$2" "$3" 256 open > /dev/null
        p=$("$BIN/lmdbpages" "$d/store")
        c=$("$BIN/fillcache" "ipc://$d/run/cache-1.sock" "$cp" "$2" user-)
        n=$(( $2 * $3 ))
        pg() { echo "$p" | sed -nE "s/.* $1_pages ([0-9]+).*/\1/p"; }
        ps=$(echo "$p" | field psize)
        per() { awk -v a="$1" -v ps="$ps" -v n="$2" 'BEGIN {printf "%.0f", a * ps / n}'; }
        case $1 in plain) label="2.0 PUT (no session)" ;; rest) label="REST sessions" ;; conn) label="connection sessions" ;; esac
        say "| $label | $2 x $3 | $(per $(( $(pg ses) + $(pg lses) )) $n) | $(per $(( $(pg rec) + $(pg due) )) $2) | $(per "$(pg log)" "$(echo "$p" | sed -nE 's/.* log_entries ([0-9]+).*/\1/p')") | $(per "$(echo "$p" | field data_pages)" $n) | $(per "$(echo "$p" | field map_pages)" $n) | $(echo "$c" | field cost_per_record) | $(echo "$c" | field bytes_per_record) |"
        cleanup; rm -rf "$d"
    done
    say ""
    say "Commands: \`build/bin/sesbench ipc://DATA_DIR/run/store-cmd.sock KIND USERS DEVICES 256 open\`, then \`build/bin/lmdbpages DATA_DIR/store\` (each database's branch + leaf + overflow pages, as \`mdb_stat -a\` counts them; 4096-byte pages) and \`build/bin/fillcache ipc://DATA_DIR/run/cache-1.sock PID USERS user-\` (the cache-node reads every user through from the store: records as stored; cost = cache_cost_bytes / cache_items, RSS = growth / items). A cache-node caches records, not sessions: a session user's record has the same fields as anyone's."
    say ""

    say "## Sessions: the sweeper ends 100,000 sessions at once while a steady stream of PUTs goes on (median of $ROUNDS)"
    say ""
    say "| sessions due at one moment | sweep took ms | PUTs/s | before: p99 ms | before: max ms | during: p99 ms | during: max ms |"
    say "|---|---:|---:|---:|---:|---:|---:|"
    for kind in conn rest; do
        st=() bp=() bm=() dp=() dm=()
        for round in $(seq 1 "$ROUNDS"); do
            d=$TMP/sesw-$kind-$round
            ses_start "$d"
            r=$("$BIN/sesweep" "ipc://$d/run/store-cmd.sock" "ipc://$d/run/store-pub.sock" "$kind" 100000 2000 20)
            st+=("$(echo "$r" | grep '^sweep' | field sweep_ms)")
            bp+=("$(echo "$r" | grep '^writes before' | field p99_ms)"); bm+=("$(echo "$r" | grep '^writes before' | field max_ms)")
            dp+=("$(echo "$r" | grep '^writes during' | field p99_ms)"); dm+=("$(echo "$r" | grep '^writes during' | field max_ms)")
            cleanup; rm -rf "$d"
        done
        case $kind in conn) label="100,000 connection sessions, their lease lapses" ;; rest) label="100,000 REST sessions, their ttl ends" ;; esac
        say "| $label | $(m "${st[@]}") | 2000 | $(m "${bp[@]}") | $(m "${bm[@]}") | $(m "${dp[@]}") | $(m "${dm[@]}") |"
    done
    say ""
    say "Command: \`build/bin/sesweep ipc://DATA_DIR/run/store-cmd.sock ipc://DATA_DIR/run/store-pub.sock KIND 100000 2000 20\` against \`build/bin/store-node\` (SYNC_MODE=full, STORE_SWEEP_MAX=1000 users per sweep transaction): 100,000 users with one session each, all due 20 s after the start; open-loop 2.0 PUTs at 2,000/s; \"before\" = PUTs sent from 1 s after the opens until the moment they are due, \"during\" = PUTs sent from then until the last user was published offline; the sweep's duration is from that moment to the last offline change on the stream."
    say ""
fi
echo "results in $RES"
