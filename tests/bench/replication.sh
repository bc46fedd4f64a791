#!/usr/bin/env bash
# replication.sh -- a replicated center (STORE_REPLICAS, docs/REPLICATION.md) against one store-node,
# the real binaries on this machine. Part of `make bench` (tests/bench/run.sh replication).
#
#   tests/bench/replication.sh [throughput] [failover]      (default: both)
#
# throughput: build/bin/storebench (single-record PUTs with command ids, as cache-nodes send them,
#   W in flight, 100,000 users) straight to the command socket of
#     - one store-node as `make run` starts it (no STORE_REPLICAS, SYNC_MODE=full),
#     - the leader of three replicated store-nodes (raft on 127.0.0.1, election timeout 500 ms),
#     - a one-member replicated store (STORE_REPLICAS with one address: the log, no peers),
#   medians of BENCH_ROUNDS runs of BENCH_SECONDS, all in the same run; then the ratio 3 / 1.
# failover: `STORE_REPLICAS=3 presenced` (three store-nodes, two cache-nodes, a gateway), KILLS
#   times (FAILOVER_KILLS, default 10): SIGKILL the leader (/health/store names it; its pid is in
#   the launcher's log), then PUT through the gateway every ~10 ms until one is acknowledged: the
#   time from the kill to that acknowledgement. The launcher restarts the killed member; the next
#   kill waits until every member is up and caught up again.
# Processes are started here and stopped by pid; data in a temp dir that is removed. This machine
# is shared: quote medians, compare within one run.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/build/bin}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
KILLS=${FAILOVER_KILLS:-10}
SECTIONS=${*:-throughput failover}
TMP=$(mktemp -d /tmp/prb-XXXXXX)
PIDS=()
SECRET=bench-secret-0123456789abcdef0123456789

stop_pids() {
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do
        for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null
    done
}
trap 'stop_pids "${PIDS[@]}"; rm -rf "$TMP"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p+0.999); if (i<1) i=1; print (NR ? a[i] : 0)}'; }
field() { sed -nE "s/.*$1 ([0-9.]+).*/\1/p"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

# Start store-nodes for one configuration; leaves the command endpoint(s) in EPS.
start_single() { # dir
    mkdir -p "$1"
    DATA_DIR=$1 SYNC_MODE=full LOG_LEVEL=warn "$BIN/store-node" 2> "$1/err" & PIDS+=($!)
    for _ in $(seq 1 200); do [ -S "$1/run/store-cmd.sock" ] && break; sleep 0.05; done
    EPS=ipc://$1/run/store-cmd.sock
}
start_replicas() { # dir n
    local d=$1 n=$2 members="" i
    EPS=""
    for i in $(seq 1 "$n"); do members+="${members:+,}127.0.0.1:$(free_port)"; done
    for i in $(seq 1 "$n"); do
        mkdir -p "$d/m$i"
        DATA_DIR=$d/m$i STORE_REPLICAS=$members STORE_REPLICA_ID=$i LOG_LEVEL=warn \
            STORE_CMD_ENDPOINT=ipc://$d/m$i/cmd.sock STORE_PUB_ENDPOINT=ipc://$d/m$i/pub.sock \
            "$BIN/store-node" 2> "$d/m$i.err" & PIDS+=($!)
        EPS+="${EPS:+,}ipc://$d/m$i/cmd.sock"
    done
}

if [[ " $SECTIONS " == *" throughput "* ]]; then
    echo "| store | writers in flight | writes/s | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|---:|"
    declare -A RATE
    for cfg in single three one; do
        for w in 1 64 256; do
            rates=() p50=() p99=()
            for r in $(seq 1 "$ROUNDS"); do
                d=$TMP/$cfg-$w-$r
                case $cfg in
                single) start_single "$d" ;;
                three) start_replicas "$d" 3 ;;
                one) start_replicas "$d" 1 ;;
                esac
                line=$("$BIN/storebench" "$EPS" "$w" "$SECS" 100000)
                rates+=("$(echo "$line" | field rate)"); p50+=("$(echo "$line" | field p50_ms)")
                p99+=("$(echo "$line" | field p99_ms)")
                stop_pids "${PIDS[@]}"; PIDS=(); rm -rf "$d"
            done
            RATE[$cfg-$w]=$(printf '%s\n' "${rates[@]}" | median)
            case $cfg in
            single) label="one store-node (SYNC_MODE=full)" ;;
            three) label="3 replicas (leader)" ;;
            one) label="1 replica (raft log, no peers)" ;;
            esac
            echo "| $label | $w | ${RATE[$cfg-$w]} | $(printf '%s\n' "${p50[@]}" | median) | $(printf '%s\n' "${p99[@]}" | median) |"
        done
    done
    echo
    for w in 1 64 256; do
        echo "3 replicas / one store-node, $w in flight: $(awk -v a="${RATE[three-$w]}" -v b="${RATE[single-$w]}" 'BEGIN {printf "%.2f", b ? a / b : 0}')"
    done
    echo
    echo "Command: \`build/bin/storebench ENDPOINT[,ENDPOINT...] W $SECS 100000\` (medians of $ROUNDS; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores)."
    echo
