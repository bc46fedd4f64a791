/* repl_dns.c -- a raft_uv_transport that resolves member host names (repl_dns.h).
 *
 * It holds a raft_uv_tcp transport ("inner") and forwards init, listen and close to it. connect
 * to an IPv4 literal is forwarded as is; to a name, it first runs uv_getaddrinfo (IPv4, the
 * first answer) on libuv's thread pool, then asks the inner transport to connect to the address
 * found. Resolution failures answer RAFT_NOCONNECTION, which raft_uv retries after its connect
 * retry delay (so a name that comes back is found again). On close, resolutions in flight are
 * cancelled and answer RAFT_CANCELED, as the TCP transport answers its own aborted connects; the
 * close callback fires once the inner transport closed and no resolution is left.
 *
 * Threads: the loop thread only.
 */
#include "repl_dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* uv.h pulls in <sys/param.h>, whose MIN/MAX clash with util.h's: no util.h here. */
static void *s_zalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "repl: out of memory (%zu bytes)\n", n * size);
        abort();
    }
    return p;
}

typedef struct dns dns_t;

typedef struct resolve {
    uv_getaddrinfo_t gai;
    dns_t *d;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    raft_id id;
    char port[8];
    struct resolve *prev, *next;
} resolve_t;

struct dns {
    struct raft_uv_transport inner; /* raft_uv_tcp; inner.data points back at the outer transport */
    struct raft_uv_transport *outer;
    uv_loop_t *loop;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    resolve_t *pending;
    bool closing, inner_closed;
};

bool repl_dns_is_ipv4(const char *host)
{
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1;
}

static int s_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    dns_t *d = t->impl;
    int rv = d->inner.init(&d->inner, id, address);
    if (rv != 0)
        snprintf(t->errmsg, sizeof t->errmsg, "%s", d->inner.errmsg);
    return rv;
}

static void s_on_accept(struct raft_uv_transport *inner, raft_id id, const char *address, struct uv_stream_s *stream)
{
    struct raft_uv_transport *outer = inner->data;
    dns_t *d = outer->impl;
    d->accept_cb(outer, id, address, stream);
}

static int s_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    dns_t *d = t->impl;
    d->accept_cb = cb;
    int rv = d->inner.listen(&d->inner, s_on_accept);
    if (rv != 0)
        snprintf(t->errmsg, sizeof t->errmsg, "%s", d->inner.errmsg);
    return rv;
}

static void s_maybe_closed(dns_t *d)
{
    if (d->closing && d->inner_closed && !d->pending && d->close_cb) {
        raft_uv_transport_close_cb cb = d->close_cb;
        d->close_cb = NULL;
        cb(d->outer);
    }
}

static void s_unlink(dns_t *d, resolve_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        d->pending = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static void s_on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    resolve_t *r = g->data;
    dns_t *d = r->d;
    s_unlink(d, r);
    char addr[64] = "";
    if (!d->closing && status == 0 && res && res->ai_family == AF_INET) {
        char ip[INET_ADDRSTRLEN];
        const struct sockaddr_in *in = (const struct sockaddr_in *)res->ai_addr;
        if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip))
            snprintf(addr, sizeof addr, "%s:%s", ip, r->port);
    }
    uv_freeaddrinfo(res);
    if (d->closing) {
        r->cb(r->req, NULL, RAFT_CANCELED);
    } else if (!addr[0] || d->inner.connect(&d->inner, r->req, r->id, addr, r->cb) != 0) {
        /* We already told raft_uv the request is under way: it ends through its callback. */
        r->cb(r->req, NULL, RAFT_NOCONNECTION);
    }
    free(r);
    s_maybe_closed(d);
}

static int s_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id, const char *address,
                     raft_uv_connect_cb cb)
{
    dns_t *d = t->impl;
    const char *colon = strrchr(address, ':');
    char host[256];
    if (!colon || colon == address || (size_t)(colon - address) >= sizeof host || strlen(colon + 1) >= 8)
        return RAFT_NOCONNECTION;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    if (repl_dns_is_ipv4(host))
        return d->inner.connect(&d->inner, req, id, address, cb);
    resolve_t *r = s_zalloc(1, sizeof *r);
    r->d = d;
    r->req = req;
    r->cb = cb;
    r->id = id;
    snprintf(r->port, sizeof r->port, "%s", colon + 1);
    r->gai.data = r;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(d->loop, &r->gai, s_on_resolved, host, r->port, &hints) != 0) {
        free(r);
        return RAFT_NOCONNECTION;
    }
    r->next = d->pending;
    if (d->pending)
        d->pending->prev = r;
    d->pending = r;
    return 0;
}

static void s_on_inner_closed(struct raft_uv_transport *inner)
{
    struct raft_uv_transport *outer = inner->data;
    dns_t *d = outer->impl;
    d->inner_closed = true;
    s_maybe_closed(d);
}

static void s_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    dns_t *d = t->impl;
    d->closing = true;
    d->close_cb = cb;
    /* A cancelled resolution still calls s_on_resolved (UV_EAI_CANCELED); one already running
     * on the pool finishes first. Either way it ends its request with RAFT_CANCELED. */
    for (resolve_t *r = d->pending; r; r = r->next)
        uv_cancel((uv_req_t *)&r->gai);
    d->inner.close(&d->inner, s_on_inner_closed);
}

int repl_dns_init(struct raft_uv_transport *t, struct uv_loop_s *loop, const char *bind_address)
{
    dns_t *d = s_zalloc(1, sizeof *d);
    d->outer = t;
    d->loop = loop;
    d->inner.data = t;
    int rv = raft_uv_tcp_init(&d->inner, loop);
    if (rv != 0) {
        free(d);
        return rv;
    }
    d->inner.data = t; /* raft_uv_tcp_init keeps data, but be explicit */
    if (bind_address && (rv = raft_uv_tcp_set_bind_address(&d->inner, bind_address)) != 0) {
        raft_uv_tcp_close(&d->inner);
        free(d);
        return rv;
    }
    memset(t, 0, sizeof *t);
    t->impl = d;
    t->init = s_init;
    t->listen = s_listen;
    t->connect = s_connect;
    t->close = s_close;
    return 0;
}

void repl_dns_close(struct raft_uv_transport *t)
{
    dns_t *d = t->impl;
    if (!d)
        return;
    raft_uv_tcp_close(&d->inner);
    free(d);
    t->impl = NULL;
}
