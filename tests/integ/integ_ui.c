/* integ_ui.c -- the live page's routes over real HTTP against a real stack (gateway/gw_ui.c).
 *
 *   page        GET / and GET /ui/<name> answer each file of the installed MANIFEST byte for byte
 *               with its Content-Type, a strong ETag, Cache-Control: no-cache and the page's
 *               security headers; If-None-Match gives 304; HEAD gives the headers; names outside
 *               the MANIFEST (the MANIFEST itself, encoded dots, paths, other cases) are 404 with
 *               the rule; GET /api/v2/openapi.yaml is docs/openapi.yaml as installed
 *   config      UI_ENABLED=false (404 naming it), UI_DIR of our own, and the startup refusals
 *               (a UI_DIR given but missing or broken, PRESENCE_DEV_SECRET without the
 *               development secret, a bad UI_ENABLED): exit 2 naming the variable
 *   dev token   only with PRESENCE_DEV_SECRET (404 otherwise; GET says whether): a valid token
 *               for sub, every bad body with its rule; IPv4-mapped loopback peers; and the launcher: `make run`
 *               without JWT_SECRET turns it on, a JWT_SECRET of one's own keeps it off even when
 *               PRESENCE_DEV_SECRET=true is in the environment
 *
 * Nothing sleeps to synchronise: processes are waited for by their ready lines.
 */
#include "gw_lib.h"
#include "harness.h"

#include <check.h>
#include <jansson.h>
#include <jwt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CSP                                                                                                            \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "           \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#define E_UID_RULE "user ids are 1-128 bytes of A-Z a-z 0-9 . _ ~ @ : = + -, not batch, watch, connect, . or .."
#define E_NOFILE "{\"success\":false,\"error\":\"not found: not a file of the page (UI_DIR/MANIFEST names them)\"}"
#define E_OFF "{\"success\":false,\"error\":\"not found: the page is turned off on this node (UI_ENABLED=false)\"}"
#define E_NOTFOUND "{\"success\":false,\"error\":\"not found\"}"

/* The UI directory of the build under test: $PRESENCE_BIN/../share/presence/ui. */
static const char *s_ui_dir(void)
{
    static char dir[PATH_MAX];
    char bin[PATH_MAX], real[PATH_MAX];
    th_bin("gateway", bin, sizeof bin);
    ck_assert_ptr_nonnull(realpath(bin, real));
    snprintf(dir, sizeof dir, "%s/../share/presence/ui", dirname(real));
    return dir;
}

