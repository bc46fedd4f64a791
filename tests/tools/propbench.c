/* propbench.c -- propagation delay from an acknowledged write at one region to its visibility at
 * another: PUT at PORT_A (keep-alive), the event arrives on an SSE stream at PORT_B watching the
 * same users; delay = event arrival - acknowledgement (same machine, same clock).
 *
 *   propbench PORT_A PORT_B WRITES TOKENS_FILE
 *
 * TOKENS_FILE has "uid token" lines (tests/tools/mktokens.c); the first 100 users are watched.
 * Prints: writes N received R p50_ms X p99_ms Y max_ms Z
 */
#include "cli.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define USERS 100

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int s_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    return fd;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "propbench", "PORT_A PORT_B WRITES TOKENS_FILE", "Cross-region propagation delay: PUT at gateway A, SSE event at gateway B.");
    if (argc < 5) {
        fprintf(stderr, "usage: propbench PORT_A PORT_B WRITES TOKENS_FILE\n");
        return 2;
    }
    int pa = atoi(argv[1]), pb = atoi(argv[2]), writes = atoi(argv[3]);
    char uid[USERS][64], tok[USERS][1024];
    FILE *f = fopen(argv[4], "r");
    for (int i = 0; i < USERS; i++)
        if (!f || fscanf(f, "%63s %1023s", uid[i], tok[i]) != 2)
            return 1;
    fclose(f);
    /* the watcher at B */
    int sb = s_connect(pb);
    char req[8192];
    int len = snprintf(req, sizeof req, "GET /api/v2/presence/watch?users=");
    for (int i = 0; i < USERS; i++)
        len += snprintf(req + len, sizeof req - (size_t)len, "%s%s", i ? "," : "", uid[i]);
    len += snprintf(req + len, sizeof req - (size_t)len, "&since=0 HTTP/1.1\r\nHost: x\r\n\r\n");
    send(sb, req, (size_t)len, 0);
    int wa = s_connect(pa);
    double *delay = calloc((size_t)writes, sizeof *delay);
    long received = 0;
    static char in[1 << 20], out[65536];
    size_t have = 0;
    int nd = 0;
    /* The PUT's answer carries the version; the event's id is that version. */
    for (int w = 0; w < writes; w++) {
        int u = w % USERS;
        char body[128];
        int bl = snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"w%d\"}", w % 2 ? "busy" : "away", w);
        int ol = snprintf(out, sizeof out,
                          "PUT /api/v2/presence/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
                          uid[u], tok[u], bl, body);
        send(wa, out, (size_t)ol, 0);
        char resp[8192] = "";
        size_t rl = 0;
        char *v = NULL;
        while (!(v = strstr(resp, "\"version\":"))) {
            ssize_t r = recv(wa, resp + rl, sizeof resp - 1 - rl, 0);
            if (r <= 0)
                return 1;
            rl += (size_t)r;
            resp[rl] = '\0';
        }
        double t_ack = s_now_ms();
        uint64_t version = strtoull(v + 10, NULL, 10);
        while (!strstr(resp, "}}}")) { /* the rest of the body */
            ssize_t r = recv(wa, resp + rl, sizeof resp - 1 - rl, 0);
            if (r <= 0)
                return 1;
            rl += (size_t)r;
            resp[rl] = '\0';
        }
        /* collect events that arrived so far (non-blocking), then the one for this write */
        double deadline = t_ack + 2000;
        bool got = false;
        while (!got && s_now_ms() < deadline) {
            struct pollfd p = {.fd = sb, .events = POLLIN};
            if (poll(&p, 1, 10) <= 0)
                continue;
            ssize_t r = recv(sb, in + have, sizeof in - 1 - have, 0);
            if (r <= 0)
                break;
            have += (size_t)r;
            in[have] = '\0';
            double t_ev = s_now_ms();
            char *q;
            while ((q = strstr(in, "\nid: "))) {
                uint64_t id = strtoull(q + 5, NULL, 10);
                if (id == version) {
                    delay[nd++] = t_ev - t_ack;
                    received++;
                    got = true;
                }
                memmove(in, q + 5, have - (size_t)(q + 5 - in) + 1);
                have -= (size_t)(q + 5 - in);
            }
        }
    }
    qsort(delay, (size_t)nd, sizeof *delay, s_cmp);
    printf("writes %d received %ld p50_ms %.3f p99_ms %.3f max_ms %.3f\n", writes, received,
           nd ? delay[nd / 2] : 0.0, nd ? delay[nd * 99 / 100] : 0.0, nd ? delay[nd - 1] : 0.0);
    return 0;
}
