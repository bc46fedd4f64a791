/* gw_wsmsg.c -- JSON messages of the WebSocket endpoint (see gw_wsmsg.h).
 *
 * Parsing uses jansson, as the REST bodies do (gw_json.c): it bounds nesting depth, refuses
 * numbers that do not fit and invalid UTF-8. The text is bounded by the frame maximum before it is
 * handed to jansson, and the user list by max_users before the users array is allocated. The
 * ids of a watch are not copied: users[] points into the parsed tree, which the message keeps
 * until gw_wsmsg_fini. Duplicate ids collapse through a small open-addressing set (linear
 * scanning would let one 64 KiB message of repeated ids cost ~16k x 1000 compares).
 *
 * Output is written by hand into a gw_buf_t, like every other response of the gateway.
 * Threading: none; reentrant.
 */
#include "gw_wsmsg.h"
#include "gw_wsframe.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_types[] = {
    [GW_WSMSG_SET] = "set",         [GW_WSMSG_ACTIVITY] = "activity", [GW_WSMSG_WATCH] = "watch",
    [GW_WSMSG_UNWATCH] = "unwatch", [GW_WSMSG_PING] = "ping",         [GW_WSMSG_BYE] = "bye",
};

const char *gw_wsmsg_type_name(int type)
{
    if (type < GW_WSMSG_SET || type > GW_WSMSG_BYE)
        return "unknown";
    return s_types[type];
}

/* ==== parsing ================================================================================ */

/* Quote at most `max` bytes of s[0..n) into dst (size >= max + 1), cut on a character boundary, so
 * an error text quoting client input stays valid UTF-8. (Strings hold no NUL: jansson refuses
 * \u0000 unless JSON_ALLOW_NUL is given, and it is not.) */
static void s_quote(char *dst, size_t max, const char *s, size_t n)
{
    size_t k = gw_wsframe_utf8_span(s, MIN(n, max));
    memcpy(dst, s, k);
    dst[k] = '\0';
}

static int s_set(json_t *root, gw_wsmsg_t *out, char *err, size_t errlen)
{
    json_t *st = json_object_get(root, "status"), *msg = json_object_get(root, "message"),
           *ttl = json_object_get(root, "message_ttl");
    if (st && json_is_null(st))
        st = NULL; /* null = not given, as for every optional field but message */
    if (ttl && json_is_null(ttl))
        ttl = NULL;
    if (!st && !msg && !ttl) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_SET_EMPTY);
        return -1;
    }
    if (st) {
        const char *s = json_is_string(st) ? json_string_value(st) : "";
        size_t n = json_is_string(st) ? json_string_length(st) : 0;
        if (n == 6 && memcmp(s, "online", 6) == 0)
            out->status = PRESENCE_ONLINE;
        else if (n == 4 && memcmp(s, "away", 4) == 0)
            out->status = PRESENCE_AWAY;
        else if (n == 4 && memcmp(s, "busy", 4) == 0)
            out->status = PRESENCE_BUSY;
        else {
            snprintf(err, errlen, "%s", GW_WSMSG_ERR_STATUS);
            return -1;
        }
    }
    if (msg) {
        if (json_is_null(msg)) {
            out->message_op = GW_WSMSG_MESSAGE_CLEAR;
        } else if (!json_is_string(msg)) {
            snprintf(err, errlen, "%s", GW_WSMSG_ERR_MESSAGE_TYPE);
            return -1;
        } else {
            size_t n = json_string_length(msg);
            if (n > PROTO_MESSAGE_MAX) {
                snprintf(err, errlen, "%s", GW_WSMSG_ERR_MESSAGE_LEN);
                return -1;
            }
            if (!util_valid_message(json_string_value(msg), n)) {
                snprintf(err, errlen, "%s", GW_WSMSG_ERR_MESSAGE_TEXT);
                return -1;
            }
            out->message_op = n ? GW_WSMSG_MESSAGE_SET : GW_WSMSG_MESSAGE_CLEAR;
            memcpy(out->message, json_string_value(msg), n);
            out->message[n] = '\0';
            out->message_len = (uint32_t)n;
        }
    }
    if (ttl) {
        /* integer seconds; an integral JSON real (60.0) too, as the REST ttl accepts */
        double dv = json_is_real(ttl) ? json_real_value(ttl) : 0;
        json_int_t iv = json_is_integer(ttl) ? json_integer_value(ttl) : 0;
        bool ok = json_is_integer(ttl) ? iv >= 1 && iv <= (json_int_t)PROTO_TTL_MAX
                                       : json_is_real(ttl) && dv >= 1 && dv <= PROTO_TTL_MAX && floor(dv) == dv;
        if (!ok) {
            snprintf(err, errlen, "%s", GW_WSMSG_ERR_TTL);
            return -1;
        }
        if (out->message_op != GW_WSMSG_MESSAGE_SET) {
            snprintf(err, errlen, "%s", GW_WSMSG_ERR_TTL_ALONE);
            return -1;
        }
        out->message_ttl = json_is_integer(ttl) ? (uint32_t)iv : (uint32_t)dv;
    }
    return 0;
}

