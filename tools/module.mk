# tools/: small programs shipped in the container image beside the services.
#   presence-probe   health probe (ZeroMQ PING to store/cache/relay, HTTP GET to the gateway)
#   presence-keygen  CurveZMQ key pairs for the center <-> leaf link
#   presence-ws      a command-line WebSocket client (trying GET /api/v2/presence/connect)
BINS += $(B)/bin/presence-probe $(B)/bin/presence-keygen

$(B)/bin/presence-probe: $(B)/tools/presence_probe.o $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(B)/bin/presence-keygen: $(B)/tools/presence_keygen.o $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# presence-ws: a command-line WebSocket client for the presence endpoint (README's example); the
# protocol is the integration tests' client (tests/integ/ws_client.c).
BINS += $(B)/bin/presence-ws
$(B)/bin/presence-ws: $(B)/tools/presence_ws.o $(B)/tests/integ/ws_client.o $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcrypto -lm
