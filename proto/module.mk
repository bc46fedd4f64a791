# proto/: the msgpack wire format and stats lists (libproto.a). No I/O.
PROTO_LIB := $(B)/libproto.a
PROTO_CODEC_OBJS := $(B)/proto/proto.o $(B)/proto/proto_enc.o $(B)/proto/proto_record.o
$(PROTO_LIB): $(PROTO_CODEC_OBJS) $(B)/proto/stats.o $(B)/proto/dispatch.o
	$(AR) rcs $@ $^
