/* webhook_rx.c -- the tests' webhook receiver (see webhook_rx.h).
 *
 * One thread polls the listening socket and up to 64 connections (20 ms timeout, so a stop or a
 * mode change is seen promptly). Requests are parsed by hand: request line, headers up to the
 * blank line (Content-Length required for a body; no chunked bodies: libcurl sends POSTFIELDS with
 * a length), then the body. The answer depends on the mode at the moment the request is complete.
 * State shared with the test thread (counters, bodies, mode) is under one mutex. The TLS variant
 * (OpenSSL) serves one connection at a time with blocking reads bounded by socket timeouts.
 */
#include "tests/integ/webhooks/webhook_rx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_CONNS 64
#define RX_HEAD_MAX (64u << 10)
#define RX_BODY_MAX (64u << 20)

typedef struct conn {
    int fd;
    SSL *ssl; /* TLS variant */
    char *buf;
    size_t len, cap;
    bool stalled;
} conn_t;

struct wrx {
    int lfd, port;
    pthread_t thr;
    atomic_bool stop;
    atomic_int mode;
    bool keep;
    pthread_mutex_t mu;
    uint64_t requests, accepted, events, connections, tls_failures;
    SSL_CTX *tls;
    wrx_body_t *bodies;
    size_t nbodies, cap;
    conn_t conns[RX_CONNS];
};

static uint64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void s_close(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    c->stalled = false;
}

static void s_send(conn_t *c, const char *s)
{
    size_t n = strlen(s), off = 0;
    uint64_t deadline = s_mono_ms() + 2000;
    if (c->ssl) {
        SSL_write(c->ssl, s, (int)n);
        return;
    }
    while (off < n && s_mono_ms() < deadline) {
        ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            poll(&p, 1, 20);
        } else {
            break;
        }
    }
}

/* Value of header `name` in head[0..hlen) into out, or false. */
static bool s_header(const char *head, size_t hlen, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', hlen);
    while (p && (size_t)(p - head) + 1 < hlen) {
        p++;
        const char *e = memchr(p, '\n', hlen - (size_t)(p - head));
        if (!e)
            break;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = e;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = e;
    }
    return false;
}

static uint64_t s_count_events(const char *b, size_t n)
{
    uint64_t k = 0;
    for (const char *p = b; (p = memmem(p, n - (size_t)(p - b), "{\"id\":", 6)); p += 6)
        k++;
    return k;
}

