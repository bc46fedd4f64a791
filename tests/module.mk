# tests/: Check unit tests (one binary per module: tests/unit/check_<module>.c) and integration
# tests (tests/integ/integ_<scenario>.c, Check suites that start the real binaries).
UNIT_SRCS := $(wildcard tests/unit/check_*.c)
UNIT_TESTS := $(UNIT_SRCS:%.c=$(B)/%)
INTEG_SRCS := $(wildcard tests/integ/integ_*.c)
INTEG_TESTS := $(INTEG_SRCS:%.c=$(B)/%)
INTEG_HARNESS_SRCS := $(filter-out tests/integ/integ_%.c,$(wildcard tests/integ/*.c))
INTEG_HARNESS_OBJS := $(INTEG_HARNESS_SRCS:%.c=$(B)/%.o)
# (ws_client.c verifies Sec-WebSocket-Accept with OpenSSL SHA-1: -lcrypto on the integ link line.)
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOLS := $(TOOL_SRCS:tests/tools/%.c=$(B)/bin/%)
TEST_BINS += $(UNIT_TESTS) $(INTEG_TESTS) $(TOOLS)

# Every library, users before what they use (static link order).
ALL_LIBS = $(NODE_LIBS) $(GW_LIB) $(STORE_LIB) $(SYNC_LIB) $(CACHE_LIB) $(PROTO_LIB) $(COMMON_LIB)

$(B)/tests/unit/check_%: $(B)/tests/unit/check_%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lcrypto -lm

$(B)/tests/integ/integ_%: $(B)/tests/integ/integ_%.o $(INTEG_HARNESS_OBJS) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(INTEG_HARNESS_OBJS) $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lcrypto -lm

# (-lcrypto: libgw.a's gw_wsframe.o computes Sec-WebSocket-Accept with OpenSSL SHA-1.)
$(B)/bin/%: $(B)/tests/tools/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(PKG_LIBS) -lcrypto -lm

# The replication tests and bench also link the repl harness, librepl and libraft/libuv.
REPL_HARNESS_OBJS := $(B)/tests/unit/repl_harness.o
$(B)/tests/unit/check_repl: $(B)/tests/unit/check_repl.o $(REPL_HARNESS_OBJS) $(REPL_LIB) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(REPL_HARNESS_OBJS) $(REPL_LIB) $(ALL_LIBS) $(PKG_LIBS) $(REPL_LIBS) $(CHECK_LIBS) -lm

$(B)/bin/replbench: $(B)/tests/tools/replbench.o $(REPL_HARNESS_OBJS) $(REPL_LIB) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(REPL_HARNESS_OBJS) $(REPL_LIB) $(ALL_LIBS) $(PKG_LIBS) $(REPL_LIBS) -lm

# TRACES_DIR: the cache traces (shared/traces beside the checkout, as CI provides them).
TRACES_DIR ?= $(abspath ../shared/traces)
export TRACES_DIR

# Integration tests find the binaries through PRESENCE_BIN (the build they should exercise).
test-unit: all
	@tests/run-tests.sh unit $(UNIT_TESTS)

test-integ: all
	@PRESENCE_BIN=$(abspath $(B))/bin tests/run-tests.sh integ $(INTEG_TESTS)

test-integ-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 all
	@PRESENCE_BIN=$(abspath build-asan)/bin ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=32 \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1 CK_TIMEOUT_MULTIPLIER=3 \
	  tests/run-tests.sh integ-asan $(patsubst $(B)/%,build-asan/%,$(INTEG_TESTS))

test: all
	@set -o pipefail; status=0; : > $(B)/test-summary.log; \
	for t in $(TEST_STEPS); do \
	  $(MAKE) --no-print-directory $$t 2>&1 | tee $(B)/$$t.log || status=1; \
	  line=$$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' $(B)/$$t.log | tail -n 1); \
	  echo "$${line:-$$t: 0 passed, 1 failed, 0 skipped (no summary: see $(B)/$$t.log)}" >> $(B)/test-summary.log; \
	done; \
	echo "=== summary"; cat $(B)/test-summary.log; \
	grep -h '^skip ' $(B)/*.log 2>/dev/null | sort -u | sed 's/^/  /'; \
	awk '/ passed, [0-9]+ failed/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; \
	       if ($$(i+1) ~ /^failed/) f += $$i; if ($$(i+1) ~ /^skipped/) s += $$i } } \
	     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' $(B)/test-summary.log; \
	exit $$status

# The HTTP/2 rapid reset probe (BENCHMARKS.md, RELIABILITY.md) shares the integration tests'
# minimal HTTP/2 client.
$(B)/bin/h2reset: $(B)/tests/tools/h2reset.o $(B)/tests/integ/h2_client.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(B)/tests/integ/h2_client.o $(ALL_LIBS) $(PKG_LIBS) -lcrypto -lm
