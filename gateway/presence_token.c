/* presence_token.c -- `make token SUB=alice [SCOPE=presence:admin]`: print a development JWT.
 *
 * HS256, iss = JWT_ISSUER (default presence-service), exp one hour ahead (TOKEN_TTL seconds to
 * change it), signed with JWT_SECRET from the environment or, when unset, with the development
 * secret that `make run` keeps in $DATA_DIR/dev-jwt-secret. The token is the last line printed.
 */
#include "gw_lib.h"

#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    const char *scope = argc > 2 ? argv[2] : "";
    if (!*sub) {
        fprintf(stderr, "usage: make token SUB=<user id> [SCOPE=presence:admin]\n");
        return 2;
    }
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
    const char *ttl_s = getenv("TOKEN_TTL");
    long ttl = ttl_s && *ttl_s ? strtol(ttl_s, NULL, 10) : 3600;
    time_t now = time(NULL);
    char *tok = gw_auth_sign((const unsigned char *)secret, strlen(secret), JWT_ALG_HS256,
                             iss && *iss ? iss : "presence-service", sub, scope, now, now + ttl);
    if (!tok) {
        fprintf(stderr, "could not sign a token\n");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}
