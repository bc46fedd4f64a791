# tests/bench/: benchmark helpers built with `make all` (small, so they cost little build time).
#   h2o_bare   the "bare h2o" yardstick: /json ceiling, /ws (h2o + wslay), /ws-raw (own framing)
# The h2o websocket API's header includes <wslay/wslay.h> (libwslay-dev, in DEB_PACKAGES); the
# wslay calls we make ourselves need -lwslay on the link line.
BARE_OBJS := $(B)/tests/bench/h2o_bare.o $(B)/tests/bench/bare_wslay.o $(B)/tests/bench/bare_raw.o
TEST_BINS += $(B)/bin/h2o_bare

$(B)/bin/h2o_bare: $(BARE_OBJS) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lwslay -lssl -lcrypto -lm
