/* mktokens.c -- print N lines "u<i> <token>" (HS256, iss presence-service, 1 h) signed with
 * $JWT_SECRET, for load tests that act as many users (tests/bench/heartbeat.lua).
 *   mktokens N [PREFIX]
 */
#include "cli.h"
#include "gw_lib.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "mktokens", "N [PREFIX]", "Print N development tokens (JWT_SECRET from the environment), one per line, for load tools.");
    const char *secret = getenv("JWT_SECRET");
    long n = argc > 1 ? atol(argv[1]) : 0;
    const char *prefix = argc > 2 ? argv[2] : "u";
    if (!secret || !*secret || n <= 0) {
        fprintf(stderr, "usage: JWT_SECRET=... mktokens N [PREFIX]\n");
        return 2;
    }
    time_t now = time(NULL);
    for (long i = 1; i <= n; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s%ld", prefix, i);
        char *t = gw_auth_sign((const unsigned char *)secret, strlen(secret), JWT_ALG_HS256, "presence-service", sub,
                               "", now, now + 3600);
        if (!t)
            return 1;
        printf("%s %s\n", sub, t);
        free(t);
    }
    return 0;
}
