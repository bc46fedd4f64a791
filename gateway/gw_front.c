/* gw_front.c -- a new connection's first request head, judged before h2o reads the rest (see
 * gw_front.h).
 *
 * Why: h2o 2.2.5 reads a request head of up to ~417 KB for as long as its request timeout allows,
 * then the whole body (up to max_request_entity_size) before our handler runs and sees the token.
 * An anonymous client could so hold ~200 KB per connection for 10 s. The front reads the head
 * itself, into the socket's own input buffer (so h2o later parses the very same bytes), and
 *   - cuts a head that is not complete within HTTP_HEADER_TIMEOUT_MS (slowloris): 408;
 *   - cuts a head larger than HTTP_HEADER_MAX: 431;
 *   - for a request with a body, on a route that will need a token for it (gw_guard_needs_token)
 *     and whose path id is valid: a missing or invalid token is 401 before a byte of the body is
 *     read; a Content-Length over GW_BODY_MAX is 413 (the guard's order: token, then size).
 * An HTTP/2 connection (its preface) gets a small socket receive buffer (H2_RCVBUF: see
 * gw_h2guard.c). Everything else -- a head that passes, HTTP/2's preface, garbage, doubtful framing, CORS and
 * routing answers -- goes to h2o, whose own rules then apply. Only the first request of a
 * connection passes here: later keep-alive requests are h2o's (its request timeout,
 * HTTP_REQUEST_TIMEOUT_MS, bounds them; max_request_entity_size their bodies).
 *
 * Answers are written straight to the socket (Connection: close) and the socket closed after.
 * One thread: the socket's; the head timeout list is per thread.
 */
#include "gw_front.h"
#include "gw_access.h"
#include "gw_clientaddr.h"
#include "gw_config.h"
#include "gw_guard.h"
#include "gw_h2guard.h"
#include "gw_head.h"
#include "gw_metrics.h"
#include "gw_reply.h"
#include "gw_routes.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define H2_RCVBUF 65536 /* an HTTP/2 connection's socket receive buffer (the kernel doubles it) */

typedef struct front {
    struct front *prev, *next; /* the thread's fronts */
    gw_ctx_t *cx;
    h2o_accept_ctx_t *actx;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timer; /* the head's deadline, then the answer's */
    char *out;                 /* an answer being written */
    bool answering;
    uint64_t start_us;         /* when the connection was accepted (monotonic) */
} front_t;

static __thread h2o_timeout_t s_head_to;
static __thread bool s_head_to_ready;
static __thread front_t *s_fronts;

static void s_free(front_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        s_fronts = f->next;
    if (f->next)
        f->next->prev = f->prev;
    if (h2o_timeout_is_linked(&f->timer))
        h2o_timeout_unlink(&f->timer);
    free(f->out);
    free(f);
}

static void s_close(front_t *f)
{
    h2o_socket_t *sock = f->sock;
    sock->data = NULL;
    s_free(f);
    h2o_socket_close(sock);
}

static void on_answered(h2o_socket_t *sock, const char *err)
{
    s_close(sock->data);
}

/* An answer of the front is a request like any other to the operator: counted under its route
 * (when the head named one) and, with ACCESS_LOG, given its line. The client is the connection's
 * peer: the front does not read X-Forwarded-For (a proxy's address shows for a proxied client). */
