/* gw_head.c -- the parts of an HTTP/1 request head the front judges (see gw_head.h).
 *
 * The request line must start with an upper-case method of at most 16 letters and a space, or it
 * is not ours to judge (PRI is HTTP/2's preface). The head ends at the first empty line (CRLF or
 * bare LF line ends, as h2o's parser accepts). Header names compare without case; values lose
 * their leading blanks only (as picohttpparser in h2o 2.2.5 gives them to the handler, so a token
 * reads the same here and there). Content-Length must be 1-19 decimal digits, once. Anything h2o
 * would refuse -- a bad header name, more than H2O_MAX_HEADERS lines -- is left to it. Pure;
 * reentrant.
 */
#include "gw_head.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define METHOD_MAX 16
#define HEADERS_MAX 100 /* H2O_MAX_HEADERS */

/* An RFC 7230 token character (header names). */
static bool s_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool s_is(const char *name, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(name, lit, n) == 0;
}

/* The end of the head in buf[0..len): the offset just past its empty line, or 0. */
static size_t s_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        size_t j = i + 1;
        if (j < len && buf[j] == '\r')
            j++;
        if (j < len && buf[j] == '\n')
            return j + 1;
    }
    return 0;
}

static int s_length(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

int gw_head_parse(const char *buf, size_t len, size_t max, gw_head_t *h)
{
    memset(h, 0, sizeof *h);
    size_t m = 0;
    while (m < len && m < METHOD_MAX && buf[m] >= 'A' && buf[m] <= 'Z')
        m++;
    if (m < len && (m == 0 || buf[m] != ' '))
        return GW_HEAD_NOT_HTTP1;
    if (m == len)
        return m >= METHOD_MAX ? GW_HEAD_NOT_HTTP1 : GW_HEAD_MORE;
    if (m == 3 && memcmp(buf, "PRI", 3) == 0)
        return GW_HEAD_NOT_HTTP1;
    size_t end = s_end(buf, len < max ? len : max);
    if (!end)
        return len >= max ? GW_HEAD_TOO_BIG : GW_HEAD_MORE;
    h->len = end;
    h->method = buf;
    h->method_len = m;
    /* Request line: METHOD SP target SP HTTP/1.x */
    const char *p = buf + m + 1, *lim = buf + end;
    const char *eol = memchr(p, '\n', (size_t)(lim - p));
    const char *sp = memchr(p, ' ', (size_t)(eol - p));
    if (!sp || sp == p)
        return GW_HEAD_NOT_HTTP1;
    h->target = p;
    h->target_len = (size_t)(sp - p);
    size_t vl = (size_t)(eol - sp - 1);
    if (vl && sp[vl] == '\r')
        vl--;
    if (vl != 8 || memcmp(sp + 1, "HTTP/1.", 7) != 0 || (sp[8] != '0' && sp[8] != '1'))
        return GW_HEAD_NOT_HTTP1;
    /* Header lines. */
    int lengths = 0, te = 0, lines = 0;
    bool chunked = false, bad_length = false;
    for (p = eol + 1; p < lim;) {
        eol = memchr(p, '\n', (size_t)(lim - p));
        size_t ll = (size_t)(eol - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break; /* the empty line */
        if (p[0] == ' ' || p[0] == '\t')
            return GW_HEAD_NOT_HTTP1; /* a folded line: h2o refuses it */
        const char *colon = memchr(p, ':', ll);
        if (!colon || colon == p || ++lines > HEADERS_MAX)
            return GW_HEAD_NOT_HTTP1;
        size_t nl = (size_t)(colon - p);
        for (size_t i = 0; i < nl; i++)
            if (!s_tchar(p[i]))
                return GW_HEAD_NOT_HTTP1;
        const char *v = colon + 1, *ve = p + ll;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        size_t vn = (size_t)(ve - v);
        if (s_is(p, nl, "content-length")) {
            lengths++;
            if (s_length(v, vn, &h->content_length) < 0)
                bad_length = true;
        } else if (s_is(p, nl, "transfer-encoding")) {
            te++;
            for (size_t i = 0; i + 7 <= vn; i++)
                if (strncasecmp(v + i, "chunked", 7) == 0)
                    chunked = true;
        } else if (s_is(p, nl, "authorization") && !h->auth) {
            h->auth = v;
            h->auth_len = vn;
        } else if (s_is(p, nl, "origin") && !h->origin) {
            h->origin = v;
            h->origin_len = vn;
        }
        p = eol + 1;
    }
    if (!lengths && !te)
        h->body = GW_BODY_NONE;
    else if (lengths == 1 && !te && !bad_length)
        h->body = GW_BODY_LENGTH;
    else if (!lengths && te == 1 && chunked)
        h->body = GW_BODY_CHUNKED;
    else
        h->body = GW_BODY_UNCLEAR;
    return GW_HEAD_DONE;
}
