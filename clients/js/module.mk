# clients/js/: the JavaScript client (presence.js) and its tests under node's built-in test runner,
# against the real stack (make test-js; part of make test). Node: the machine's own (node 20 here);
# where there is none, nodejs from Debian (node 18 runs the client and the REST/SSE tests; the
# WebSocket tests need node 20.10+ or 22 and say skipped otherwise).
TEST_STEPS += test-js
JS_NODE_STAMP := $(B)/.js-node-ok
.PHONY: test-js js-deps

js-deps: $(JS_NODE_STAMP)
$(JS_NODE_STAMP):
	@if ! command -v node >/dev/null; then \
	  echo "js-deps: installing nodejs"; \
	  if [ "$$(id -u)" != 0 ]; then echo "js-deps: need root to apt-get install nodejs" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs >/dev/null || exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

test-js: all
	@$(MAKE) --no-print-directory js-deps || true
	@PRESENCE_BIN=$(abspath $(B))/bin LOG=$(B)/test-js.tap clients/js/run-tests.sh
