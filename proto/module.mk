# proto/: the msgpack wire format and stats lists (libproto.a). No I/O.
PROTO_LIB := $(B)/libproto.a
$(PROTO_LIB): $(B)/proto/proto.o $(B)/proto/stats.o $(B)/proto/dispatch.o
	$(AR) rcs $@ $^