/* users: a non-empty array of valid ids; duplicates collapse; at most max distinct. */
static int s_users(json_t *root, uint32_t max, gw_wsmsg_t *out, char *err, size_t errlen)
{
    json_t *u = json_object_get(root, "users");
    if (!u || !json_is_array(u) || json_array_size(u) == 0) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_USERS);
        return -1;
    }
    size_t n = json_array_size(u), cap = MIN(n, (size_t)max);
    size_t nslots = 16;
    while (nslots < 2 * cap)
        nslots *= 2;
    uint32_t *slots = xcalloc(nslots, sizeof *slots); /* 0 = empty, else index + 1 */
    out->users = xmalloc(cap * sizeof *out->users);
    out->nusers = 0;
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(u, i);
        if (!json_is_string(item)) {
            snprintf(err, errlen, GW_WSMSG_ERR_USER_TYPE, i);
            goto out;
        }
        const char *id = json_string_value(item);
        size_t il = json_string_length(item);
        if (!gw_valid_user_id(id, il)) {
            char q[UTIL_USER_ID_MAX + 1];
            s_quote(q, UTIL_USER_ID_MAX, id, il);
            snprintf(err, errlen, GW_WSMSG_ERR_USER_ID, (int)strlen(q), q);
            goto out;
        }
        size_t h = (size_t)util_hash64(id, il, 0x77736d73) & (nslots - 1);
        bool dup = false;
        while (slots[h]) {
            const proto_str_t *s = &out->users[slots[h] - 1];
            if (s->len == il && memcmp(s->p, id, il) == 0) {
                dup = true;
                break;
            }
            h = (h + 1) & (nslots - 1);
        }
        if (dup)
            continue;
        if (out->nusers >= max) {
            snprintf(err, errlen, GW_WSMSG_ERR_TOO_MANY, max);
            goto out;
        }
        out->users[out->nusers].p = id;
        out->users[out->nusers].len = (uint32_t)il;
        slots[h] = ++out->nusers;
    }
    rc = 0;
out:
    free(slots);
    return rc;
}

static int s_since(json_t *root, gw_wsmsg_t *out, char *err, size_t errlen)
{
    json_t *s = json_object_get(root, "since");
    if (!s || json_is_null(s))
        return 0;
    if (!json_is_integer(s) || json_integer_value(s) < 0 ||
        (uint64_t)json_integer_value(s) > GW_WSMSG_VERSION_MAX) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_SINCE);
        return -1;
    }
    out->has_since = true;
    out->since = (uint64_t)json_integer_value(s);
    return 0;
}

