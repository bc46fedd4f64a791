#!/bin/sh
# cache_goals.sh -- report the W-TinyLFU hit-ratio goals on every row of reference_hits.csv.
#
#   tests/bench/cache_goals.sh [CACHESIM]        (default build/cachesim)
#
# Environment: TRACES_DIR (default ../shared/traces beside the checkout, as tests/module.mk),
# SEED (cachesim --seed, default 0), JOBS (parallel cachesim runs, default: number of CPUs).
#
# For each row (trace, cache size) it runs `CACHESIM --policy lru` and `--policy wtinylfu` and prints
# one markdown table row: trace, size, LRU %, W-TinyLFU %, OPT %, goal. The goal of a row is
#   W-TinyLFU >= LRU (hits), and, where OPT - LRU > 10 points, W-TinyLFU >= OPT - 10 points.
# A row that misses says by how much. cachesim's LRU must reproduce the oracle's lru_hits exactly and
# no policy may beat OPT; either violation is flagged in the goal column (it would be a bug).
# The last line is "cache goals: N of M rows meet the goal". This is a report: it exits 0 whatever
# the outcome (2 only when it cannot run at all).
set -u

SIM=${1:-build/cachesim}
if [ -z "${TRACES_DIR:-}" ]; then
    TRACES_DIR=$(cd "$(dirname "$0")/../.." && cd .. && pwd)/shared/traces
fi
SEED=${SEED:-0}
JOBS=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
CSV=$TRACES_DIR/reference_hits.csv

if [ ! -x "$SIM" ]; then
    echo "cache_goals: $SIM is not an executable (build it: make build/cachesim)" >&2
    exit 2
fi
if [ ! -r "$CSV" ]; then
    echo "cache_goals: cannot read $CSV (set TRACES_DIR)" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cache_goals.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT INT TERM

# One job per (row, policy): its output goes to $TMP/<row>.<policy>. Run JOBS of them at a time.
tail -n +2 "$CSV" | tr -d '\r' | awk -F, 'NF >= 6 { print NR, $1, $4 }' >"$TMP/rows"
while read -r n trace size; do
    for p in lru wtinylfu; do
        printf '%s %s %s %s\n' "$n" "$p" "$size" "$TRACES_DIR/$trace.gz"
    done
done <"$TMP/rows" >"$TMP/jobs"
export SIM SEED TMP
xargs -P "$JOBS" -L 1 sh -c '"$SIM" --policy "$1" --size "$2" --seed "$SEED" "$3" >"$TMP/$0.$1" 2>&1 || echo "error" >>"$TMP/$0.$1"' \
    <"$TMP/jobs"

echo "| trace | size | LRU % | W-TinyLFU % | OPT % | goal |"
echo "|---|---:|---:|---:|---:|---|"
tail -n +2 "$CSV" | tr -d '\r' | awk -F, -v tmp="$TMP" '
function hits(file,   line, f) {
    line = "";
    if ((getline line < file) <= 0 || split(line, f, " ") < 2 || f[1] != "hits") { close(file); return -1 }
    close(file);
    return f[2] + 0;
}
NF >= 6 {
    n++; trace = $1; refs = $2 + 0; size = $4 + 0; lref = $5 + 0; opt = $6 + 0;
    lh = hits(tmp "/" NR "." "lru"); wh = hits(tmp "/" NR "." "wtinylfu");
    total++;
    if (lh < 0 || wh < 0) {
        printf "| %s | %d | - | - | %.2f | ERROR: cachesim failed |\n", trace, size, 100 * opt / refs;
        next;
    }
    lp = 100 * lh / refs; wp = 100 * wh / refs; op = 100 * opt / refs; lrp = 100 * lref / refs;
    why = "";
    if (lh != lref) why = sprintf("LRU MISMATCH (%d hits, oracle %d)", lh, lref);
    if (wh > opt) why = why (why == "" ? "" : "; ") sprintf("ABOVE OPT by %d hits", wh - opt);
    if (wh < lref) why = why (why == "" ? "" : "; ") sprintf("MISS: %d hits (%.2f pts) below LRU", lref - wh, lrp - wp);
    if (op - lrp > 10 && wp < op - 10)
        why = why (why == "" ? "" : "; ") sprintf("MISS: %.2f pts short of OPT-10", op - 10 - wp);
    if (why == "") { st = "PASS"; met++ } else st = why;
    printf "| %s | %d | %.2f | %.2f | %.2f | %s |\n", trace, size, lp, wp, op, st;
}
END { printf "\ncache goals: %d of %d rows meet the goal\n", met, total }'
exit 0
