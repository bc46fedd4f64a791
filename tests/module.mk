# tests/: Check unit tests (one binary per module: tests/unit/check_<module>.c) and integration
# tests (tests/integ/integ_<scenario>.c, Check suites that start the real binaries).
UNIT_SRCS := $(wildcard tests/unit/check_*.c)
UNIT_TESTS := $(UNIT_SRCS:%.c=$(B)/%)
INTEG_SRCS := $(wildcard tests/integ/integ_*.c)
INTEG_TESTS := $(INTEG_SRCS:%.c=$(B)/%)
INTEG_HARNESS_SRCS := $(filter-out tests/integ/integ_%.c,$(wildcard tests/integ/*.c))
INTEG_HARNESS_OBJS := $(INTEG_HARNESS_SRCS:%.c=$(B)/%.o)
TEST_BINS += $(UNIT_TESTS) $(INTEG_TESTS)

# Every library, users before what they use (static link order).
ALL_LIBS = $(GW_LIB) $(STORE_LIB) $(SYNC_LIB) $(CACHE_LIB) $(PROTO_LIB) $(COMMON_LIB)

$(B)/tests/unit/check_%: $(B)/tests/unit/check_%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lm

$(B)/tests/integ/integ_%: $(B)/tests/integ/integ_%.o $(INTEG_HARNESS_OBJS) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(INTEG_HARNESS_OBJS) $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lm

# TRACES_DIR: the cache traces (shared/traces beside the checkout, as CI provides them).
TRACES_DIR ?= $(abspath ../shared/traces)
export TRACES_DIR

test-unit: all
	@tests/run-tests.sh unit $(UNIT_TESTS)
