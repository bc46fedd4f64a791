/* gw_cors.c -- CORS configuration and decisions (see gw_lib.h; behaviour as in API.md).
 *
 * `*` is honoured only without credentials; the combination `*` + credentials is refused at
 * startup rather than silently matching nothing (the reference) or everything (a hole).
 */
#include "cfg.h"
#include "gw_lib.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "a, b ,c" -> "a, b, c". Returns -1 when the result does not fit in out (never truncate silently). */
static int s_join(const char *list, char *out, size_t outlen)
{
    int rc = 0;
    out[0] = '\0';
    size_t o = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if (t > p && o + (o ? 2 : 0) + (size_t)(t - p) + 1 <= outlen) {
            if (o) {
                memcpy(out + o, ", ", 2);
                o += 2;
            }
            memcpy(out + o, p, (size_t)(t - p));
            o += (size_t)(t - p);
            out[o] = '\0';
        } else if (t > p) {
            rc = -1;
        }
        p = e;
    }
    return rc;
}

int gw_cors_config(gw_cors_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    c->enabled = true;
    c->max_age = 600;
    char origins[4096] = "*", methods[256] = "GET,POST,PUT,DELETE,OPTIONS",
         headers[256] = "Authorization,Content-Type,Last-Event-ID";
    uint64_t max_age = 600;
    if (cfg_bool("CORS_ENABLED", &c->enabled, err) < 0 ||
        cfg_str("CORS_ALLOWED_ORIGINS", origins, sizeof origins, err) < 0 ||
        cfg_str("CORS_ALLOWED_METHODS", methods, sizeof methods, err) < 0 ||
        cfg_str("CORS_ALLOWED_HEADERS", headers, sizeof headers, err) < 0 ||
        cfg_bool("CORS_ALLOW_CREDENTIALS", &c->credentials, err) < 0 ||
        cfg_u64("CORS_MAX_AGE", 0, 86400 * 365, &max_age, err) < 0)
        return -1;
    c->max_age = (long)max_age;
    if (s_join(methods, c->methods, sizeof c->methods) < 0) {
        snprintf(err, CFG_ERR_LEN, "CORS_ALLOWED_METHODS: list too long");
        return -1;
    }
    if (s_join(headers, c->headers, sizeof c->headers) < 0) {
        snprintf(err, CFG_ERR_LEN, "CORS_ALLOWED_HEADERS: list too long");
        return -1;
    }
    /* Normalising adds at most one byte per item (items are at least one byte plus a comma). */
    char joined[2 * sizeof origins];
    if (s_join(origins, joined, sizeof joined) < 0) {
        snprintf(err, CFG_ERR_LEN, "CORS_ALLOWED_ORIGINS: list too long");
        return -1;
    }
    if (strcmp(joined, "*") == 0) {
        if (c->credentials) {
            snprintf(err, CFG_ERR_LEN,
                     "CORS_ALLOWED_ORIGINS: '*' cannot be combined with CORS_ALLOW_CREDENTIALS=true; list the origins");
            return -1;
        }
        c->wildcard = true;
        return 0;
    }
    /* Split the joined list into origins. */
    char *save = NULL;
    for (char *tok = strtok_r(joined, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strcmp(tok, "*") == 0) {
            snprintf(err, CFG_ERR_LEN, "CORS_ALLOWED_ORIGINS: '*' must be the only entry");
            gw_cors_free(c);
            return -1;
        }
        c->origins = xrealloc(c->origins, (c->norigins + 1) * sizeof *c->origins);
        c->origins[c->norigins++] = xstrdup(tok);
    }
    return 0;
}

void gw_cors_free(gw_cors_t *c)
{
    for (size_t i = 0; i < c->norigins; i++)
        free(c->origins[i]);
    free(c->origins);
    c->origins = NULL;
    c->norigins = 0;
}

int gw_cors_check(const gw_cors_t *c, const char *origin, size_t olen, const char **allow_origin, size_t *allow_len)
{
    if (!c->enabled || !origin)
        return GW_CORS_NONE;
    if (c->wildcard) {
        *allow_origin = "*";
        *allow_len = 1;
        return GW_CORS_ALLOW;
    }
    for (size_t i = 0; i < c->norigins; i++) {
        if (strlen(c->origins[i]) == olen && memcmp(c->origins[i], origin, olen) == 0) {
            *allow_origin = origin;
            *allow_len = olen;
            return GW_CORS_ALLOW;
        }
    }
    return GW_CORS_FORBID;
}
