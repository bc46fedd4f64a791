/* gw_ui.c -- the live page, the OpenAPI document and the development token:
 *
 *   GET /                      UI_DIR/index.html
 *   GET /ui/<name>             a file UI_DIR/MANIFEST names (nothing else exists: no paths)
 *   GET /api/v2/openapi.yaml   the MANIFEST's openapi.yaml
 *   POST /api/v2/dev/token     {"sub":"alice"} -> a token for alice, only on a development node
 *   GET /api/v2/dev/token      {"available":true|false}: may this client ask (the page's probe)
 *
 * Files are served from memory (gw_uifiles.c: read once at startup), with a strong ETag of their
 * content, Cache-Control: no-cache (their names carry no version, so a browser revalidates and
 * gets 304 until the content changes) and headers that pin the page to itself (a CSP allowing
 * only its own scripts, styles and connections; nosniff; no framing; no referrer).
 *
 * Key decision, dev tokens: minting a token for any name is the opposite of authentication, so it
 * exists only where the secret is a throwaway one -- the launcher generated it (make run without
 * JWT_SECRET) and says so with PRESENCE_DEV_SECRET=true; the gateway then checks the claim against
 * DATA_DIR/dev-jwt-secret (a production secret can never be switched to minting), and answers
 * loopback clients only. Everywhere else the route answers 404 like any unknown path.
 *
 * Loading: main thread, before the threads; afterwards everything here is read-only and the
 * handlers run on any event-loop thread without locks.
 */
#include "gw_ui.h"
#include "cfg.h"
#include "gw_config.h"
#include "gw_endpoints.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_uifiles.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define UI_CSP                                                                                                         \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "           \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static struct {
    bool enabled;        /* UI_ENABLED */
    bool installed;      /* the files are loaded */
    bool dev_tokens;     /* PRESENCE_DEV_SECRET=true, checked against the development secret */
    char dir[PATH_MAX];  /* UI_DIR as used */
    gw_uifiles_t files;
} s_ui;

/* ==== loading ================================================================================== */

/* <directory of this binary>/../share/presence/ui, as an absolute path (not necessarily existing). */
static int s_default_dir(char *out, size_t outlen, char *err)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(err, CFG_ERR_LEN, "UI_DIR: cannot find the gateway's own binary (/proc/self/exe: %s); set UI_DIR",
                 strerror(errno));
        return -1;
    }
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    if ((size_t)snprintf(out, outlen, "%s/../share/presence/ui", self) >= outlen) {
        snprintf(err, CFG_ERR_LEN, "UI_DIR: the gateway's path is too long; set UI_DIR");
        return -1;
    }
    char real[PATH_MAX];
    if (realpath(out, real)) /* tidy when it exists; a missing one is reported by its plain path */
        snprintf(out, outlen, "%s", real);
    return 0;
}

/* PRESENCE_DEV_SECRET=true must mean what the launcher meant: JWT_SECRET is DATA_DIR/dev-jwt-secret. */
static int s_check_dev_secret(const char *data_dir, char *err)
{
    char path[PATH_MAX], secret[1024] = "";
    snprintf(path, sizeof path, "%s/dev-jwt-secret", data_dir);
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(secret, sizeof secret, f))
            secret[0] = '\0';
        fclose(f);
    }
    secret[strcspn(secret, "\r\n")] = '\0';
    size_t n = strlen(secret);
    bool same = n && n == gw_cfg.auth.secret_len && memcmp(secret, gw_cfg.auth.secret, n) == 0;
    memset(secret, 0, sizeof secret);
    if (!same) {
        snprintf(err, CFG_ERR_LEN,
                 "PRESENCE_DEV_SECRET: true only when JWT_SECRET is the development secret the launcher keeps in "
                 "DATA_DIR/dev-jwt-secret (it is not; unset PRESENCE_DEV_SECRET)");
        return -1;
    }
    return 0;
}

