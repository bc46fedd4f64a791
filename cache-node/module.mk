# cache-node/: the cache engine (libcache.a), the cache-node (libcachenode.a: the node itself, unit
# tested; the binary adds its main) and the cachesim trace replayer.
CACHE_LIB_SRCS := cache-node/cache.c cache-node/cache_sketch.c cache-node/cache_shadow.c
CACHE_LIB := $(B)/libcache.a
$(CACHE_LIB): $(CACHE_LIB_SRCS:%.c=$(B)/%.o)
	$(AR) rcs $@ $^

CACHE_NODE_LIB := $(B)/libcachenode.a
$(CACHE_NODE_LIB): $(B)/cache-node/cache_node.o $(B)/cache-node/cache_serve.o $(B)/cache-node/cache_link.o \
                   $(B)/cache-node/cache_apply.o $(B)/cache-node/cache_stats.o
	$(AR) rcs $@ $^
NODE_LIBS += $(CACHE_NODE_LIB)

BINS += $(B)/cachesim
$(B)/cachesim: $(B)/cache-node/cachesim.o $(CACHE_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

BINS += $(B)/bin/cache-node
$(B)/bin/cache-node: $(B)/cache-node/cache_node_main.o $(CACHE_NODE_LIB) $(SYNC_LIB) $(CACHE_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
