/* fuzz_http.c -- the gateway's whole request path (gateway/gw_http.c: gw_http_on_req): method and
 * route matching, {user_id} percent-decoding and validation, CORS, the Authorization header and
 * JWT checks, rate-limit keys (X-Forwarded-For), the users= and since= / Last-Event-ID parsing,
 * and the JSON body parsers of every route, on an h2o request built here.
 *
 * The gateway runs with no cache-node configured and no watch hub, so a request that passes
 * validation is answered at once (503 "cache tier unavailable", 404 for watch) instead of going
 * upstream: everything before the upstream call is what this target covers.
 *
 * Input: an HTTP/1-like text
 *     METHOD SP PATH[?QUERY] LF
 *     name: value LF ...
 *     LF
 *     body
 * An Authorization value of "@admin", "@user:<id>" or "@expired" is replaced by a token signed
 * with the gateway's secret (admin scope, sub <id>, or expired), so the fuzzer gets past auth.
 *
 * Oracles besides the sanitizers: every request is answered exactly once, synchronously, with a
 * status the gateway counts; every body (but 204 and HEAD) is valid JSON with Content-Type
 * application/json; an error body is {"success":false,"error":"..."}.
 */
#include "fuzz_common.h"
#include "gw_config.h"
#include "gw_ctx.h"
#include "gw_http.h"
#include "gw_metrics.h"
#include "gw_upstream.h"
#include "util.h"

#include <jansson.h>
#include <jwt.h>

#define FZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"

/* gw_cfg and gw_metrics come from gw_config.o and gw_metrics.o: this target fills gw_cfg itself
 * instead of loading it, and builds the one thread context (gw_ctx.h) the request path sees. */

static h2o_globalconf_t s_conf;
static h2o_pathconf_t *s_pathconf;
static gw_ctx_t *s_t;
static h2o_conn_t s_conn;
static h2o_handler_t s_handler;
static char *s_tok_admin, *s_tok_expired;
static bool s_debug; /* FUZZ_HTTP_DEBUG=1: print every response (to check what the seeds reach) */

/* The response as the connection would see it. */
static struct {
    int sends;
    bool final;
    gw_buf_t body;
} R;

static socklen_t s_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    memset(in, 0, sizeof *in);
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    in->sin_addr.s_addr = htonl(0x7f000001);
    return sizeof *in;
}

static socklen_t s_sockname(h2o_conn_t *conn, struct sockaddr *sa)
{
    return s_peername(conn, sa);
}

static const h2o_conn_callbacks_t s_callbacks = {.get_sockname = s_sockname, .get_peername = s_peername};

static void s_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    FZ_CHECK(!R.final);
    R.sends++;
    for (size_t i = 0; i < bufcnt; i++)
        gw_buf_add(&R.body, bufs[i].base, bufs[i].len);
    if (!h2o_send_state_is_in_progress(state))
        R.final = true;
}

static h2o_ostream_t s_ostr = {.next = NULL, .do_send = s_do_send};

