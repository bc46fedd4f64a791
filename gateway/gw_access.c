/* gw_access.c -- the access log's line (see gw_access.h).
 *
 * Why sanitise rather than escape: the target and method are whatever bytes a client sent; making
 * them printable ASCII (percent-encoding the rest, as a URL would) keeps the line valid JSON and
 * greppable, and percent-encoding is already the target's own escape. Redaction looks at each
 * query parameter's name after percent-decoding it, so no spelling of access_token slips through;
 * any parameter whose name holds "token" is redacted (a token by another name is still a token).
 * Pure; reentrant.
 */
#include "gw_access.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int s_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Does the parameter name p[0..n) hold "token" once percent-decoded (any case)? */
static bool s_secret_name(const char *p, size_t n)
{
    char dec[64];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof dec - 1; i++) {
        int h, l;
        if (p[i] == '%' && i + 2 < n && (h = s_hexval(p[i + 1])) >= 0 && (l = s_hexval(p[i + 2])) >= 0) {
            dec[k++] = (char)(h << 4 | l);
            i += 2;
        } else {
            dec[k++] = p[i] == '+' ? ' ' : p[i];
        }
    }
    dec[k] = '\0';
    for (size_t i = 0; i + 5 <= k; i++)
        if (strncasecmp(dec + i, "token", 5) == 0)
            return true;
    return n >= sizeof dec - 1; /* a name too long to look at is not shown either */
}

typedef struct out {
    char *p;
    size_t len, cap; /* cap excludes the NUL */
    bool full;
} out_t;

static void s_byte(out_t *o, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    bool plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\';
    size_t need = plain ? 1 : 3;
    if (o->full || o->len + need > o->cap) {
        o->full = true;
        return;
    }
    if (plain) {
        o->p[o->len++] = (char)c;
    } else {
        o->p[o->len++] = '%';
        o->p[o->len++] = hex[c >> 4];
        o->p[o->len++] = hex[c & 15];
    }
}

static void s_bytes(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s_byte(o, (unsigned char)s[i]);
}

size_t gw_access_target(const char *t, size_t n, char *out, size_t outlen)
{
    out_t o = {out, 0, outlen - 4, false}; /* room for "..." */
    const char *q = memchr(t, '?', n);
    size_t plen = q ? (size_t)(q - t) : n;
    s_bytes(&o, t, plen);
    if (q) {
        s_byte(&o, '?');
        const char *p = q + 1, *end = t + n;
        while (p <= end && !o.full) {
            const char *amp = p;
            while (amp < end && *amp != '&' && *amp != ';')
                amp++;
            const char *eq = memchr(p, '=', (size_t)(amp - p));
            size_t nl = eq ? (size_t)(eq - p) : (size_t)(amp - p);
            s_bytes(&o, p, nl);
            if (eq) {
                s_byte(&o, '=');
                if (s_secret_name(p, nl))
                    s_bytes(&o, "REDACTED", 8);
                else
                    s_bytes(&o, eq + 1, (size_t)(amp - eq - 1));
            }
            if (amp == end)
                break;
            s_byte(&o, (unsigned char)*amp);
            p = amp + 1;
        }
    }
    if (o.full) {
        memcpy(out + o.len, "...", 3);
        o.len += 3;
    }
    out[o.len] = '\0';
    return o.len;
}

/* A JSON string of text that should be UTF-8 (a token's subject): as is when it is, else each
 * byte outside printable ASCII as \u00XX. */
static void s_jtext(gw_buf_t *b, const char *s, size_t n)
{
    if (util_valid_message(s, n)) {
        gw_buf_add_jstr(b, s, n);
        return;
    }
    gw_buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            gw_buf_add(b, (const char *)&c, 1);
        else
            gw_buf_addf(b, "\\u%04x", c);
    }
    gw_buf_add(b, "\"", 1);
}

void gw_access_line(gw_buf_t *b, const gw_access_t *a)
{
    char ts[UTIL_TIME_LEN], target[GW_ACCESS_TARGET_MAX + 4], method[24];
    util_fmt_time(a->ts_us, ts);
    gw_access_target(a->target, a->target_len, target, sizeof target);
    gw_access_target(a->method, MIN(a->method_len, 16), method, sizeof method);
    gw_buf_addf(b, "{\"ts\":\"%s\",\"level\":\"info\",\"proc\":\"%s\",\"pid\":%d,\"msg\":\"access\",\"method\":\"%s\","
                   "\"route\":\"%s\",\"target\":\"%s\",\"code\":%d,\"ms\":%.3f,\"bytes\":%llu,\"client\":\"",
                ts, a->proc, a->pid, method, a->route, target, a->code, (double)a->dur_us / 1000.0,
                (unsigned long long)a->bytes);
    char client[64];
    gw_access_target(a->client, strlen(a->client), client, sizeof client);
    gw_buf_adds(b, client);
    gw_buf_add(b, "\"", 1);
    if (a->sub) {
        gw_buf_add(b, ",\"sub\":", 7);
        s_jtext(b, a->sub, a->sub_len);
    }
    if (a->user_id) {
        gw_buf_add(b, ",\"user_id\":", 11);
        s_jtext(b, a->user_id, a->uid_len);
    }
    gw_buf_add(b, "}\n", 2);
}
