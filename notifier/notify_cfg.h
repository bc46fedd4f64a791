/* notify_cfg.h -- the notifier's configuration: webhook targets and tuning, from the environment.
 *
 * Targets (docs/WEBHOOKS.md):
 *   WEBHOOK_URLS     comma-separated http:// or https:// URLs (1..16)
 *   WEBHOOK_SECRETS  comma-separated signing secrets: one for every target, or exactly one per URL
 *                    in the same order; or WEBHOOK_SECRETS_FILE: a file with the same list (commas
 *                    or one a line). Required; each 16..256 printable ASCII bytes without ','.
 *   WEBHOOK_EVENTS   comma-separated event filters: one for every target, or one per URL; a filter
 *                    is `all` (or `*`) or type names joined by '+' (online+offline). Default all.
 *   WEBHOOK_PRIVILEGED  comma-separated true/false, one for every target or one per URL: a
 *                    privileged target gets the user's own view (invisible mode not applied).
 * Every value is validated strictly: an invalid one is a startup error whose text names the
 * variable (and the item), as common/cfg.h does for the other processes.
 *
 * notify_cfg_targets() and notify_cfg_privileged() parse given strings (no environment:
 * unit-testable); notify_cfg_load() reads the environment (every variable is listed in
 * common/envreg.c, which `notifier --help` prints). Not thread-safe (getenv); called once at
 * startup.
 */
#ifndef PRESENCE_NOTIFY_CFG_H
#define PRESENCE_NOTIFY_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NOTIFY_TARGETS_MAX 16
#define NOTIFY_URL_MAX 2048
#define NOTIFY_SECRET_MIN 16
#define NOTIFY_SECRET_MAX 256

typedef struct notify_target_cfg {
    char url[NOTIFY_URL_MAX + 1];
    char shown[NOTIFY_URL_MAX + 1]; /* scheme://host[:port]/path: no user info, no query (for logs) */
    char secret[NOTIFY_SECRET_MAX + 1];
    size_t secret_len;
    uint32_t mask; /* wanted event types: 1u << enum notify_type; NOTIFY_MASK_PRIVILEGED */
} notify_target_cfg_t;

typedef struct notify_cfg {
    notify_target_cfg_t targets[NOTIFY_TARGETS_MAX];
    uint32_t ntargets;
    bool any_privileged; /* some target takes the user's own view */
    char data_dir[400];
    char store_cmd[512], store_pub[512]; /* the change stream, as the gateway and cache-nodes */
    char endpoint[512];                  /* our ROUTER: PING and STATS (presence-probe, metrics) */
    char ca_file[512];                   /* WEBHOOK_CA_FILE: extra CA bundle ("" = system's) */
    char proxy[512];                     /* WEBHOOK_PROXY ("" = direct; *_proxy variables ignored) */
    uint64_t connect_timeout_ms, timeout_ms;
    uint64_t batch_max, batch_bytes;
    uint64_t debounce_ms;
    uint64_t backoff_min_ms, backoff_max_ms;
    bool retry_4xx;
    uint64_t log_max_bytes, log_max_age_ms;
    uint64_t map_size_mb, map_max_mb;
    uint64_t hb_limit_ms, request_timeout_ms, sub_hwm;
    uint64_t stop_grace_ms, stats_log_ms;
} notify_cfg_t;

/* Parse the three target lists (secrets is the text of WEBHOOK_SECRETS or of the file; events may
 * be NULL or empty = all). `secrets_name` is the variable named in errors. Returns 0, or -1 with
 * err (CFG_ERR_LEN) naming the variable and what is wrong. */
int notify_cfg_targets(notify_cfg_t *c, const char *urls, const char *secrets, const char *secrets_name,
                       const char *events, char *err);

/* Parse WEBHOOK_PRIVILEGED (list: NULL or empty = none) for the c->ntargets targets already
 * parsed: sets NOTIFY_MASK_PRIVILEGED in their masks and c->any_privileged. Returns 0, or -1 with
 * err naming the variable. */
int notify_cfg_privileged(notify_cfg_t *c, const char *list, char *err);

/* Defaults, then every variable of the environment. Returns 0, or -1 with err naming the
 * variable. */
int notify_cfg_load(notify_cfg_t *c, char *err);

#endif
