#!/usr/bin/env bash
# ws_mem.sh -- RSS and heap per idle WebSocket connection on the bare h2o yardstick, per mode.
#
#   tests/bench/ws_mem.sh [COUNTS] [MODES]      e.g. tests/bench/ws_mem.sh "5000 10000 19000" "/ws /ws-raw"
#
# One process holds at most RLIMIT_NOFILE connections; where the hard limit cannot be raised (no
# CAP_SYS_RESOURCE, as on this sandbox: 20000) counts above ~19900 fail in wsload with a clear message.
#
# For each mode and count: a fresh build/bin/h2o_bare (RSS never shrinks after frees, so runs do not
# share a process), wsload opens COUNT connections at RATE/s, and while they are held we read the
# server's /stats (VmRSS and glibc's bytes in use). Prints one line per run:
#   ws_mem path=/ws conns=N rss_per_conn_b=... heap_per_conn_b=... connects_per_s=... disconnects_per_s=...
# Processes are stopped by pid. Loopback only.
set -euo pipefail
B=${BUILD:-build}
COUNTS=${1:-"5000 10000 19000"}
MODES=${2:-"/ws /ws-raw"}
RATE=${RATE:-5000}
JOBS=${JOBS:-1}
tmp=$(mktemp -d)
bare_pid=
cleanup() { [ -n "$bare_pid" ] && kill "$bare_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
stat_field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"; }
for mode in $MODES; do
  for n in $COUNTS; do
    "$B"/bin/h2o_bare -p 0 >"$tmp/bare.out" 2>&1 &
    bare_pid=$!
    for _ in $(seq 100); do grep -q '^ready' "$tmp/bare.out" && break; sleep 0.05; done
    port=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/bare.out")
    [ -n "$port" ] || { echo "ws_mem: h2o_bare did not start"; cat "$tmp/bare.out"; exit 1; }
    s0=$(curl -s "http://127.0.0.1:$port/stats")
    hold=$(( n / RATE + 10 ))
    "$B"/bin/wsload hold -p "$port" -n "$n" -r "$RATE" -d "$hold" -c "$RATE" -u "$mode" -P "$bare_pid" -j "$JOBS" \
      >"$tmp/load.out" 2>&1 &
    load_pid=$!
    key=ws; [ "$mode" = /ws-raw ] && key=ws_raw
    deadline=$(( SECONDS + n / RATE + 60 ))
    s1=$s0
    while [ $SECONDS -lt $deadline ]; do
      s1=$(curl -s "http://127.0.0.1:$port/stats")
      [ "$(stat_field "$s1" "$key")" -ge "$n" ] && break
      sleep 0.5
    done
    sleep 1
    s1=$(curl -s "http://127.0.0.1:$port/stats")
    wait "$load_pid" || true
    line=$(grep '^wsload ' "$tmp/load.out" || true)
    open=$(stat_field "$s1" "$key")
    rss=$(( ($(stat_field "$s1" rss_kb) - $(stat_field "$s0" rss_kb)) * 1024 ))
    heap=$(( $(stat_field "$s1" heap_in_use) - $(stat_field "$s0" heap_in_use) ))
    echo "ws_mem path=$mode conns=$n open=$open rss_per_conn_b=$(( open ? rss / open : 0 ))" \
         "heap_per_conn_b=$(( open ? heap / open : 0 )) $(grep -o ' connects_per_s=[0-9]*' <<<"$line")" \
         "$(grep -o 'hs_p99_ms=[0-9.]*' <<<"$line") $(grep -o 'disconnects_per_s=[0-9]*' <<<"$line")" \
         "$(grep -o 'fail_[a-z]*=[1-9][0-9]*' <<<"$line" | tr '\n' ' ')"
    kill "$bare_pid"; wait "$bare_pid" 2>/dev/null || true; bare_pid=
  done
done
