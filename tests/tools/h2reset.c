/* h2reset.c -- the HTTP/2 Rapid Reset probe (CVE-2023-44487) against a gateway on loopback.
 *
 *   h2reset PORT [SECONDS] [PATH_PREFIX] [SOURCE_ADDRESS]
 *
 * One attacker: opens a cleartext HTTP/2 connection and sends HEADERS+RST_STREAM pairs as fast as
 * the socket takes them (GET PATH_PREFIX<0..999>, default /api/v2/presence/rr); when the server
 * closes the connection it opens another, until SECONDS (default 10) have passed. It connects
 * from SOURCE_ADDRESS (default 127.0.0.2: another client than a benchmark on 127.0.0.1). Prints
 *
 *   pairs P connections C closed_by_server K seconds S pairs_per_s R
 *
 * Run it beside a normal client (h2load) to see what one abusive client does to others' latency
 * (BENCHMARKS.md, RELIABILITY.md). Loopback only: the target is 127.0.0.1.
 */
#include "cli.h"
#include "tests/integ/h2_client.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "h2reset", "PORT [SECONDS] [PATH_PREFIX] [SOURCE_ADDRESS]",
             "HTTP/2 rapid reset probe: HEADERS+RST_STREAM pairs against 127.0.0.1:PORT (RELIABILITY.md).");
    if (argc < 2) {
        fprintf(stderr, "usage: h2reset PORT [SECONDS] [PATH_PREFIX] [SOURCE_ADDRESS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double secs = argc > 2 ? atof(argv[2]) : 10;
    const char *prefix = argc > 3 ? argv[3] : "/api/v2/presence/rr";
    const char *src = argc > 4 ? argv[4] : "127.0.0.2";
    uint64_t t0 = util_mono_ms(), until = t0 + (uint64_t)(secs * 1000);
    uint64_t pairs = 0, conns = 0, closed = 0;
    while (util_mono_ms() < until) {
        th_h2_t *h = th_h2_open_from(port, src);
        if (!h) {
            fprintf(stderr, "h2reset: cannot connect to 127.0.0.1:%d\n", port);
            return 1;
        }
        conns++;
        while (util_mono_ms() < until && !th_h2_closed(h))
            pairs += th_h2_rapid_reset(h, prefix, 1024);
        if (th_h2_closed(h))
            closed++;
        th_h2_close(&h);
    }
    double el = (double)(util_mono_ms() - t0) / 1000.0;
    printf("pairs %llu connections %llu closed_by_server %llu seconds %.1f pairs_per_s %.0f\n", (unsigned long long)pairs,
           (unsigned long long)conns, (unsigned long long)closed, el, (double)pairs / el);
    return 0;
}