static void s_account(front_t *f, int status, const gw_head_t *h, int route, size_t body_len)
{
    int method = h ? gw_routes_method(h2o_iovec_init(h->method, h->method_len)) : 0;
    if (route > 0) {
        gw_metrics_begin();
        gw_metrics_request(route, method, status, f->start_us);
    }
    if (!gw_cfg.access_log)
        return;
    struct sockaddr_storage ss;
    socklen_t sl = h2o_socket_getpeername(f->sock, (struct sockaddr *)&ss);
    uint8_t peer[16];
    bool have = gw_clientaddr_from_sockaddr((struct sockaddr *)&ss, sl, peer);
    char client[GW_CLIENTADDR_LEN];
    gw_clientaddr_pick(have ? peer : NULL, false, &gw_cfg.trusted, NULL, 0, client);
    int n;
    const char *const *labels = gw_routes_labels(&n);
    gw_access_t a = {
        .ts_us = util_now_us(),
        .proc = "gw",
        .pid = (int)getpid(),
        .method = h ? h->method : "",
        .method_len = h ? h->method_len : 0,
        .route = route > 0 && route < n ? labels[route] : "front",
        .target = h ? h->target : "",
        .target_len = h ? h->target_len : 0,
        .code = status,
        .dur_us = util_mono_us() - f->start_us,
        .bytes = body_len,
        .client = client,
    };
    gw_reply_access_write(&a);
}

/* Answer status with a JSON error body naming the rule, then close. */
static void s_answer(front_t *f, int status, const char *reason, const char *extra, const char *msg,
                     const gw_head_t *h, int route)
{
    atomic_fetch_add_explicit(&gw_metrics.heads_refused, 1, memory_order_relaxed);
    gw_buf_t body;
    gw_buf_init(&body);
    gw_json_error(&body, msg);
    char cors[600] = "";
    const char *ao = NULL;
    size_t aol = 0;
    if (h && gw_cors_check(&gw_cfg.cors, h->origin, h->origin_len, &ao, &aol) == GW_CORS_ALLOW && ao)
        snprintf(cors, sizeof cors, "access-control-allow-origin: %.*s\r\nvary: Origin\r\n", (int)MIN(aol, 512), ao);
    size_t cap = body.len + strlen(extra) + strlen(cors) + 256;
    f->out = xmalloc(cap);
    int n = snprintf(f->out, cap,
                     "HTTP/1.1 %d %s\r\nserver: presence\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
                     "%s%scontent-length: %zu\r\nconnection: close\r\n\r\n%.*s",
                     status, reason, extra, cors, body.len, (int)body.len, body.p);
    s_account(f, status, h, route, body.len);
    gw_buf_free(&body);
    f->answering = true;
    h2o_socket_read_stop(f->sock);
    h2o_iovec_t buf = h2o_iovec_init(f->out, (size_t)n);
    h2o_socket_write(f->sock, &buf, 1, on_answered);
}

/* h2o takes the connection, with what was read so far still in its input. */
static void s_handover(front_t *f)
{
    h2o_socket_t *sock = f->sock;
    h2o_accept_ctx_t *actx = f->actx;
    h2o_socket_read_stop(sock);
    sock->data = NULL;
    s_free(f);
    h2o_accept(actx, sock);
}

static void on_timeout(h2o_timeout_entry_t *e)
{
    front_t *f = H2O_STRUCT_FROM_MEMBER(front_t, timer, e);
    if (f->answering) {
        s_close(f); /* a client that does not take its answer */
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg, GW_ERR_HEAD_TIMEOUT, (unsigned long long)gw_cfg.header_timeout_ms);
    h2o_timeout_link(f->cx->h2o.loop, &s_head_to, &f->timer); /* the answer's own deadline */
    s_answer(f, 408, "Request Timeout", "", msg, NULL, 0);
}