static void s_no_answer(void *arg)
{
    (void)arg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    s_debug = getenv("FUZZ_HTTP_DEBUG") != NULL;
    h2o_config_init(&s_conf);
    h2o_hostconf_t *host = h2o_config_register_host(&s_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    s_pathconf = h2o_config_register_path(host, "/", 0);

    s_t = calloc(1, sizeof *s_t);
    h2o_context_init(&s_t->h2o, h2o_evloop_create(), &s_conf);
    gw_buf_init(&s_t->out);
    proto_buf_init(&s_t->pb);
    s_t->authcache = gw_authcache_new(64);
    s_t->conns = gw_conns_new();
    s_conn.ctx = &s_t->h2o;
    s_conn.hosts = s_conf.hosts;
    s_conn.callbacks = &s_callbacks;

    snprintf(gw_cfg.node_id, sizeof gw_cfg.node_id, "gw-fuzz");
    snprintf(gw_cfg.node_type, sizeof gw_cfg.node_type, "center");
    gw_cfg.threads = 1;
    gw_cfg.nnodes = 0; /* nothing upstream: validated requests are answered 503 at once */
    gw_cfg.request_timeout_ms = 2000;
    gw_cfg.default_ttl = 3600;
    gw_cfg.max_batch = 64;
    gw_cfg.auth_reads = false;
    gw_cfg.auth.secret = (unsigned char *)FZ_SECRET;
    gw_cfg.auth.secret_len = strlen(FZ_SECRET);
    snprintf(gw_cfg.auth.issuer, sizeof gw_cfg.auth.issuer, "presence-service");
    gw_cfg.auth.alg = JWT_ALG_HS256;
    gw_cfg.auth.leeway_s = 60;
    setenv("CORS_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:3000", 1);
    char err[256];
    if (gw_cors_config(&gw_cfg.cors, err) < 0) {
        fprintf(stderr, "cors: %s\n", err);
        abort();
    }
    /* Limits so high they never answer 429, but the keys are still computed. */
    gw_cfg.write_rate = gw_cfg.write_burst = gw_cfg.read_rate = gw_cfg.read_burst = 1e12;
    gw_cfg.rl_writes = gw_ratelimit_new(1e12, 1e12, 256);
    gw_cfg.rl_reads = gw_ratelimit_new(1e12, 1e12, 256);
    gw_cfg.trust_proxy = true;
    gw_cfg.sse_max_streams = 10;
    gw_cfg.sse_max_ids = 100;
    int nroutes;
    const char *const *labels = gw_http_route_labels(&nroutes);
    gw_metrics_init(labels, nroutes);
    char uerr[256];
    s_t->up = gw_upstream_new(&s_t->h2o, 0, NULL, s_no_answer, NULL, uerr); /* no node: nothing connects */
    if (!s_t->up) {
        fprintf(stderr, "upstream: %s\n", uerr);
        abort();
    }

    int64_t now = (int64_t)(util_now_us() / 1000000u);
    /* Valid for a day: long enough for any fuzzing session. */
    s_tok_admin = gw_auth_sign(gw_cfg.auth.secret, gw_cfg.auth.secret_len, gw_cfg.auth.alg, gw_cfg.auth.issuer,
                               "admin-1", "presence:admin", now, now + 86400);
    s_tok_expired = gw_auth_sign(gw_cfg.auth.secret, gw_cfg.auth.secret_len, gw_cfg.auth.alg, gw_cfg.auth.issuer,
                                 "alice", "", now - 7200, now - 3600);
    if (!s_tok_admin || !s_tok_expired)
        abort();
    gw_buf_init(&R.body);
    return 0;
}

/* Next line of [*p, end): returns its start, sets *len (without LF), advances *p past the LF. */
static const char *s_line(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    const char *lf = memchr(s, '\n', (size_t)(end - s));
    const char *e = lf ? lf : end;
    *len = (size_t)(e - s);
    *p = lf ? lf + 1 : end;
    return s;
}

static void s_add_header(h2o_req_t *req, const char *name, size_t nlen, const char *val, size_t vlen)
{
    /* h2o hands handlers lower-case names, known ones as tokens. */
    char *n = h2o_mem_alloc_pool(&req->pool, nlen + 1);
    memcpy(n, name, nlen);
    n[nlen] = '\0';
    h2o_strtolower(n, nlen);
    char *v = h2o_mem_alloc_pool(&req->pool, vlen + 1);
    memcpy(v, val, vlen);
    v[vlen] = '\0';
    if (nlen == 13 && memcmp(n, "authorization", 13) == 0 && vlen && val[0] == '@') {
        /* Substitute a real token. */
        char *tok = NULL;
        bool owned = false;
        if (vlen == 6 && memcmp(val, "@admin", 6) == 0) {
            tok = s_tok_admin;
        } else if (vlen == 8 && memcmp(val, "@expired", 8) == 0) {
            tok = s_tok_expired;
        } else if (vlen > 6 && memcmp(val, "@user:", 6) == 0) {
            int64_t now = (int64_t)(util_now_us() / 1000000u);
            tok = gw_auth_sign(gw_cfg.auth.secret, gw_cfg.auth.secret_len, gw_cfg.auth.alg, gw_cfg.auth.issuer, v + 6,
                               "", now, now + 3600);
            owned = true;
        }
        if (tok) {
            size_t tl = strlen(tok);
            v = h2o_mem_alloc_pool(&req->pool, tl + 8);
            memcpy(v, "Bearer ", 7);
            memcpy(v + 7, tok, tl + 1);
            vlen = tl + 7;
            if (owned)
                free(tok);
        }
    }
    const h2o_token_t *t = h2o_lookup_token(n, nlen);
    if (t)
        h2o_add_header(&req->pool, &req->headers, t, NULL, v, vlen);
    else
        h2o_add_header_by_str(&req->pool, &req->headers, n, nlen, 0, NULL, v, vlen);
}

static void s_check_response(h2o_req_t *req, bool head, bool metrics, bool api)
{
    FZ_CHECK(R.final && R.sends >= 1);
    int st = req->res.status;
    if (s_debug)
        fprintf(stderr, "fuzz_http: %d %.*s\n", st, (int)R.body.len, R.body.p);
    bool counted = false;
    for (int i = 0; i < GW_CODES; i++)
        counted = counted || gw_codes[i] == st;
    if (!counted)
        fprintf(stderr, "status %d\n", st);
    FZ_CHECK(counted);
    if (st == 204 || head)
        return;
    if (metrics && st == 200)
        return; /* the Prometheus text format */
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    FZ_CHECK(ct >= 0 && h2o_memis(req->res.headers.entries[ct].value.base, req->res.headers.entries[ct].value.len,
                                  H2O_STRLIT("application/json")));
    json_error_t e;
    json_t *o = json_loadb(R.body.p, R.body.len, 0, &e);
    if (!o)
        fprintf(stderr, "status %d body is not JSON (%s): %.*s\n", st, e.text, (int)R.body.len, R.body.p);
    FZ_CHECK(o && json_is_object(o));
    if (st >= 400 && api) { /* health checks answer 503 with their own document */
        json_t *ok = json_object_get(o, "success"), *er = json_object_get(o, "error");
        FZ_CHECK(json_is_false(ok) && json_is_string(er) && json_string_length(er) > 0);
    }
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > GW_BODY_MAX + 4096)
        return 0;
    const char *p = (const char *)data, *end = p + size;
    size_t ll;
    const char *line = s_line(&p, end, &ll);
    const char *sp = memchr(line, ' ', ll);
    size_t mlen = sp ? (size_t)(sp - line) : ll;
    const char *path = sp ? sp + 1 : "/";
    size_t plen = sp ? ll - mlen - 1 : 1;
    if (plen == 0) {
        path = "/";
        plen = 1;
    }

    static h2o_req_t req;
    h2o_init_request(&req, &s_conn, NULL);
    req.version = 0x101;
    req.pathconf = s_pathconf;
    req._ostr_top = &s_ostr;
    char *m = h2o_mem_alloc_pool(&req.pool, mlen + 1);
    memcpy(m, line, mlen);
    m[mlen] = '\0';
    char *pa = h2o_mem_alloc_pool(&req.pool, plen + 1);
    memcpy(pa, path, plen);
    pa[plen] = '\0';
    req.input.method = req.method = h2o_iovec_init(m, mlen);
    req.input.path = req.path = h2o_iovec_init(pa, plen);
    const char *q = memchr(pa, '?', plen);
    req.query_at = q ? (size_t)(q - pa) : SIZE_MAX;
    req.path_normalized = h2o_iovec_init(pa, q ? (size_t)(q - pa) : plen);
    req.input.authority = req.authority = h2o_iovec_init(H2O_STRLIT("localhost"));
    req.input.scheme = req.scheme = &H2O_URL_SCHEME_HTTP;

    for (;;) {
        if (p >= end)
            break;
        line = s_line(&p, end, &ll);
        if (ll == 0)
            break; /* blank line: the body follows */
        const char *colon = memchr(line, ':', ll);
        if (!colon || colon == line)
            continue;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = ll - nlen - 1;
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        s_add_header(&req, line, nlen, v, vlen);
    }
    size_t blen = (size_t)(end - p);
    if (blen) {
        char *body = h2o_mem_alloc_pool(&req.pool, blen);
        memcpy(body, p, blen);
        req.entity = h2o_iovec_init(body, blen);
    }

    R.sends = 0;
    R.final = false;
    gw_buf_reset(&R.body);
    int64_t inflight = atomic_load(&gw_metrics.inflight);
    gw_http_on_req(&s_handler, &req);
    size_t route_len = q ? (size_t)(q - pa) : plen;
    s_check_response(&req, h2o_memis(m, mlen, H2O_STRLIT("HEAD")), h2o_memis(pa, route_len, H2O_STRLIT("/metrics")),
                     route_len >= 5 && memcmp(pa, "/api/", 5) == 0);
    FZ_CHECK(atomic_load(&gw_metrics.inflight) == inflight);
    h2o_dispose_request(&req);
    return 0;
}
