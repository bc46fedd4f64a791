/* gw_json.c -- JSON in and out for the HTTP API (see gw_lib.h).
 *
 * Output is written by hand: the shapes are fixed, the strings we emit are validated on the way in
 * (user and node ids are from a safe alphabet, messages are valid UTF-8 without control
 * characters), and this is the hot path of every response.
 *
 * Input bodies are parsed with jansson (already a dependency of libjwt). jansson bounds nesting
 * depth and rejects numbers that do not fit, so hostile bodies are errors, not crashes; the body
 * size is bounded by the caller before we get here.
 */
#include "gw_lib.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== buffer ================================================================================= */

void gw_buf_init(gw_buf_t *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
}

void gw_buf_free(gw_buf_t *b)
{
    free(b->p);
    gw_buf_init(b);
}

void gw_buf_reset(gw_buf_t *b)
{
    b->len = 0;
}

static void s_reserve(gw_buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + n)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void gw_buf_add(gw_buf_t *b, const void *s, size_t n)
{
    if (n == 0)
        return; /* s may be NULL (an empty buffer's p): memcpy(d, NULL, 0) is undefined */
    s_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void gw_buf_adds(gw_buf_t *b, const char *s)
{
    gw_buf_add(b, s, strlen(s));
}

void gw_buf_addf(gw_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    s_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void gw_buf_add_u64(gw_buf_t *b, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    gw_buf_add(b, tmp + i, (size_t)(24 - i));
}

void gw_buf_add_jstr(gw_buf_t *b, const char *s, size_t n)
{
    s_reserve(b, n * 6 + 2);
    char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += sprintf(o, "\\u%04x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

/* ==== records ================================================================================ */

static void s_time(gw_buf_t *b, uint64_t us)
{
    char t[UTIL_TIME_LEN];
    size_t n = util_fmt_time(us, t);
    s_reserve(b, n + 2);
    b->p[b->len++] = '"';
    memcpy(b->p + b->len, t, n);
    b->len += n;
    b->p[b->len++] = '"';
}

/* One record as the API orders it: the nine fields of 2.0, then -- for a user who used sessions or
 * message_ttl (PROTO_REC_F_RT) -- sessions, source, and preferred_until / message_expires_at when
 * set. A record past its expires_at that still shows a live status is rendered offline without
 * its message (the store makes it so moments later). */
static void s_record(gw_buf_t *b, const proto_record_t *r, uint64_t now_us)
{
    bool expired = r->status != PRESENCE_OFFLINE && now_us >= r->expires_at_us;
    int status = expired ? PRESENCE_OFFLINE : r->status;
    gw_buf_add(b, "{\"user_id\":", 11);
    gw_buf_add_jstr(b, r->user_id, r->uid_len);
    gw_buf_add(b, ",\"status\":\"", 11);
    gw_buf_adds(b, proto_presence_name(status));
    gw_buf_add(b, "\"", 1);
    if (r->msg_len && !expired) {
        gw_buf_add(b, ",\"message\":", 11);
        gw_buf_add_jstr(b, r->message, r->msg_len);
    }
    gw_buf_add(b, ",\"last_seen\":", 13);
    s_time(b, r->last_seen_us);
    gw_buf_add(b, ",\"updated_at\":", 14);
    s_time(b, expired ? r->expires_at_us : r->updated_at_us);
    gw_buf_add(b, ",\"expires_at\":", 14);
    s_time(b, r->expires_at_us);
    gw_buf_add(b, ",\"node_id\":", 11);
    gw_buf_add_jstr(b, r->node_id, r->node_len);
    gw_buf_add(b, ",\"ttl\":", 7);
    gw_buf_add_u64(b, r->ttl_s);
    gw_buf_add(b, ",\"version\":", 11);
    gw_buf_add_u64(b, r->version);
    if (r->rflags & PROTO_REC_F_RT) {
        gw_buf_add(b, ",\"sessions\":", 12);
        gw_buf_add_u64(b, expired ? 0 : r->sessions);
        gw_buf_add(b, ",\"source\":\"", 11);
        gw_buf_adds(b, proto_source_name(expired ? PRESENCE_SRC_NONE : r->source));
        gw_buf_add(b, "\"", 1);
        if (r->preferred_until_us && !expired) {
            gw_buf_add(b, ",\"preferred_until\":", 19);
            s_time(b, r->preferred_until_us);
        }
        if (r->message_expires_at_us && r->msg_len && !expired) {
            gw_buf_add(b, ",\"message_expires_at\":", 22);
            s_time(b, r->message_expires_at_us);
        }
    }
    gw_buf_add(b, "}", 1);
}

bool gw_viewer_is_private(const gw_viewer_t *v, const char *uid, size_t len)
{
    return v && (v->admin || (v->sub_len == len && memcmp(v->sub, uid, len) == 0));
}

void gw_json_record_as(gw_buf_t *b, const proto_record_t *r, uint64_t now_us, bool private_view)
{
    if (private_view || !proto_record_invisible(r)) {
        s_record(b, r, now_us);
        return;
    }
    proto_record_t pub;
    proto_record_public(r, &pub);
    s_record(b, &pub, now_us);
}

void gw_json_record(gw_buf_t *b, const proto_record_t *r, uint64_t now_us)
{
    gw_json_record_as(b, r, now_us, false);
}

void gw_json_envelope_as(gw_buf_t *b, const proto_record_t *recs, uint32_t n, uint64_t now_us, const gw_viewer_t *v)
{
    gw_buf_add(b, "{\"success\":true,\"data\":{", 24);
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            gw_buf_add(b, ",", 1);
        gw_buf_add_jstr(b, recs[i].user_id, recs[i].uid_len);
        gw_buf_add(b, ":", 1);
        gw_json_record_as(b, &recs[i], now_us, gw_viewer_is_private(v, recs[i].user_id, recs[i].uid_len));
    }
    gw_buf_add(b, "}}", 2);
}

void gw_json_sessions(gw_buf_t *b, const char *uid, size_t uid_len, const proto_session_t *s, uint32_t n,
                      uint64_t now_us)
{
    gw_buf_add(b, "{\"success\":true,\"data\":{", 24);
    gw_buf_add_jstr(b, uid, uid_len);
    gw_buf_add(b, ":[", 2);
    bool first = true;
    for (uint32_t i = 0; i < n; i++) {
        if (now_us >= s[i].expires_at_us)
            continue;
        if (!first)
            gw_buf_add(b, ",", 1);
        first = false;
        gw_buf_add(b, "{\"session_id\":", 14);
        gw_buf_add_jstr(b, s[i].session_id, s[i].sid_len);
        gw_buf_add(b, ",\"device\":", 10);
        gw_buf_add_jstr(b, s[i].device, s[i].device_len);
        gw_buf_add(b, ",\"status\":\"", 11);
        const char *st = proto_presence_name(s[i].status);
        gw_buf_adds(b, st ? st : "online");
        gw_buf_add(b, "\",\"connected_at\":", 17);
        s_time(b, s[i].connected_at_us);
        gw_buf_add(b, ",\"last_seen\":", 13);
        s_time(b, s[i].last_seen_us);
        gw_buf_add(b, ",\"expires_at\":", 14);
        s_time(b, s[i].expires_at_us);
        gw_buf_add(b, ",\"node_id\":", 11);
        gw_buf_add_jstr(b, s[i].node_id, s[i].node_len);
        gw_buf_add(b, "}", 1);
    }
    gw_buf_add(b, "]}}", 3);
}

void gw_json_envelope(gw_buf_t *b, const proto_record_t *recs, uint32_t n, uint64_t now_us)
{
    gw_json_envelope_as(b, recs, n, now_us, NULL);
}

static size_t s_utf8_seq(const unsigned char *p, size_t n);

void gw_json_error(gw_buf_t *b, const char *msg)
{
    gw_buf_add(b, "{\"success\":false,\"error\":", 25);
    /* An error text may quote what the client sent ("invalid user_id: <id>", cut to fit): any
     * ill-formed UTF-8 in it becomes U+FFFD so the body stays JSON. gw_buf_add_jstr needs valid
     * UTF-8; the hot paths give it validated text, errors are rare enough to check here. */
    size_t n = strlen(msg), o = 0;
    char *clean = xmalloc(n * 3 + 1);
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_seq((const unsigned char *)msg + i, n - i);
        if (k == 0) {
            memcpy(clean + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(clean + o, msg + i, k);
            o += k;
            i += k;
        }
    }
    gw_buf_add_jstr(b, clean, o);
    free(clean);
    gw_buf_add(b, "}", 1);
}

/* ==== input ================================================================================== */

static int s_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool gw_valid_user_id(const char *s, size_t len)
{
    /* Route words are never ids; "." and ".." would be valid characters but clients that
     * normalise paths (browsers, curl, most HTTP libraries) turn /presence/.. into /presence/
     * and could never reach such a record. */
    static const char *const reserved[] = {"batch", "watch", "connect", ".", ".."};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (len == strlen(reserved[i]) && memcmp(s, reserved[i], len) == 0)
            return false;
    return util_valid_user_id(s, len);
}

ssize_t gw_pct_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = s_hex((unsigned char)s[i + 1]), lo = s_hex((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return (ssize_t)o;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0. */
static size_t s_utf8_seq(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A body that is not valid UTF-8 is refused either way; to say which field is wrong, re-read it
 * with every ill-formed byte replaced by the escape \u0001 (a control character no field
 * accepts): inside a string the field's own validation refuses it ("invalid message", ...),
 * anywhere else the text stays invalid JSON. A byte right after an escape's backslash keeps the
 * text invalid JSON. */
static json_t *s_load_ill_formed(const char *body, size_t len)
{
    const unsigned char *p = (const unsigned char *)body;
    char *copy = xmalloc(len * 6 + 1);
    size_t o = 0, backslashes = 0;
    for (size_t i = 0; i < len;) {
        size_t k = s_utf8_seq(p + i, len - i);
        if (k == 0) {
            if (backslashes % 2) {
                free(copy);
                return NULL;
            }
            memcpy(copy + o, "\\u0001", 6);
            o += 6;
            i++;
            backslashes = 0;
            continue;
        }
        backslashes = p[i] == '\\' ? backslashes + 1 : 0;
        memcpy(copy + o, p + i, k);
        o += k;
        i += k;
    }
    json_error_t e;
    json_t *root = json_loadb(copy, o, JSON_REJECT_DUPLICATES, &e);
    free(copy);
    return root;
}

/* *ill_formed: the body is not valid UTF-8 and was re-read only to name the wrong field; the
 * caller refuses it even when every field it reads is fine (the bad bytes were elsewhere, e.g. in
 * an unknown key). */
static json_t *s_load_object(const char *body, size_t len, bool *ill_formed)
{
    *ill_formed = false;
    if (!body || len == 0)
        return NULL;
    json_error_t e;
    /* DISABLE_EOF_CHECK off: trailing garbage after the object is invalid JSON. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (!root && json_error_code(&e) == json_error_invalid_utf8) {
        root = s_load_ill_formed(body, len);
        *ill_formed = true;
    }
    if (root && !json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ttl: integer seconds 1..604800. A JSON real with no fractional part (3600.0) is accepted. */
static int s_ttl(json_t *v, uint32_t *out)
{
    double d;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 1 || i > (json_int_t)PROTO_TTL_MAX)
            return -1;
        *out = (uint32_t)i;
        return 0;
    }
    if (json_is_real(v)) {
        d = json_real_value(v);
        if (!(d >= 1 && d <= PROTO_TTL_MAX) || floor(d) != d)
            return -1;
        *out = (uint32_t)d;
        return 0;
    }
    return -1;
}

/* Fill status/message/ttl of `out` from a JSON object; user_id is the caller's. */
static int s_set_fields(json_t *o, uint32_t default_ttl, proto_record_t *out, const char **err)
{
    json_t *st = json_object_get(o, "status");
    if (!st || !json_is_string(st)) {
        *err = GW_ERR_STATUS;
        return -1;
    }
    int status = proto_presence_parse(json_string_value(st), json_string_length(st));
    if (status < 0) {
        *err = GW_ERR_STATUS;
        return -1;
    }
    out->status = (uint8_t)status;
    json_t *msg = json_object_get(o, "message");
    if (msg && !json_is_null(msg)) {
        if (!json_is_string(msg)) {
            *err = GW_ERR_MESSAGE_TYPE;
            return -1;
        }
        if (json_string_length(msg) > PROTO_MESSAGE_MAX) {
            *err = GW_ERR_MESSAGE_LEN;
            return -1;
        }
        if (!util_valid_message(json_string_value(msg), json_string_length(msg))) {
            *err = GW_ERR_MESSAGE_TEXT;
            return -1;
        }
        proto_record_set_msg(out, json_string_value(msg), json_string_length(msg));
    } else {
        proto_record_set_msg(out, "", 0);
    }
    json_t *ttl = json_object_get(o, "ttl");
    out->ttl_s = default_ttl;
    if (ttl && !json_is_null(ttl) && s_ttl(ttl, &out->ttl_s) < 0) {
        *err = GW_ERR_TTL;
        return -1;
    }
    return 0;
}

/* session and device of a PUT or heartbeat body (REALTIME.md): both optional, device only with a
 * session. */
static int s_session_fields(json_t *o, proto_record_t *out, const char **err)
{
    json_t *sid = json_object_get(o, "session"), *dev = json_object_get(o, "device");
    out->sid_len = out->device_len = 0;
    out->session_id[0] = out->device[0] = '\0';
    if (sid && !json_is_null(sid)) {
        if (!json_is_string(sid) || !proto_valid_session_id(json_string_value(sid), json_string_length(sid))) {
            *err = GW_ERR_SESSION;
            return -1;
        }
        proto_record_set_sid(out, json_string_value(sid), json_string_length(sid));
    }
    if (dev && !json_is_null(dev)) {
        if (!json_is_string(dev) || !proto_valid_device(json_string_value(dev), json_string_length(dev))) {
            *err = GW_ERR_DEVICE;
            return -1;
        }
        if (!out->sid_len) {
            *err = GW_ERR_DEVICE_NO_SESSION;
            return -1;
        }
        proto_record_set_device(out, json_string_value(dev), json_string_length(dev));
    }
    return 0;
}

/* PUT's message handling: without a session the message is always set (absent = cleared, as in
 * 2.0); with one, only when the body has the key. message_ttl needs a message. */
static int s_message_fields(json_t *o, proto_record_t *out, const char **err)
{
    json_t *msg = json_object_get(o, "message"), *mttl = json_object_get(o, "message_ttl");
    out->cflags = (msg || !out->sid_len) ? PROTO_CMD_F_MSG : 0;
    out->message_ttl_s = 0;
    if (mttl && !json_is_null(mttl)) {
        if (s_ttl(mttl, &out->message_ttl_s) < 0) {
            *err = GW_ERR_MESSAGE_TTL;
            return -1;
        }
        if (!msg || json_is_null(msg) || json_string_length(msg) == 0) {
            *err = GW_ERR_MESSAGE_TTL_ALONE;
            return -1;
        }
    }
    return 0;
}

int gw_parse_set_body(const char *body, size_t len, uint32_t default_ttl, proto_record_t *out, const char **err)
{
    bool ill;
    json_t *o = s_load_object(body, len, &ill);
    if (!o) {
        *err = GW_ERR_JSON;
        return -1;
    }
    int rc = s_set_fields(o, default_ttl, out, err);
    if (rc == 0)
        rc = s_session_fields(o, out, err);
    if (rc == 0)
        rc = s_message_fields(o, out, err);
    if (rc == 0 && ill) {
        *err = GW_ERR_JSON;
        rc = -1;
    }
    json_decref(o);
    return rc;
}

int gw_parse_heartbeat(const char *body, size_t len, proto_record_t *out, const char **err)
{
    out->ttl_s = 0;
    out->sid_len = out->device_len = 0;
    out->session_id[0] = out->device[0] = '\0';
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len)
        return 0; /* no body: keep the record's ttl */
    bool ill;
    json_t *o = s_load_object(body, len, &ill);
    if (!o) {
        *err = GW_ERR_JSON;
        return -1;
    }
    json_t *t = json_object_get(o, "ttl");
    int rc = 0;
    if (t && !json_is_null(t) && s_ttl(t, &out->ttl_s) < 0) {
        *err = GW_ERR_TTL;
        rc = -1;
    } else if (s_session_fields(o, out, err) < 0) {
        rc = -1;
    } else if (ill) {
        *err = GW_ERR_JSON;
        rc = -1;
    }
    json_decref(o);
    return rc;
}

int gw_parse_heartbeat_body(const char *body, size_t len, uint32_t *ttl, const char **err)
{
    proto_record_t r;
    int rc = gw_parse_heartbeat(body, len, &r, err);
    *ttl = r.ttl_s;
    return rc;
}

static bool s_seen(const proto_str_t *ids, uint32_t n, const char *s, size_t len)
{
    /* Small lists are the common case; a linear scan beats hashing below a few hundred ids. For
     * the 1000-id maximum this is at most 500k short compares, well under a millisecond. */
    for (uint32_t i = 0; i < n; i++)
        if (ids[i].len == len && memcmp(ids[i].p, s, len) == 0)
            return true;
    return false;
}

/* The "invalid user_id: <id> (<rule>)" text of the three batch shapes (ids over 128 bytes are cut). */
static void s_bad_user_id(char *errbuf, size_t errlen, const char *id, size_t il)
{
    snprintf(errbuf, errlen, "invalid user_id: %.*s (%s)", (int)MIN(il, 128), id, GW_USER_ID_RULE);
}

/* {heartbeats: [user ids], ttl?}: recs[] get user_id and ttl_s; duplicates collapse. Returns
 * GW_BATCH_HEARTBEAT or -1 with errbuf set. */
static int s_batch_heartbeats(json_t *o, json_t *beats, uint32_t max, proto_record_t *recs, uint32_t *n,
                              char *errbuf, size_t errlen)
{
    uint32_t ttl = 0;
    json_t *t = json_object_get(o, "ttl");
    if (t && !json_is_null(t) && s_ttl(t, &ttl) < 0) {
        snprintf(errbuf, errlen, "%s", GW_ERR_TTL);
        return -1;
    }
    if (!json_is_array(beats) || json_array_size(beats) == 0) {
        snprintf(errbuf, errlen, "heartbeats is required: a non-empty array of user ids");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(beats); i++) {
        json_t *u = json_array_get(beats, i);
        if (!json_is_string(u)) {
            snprintf(errbuf, errlen, "invalid user_id in heartbeats[%zu]: must be a string", i);
            return -1;
        }
        const char *id = json_string_value(u);
        size_t il = json_string_length(u);
        if (!gw_valid_user_id(id, il)) {
            s_bad_user_id(errbuf, errlen, id, il);
            return -1;
        }
        bool dup = false;
        for (uint32_t k = 0; k < *n && !dup; k++)
            dup = recs[k].uid_len == il && memcmp(recs[k].user_id, id, il) == 0;
        if (dup)
            continue;
        if (*n >= max) {
            snprintf(errbuf, errlen, "too many heartbeats (at most %u)", max);
            return -1;
        }
        proto_record_t *r = &recs[*n];
        memset(r, 0, sizeof *r);
        proto_record_set_uid(r, id, il);
        r->ttl_s = ttl;
        (*n)++;
    }
    return GW_BATCH_HEARTBEAT;
}

/* {presences: [{user_id, status, message?, ttl?}]}: recs[] filled and validated, a repeated user's
 * last entry winning. Returns GW_BATCH_WRITE or -1 with errbuf set. */
static int s_batch_write(json_t *pres, uint32_t max, uint32_t default_ttl, proto_record_t *recs, uint32_t *n,
                         char *errbuf, size_t errlen)
{
    if (!json_is_array(pres) || json_array_size(pres) == 0) {
        snprintf(errbuf, errlen, "presences is required: a non-empty array of {user_id, status, message?, ttl?}");
        return -1;
    }
    if (json_array_size(pres) > max) {
        snprintf(errbuf, errlen, "too many presences (at most %u)", max);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(pres); i++) {
        json_t *e = json_array_get(pres, i), *u;
        if (!json_is_object(e) || !(u = json_object_get(e, "user_id")) || !json_is_string(u)) {
            snprintf(errbuf, errlen, "invalid user_id in presences[%zu]: each entry must be an object with a string user_id", i);
            return -1;
        }
        const char *id = json_string_value(u);
        size_t il = json_string_length(u);
        if (!gw_valid_user_id(id, il)) {
            s_bad_user_id(errbuf, errlen, id, il);
            return -1;
        }
        /* Duplicates collapse, the last entry winning (API.md): one record, one version, one
         * event and one rate-limit token per user, whatever the body repeats. */
        uint32_t k = 0;
        while (k < *n && !(recs[k].uid_len == il && memcmp(recs[k].user_id, id, il) == 0))
            k++;
        proto_record_t *r = &recs[k];
        memset(r, 0, sizeof *r);
        proto_record_set_uid(r, id, il);
        const char *ferr;
        r->cflags = PROTO_CMD_F_MSG; /* a batch entry sets the message, like a PUT without a session */
        if (s_set_fields(e, default_ttl, r, &ferr) < 0) {
            /* "invalid ttl: <rule>" -> "invalid ttl for user <id>: <rule>" */
            const char *colon = strchr(ferr, ':');
            int head = colon ? (int)(colon - ferr) : (int)strlen(ferr);
            snprintf(errbuf, errlen, "%.*s for user %.*s%s", head, ferr, (int)il, id, colon ? colon : "");
            return -1;
        }
        if (k == *n)
            (*n)++;
    }
    return GW_BATCH_WRITE;
}

/* {user_ids: [user ids]} (uids may be NULL: absent): ids[] filled into idstore, duplicates and empty
 * items dropped. Returns GW_BATCH_READ or -1 with errbuf set. */
static int s_batch_read(json_t *uids, uint32_t max, proto_str_t *ids, char *idstore, uint32_t *n, char *errbuf,
                        size_t errlen)
{
    if (!uids || json_is_null(uids)) {
        snprintf(errbuf, errlen, "user_ids is required: %s", GW_ERR_BATCH_SHAPE);
        return -1;
    }
    if (!json_is_array(uids)) {
        snprintf(errbuf, errlen, "%s", GW_ERR_JSON);
        return -1;
    }
    size_t off = 0;
    for (size_t i = 0; i < json_array_size(uids); i++) {
        json_t *u = json_array_get(uids, i);
        if (!json_is_string(u)) {
            snprintf(errbuf, errlen, "invalid user_id in user_ids[%zu]: must be a string", i);
            return -1;
        }
        const char *id = json_string_value(u);
        size_t il = json_string_length(u);
        if (il == 0)
            continue; /* empty items are skipped */
        if (!gw_valid_user_id(id, il)) {
            s_bad_user_id(errbuf, errlen, id, il);
            return -1;
        }
        if (s_seen(ids, *n, id, il))
            continue;
        if (*n >= max) {
            snprintf(errbuf, errlen, "too many user ids (at most %u)", max);
            return -1;
        }
        memcpy(idstore + off, id, il);
        ids[*n].p = idstore + off;
        ids[*n].len = (uint32_t)il;
        off += il;
        (*n)++;
    }
    if (*n == 0) {
        snprintf(errbuf, errlen, "user_ids is required: %s", GW_ERR_BATCH_SHAPE);
        return -1;
    }
    return GW_BATCH_READ;
}

/* The dispatcher: exactly one of the three shapes decides the parse. A body that is not valid UTF-8
 * was re-read only to name the wrong field (s_load_object): when no field is wrong it is still
 * invalid JSON. */
int gw_parse_batch_body(const char *body, size_t len, uint32_t max, uint32_t default_ttl, proto_str_t *ids,
                        char *idstore, proto_record_t *recs, uint32_t *n, char *errbuf, size_t errlen)
{
    *n = 0;
    bool ill;
    json_t *o = s_load_object(body, len, &ill);
    if (!o) {
        snprintf(errbuf, errlen, "%s", GW_ERR_JSON);
        return -1;
    }
    int rc;
    json_t *uids = json_object_get(o, "user_ids"), *pres = json_object_get(o, "presences"),
           *beats = json_object_get(o, "heartbeats");
    if ((uids != NULL) + (pres != NULL) + (beats != NULL) > 1) {
        snprintf(errbuf, errlen, "%s", GW_ERR_BATCH_SHAPE);
        rc = -1;
    } else if (beats) {
        rc = s_batch_heartbeats(o, beats, max, recs, n, errbuf, errlen);
    } else if (pres) {
        rc = s_batch_write(pres, max, default_ttl, recs, n, errbuf, errlen);
    } else {
        rc = s_batch_read(uids, max, ids, idstore, n, errbuf, errlen);
    }
    if (rc >= 0 && ill) {
        snprintf(errbuf, errlen, "%s", GW_ERR_JSON);
        rc = -1;
    }
    json_decref(o);
    return rc;
}

bool gw_query_param(const char *q, size_t qlen, const char *name, const char **v, size_t *vlen)
{
    size_t nlen = strlen(name), i = 0;
    while (i < qlen) {
        size_t end = i;
        while (end < qlen && q[end] != '&')
            end++;
        if (end - i >= nlen && memcmp(q + i, name, nlen) == 0 && (end - i == nlen || q[i + nlen] == '=')) {
            *v = end - i == nlen ? q + end : q + i + nlen + 1;
            *vlen = end - i == nlen ? 0 : end - (i + nlen + 1);
            return true;
        }
        i = end + 1;
    }
    return false;
}

int gw_parse_users(const char *q, size_t qlen, uint32_t max, proto_str_t *ids, char *idstore, char *errbuf,
                   size_t errlen)
{
    const char *v;
    size_t vlen;
    if (!gw_query_param(q, qlen, "users", &v, &vlen) || vlen == 0) {
        snprintf(errbuf, errlen, "users parameter is required");
        return -1;
    }
    uint32_t n = 0;
    size_t off = 0, i = 0;
    while (i <= vlen) {
        size_t end = i;
        /* Split on ',' and its encoding %2C (items are decoded once after splitting). */
        while (end < vlen && v[end] != ',' && !(v[end] == '%' && end + 2 < vlen && v[end + 1] == '2' &&
                                               (v[end + 2] == 'C' || v[end + 2] == 'c')))
            end++;
        char *dst = idstore + off;
        /* '+' is a space in query strings; spaces are trimmed, so a '+' inside an id is invalid
         * unless sent as %2B, which is what form encoders produce. */
        size_t k = 0;
        for (size_t j = i; j < end; j++) {
            if (v[j] == '%') {
                if (j + 2 >= end) {
                    snprintf(errbuf, errlen, "invalid user_id: a %%XX escape is not two hex digits");
                    return -1;
                }
                int hi = s_hex((unsigned char)v[j + 1]), lo = s_hex((unsigned char)v[j + 2]);
                if (hi < 0 || lo < 0) {
                    snprintf(errbuf, errlen, "invalid user_id: a %%XX escape is not two hex digits");
                    return -1;
                }
                dst[k++] = (char)(hi * 16 + lo);
                j += 2;
            } else {
                dst[k++] = v[j] == '+' ? ' ' : v[j];
            }
        }
        size_t a = 0, z = k;
        while (a < z && (dst[a] == ' ' || dst[a] == '\t'))
            a++;
        while (z > a && (dst[z - 1] == ' ' || dst[z - 1] == '\t'))
            z--;
        if (z > a) {
            if (!gw_valid_user_id(dst + a, z - a)) {
                snprintf(errbuf, errlen, "invalid user_id: %.*s (%s)", (int)MIN(z - a, 128), dst + a, GW_USER_ID_RULE);
                return -1;
            }
            if (!s_seen(ids, n, dst + a, z - a)) {
                if (n >= max) {
                    snprintf(errbuf, errlen, "too many user ids (at most %u)", max);
                    return -1;
                }
                memmove(dst, dst + a, z - a);
                ids[n].p = dst;
                ids[n].len = (uint32_t)(z - a);
                off += z - a;
                n++;
            }
        }
        if (end < vlen && v[end] == '%')
            end += 2;
        i = end + 1;
    }
    if (n == 0) {
        snprintf(errbuf, errlen, "users parameter is required");
        return -1;
    }
    return (int)n;
}
