# sync/: the change-stream client (libsync.a) and the leaf region's sync relay.
SYNC_LIB := $(B)/libsync.a
$(SYNC_LIB): $(B)/sync/sync_client.o
	$(AR) rcs $@ $^

BINS += $(B)/bin/sync-relay
$(B)/bin/sync-relay: $(B)/sync/relay.o $(SYNC_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