fi

if [[ " $SECTIONS " == *" failover "* ]]; then
    d=$TMP/fo; mkdir -p "$d"
    raft=$(( 21000 + RANDOM % 20000 ))
    STORE_REPLICAS=3 STORE_RAFT_PORT=$raft DATA_DIR=$d/data SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 JWT_SECRET=$SECRET \
        RATE_LIMIT_WRITES=0 LOG_LEVEL=info "$BIN/presenced" > "$d/out" 2> "$d/err" & PIDS+=($!)
    for _ in $(seq 1 600); do grep -q '^ready' "$d/out" 2>/dev/null && break; sleep 0.05; done
    port=$(sed -nE 's/^ready http=127.0.0.1:([0-9]+).*/\1/p' "$d/out")
    tok=$(JWT_SECRET=$SECRET "$BIN/presence-token" bench)
    put() { curl -s -o /dev/null -w '%{http_code}' -m 3 -X PUT -H "Authorization: Bearer $tok" \
                 --data '{"status":"online"}' "http://127.0.0.1:$port/api/v2/presence/bench"; }
    # Every member up and caught up under a leader of a term after the last kill's, and writes
    # acknowledged: sets LEADER and TERM (/health/store shows what the cache-nodes last polled).
    TERM=0
    settled() {
        local h t
        LEADER=""
        for _ in $(seq 1 600); do
            h=$(curl -s -m 2 "http://127.0.0.1:$port/health/store")
            t=$(echo "$h" | sed -nE 's/.*"term":([0-9]+).*/\1/p')
            if [[ $h == *'"replication"'* && $h != *'"up":false'* && $(echo "$h" | grep -o '"lag_entries":[1-9]' | wc -l) == 0 ]] &&
               [ "${t:-0}" -gt "$TERM" ] && [ "$(put)" = 200 ]; then
                LEADER=$(echo "$h" | sed -nE 's/.*"replication":\{"leader":([0-9]+).*/\1/p')
                TERM=$t
                return
            fi
            sleep 0.1
        done
    }
    echo "| kill | leader (member) | SIGKILL -> first acknowledged write, ms |"
    echo "|---:|---:|---:|"
    times=()
    for k in $(seq 1 "$KILLS"); do
        settled
        leader=$LEADER
        [ -n "$leader" ] || { echo "| $k | - | the center did not settle |"; break; }
        pid=$(grep -E "store-node-$leader (\(pid|restarted \(pid) [0-9]+" "$d/err" | tail -n 1 | sed -nE 's/.*pid ([0-9]+).*/\1/p')
        t0=$(now_ms)
        kill -KILL "$pid"
        while [ "$(put)" != 200 ]; do
            [ $(( $(now_ms) - t0 )) -gt 30000 ] && break
            sleep 0.01
        done
        t=$(( $(now_ms) - t0 ))
        times+=("$t")
        echo "| $k | $leader | $t |"
    done
    echo
    echo "failover over ${#times[@]} kills: median $(printf '%s\n' "${times[@]}" | median) ms, p90 $(printf '%s\n' "${times[@]}" | pct 0.9) ms, max $(printf '%s\n' "${times[@]}" | sort -n | tail -n 1) ms"
    echo
    echo "Command: \`STORE_REPLICAS=3 build/bin/presenced\`, the leader killed with SIGKILL, then \`curl -X PUT .../api/v2/presence/bench\` every ~10 ms until a 200 (the election timeout is STORE_ELECTION_MS=500)."
    echo
fi