int gw_ui_load(char *err)
{
    bool enabled = true, dev = false;
    char dir[PATH_MAX] = "", data_dir[400] = "./data";
    if (cfg_bool("UI_ENABLED", &enabled, err) < 0 || cfg_str("UI_DIR", dir, sizeof dir, err) < 0 ||
        cfg_bool("PRESENCE_DEV_SECRET", &dev, err) < 0 || cfg_str("DATA_DIR", data_dir, sizeof data_dir, err) < 0)
        return -1;
    if (dev && s_check_dev_secret(data_dir, err) < 0)
        return -1;
    s_ui.dev_tokens = dev;
    s_ui.enabled = enabled;
    if (dev)
        LOG(LOG_NOTICE, "development node: POST /api/v2/dev/token signs tokens for loopback clients");
    if (!enabled)
        return 0;
    bool given = dir[0] != '\0';
    if (!given && s_default_dir(dir, sizeof dir, err) < 0)
        return -1;
    snprintf(s_ui.dir, sizeof s_ui.dir, "%s", dir);
    if (!given && access(dir, F_OK) < 0 && errno == ENOENT) {
        LOG(LOG_WARN, "UI_DIR: %s does not exist: the page is not served (install it, set UI_DIR, or UI_ENABLED=false)",
            dir);
        return 0;
    }
    char lerr[CFG_ERR_LEN];
    if (gw_uifiles_load(&s_ui.files, dir, lerr, sizeof lerr) < 0) {
        snprintf(err, CFG_ERR_LEN, "UI_DIR: %s (UI_ENABLED=false to run without the page)", lerr);
        return -1;
    }
    s_ui.installed = true;
    LOG(LOG_INFO, "ui: %zu files from %s", s_ui.files.n, dir);
    return 0;
}

void gw_ui_fini(void)
{
    gw_uifiles_fini(&s_ui.files);
    s_ui.installed = false;
}

/* ==== the files ================================================================================ */

static void s_header(h2o_req_t *req, const char *name, size_t nlen, const char *v, size_t vlen)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, nlen, 0, NULL, v, vlen);
}

/* Answer with file f: 200, or 304 when If-None-Match holds its ETag. */
static void s_send(h2o_req_t *req, gw_rctx_t *rc, const gw_uifile_t *f)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, f->etag, strlen(f->etag));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    s_header(req, H2O_STRLIT("content-security-policy"), H2O_STRLIT(UI_CSP));
    s_header(req, H2O_STRLIT("x-content-type-options"), H2O_STRLIT("nosniff"));
    s_header(req, H2O_STRLIT("x-frame-options"), H2O_STRLIT("DENY"));
    s_header(req, H2O_STRLIT("referrer-policy"), H2O_STRLIT("no-referrer"));
    gw_reply_cors(req, rc);
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i >= 0 && gw_uifiles_etag_match(req->headers.entries[i].value.base, req->headers.entries[i].value.len, f->etag)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        gw_reply_count(rc, 304);
        h2o_send_inline(req, NULL, 0);
        return;
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, f->ctype, strlen(f->ctype));
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = f->len;
    gw_reply_count(rc, 200);
    h2o_send_inline(req, (const char *)f->data, f->len); /* (HEAD: h2o sends the headers only) */
}

/* The file called name, or a 404 that says why there is none. */
static void s_serve(h2o_req_t *req, gw_rctx_t *rc, const char *name, size_t len)
{
    if (!s_ui.enabled) {
        gw_reply_error(req, rc, 404, "not found: the page is turned off on this node (UI_ENABLED=false)");
        return;
    }
    if (!s_ui.installed) {
        gw_reply_error(req, rc, 404, "not found: the page's files are not installed on this node (UI_DIR)");
        return;
    }
    const gw_uifile_t *f = gw_uifiles_find(&s_ui.files, name, len);
    if (!f) {
        gw_reply_error(req, rc, 404, "not found: not a file of the page (UI_DIR/MANIFEST names them)");
        return;
    }
    s_send(req, rc, f);
}

