/* notify.c -- the notifier's pure engine (see notify.h for the contracts).
 *
 * Event derivation compares the *effective* state of two consecutive records of a user (the state
 * readers see: a record past expires_at is offline without its message, as the store's own
 * change detection and the gateway's rendering treat it), so an expiry the sweeper has not made
 * durable yet and the sweeper's later SET make one offline, not two.
 *
 * Debounce: an offline event is written to the log at once (so it survives a crash) but marked
 * held until now + debounce; a batch stops at a held entry its target wants. An online of the
 * same user while the entry is still held deletes it and emits nothing (or a `status` event when
 * the user came back with another status). Nobody can have received the held entry: it was not
 * deliverable yet, and entries after it wait behind it.
 *
 * No I/O, no logging, no globals: every function is reentrant.
 */
#include "notify.h"
#include "util.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

/* ==== types ================================================================================== */

static const char *const s_type_names[NOTIFY_TYPE_COUNT] = {"online", "offline", "status", "message", "session_start",
                                                            "session_end"};

const char *notify_type_name(int type)
{
    return type >= 0 && type < NOTIFY_TYPE_COUNT ? s_type_names[type] : NULL;
}

int notify_type_parse(const char *s, size_t len)
{
    for (int i = 0; i < NOTIFY_TYPE_COUNT; i++)
        if (strlen(s_type_names[i]) == len && memcmp(s_type_names[i], s, len) == 0)
            return i;
    return -1;
}

/* ==== byte helpers =========================================================================== */

