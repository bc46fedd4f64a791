/* gw_near.c -- the near cache engine (see gw_near.h for the rules and the invariants).
 *
 * Storage: a cache_t (cache-node/cache.c: W-TinyLFU, byte-bounded, versioned, negative entries)
 * keyed by user id. A value is the record packed flat -- its numeric fields as they lie in memory
 * (proto_record_t up to the command inputs), then node id and message; the user id is the key --
 * so a hit is a few memcpy, not a msgpack decode.
 *
 * Key decision: what was served for a user that is no longer resident is remembered as a ghost --
 * a 64-bit hash of the user id and the sequence it was current through (`front` when it was
 * evicted, the answer's as_of when one was served without being kept) -- in a direct-mapped table
 * of max_bytes / 256 slots (16 bytes each: 1/16 of the budget). A ghost pushed out of its slot by
 * another folds into the one global floor. So an eviction makes only that user's next answer
 * wait for a node that has caught up with it, not every user's; a hash collision only makes a
 * check stricter. Dropping everything (the stream stopped being live) raises the global floor.
 *
 * Second decision: the stream moves on while an answer travels, so an answer is often a little
 * older than the stream (as_of < seq) although its user did not change meanwhile. A second
 * direct-mapped table, as large, keeps per bucket of user-id hashes the sequence of the last change
 * the stream applied to any user in it. When that is not after as_of, nothing of the user changed
 * in (as_of, seq]: the answer is as current as the stream, may become an entry, and satisfies any
 * floor up to seq. Without it a steady write rate made most fills too old to keep.
 *
 * Threading: none. One thread owns a gw_near_t. No I/O, no logging.
 */
#include "gw_near.h"
#include "cache.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* The numeric part of a record that is packed as it lies in memory: every stored field before the
 * command inputs (proto.h: numbers first, then the inputs, then the strings). */
#define NEAR_HEAD offsetof(proto_record_t, cflags)
#define NEAR_VALUE_MAX (NEAR_HEAD + PROTO_NODE_ID_MAX + PROTO_MESSAGE_MAX)

#define NEAR_GHOST_BYTES_PER_SLOT 256u /* one ghost slot per this many bytes of budget */
#define NEAR_GHOST_MIN_SLOTS 1024u
#define NEAR_HASH_SEED 0x6e656172ull

/* What was served for a user that left: its id's hash and the sequence it was current through. */
typedef struct ghost {
    uint64_t h;     /* 0: empty */
    uint64_t floor;
} ghost_t;

struct gw_near {
    cache_t *c;
    bool live;
    uint64_t seq;   /* the last change applied */
    uint64_t front; /* every entry is current through no sequence beyond this */
    uint64_t floor; /* a user without a ghost, not resident, was never served newer than latest(k, floor) */
    ghost_t *ghosts;
    uint64_t *changed; /* per bucket of user-id hashes: the last change applied to a user in it */
    uint64_t gmask;    /* both tables: slots - 1 */
    gw_near_stats_t st;
    char pack[NEAR_VALUE_MAX];
};

/* ==== packing ================================================================================= */

static size_t s_pack(char *dst, const proto_record_t *r)
{
    memcpy(dst, r, NEAR_HEAD);
    size_t o = NEAR_HEAD;
    memcpy(dst + o, r->node_id, r->node_len);
    o += r->node_len;
    memcpy(dst + o, r->message, r->msg_len);
    return o + r->msg_len;
}

static int s_unpack(const char *key, size_t klen, const void *v, size_t len, proto_record_t *out)
{
    const char *p = v;
    if (len < NEAR_HEAD)
        return -1;
    memcpy(out, p, NEAR_HEAD);
    if (out->uid_len != klen || out->node_len > PROTO_NODE_ID_MAX || out->msg_len > PROTO_MESSAGE_MAX ||
        NEAR_HEAD + out->node_len + out->msg_len != len)
        return -1;
    /* The command inputs mean nothing in a stored record: zero them (and the two input strings). */
    memset((char *)out + NEAR_HEAD, 0, offsetof(proto_record_t, user_id) - NEAR_HEAD);
    memcpy(out->user_id, key, klen);
    out->user_id[klen] = '\0';
    memcpy(out->node_id, p + NEAR_HEAD, out->node_len);
    out->node_id[out->node_len] = '\0';
    memcpy(out->message, p + NEAR_HEAD + out->node_len, out->msg_len);
    out->message[out->msg_len] = '\0';
    out->session_id[0] = '\0';
    out->device[0] = '\0';
    return 0;
}