/* A whole file, NUL-terminated; *len its length. */
static char *s_slurp_path(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static char *s_slurp(const char *dir, const char *name, size_t *len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return s_slurp_path(path, len);
}

static void s_put(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void s_req(int port, const char *method, const char *path, const char *headers, const char *body,
                  th_resp_t *r)
{
    ck_assert_msg(th_http(port, method, path, headers, body, body ? strlen(body) : 0, r, 5000) == 0, "%s %s failed",
                  method, path);
}

static void s_body_is(const th_resp_t *r, const char *want)
{
    ck_assert_msg(r->body_len == strlen(want) && memcmp(r->body, want, r->body_len) == 0, "body %.*s, want %s",
                  (int)r->body_len, r->body, want);
}

static void s_header_is(const th_resp_t *r, const char *name, const char *want)
{
    char v[1024];
    const char *got = th_resp_header(r, name, v, sizeof v);
    ck_assert_msg(got && strcmp(got, want) == 0, "%s: %s, want %s", name, got ? got : "(none)", want);
}

/* GET path must answer file `name` of the installed UI with Content-Type ctype. Returns its ETag. */
static void s_expect_file(int port, const char *path, const char *name, const char *ctype, char *etag, size_t elen)
{
    size_t len;
    char *want = s_slurp(s_ui_dir(), name, &len);
    th_resp_t r;
    s_req(port, "GET", path, NULL, NULL, &r);
    ck_assert_msg(r.status == 200, "GET %s: %d", path, r.status);
    ck_assert_msg(r.body_len == len && memcmp(r.body, want, len) == 0, "GET %s: %zu bytes, not the installed %s (%zu)",
                  path, r.body_len, name, len);
    s_header_is(&r, "content-type", ctype);
    s_header_is(&r, "cache-control", "no-cache");
    s_header_is(&r, "content-security-policy", CSP);
    s_header_is(&r, "x-content-type-options", "nosniff");
    s_header_is(&r, "x-frame-options", "DENY");
    s_header_is(&r, "referrer-policy", "no-referrer");
    char len_s[32];
    snprintf(len_s, sizeof len_s, "%zu", len);
    s_header_is(&r, "content-length", len_s);
    const char *tag = th_resp_header(&r, "etag", etag, elen);
    ck_assert_msg(tag && strlen(tag) == 18 && tag[0] == '"' && tag[17] == '"' && strspn(tag + 1, "0123456789abcdef") == 16,
                  "GET %s: ETag %s", path, tag ? tag : "(none)");
    th_resp_free(&r);
    free(want);
}

START_TEST(test_page)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, NULL), 0);
    int port = n.port;
    char etag[64], etag2[64], hdr[256];

    /* GET / is index.html; each MANIFEST name under /ui/ is its file, with its Content-Type. */
    s_expect_file(port, "/", "index.html", "text/html; charset=utf-8", etag, sizeof etag);
    s_expect_file(port, "/ui/index.html", "index.html", "text/html; charset=utf-8", etag2, sizeof etag2);
    ck_assert_str_eq(etag, etag2);
    size_t mlen;
    char *manifest = s_slurp(s_ui_dir(), "MANIFEST", &mlen);
    int files = 0;
    for (char *save = NULL, *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[80], src[200], path[120], tag[64];
        int off = 0;
        if (line[0] == '#' || sscanf(line, "%79s %199s %n", name, src, &off) != 2 || !off)
            continue;
        snprintf(path, sizeof path, "/ui/%s", name);
        s_expect_file(port, path, name, line + off, tag, sizeof tag);
        files++;
    }
    free(manifest);
    ck_assert_int_eq(files, 5); /* index.html app.js style.css presence.js openapi.yaml */
    s_expect_file(port, "/api/v2/openapi.yaml", "openapi.yaml", "application/yaml; charset=utf-8", etag2, sizeof etag2);
    s_expect_file(port, "/ui/app.js?v=2", "app.js", "text/javascript; charset=utf-8", etag2, sizeof etag2);

    /* Revalidation: the ETag (strong or weak, alone or in a list) gives 304 without a body. */
    const char *forms[] = {"%s", "W/%s", "\"0000000000000000\", %s", "*"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char inm[128];
        snprintf(inm, sizeof inm, forms[i], etag);
        snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", inm);
        th_resp_t r;
        s_req(port, "GET", "/", hdr, NULL, &r);
        ck_assert_msg(r.status == 304, "If-None-Match: %s -> %d", inm, r.status);
        ck_assert_uint_eq(r.body_len, 0);
        s_header_is(&r, "etag", etag);
        s_header_is(&r, "cache-control", "no-cache");
        th_resp_free(&r);
    }
    th_resp_t r;
    s_req(port, "GET", "/", "If-None-Match: \"0000000000000000\"\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);

    /* HEAD: the headers of GET, no body. */
    s_req(port, "HEAD", "/ui/presence.js", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 0);
    s_header_is(&r, "content-type", "text/javascript; charset=utf-8");
    th_resp_free(&r);

    /* Only the MANIFEST's names exist: no paths, no decoding, exact case. */
    const char *absent[] = {"/ui/MANIFEST", "/ui/..%2fMANIFEST", "/ui/%2e%2e", "/ui/.", "/ui/..", "/ui/APP.JS",
                            "/ui/app.js%00", "/ui/%61pp.js", "/ui/app.j", "/ui/app.jsx", "/ui/.installed"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        s_req(port, "GET", absent[i], NULL, NULL, &r);
        ck_assert_msg(r.status == 404, "GET %s: %d", absent[i], r.status);
        s_body_is(&r, E_NOFILE);
        th_resp_free(&r);
    }
    const char *nopath[] = {"/ui/", "/ui", "/ui/../MANIFEST", "/ui/a/app.js", "/ui/app.js/", "/index.html",
                            "/ui//app.js"};
    for (size_t i = 0; i < sizeof nopath / sizeof nopath[0]; i++) {
        s_req(port, "GET", nopath[i], NULL, NULL, &r);
        ck_assert_msg(r.status == 404, "GET %s: %d", nopath[i], r.status);
        s_body_is(&r, E_NOTFOUND);
        th_resp_free(&r);
    }

    /* Methods: the page is read-only. */
    s_req(port, "POST", "/", NULL, "{}", &r);
    ck_assert_int_eq(r.status, 405);
    s_header_is(&r, "allow", "GET, HEAD, OPTIONS");
    th_resp_free(&r);
    s_req(port, "PUT", "/ui/app.js", NULL, "x", &r);
    ck_assert_int_eq(r.status, 405);
    th_resp_free(&r);

    /* No development tokens on a node with a secret of its own. */
    s_req(port, "POST", "/api/v2/dev/token", NULL, "{\"sub\":\"alice\"}", &r);
    ck_assert_int_eq(r.status, 404);
    s_body_is(&r, E_NOTFOUND);
    th_resp_free(&r);
    s_req(port, "GET", "/api/v2/dev/token", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_body_is(&r, "{\"success\":true,\"available\":false}");
    th_resp_free(&r);
    s_req(port, "PUT", "/api/v2/dev/token", NULL, "{}", &r);
    ck_assert_int_eq(r.status, 405);
    s_header_is(&r, "allow", "GET, POST, OPTIONS");
    th_resp_free(&r);

    /* Counted under their own labels, 304s included. */
    s_req(port, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "http_requests_total{method=\"GET\",route=\"ui.index\",code=\"304\"} 4\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "http_requests_total{method=\"GET\",route=\"ui.file\",code=\"404\"} 11\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "http_requests_total{method=\"GET\",route=\"openapi\",code=\"200\"} 1\n"));
    th_resp_free(&r);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_ui_disabled)
{
    th_node_t n;
    const char *env[] = {"UI_ENABLED=false", "UI_DIR=/nonexistent/never/read", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    const char *paths[] = {"/", "/ui/app.js", "/api/v2/openapi.yaml"};
    for (size_t i = 0; i < 3; i++) {
        th_resp_t r;
        s_req(n.port, "GET", paths[i], NULL, NULL, &r);
        ck_assert_msg(r.status == 404, "GET %s: %d", paths[i], r.status);
        s_body_is(&r, E_OFF);
        th_resp_free(&r);
    }
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* UI_DIR of one's own: exactly its MANIFEST's files are served; no index.html, no page at /. */
START_TEST(test_ui_dir)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/myui", th_tmpdir());
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    s_put(dir, "MANIFEST", "# mine\nhello.txt  src/hello.txt  text/plain; charset=utf-8\n");
    s_put(dir, "hello.txt", "hello, world\n");
    s_put(dir, "index.html", "<p>not listed</p>");
    char uidir[400];
    snprintf(uidir, sizeof uidir, "UI_DIR=%s", dir);
    const char *env[] = {uidir, NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_resp_t r;
    s_req(n.port, "GET", "/ui/hello.txt", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    s_body_is(&r, "hello, world\n");
    s_header_is(&r, "content-type", "text/plain; charset=utf-8");
    th_resp_free(&r);
    const char *absent[] = {"/", "/ui/index.html", "/api/v2/openapi.yaml"};
    for (size_t i = 0; i < 3; i++) {
        s_req(n.port, "GET", absent[i], NULL, NULL, &r);
        ck_assert_msg(r.status == 404, "GET %s: %d", absent[i], r.status);
        s_body_is(&r, E_NOFILE);
        th_resp_free(&r);
    }
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A lone gateway that must refuse its configuration: exit 2, the log naming `want`. */
static void s_refuse(const char *name, const char *const *env, const char *want)
{
    char pname[48];
    snprintf(pname, sizeof pname, "gw-%s", name);
    th_proc_t *p = th_proc(pname, "gateway");
    th_env(p, "JWT_SECRET", "%s", TH_SECRET);
    th_env(p, "SERVICE_ADDR", "127.0.0.1");
    th_env(p, "SERVICE_PORT", "0");
    th_env(p, "DATA_DIR", "%s", th_tmpdir());
    th_env(p, "CACHE_ENDPOINTS", "ipc://%s/none.sock", th_tmpdir());
    for (int i = 0; env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        char var[64];
        snprintf(var, sizeof var, "%.*s", (int)(eq - env[i]), env[i]);
        th_env(p, var, "%s", eq + 1);
    }
    ck_assert_msg(th_start(p, 10000) < 0, "%s: the gateway started", name);
    ck_assert_msg(p->reaped && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 2, "%s: exit status %d (want 2)",
                  name, p->status);
    size_t len;
    char *log = s_slurp_path(p->err_path, &len);
    ck_assert_msg(strstr(log, want) != NULL, "%s: the log does not say %s: %s", name, want, log);
    free(log);
    ck_assert_msg(!th_sanitizer_report(p), "%s: sanitizer report in %s", name, p->err_path);
}

START_TEST(test_startup_refusals)
{
    const char *d = th_tmpdir();
    char bad[300], env1[400];
    const char *missing[] = {"UI_DIR=/nonexistent/ui", NULL};
    s_refuse("uidir", missing, "UI_DIR: /nonexistent/ui/MANIFEST: No such file or directory (UI_ENABLED=false to run "
                               "without the page)");
    snprintf(bad, sizeof bad, "%s/broken", d);
    ck_assert_int_eq(mkdir(bad, 0700), 0);
    s_put(bad, "MANIFEST", "app.js ui/app.js text/javascript\n");
    snprintf(env1, sizeof env1, "UI_DIR=%s", bad);
    const char *broken[] = {env1, NULL};
    char want[600];
    snprintf(want, sizeof want, "UI_DIR: %s/app.js: No such file or directory", bad);
    s_refuse("uibroken", broken, want);
    s_put(bad, "MANIFEST", "../../etc/passwd x text/plain\n");
    snprintf(want, sizeof want, "UI_DIR: %s/MANIFEST line 1: a name is 1-64 bytes", bad);
    s_refuse("uitraversal", broken, want);
    const char *flag[] = {"UI_ENABLED=maybe", NULL};
    s_refuse("uienabled", flag, "UI_ENABLED");
    /* PRESENCE_DEV_SECRET claims a development secret: without DATA_DIR/dev-jwt-secret, or with
     * another one, the gateway refuses (a real secret can never be switched to minting tokens). */
    const char *dev[] = {"PRESENCE_DEV_SECRET=true", NULL};
    s_refuse("devnofile", dev, "PRESENCE_DEV_SECRET: true only when JWT_SECRET is the development secret");
    s_put(d, "dev-jwt-secret", "0123456789abcdef0123456789abcdef0123456789abcdef\n");
    s_refuse("devother", dev, "PRESENCE_DEV_SECRET: true only when JWT_SECRET is the development secret");
}
END_TEST

/* ---- development tokens ---- */

static void s_dev_token_ok(int port, const char *sub)
{
    th_resp_t g;
    s_req(port, "GET", "/api/v2/dev/token", NULL, NULL, &g);
    ck_assert_int_eq(g.status, 200);
    s_body_is(&g, "{\"success\":true,\"available\":true}");
    th_resp_free(&g);
    char body[200];
    snprintf(body, sizeof body, "{\"sub\":\"%s\"}", sub);
    th_resp_t r;
    s_req(port, "POST", "/api/v2/dev/token", NULL, body, &r);
    ck_assert_msg(r.status == 200, "dev token for %s: %d %.*s", sub, r.status, (int)r.body_len, r.body);
    s_header_is(&r, "cache-control", "no-store");
    json_error_t je;
    json_t *o = json_loadb(r.body, r.body_len, 0, &je);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(json_object_size(o), 4);
    ck_assert(json_is_true(json_object_get(o, "success")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "sub")), sub);
    const char *tok = json_string_value(json_object_get(o, "token"));
    const char *exp_at = json_string_value(json_object_get(o, "expires_at"));
    ck_assert_ptr_nonnull(tok);
    ck_assert_ptr_nonnull(exp_at);
    /* The token is a real one for sub: it verifies with the node's secret and issuer, lives 24 h. */
    gw_auth_t a = {.secret = (unsigned char *)TH_SECRET, .secret_len = strlen(TH_SECRET), .alg = JWT_ALG_HS256,
                   .leeway_s = 0};
    snprintf(a.issuer, sizeof a.issuer, "presence-service");
    char hdr[2048];
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    gw_claims_t c;
    const char *err = NULL;
    int64_t now = (int64_t)time(NULL);
    ck_assert_msg(gw_auth_verify(&a, hdr, strlen(hdr), now, &c, &err) == 0, "token does not verify: %s", err);
    ck_assert_str_eq(c.sub, sub);
    ck_assert(!c.admin);
    ck_assert_msg(c.exp >= now + 86400 - 5 && c.exp <= now + 86400 + 5, "exp %lld, now %lld", (long long)c.exp,
                  (long long)now);
    char want_at[32];
    struct tm tm;
    time_t e = (time_t)c.exp;
    gmtime_r(&e, &tm);
    strftime(want_at, sizeof want_at, "%Y-%m-%dT%H:%M:%S.000000Z", &tm);
    ck_assert_str_eq(exp_at, want_at);
    /* ... and the API takes it: sub may write its own record. */
    char auth[2100];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    char path[200];
    snprintf(path, sizeof path, "/api/v2/presence/%s", sub);
    th_resp_t w;
    s_req(port, "PUT", path, auth, "{\"status\":\"busy\"}", &w);
    ck_assert_msg(w.status == 200, "PUT with the dev token: %d %.*s", w.status, (int)w.body_len, w.body);
    th_resp_free(&w);
    json_decref(o);
    th_resp_free(&r);
}

static void s_dev_token_bad(int port, const char *body, int status, const char *error)
{
    th_resp_t r;
    s_req(port, "POST", "/api/v2/dev/token", NULL, body, &r);
    ck_assert_msg(r.status == status, "body %.60s: %d", body, r.status);
    char want[600];
    snprintf(want, sizeof want, "{\"success\":false,\"error\":\"%s\"}", error);
    s_body_is(&r, want);
    th_resp_free(&r);
}

/* A node whose DATA_DIR holds the development secret, as the launcher leaves it. */
static int s_dev_node(th_node_t *n, const char *addr)
{
    static char data[400], svc[80];
    const char *d = th_tmpdir();
    snprintf(data, sizeof data, "DATA_DIR=%s", d);
    s_put(d, "dev-jwt-secret", TH_SECRET "\n");
    snprintf(svc, sizeof svc, "SERVICE_ADDR=%s", addr);
    const char *env[] = {data, "PRESENCE_DEV_SECRET=true", svc, NULL};
    return th_node_start(n, 1, env);
}

START_TEST(test_dev_token)
{
    th_node_t n;
    ck_assert_int_eq(s_dev_node(&n, "127.0.0.1"), 0);
    s_dev_token_ok(n.port, "alice");
    s_dev_token_ok(n.port, "u.s_e~r@x:y=z+1-2");
    char max[160] = "{\"sub\":\"";
    memset(max + 8, 'm', 128);
    snprintf(max + 136, sizeof max - 136, "\"}");
    th_resp_t r;
    s_req(n.port, "POST", "/api/v2/dev/token", NULL, max, &r);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    max[136] = 'm';
    snprintf(max + 137, sizeof max - 137, "\"}");
    s_dev_token_bad(n.port, max, 400, "invalid sub: " E_UID_RULE);
    const char *bad_ids[] = {"{\"sub\":\"\"}", "{\"sub\":\"batch\"}", "{\"sub\":\"connect\"}", "{\"sub\":\"..\"}",
                             "{\"sub\":\"a b\"}", "{\"sub\":\"a/b\"}", "{\"sub\":\"\\u00e9\"}"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        s_dev_token_bad(n.port, bad_ids[i], 400, "invalid sub: " E_UID_RULE);
    const char *no_sub[] = {"{}", "{\"sub\":5}", "{\"sub\":null}", "{\"sub\":[\"a\"]}", "{\"user\":\"a\"}"};
    for (size_t i = 0; i < sizeof no_sub / sizeof no_sub[0]; i++)
        s_dev_token_bad(n.port, no_sub[i], 400, "invalid sub: sub is required, a string: the user id to sign a token for");
    s_dev_token_bad(n.port, "{\"sub\":\"a\",\"scope\":\"presence:admin\"}", 400,
                    "invalid body: a development token request has only sub");
    const char *not_json[] = {"", "sub=alice", "[\"alice\"]", "\"alice\"", "{\"sub\":\"a\",\"sub\":\"b\"}",
                              "{\"sub\":\"a\\u0000b\"}"};
    for (size_t i = 0; i < sizeof not_json / sizeof not_json[0]; i++)
        s_dev_token_bad(n.port, not_json[i], 400, "invalid JSON: the body must be one JSON object");
    size_t big = 65537;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[big] = '\0';
    s_dev_token_bad(n.port, huge, 413, "request body too large (at most 65536 bytes)");
    free(huge);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* A gateway on "::" sees IPv4 clients as ::ffff:127.x: still loopback. */
START_TEST(test_dev_token_mapped)
{
    th_node_t n;
    ck_assert_int_eq(s_dev_node(&n, "::"), 0);
    s_dev_token_ok(n.port, "bob");
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* The launcher: without JWT_SECRET it generates one and turns the development token on; with a
 * JWT_SECRET of one's own it is off, whatever PRESENCE_DEV_SECRET the environment holds. */
static th_proc_t *s_launcher(const char *name, const char *secret, int *port)
{
    th_proc_t *p = th_proc(name, "presenced");
    char data[400];
    snprintf(data, sizeof data, "%s/data", th_tmpdir());
    th_env(p, "DATA_DIR", "%s", data);
    th_env(p, "SERVICE_ADDR", "127.0.0.1");
    th_env(p, "SERVICE_PORT", "0");
    th_env(p, "CACHE_NODES", "1");
    th_env(p, "PRESENCE_DEV_SECRET", "true");
    if (secret)
        th_env(p, "JWT_SECRET", "%s", secret);
    ck_assert_int_eq(th_start(p, 30000), 0);
    const char *http = strstr(p->ready, "http=");
    ck_assert_ptr_nonnull(http);
    const char *colon = strchr(http, ':');
    *port = atoi(colon + 1);
    ck_assert_int_gt(*port, 0);
    return p;
}

START_TEST(test_launcher)
{
    unsetenv("JWT_SECRET");
    int port;
    th_proc_t *dev = s_launcher("presenced-dev", NULL, &port);
    th_resp_t r;
    s_req(port, "POST", "/api/v2/dev/token", NULL, "{\"sub\":\"carol\"}", &r);
    ck_assert_msg(r.status == 200, "make run without JWT_SECRET: dev token %d", r.status);
    th_resp_free(&r);
    s_req(port, "GET", "/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200); /* the launcher's gateway finds the installed page */
    th_resp_free(&r);
    ck_assert_int_eq(th_stop(dev, 15000), 0);

    th_proc_t *own = s_launcher("presenced-own", TH_SECRET, &port);
    s_req(port, "POST", "/api/v2/dev/token", NULL, "{\"sub\":\"carol\"}", &r);
    ck_assert_int_eq(r.status, 404);
    s_body_is(&r, E_NOTFOUND);
    th_resp_free(&r);
    ck_assert_int_eq(th_stop(own, 15000), 0);
}
END_TEST

int main(void)
{
    atexit(th_cleanup_all);
    Suite *s = suite_create("integ_ui");
    TCase *tc = tcase_create("page");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_page);
    tcase_add_test(tc, test_ui_disabled);
    tcase_add_test(tc, test_ui_dir);
    tcase_add_test(tc, test_startup_refusals);
    tcase_add_test(tc, test_dev_token);
    tcase_add_test(tc, test_dev_token_mapped);
    tcase_add_test(tc, test_launcher);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
