/* fuzz_query.c -- the gateway's query-string and path helpers and the validators behind them:
 * gw_parse_users (users=a,b%2Cc), gw_query_param, gw_pct_decode, gw_valid_user_id,
 * util_valid_user_id / util_valid_node_id / util_valid_message, gw_cors_check.
 *
 * The input is a query string (the bytes after '?'). Oracles besides the sanitizers:
 *   - every id gw_parse_users returns is valid, distinct, inside the caller's store, and at most
 *     `max` of them; an error has one of the documented texts;
 *   - gw_query_param returns a value inside the query;
 *   - the validators agree with straightforward reference implementations written here.
 */
#include "fuzz_common.h"
#include "gw_lib.h"
#include "util.h"

#define MAX_IDS 16

static gw_cors_t s_cors;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    char err[256];
    setenv("CORS_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:3000", 1);
    if (gw_cors_config(&s_cors, err) < 0) {
        fprintf(stderr, "cors: %s\n", err);
        abort();
    }
    return 0;
}

/* Reference: 1..max bytes of [A-Za-z0-9._~@:=+-]. */
static bool s_ref_id(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._~@:=+-", c)) ||
            c == 0)
            return false;
    }
    return true;
}

/* Reference: decode UTF-8 to code points (RFC 3629), refuse C0, DEL, C1. */
static bool s_ref_message(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n;
        unsigned char c = s[i];
        if (c < 0x80) {
            cp = c;
            n = 1;
        } else if ((c & 0xe0) == 0xc0) {
            cp = c & 0x1f;
            n = 2;
        } else if ((c & 0xf0) == 0xe0) {
            cp = c & 0x0f;
            n = 3;
        } else if ((c & 0xf8) == 0xf0) {
            cp = c & 0x07;
            n = 4;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
            return false;
        i += n;
    }
    return true;
}

static void s_users(const char *q, size_t qlen)
{
    static const char *const fixed[] = {"users parameter is required", "invalid user_id: bad escape", NULL};
    proto_str_t ids[MAX_IDS];
    char *store = malloc(qlen ? qlen : 1); /* "idstore must hold len bytes" */
    char errbuf[200];
    errbuf[0] = '\0';
    int n = gw_parse_users(q, qlen, MAX_IDS, ids, store, errbuf, sizeof errbuf);
    if (n >= 0) {
        FZ_CHECK(n >= 1 && n <= MAX_IDS);
        for (int i = 0; i < n; i++) {
            FZ_CHECK(gw_valid_user_id(ids[i].p, ids[i].len));
            FZ_CHECK(ids[i].p >= store && ids[i].p + ids[i].len <= store + qlen);
            for (int k = 0; k < i; k++) {
                FZ_CHECK(ids[k].len != ids[i].len || memcmp(ids[k].p, ids[i].p, ids[i].len) != 0);
                /* Ids are not allowed to overlap in the store (each is a separate copy). */
                FZ_CHECK(ids[k].p + ids[k].len <= ids[i].p || ids[i].p + ids[i].len <= ids[k].p);
            }
        }
    } else {
        FZ_CHECK(n == -1);
        bool known = strncmp(errbuf, "invalid user_id: ", 17) == 0 || strncmp(errbuf, "too many user ids", 17) == 0;
        for (const char *const *f = fixed; *f; f++)
            known = known || strcmp(errbuf, *f) == 0;
        if (!known)
            fprintf(stderr, "unexpected error text: %s\n", errbuf);
        FZ_CHECK(known);
    }
    free(store);
}

static void s_param(const char *q, size_t qlen, const char *name)
{
    const char *v = NULL;
    size_t vlen = 0;
    if (gw_query_param(q, qlen, name, &v, &vlen)) {
        FZ_CHECK(v >= q && v <= q + qlen && v + vlen <= q + qlen);
        FZ_CHECK(memchr(v, '&', vlen) == NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *q = (const char *)data;
    s_users(q, size);
    s_param(q, size, "users");
    s_param(q, size, "since");
    s_param(q, size, "");

    /* The query as one path segment: decode once, as the router does for {user_id}. */
    char *out = malloc(size + 1);
    ssize_t dn = gw_pct_decode(q, size, out);
    FZ_CHECK(dn >= -1 && dn <= (ssize_t)size);
    if (dn >= 0) {
        FZ_CHECK(out[dn] == '\0');
        bool ok = gw_valid_user_id(out, (size_t)dn);
        bool reserved = (dn == 5 && (memcmp(out, "batch", 5) == 0 || memcmp(out, "watch", 5) == 0)) ||
                        (dn == 7 && memcmp(out, "connect", 7) == 0) || (dn == 1 && out[0] == '.') ||
                        (dn == 2 && memcmp(out, "..", 2) == 0);
        FZ_CHECK(ok == (s_ref_id(out, (size_t)dn, UTIL_USER_ID_MAX) && !reserved));
    }
    free(out);

    /* The validators, on an exactly sized copy. */
    char *copy = fz_dup(data, size);
    FZ_CHECK(util_valid_user_id(copy, size) == s_ref_id(copy, size, UTIL_USER_ID_MAX));
    FZ_CHECK(util_valid_node_id(copy, size) == s_ref_id(copy, size, UTIL_NODE_ID_MAX));
    FZ_CHECK(util_valid_message(copy, size) == s_ref_message((const unsigned char *)copy, size));

    const char *allow = NULL;
    size_t alen = 0;
    int v = gw_cors_check(&s_cors, copy, size, &allow, &alen);
    FZ_CHECK(v == GW_CORS_ALLOW || v == GW_CORS_FORBID);
    if (v == GW_CORS_ALLOW)
        FZ_CHECK(alen == size && allow == copy);
    free(copy);
    return 0;
}
