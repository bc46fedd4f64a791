#!/usr/bin/env bash
# run.sh MODE SECONDS BUILD_DIR TARGET... -- run libFuzzer targets one after the other.
#
# Each target first replays its checked-in corpus (tests/fuzz/corpus/<t>/, read-only here) plus,
# for `fuzz`, what earlier runs found ($BUILD_DIR/corpus/<t>/, where new inputs are written), then
# fuzzes for SECONDS. The smoke run (`test-fuzz`) starts from the checked-in seeds alone each time
# ($BUILD_DIR/smoke/<t>/ is emptied), so it takes the same time whatever ran before. A crash, leak, sanitizer report, timeout or out-of-memory fails the target; the input
# is saved under $BUILD_DIR/artifacts/<t>/ and the log under $BUILD_DIR/logs/<t>.log.
# Prints one line per target and a final "MODE: N passed, N failed, 0 skipped"; exits 1 if any failed.
set -u
mode=$1 secs=$2 build=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0
mkdir -p "$build/logs"
# Sanitizer reports are fatal; leaks are checked per input by libFuzzer.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "$@"; do
  bin=$build/bin/fuzz_$t
  seeds=$here/corpus/$t
  if [ "$mode" = test-fuzz ]; then
    work=$build/smoke/$t
    rm -rf "$work"
  else
    work=$build/corpus/$t
  fi
  art=$build/artifacts/$t
  log=$build/logs/$t.log
  mkdir -p "$work" "$art" "$seeds"
  opts=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1
        -artifact_prefix="$art/")
  [ -f "$here/$t.dict" ] && opts+=(-dict="$here/$t.dict")
  start=$(date +%s)
  "$bin" "${opts[@]}" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1)
  if [ $rc -eq 0 ]; then
    pass=$((pass + 1))
    printf '  PASS fuzz_%-12s %3ss  runs=%s exec/s=%s %s\n' "$t" "$took" "${runs:-?}" "${eps:-?}" "$cov"
  else
    fail=$((fail + 1))
    printf '  FAIL fuzz_%-12s exit %d after %ss (log: %s)\n' "$t" "$rc" "$took" "$log"
    grep -E 'ERROR: |SUMMARY: |invariant failed|runtime error|Test unit written' "$log" | head -n 8 | sed 's/^/       /'
  fi
done
echo "$mode: $pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
