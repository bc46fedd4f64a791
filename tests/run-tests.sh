#!/usr/bin/env bash
# run-tests.sh KIND BINARY... -- run Check test binaries one after another, show their output,
# and end with one plain summary line:   KIND: N passed, N failed, N skipped
# Each binary prints Check's "NN%: Checks: N, Failures: N, Errors: N" line; a binary that crashes
# or prints no summary counts as one failure (Check has no skips: 0 skipped). The harness's own
# "harness: ..." lines (a process that died under a test, with its sanitizer report) are shown
# too. Exit status is non-zero when anything failed.
set -u
kind=$1
shift
passed=0
failed=0
for bin in "$@"; do
    name=$(basename "$bin")
    echo "=== $kind: $name"
    t0=$SECONDS
    out=$("$bin" 2>&1)
    rc=$?
    echo "    ($((SECONDS - t0)) s)"
    printf '%s\n' "$out" | grep -v '^Running suite' | grep -E '%: Checks:|:[EF]:|^harness: .* ended on its own|^harness:   ' || true
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$name: no Check summary (exit status $rc)"
        printf '%s\n' "$out" | tail -n 20
        failed=$((failed + 1))
        continue
    fi
    checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
    fails=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$line")
    errs=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line")
    bad=$((fails + errs))
    passed=$((passed + checks - bad))
    failed=$((failed + bad))
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        echo "$name: exit status $rc"
        failed=$((failed + 1))
    fi
done
# SKIPPED="name: reason;..." names binaries the caller left out, each counted as one skip.
skipped=0
if [ -n "${SKIPPED:-}" ]; then
    IFS=';' read -ra skips <<<"$SKIPPED"
    for s in "${skips[@]}"; do
        echo "=== $kind: skipped $s"
        skipped=$((skipped + 1))
    done
fi
echo "$kind: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
