/* ssebench.c -- hold many SSE watch streams open on one gateway and count their events.
 *
 *   ssebench PORT STREAMS SECONDS [USERS_PER_STREAM] [USER_SPACE]
 *
 * Opens STREAMS connections to GET /api/v2/presence/watch?users=... (each stream watches
 * USERS_PER_STREAM users drawn from u1..uUSER_SPACE), waits until every stream answered 200, holds
 * them for SECONDS while counting events, then prints one line (SSEBENCH_ID_LEN=N pads every id
 * to N bytes, "u<k>xxx...", to measure long ids; SSEBENCH_HOLD=1 keeps the streams open after):
 *
 *   streams N connected C events E seconds S
 *
 * Single-threaded epoll; raise RLIMIT_NOFILE first (the bench script does).
 */
#include "cli.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct conn {
    int fd;
    int state; /* 0 sent, 1 headers ok */
    size_t seen;
} conn_t;

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "ssebench", "PORT STREAMS SECONDS [USERS_PER_STREAM] [USER_SPACE]", "Open many SSE watch streams and measure event delivery.");
    if (argc < 4) {
        fprintf(stderr, "usage: ssebench PORT STREAMS SECONDS [USERS_PER_STREAM] [USER_SPACE]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double secs = atof(argv[3]);
    int per = argc > 4 ? atoi(argv[4]) : 5, space = argc > 5 ? atoi(argv[5]) : 10000;
    struct rlimit rl = {(rlim_t)n + 100, (rlim_t)n + 100};
    setrlimit(RLIMIT_NOFILE, &rl);
    conn_t *c = calloc((size_t)n, sizeof *c);
    int ep = epoll_create1(0);
    unsigned seed = 42;
    long connected = 0, events = 0;
    int idlen = getenv("SSEBENCH_ID_LEN") ? atoi(getenv("SSEBENCH_ID_LEN")) : 0;
    if (idlen < 0 || idlen > 128)
        idlen = 0;
    size_t reqcap = (size_t)per * (size_t)(idlen + 16) + 256;
    char *req = malloc(reqcap), buf[65536];
    for (int i = 0; i < n; i++) {
        c[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (c[i].fd < 0 || connect(c[i].fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "ssebench: connect %d: %s\n", i, strerror(errno));
            return 1;
        }
        int len = snprintf(req, reqcap, "GET /api/v2/presence/watch?users=");
        for (int k = 0; k < per; k++) {
            int at = len;
            len += snprintf(req + len, reqcap - (size_t)len, "%su%d", k ? "," : "", 1 + (int)(rand_r(&seed) % (unsigned)space));
            for (int w = len - at - (k ? 1 : 0); w < idlen; w++)
                req[len++] = 'x';
        }
        len += snprintf(req + len, reqcap - (size_t)len, " HTTP/1.1\r\nHost: x\r\n\r\n");
        for (int off = 0; off < len;) {
            ssize_t w = send(c[i].fd, req + off, (size_t)(len - off), MSG_NOSIGNAL);
            if (w <= 0)
                return 1;
            off += (int)w;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
    }
    double start = s_now(), until = start + secs + 30, hold_from = 0;
    struct epoll_event evs[256];
    while (s_now() < until) {
        if (connected == n && !hold_from) {
            hold_from = s_now();
            until = hold_from + secs;
            events = 0;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int j = 0; j < k; j++) {
            conn_t *cc = &c[evs[j].data.u32];
            ssize_t r = recv(cc->fd, buf, sizeof buf - 1, 0);
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, cc->fd, NULL);
                continue;
            }
            buf[r] = '\0';
            if (cc->state == 0 && strstr(buf, "HTTP/1.1 200")) {
                cc->state = 1;
                connected++;
            }
            for (char *p = buf; (p = strstr(p, "event: presence")); p += 15)
                events++;
        }
    }
    printf("streams %d connected %ld events %ld seconds %.1f\n", n, connected, events, hold_from ? s_now() - hold_from : 0.0);
    fflush(stdout);
    /* hold until killed so the caller can measure the gateway while the streams are open */
    if (getenv("SSEBENCH_HOLD"))
        pause();
    return connected == n ? 0 : 1;
}
