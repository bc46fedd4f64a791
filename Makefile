# presence: a distributed presence service in C (h2o + ZeroMQ + LMDB + msgpack).
#
# Non-recursive make: every module contributes a `module.mk` fragment that appends to the
# variables below and declares its own binaries. Everything is built into $(BUILD)/.
#
#   make deps     install the Debian packages the build needs (apt-get, as root), if missing
#   make          build every binary into build/
#   make run      build, then start a complete center node on localhost:$(SERVICE_PORT)
#   make token    print a development JWT:  make token SUB=alice [SCOPE=presence:admin]
#   make test     unit, integration (normal and ASan/UBSan), fuzz and valgrind smoke, deploy checks
#   make asan     build everything with AddressSanitizer + UBSan into build-asan/
#   make bench    benchmarks (not part of `make test`); see BENCHMARKS.md
#   make fuzz     libFuzzer targets, FUZZ_SECONDS each (tests/fuzz)
#   make soak     mixed load for DURATION seconds, flat memory and no errors (tests/hardening)

SHELL := /bin/bash
# Compile in parallel by default (one job per core); `make -jN` on the command line wins.
# (Top level only: sub-makes share the top level's job server.)
ifeq ($(MAKELEVEL),0)
  ifeq ($(filter -j%,$(MAKEFLAGS)),)
    MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
  endif
endif
.DEFAULT_GOAL := all

BUILD ?= build
B := $(BUILD)

# Debian packages the build and tests need. `make deps` installs the missing ones.
DEB_PACKAGES := build-essential pkg-config libh2o-evloop-dev libssl-dev libzmq3-dev libmsgpack-dev \
                liblmdb-dev libjwt-dev libjansson-dev check curl zlib1g-dev iproute2 procps python3 \
                libwslay-dev libraft-dev libuv1-dev libcurl4-openssl-dev prometheus
DEB_STAMP := $(B)/.deps-ok

PKGS := libh2o-evloop libzmq msgpack lmdb libjwt jansson zlib
OPT ?= -O2 -g
WARN ?= -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wformat=2 -Wno-format-nonliteral -Wno-format-truncation
SAN ?=
ifeq ($(SAN),1)
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT := -O1 -g
endif
# h2o.h falls back to libuv without a backend macro; Debian ships the evloop flavour.
DEFS := -D_GNU_SOURCE -DH2O_USE_LIBUV=0
INCS := -I. -Icommon -Iproto -Isync -Icache-node -Istore-node -Igateway -Inotifier
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS := -std=gnu11 $(OPT) $(WARN) $(DEFS) $(INCS) $(SANFLAGS) -pthread -MMD -MP
LDFLAGS := $(SANFLAGS) -pthread
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)

# Library archives, named here so any module's rules can depend on any of them (make expands
# prerequisites when it reads a rule).
COMMON_LIB := $(B)/libcommon.a
PROTO_LIB := $(B)/libproto.a
SYNC_LIB := $(B)/libsync.a
STORE_LIB := $(B)/libstore.a
REPL_LIB := $(B)/librepl.a
CACHE_LIB := $(B)/libcache.a
GW_LIB := $(B)/libgw.a

# Filled in by the module fragments. NODE_LIBS: each process's own logic as a library (its
# state struct and request handling, unit tested without a process); the binary adds its main.
NODE_LIBS :=
BINS :=
TEST_BINS :=
UNIT_TESTS :=
INTEG_TESTS :=
# Steps `make test` runs in order; each must print a line "<name>: N passed, N failed, N skipped"
# (a check that cannot run here is skipped with its reason, never counted as passed).
TEST_STEPS := test-unit test-readme test-integ test-integ-asan

.SECONDARY:
.PHONY: all deps run token test test-unit test-integ test-integ-asan asan bench clean fmt deploy-check

include common/module.mk
include proto/module.mk
include store-node/module.mk
include cache-node/module.mk
include sync/module.mk
include gateway/module.mk
include launcher/module.mk
include tools/module.mk
include tests/module.mk
include tests/readme/module.mk
include tests/bench/module.mk
# After tests/module.mk: its explicit test rules use ALL_LIBS and the harness objects.
include notifier/module.mk
# Optional fragments (partition, fuzzing, deployment checks, valgrind, limits) add their steps to TEST_STEPS.
-include tests/partition/module.mk
-include tests/fuzz/module.mk
-include tests/deploy/module.mk
-include tests/hardening/module.mk
-include tests/limits/module.mk
-include tests/monitoring/module.mk

all: $(DEB_STAMP) $(BINS) $(TEST_BINS)

# --- dependencies ---------------------------------------------------------------------------
deps: $(DEB_STAMP)
$(DEB_STAMP): Makefile
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "deps: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@mkdir -p $(B) && touch $@

# Every object depends on the deps stamp (order-only) so a fresh machine installs first.
$(B)/%.o: %.c | $(DEB_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# --- running ---------------------------------------------------------------------------------
SERVICE_PORT ?= 8080
DATA_DIR ?= ./data
export SERVICE_PORT DATA_DIR

# `make run` is a development node (public reads, a generated secret): it listens on loopback
# unless SERVICE_ADDR says otherwise. Containers and Helm run presenced directly and bind all
# interfaces (the gateway's own default).
SERVICE_ADDR ?= 127.0.0.1
run: all
	@SERVICE_ADDR='$(SERVICE_ADDR)' exec $(B)/bin/presenced

token: $(B)/bin/presence-token
	@$(B)/bin/presence-token "$(SUB)" "$(SCOPE)"

# --- sanitizer build -------------------------------------------------------------------------
asan:
	$(MAKE) BUILD=build-asan SAN=1 all

clean:
	rm -rf build build-asan

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# --- benchmarks (not part of make test) -------------------------------------------------------
BENCH_PACKAGES := wrk redis-server webdis redis-tools nghttp2-client
bench: all
	@missing=""; for p in $(BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; fi
	tests/bench/run.sh $(BENCH)
