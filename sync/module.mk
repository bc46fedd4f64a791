# sync/: the change-stream client (libsync.a) and the leaf region's sync relay.
SYNC_LIB := $(B)/libsync.a
$(SYNC_LIB): $(B)/sync/sync_client.o
	$(AR) rcs $@ $^