/* Handle complete requests in c's buffer. Returns false when the connection is to be closed. */
static bool s_process(wrx_t *w, conn_t *c)
{
    while (!c->stalled) {
        char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (c->len > RX_HEAD_MAX) {
                s_send(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return false;
            }
            return true;
        }
        size_t hlen = (size_t)(end - c->buf) + 4;
        char v[256];
        size_t clen = 0;
        if (s_header(c->buf, hlen, "Content-Length", v, sizeof v)) {
            char *e;
            unsigned long long x = strtoull(v, &e, 10);
            if (*e || x > RX_BODY_MAX) {
                s_send(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return false;
            }
            clen = (size_t)x;
        }
        if (c->len < hlen + clen)
            return true;
        char path[256] = "";
        sscanf(c->buf, "%*s %255s", path);
        int mode = atomic_load(&w->mode);
        pthread_mutex_lock(&w->mu);
        w->requests++;
        pthread_mutex_unlock(&w->mu);
        switch (mode) {
        case WRX_OK:
        case WRX_TAKE_STALL: {
            pthread_mutex_lock(&w->mu);
            w->accepted++;
            w->events += s_count_events(c->buf + hlen, clen);
            if (w->keep) {
                if (w->nbodies == w->cap) {
                    w->cap = w->cap ? w->cap * 2 : 64;
                    w->bodies = realloc(w->bodies, w->cap * sizeof *w->bodies);
                }
                wrx_body_t *b = &w->bodies[w->nbodies++];
                memset(b, 0, sizeof *b);
                b->body = malloc(clen + 1);
                memcpy(b->body, c->buf + hlen, clen);
                b->body[clen] = '\0';
                b->len = clen;
                s_header(c->buf, hlen, "X-Presence-Signature", b->sig, sizeof b->sig);
                snprintf(b->path, sizeof b->path, "%s", path);
                b->at_ms = s_mono_ms();
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                b->at_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
            }
            pthread_mutex_unlock(&w->mu);
            if (mode == WRX_TAKE_STALL) {
                c->stalled = true;
                return true;
            }
            s_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            break;
        }
        case WRX_FAIL:
            s_send(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
            break;
        case WRX_REJECT:
            s_send(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            break;
        case WRX_STALL:
            c->stalled = true;
            return true;
        default: /* WRX_CLOSE */
            return false;
        }
        memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
        c->len -= hlen + clen;
    }
    return true;
}

/* TLS: serve one connection to its end (blocking, bounded by the socket timeouts). */
static void s_serve_tls(wrx_t *w, int fd)
{
    conn_t c = {.fd = fd};
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    c.ssl = SSL_new(w->tls);
    SSL_set_fd(c.ssl, fd);
    if (SSL_accept(c.ssl) != 1) {
        ERR_clear_error();
        pthread_mutex_lock(&w->mu);
        w->tls_failures++;
        pthread_mutex_unlock(&w->mu);
        goto out;
    }
    while (!atomic_load(&w->stop) && !c.stalled) {
        if (c.cap - c.len < 65536) {
            if (c.cap >= RX_HEAD_MAX + RX_BODY_MAX + 65536)
                break;
            c.cap = c.cap ? c.cap * 2 : 131072;
            c.buf = realloc(c.buf, c.cap);
        }
        int got = SSL_read(c.ssl, c.buf + c.len, (int)(c.cap - c.len));
        if (got <= 0)
            break;
        c.len += (size_t)got;
        if (!s_process(w, &c))
            break;
    }
out:
    SSL_free(c.ssl);
    c.ssl = NULL;
    free(c.buf);
    close(fd);
}

static void *s_main(void *arg)
{
    wrx_t *w = arg;
    struct pollfd pf[RX_CONNS + 1];
    while (!atomic_load(&w->stop)) {
        int map[RX_CONNS + 1], n = 0;
        pf[n] = (struct pollfd){.fd = w->lfd, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; i < RX_CONNS; i++) {
            if (w->conns[i].fd < 0)
                continue;
            /* A stalled connection is only watched for the client hanging up. */
            pf[n] = (struct pollfd){.fd = w->conns[i].fd, .events = POLLIN};
            map[n++] = i;
        }
        int r = poll(pf, (nfds_t)n, 20);
        if (r <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents)
                continue;
            if (map[k] < 0) {
                int fd = accept4(w->lfd, NULL, NULL, (w->tls ? 0 : SOCK_NONBLOCK) | SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                if (w->tls) {
                    pthread_mutex_lock(&w->mu);
                    w->connections++;
                    pthread_mutex_unlock(&w->mu);
                    s_serve_tls(w, fd);
                    continue;
                }
                int slot = -1;
                for (int i = 0; i < RX_CONNS && slot < 0; i++)
                    if (w->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                w->conns[slot].fd = fd;
                pthread_mutex_lock(&w->mu);
                w->connections++;
                pthread_mutex_unlock(&w->mu);
                continue;
            }
            conn_t *c = &w->conns[map[k]];
            if (c->stalled) {
                char tmp[4096];
                ssize_t got = recv(c->fd, tmp, sizeof tmp, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
                    s_close(c);
                continue;
            }
            if (c->cap - c->len < 65536) {
                if (c->cap >= RX_HEAD_MAX + RX_BODY_MAX + 65536) {
                    s_close(c);
                    continue;
                }
                c->cap = c->cap ? c->cap * 2 : 131072;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                s_close(c);
                continue;
            }
            if (got > 0) {
                c->len += (size_t)got;
                if (!s_process(w, c))
                    s_close(c);
            }
        }
    }
    return NULL;
}

static wrx_t *s_start(bool keep, SSL_CTX *tls)
{
    wrx_t *w = calloc(1, sizeof *w);
    w->keep = keep;
    w->tls = tls;
    for (int i = 0; i < RX_CONNS; i++)
        w->conns[i].fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof a;
    if (w->lfd < 0 || bind(w->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(w->lfd, 128) < 0 ||
        getsockname(w->lfd, (struct sockaddr *)&a, &sl) < 0) {
        if (w->lfd >= 0)
            close(w->lfd);
        free(w);
        return NULL;
    }
    w->port = ntohs(a.sin_port);
    if (pthread_create(&w->thr, NULL, s_main, w) != 0) {
        close(w->lfd);
        free(w);
        return NULL;
    }
    return w;
}

wrx_t *wrx_start(bool keep)
{
    return s_start(keep, NULL);
}

wrx_t *wrx_start_tls(bool keep, const char *cert_pem, const char *key_pem)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert_pem) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_pem, SSL_FILETYPE_PEM) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    wrx_t *w = s_start(keep, ctx);
    if (!w)
        SSL_CTX_free(ctx);
    return w;
}

int wrx_port(const wrx_t *w)
{
    return w->port;
}

void wrx_set_mode(wrx_t *w, int mode)
{
    atomic_store(&w->mode, mode);
}

void wrx_set_keep(wrx_t *w, bool keep)
{
    pthread_mutex_lock(&w->mu);
    w->keep = keep;
    pthread_mutex_unlock(&w->mu);
}

void wrx_stop(wrx_t **wp)
{
    wrx_t *w = *wp;
    if (!w)
        return;
    atomic_store(&w->stop, true);
    pthread_join(w->thr, NULL);
    for (int i = 0; i < RX_CONNS; i++)
        s_close(&w->conns[i]);
    close(w->lfd);
    for (size_t i = 0; i < w->nbodies; i++)
        free(w->bodies[i].body);
    free(w->bodies);
    SSL_CTX_free(w->tls);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *wp = NULL;
}

#define GETTER(name, field)                                                                                            \
    uint64_t name(wrx_t *w)                                                                                            \
    {                                                                                                                  \
        pthread_mutex_lock(&w->mu);                                                                                    \
        uint64_t v = w->field;                                                                                         \
        pthread_mutex_unlock(&w->mu);                                                                                  \
        return v;                                                                                                      \
    }
GETTER(wrx_requests, requests)
GETTER(wrx_accepted, accepted)
GETTER(wrx_events, events)
GETTER(wrx_connections, connections)
GETTER(wrx_tls_failures, tls_failures)

size_t wrx_bodies(wrx_t *w, size_t from, wrx_body_t *out, size_t max)
{
    pthread_mutex_lock(&w->mu);
    size_t n = 0;
    for (size_t i = from; i < w->nbodies && n < max; i++, n++) {
        out[n] = w->bodies[i];
        out[n].body = malloc(w->bodies[i].len + 1);
        memcpy(out[n].body, w->bodies[i].body, w->bodies[i].len + 1);
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}
