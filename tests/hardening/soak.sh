#!/usr/bin/env bash
# soak.sh -- `make soak [DURATION=600]`: a center and a leaf region under a mixed load for
# DURATION seconds; asserts flat memory, no error growth and no process restart.
#
# Setup (temp dirs under /tmp, loopback only, free ports):
#   center: presenced NODE_TYPE=center (store-node, 2 cache-nodes, gateway) with CENTER_PORT;
#   leaf:   presenced NODE_TYPE=leaf (sync-relay, 2 cache-nodes, gateway) on the center's port.
#   Every memory bound is set small so that it is reached during the warm-up, not judged as
#   growth: CACHE_MAX_COST 4 MiB per cache-node (the working set is ~3x that: the caches are full
#   and evicting within the first minute), SSE_WINDOW_BYTES 2 MiB (the recent-change window of each
#   gateway thread's watch hub; 32 MiB by default, which at this load takes ~8 minutes to fill),
#   RELAY_WINDOW_BYTES 4 MiB (the relay's window; 64 MiB by default), JWT_CACHE_SIZE 4096 (the
#   verified-token cache of each gateway thread, ~500 bytes an entry: the load signs a new token
#   per user and second, so the default 65536 slots take ~20 minutes to fill and looked like a
#   17 MiB leak in a 10-minute run before this was set). STORE_LOG_MAX 100000 (the
#   changelog is pruned during the run), RETENTION 60s (expired records are purged during the
#   run). Rate limits keep their defaults (20 writes/s per subject: never reached by this load).
# Load: tests/tools/soakload.c (see there): SOAK_RATE req/s (default 400) over a bounded key
# space (SOAK_KEYS=20000 written users, as many never written: misses), writes, reads, multi-gets,
# batch reads/writes, heartbeats, deletes, 2-5 s ttls that expire, SSE watch streams that come and
# go, 20% of it through the leaf. Every response is classified; every SOAK_SAMPLE_S seconds the
# RssAnon/VmRSS of every process (found from the launchers: /proc/PID/task/*/children) and the
# gateways' /metrics error counters are sampled into CSV files in SOAK_OUT ($(BUILD)/soak).
#
# Criteria (all must hold):
#   memory  for every process, the median RssAnon of the last quarter of the run minus the median
#           of the second quarter is below max(10% of the second-quarter median, 16 MiB). The
#           first quarter is warm-up (caches filling, LMDB map and pools growing, allocator arenas
#           settling) and is not judged. RssAnon, not VmRSS: the store-node maps its LMDB file, and
#           the page cache of that mapping counts in VmRSS (RssFile) and grows with the file,
#           which is disk, not a leak. Medians of windows, not single samples, so one sample
#           taken mid-burst does not decide.
#   errors  no 5xx, no transport error, no unexpected 4xx, no 200 about the wrong user in the
#           second half of the run (the first half may see a few while the leaf link settles),
#           and the gateways' own 5xx counters agree;
#   streams SSE streams were opened and delivered events; the server ended none we still wanted;
#   restarts every process keeps its pid for the whole run and the launchers log no restart.
#
# Exit 0 on PASS, 1 on FAIL, 2 on a setup problem. Environment: DURATION (seconds, default 600),
# PRESENCE_BIN (binaries, default build/bin), SOAK_OUT, SOAK_RATE, SOAK_KEYS, SOAK_WATCHERS,
# SOAK_SAMPLE_S.
set -u
DURATION=${DURATION:-600}
BIN=$(cd "${PRESENCE_BIN:-build/bin}" && pwd) || { echo "soak: no binaries in ${PRESENCE_BIN:-build/bin}" >&2; exit 2; }
OUT=${SOAK_OUT:-build/soak}
RATE=${SOAK_RATE:-400}
KEYS=${SOAK_KEYS:-20000}
WATCHERS=${SOAK_WATCHERS:-20}
SAMPLE_S=${SOAK_SAMPLE_S:-5}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
for b in presenced store-node cache-node gateway sync-relay soakload; do
    [ -x "$BIN/$b" ] || { echo "soak: $BIN/$b missing (make first)" >&2; exit 2; }
