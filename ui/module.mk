# ui/: the live presence page. `make` installs the files of ui/MANIFEST (the page, the JS client,
# the OpenAPI document) into $(UI_BUILD_DIR), where a gateway started from build/bin finds them
# (UI_DIR, default <gateway binary>/../share/presence/ui), with the MANIFEST itself: the gateway
# serves exactly the names it lists (gateway/gw_ui.c). Static files only: no build step.
UI_BUILD_DIR := $(B)/share/presence/ui
UI_STAMP := $(UI_BUILD_DIR)/.installed
UI_SOURCES := $(shell awk '!/^\#/ && NF >= 2 { print $$2 }' ui/MANIFEST 2>/dev/null)
BINS += $(UI_STAMP)
.PHONY: ui
ui: $(UI_STAMP)

$(UI_STAMP): ui/MANIFEST ui/module.mk $(UI_SOURCES)
	@rm -rf $(UI_BUILD_DIR) && mkdir -p $(UI_BUILD_DIR)
	@awk '!/^#/ && NF >= 2 { print $$1, $$2 }' ui/MANIFEST | while read -r name src; do \
	  install -m 0644 "$$src" "$(UI_BUILD_DIR)/$$name" || exit 1; done
	@install -m 0644 ui/MANIFEST $(UI_BUILD_DIR)/MANIFEST
	@touch $@
