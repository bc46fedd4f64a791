# tests/browser/: make test-browser -- the live page in headless Chromium against the real stack
# (two users in two browsers: online, busy, offline after the grace; screenshots in
# $(B)/browser/). Part of make test. Chromium is heavy (~300 MB with its libraries), so it is not
# in the core DEB_PACKAGES: this step installs chromium, chromium-driver and python3-selenium
# itself when missing (as root); without them the step says skipped and why.
TEST_STEPS += test-browser
BROWSER_PACKAGES := chromium chromium-driver python3-selenium
BROWSER_STAMP := $(B)/.browser-deps-ok
BROWSER_PYTHON ?= /usr/bin/python3
.PHONY: test-browser browser-deps

browser-deps: $(BROWSER_STAMP)
$(BROWSER_STAMP):
	@missing=""; for p in $(BROWSER_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "browser-deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "browser-deps: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@mkdir -p $(dir $@) && touch $@

# An install that fails leaves the script to report what is missing (skipped, with the reason).
test-browser: all
	@$(MAKE) --no-print-directory browser-deps || true
	@PRESENCE_BIN=$(abspath $(B))/bin UI_DIR=$(abspath $(UI_BUILD_DIR)) OUT=$(abspath $(B))/browser \
	  $(BROWSER_PYTHON) tests/browser/browser_test.py
