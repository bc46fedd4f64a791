/* h2_client.c -- a minimal HTTP/2 client (see h2_client.h).
 *
 * Frames (RFC 9113 4.1): 24-bit length, type, flags, 31-bit stream id. HEADERS carry an HPACK
 * block of four fields: :method GET and :scheme http from the static table (0x82, 0x86), :path and
 * :authority as literals without indexing naming static entries 4 and 1 (0x04, 0x01), lengths
 * under 127 with no Huffman. Written for the rapid reset probe: as fast as the socket takes it.
 */
#include "h2_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { F_DATA = 0, F_HEADERS = 1, F_RST_STREAM = 3, F_SETTINGS = 4, F_GOAWAY = 7 };

struct th_h2 {
    int fd;
    uint32_t next_id;
    bool closed;
    uint8_t in[65536 + 16];
    size_t have;
};

static size_t s_frame(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint32_t id)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(id >> 24) & 0x7f;
    p[6] = (uint8_t)(id >> 16);
    p[7] = (uint8_t)(id >> 8);
    p[8] = (uint8_t)id;
    return 9;
}

/* Write everything (blocking with a poll deadline); false when the connection is gone. */
static bool s_write(th_h2_t *h, const uint8_t *p, size_t n)
{
    while (n && !h->closed) {
        ssize_t w = send(h->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            h->closed = true;
            break;
        }
        struct pollfd pf = {.fd = h->fd, .events = POLLOUT | POLLIN};
        poll(&pf, 1, 100);
        if (pf.revents & POLLIN) {
            /* Keep reading while we wait to write: the server may be blocked on us. */
            th_h2_wait_closed(h, 0);
        }
    }
    return !h->closed;
}

/* Read what is there (for up to timeout_ms); acknowledge SETTINGS, notice GOAWAY and EOF. */
static void s_read(th_h2_t *h, int timeout_ms)
{
    struct pollfd pf = {.fd = h->fd, .events = POLLIN};
    if (poll(&pf, 1, timeout_ms) <= 0)
        return;
    for (;;) {
        ssize_t r = recv(h->fd, h->in + h->have, sizeof h->in - h->have, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            h->closed = true;
            return;
        }
        if (r < 0)
            return;
        h->have += (size_t)r;
        size_t off = 0;
        while (h->have - off >= 9) {
            uint32_t len = ((uint32_t)h->in[off] << 16) | ((uint32_t)h->in[off + 1] << 8) | h->in[off + 2];
            uint8_t type = h->in[off + 3], flags = h->in[off + 4];
            if (len > 65536) { /* more than we allow: treat as the end */
                h->closed = true;
                return;
            }
            if (h->have - off < 9 + len)
                break;
            if (type == F_SETTINGS && !(flags & 1)) {
                uint8_t ack[9];
                s_frame(ack, 0, F_SETTINGS, 1, 0);
                send(h->fd, ack, 9, MSG_NOSIGNAL | MSG_DONTWAIT);
            } else if (type == F_GOAWAY) {
                h->closed = true;
            }
            off += 9 + len;
        }
        memmove(h->in, h->in + off, h->have - off);
        h->have -= off;
    }
}

th_h2_t *th_h2_open(int port)
{
    return th_h2_open_from(port, NULL);
}

th_h2_t *th_h2_open_from(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct sockaddr_in from = {.sin_family = AF_INET};
    if (fd >= 0 && src && (inet_pton(AF_INET, src, &from.sin_addr) != 1 || bind(fd, (struct sockaddr *)&from, sizeof from) < 0)) {
        close(fd);
        return NULL;
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    th_h2_t *h = calloc(1, sizeof *h);
    h->fd = fd;
    h->next_id = 1;
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    uint8_t buf[64];
    memcpy(buf, preface, 24);
    size_t n = 24 + s_frame(buf + 24, 0, F_SETTINGS, 0, 0);
    if (!s_write(h, buf, n)) {
        th_h2_close(&h);
        return NULL;
    }
    return h;
}

/* HEADERS for GET path on stream id, END_STREAM|END_HEADERS; then RST_STREAM(CANCEL). */
static size_t s_pair(uint8_t *p, uint32_t id, const char *path, size_t plen)
{
    static const char authority[] = "127.0.0.1";
    size_t alen = sizeof authority - 1;
    uint32_t blen = (uint32_t)(2 + 2 + plen + 2 + alen);
    size_t n = s_frame(p, blen, F_HEADERS, 0x5, id);
    p[n++] = 0x82; /* :method GET */
    p[n++] = 0x86; /* :scheme http */
    p[n++] = 0x04; /* :path, literal without indexing */
    p[n++] = (uint8_t)plen;
    memcpy(p + n, path, plen);
    n += plen;
    p[n++] = 0x01; /* :authority */
    p[n++] = (uint8_t)alen;
    memcpy(p + n, authority, alen);
    n += alen;
    n += s_frame(p + n, 4, F_RST_STREAM, 0, id);
    p[n++] = 0;
    p[n++] = 0;
    p[n++] = 0;
    p[n++] = 8; /* CANCEL */
    return n;
}

uint64_t th_h2_rapid_reset(th_h2_t *h, const char *path_prefix, uint64_t n)
{
    uint8_t buf[64 * 200];
    uint64_t sent = 0;
    while (sent < n && !h->closed) {
        size_t len = 0;
        uint64_t batch = 0;
        for (; batch < 64 && sent + batch < n && h->next_id < 0x7ffffff0u; batch++) {
            char path[120];
            int pl = snprintf(path, sizeof path, "%s%llu", path_prefix, (unsigned long long)((sent + batch) % 1000));
            if (pl <= 0 || pl > 100)
                pl = 1;
            len += s_pair(buf + len, h->next_id, path, (size_t)pl);
            h->next_id += 2;
        }
        if (!batch || !s_write(h, buf, len))
            break;
        sent += batch;
        s_read(h, 0);
    }
    return sent;
}

bool th_h2_wait_closed(th_h2_t *h, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        s_read(h, 10);
        if (h->closed)
            return true;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= timeout_ms)
            return false;
    }
}

bool th_h2_closed(const th_h2_t *h)
{
    return h->closed;
}

void th_h2_close(th_h2_t **hp)
{
    th_h2_t *h = *hp;
    if (!h)
        return;
    close(h->fd);
    free(h);
    *hp = NULL;
}
