#!/usr/bin/env bash
# valgrind-smoke.sh -- `make valgrind-smoke` (and the test-valgrind step of `make test`): every
# daemon under valgrind memcheck through a short smoke workload.
#
# Under valgrind: store-node (with CENTER_PORT), one cache-node and the gateway of a center, and
# the sync-relay of a leaf region (its cache-node and gateway run natively: they are the same
# binaries as the center's). Workload through both gateways: PUT, GET, multi-get, heartbeat,
# batch read and write, bulk heartbeats, an SSE watch stream that sees a change, DELETE, a few
# refused requests (bad JSON, bad id, no token), and writes/reads through the leaf (relay ->
# center). Then every process is stopped by pid with SIGTERM and judged:
#   - it exited with status 0 (valgrind's --error-exitcode is 99: any memcheck error, or a
#     definite/indirect leak, makes the status 99),
#   - its valgrind log says "ERROR SUMMARY: 0 errors".
# Suppressions: tests/hardening/valgrind.supp (third-party noise only, each entry says why).
# Prints one line per process and "test-valgrind: N passed, N failed, 0 skipped". Logs stay in
# VG_OUT ($(BUILD)/valgrind). Exit 0 when all passed.
set -u
BIN=$(cd "${PRESENCE_BIN:-build/bin}" && pwd) || { echo "valgrind-smoke: no binaries" >&2; exit 2; }
OUT=${VG_OUT:-build/valgrind}
SUPP=$(cd "$(dirname "$0")" && pwd)/valgrind.supp
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.log
command -v valgrind >/dev/null || { echo "valgrind-smoke: valgrind is not installed" >&2; exit 2; }
WORK=$(mktemp -d /tmp/vg-XXXXXX)
SECRET="valgrind-smoke-secret-0123456789abcdef"
declare -A PID
ORDER=()
now_ms() { date +%s%3N; }

