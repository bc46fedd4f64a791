# sync/: the change-stream client (libsync.a) and the leaf region's sync relay (librelay.a: the
# relay itself, unit tested; the binary adds its main).
SYNC_LIB := $(B)/libsync.a
$(SYNC_LIB): $(B)/sync/sync_client.o $(B)/sync/leader.o
	$(AR) rcs $@ $^

RELAY_LIB := $(B)/librelay.a
$(RELAY_LIB): $(B)/sync/relay.o
	$(AR) rcs $@ $^
NODE_LIBS += $(RELAY_LIB)

BINS += $(B)/bin/sync-relay
$(B)/bin/sync-relay: $(B)/sync/relay_main.o $(RELAY_LIB) $(SYNC_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