done
command -v curl >/dev/null || { echo "soak: curl is required" >&2; exit 2; }

WORK=$(mktemp -d /tmp/soak-XXXXXX)
SECRET="soak-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CPID="" LPID="" SPID=""
now_ms() { date +%s%3N; }

cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    for p in $LPID $CPID; do kill -TERM "$p" 2>/dev/null; done
    for p in $LPID $CPID; do
        local until=$(( $(now_ms) + 20000 ))
        while kill -0 "$p" 2>/dev/null && [ "$(now_ms)" -lt "$until" ]; do sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    [ -z "${SOAK_KEEP:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

# Two consecutive free loopback ports (the center's command and stream ports).
free_pair() {
    local used p i
    used=$(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
    for i in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! grep -qx "$p" <<<"$used" && ! grep -qx "$((p + 1))" <<<"$used"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_ready FILE: the launcher's "ready http=127.0.0.1:PORT ..." line; prints PORT.
wait_ready() {
    local until=$(( $(now_ms) + 60000 )) line
    while [ "$(now_ms)" -lt "$until" ]; do
        line=$(grep -m1 '^ready http=' "$1" 2>/dev/null)
        if [ -n "$line" ]; then
            sed -E 's/^ready http=[^ ]*:([0-9]+) .*/\1/' <<<"$line"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

CENTER_PORT=$(free_pair) || { echo "soak: no free port pair" >&2; exit 2; }
common=(JWT_SECRET="$SECRET" CENTER_INSECURE=true SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 CACHE_NODES=2 CACHE_MAX_COST=$((4 << 20))
        SSE_WINDOW_BYTES=$((2 << 20)) RELAY_WINDOW_BYTES=$((4 << 20)) JWT_CACHE_SIZE=4096 LOG_LEVEL=notice)
env "${common[@]}" DATA_DIR="$WORK/c" NODE_TYPE=center NODE_ID=center CENTER_PORT="$CENTER_PORT" \
    CENTER_BIND_ADDR=127.0.0.1 STORE_LOG_MAX=100000 RETENTION=60s "$BIN/presenced" \
    >"$WORK/center.out" 2>"$WORK/center.log" &
CPID=$!
CPORT=$(wait_ready "$WORK/center.out") || { echo "soak: center not ready"; tail -20 "$WORK/center.log"; exit 2; }
env "${common[@]}" DATA_DIR="$WORK/l" NODE_TYPE=leaf NODE_ID=leaf CENTER_ENDPOINT="tcp://127.0.0.1:$CENTER_PORT" \
    "$BIN/presenced" >"$WORK/leaf.out" 2>"$WORK/leaf.log" &
LPID=$!
LPORT=$(wait_ready "$WORK/leaf.out") || { echo "soak: leaf not ready"; tail -20 "$WORK/leaf.log"; exit 2; }
# The leaf serves writes once its link to the center is up.
TOKEN=$(JWT_SECRET="$SECRET" "$BIN/presence-token" soak-probe | tail -n 1)
until=$(( $(now_ms) + 30000 ))
until [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $TOKEN" \
          -d '{"status":"online"}' "http://127.0.0.1:$LPORT/api/v2/presence/soak-probe")" = 200 ]; do
    [ "$(now_ms)" -lt "$until" ] || { echo "soak: the leaf never accepted a write"; exit 2; }
    sleep 0.2
done

# Processes: label region/name (cache-nodes by CACHE_ID), pid.
procs() {
    local region=$1 lp=$2 pid name
    for pid in $(cat /proc/"$lp"/task/*/children 2>/dev/null); do
        name=$(cat /proc/"$pid"/comm 2>/dev/null) || continue
        if [ "$name" = cache-node ]; then
            name=$(tr '\0' '\n' </proc/"$pid"/environ 2>/dev/null | sed -n 's/^CACHE_ID=//p')
            name="cache-${name##*-}"
        fi
        echo "$region/$name $pid"
    done
}
{ procs center "$CPID"; procs leaf "$LPID"; } | sort >"$OUT/pids-start.txt"
[ "$(wc -l <"$OUT/pids-start.txt")" -eq 8 ] || { echo "soak: expected 8 processes:"; cat "$OUT/pids-start.txt"; exit 2; }

metric_5xx() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '/^http_requests_total\{/ && /code="5/ { s += $NF } END { print s + 0 }'
}
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $NF; f = 1 } END { if (!f) print 0 }'
}

sampler() {
    local t0 t line label pid st
    t0=$(now_ms)
    echo "t_s,proc,pid,rss_anon_kb,vm_rss_kb" >"$OUT/mem.csv"
    echo "t_s,center_5xx,leaf_5xx,center_upstream_timeouts,leaf_upstream_timeouts,center_sse_dropped,leaf_sse_dropped" \
        >"$OUT/metrics.csv"
    while :; do
        t=$(awk -v a="$(now_ms)" -v b="$t0" 'BEGIN { printf "%.1f", (a - b) / 1000 }')
        { procs center "$CPID"; procs leaf "$LPID"; } | while read -r label pid; do
            st=$(awk '/^RssAnon:/ { a = $2 } /^VmRSS:/ { r = $2 } END { print a "," r }' /proc/"$pid"/status 2>/dev/null)
            [ -n "$st" ] && echo "$t,$label,$pid,$st"
        done >>"$OUT/mem.csv"
        echo "$t,$(metric_5xx "$CPORT"),$(metric_5xx "$LPORT"),$(metric "$CPORT" gateway_upstream_timeouts_total),$(metric "$LPORT" gateway_upstream_timeouts_total),$(metric "$CPORT" sse_clients_dropped_total),$(metric "$LPORT" sse_clients_dropped_total)" \
            >>"$OUT/metrics.csv"
        sleep "$SAMPLE_S" # the sampling period
    done
}

echo "soak: center http :$CPORT (CENTER_PORT $CENTER_PORT), leaf http :$LPORT; ${DURATION}s at ${RATE} req/s; results in $OUT"
c5_0=$(metric_5xx "$CPORT")
l5_0=$(metric_5xx "$LPORT")
sampler &
SPID=$!
"$BIN/soakload" --port "$CPORT" --leaf-port "$LPORT" --secret "$SECRET" --seconds "$DURATION" --keys "$KEYS" \
    --rate "$RATE" --watchers "$WATCHERS" --csv "$OUT/load.csv" --interval "$SAMPLE_S" | tee "$OUT/load.out"
kill "$SPID" 2>/dev/null
wait "$SPID" 2>/dev/null
SPID=""
c5_1=$(metric_5xx "$CPORT")
l5_1=$(metric_5xx "$LPORT")
{ procs center "$CPID"; procs leaf "$LPID"; } | sort >"$OUT/pids-end.txt"
cp "$WORK/center.log" "$OUT/center.log"
cp "$WORK/leaf.log" "$OUT/leaf.log"

# ---- verdict -------------------------------------------------------------------------------------
fail=0
# The run's length as measured by the load (a run cut short is judged on what it did).
T=$(tail -n 1 "$OUT/load.csv" | cut -d, -f1)
{
echo "=== soak: ${T}s of ${DURATION}s, center :$CPORT, leaf :$LPORT"
echo "--- memory (RssAnon KiB; judged: median of the last quarter minus median of the second quarter)"
printf "%-20s %10s %10s %10s %10s %10s %10s %10s  %s\n" process start q2_med q4_med end growth limit vmrss_end verdict
awk -F, -v T="$T" '
    NR == 1 { next }
    { k = $2; if (!(k in first)) first[k] = $4; last[k] = $4; vm[k] = $5
      if ($1 >= 0.25 * T && $1 < 0.5 * T) q2[k] = q2[k] " " $4
      if ($1 >= 0.75 * T) q4[k] = q4[k] " " $4 }
    function med(s,   v, n, i, j, tmp) {
        n = split(s, v, " ")
        for (i = 2; i <= n; i++) { tmp = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > tmp; j--) v[j + 1] = v[j]; v[j + 1] = tmp }
        return n ? (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) : -1
    }
    END {
        bad = 0
        for (k in first) {
            m2 = med(q2[k]); m4 = med(q4[k])
            lim = 0.10 * m2; if (lim < 16384) lim = 16384
            ok = (m2 >= 0 && m4 >= 0 && m4 - m2 < lim)
            if (!ok) bad = 1
            printf "%-20s %10d %10d %10d %10d %10d %10d %10d  %s\n", k, first[k], m2, m4, last[k], m4 - m2, lim, vm[k], ok ? "ok" : "FAIL"
        }
        exit bad
    }' "$OUT/mem.csv" >"$OUT/memory.txt" || fail=1
sort "$OUT/memory.txt"

echo "--- load (cumulative at half time and at the end)"
half=$(awk -F, -v T="$T" 'NR > 1 && $1 <= T / 2 { l = $0 } END { print l }' "$OUT/load.csv")
end=$(tail -n 1 "$OUT/load.csv")
echo "columns:  $(head -n 1 "$OUT/load.csv")"
echo "half:     $half"
echo "end:      $end"
read -r h_req h_5xx h_net h_4xx h_bad <<<"$(awk -F, '{ print $2, $6, $7, $4, $8 }' <<<"$half")"
read -r e_req e_exp e_4xx e_429 e_5xx e_net e_bad e_ss e_se e_serr <<<"$(awk -F, '{ print $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' <<<"$end")"
grep '^soakload: statuses' "$OUT/load.out"
s2=$((e_5xx - h_5xx)) n2=$((e_net - h_net)) f2=$((e_4xx - h_4xx)) b2=$((e_bad - h_bad))
echo "second half: requests $((e_req - h_req)), 5xx $s2, transport errors $n2, unexpected 4xx $f2, wrong-user bodies $b2"
[ "$s2" -eq 0 ] && [ "$n2" -eq 0 ] && [ "$f2" -eq 0 ] && [ "$b2" -eq 0 ] || { echo "FAIL: errors in the second half"; fail=1; }
[ "$e_bad" -eq 0 ] || { echo "FAIL: $e_bad responses about the wrong user"; fail=1; }
gw5=$(( c5_1 - c5_0 + l5_1 - l5_0 ))
echo "gateways' 5xx counters over the run: $gw5 (load tool saw $e_5xx)"
[ "$gw5" -eq "$e_5xx" ] || { echo "FAIL: the gateways counted $gw5 5xx, the load tool $e_5xx"; fail=1; }
echo "--- SSE: streams $e_ss, events $e_se, streams ended by the server $e_serr"
[ "$e_ss" -gt 0 ] && [ "$e_se" -gt 0 ] || { echo "FAIL: no SSE streams or events"; fail=1; }
[ "$e_serr" -eq 0 ] || { echo "FAIL: $e_serr SSE streams failed or were ended by the server"; fail=1; }
echo "--- restarts"
if ! diff -u "$OUT/pids-start.txt" "$OUT/pids-end.txt"; then echo "FAIL: processes changed"; fail=1; fi
if grep -E 'restarting in|restarted \(pid' "$OUT/center.log" "$OUT/leaf.log"; then echo "FAIL: the launchers restarted a process"; fail=1; fi
[ "$fail" -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL"
} | tee "$OUT/summary.txt"
grep -q '^soak: PASS' "$OUT/summary.txt"
