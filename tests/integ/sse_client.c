/* sse_client.c -- the integration tests' SSE client (see sse_client.h). */
#include "sse_client.h"
#include "harness.h"
#include "util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SSE_BUF (1u << 20)

struct th_sse {
    int fd;
    size_t have, tlen;
    char buf[SSE_BUF + 1];  /* bytes from the socket (chunked) */
    char text[SSE_BUF + 1]; /* de-chunked stream not yet returned */
};

static int s_fill(th_sse_t *s, uint64_t deadline)
{
    uint64_t now = th_now_ms();
    if (now >= deadline)
        return -1;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, (int)MIN(deadline - now, 100)) <= 0)
        return 0;
    if (s->have >= SSE_BUF)
        return -1;
    ssize_t r = recv(s->fd, s->buf + s->have, SSE_BUF - s->have, 0);
    if (r <= 0)
        return -1;
    s->have += (size_t)r;
    s->buf[s->have] = '\0';
    return 0;
}

th_sse_t *th_sse_open(int port, const char *path, const char *headers, int *status)
{
    th_sse_t *s = calloc(1, sizeof *s);
    if (status)
        *status = 0;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n", path,
                     headers ? headers : "");
    if (connect(s->fd, (struct sockaddr *)&a, sizeof a) < 0 || n >= (int)sizeof req ||
        send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto fail;
    uint64_t deadline = th_now_ms() + 5000;
    while (!strstr(s->buf, "\r\n\r\n"))
        if (s_fill(s, deadline) < 0)
            goto fail;
    if (status && strncmp(s->buf, "HTTP/1.1 ", 9) == 0)
        *status = atoi(s->buf + 9);
    if (strncmp(s->buf, "HTTP/1.1 200", 12) != 0 || !strstr(s->buf, "text/event-stream"))
        goto fail;
    char *body = strstr(s->buf, "\r\n\r\n") + 4;
    s->have -= (size_t)(body - s->buf);
    memmove(s->buf, body, s->have);
    s->buf[s->have] = '\0';
    return s;
fail:
    th_sse_close(&s);
    return NULL;
}

/* Move whole chunks from buf to text. Returns -1 at the end of the stream. */
static int s_dechunk(th_sse_t *s)
{
    for (;;) {
        char *crlf = strstr(s->buf, "\r\n");
        if (!crlf)
            return 0;
        long sz = strtol(s->buf, NULL, 16);
        size_t need = (size_t)(crlf - s->buf) + 2 + (size_t)sz + 2;
        if (s->have < need)
            return 0;
        if (sz == 0)
            return -1;
        if (s->tlen + (size_t)sz > SSE_BUF)
            return -1;
        memcpy(s->text + s->tlen, crlf + 2, (size_t)sz);
        s->tlen += (size_t)sz;
        s->text[s->tlen] = '\0';
        memmove(s->buf, s->buf + need, s->have - need);
        s->have -= need;
        s->buf[s->have] = '\0';
    }
}

int th_sse_next(th_sse_t *s, th_event_t *ev, int timeout_ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (s_dechunk(s) < 0)
            return -1;
        char *end;
        while ((end = strstr(s->text, "\n\n"))) {
            size_t blen = (size_t)(end - s->text) + 2;
            char block[8192];
            snprintf(block, sizeof block, "%.*s", (int)MIN(blen, sizeof block - 1), s->text);
            memmove(s->text, s->text + blen, s->tlen - blen + 1);
            s->tlen -= blen;
            if (block[0] == ':' || strncmp(block, "retry:", 6) == 0)
                continue; /* comment / retry */
            char *id = strstr(block, "id: "), *data = strstr(block, "data: ");
            if (!data)
                continue;
            ev->id = id ? strtoull(id + 4, NULL, 10) : 0;
            char *nl = strchr(data + 6, '\n');
            snprintf(ev->data, sizeof ev->data, "%.*s", nl ? (int)(nl - data - 6) : (int)strlen(data + 6), data + 6);
            return 0;
        }
        if (s_fill(s, deadline) < 0)
            return -1;
    }
}

void th_sse_close(th_sse_t **sp)
{
    th_sse_t *s = *sp;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    *sp = NULL;
}

const char *th_event_field(const th_event_t *e, const char *name, char *out, size_t len)
{
    json_error_t err;
    json_t *j = json_loads(e->data, 0, &err);
    out[0] = '\0';
    if (!j)
        return out;
    json_t *v = json_object_get(j, name);
    if (v && json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
    else if (v && json_is_boolean(v))
        snprintf(out, len, "%s", json_is_true(v) ? "true" : "false");
    else if (v && json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    json_decref(j);
    return out;
}
