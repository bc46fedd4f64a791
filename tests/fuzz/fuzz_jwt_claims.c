/* fuzz_jwt_claims.c -- the claims checks of gw_auth_verify, past the signature: the target signs
 * whatever header and payload the fuzzer gives with the gateway's secret (HMAC-SHA2 over
 * base64url(header) "." base64url(payload)), so every input reaches libjwt's parsing and our
 * claim validation.
 *
 * Input: byte 0 picks the configured algorithm (HS256/384/512), which algorithm signs (the
 * configured one or the one the header names) and whether the issuer is required. The rest is
 * either "header JSON \0 payload JSON" or, without a NUL, the payload alone under the standard
 * header for the configured algorithm.
 *
 * Oracle besides the sanitizers: a reference reading of the payload with jansson. A token the
 * gateway accepts must be valid by the reference (exp required and not past the leeway, nbf not in
 * the future, issuer exactly right, sub a non-empty string that fits) with the same sub and admin
 * flag; and a properly signed token under the standard header that the reference finds valid must
 * be accepted.
 */
#include "fuzz_common.h"
#include "gw_lib.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define FZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"
#define FZ_NOW 1767225600 /* 2026-01-01T00:00:00Z */
#define FZ_LEEWAY 60

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    return 0;
}

static size_t s_b64url(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
    }
    return o;
}

/* The reference number reading: an integer, or a real that fits in int64 (truncated). */
static bool s_ref_number(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v) && json_real_value(v) > -9.2e18 && json_real_value(v) < 9.2e18) {
        *out = (int64_t)json_real_value(v);
        return true;
    }
    return false;
}

static bool s_ref_scope_admin(json_t *v)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v), i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ' ')
            j++;
        if (j - i == 14 && memcmp(s + i, "presence:admin", 14) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/* Is the payload acceptable, and with which sub / admin flag? */
static bool s_ref_valid(const char *payload, size_t len, const char *issuer, const char **sub, size_t *sublen,
                        bool *admin, json_t **keep)
{
    json_error_t e;
    json_t *o = json_loadb(payload, len, 0, &e);
    *keep = o;
    if (!o || !json_is_object(o))
        return false;
    int64_t exp, nbf;
    json_t *v = json_object_get(o, "exp");
    if (!v || !s_ref_number(v, &exp) || exp <= 0 || FZ_NOW - FZ_LEEWAY > exp)
        return false;
    if ((v = json_object_get(o, "nbf")) && (!s_ref_number(v, &nbf) || FZ_NOW + FZ_LEEWAY < nbf))
        return false;
    v = json_object_get(o, "iss");
    if (issuer[0] && (!json_is_string(v) || json_string_length(v) != strlen(issuer) ||
                      memcmp(json_string_value(v), issuer, strlen(issuer)) != 0))
        return false;
    v = json_object_get(o, "sub");
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= sizeof(((gw_claims_t *)0)->sub))
        return false;
    *sub = json_string_value(v);
    *sublen = json_string_length(v);
    v = json_object_get(o, "scope");
    if (v && !json_is_string(v))
        return false; /* scope is a space-separated string (RFC 8693): anything else is refused */
    *admin = s_ref_scope_admin(v);
    return true;
}

static const EVP_MD *s_md(int alg)
{
    return alg == JWT_ALG_HS384 ? EVP_sha384() : alg == JWT_ALG_HS512 ? EVP_sha512() : EVP_sha256();
}

static const char *s_alg_name(int alg)
{
    return alg == JWT_ALG_HS384 ? "HS384" : alg == JWT_ALG_HS512 ? "HS512" : "HS256";
}

/* The algorithm a header names (HS* only), or -1. */
static int s_header_alg(const char *h, size_t n)
{
    json_error_t e;
    json_t *o = json_loadb(h, n, 0, &e);
    int alg = -1;
    json_t *a = o ? json_object_get(o, "alg") : NULL;
    if (json_is_string(a)) {
        const char *s = json_string_value(a);
        alg = strcmp(s, "HS256") == 0 ? JWT_ALG_HS256 : strcmp(s, "HS384") == 0 ? JWT_ALG_HS384
              : strcmp(s, "HS512") == 0 ? JWT_ALG_HS512 : -1;
    }
    json_decref(o);
    return alg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    uint8_t sel = data[0];
    static const int algs[3] = {JWT_ALG_HS256, JWT_ALG_HS384, JWT_ALG_HS512};
    gw_auth_t a;
    memset(&a, 0, sizeof a);
    a.secret = (unsigned char *)FZ_SECRET;
    a.secret_len = strlen(FZ_SECRET);
    a.alg = algs[(sel & 3) % 3];
    a.leeway_s = FZ_LEEWAY;
    if (!(sel & 4))
        snprintf(a.issuer, sizeof a.issuer, "presence-service");
    bool sign_with_header_alg = (sel & 8) != 0;

    const char *rest = (const char *)data + 1;
    size_t rlen = size - 1;
    const char *nul = memchr(rest, '\0', rlen);
    char stdhdr[64];
    const char *hdr, *payload;
    size_t hlen, plen;
    if (nul) {
        hdr = rest;
        hlen = (size_t)(nul - rest);
        payload = nul + 1;
        plen = rlen - hlen - 1;
    } else {
        hlen = (size_t)snprintf(stdhdr, sizeof stdhdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", s_alg_name(a.alg));
        hdr = stdhdr;
        payload = rest;
        plen = rlen;
    }
    int sign_alg = a.alg;
    if (sign_with_header_alg) {
        int h = s_header_alg(hdr, hlen);
        if (h >= 0)
            sign_alg = h;
    }

    /* "Bearer " b64(header) "." b64(payload) "." b64(mac) */
    size_t cap = 7 + (hlen + plen + 2) * 4 / 3 + 8 + 2 + 90;
    char *tok = malloc(cap);
    size_t o = 0;
    memcpy(tok, "Bearer ", 7);
    o = 7;
    o += s_b64url((const uint8_t *)hdr, hlen, tok + o);
    tok[o++] = '.';
    o += s_b64url((const uint8_t *)payload, plen, tok + o);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(s_md(sign_alg), FZ_SECRET, (int)strlen(FZ_SECRET), (const unsigned char *)tok + 7, o - 7, mac, &maclen))
        abort();
    tok[o++] = '.';
    o += s_b64url(mac, maclen, tok + o);
    FZ_CHECK(o <= cap);

    gw_claims_t c;
    const char *err = NULL;
    int rc = gw_auth_verify(&a, tok, o, FZ_NOW, &c, &err);

    const char *sub = NULL;
    size_t sublen = 0;
    bool admin = false;
    json_t *keep = NULL;
    bool ref = s_ref_valid(payload, plen, a.issuer, &sub, &sublen, &admin, &keep);
    if (rc == 0) {
        if (!ref)
            fprintf(stderr, "accepted a token the reference refuses\n");
        FZ_CHECK(ref);
        FZ_CHECK(c.sub_len == sublen && memcmp(c.sub, sub, sublen) == 0 && c.sub[sublen] == '\0');
        FZ_CHECK(c.admin == admin);
    } else if (ref && !nul && sign_alg == a.alg && o - 7 <= 8192) {
        fprintf(stderr, "refused a properly signed valid token: %s\n", err);
        FZ_CHECK(!"refused a valid token");
    }
    json_decref(keep);
    free(tok);
    return 0;
}
