# tests/openapi/: make test-openapi -- docs/openapi.yaml linted by Redocly CLI (npm package, pinned
# with its sha512 in tests/openapi/npm/package-lock.json; one bundled package, no dependencies),
# and its routes checked against the gateway's route table both ways. Part of make test.
# The package is fetched without npm by tests/deploy/npm-fetch.py (HTTPS to the npm registry,
# once; offline afterwards) into $(OPENAPI_TOOLS). It needs node 20.19+ or 22.12+; with an older
# node the lint checks say skipped and why.
TEST_STEPS += test-openapi
OPENAPI_TOOLS := $(abspath $(B))/tools/openapi
OPENAPI_STAMP := $(OPENAPI_TOOLS)/.npm-ok
OPENAPI_PYTHON ?= /usr/bin/python3
REDOCLY_CLI := $(OPENAPI_TOOLS)/node_modules/@redocly/cli/bin/cli.js
.PHONY: test-openapi openapi-tools

openapi-tools: $(OPENAPI_STAMP)
$(OPENAPI_STAMP): tests/openapi/npm/package.json tests/openapi/npm/package-lock.json | $(JS_NODE_STAMP)
	@missing=""; \
	[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$$missing ca-certificates"; \
	$(OPENAPI_PYTHON) -c 'import yaml' 2>/dev/null || missing="$$missing python3-yaml"; \
	if [ -n "$$missing" ]; then \
	  echo "openapi-tools: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "openapi-tools: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@echo "openapi-tools: @redocly/cli (as locked) into $(OPENAPI_TOOLS)"
	@rm -rf $(OPENAPI_TOOLS) && mkdir -p $(OPENAPI_TOOLS)
	@$(OPENAPI_PYTHON) tests/deploy/npm-fetch.py lock tests/openapi/npm/package-lock.json $(OPENAPI_TOOLS) >/dev/null
	@touch $@

# A failed install leaves REDOCLY unset: the lint checks then say skipped, naming the cause.
test-openapi:
	@$(MAKE) --no-print-directory openapi-tools || true
	@r=""; [ -f $(OPENAPI_STAMP) ] && r=$(REDOCLY_CLI); \
	  REDOCLY=$$r $(OPENAPI_PYTHON) tests/openapi/openapi_test.py
