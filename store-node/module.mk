# store-node/: the LMDB store engine (libstore.a), the store-node (libstorenode.a: the node itself,
# unit tested; the binary adds its main).
STORE_LIB := $(B)/libstore.a
STORE_ENGINE_OBJS := $(B)/store-node/store.o $(B)/store-node/store_write.o $(B)/store-node/store_sweep.o \
                     $(B)/store-node/store_model.o $(B)/store-node/store_replica.o
$(STORE_LIB): $(STORE_ENGINE_OBJS)
	$(AR) rcs $@ $^

STORE_NODE_LIB := $(B)/libstorenode.a
$(STORE_NODE_LIB): $(B)/store-node/store_node.o $(B)/store-node/store_writer.o $(B)/store-node/store_repl.o \
                   $(B)/store-node/store_entry.o $(B)/store-node/store_queue.o
	$(AR) rcs $@ $^
# The node links the replication layer (librepl: libraft + libuv) whether or not it is used.
NODE_LIBS += $(STORE_NODE_LIB) $(REPL_LIB)
PKG_LIBS += $(REPL_LIBS)

BINS += $(B)/bin/store-node
$(B)/bin/store-node: $(B)/store-node/store_node_main.o $(STORE_NODE_LIB) $(REPL_LIB) $(STORE_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The replication layer (repl*.c: a Raft member on libraft + libuv; repl_int.h names the files).
# Its own archive and pkg-config flags (only repl*.c include libraft's and libuv's headers).
REPL_PKGS := raft libuv
REPL_CFLAGS = $(shell pkg-config --cflags $(REPL_PKGS) 2>/dev/null)
REPL_LIBS = $(shell pkg-config --libs $(REPL_PKGS) 2>/dev/null)
REPL_OBJS := $(B)/store-node/repl.o $(B)/store-node/repl_config.o $(B)/store-node/repl_fsm.o \
             $(B)/store-node/repl_loop.o $(B)/store-node/repl_dns.o
$(REPL_OBJS): PKG_CFLAGS += $(REPL_CFLAGS)
$(REPL_LIB): $(REPL_OBJS)
	$(AR) rcs $@ $^
