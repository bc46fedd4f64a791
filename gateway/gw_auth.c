/* gw_auth.c -- JWT verification and signing with libjwt 1.10 (see gw_lib.h).
 *
 * libjwt 1.10 only checks the signature, and it takes the algorithm from the token's header, so
 * this file adds what the library does not (TECH-NOTES 5.1):
 *   - the secret is never empty (an empty key turns verification off in libjwt; the gateway
 *     refuses to start without one, and we check again here);
 *   - the header's alg must be exactly the configured name (we read the header ourselves: libjwt
 *     accepts "hs256" in any case): "none", HS384/HS512 tokens signed with our secret, and any
 *     spelling but the exact one are rejected; a header with `crit` is rejected (RFC 7515
 *     4.1.11: we understand no extension a token could make critical);
 *   - the claims are read from the decoded JSON with strict types: exp is required and must be a
 *     number, nbf is checked when present, iss must match, sub must be a non-empty string;
 *   - tokens are bounded in size before libjwt sees them.
 */
#include "gw_lib.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MAX 8192
#define HEADER_MAX 1024 /* decoded JOSE header bytes we read */

static int s_b64url_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '-' ? 62 : ch == '_' ? 63 : -1;
}

/* Decode base64url (no padding) into out (at most max bytes). Returns the length or -1. */
static ssize_t s_b64url_decode(const char *in, size_t n, unsigned char *out, size_t max)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = s_b64url_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == max)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

/* The JOSE header, read before libjwt sees the token: alg exactly `want`, no crit. */
static int s_check_header(const char *tok, size_t tlen, const char *want, const char **err)
{
    const char *dot = memchr(tok, '.', tlen);
    unsigned char hdr[HEADER_MAX];
    ssize_t hl = dot ? s_b64url_decode(tok, (size_t)(dot - tok), hdr, sizeof hdr) : -1;
    json_error_t je;
    json_t *h = hl > 0 ? json_loadb((const char *)hdr, (size_t)hl, JSON_REJECT_DUPLICATES, &je) : NULL;
    int rc = -1;
    if (!h || !json_is_object(h)) {
        *err = "invalid token";
        goto out;
    }
    json_t *alg = json_object_get(h, "alg");
    if (!alg || !json_is_string(alg) || strcmp(json_string_value(alg), want) != 0) {
        *err = "invalid token algorithm";
        goto out;
    }
    if (json_object_get(h, "crit")) {
        *err = "invalid token: crit names an extension this service does not understand";
        goto out;
    }
    rc = 0;
out:
    if (h)
        json_decref(h);
    return rc;
}

static int s_number(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9.2e18 && d < 9.2e18))
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    return -1;
}

static bool s_scope_has(const char *scope, size_t len, const char *want)
{
    size_t wl = strlen(want), i = 0;
    while (i < len) {
        while (i < len && scope[i] == ' ')
            i++;
        size_t j = i;
        while (j < len && scope[j] != ' ')
            j++;
        if (j - i == wl && memcmp(scope + i, want, wl) == 0)
            return true;
        i = j;
    }
    return false;
}

