# tests/fuzz/: libFuzzer targets for every parser that sees network input (tests/fuzz/README.md).
# Built with clang (-fsanitize=fuzzer,address,undefined) into $(FUZZ_B)/, never as part of `all`.
#
#   make fuzz                      each target for FUZZ_SECONDS (default 60), one after the other
#   make fuzz FUZZ_TARGETS="proto sync" FUZZ_SECONDS=600
#   make test-fuzz                 (a step of make test) replay every corpus, then fuzz each
#                                  target FUZZ_SMOKE_SECONDS (default 5)
#   make fuzz-seeds                regenerate the generated seed files (msgpack, tokens, sync)
#
# The seed corpora are checked in (tests/fuzz/corpus/<target>/); what a run discovers goes to
# $(FUZZ_B)/corpus/<target>/ and crashes to $(FUZZ_B)/artifacts/<target>/.

FUZZ_B ?= build-fuzz
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
# Debian 12: `clang` is clang-14; libFuzzer's runtime (libclang_rt.fuzzer) is in libclang-rt-14-dev,
# only a Recommends of clang, so it is named explicitly.
FUZZ_PACKAGES := clang libclang-rt-14-dev
FUZZ_STAMP := $(FUZZ_B)/.clang-ok
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# The project's warnings, minus a gcc-only option clang does not know.
FUZZ_CFLAGS = -std=gnu11 -O1 -gline-tables-only $(filter-out -Wno-format-truncation,$(WARN)) $(DEFS) $(INCS) $(FUZZ_SAN) \
              -fsanitize=fuzzer-no-link -pthread -MMD -MP
FUZZ_LIBS = $(PKG_LIBS) -lssl -lcrypto -lm

# What each target links besides its own file: only what it needs, so a fresh build stays small.
FUZZ_COMMON := common/util.o common/log.o common/cfg.o common/envreg.o common/cli.o
# Object lists come from the modules' own variables (paths relative to the build dir), so a file
# added to a module is linked here too.
FUZZ_PROTO := $(patsubst $(B)/%,%,$(PROTO_CODEC_OBJS))
FUZZ_GW_ALL := $(patsubst $(B)/%,%,$(filter-out $(B)/gateway/gw_main.o,$(GW_OBJS)) $(GW_LIB_OBJS))
FUZZ_OBJS_proto := $(FUZZ_PROTO) $(FUZZ_COMMON)
FUZZ_OBJS_json := gateway/gw_json.o $(FUZZ_PROTO) $(FUZZ_COMMON)
FUZZ_OBJS_query := gateway/gw_json.o gateway/gw_cors.o $(FUZZ_PROTO) $(FUZZ_COMMON)
FUZZ_OBJS_jwt := gateway/gw_auth.o $(FUZZ_COMMON)
FUZZ_OBJS_jwt_claims := gateway/gw_auth.o $(FUZZ_COMMON)
FUZZ_OBJS_ws := gateway/gw_wsframe.o gateway/gw_wsmsg.o gateway/gw_json.o $(FUZZ_PROTO) $(FUZZ_COMMON)
FUZZ_OBJS_store := $(patsubst $(B)/%,%,$(STORE_ENGINE_OBJS)) $(FUZZ_PROTO) $(FUZZ_COMMON)
FUZZ_OBJS_sync := sync/sync_client.o sync/leader.o $(FUZZ_PROTO) common/zutil.o $(FUZZ_COMMON)
# The gateway uses much of common/: all of it, so a helper added there links here too.
FUZZ_OBJS_http := $(FUZZ_GW_ALL) sync/sync_client.o sync/leader.o $(FUZZ_PROTO) proto/stats.o proto/dispatch.o \
                  $(CACHE_LIB_SRCS:%.c=%.o) \
                  $(patsubst $(B)/%,%,$(COMMON_OBJS))

FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_B)/bin/fuzz_%)

.PHONY: fuzz fuzz-build test-fuzz fuzz-seeds

# clang and the libFuzzer runtime, installed when missing; then a one-line link check.
$(FUZZ_STAMP):
	@missing=""; for p in $(FUZZ_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "fuzz: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "fuzz: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || exit 1; \
	fi
	@mkdir -p $(FUZZ_B)
	@echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return (int)(d && n && 0); }' | \
	  $(FUZZ_CC) -x c -fsanitize=fuzzer,address,undefined - -o $(FUZZ_B)/.linkcheck || \
	  { echo "fuzz: $(FUZZ_CC) cannot link -fsanitize=fuzzer (is libclang-rt-14-dev installed?)" >&2; exit 1; }
	@rm -f $(FUZZ_B)/.linkcheck
	@touch $@

$(FUZZ_B)/%.o: %.c | $(FUZZ_STAMP) $(DEB_STAMP)
	@mkdir -p $(dir $@)
	@echo "  FUZZCC $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

define FUZZ_template
$(FUZZ_B)/bin/fuzz_$(1): $(FUZZ_B)/tests/fuzz/fuzz_$(1).o $(addprefix $(FUZZ_B)/,$(FUZZ_OBJS_$(1)))
	@mkdir -p $$(dir $$@)
	@echo "  FUZZLD $$@"
	@$$(FUZZ_CC) $$(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $$@ $$^ $$(FUZZ_LIBS)
endef
$(foreach t,$(FUZZ_NAMES),$(eval $(call FUZZ_template,$(t))))

fuzz-build: $(FUZZ_BINS)

# Two compile jobs: the smoke run must stay short on a fresh machine.
FUZZ_JOBS ?= 2

fuzz:
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) fuzz-build
	@tests/fuzz/run.sh fuzz $(FUZZ_SECONDS) $(FUZZ_B) $(FUZZ_TARGETS)

TEST_STEPS += test-fuzz
test-fuzz:
	@if ! $(MAKE) --no-print-directory -j$(FUZZ_JOBS) fuzz-build; then \
	  echo "test-fuzz: 0 passed, $(words $(FUZZ_TARGETS)) failed, 0 skipped (build)"; exit 1; fi
	@tests/fuzz/run.sh test-fuzz $(FUZZ_SMOKE_SECONDS) $(FUZZ_B) $(FUZZ_TARGETS)

# The generated seeds: msgpack messages from proto's own encoders, tokens signed with the fuzz
# targets' secret, sync-client event sequences. (The text seeds are written by hand.)
$(FUZZ_B)/bin/gen_seeds: $(FUZZ_B)/tests/fuzz/gen_seeds.o $(addprefix $(FUZZ_B)/,gateway/gw_auth.o $(FUZZ_PROTO) $(FUZZ_COMMON))
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_SAN) -pthread -o $@ $^ $(FUZZ_LIBS)

fuzz-seeds: $(FUZZ_B)/bin/gen_seeds
	$(FUZZ_B)/bin/gen_seeds tests/fuzz/corpus

-include $(shell find $(FUZZ_B) -name '*.d' 2>/dev/null)
