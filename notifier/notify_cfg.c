/* notify_cfg.c -- the notifier's configuration (see notify_cfg.h).
 *
 * The target lists are parsed by index: item i of WEBHOOK_SECRETS and WEBHOOK_EVENTS belongs to
 * URL i, and a list of exactly one item applies to every URL. Commas separate items, so a URL
 * that needs one must percent-encode it (%2C). URLs are checked here for shape (scheme, a host,
 * printable ASCII, no fragment); libcurl's parser checks them again when the process starts.
 * Secrets are never echoed into error messages.
 */
#include "notify_cfg.h"
#include "cfg.h"
#include "notify.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ==== lists ================================================================================== */

/* Split `list` at any of `seps`, trimming blanks around items (and, with skip_empty, dropping
 * empty ones). Fills starts/lens for the first `max` items; returns the count of all items. */
static size_t s_items(const char *list, const char *seps, bool skip_empty, const char **starts, size_t *lens, size_t max)
{
    size_t n = 0;
    const char *p = list;
    for (;;) {
        size_t l = strcspn(p, seps);
        const char *s = p, *e = p + l;
        while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
            e--;
        if (!(skip_empty && e == s)) {
            if (n < max) {
                starts[n] = s;
                lens[n] = (size_t)(e - s);
            }
            n++;
        }
        if (!p[l])
            break;
        p += l + 1;
    }
    return n;
}

