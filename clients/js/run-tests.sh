#!/usr/bin/env bash
# run-tests.sh -- make test-js: the JS client's tests (clients/js/test/*.test.mjs) under node's own
# test runner, against the real stack each test file starts (PRESENCE_BIN, default build/bin).
#
# Node's TAP output is kept in $LOG and read honestly: the runner's own "# pass / # fail /
# # cancelled / # skipped" totals (cancelled counts as failed), each skipped test printed as
# "skip test-js: NAME (REASON)", then one line "test-js: N passed, N failed, N skipped". A runner
# that prints no totals counts as one failure. --experimental-websocket is passed when this node
# knows it (node 20.10+; node 22 has WebSocket without it) so the WebSocket tests can run.
set -u
cd "$(dirname "$0")/../.."
LOG=${LOG:-build/test-js.tap}
mkdir -p "$(dirname "$LOG")"
if ! command -v node >/dev/null; then
    echo "skip test-js (node is not installed: make js-deps)"
    echo "test-js: 0 passed, 1 failed, 0 skipped"
    exit 1
fi
flags=()
if node --experimental-websocket -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
    flags+=(--experimental-websocket)
fi
echo "=== test-js: node $(node --version) ${flags[*]:-} --test clients/js/test/*.test.mjs"
node "${flags[@]}" --no-warnings --test --test-reporter=tap clients/js/test/*.test.mjs >"$LOG" 2>&1
rc=$?
# Per test: its result line (nested subtests are indented; only top-level tests are counted).
grep -E '^(not )?ok [0-9]+ - ' "$LOG" | sed -E 's/^/  /'
grep -E '^not ok [0-9]+ - ' "$LOG" >/dev/null && { echo "--- failures (see $LOG):"; \
    awk '/^not ok /{p=1} /^(ok|not ok) [0-9]+ - / && !/^not ok /{p=0} p' "$LOG" | head -n 120; }
grep -E '^ok [0-9]+ - .* # SKIP' "$LOG" | sed -E 's/^ok [0-9]+ - (.*) # SKIP ?(.*)$/skip test-js: \1 (\2)/'
num() { grep -E "^# $1 [0-9]+" "$LOG" | tail -n 1 | awk '{print $3}'; }
pass=$(num pass); fail=$(num fail); cancelled=$(num cancelled); skipped=$(num skipped)
if [ -z "$pass" ] || [ -z "$fail" ]; then
    echo "test-js: node printed no totals (exit status $rc); last lines of $LOG:"
    tail -n 30 "$LOG"
    echo "test-js: 0 passed, 1 failed, 0 skipped"
    exit 1
fi
failed=$((fail + ${cancelled:-0}))
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "test-js: node exited $rc with no failing test"
    failed=1
fi
echo "test-js: $pass passed, $failed failed, ${skipped:-0} skipped"
[ "$failed" -eq 0 ]
