# launcher/: presenced, the one command that starts a whole node (make run).
BINS += $(B)/bin/presenced
$(B)/bin/presenced: $(B)/launcher/presenced.o $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