/* ==== the floor and the ghosts ================================================================ */

static void s_raise_floor(gw_near_t *n, uint64_t s)
{
    if (s > n->floor)
        n->floor = s;
}

static void s_note_front(gw_near_t *n, uint64_t s)
{
    if (s > n->front)
        n->front = s;
}

static uint64_t s_hash(const char *key, size_t klen)
{
    uint64_t h = util_hash64(key, klen, NEAR_HASH_SEED);
    return h ? h : 1;
}

/* Remember that key (hash h) was served as current through `through`. */
static void s_ghost_put(gw_near_t *n, uint64_t h, uint64_t through)
{
    ghost_t *g = &n->ghosts[h & n->gmask];
    if (g->h == h) {
        if (through > g->floor)
            g->floor = through;
        return;
    }
    if (g->h)
        s_raise_floor(n, g->floor); /* pushed out: the global floor keeps what it said */
    g->h = h;
    g->floor = through;
}

/* The floor an answer for key must reach. */
static uint64_t s_floor_of(const gw_near_t *n, uint64_t h)
{
    const ghost_t *g = &n->ghosts[h & n->gmask];
    return g->h == h && g->floor > n->floor ? g->floor : n->floor;
}

static void s_ghosts_clear(gw_near_t *n)
{
    memset(n->ghosts, 0, (n->gmask + 1) * sizeof *n->ghosts);
}

/* Whether a user with hash h may have changed after as_of in what the stream applied. */
static bool s_changed_after(const gw_near_t *n, uint64_t h, uint64_t as_of)
{
    return n->changed[h & n->gmask] > as_of;
}

/* cache.c evicts for room: the entry was current through no more than front. */
static void on_evict(void *ctx, const void *key, size_t klen, uint64_t version)
{
    gw_near_t *n = ctx;
    n->st.evictions++;
    s_ghost_put(n, s_hash(key, klen), n->front);
}

/* An entry removed on purpose (one that could not be updated or read back). */
static void s_remove(gw_near_t *n, const char *key, size_t klen)
{
    cache_del(n->c, key, klen);
    s_ghost_put(n, s_hash(key, klen), n->front);
}

static int s_put_record(gw_near_t *n, const proto_record_t *r, unsigned flags)
{
    size_t len = s_pack(n->pack, r);
    return cache_put(n->c, r->user_id, r->uid_len, r->version, n->pack, len, flags);
}

static int s_put_absent(gw_near_t *n, const char *key, size_t klen, uint64_t as_of, unsigned flags)
{
    return cache_put(n->c, key, klen, as_of, "", 0, flags | CACHE_PUT_NEGATIVE);
}

/* ==== life ==================================================================================== */

gw_near_t *gw_near_new(uint64_t max_bytes)
{
    if (max_bytes < GW_NEAR_MIN_BYTES)
        return NULL;
    gw_near_t *n = xcalloc(1, sizeof *n);
    cache_config_t cfg = {.max_cost = max_bytes, .policy = CACHE_POLICY_WTINYLFU, .on_evict = on_evict, .evict_ctx = n};
    n->c = cache_new(&cfg);
    if (!n->c) {
        free(n);
        return NULL;
    }
    uint64_t slots = NEAR_GHOST_MIN_SLOTS;
    while (slots < max_bytes / NEAR_GHOST_BYTES_PER_SLOT)
        slots <<= 1;
    n->ghosts = xcalloc(slots, sizeof *n->ghosts);
    n->changed = xcalloc(slots, sizeof *n->changed);
    n->gmask = slots - 1;
    n->st.max_bytes = max_bytes;
    return n;
}

void gw_near_destroy(gw_near_t **np)
{
    gw_near_t *n = *np;
    if (!n)
        return;
    cache_destroy(&n->c);
    free(n->ghosts);
    free(n->changed);
    free(n);
    *np = NULL;
}

/* ==== the stream ============================================================================== */

