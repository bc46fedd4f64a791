#!/usr/bin/env bash
# run.sh -- `make bench`: every benchmark of BENCHMARKS.md, on this machine, in one run.
#
#   tests/bench/run.sh [section...]      sections: store cache cachemem gateway heartbeat sse propagation sessions
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
SECTIONS=${*:-store cache cachemem gateway heartbeat sse propagation sessions}

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
    env "$@" DATA_DIR="$TMP/$name/data" JWT_SECRET=$SECRET LOG_LEVEL=warn "$BIN/presenced" \
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
    say "Command: \`build/bin/fillcache ipc://DATA_DIR/run/cache-1.sock PID 1000000\` (APPLY fills of records with a 24-byte message; RSS from /proc/PID/status)."
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
    for cfg in "GATEWAY_THREADS=2 CACHE_NODES=2" "GATEWAY_THREADS=1 CACHE_NODES=1"; do
        rm -rf "$TMP/gw"
        start_node gw $cfg RATE_LIMIT_WRITES=0 RATE_LIMIT_READS=0; port=$NODE_PORT
        adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench presence:admin)
        load_users "$port" "$adm"
        measure "presence ($cfg) | cached GET" "http://127.0.0.1:$port" 10000 1.0 /api/v2/presence/
        measure "presence ($cfg) | 90/10 GET/PUT" "http://127.0.0.1:$port" 10000 1.0 /api/v2/presence/ 10 /api/v2/presence/ "$adm"
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
    for cfg in "GATEWAY_THREADS=2 CACHE_NODES=2" "GATEWAY_THREADS=1 CACHE_NODES=1"; do
        start_node hb $cfg; port=$NODE_PORT
        wrk -t2 -c64 -d2s -s tests/bench/heartbeat.lua "http://127.0.0.1:$port" -- "$TMP/tokens.txt" > /dev/null 2>&1
        r=$(wrk_run "http://127.0.0.1:$port" tests/bench/heartbeat.lua "$TMP/tokens.txt")
        say "| one user per request (20,000 users, own tokens) | $cfg | $(echo "$r" | field rps) | $(echo "$r" | field rps) | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) |"
        cleanup
        rm -rf "$TMP/hb"
        start_node hb $cfg; port=$NODE_PORT
        adm=$(JWT_SECRET=$SECRET "$BIN/presence-token" ws-tier presence:admin)
        r=$(wrk -t2 -c8 -d"${SECONDS_PER}s" --timeout 5s --latency -s tests/bench/bulkbeat.lua "http://127.0.0.1:$port" -- "$adm" 500 20000 2>&1 | grep RESULT)
        rq=$(echo "$r" | field rps)
        say "| bulk: 500 users per request (20,000 users) | $cfg | $(awk -v r="$rq" 'BEGIN {printf "%.0f", r * 500}') | $rq | $(echo "$r" | field p50_ms) | $(echo "$r" | field p99_ms) |"
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
    start_node sse; port=$NODE_PORT
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
    start_node center CENTER_PORT=$cport CENTER_BIND_ADDR=127.0.0.1 RATE_LIMIT_WRITES=0
    start_node leafa NODE_TYPE=leaf CENTER_ENDPOINT=tcp://127.0.0.1:$cport NODE_ID=leaf-a RATE_LIMIT_WRITES=0; pa=$NODE_PORT
    start_node leafb NODE_TYPE=leaf CENTER_ENDPOINT=tcp://127.0.0.1:$cport NODE_ID=leaf-b RATE_LIMIT_WRITES=0; pb=$NODE_PORT
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
