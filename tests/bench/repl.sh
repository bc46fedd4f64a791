#!/usr/bin/env bash
# repl.sh -- the replicated log's benchmarks (tests/tools/replbench.c), medians of BENCH_ROUNDS.
#
#   tests/bench/repl.sh [throughput] [latency] [failover] [rejoin]   (default: all but rejoin)
#
# latency: one proposal at a time (1000 of them), 1 and 3 members in one process.
# throughput: proposals/s committed and applied on the leader, entries of ENTRY (2048) bytes, with
#   1 and 3 members and 64/256/1024 in flight, plus the no-replication baseline (one fsynced LMDB
#   transaction per entry); failover: 10 SIGKILLs of the leader under load, election timeouts
#   1000 and 500 ms; rejoin: a wiped member rejoins from a snapshot of a REJOIN_MB state.
# Members are forked processes on 127.0.0.1 with temp dirs; replbench stops them by pid.
# Needs build/bin/replbench (make build/bin/replbench). This machine is shared: quote medians.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-5}
ENTRY=${ENTRY:-2048}
SECTIONS=${*:-throughput latency failover}

median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'; }
field() { sed -nE "s/.*$1 ([0-9.]+).*/\1/p"; }

run_median() { # label, then the replbench arguments
    local label=$1; shift
    local rates=() p50s=() p99s=() line
    for _ in $(seq 1 "$ROUNDS"); do
        line=$("$BIN/replbench" "$@") || { echo "| $label | failed: replbench $* |"; return; }
        rates+=("$(field rate <<<"$line")")
        p50s+=("$(field p50_us <<<"$line")")
        p99s+=("$(field p99_us <<<"$line")")
    done
    printf '| %s | %s | %s | %s |\n' "$label" \
        "$(printf '%s\n' "${rates[@]}" | median)" \
        "$(printf '%s\n' "${p50s[@]}" | median)" \
        "$(printf '%s\n' "${p99s[@]}" | median)"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, rounds $ROUNDS x ${SECS}s"
for s in $SECTIONS; do
    case $s in
    throughput)
        echo
        echo "| $ENTRY-byte entries | committed/s | p50 us | p99 us |"
        echo "|---|---:|---:|---:|"
        run_median "no replication: fsync per entry" direct "$SECS" "$ENTRY"
        for m in 1 3; do
            for inflight in 64 256 1024; do
                run_median "$m member(s), $inflight in flight" throughput "$m" "$inflight" "$SECS" "$ENTRY"
            done
        done
        ;;
    latency)
        echo
        for m in 1 3; do
            for _ in $(seq 1 "$ROUNDS"); do "$BIN/replbench" latency "$m" 1000 "$ENTRY"; done
        done
        ;;
    failover)
        for et in 1000 500; do
            echo
            echo "election timeout $et ms:"
            "$BIN/replbench" failover 10 "$et"
        done
        ;;
    rejoin)
        echo
        "$BIN/replbench" rejoin "${REJOIN_MB:-100}"
        ;;
    *) echo "unknown section $s" >&2; exit 2 ;;
    esac
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