/* A complete head: judge the body rules (see the file comment). */
static void s_judge(front_t *f, const gw_head_t *h)
{
    if (h->body == GW_BODY_NONE || h->body == GW_BODY_UNCLEAR || (h->body == GW_BODY_LENGTH && !h->content_length)) {
        s_handover(f);
        return;
    }
    gw_rctx_t rc;
    memset(&rc, 0, sizeof rc);
    const char *q = memchr(h->target, '?', h->target_len);
    size_t plen = q ? (size_t)(q - h->target) : h->target_len;
    int route = gw_routes_match(h->target, plen, &rc);
    const gw_route_t *r = route ? gw_routes_get(route) : NULL;
    int method = gw_routes_method(h2o_iovec_init(h->method, h->method_len));
    const char *ao;
    size_t aol;
    if (!r || !(r->methods & GW_METHOD(method)) || (r->guard.flags & GW_RF_QUERY_TOKEN) ||
        gw_cors_check(&gw_cfg.cors, h->origin, h->origin_len, &ao, &aol) == GW_CORS_FORBID) {
        s_handover(f); /* 404, 405, 403: answered by the request path */
        return;
    }
    if (rc.seg_id) {
        char uid[PROTO_USER_ID_MAX * 3 + 1];
        ssize_t n;
        if (rc.seg_id_len > PROTO_USER_ID_MAX * 3 || (n = gw_pct_decode(rc.seg_id, rc.seg_id_len, uid)) < 0 ||
            !gw_valid_user_id(uid, (size_t)n)) {
            s_handover(f); /* the guard's 400 comes first */
            return;
        }
    }
    if (gw_guard_needs_token(&r->guard, method)) {
        gw_claims_t claims;
        const char *why;
        if (gw_auth_verify_cached(f->cx->authcache, &gw_cfg.auth, h->auth, h->auth ? h->auth_len : 0,
                                  (int64_t)(util_now_us() / 1000000u), &claims, &why) < 0) {
            s_answer(f, 401, "Unauthorized", "www-authenticate: Bearer realm=\"presence\", error=\"invalid_token\"\r\n",
                     why, h, route);
            return;
        }
    }
    if (h->body == GW_BODY_LENGTH && h->content_length > GW_BODY_MAX) {
        s_answer(f, 413, "Request Entity Too Large", "", "request body too large (at most 65536 bytes)", h, route);
        return;
    }
    s_handover(f);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    front_t *f = sock->data;
    if (err) {
        s_close(f);
        return;
    }
    gw_head_t h;
    switch (gw_head_parse(sock->input->bytes, sock->input->size, gw_cfg.header_max, &h)) {
    case GW_HEAD_MORE:
        return;
    case GW_HEAD_NOT_HTTP1:
        if (sock->input->size >= 3 && memcmp(sock->input->bytes, "PRI", 3) == 0) {
            /* HTTP/2: many streams on one connection, request bodies flow-controlled to 64 KiB
             * anyway. A small receive buffer bounds what one read hands h2o to parse at once (a
             * rapid reset flood cannot queue megabytes of frames: gw_h2guard.c). */
            int rb = H2_RCVBUF;
            setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
            if (gw_h2guard_refuse(sock)) { /* in the penalty box for rapid reset */
                s_close(f);
                return;
            }
        }
        s_handover(f);
        return;
    case GW_HEAD_TOO_BIG: {
        char msg[160];
        snprintf(msg, sizeof msg, GW_ERR_HEAD_TOO_BIG, (unsigned long long)gw_cfg.header_max);
        LOG_RATELIMITED(LOG_NOTICE, 1000, "connection refused: %s", msg);
        s_answer(f, 431, "Request Header Fields Too Large", "", msg, NULL, 0);
        return;
    }
    default:
        s_judge(f, &h);
        return;
    }
}

void gw_front_accept(gw_ctx_t *cx, h2o_accept_ctx_t *actx, h2o_socket_t *sock)
{
    if (!s_head_to_ready) {
        h2o_timeout_init(cx->h2o.loop, &s_head_to, gw_cfg.header_timeout_ms);
        s_head_to_ready = true;
    }
    front_t *f = xcalloc(1, sizeof *f);
    f->cx = cx;
    f->actx = actx;
    f->sock = sock;
    f->timer.cb = on_timeout;
    f->start_us = util_mono_us();
    f->next = s_fronts;
    if (s_fronts)
        s_fronts->prev = f;
    s_fronts = f;
    sock->data = f;
    h2o_timeout_link(cx->h2o.loop, &s_head_to, &f->timer);
    h2o_socket_read_start(sock, on_read);
}

void gw_front_close_all(void)
{
    while (s_fronts)
        s_close(s_fronts);
}
