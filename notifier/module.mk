# notifier/: the webhook notifier (build/bin/notifier). libnotify.a holds the engine (notify.c,
# pure), the configuration and the LMDB layer, which the unit tests link; the binary adds the
# libcurl glue (notify_http.c) and the process (notifier.c and its notifier_*.c parts, sharing
# notifier_int.h). libcurl is linked here only.
NOTIFY_LIB := $(B)/libnotify.a
NOTIFY_LIB_OBJS := $(B)/notifier/notify.o $(B)/notifier/notify_cfg.o $(B)/notifier/notify_db.o
CURL_CFLAGS = $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null)

$(NOTIFY_LIB): $(NOTIFY_LIB_OBJS)
	$(AR) rcs $@ $^

NOTIFIER_OBJS := $(B)/notifier/notifier.o $(B)/notifier/notifier_stream.o $(B)/notifier/notifier_state.o \
                 $(B)/notifier/notifier_deliver.o $(B)/notifier/notify_http.o
$(NOTIFIER_OBJS): CFLAGS += $(CURL_CFLAGS)

BINS += $(B)/bin/notifier
$(B)/bin/notifier: $(NOTIFIER_OBJS) $(NOTIFY_LIB) $(GW_LIB) $(SYNC_LIB) \
                   $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CURL_LIBS) -lcrypto -lm

# The engine's unit tests and the webhook integration tests need OpenSSL (HMAC) besides the usual
# libraries: explicit rules (they win over tests/module.mk's patterns).
$(B)/tests/unit/check_notify: $(B)/tests/unit/check_notify.o $(NOTIFY_LIB) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(NOTIFY_LIB) $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lcrypto -lm

# The test's webhook receiver (tests/integ/webhooks/, outside the harness wildcard: it needs
# OpenSSL for its TLS variant, which the other integration tests do not link).
WEBHOOK_RX_OBJ := $(B)/tests/integ/webhooks/webhook_rx.o
$(B)/tests/integ/integ_webhooks: $(B)/tests/integ/integ_webhooks.o $(WEBHOOK_RX_OBJ) $(INTEG_HARNESS_OBJS) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $< $(WEBHOOK_RX_OBJ) $(INTEG_HARNESS_OBJS) $(ALL_LIBS) $(PKG_LIBS) $(CHECK_LIBS) -lssl -lcrypto -lm
