/* gw_ui.h -- the live page's configuration and files (gateway/gw_ui.c; its handlers are in
 * gw_endpoints.h).
 *
 * gw_ui_load runs once in main, after gw_config_load and before any thread starts; from then on
 * what it loaded is read-only and every thread serves from it without locks.
 */
#ifndef PRESENCE_GW_UI_H
#define PRESENCE_GW_UI_H

/* How long a development token lives (POST /api/v2/dev/token). */
#define GW_UI_DEV_TOKEN_TTL_S (24 * 3600)

/* Read UI_ENABLED, UI_DIR and PRESENCE_DEV_SECRET and load UI_DIR/MANIFEST's files into memory.
 * Returns 0, or -1 with err (CFG_ERR_LEN) naming the variable and the rule: a UI_DIR given but
 * not loadable, a default UI_DIR present but broken, PRESENCE_DEV_SECRET=true while JWT_SECRET is
 * not the launcher's development secret in DATA_DIR/dev-jwt-secret. A default UI_DIR that does
 * not exist is not an error: a warning is logged and the page's routes answer 404 saying so.
 * Needs gw_cfg loaded (the JWT secret). Main thread, once. */
int gw_ui_load(char *err);

/* Release the loaded files (at exit; nothing may serve afterwards). */
void gw_ui_fini(void);

#endif
