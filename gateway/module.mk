# gateway/: the HTTP gateway. libgw.a holds the pure logic (unit tested); the binary adds h2o glue.
GW_LIB := $(B)/libgw.a
GW_LIB_OBJS := $(B)/gateway/gw_json.o $(B)/gateway/gw_auth.o $(B)/gateway/gw_cors.o $(B)/gateway/gw_ratelimit.o \
               $(B)/gateway/gw_rendezvous.o $(B)/gateway/gw_path.o $(B)/gateway/gw_uifiles.o \
               $(B)/gateway/gw_wsframe.o $(B)/gateway/gw_wsmsg.o $(B)/gateway/gw_wsrate.o \
               $(B)/gateway/gw_access.o $(B)/gateway/gw_promtext.o $(B)/gateway/gw_near.o
GW_LIB_OBJS += $(B)/gateway/gw_clientaddr.o $(B)/gateway/gw_climit.o $(B)/gateway/gw_head.o $(B)/gateway/gw_penalty.o
$(GW_LIB): $(GW_LIB_OBJS)
	$(AR) rcs $@ $^

GW_OBJS := $(B)/gateway/gw_main.o $(B)/gateway/gw_config.o $(B)/gateway/gw_http.o $(B)/gateway/gw_upstream.o $(B)/gateway/gw_metrics.o \
           $(B)/gateway/gw_watch.o $(B)/gateway/gw_discovery.o $(B)/gateway/gw_zfd.o $(B)/gateway/gw_conns.o $(B)/gateway/gw_thread.o $(B)/gateway/gw_reply.o \
           $(B)/gateway/gw_routes.o $(B)/gateway/gw_guard.o $(B)/gateway/gw_single.o $(B)/gateway/gw_sessions.o $(B)/gateway/gw_multi.o \
           $(B)/gateway/gw_batch.o $(B)/gateway/gw_health.o $(B)/gateway/gw_watch_hub.o $(B)/gateway/gw_notifier.o \
           $(B)/gateway/gw_connect.o $(B)/gateway/gw_ws.o $(B)/gateway/gw_wsconn.o $(B)/gateway/gw_wssess.o \
           $(B)/gateway/gw_wswatch.o $(B)/gateway/gw_lease.o $(B)/gateway/gw_wsend.o
GW_OBJS += $(B)/gateway/gw_front.o $(B)/gateway/gw_h2guard.o
GW_OBJS += $(B)/gateway/gw_ui.o
GW_OBJS += $(B)/gateway/gw_nearcall.o
BINS += $(B)/bin/gateway $(B)/bin/presence-token
$(B)/bin/gateway: $(GW_OBJS) $(GW_LIB) $(SYNC_LIB) $(CACHE_LIB) $(PROTO_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lssl -lcrypto -lm

$(B)/bin/presence-token: $(B)/gateway/presence_token.o $(GW_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm
