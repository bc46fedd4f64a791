/* presence_ws.c -- presence-ws: a command-line WebSocket client for trying the presence endpoint
 * (GET /api/v2/presence/connect) by hand or from a script, like wscat.
 *
 *   presence-ws [-n COUNT] [-t SECONDS] [-H 'Name: value']... ws://HOST:PORT/PATH?QUERY [MESSAGE...]
 *
 * Connects (the token in the URL's access_token=, or an Authorization header given with -H), prints
 * every text message the server sends on a line of its own, sends each MESSAGE as a text frame once
 * the first message (the welcome) is in, answers pings, and after COUNT messages or SECONDS (default
 * 30) signs the device out: a `bye` message, which the server answers with its close (1000) and
 * which ends the session at once (a close alone would leave it for the grace). Exit status: 0
 * after COUNT messages (or SECONDS without -n), 1 when the upgrade was refused (the status and the
 * JSON error on stderr), 3 when the server closed or SECONDS passed before COUNT, 2 on a usage
 * error.
 *
 * The protocol work is tests/integ/ws_client.c (the integration tests' client, which checks every
 * frame the server sends). Single-threaded; loopback or any IPv4 host.
 */
#include "cli.h"
#include "tests/integ/ws_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ws://HOST[:PORT]/PATH -> an IPv4 address, port and path (with its query). */
static int s_parse_url(const char *url, char *ip, size_t iplen, int *port, const char **path)
{
    if (strncmp(url, "ws://", 5) != 0)
        return -1;
    const char *h = url + 5, *slash = strchr(h, '/');
    *path = slash ? slash : "/";
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    char host[256];
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = 80;
    char *colon = strrchr(host, ':');
    if (colon) {
        *colon = '\0';
        *port = atoi(colon + 1);
        if (*port <= 0 || *port > 65535)
            return -1;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0)
        return -1;
    inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, (socklen_t)iplen);
    freeaddrinfo(ai);
    return 0;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "presence-ws", "[-n COUNT] [-t SECONDS] [-H 'Name: value']... ws://HOST:PORT/PATH [MESSAGE...]",
             "A WebSocket client for the presence endpoint: prints what the server sends, one message per line,\n"
             "and sends each MESSAGE after the welcome.");
    long count = -1;
    double seconds = 30;
    char headers[8192] = "";
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = atol(argv[++i]);
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "-H") == 0 && i + 1 < argc && strlen(headers) + strlen(argv[i + 1]) + 3 < sizeof headers)
            strcat(strcat(headers, argv[++i]), "\r\n");
        else
            break;
    }
    char ip[64];
    int port;
    const char *path;
    if (i >= argc || s_parse_url(argv[i], ip, sizeof ip, &port, &path) < 0 || seconds <= 0) {
        fprintf(stderr, "usage: presence-ws [-n COUNT] [-t SECONDS] [-H 'Name: value']... ws://HOST:PORT/PATH "
                        "[MESSAGE...]\n");
        return 2;
    }
    int first_msg = i + 1;
    uint64_t deadline = s_now_ms() + (uint64_t)(seconds * 1000);
    ws_client_t c;
    int st = ws_client_open(&c, ip, port, path, headers, (int)(seconds * 1000));
    if (st != 101) {
        fprintf(stderr, "presence-ws: %s%d %s\n", st < 0 ? "" : "HTTP ", st < 0 ? 0 : st,
                st < 0 ? c.err : c.body ? c.body : "");
        ws_client_close(&c);
        return 1;
    }
    long got = 0;
    int rc = 3;
    while (count < 0 || got < count) {
        uint64_t now = s_now_ms();
        if (now >= deadline) {
            rc = count < 0 ? 0 : 3;
            break;
        }
        ws_msg_t m;
        int r = ws_client_recv(&c, &m, (int)(deadline - now));
        if (r == WS_TIMEOUT)
            continue;
        if (r != WS_OK) {
            if (r == WS_CLOSED)
                fprintf(stderr, "presence-ws: closed by the server: %d %s\n", c.close_code, c.close_reason);
            else
                fprintf(stderr, "presence-ws: %s\n", r == WS_EOF ? "connection ended" : c.err);
            break;
        }
        if (m.opcode == WS_OP_TEXT) {
            printf("%s\n", (const char *)m.data);
            fflush(stdout);
            if (got++ == 0) /* the welcome: now the messages */
                for (int k = first_msg; k < argc; k++)
                    if (ws_client_send_text(&c, argv[k], 5000) < 0)
                        fprintf(stderr, "presence-ws: send: %s\n", c.err);
        }
        ws_msg_free(&m);
    }
    if (count >= 0 && got >= count)
        rc = 0;
    if (c.fd >= 0 && !c.close_received) {
        if (ws_client_send_text(&c, "{\"type\":\"bye\"}", 2000) < 0)
            ws_client_send_close(&c, 1000, "bye", 2000);
        ws_msg_t m;
        while (ws_client_recv(&c, &m, 2000) == WS_OK)
            ws_msg_free(&m); /* until the server's close (or the end) */
    }
    ws_client_close(&c);
    return rc;
}
