/* presence_token.c -- `presence-token SUB [SCOPE]` (`make token SUB=alice [SCOPE=presence:admin]` in
 * a checkout): print a JWT for local use.
 *
 * HS256, iss = JWT_ISSUER (default presence-service), exp one hour ahead (TOKEN_TTL seconds to
 * change it), signed with JWT_SECRET from the environment or, when unset, with the development
 * secret that `make run` keeps in $DATA_DIR/dev-jwt-secret. The token is the last line printed.
 * --help and --version never mint a token.
 */
#include "cfg.h"
#include "cli.h"
#include "envreg.h"
#include "gw_lib.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const cli_desc_t s_cli = {
    .name = "presence-token",
    .summary = "Print a JWT (HS256) for user SUB, signed with JWT_SECRET or the development secret of `make run`.",
    .usage = "SUB [SCOPE]",
    .more = "  SUB    the user id the token may write (its `sub` claim)\n"
            "  SCOPE  space-separated scopes, e.g. presence:admin (writes any user, batch writes)\n"
            "In a checkout: make token SUB=alice [SCOPE=presence:admin]. In the container image:\n"
            "  docker compose exec -T center-gateway presence-token alice\n",
    .procs = ENVREG_TOKEN,
    .takes_args = true,
};

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    const char *sub = argc > 1 ? argv[1] : "";
    const char *scope = argc > 2 ? argv[2] : "";
    if (!*sub || argc > 3)
        cli_usage_error(&s_cli, !*sub ? "SUB is required" : "at most SUB and SCOPE");
    if (sub[0] == '-')
        cli_usage_error(&s_cli, "unknown option (SUB cannot start with '-')");
    char secret[1024] = "";
    const char *env = getenv("JWT_SECRET");
    if (env && *env) {
        snprintf(secret, sizeof secret, "%s", env);
    } else {
        const char *dir = getenv("DATA_DIR");
        char path[1024];
        snprintf(path, sizeof path, "%s/dev-jwt-secret", dir && *dir ? dir : "./data");
        FILE *f = fopen(path, "r");
        if (!f || !fgets(secret, sizeof secret, f)) {
            fprintf(stderr, "no JWT_SECRET in the environment and no development secret at %s (run `make run` once)\n",
                    path);
            if (f)
                fclose(f);
            return 1;
        }
        fclose(f);
        secret[strcspn(secret, "\r\n")] = '\0';
    }
    const char *iss = getenv("JWT_ISSUER");
    uint64_t ttl = 3600;
    char cerr[CFG_ERR_LEN];
    if (cfg_u64("TOKEN_TTL", 1, 365ull * 86400, &ttl, cerr) < 0) {
        fprintf(stderr, "presence-token: %s\n", cerr);
        return 2;
    }
    time_t now = time(NULL);
    char *tok = gw_auth_sign((const unsigned char *)secret, strlen(secret), JWT_ALG_HS256,
                             iss && *iss ? iss : "presence-service", sub, scope, now, now + (time_t)ttl);
    if (!tok) {
        fprintf(stderr, "could not sign a token\n");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}