/* A TOUCH carries the liveness fields only: rebuild the whole record from the resident one. */
static void s_apply_touch(gw_near_t *n, const proto_record_t *t, const cache_view_t *v)
{
    proto_record_t full;
    if (v->negative || s_unpack(t->user_id, t->uid_len, v->value, v->value_len, &full) < 0) {
        /* A heartbeat of a user we hold as absent cannot be rebuilt: drop rather than keep. */
        s_remove(n, t->user_id, t->uid_len);
        return;
    }
    full.last_seen_us = t->last_seen_us;
    full.expires_at_us = t->expires_at_us;
    full.ttl_s = t->ttl_s;
    full.preferred_until_us = t->preferred_until_us;
    full.message_expires_at_us = t->message_expires_at_us;
    full.vis_last_seen_us = t->vis_last_seen_us;
    full.pub_version = t->pub_version;
    proto_record_set_node(&full, t->node_id, t->node_len);
    full.version = t->version;
    s_put_record(n, &full, CACHE_PUT_IF_PRESENT);
}

void gw_near_apply(gw_near_t *n, const proto_change_t *c)
{
    const proto_record_t *r = &c->rec;
    if (r->version > n->seq)
        n->seq = r->version;
    s_note_front(n, n->seq);
    uint64_t *last = &n->changed[s_hash(r->user_id, r->uid_len) & n->gmask];
    if (r->version > *last)
        *last = r->version;
    cache_view_t v;
    if (!cache_peek(n->c, r->user_id, r->uid_len, &v) || v.version >= r->version)
        return; /* not resident (stays so), or already as new */
    n->st.updates++;
    switch (c->kind) {
    case PROTO_CH_SET:
        s_put_record(n, r, CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_DEL:
        s_put_absent(n, r->user_id, r->uid_len, r->version, CACHE_PUT_IF_PRESENT);
        break;
    case PROTO_CH_TOUCH:
        s_apply_touch(n, r, &v);
        break;
    default:
        /* A kind this engine does not know cannot be applied: the entry would go stale. */
        s_remove(n, r->user_id, r->uid_len);
        break;
    }
}

static void s_drop_all(gw_near_t *n)
{
    cache_metrics_t m;
    cache_get_metrics(n->c, &m);
    n->st.drops += m.items;
    cache_clear(n->c);
    s_ghosts_clear(n);
    s_raise_floor(n, n->front); /* every entry and ghost was current through no more than front */
}

void gw_near_live(gw_near_t *n, bool live, uint64_t seq)
{
    if (seq > n->seq)
        n->seq = seq;
    s_note_front(n, n->seq);
    if (n->live && !live)
        s_drop_all(n);
    n->live = live;
}

void gw_near_reset(gw_near_t *n)
{
    s_drop_all(n);
    n->live = false;
    n->seq = n->front = n->floor = 0;
    memset(n->changed, 0, (n->gmask + 1) * sizeof *n->changed);
}

/* ==== reads =================================================================================== */

int gw_near_get(gw_near_t *n, const char *key, size_t klen, uint64_t min_seq, proto_record_t *out)
{
    if (!n->live || n->seq < min_seq) {
        n->st.bypassed++;
        return GW_NEAR_BYPASS;
    }
    cache_view_t v;
    if (!cache_get(n->c, key, klen, &v)) {
        n->st.misses++;
        return GW_NEAR_MISS;
    }
    if (v.negative) {
        n->st.hits++;
        return GW_NEAR_ABSENT;
    }
    if (s_unpack(key, klen, v.value, v.value_len, out) < 0) {
        /* Cannot happen for what s_pack wrote; never serve what cannot be read back. */
        s_remove(n, key, klen);
        n->st.misses++;
        return GW_NEAR_MISS;
    }
    n->st.hits++;
    return GW_NEAR_HIT;
}

int gw_near_fill(gw_near_t *n, const char *key, size_t klen, const proto_record_t *r, uint64_t as_of,
                 uint64_t min_seq, proto_record_t *out)
{
    uint64_t h = s_hash(key, klen);
    /* The answer is latest(k, Y) for some Y >= as_of; when nothing of k changed in (as_of, seq] it
     * is at least latest(k, seq) too. */
    bool current = as_of >= n->seq || !s_changed_after(n, h, as_of);
    uint64_t fl = s_floor_of(n, h);
    if (as_of < fl && !(current && fl <= n->seq)) {
        n->st.behind++;
        return GW_NEAR_BEHIND;
    }
    uint64_t ver = r ? r->version : as_of;
    cache_view_t v;
    bool resident = n->live && cache_peek(n->c, key, klen, &v);
    bool entry_newer = resident && v.version > ver;
    if (entry_newer && !(v.negative && !r) && n->seq < min_seq) {
        /* The entry would stand in for the answer, but it is only known to be current through the
         * stream, which has not reached every write this process acknowledged: it may predate one
         * (a delete through another thread), and the answer may be older than the entry (a node
         * behind) -- or newer: "not found" as of as_of says no more than Y >= as_of. Neither can
         * be served; ask again (the node's as_of or this stream catches up). */
        n->st.behind++;
        return GW_NEAR_BEHIND;
    }
    n->st.fills++;
    s_note_front(n, as_of);
    if (entry_newer) {
        /* Another answer or the stream got here first with something newer: serve that. */
        if (v.negative)
            return GW_NEAR_SERVE_ABSENT;
        if (s_unpack(key, klen, v.value, v.value_len, out) == 0)
            return GW_NEAR_SERVE;
        s_remove(n, key, klen); /* cannot happen; the entry was newer than the answer: ask again */
        n->st.behind++;
        return GW_NEAR_BEHIND;
    }
    /* Becomes an entry only when nothing the stream applied can be missing from it (a resident entry
     * is current through seq already, so a newer answer may always replace it). */
    bool kept = false;
    if (n->live && (resident || current)) {
        int rc = r ? s_put_record(n, r, 0) : s_put_absent(n, key, klen, as_of, 0);
        kept = rc == CACHE_ADDED || rc == CACHE_UPDATED || rc == CACHE_SAME;
    }
    if (kept)
        n->st.fills_kept++;
    else /* served and not kept: its ghost says as of when. A record at version V that a node read
          * through to the store is latest(k, Y) for a Y beyond as_of, but then nothing of k changed
          * in (V, Y]: it is latest(k, V) too, so max(as_of, V) bounds what was served. An absent
          * answer has no such version; its as_of is the key's own (the caller takes a multi-get's
          * absent entry: the store's sequence for a read-through "not found"), so it bounds it. */
        s_ghost_put(n, h, MAX(as_of, ver));
    if (!r)
        return GW_NEAR_SERVE_ABSENT;
    if (out != r)
        *out = *r;
    return GW_NEAR_SERVE;
}

void gw_near_wrote(gw_near_t *n, const proto_record_t *r)
{
    cache_view_t v;
    if (!n->live || !cache_peek(n->c, r->user_id, r->uid_len, &v) || v.version >= r->version)
        return;
    /* The resident entry is current through seq; the write is newer than it: replacing keeps it
     * current (a change between would have made the entry newer than the write). */
    n->st.updates++;
    s_note_front(n, r->version);
    s_put_record(n, r, CACHE_PUT_IF_PRESENT);
}

void gw_near_deleted(gw_near_t *n, const char *key, size_t klen, uint64_t as_of)
{
    cache_view_t v;
    if (!n->live || !cache_peek(n->c, key, klen, &v) || v.version >= as_of)
        return;
    /* As for a written record: the user is absent at as_of, newer than the entry, and the stream
     * brings whatever comes after it (a SET replaces the absent entry, a TOUCH drops it). */
    n->st.updates++;
    s_note_front(n, as_of);
    s_put_absent(n, key, klen, as_of, CACHE_PUT_IF_PRESENT);
}

/* ==== state =================================================================================== */

uint64_t gw_near_seq(const gw_near_t *n)
{
    return n->seq;
}

bool gw_near_is_live(const gw_near_t *n)
{
    return n->live;
}

uint64_t gw_near_floor(const gw_near_t *n)
{
    return n->floor;
}

void gw_near_get_stats(const gw_near_t *n, gw_near_stats_t *out)
{
    cache_metrics_t m;
    cache_get_metrics(n->c, &m);
    *out = n->st;
    out->items = m.items;
    out->bytes = m.cost;
}
