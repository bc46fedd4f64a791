# common/: libcommon.a, what every process shares: log, cfg, util, zutil, cli, envreg, curve, and
# the kit the process shells are built on (idtab, seqwin, zloop; proto/dispatch.c is the fourth).
COMMON_SRCS := $(wildcard common/*.c)
COMMON_OBJS := $(COMMON_SRCS:%.c=$(B)/%.o)
COMMON_LIB := $(B)/libcommon.a

# The version every binary reports (--version, build info); the commit is the checkout's, and
# only cli.o is rebuilt when it changes.
PRESENCE_VERSION := 2.1.0
PRESENCE_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
$(B)/common/cli.o: CFLAGS += -DPRESENCE_VERSION='"$(PRESENCE_VERSION)"' -DPRESENCE_COMMIT='"$(PRESENCE_COMMIT)"'
$(B)/common/cli.o: $(B)/.commit
$(B)/.commit: FORCE | $(DEB_STAMP)
	@echo '$(PRESENCE_COMMIT)' | cmp -s - $@ || echo '$(PRESENCE_COMMIT)' > $@
.PHONY: FORCE
FORCE:

$(COMMON_LIB): $(COMMON_OBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^