cleanup() {
    for n in "${ORDER[@]}"; do kill -KILL "${PID[$n]}" 2>/dev/null; done
    [ -z "${VG_KEEP:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

free_pair() {
    local used p i
    used=$(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
    for i in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! grep -qx "$p" <<<"$used" && ! grep -qx "$((p + 1))" <<<"$used"; then echo "$p"; return 0; fi
    done
    return 1
}

VG=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --num-callers=40 --suppressions="$SUPP")

# start NAME VG(0|1) BINARY ENV...: start with READY_FD=3 on a file; wait for the ready line.
start() {
    local name=$1 vg=$2 bin=$3
    shift 3
    local cmd=("$BIN/$bin")
    [ "$vg" = 1 ] && cmd=("${VG[@]}" --log-file="$OUT/$name.vg.log" "$BIN/$bin")
    env DATA_DIR="$WORK" JWT_SECRET="$SECRET" LOG_LEVEL=notice READY_FD=3 "$@" "${cmd[@]}" \
        3>"$WORK/$name.ready" >"$OUT/$name.log" 2>&1 &
    PID[$name]=$!
    ORDER+=("$name")
    local until=$(( $(now_ms) + 120000 ))
    until [ -s "$WORK/$name.ready" ]; do
        if ! kill -0 "${PID[$name]}" 2>/dev/null || [ "$(now_ms)" -ge "$until" ]; then
            echo "valgrind-smoke: $name did not start (log $OUT/$name.log)"
            tail -n 20 "$OUT/$name.log"
            return 1
        fi
        sleep 0.2
    done
}

CP=$(free_pair) || { echo "valgrind-smoke: no free ports" >&2; exit 2; }
mkdir -p "$WORK/run" "$WORK/leaf/run"
C_CMD="ipc://$WORK/run/store-cmd.sock" C_PUB="ipc://$WORK/run/store-pub.sock"
L_CMD="ipc://$WORK/leaf/run/relay-cmd.sock" L_PUB="ipc://$WORK/leaf/run/relay-pub.sock"
common=(CENTER_INSECURE=true GATEWAY_THREADS=1 RATE_LIMIT_WRITES=0 REQUEST_TIMEOUT_MS=10000 STORE_DOWN_MS=10000 SYNC_HEARTBEAT_LIMIT_MS=10000)
fail_start=0
start store-node 1 store-node "${common[@]}" STORE_CMD_ENDPOINT="$C_CMD" STORE_PUB_ENDPOINT="$C_PUB" \
    CENTER_PORT="$CP" CENTER_BIND_ADDR=127.0.0.1 || fail_start=1
[ $fail_start = 0 ] && { start cache-node 1 cache-node "${common[@]}" STORE_CMD_ENDPOINT="$C_CMD" STORE_PUB_ENDPOINT="$C_PUB" \
    CACHE_ENDPOINT="ipc://$WORK/run/cache-1.sock" CACHE_ID=vg1 || fail_start=1; }
[ $fail_start = 0 ] && { start gateway 1 gateway "${common[@]}" STORE_CMD_ENDPOINT="$C_CMD" STORE_PUB_ENDPOINT="$C_PUB" \
    CACHE_ENDPOINTS="ipc://$WORK/run/cache-1.sock" SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 || fail_start=1; }
[ $fail_start = 0 ] && { start sync-relay 1 sync-relay "${common[@]}" CENTER_ENDPOINT="tcp://127.0.0.1:$CP" \
    RELAY_CMD_ENDPOINT="$L_CMD" RELAY_PUB_ENDPOINT="$L_PUB" DATA_DIR="$WORK/leaf" || fail_start=1; }
[ $fail_start = 0 ] && { start leaf-cache 0 cache-node "${common[@]}" STORE_CMD_ENDPOINT="$L_CMD" STORE_PUB_ENDPOINT="$L_PUB" \
    CACHE_ENDPOINT="ipc://$WORK/leaf/run/cache-1.sock" CACHE_ID=lvg1 DATA_DIR="$WORK/leaf" || fail_start=1; }
[ $fail_start = 0 ] && { start leaf-gateway 0 gateway "${common[@]}" STORE_CMD_ENDPOINT="$L_CMD" STORE_PUB_ENDPOINT="$L_PUB" \
    CACHE_ENDPOINTS="ipc://$WORK/leaf/run/cache-1.sock" SERVICE_PORT=0 SERVICE_ADDR=127.0.0.1 NODE_TYPE=leaf \
    DATA_DIR="$WORK/leaf" || fail_start=1; }

checks=0 bad=0
check() { # check WHAT WANT GOT
    checks=$((checks + 1))
    if [ "$2" != "$3" ]; then echo "valgrind-smoke: $1: got $3, want $2"; bad=$((bad + 1)); fi
}
if [ $fail_start = 0 ]; then
    GW=$(sed -E 's/.*http=[^ ]*:([0-9]+).*/\1/' "$WORK/gateway.ready")
    LGW=$(sed -E 's/.*http=[^ ]*:([0-9]+).*/\1/' "$WORK/leaf-gateway.ready")
    T=$(JWT_SECRET="$SECRET" "$BIN/presence-token" vgal | tail -n 1)
    A=$(JWT_SECRET="$SECRET" "$BIN/presence-token" vgadmin presence:admin | tail -n 1)
    H=(-H "Authorization: Bearer $T")
    HA=(-H "Authorization: Bearer $A")
    c() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$@"; }
    U="http://127.0.0.1:$GW/api/v2/presence"
    LU="http://127.0.0.1:$LGW/api/v2/presence"
    check "PUT" 200 "$(c -X PUT "${H[@]}" -d '{"status":"busy","message":"under valgrind","ttl":600}' "$U/vgal")"
    check "GET" 200 "$(c "$U/vgal")"
    check "GET miss" 404 "$(c "$U/nobody")"
    check "multi-get" 200 "$(c "$U?users=vgal,nobody,x")"
    check "heartbeat" 200 "$(c -X POST "${H[@]}" "$U/vgal/heartbeat")"
    check "batch read" 200 "$(c -X POST -d '{"user_ids":["vgal","nobody"]}' "$U/batch")"
    check "batch write" 200 "$(c -X POST "${HA[@]}" -d '{"presences":[{"user_id":"b1","status":"away"},{"user_id":"b2","status":"online","ttl":2}]}' "$U/batch")"
    check "bulk heartbeats" 200 "$(c -X POST "${HA[@]}" -d '{"heartbeats":["b1","b2"]}' "$U/batch")"
    check "bad JSON" 400 "$(c -X PUT "${H[@]}" -d '{"status":' "$U/vgal")"
    check "bad id" 400 "$(c "$U/%FF")"
    check "no token" 401 "$(c -X PUT -d '{"status":"online"}' "$U/vgal")"
    check "metrics" 200 "$(c "http://127.0.0.1:$GW/metrics")"
    check "health" 200 "$(c "http://127.0.0.1:$GW/health/readiness")"
    # A watch stream that sees a change (and its client then goes away).
    curl -s -N --max-time 8 "$U/watch?users=vgal,b1" >"$WORK/watch.out" 2>/dev/null &
    wpid=$!
    until=$(( $(now_ms) + 8000 ))
    until grep -q '"user_id":"vgal"' "$WORK/watch.out" 2>/dev/null || [ "$(now_ms)" -ge "$until" ]; do sleep 0.1; done
    check "PUT while watched" 200 "$(c -X PUT "${H[@]}" -d '{"status":"away","message":"watched"}' "$U/vgal")"
    until=$(( $(now_ms) + 8000 ))
    until grep -q '"message":"watched"' "$WORK/watch.out" 2>/dev/null || [ "$(now_ms)" -ge "$until" ]; do sleep 0.1; done
    check "watch event" 1 "$(grep -c '"message":"watched"' "$WORK/watch.out")"
    kill "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    # Through the leaf: relay -> center.
    until=$(( $(now_ms) + 30000 ))
    until [ "$(c -X PUT "${H[@]}" -d '{"status":"online","message":"from the leaf"}' "$LU/vgal")" = 200 ] ||
        [ "$(now_ms)" -ge "$until" ]; do sleep 0.3; done
    check "leaf GET" 200 "$(c "$LU/vgal")"
    check "leaf sees the leaf write" 1 "$(curl -s --max-time 30 "$LU/vgal" | grep -c 'from the leaf')"
    check "center sees the leaf write" 1 "$(curl -s --max-time 30 "$U/vgal" | grep -c 'from the leaf')"
    check "leaf heartbeat" 200 "$(c -X POST "${H[@]}" "$LU/vgal/heartbeat")"
    check "DELETE" 200 "$(c -X DELETE "${H[@]}" "$U/vgal")"
    check "GET after DELETE" 404 "$(c "$U/vgal")"
    check "leaf DELETE again" 404 "$(c -X DELETE "${H[@]}" "$LU/vgal")"
fi
echo "valgrind-smoke: workload $((checks - bad)) of $checks checks as expected"

# Stop in dependency order (clients first) and judge each valgrind'ed process.
passed=0 failed=0
for n in leaf-gateway leaf-cache gateway cache-node sync-relay store-node; do
    p=${PID[$n]:-}
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null
    until=$(( $(now_ms) + 120000 ))
    while kill -0 "$p" 2>/dev/null && [ "$(now_ms)" -lt "$until" ]; do sleep 0.2; done
    kill -0 "$p" 2>/dev/null && { kill -KILL "$p"; echo "valgrind-smoke: $n did not stop; killed"; }
    wait "$p"
    st=$?
    [ -f "$OUT/$n.vg.log" ] || continue
    summary=$(grep -E 'ERROR SUMMARY' "$OUT/$n.vg.log" | tail -n 1 | sed 's/^==[0-9]*== //')
    if [ "$st" -eq 0 ] && grep -q 'ERROR SUMMARY: 0 errors' <<<"$summary"; then
        echo "valgrind-smoke: $n: ok ($summary)"
        passed=$((passed + 1))
    else
        echo "valgrind-smoke: $n: FAILED (exit status $st; ${summary:-no summary}; log $OUT/$n.vg.log)"
        failed=$((failed + 1))
    fi
done
# The workload itself counts as one more check: a daemon that is clean but did not serve is no pass.
if [ "$bad" -eq 0 ] && [ "$fail_start" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
echo "test-valgrind: $passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
