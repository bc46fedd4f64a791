# store-node/: the LMDB store engine (libstore.a) and the store-node process.
STORE_LIB := $(B)/libstore.a
$(STORE_LIB): $(B)/store-node/store.o $(B)/store-node/store_write.o $(B)/store-node/store_model.o
	$(AR) rcs $@ $^

BINS += $(B)/bin/store-node
$(B)/bin/store-node: $(B)/store-node/store_node.o $(STORE_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