void gw_ui_index(h2o_req_t *req, gw_rctx_t *rc)
{
    s_serve(req, rc, H2O_STRLIT("index.html"));
}

void gw_ui_file(h2o_req_t *req, gw_rctx_t *rc)
{
    /* The route's one parameter ({file}) is handed over raw in seg_sid: names are compared as
     * they came, never decoded, so "%2e%2e" is just a name that is not in the MANIFEST. */
    s_serve(req, rc, rc->seg_sid, rc->seg_sid_len);
}

void gw_ui_openapi(h2o_req_t *req, gw_rctx_t *rc)
{
    s_serve(req, rc, H2O_STRLIT("openapi.yaml"));
}

/* ==== the development token ==================================================================== */

static bool s_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl && ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (sl && ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* {"sub":"<user id>"} and nothing else. Returns 0 with sub filled, or -1 with *err. */
static int s_parse_sub(const char *body, size_t len, char *sub, const char **err)
{
    json_error_t jerr;
    json_t *o = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    int rc = -1;
    if (!o || !json_is_object(o)) {
        *err = GW_ERR_JSON;
        goto out;
    }
    json_t *s = json_object_get(o, "sub");
    if (!s || !json_is_string(s)) {
        *err = "invalid sub: sub is required, a string: the user id to sign a token for";
        goto out;
    }
    if (json_object_size(o) != 1) {
        *err = "invalid body: a development token request has only sub";
        goto out;
    }
    size_t n = json_string_length(s);
    if (n > PROTO_USER_ID_MAX || !gw_valid_user_id(json_string_value(s), n)) {
        *err = "invalid sub: " GW_USER_ID_RULE;
        goto out;
    }
    memcpy(sub, json_string_value(s), n);
    sub[n] = '\0';
    rc = 0;
out:
    json_decref(o);
    return rc;
}

void gw_ui_dev_token(h2o_req_t *req, gw_rctx_t *rc)
{
    if (rc->method == GW_M_GET) {
        /* Whether this client may ask: how the page decides to show its "try as" box, without a
         * failed request in the browser's console on every other node. */
        if (s_ui.dev_tokens && s_loopback(req))
            gw_reply(req, rc, 200, H2O_STRLIT("{\"success\":true,\"available\":true}"));
        else
            gw_reply(req, rc, 200, H2O_STRLIT("{\"success\":true,\"available\":false}"));
        return;
    }
    if (!s_ui.dev_tokens) {
        gw_reply_error(req, rc, 404, "not found");
        return;
    }
    if (!s_loopback(req)) {
        gw_reply_error(req, rc, 403, "forbidden: development tokens are given to loopback clients only");
        return;
    }
    char sub[PROTO_USER_ID_MAX + 1];
    const char *err;
    if (s_parse_sub(req->entity.base, req->entity.len, sub, &err) < 0) {
        gw_reply_error(req, rc, 400, err);
        return;
    }
    time_t now = time(NULL), exp = now + GW_UI_DEV_TOKEN_TTL_S;
    char *tok = gw_auth_sign(gw_cfg.auth.secret, gw_cfg.auth.secret_len, gw_cfg.auth.alg, gw_cfg.auth.issuer, sub, "",
                             now, exp);
    if (!tok) {
        gw_reply_error(req, rc, 500, "internal: could not sign a token");
        return;
    }
    char when[UTIL_TIME_LEN];
    size_t wn = util_fmt_time((uint64_t)exp * 1000000u, when);
    gw_buf_t *b = &rc->t->out;
    gw_buf_reset(b);
    gw_buf_adds(b, "{\"success\":true,\"sub\":");
    gw_buf_add_jstr(b, sub, strlen(sub));
    gw_buf_adds(b, ",\"token\":");
    gw_buf_add_jstr(b, tok, strlen(tok));
    gw_buf_adds(b, ",\"expires_at\":");
    gw_buf_add_jstr(b, when, wn);
    gw_buf_adds(b, "}");
    free(tok);
    gw_reply(req, rc, 200, b->p, b->len);
}