int gw_wsmsg_parse(const char *text, size_t len, const gw_wsmsg_limits_t *lim, gw_wsmsg_t *out, char *err,
                   size_t errlen)
{
    uint32_t max_len = lim && lim->max_len ? lim->max_len : GW_WSFRAME_MAX_DEFAULT;
    uint32_t max_users = lim && lim->max_users ? lim->max_users : GW_WSMSG_MAX_USERS_DEFAULT;
    memset(out, 0, sizeof *out);
    out->status = -1;
    if (errlen)
        err[0] = '\0';
    if (len > max_len) {
        snprintf(err, errlen, GW_WSMSG_ERR_TOO_LONG, max_len);
        return -1;
    }
    json_error_t je;
    /* Not JSON_DECODE_ANY: the top level must be an object or array; nothing may follow it. */
    json_t *root = len ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    int rc = -1;
    if (!root || !json_is_object(root)) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_JSON);
        goto out;
    }
    json_t *t = json_object_get(root, "type");
    if (!t) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_TYPE_MISSING);
        goto out;
    }
    if (!json_is_string(t)) {
        snprintf(err, errlen, "%s", GW_WSMSG_ERR_TYPE_INVALID);
        goto out;
    }
    const char *name = json_string_value(t);
    size_t nl = json_string_length(t);
    for (int i = GW_WSMSG_SET; i <= GW_WSMSG_BYE; i++)
        if (nl == strlen(s_types[i]) && memcmp(name, s_types[i], nl) == 0)
            out->type = i;
    switch (out->type) {
    case GW_WSMSG_SET:
        rc = s_set(root, out, err, errlen);
        break;
    case GW_WSMSG_WATCH:
        rc = s_users(root, max_users, out, err, errlen);
        if (rc == 0)
            rc = s_since(root, out, err, errlen);
        break;
    case GW_WSMSG_UNWATCH:
        rc = s_users(root, max_users, out, err, errlen);
        break;
    case GW_WSMSG_ACTIVITY:
    case GW_WSMSG_PING:
    case GW_WSMSG_BYE:
        rc = 0;
        break;
    default: {
        char q[33];
        s_quote(q, 32, name, nl);
        snprintf(err, errlen, GW_WSMSG_ERR_TYPE_UNKNOWN, q);
        break;
    }
    }
out:
    if (rc == 0 && out->users) {
        out->priv = root; /* users[] points into it */
        return 0;
    }
    json_decref(root);
    if (rc != 0) {
        free(out->users);
        memset(out, 0, sizeof *out);
        out->status = -1;
    }
    return rc;
}

void gw_wsmsg_fini(gw_wsmsg_t *m)
{
    free(m->users);
    m->users = NULL;
    m->nusers = 0;
    json_decref((json_t *)m->priv);
    m->priv = NULL;
}

/* ==== rendering ============================================================================== */

void gw_wsmsg_welcome(gw_buf_t *b, const char *session_id, size_t sid_len, const char *user_id, size_t uid_len,
                      const char *record, size_t record_len, uint64_t ping_interval_ms, uint64_t grace_ms)
{
    gw_buf_adds(b, "{\"type\":\"welcome\",\"session_id\":");
    gw_buf_add_jstr(b, session_id, sid_len);
    gw_buf_adds(b, ",\"user_id\":");
    gw_buf_add_jstr(b, user_id, uid_len);
    gw_buf_adds(b, ",\"record\":");
    gw_buf_add(b, record, record_len);
    gw_buf_adds(b, ",\"ping_interval_ms\":");
    gw_buf_add_u64(b, ping_interval_ms);
    gw_buf_adds(b, ",\"grace_ms\":");
    gw_buf_add_u64(b, grace_ms);
    gw_buf_add(b, "}", 1);
}

void gw_wsmsg_presence(gw_buf_t *b, const char *record, size_t record_len)
{
    gw_buf_adds(b, "{\"type\":\"presence\",\"record\":");
    gw_buf_add(b, record, record_len);
    gw_buf_add(b, "}", 1);
}

void gw_wsmsg_pong(gw_buf_t *b)
{
    gw_buf_adds(b, "{\"type\":\"pong\"}");
}

void gw_wsmsg_error(gw_buf_t *b, const char *msg)
{
    gw_buf_adds(b, "{\"type\":\"error\",\"error\":");
    size_t n = strlen(msg);
    if (gw_wsframe_utf8_valid(msg, n)) {
        gw_buf_add_jstr(b, msg, n);
    } else {
        /* Texts are ours, but may quote what a client sent: each ill-formed byte becomes U+FFFD. */
        char *clean = xmalloc(n * 3 + 1);
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            size_t k = gw_wsframe_utf8_span(msg + i, n - i);
            memcpy(clean + o, msg + i, k);
            o += k;
            i += k;
            if (i < n) {
                memcpy(clean + o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            }
        }
        gw_buf_add_jstr(b, clean, o);
        free(clean);
    }
    gw_buf_add(b, "}", 1);
}
