# cache-node/: the cache engine (libcache.a), the cache-node process and the cachesim trace replayer.
CACHE_LIB_SRCS := cache-node/cache.c
CACHE_LIB := $(B)/libcache.a
$(CACHE_LIB): $(CACHE_LIB_SRCS:%.c=$(B)/%.o)
	$(AR) rcs $@ $^

BINS += $(B)/cachesim
$(B)/cachesim: $(B)/cache-node/cachesim.o $(CACHE_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

BINS += $(B)/bin/cache-node
$(B)/bin/cache-node: $(B)/cache-node/cache_node.o $(SYNC_LIB) $(CACHE_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
