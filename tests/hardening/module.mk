# tests/hardening/: long-running and heavyweight checks of the whole service.
#
#   make soak [DURATION=600]   a center and a leaf region under a mixed load (tests/tools/soakload)
#                              for DURATION seconds; flat memory, no error growth, no restart
#                              (tests/hardening/soak.sh says how each is judged). Results (CSV of
#                              every process's memory, the load, the gateways' error counters, and
#                              summary.txt) in $(B)/soak. Not part of `make test`.
#   make valgrind-smoke        store-node, cache-node, gateway and sync-relay under valgrind
#                              memcheck through a short smoke workload
#                              (tests/hardening/valgrind-smoke.sh); logs in $(B)/valgrind.
#                              Part of `make test` as the step test-valgrind.
.PHONY: soak valgrind-smoke test-valgrind valgrind-deps

DURATION ?= 600
TEST_STEPS += test-valgrind

soak: all
	@DURATION=$(DURATION) PRESENCE_BIN=$(abspath $(B))/bin SOAK_OUT=$(abspath $(B))/soak tests/hardening/soak.sh

# valgrind is only needed here: installed on first use (apt-get, as root), like `make deps`.
valgrind-deps:
	@command -v valgrind >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "valgrind-smoke: need root to apt-get install valgrind" >&2; exit 1; fi; \
	  echo "valgrind-smoke: installing valgrind"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }

valgrind-smoke: all valgrind-deps
	@PRESENCE_BIN=$(abspath $(B))/bin VG_OUT=$(abspath $(B))/valgrind tests/hardening/valgrind-smoke.sh

test-valgrind: valgrind-smoke
