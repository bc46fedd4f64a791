/* fuzz_jwt.c -- gw_auth_verify and gw_auth_verify_cached (gateway/gw_auth.c) on a whole
 * Authorization header value, with a fixed secret. The seeds hold tokens signed with that secret,
 * so mutations that keep the signature intact reach the claims checks too (fuzz_jwt_claims signs
 * every input properly to go further).
 *
 * Oracles besides the sanitizers:
 *   - an accepted token yields claims the gateway can use (non-empty sub that fits, exp set and
 *     not past the leeway);
 *   - the verified-token cache answers exactly as the uncached verification does, on a miss and
 *     on the following hit.
 */
#include "fuzz_common.h"
#include "gw_lib.h"

#include <jwt.h>

#define FZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"
#define FZ_NOW 1767225600 /* 2026-01-01T00:00:00Z */

static gw_auth_t s_auth;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    s_auth.secret = (unsigned char *)FZ_SECRET;
    s_auth.secret_len = strlen(FZ_SECRET);
    snprintf(s_auth.issuer, sizeof s_auth.issuer, "presence-service");
    s_auth.alg = JWT_ALG_HS256;
    s_auth.leeway_s = 60;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *hdr = (const char *)data;
    gw_claims_t c;
    const char *err = NULL;
    int rc = gw_auth_verify(&s_auth, hdr, size, FZ_NOW, &c, &err);
    if (rc == 0) {
        FZ_CHECK(c.sub_len >= 1 && c.sub_len < sizeof c.sub && c.sub[c.sub_len] == '\0');
        FZ_CHECK(c.exp > 0 && FZ_NOW - s_auth.leeway_s <= c.exp);
    } else {
        FZ_CHECK(rc == -1 && err && *err);
    }

    gw_authcache_t *cache = gw_authcache_new(4);
    for (int round = 0; round < 2; round++) {
        gw_claims_t cc;
        const char *cerr = NULL;
        int crc = gw_auth_verify_cached(cache, &s_auth, hdr, size, FZ_NOW, &cc, &cerr);
        FZ_CHECK(crc == rc);
        if (rc == 0)
            FZ_CHECK(cc.sub_len == c.sub_len && memcmp(cc.sub, c.sub, c.sub_len) == 0 && cc.admin == c.admin &&
                     cc.exp == c.exp);
        else
            FZ_CHECK(strcmp(cerr, err) == 0);
    }
    FZ_CHECK(gw_authcache_hits(cache) == (rc == 0 ? 1u : 0u));
    gw_authcache_free(cache);
    return 0;
}