static int s_url(notify_target_cfg_t *t, const char *s, size_t len, size_t idx, char *err)
{
    if (len == 0) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu is empty", idx + 1);
        return -1;
    }
    if (len > NOTIFY_URL_MAX) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu is %zu bytes (at most %d)", idx + 1, len, NOTIFY_URL_MAX);
        return -1;
    }
    size_t skip;
    if (len > 7 && strncasecmp(s, "http://", 7) == 0)
        skip = 7;
    else if (len > 8 && strncasecmp(s, "https://", 8) == 0)
        skip = 8;
    else {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu '%.80s' is not an http:// or https:// URL", idx + 1,
                 s);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' || c == '`' ||
            c == '{' || c == '|' || c == '}') {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu has a character a URL may not hold at offset %zu",
                     idx + 1, i);
            return -1;
        }
        if (c == '#') {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu has a fragment ('#'), which is never sent", idx + 1);
            return -1;
        }
    }
    /* authority = up to the first '/', '?'; the host is what follows any user info. */
    const char *a = s + skip, *end = s + len;
    const char *ae = a;
    while (ae < end && *ae != '/' && *ae != '?')
        ae++;
    const char *at = NULL;
    for (const char *q = a; q < ae; q++)
        if (*q == '@')
            at = q;
    const char *host = at ? at + 1 : a;
    if (host >= ae || *host == ':') {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: item %zu has no host", idx + 1);
        return -1;
    }
    memcpy(t->url, s, len);
    t->url[len] = '\0';
    /* shown: scheme://host[:port]/path */
    const char *pe = ae;
    while (pe < end && *pe != '?')
        pe++;
    int n = snprintf(t->shown, sizeof t->shown, "%.*s%.*s%.*s", (int)skip, s, (int)(ae - host), host, (int)(pe - ae),
                     ae);
    (void)n;
    return 0;
}

static int s_secret(notify_target_cfg_t *t, const char *s, size_t len, size_t idx, const char *name, char *err)
{
    if (len < NOTIFY_SECRET_MIN || len > NOTIFY_SECRET_MAX) {
        snprintf(err, CFG_ERR_LEN, "%s: item %zu is %zu bytes (want %d..%d)", name, idx + 1, len, NOTIFY_SECRET_MIN,
                 NOTIFY_SECRET_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, CFG_ERR_LEN, "%s: item %zu holds a byte that is not printable ASCII (offset %zu)", name,
                     idx + 1, i);
            return -1;
        }
    }
    memcpy(t->secret, s, len);
    t->secret[len] = '\0';
    t->secret_len = len;
    return 0;
}

static int s_events(uint32_t *mask, const char *s, size_t len, size_t idx, char *err)
{
    if (len == 0 || (len == 3 && memcmp(s, "all", 3) == 0) || (len == 1 && s[0] == '*')) {
        *mask = NOTIFY_MASK_ALL;
        return 0;
    }
    uint32_t m = 0;
    const char *p = s, *end = s + len;
    while (p <= end) {
        const char *q = p;
        while (q < end && *q != '+')
            q++;
        int t = notify_type_parse(p, (size_t)(q - p));
        if (t < 0) {
            snprintf(err, CFG_ERR_LEN,
                     "WEBHOOK_EVENTS: item %zu: unknown event type '%.*s' (want all, or names joined by '+': "
                     "online, offline, status, message, session_start, session_end)",
                     idx + 1, (int)MIN((size_t)(q - p), 40), p);
            return -1;
        }
        m |= 1u << t;
        p = q + 1;
    }
    *mask = m;
    return 0;
}

int notify_cfg_targets(notify_cfg_t *c, const char *urls, const char *secrets, const char *secrets_name,
                       const char *events, char *err)
{
    const char *st[NOTIFY_TARGETS_MAX];
    size_t sl[NOTIFY_TARGETS_MAX];
    if (!urls || !*urls) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: required (comma-separated http:// or https:// URLs)");
        return -1;
    }
    size_t n = s_items(urls, ",", false, st, sl, NOTIFY_TARGETS_MAX);
    if (n > NOTIFY_TARGETS_MAX) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: %zu URLs (at most %d)", n, NOTIFY_TARGETS_MAX);
        return -1;
    }
    memset(c->targets, 0, sizeof c->targets);
    for (size_t i = 0; i < n; i++)
        if (s_url(&c->targets[i], st[i], sl[i], i, err) < 0)
            return -1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->targets[i].url, c->targets[j].url) == 0) {
                snprintf(err, CFG_ERR_LEN, "WEBHOOK_URLS: items %zu and %zu are the same URL", j + 1, i + 1);
                return -1;
            }

    if (!secrets || !*secrets) {
        snprintf(err, CFG_ERR_LEN,
                 "%s: required: a signing secret for every target (one for all, or one per URL in order)",
                 secrets_name);
        return -1;
    }
    const char *ss[NOTIFY_TARGETS_MAX];
    size_t sn[NOTIFY_TARGETS_MAX];
    /* A file may list one secret a line; blank lines (and a final newline) are not items. */
    size_t m = s_items(secrets, ",\n", true, ss, sn, NOTIFY_TARGETS_MAX);
    if (m != 1 && m != n) {
        snprintf(err, CFG_ERR_LEN, "%s: %zu secrets for %zu URLs (want one for all, or one per URL)", secrets_name, m,
                 n);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (s_secret(&c->targets[i], ss[m == 1 ? 0 : i], sn[m == 1 ? 0 : i], m == 1 ? 0 : i, secrets_name, err) < 0)
            return -1;

    for (size_t i = 0; i < n; i++)
        c->targets[i].mask = NOTIFY_MASK_ALL;
    if (events && *events) {
        const char *es[NOTIFY_TARGETS_MAX];
        size_t el[NOTIFY_TARGETS_MAX];
        size_t k = s_items(events, ",", false, es, el, NOTIFY_TARGETS_MAX);
        if (k != 1 && k != n) {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_EVENTS: %zu filters for %zu URLs (want one for all, or one per URL)",
                     k, n);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            if (s_events(&c->targets[i].mask, es[k == 1 ? 0 : i], el[k == 1 ? 0 : i], k == 1 ? 0 : i, err) < 0)
                return -1;
    }
    c->ntargets = (uint32_t)n;
    return 0;
}

int notify_cfg_privileged(notify_cfg_t *c, const char *list, char *err)
{
    c->any_privileged = false;
    if (!list || !*list)
        return 0;
    const char *st[NOTIFY_TARGETS_MAX];
    size_t sl[NOTIFY_TARGETS_MAX];
    size_t k = s_items(list, ",", false, st, sl, NOTIFY_TARGETS_MAX);
    if (k != 1 && k != c->ntargets) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_PRIVILEGED: %zu items for %u URLs (want one for all, or one per URL)", k,
                 c->ntargets);
        return -1;
    }
    for (uint32_t i = 0; i < c->ntargets; i++) {
        size_t j = k == 1 ? 0 : i;
        bool yes = sl[j] == 4 && strncasecmp(st[j], "true", 4) == 0;
        bool no = sl[j] == 5 && strncasecmp(st[j], "false", 5) == 0;
        if (!yes && !no) {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_PRIVILEGED: item %zu '%.*s' is not true or false", j + 1,
                     (int)MIN(sl[j], 40), st[j]);
            return -1;
        }
        if (yes) {
            c->targets[i].mask |= NOTIFY_MASK_PRIVILEGED;
            c->any_privileged = true;
        }
    }
    return 0;
}

/* ==== the environment ======================================================================== */

static int s_read_file(const char *name, const char *path, char *out, size_t outlen, char *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, CFG_ERR_LEN, "%s: cannot read %.200s: %s", name, path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, outlen - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        snprintf(err, CFG_ERR_LEN, "%s: %.200s is larger than %zu bytes", name, path, outlen - 1);
        return -1;
    }
    out[n] = '\0';
    if (memchr(out, '\0', n)) {
        snprintf(err, CFG_ERR_LEN, "%s: %.200s holds a NUL byte", name, path);
        return -1;
    }
    return 0;
}

int notify_cfg_load(notify_cfg_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "./data");
    c->connect_timeout_ms = 3000;
    c->timeout_ms = 10000;
    c->batch_max = 500;
    c->batch_bytes = 1u << 20;
    c->debounce_ms = 2000;
    c->backoff_min_ms = 500;
    c->backoff_max_ms = 60000;
    c->log_max_bytes = 256ull << 20;
    c->log_max_age_ms = 7ull * 86400 * 1000;
    c->map_size_mb = 64;
    c->map_max_mb = 16384;
    c->hb_limit_ms = 3000;
    c->request_timeout_ms = 2000;
    c->sub_hwm = 500000;
    c->stop_grace_ms = 2000;
    c->stats_log_ms = 60000;
    static const char *const on4xx[] = {"drop", "retry", NULL};
    int retry = 0;
    if (cfg_str("DATA_DIR", c->data_dir, sizeof c->data_dir, err) < 0 ||
        cfg_duration_ms("WEBHOOK_CONNECT_TIMEOUT_MS", 1, 1, 600000, &c->connect_timeout_ms, err) < 0 ||
        cfg_duration_ms("WEBHOOK_TIMEOUT_MS", 1, 10, 3600000, &c->timeout_ms, err) < 0 ||
        cfg_u64("WEBHOOK_BATCH_MAX", 1, 10000, &c->batch_max, err) < 0 ||
        cfg_u64("WEBHOOK_BATCH_BYTES", 4096, 64ull << 20, &c->batch_bytes, err) < 0 ||
        cfg_duration_ms("WEBHOOK_DEBOUNCE_MS", 1, 0, 600000, &c->debounce_ms, err) < 0 ||
        cfg_duration_ms("WEBHOOK_BACKOFF_MIN_MS", 1, 1, 3600000, &c->backoff_min_ms, err) < 0 ||
        cfg_duration_ms("WEBHOOK_BACKOFF_MAX_MS", 1, 1, 86400000, &c->backoff_max_ms, err) < 0 ||
        cfg_enum("WEBHOOK_ON_4XX", on4xx, &retry, err) < 0 ||
        cfg_u64("WEBHOOK_LOG_MAX_BYTES", 1u << 20, 1ull << 40, &c->log_max_bytes, err) < 0 ||
        cfg_duration_ms("WEBHOOK_LOG_MAX_AGE", 1000, 0, 365ull * 86400 * 1000, &c->log_max_age_ms, err) < 0 ||
        cfg_u64("NOTIFIER_MAP_SIZE_MB", 8, 1u << 20, &c->map_size_mb, err) < 0 ||
        cfg_u64("NOTIFIER_MAP_MAX_MB", 8, 1u << 20, &c->map_max_mb, err) < 0 ||
        cfg_u64("SYNC_HEARTBEAT_LIMIT_MS", 100, 600000, &c->hb_limit_ms, err) < 0 ||
        cfg_u64("REQUEST_TIMEOUT_MS", 50, 600000, &c->request_timeout_ms, err) < 0 ||
        cfg_u64("SYNC_SUB_HWM", 1, 10000000, &c->sub_hwm, err) < 0 ||
        cfg_duration_ms("NOTIFIER_STOP_GRACE_MS", 1, 0, 600000, &c->stop_grace_ms, err) < 0 ||
        cfg_duration_ms("NOTIFIER_STATS_LOG_MS", 1, 0, 86400000, &c->stats_log_ms, err) < 0 ||
        cfg_str("WEBHOOK_CA_FILE", c->ca_file, sizeof c->ca_file, err) < 0 ||
        cfg_str("WEBHOOK_PROXY", c->proxy, sizeof c->proxy, err) < 0)
        return -1;
    c->retry_4xx = retry == 1;
    if (c->backoff_max_ms < c->backoff_min_ms) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_BACKOFF_MAX_MS: %llu is below WEBHOOK_BACKOFF_MIN_MS (%llu)",
                 (unsigned long long)c->backoff_max_ms, (unsigned long long)c->backoff_min_ms);
        return -1;
    }
    if (c->map_max_mb < c->map_size_mb) {
        snprintf(err, CFG_ERR_LEN, "NOTIFIER_MAP_MAX_MB: %llu is below NOTIFIER_MAP_SIZE_MB (%llu)",
                 (unsigned long long)c->map_max_mb, (unsigned long long)c->map_size_mb);
        return -1;
    }
    /* The log (and the page churn of pruning it) must fit in the map with room for user states. */
    if ((c->map_max_mb << 20) < 2 * c->log_max_bytes + (64ull << 20)) {
        snprintf(err, CFG_ERR_LEN,
                 "WEBHOOK_LOG_MAX_BYTES: %llu does not fit NOTIFIER_MAP_MAX_MB=%llu (want a map of at least twice "
                 "the log plus 64 MiB)",
                 (unsigned long long)c->log_max_bytes, (unsigned long long)c->map_max_mb);
        return -1;
    }
    if (c->ca_file[0] && access(c->ca_file, R_OK) != 0) {
        snprintf(err, CFG_ERR_LEN, "WEBHOOK_CA_FILE: cannot read %.200s: %s", c->ca_file, strerror(errno));
        return -1;
    }

    snprintf(c->store_cmd, sizeof c->store_cmd, "ipc://%s/run/store-cmd.sock", c->data_dir);
    snprintf(c->store_pub, sizeof c->store_pub, "ipc://%s/run/store-pub.sock", c->data_dir);
    snprintf(c->endpoint, sizeof c->endpoint, "ipc://%s/run/notifier.sock", c->data_dir);
    if (cfg_str("STORE_CMD_ENDPOINT", c->store_cmd, sizeof c->store_cmd, err) < 0 ||
        cfg_str("STORE_PUB_ENDPOINT", c->store_pub, sizeof c->store_pub, err) < 0 ||
        cfg_str("NOTIFIER_ENDPOINT", c->endpoint, sizeof c->endpoint, err) < 0)
        return -1;

    const char *secrets = getenv("WEBHOOK_SECRETS"), *sfile = getenv("WEBHOOK_SECRETS_FILE");
    const char *sname = "WEBHOOK_SECRETS";
    static char filebuf[NOTIFY_TARGETS_MAX * (NOTIFY_SECRET_MAX + 2) + 1];
    if (sfile && *sfile) {
        if (secrets && *secrets) {
            snprintf(err, CFG_ERR_LEN, "WEBHOOK_SECRETS_FILE: set together with WEBHOOK_SECRETS (use one)");
            return -1;
        }
        if (s_read_file("WEBHOOK_SECRETS_FILE", sfile, filebuf, sizeof filebuf, err) < 0)
            return -1;
        secrets = filebuf;
        sname = "WEBHOOK_SECRETS_FILE";
    }
    if (notify_cfg_targets(c, getenv("WEBHOOK_URLS"), secrets, sname, getenv("WEBHOOK_EVENTS"), err) < 0)
        return -1;
    return notify_cfg_privileged(c, getenv("WEBHOOK_PRIVILEGED"), err);
}