void notify_be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t notify_be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void s_be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t s_be32_get(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ==== per-user state ========================================================================= */

uint32_t notify_record_sessions(const proto_record_t *r)
{
    return r->sessions;
}

void notify_user_from_record(notify_user_t *u, const proto_record_t *r, uint64_t now_us)
{
    memset(u, 0, sizeof *u);
    bool expired = r->status != PRESENCE_OFFLINE && now_us >= r->expires_at_us;
    u->version = r->version;
    u->status = expired ? PRESENCE_OFFLINE : r->status;
    u->sessions = expired ? 0 : notify_record_sessions(r);
    if (!expired && r->msg_len) {
        u->msg_len = r->msg_len;
        memcpy(u->message, r->message, r->msg_len);
    }
    u->message[u->msg_len] = '\0';
}

#define USER_ENC_VERSION 1
#define USER_HDR 34

size_t notify_user_encode(const notify_user_t *u, unsigned char *out)
{
    out[0] = USER_ENC_VERSION;
    out[1] = u->status;
    out[2] = u->pend_prev;
    out[3] = 0;
    s_be32_put(out + 4, u->sessions);
    notify_be64_put(out + 8, u->version);
    notify_be64_put(out + 16, u->pend_seq);
    notify_be64_put(out + 24, u->pend_until_ms);
    out[32] = (unsigned char)(u->msg_len >> 8);
    out[33] = (unsigned char)u->msg_len;
    memcpy(out + USER_HDR, u->message, u->msg_len);
    return USER_HDR + u->msg_len;
}

int notify_user_decode(const void *data, size_t len, notify_user_t *u)
{
    const unsigned char *p = data;
    if (len < USER_HDR || p[0] != USER_ENC_VERSION || p[1] >= PRESENCE_STATUS_COUNT || p[2] >= PRESENCE_STATUS_COUNT)
        return -1;
    size_t mlen = (size_t)p[32] << 8 | p[33];
    if (mlen > PROTO_MESSAGE_MAX || len != USER_HDR + mlen)
        return -1;
    memset(u, 0, sizeof *u);
    u->status = p[1];
    u->pend_prev = p[2];
    u->sessions = s_be32_get(p + 4);
    u->version = notify_be64_get(p + 8);
    u->pend_seq = notify_be64_get(p + 16);
    u->pend_until_ms = notify_be64_get(p + 24);
    u->msg_len = (uint16_t)mlen;
    memcpy(u->message, p + USER_HDR, mlen);
    u->message[mlen] = '\0';
    return 0;
}

bool notify_user_same(const notify_user_t *a, const notify_user_t *b)
{
    return a->version == b->version && a->pend_seq == b->pend_seq && a->pend_until_ms == b->pend_until_ms &&
           a->sessions == b->sessions && a->status == b->status && a->pend_prev == b->pend_prev &&
           a->msg_len == b->msg_len && memcmp(a->message, b->message, a->msg_len) == 0;
}

#define VIEWS_ENC_VERSION 2
#define VIEWS_F_OWN 0x1u

size_t notify_views_encode(const notify_views_t *v, unsigned char *out)
{
    bool own = !notify_user_same(&v->pub, &v->own);
    out[0] = VIEWS_ENC_VERSION;
    out[1] = own ? VIEWS_F_OWN : 0;
    size_t n = 2 + notify_user_encode(&v->pub, out + 2);
    if (own)
        n += notify_user_encode(&v->own, out + n);
    return n;
}

int notify_views_decode(const void *data, size_t len, notify_views_t *v)
{
    const unsigned char *p = data;
    if (len >= 1 && p[0] == USER_ENC_VERSION) {
        if (notify_user_decode(data, len, &v->pub) < 0)
            return -1;
        v->own = v->pub;
        return 0;
    }
    if (len < 2 + USER_HDR || p[0] != VIEWS_ENC_VERSION || (p[1] & ~VIEWS_F_OWN))
        return -1;
    /* The first state's length is in its own header (USER_HDR + its message length). */
    size_t first = USER_HDR + ((size_t)p[2 + 32] << 8 | p[2 + 33]);
    if (first > len - 2)
        return -1;
    if (notify_user_decode(p + 2, first, &v->pub) < 0)
        return -1;
    if (!(p[1] & VIEWS_F_OWN)) {
        if (len != 2 + first)
            return -1;
        v->own = v->pub;
        return 0;
    }
    return notify_user_decode(p + 2 + first, len - 2 - first, &v->own);
}

/* ==== planning =============================================================================== */

static notify_event_t *s_push(notify_plan_t *out, int type, int prev_status, uint64_t id)
{
    if (out->n == NOTIFY_PLAN_EVENTS_MAX)
        return NULL; /* cannot happen: at most one of each family per change */
    notify_event_t *e = &out->ev[out->n++];
    memset(e, 0, sizeof *e);
    e->type = (uint8_t)type;
    e->prev_status = (uint8_t)prev_status;
    e->id = id;
    return e;
}

/* The session family: one event when the count went up or down. The stream carries the count,
 * not the sessions (docs/WEBHOOKS.md): a change that moves it by more than one (a gateway's
 * lease lapsing ends all its sessions of a user at once) is one event, whose previous_sessions
 * and record.sessions give the difference. */
static void s_session_events(notify_plan_t *out, const notify_user_t *p, const notify_user_t *n, uint64_t id)
{
    if (n->sessions == p->sessions)
        return;
    notify_event_t *e = s_push(out, n->sessions > p->sessions ? NOTIFY_SESSION_START : NOTIFY_SESSION_END, p->status, id);
    if (e)
        e->prev_sessions = (uint16_t)MIN(p->sessions, UINT16_MAX);
}

static void s_remove(notify_plan_t *out, uint32_t i)
{
    memmove(&out->ev[i], &out->ev[i + 1], (out->n - i - 1) * sizeof out->ev[0]);
    out->n--;
}

void notify_plan(const notify_user_t *prev, const proto_record_t *rec, uint64_t id, uint64_t now_us,
                 uint64_t debounce_ms, uint64_t next_seq, notify_plan_t *out)
{
    memset(out, 0, sizeof *out);
    uint64_t now_ms = now_us / 1000;
    notify_user_t p;
    if (prev) {
        p = *prev;
    } else {
        memset(&p, 0, sizeof p);
        p.status = PRESENCE_OFFLINE;
    }
    bool held = p.pend_seq && p.pend_until_ms > now_ms && p.pend_until_ms - now_ms <= debounce_ms;
    bool state_dirty = false;
    out->next = p;
    if (p.pend_seq && !held) {
        /* The held offline became deliverable: nothing can cancel it any more. */
        out->next.pend_seq = out->next.pend_until_ms = 0;
        out->next.pend_prev = 0;
        state_dirty = prev != NULL;
    }
    if (prev && id <= prev->version) {
        out->write_state = state_dirty;
        return; /* a change we already applied (catch-up overlap) */
    }

    if (!rec) {
        /* Deleted. An unknown user: nothing to say. A known one goes offline if it was not. */
        if (!prev)
            return;
        if (p.status != PRESENCE_OFFLINE)
            s_push(out, NOTIFY_OFFLINE, p.status, id);
        out->delete_state = true;
        out->write_state = false;
        for (uint32_t i = 0; i < out->n; i++)
            out->ev[i].seq = next_seq + i;
        return;
    }

    notify_user_t n;
    notify_user_from_record(&n, rec, now_us);
    n.version = id; /* the change applied (a public view's record carries an older version) */
    bool was_off = p.status == PRESENCE_OFFLINE, is_off = n.status == PRESENCE_OFFLINE;
    if (was_off && !is_off)
        s_push(out, NOTIFY_ONLINE, p.status, id);
    else if (!was_off && is_off)
        s_push(out, NOTIFY_OFFLINE, p.status, id);
    else if (!was_off && p.status != n.status)
        s_push(out, NOTIFY_STATUS, p.status, id);
    if (p.msg_len != n.msg_len || memcmp(p.message, n.message, n.msg_len) != 0)
        s_push(out, NOTIFY_MESSAGE, p.status, id);
    s_session_events(out, &p, &n, id);

    /* n starts with no held event; carry a still-held one unless this change settles it. */
    if (held) {
        n.pend_seq = p.pend_seq;
        n.pend_until_ms = p.pend_until_ms;
        n.pend_prev = p.pend_prev;
    }
    if (debounce_ms && held && out->n && out->ev[0].type == NOTIFY_ONLINE) {
        /* Back within the grace: the held offline and this online cancel out. */
        out->cancel_seq = p.pend_seq;
        out->debounced = 1;
        if (n.status != p.pend_prev) {
            out->ev[0].type = NOTIFY_STATUS;
            out->ev[0].prev_status = p.pend_prev;
        } else {
            s_remove(out, 0);
        }
        n.pend_seq = n.pend_until_ms = 0;
        n.pend_prev = 0;
    }
    for (uint32_t i = 0; i < out->n; i++) {
        out->ev[i].seq = next_seq + i;
        if (debounce_ms && out->ev[i].type == NOTIFY_OFFLINE) {
            out->ev[i].visible_at_ms = now_ms + debounce_ms;
            n.pend_seq = out->ev[i].seq;
            n.pend_until_ms = out->ev[i].visible_at_ms;
            n.pend_prev = p.status;
        }
    }
    if (out->n || out->cancel_seq) {
        out->next = n;
        out->write_state = true;
    } else {
        out->write_state = state_dirty;
    }
}

/* ==== rendering ============================================================================== */

void notify_event_render(gw_buf_t *b, const notify_event_t *e, const char *uid, size_t uid_len,
                         const proto_record_t *rec, uint64_t now_us, uint64_t at_us)
{
    gw_buf_add(b, "{\"id\":", 6);
    gw_buf_add_u64(b, e->id);
    gw_buf_add(b, ",\"type\":\"", 9);
    gw_buf_adds(b, notify_type_name(e->type));
    gw_buf_add(b, "\",\"user_id\":", 12);
    gw_buf_add_jstr(b, uid, uid_len);
    gw_buf_add(b, ",\"record\":", 10);
    if (rec) {
        gw_json_record_as(b, rec, now_us, e->view == NOTIFY_VIEW_PRIVATE);
        bool expired = rec->status != PRESENCE_OFFLINE && now_us >= rec->expires_at_us;
        at_us = expired ? rec->expires_at_us : rec->updated_at_us;
    } else {
        gw_buf_add(b, "null", 4);
    }
    gw_buf_add(b, ",\"previous_status\":\"", 20);
    gw_buf_adds(b, proto_presence_name(e->prev_status));
    gw_buf_add(b, "\"", 1);
    if (e->type == NOTIFY_SESSION_START || e->type == NOTIFY_SESSION_END) {
        gw_buf_add(b, ",\"previous_sessions\":", 21);
        gw_buf_add_u64(b, e->prev_sessions);
    }
    gw_buf_add(b, ",\"at\":\"", 7);
    char t[UTIL_TIME_LEN];
    size_t tl = util_fmt_time(at_us, t);
    gw_buf_add(b, t, tl);
    gw_buf_add(b, "\"}", 2);
}

#define ENTRY_VERSION 1

void notify_entry_encode(gw_buf_t *out, const notify_event_t *e, uint64_t appended_ms, const char *json,
                         size_t json_len)
{
    unsigned char h[NOTIFY_ENTRY_HDR];
    h[0] = ENTRY_VERSION;
    h[1] = e->type;
    h[2] = e->prev_status;
    h[3] = e->view; /* 0 (every target) in entries written before views existed */
    s_be32_put(h + 4, (uint32_t)json_len);
    notify_be64_put(h + 8, e->id);
    notify_be64_put(h + 16, e->visible_at_ms);
    notify_be64_put(h + 24, appended_ms);
    gw_buf_reset(out);
    gw_buf_add(out, h, sizeof h);
    gw_buf_add(out, json, json_len);
}

int notify_entry_decode(const void *data, size_t len, notify_entry_t *e)
{
    const unsigned char *p = data;
    if (len < NOTIFY_ENTRY_HDR || p[0] != ENTRY_VERSION || p[1] >= NOTIFY_TYPE_COUNT || p[3] > NOTIFY_VIEW_PRIVATE)
        return -1;
    uint32_t jl = s_be32_get(p + 4);
    if ((size_t)jl != len - NOTIFY_ENTRY_HDR)
        return -1;
    e->type = p[1];
    e->view = p[3];
    e->id = notify_be64_get(p + 8);
    e->visible_at_ms = notify_be64_get(p + 16);
    e->appended_ms = notify_be64_get(p + 24);
    e->json = (const char *)p + NOTIFY_ENTRY_HDR;
    e->json_len = jl;
    return 0;
}

/* ==== batches ================================================================================ */

void notify_batch_init(notify_batch_t *b)
{
    memset(b, 0, sizeof *b);
    gw_buf_init(&b->body);
}

void notify_batch_fini(notify_batch_t *b)
{
    gw_buf_free(&b->body);
}

void notify_batch_begin(notify_batch_t *b, uint64_t after, uint32_t max_events, size_t max_bytes,
                        uint64_t hold_max_ms)
{
    b->hold_max_ms = hold_max_ms;
    gw_buf_reset(&b->body);
    b->n = 0;
    b->max_events = max_events ? max_events : 1;
    b->max_bytes = max_bytes;
    b->after = b->last_seq = after;
    b->first_id = b->last_id = 0;
    b->oldest_ms = 0;
    b->held_until_ms = 0;
}

int notify_batch_offer(notify_batch_t *b, uint32_t mask, const notify_entry_t *e, uint64_t now_ms)
{
    bool privileged = (mask & NOTIFY_MASK_PRIVILEGED) != 0;
    bool other_view = (e->view == NOTIFY_VIEW_PUBLIC && privileged) || (e->view == NOTIFY_VIEW_PRIVATE && !privileged);
    if (!(mask & (1u << e->type)) || other_view) {
        b->last_seq = e->seq;
        return NOTIFY_SKIPPED;
    }
    if (e->visible_at_ms > now_ms && e->visible_at_ms - now_ms <= b->hold_max_ms) {
        b->held_until_ms = e->visible_at_ms;
        return NOTIFY_HELD;
    }
    /* "[" or "," before the event, "]" after the last one. */
    if (b->n >= b->max_events || (b->n > 0 && b->body.len + 1 + e->json_len + 1 > b->max_bytes))
        return NOTIFY_FULL;
    gw_buf_add(&b->body, b->n ? "," : "[", 1);
    gw_buf_add(&b->body, e->json, e->json_len);
    if (!b->n) {
        b->first_id = e->id;
        b->oldest_ms = e->appended_ms;
    }
    b->last_id = e->id;
    b->last_seq = e->seq;
    b->n++;
    return NOTIFY_TAKEN;
}

void notify_batch_end(notify_batch_t *b)
{
    gw_buf_add(&b->body, "]", 1);
}

/* ==== delivery state ========================================================================= */

void notify_target_init(notify_target_t *t, uint64_t cursor, uint32_t max_events)
{
    memset(t, 0, sizeof *t);
    t->cursor = cursor;
    t->phase = NOTIFY_IDLE;
    t->batch_limit = max_events ? max_events : 1;
}

void notify_target_sent(notify_target_t *t, uint64_t last_seq, uint32_t n)
{
    t->phase = NOTIFY_INFLIGHT;
    t->inflight_last = last_seq;
    t->inflight_n = n;
}

void notify_target_skip(notify_target_t *t, uint64_t last_seq)
{
    if (last_seq > t->cursor) {
        t->cursor = last_seq;
        t->dirty = true;
    }
}

uint64_t notify_backoff_ms(const notify_policy_t *p, uint32_t attempt, uint64_t rnd)
{
    uint64_t lo = p->backoff_min_ms ? p->backoff_min_ms : 1, cap = MAX(p->backoff_max_ms, lo);
    uint64_t ceil = lo;
    for (uint32_t i = 1; i < attempt && ceil < cap; i++)
        ceil = ceil > cap / 2 ? cap : ceil * 2;
    ceil = MIN(ceil, cap);
    return 1 + rnd % ceil;
}

int notify_target_result(notify_target_t *t, const notify_policy_t *p, int http_status, uint64_t retry_after_s,
                         uint64_t last_id, uint64_t now_ms, uint64_t rnd, uint32_t max_events)
{
    if (http_status >= 200 && http_status <= 299) {
        if (t->inflight_last > t->cursor)
            t->cursor = t->inflight_last;
        t->acked_id = last_id;
        t->delivered_events += t->inflight_n;
        t->delivered_batches++;
        t->attempt = 0;
        t->phase = NOTIFY_IDLE;
        t->batch_limit = max_events ? max_events : 1;
        t->dirty = true;
        return NOTIFY_ACKED;
    }
    t->failures++;
    if (http_status == 413 && t->inflight_n > 1) {
        /* Too large for the receiver: the same events again, in smaller batches, at once. */
        t->batch_limit = MAX(t->inflight_n / 2, 1);
        t->retries++;
        t->phase = NOTIFY_IDLE;
        return NOTIFY_SPLIT;
    }
    bool permanent = http_status >= 300 && http_status <= 499 && http_status != 408 && http_status != 429;
    if (permanent && !p->retry_4xx) {
        t->dropped_events += t->inflight_n;
        t->dropped_batches++;
        if (t->inflight_last > t->cursor)
            t->cursor = t->inflight_last;
        t->attempt = 0;
        t->phase = NOTIFY_IDLE;
        t->dirty = true;
        return NOTIFY_DROPPED;
    }
    t->attempt++;
    t->retries++;
    uint64_t delay = notify_backoff_ms(p, t->attempt, rnd);
    if (retry_after_s) {
        uint64_t ra = retry_after_s > UINT64_MAX / 1000 ? UINT64_MAX : retry_after_s * 1000;
        delay = MAX(delay, MIN(ra, MAX(p->backoff_max_ms, 1)));
    }
    t->retry_at_ms = now_ms + delay;
    t->phase = NOTIFY_BACKOFF;
    return NOTIFY_RETRY;
}

uint64_t notify_target_catch_floor(notify_target_t *t, uint64_t floor)
{
    if (floor == 0 || t->cursor + 1 >= floor)
        return 0;
    uint64_t skipped = floor - 1 - t->cursor;
    t->cursor = floor - 1;
    t->gaps++;
    t->gap_entries += skipped;
    t->dirty = true;
    return skipped;
}

bool notify_over_bound(uint64_t bytes, uint64_t max_bytes, uint64_t oldest_ms, uint64_t max_age_ms, uint64_t now_ms)
{
    if (bytes > max_bytes)
        return true;
    return max_age_ms && oldest_ms && now_ms > oldest_ms && now_ms - oldest_ms > max_age_ms;
}

/* ==== signing ================================================================================ */

int notify_sign(const void *key, size_t key_len, uint64_t t, const void *body, size_t body_len, char *out)
{
    int rc = -1;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0), OSSL_PARAM_END};
    char prefix[24];
    int pl = snprintf(prefix, sizeof prefix, "%llu.", (unsigned long long)t);
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0;
    if (!ctx || !EVP_MAC_init(ctx, key, key_len, params) || !EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)pl) ||
        !EVP_MAC_update(ctx, body, body_len) || !EVP_MAC_final(ctx, md, &mdlen, sizeof md) || mdlen != 32)
        goto out;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[NOTIFY_SIG_HEX] = '\0';
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

int notify_sign_header(const void *key, size_t key_len, uint64_t t, const void *body, size_t body_len, char *out,
                       size_t outlen)
{
    char hex[NOTIFY_SIG_HEX + 1];
    if (notify_sign(key, key_len, t, body, body_len, hex) < 0)
        return -1;
    int n = snprintf(out, outlen, "X-Presence-Signature: t=%llu,v1=%s", (unsigned long long)t, hex);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int notify_key(const char *s, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) || n != 32)
        return -1;
    return 0;
}