int gw_auth_verify(const gw_auth_t *a, const char *hdr, size_t hdrlen, int64_t now_s, gw_claims_t *c,
                   const char **err)
{
    memset(c, 0, sizeof *c);
    if (!hdr || hdrlen == 0) {
        *err = "missing authorization header";
        return -1;
    }
    if (hdrlen < 7 || strncasecmp(hdr, "Bearer ", 7) != 0) {
        *err = "invalid authorization header format";
        return -1;
    }
    const char *tok = hdr + 7;
    size_t tlen = hdrlen - 7;
    while (tlen && *tok == ' ') {
        tok++;
        tlen--;
    }
    while (tlen && tok[tlen - 1] == ' ')
        tlen--;
    if (tlen == 0) {
        *err = "missing token";
        return -1;
    }
    if (tlen > TOKEN_MAX || !a->secret || a->secret_len == 0) {
        *err = "invalid token";
        return -1;
    }
    for (size_t i = 0; i < tlen; i++) {
        char ch = tok[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  ch == '_' || ch == '.' || ch == '=';
        if (!ok) {
            *err = "invalid token";
            return -1;
        }
    }
    if (s_check_header(tok, tlen, jwt_alg_str((jwt_alg_t)a->alg), err) < 0)
        return -1;
    char buf[TOKEN_MAX + 1];
    memcpy(buf, tok, tlen);
    buf[tlen] = '\0';
    jwt_t *jwt = NULL;
    char *grants = NULL;
    json_t *claims = NULL;
    int rc = -1;
    if (jwt_decode(&jwt, buf, a->secret, (int)a->secret_len) != 0 || !jwt) {
        *err = "invalid token";
        goto out;
    }
    if ((int)jwt_get_alg(jwt) != a->alg) {
        *err = "invalid token algorithm";
        goto out;
    }
    grants = jwt_get_grants_json(jwt, NULL);
    json_error_t je;
    if (!grants || !(claims = json_loads(grants, 0, &je)) || !json_is_object(claims)) {
        *err = "invalid token claims";
        goto out;
    }
    json_t *v = json_object_get(claims, "exp");
    int64_t exp, nbf;
    if (!v || s_number(v, &exp) < 0 || exp <= 0) {
        *err = "invalid token: exp required";
        goto out;
    }
    if (now_s - a->leeway_s > exp) { /* not exp + leeway: a huge exp would overflow */
        *err = "token expired";
        goto out;
    }
    if ((v = json_object_get(claims, "nbf")) != NULL) {
        if (s_number(v, &nbf) < 0) {
            *err = "invalid token claims";
            goto out;
        }
        if (now_s + a->leeway_s < nbf) {
            *err = "token not yet valid";
            goto out;
        }
    }
    v = json_object_get(claims, "iss");
    if (a->issuer[0] && (!v || !json_is_string(v) || strcmp(json_string_value(v), a->issuer) != 0)) {
        *err = "invalid token issuer";
        goto out;
    }
    v = json_object_get(claims, "sub");
    if (!v || !json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= sizeof c->sub) {
        *err = "missing or invalid user ID in token";
        goto out;
    }
    c->sub_len = json_string_length(v);
    memcpy(c->sub, json_string_value(v), c->sub_len);
    c->sub[c->sub_len] = '\0';
    c->exp = exp;
    v = json_object_get(claims, "scope");
    if (v && !json_is_string(v)) {
        *err = "invalid token claims"; /* scope is a space-separated string (RFC 8693) */
        goto out;
    }
    if (v)
        c->admin = s_scope_has(json_string_value(v), json_string_length(v), "presence:admin");
    rc = 0;
out:
    if (claims)
        json_decref(claims);
    free(grants);
    if (jwt)
        jwt_free(jwt);
    return rc;
}

char *gw_auth_sign(const unsigned char *secret, size_t secret_len, int alg, const char *issuer, const char *sub,
                   const char *scope, int64_t iat, int64_t exp)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (!secret || secret_len == 0 || jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "iss", issuer) != 0 || jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)iat) != 0 || jwt_add_grant_int(jwt, "exp", (long)exp) != 0)
        goto out;
    if (scope && *scope && jwt_add_grant(jwt, "scope", scope) != 0)
        goto out;
    if (jwt_set_alg(jwt, (jwt_alg_t)alg, secret, (int)secret_len) != 0)
        goto out;
    out = jwt_encode_str(jwt);
out:
    jwt_free(jwt);
    return out;
}

/* ==== verified-token cache ===================================================================== */

/* One verified token: the header bytes (compared in full on every hit) followed by the claims.
 * Slots are pointers (8 bytes), in 2-way buckets: a hit marks its way as recently used, a miss
 * replaces the other way. A thread that sees more distinct tokens than slots only costs misses. */
typedef struct ac_entry {
    gw_claims_t claims;
    size_t len;
    char token[];
} ac_entry_t;

struct gw_authcache {
    ac_entry_t **slots;
    uint8_t *recent; /* per bucket: the way used last */
    size_t n;        /* slots, a power of two >= 2 */
    uint64_t hits;
};

gw_authcache_t *gw_authcache_new(size_t slots)
{
    gw_authcache_t *c = xcalloc(1, sizeof *c);
    size_t n = 2;
    while (n < slots)
        n *= 2;
    c->n = n;
    c->slots = xcalloc(n, sizeof *c->slots);
    c->recent = xcalloc(n / 2, 1);
    return c;
}

void gw_authcache_free(gw_authcache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->slots[i]);
    free(c->slots);
    free(c->recent);
    free(c);
}

uint64_t gw_authcache_hits(const gw_authcache_t *c)
{
    return c ? c->hits : 0;
}

int gw_auth_verify_cached(gw_authcache_t *c, const gw_auth_t *a, const char *hdr, size_t hdrlen, int64_t now_s,
                          gw_claims_t *claims, const char **err)
{
    if (!c || !hdr || hdrlen == 0 || hdrlen > TOKEN_MAX + 64)
        return gw_auth_verify(a, hdr, hdrlen, now_s, claims, err);
    size_t b = util_hash64(hdr, hdrlen, 0x70c3) & (c->n / 2 - 1);
    ac_entry_t **way = &c->slots[2 * b];
    for (int w = 0; w < 2; w++) {
        ac_entry_t *e = way[w];
        if (!e || e->len != hdrlen || memcmp(e->token, hdr, hdrlen) != 0)
            continue;
        if (now_s > e->claims.exp && now_s - a->leeway_s > e->claims.exp) {
            free(e);
            way[w] = NULL;
            *err = "token expired";
            return -1;
        }
        *claims = e->claims;
        c->recent[b] = (uint8_t)w;
        c->hits++;
        return 0;
    }
    if (gw_auth_verify(a, hdr, hdrlen, now_s, claims, err) < 0)
        return -1;
    int w = !way[0] ? 0 : !way[1] ? 1 : !c->recent[b];
    free(way[w]);
    ac_entry_t *e = xmalloc(sizeof *e + hdrlen);
    e->claims = *claims;
    e->len = hdrlen;
    memcpy(e->token, hdr, hdrlen);
    way[w] = e;
    c->recent[b] = (uint8_t)w;
    return 0;
}
