/* gw_clientaddr.c -- the client's address behind proxies (see gw_clientaddr.h).
 *
 * X-Forwarded-For is a list every proxy appends its peer to: "client, proxy1, proxy2". Only the
 * hops our own proxies appended can be believed; everything to their left came from the client,
 * who can write anything there. Taking the leftmost hop (what TRUST_PROXY did before) let any
 * client pick its own rate-limit key. So the walk starts at the right -- at the connection's
 * peer -- and goes left only while the address it stands on is a proxy we trust
 * (TRUSTED_PROXIES); the first hop that is not one is the client. With an empty list the peer
 * itself is the one trusted proxy (a gateway behind one load balancer): the rightmost hop wins.
 *
 * Addresses are compared in one 16-byte form (IPv4 as IPv4-mapped IPv6) and printed canonically
 * (inet_ntop), so "010.0.0.1" tricks and IPv6 spellings cannot make two keys of one client.
 * Pure; reentrant.
 */
#include "gw_clientaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t s_v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool s_blank(char c)
{
    return c == ' ' || c == '\t';
}

int gw_clientaddr_parse_addr(const char *s, size_t n, uint8_t out[16])
{
    while (n && s_blank(*s))
        s++, n--;
    while (n && s_blank(s[n - 1]))
        n--;
    char tmp[64];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *a = tmp;
    if (a[0] == '[') { /* [v6] or [v6]:port */
        char *close = strchr(a, ']');
        if (!close || (close[1] && (close[1] != ':' || !close[2] || strspn(close + 2, "0123456789") != strlen(close + 2))))
            return -1;
        *close = '\0';
        a++;
        return inet_pton(AF_INET6, a, out) == 1 ? 0 : -1;
    }
    char *colon = strchr(a, ':');
    if (colon && !strchr(colon + 1, ':')) { /* one colon: a.b.c.d:port */
        if (!colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
            return -1;
        *colon = '\0';
    }
    struct in_addr v4;
    if (inet_pton(AF_INET, a, &v4) == 1) {
        memcpy(out, s_v4_prefix, 12);
        memcpy(out + 12, &v4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, a, out) == 1 ? 0 : -1;
}

int gw_clientaddr_parse(const char *list, gw_trusted_t *out, char *err, size_t errlen)
{
    out->n = 0;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ',' || s_blank(*p))
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        size_t n = (size_t)(e - p);
        while (n && s_blank(p[n - 1]))
            n--;
        const char *slash = memchr(p, '/', n);
        size_t alen = slash ? (size_t)(slash - p) : n;
        gw_cidr_t c;
        memset(&c, 0, sizeof c);
        bool v4 = memchr(p, '.', alen) && !memchr(p, ':', alen);
        unsigned bits = v4 ? 32 : 128;
        bool ok = out->n < GW_TRUSTED_MAX && alen > 0 && p[0] != '[' && gw_clientaddr_parse_addr(p, alen, c.addr) == 0;
        if (ok && slash) {
            size_t dl = n - alen - 1;
            char digits[8];
            if (dl == 0 || dl > 3 || strspn(slash + 1, "0123456789") < dl) {
                ok = false;
            } else {
                memcpy(digits, slash + 1, dl);
                digits[dl] = '\0';
                bits = (unsigned)strtoul(digits, NULL, 10);
                ok = bits <= (v4 ? 32u : 128u);
            }
        }
        if (!ok) {
            if (out->n >= GW_TRUSTED_MAX)
                snprintf(err, errlen, "TRUSTED_PROXIES: at most %d entries", GW_TRUSTED_MAX);
            else
                snprintf(err, errlen,
                         "TRUSTED_PROXIES: '%.*s' is not an address or CIDR (IPv4 or IPv6 literal, optional /prefix)",
                         (int)(n > 64 ? 64 : n), p);
            return -1;
        }
        c.bits = (uint8_t)(v4 ? 96 + bits : bits);
        /* Keep only the network part, so "10.1.2.3/8" means 10.0.0.0/8. */
        for (unsigned i = 0; i < 16; i++) {
            unsigned keep = c.bits > i * 8 ? c.bits - i * 8 : 0;
            if (keep < 8)
                c.addr[i] &= (uint8_t)(keep ? 0xff << (8 - keep) : 0);
        }
        out->v[out->n++] = c;
        p = e;
    }
    return 0;
}

bool gw_clientaddr_is_trusted(const gw_trusted_t *t, const uint8_t addr[16])
{
    for (uint32_t k = 0; k < t->n; k++) {
        const gw_cidr_t *c = &t->v[k];
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(addr, c->addr, full) != 0)
            continue;
        if (rest && ((addr[full] ^ c->addr[full]) & (uint8_t)(0xff << (8 - rest))))
            continue;
        return true;
    }
    return false;
}

static size_t s_print(const uint8_t a[16], char *out)
{
    const char *r = memcmp(a, s_v4_prefix, 12) == 0 ? inet_ntop(AF_INET, a + 12, out, GW_CLIENTADDR_LEN)
                                                   : inet_ntop(AF_INET6, a, out, GW_CLIENTADDR_LEN);
    if (!r) {
        memcpy(out, "?", 2);
        return 1;
    }
    return strlen(out);
}

size_t gw_clientaddr_pick(const uint8_t *peer, bool trust, const gw_trusted_t *t, const proto_str_t *xff, size_t n,
                          char *out)
{
    if (!peer) {
        memcpy(out, "?", 2);
        return 1;
    }
    uint8_t cur[16];
    memcpy(cur, peer, 16);
    if (!trust || (t->n && !gw_clientaddr_is_trusted(t, cur)))
        return s_print(cur, out);
    /* The peer is a proxy of ours: walk the hops right to left. */
    for (size_t h = n; h-- > 0;) {
        const char *v = xff[h].p;
        size_t end = xff[h].len;
        while (end > 0) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            size_t len = end - start;
            const char *hop = v + start;
            end = start ? start - 1 : 0;
            size_t k = 0;
            while (k < len && s_blank(hop[k]))
                k++;
            if (k == len)
                continue; /* an empty element ("a,,b") is no hop */
            uint8_t a[16];
            if (gw_clientaddr_parse_addr(hop, len, a) < 0)
                return s_print(cur, out); /* a broken chain: the proxy that wrote it is the client */
            memcpy(cur, a, 16);
            if (!gw_clientaddr_is_trusted(t, cur))
                return s_print(cur, out);
            if (start == 0)
                break;
        }
    }
    return s_print(cur, out); /* every hop trusted: the leftmost */
}

bool gw_clientaddr_from_sockaddr(const struct sockaddr *sa, size_t len, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        memcpy(out, mapped, 12);
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (len >= sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}
