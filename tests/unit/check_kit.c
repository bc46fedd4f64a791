/* check_kit.c -- Check suites for the kit the process shells share: the id-keyed table
 * (common/idtab.c), the byte-bounded change window (common/seqwin.c), the message dispatcher
 * (proto/dispatch.c) and the ZMQ_FD poll loop (common/zloop.c).
 *
 * The loop is tested on real ZeroMQ sockets (inproc PAIRs) and a real eventfd, including the case
 * it exists for: a send that consumes the ZMQ_FD edge of a message arriving meanwhile.
 */
#include "dispatch.h"
#include "idtab.h"
#include "proto.h"
#include "seqwin.h"
#include "util.h"
#include "zloop.h"
#include "zutil.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ==== idtab ================================================================================== */

typedef struct item {
    idtab_link_t link;
    int value;
} item_t;

START_TEST(test_idtab_add_find_take)
{
    idtab_t t;
    idtab_init(&t);
    ck_assert_ptr_null(idtab_find(&t, 1));
    ck_assert_ptr_null(idtab_take(&t, 1));
    enum { N = 10000 };
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].link.id = (uint64_t)i + 1;
        items[i].value = i;
        idtab_add(&t, &items[i].link);
    }
    ck_assert_uint_eq(idtab_count(&t), N);
    ck_assert_uint_ge(t.size, 2 * N); /* grew: never more than half full */
    for (int i = 0; i < N; i++) {
        idtab_link_t *l = idtab_find(&t, (uint64_t)i + 1);
        ck_assert_ptr_eq(l, &items[i].link);
        ck_assert_int_eq(IDTAB_ENTRY(l, item_t, link)->value, i);
    }
    ck_assert_ptr_null(idtab_find(&t, N + 1));
    ck_assert_ptr_null(idtab_find(&t, 0));
    for (int i = 0; i < N; i += 2)
        ck_assert_ptr_eq(idtab_take(&t, (uint64_t)i + 1), &items[i].link);
    ck_assert_uint_eq(idtab_count(&t), N / 2);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(idtab_find(&t, (uint64_t)i + 1), i % 2 ? &items[i].link : NULL);
    idtab_fini(&t);
    ck_assert_uint_eq(idtab_count(&t), 0);
    ck_assert_ptr_null(idtab_find(&t, 2));
    /* Usable again after fini. */
    idtab_add(&t, &items[0].link);
    ck_assert_ptr_eq(idtab_find(&t, 1), &items[0].link);
    idtab_fini(&t);
    free(items);
}
END_TEST

START_TEST(test_idtab_shared_ids)
{
    /* Several entries with one id (names whose hashes collide): newest first, each reachable,
     * each removable by itself. */
    idtab_t t;
    idtab_init(&t);
    item_t a = {.link.id = 42, .value = 1}, b = {.link.id = 42, .value = 2}, c = {.link.id = 42, .value = 3};
    item_t other = {.link.id = 43, .value = 9};
    idtab_add(&t, &a.link);
    idtab_add(&t, &other.link);
    idtab_add(&t, &b.link);
    idtab_add(&t, &c.link);
    idtab_link_t *l = idtab_find(&t, 42);
    ck_assert_ptr_eq(l, &c.link);
    l = idtab_find_next(l);
    ck_assert_ptr_eq(l, &b.link);
    l = idtab_find_next(l);
    ck_assert_ptr_eq(l, &a.link);
    ck_assert_ptr_null(idtab_find_next(l));
    ck_assert(idtab_remove(&t, &b.link));
    ck_assert(!idtab_remove(&t, &b.link)); /* not linked any more */
    ck_assert_ptr_eq(idtab_find_next(idtab_find(&t, 42)), &a.link);
    ck_assert_ptr_eq(idtab_take(&t, 42), &c.link);
    ck_assert_ptr_eq(idtab_take(&t, 42), &a.link);
    ck_assert_ptr_null(idtab_take(&t, 42));
    ck_assert_ptr_eq(idtab_find(&t, 43), &other.link);
    ck_assert_uint_eq(idtab_count(&t), 1);
    idtab_fini(&t);
}
END_TEST

START_TEST(test_idtab_iterate_and_remove)
{
    idtab_t t;
    idtab_init(&t);
    enum { N = 3000 };
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].link.id = (uint64_t)(uintptr_t)&items[i]; /* pointer keys */
        items[i].value = i;
        idtab_add(&t, &items[i].link);
    }
    /* Visit each entry once, removing every odd one as it is visited. */
    int *seen = calloc(N, sizeof *seen);
    idtab_iter_t it;
    idtab_iter_init(&it, &t);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        item_t *x = IDTAB_ENTRY(l, item_t, link);
        seen[x->value]++;
        if (x->value % 2)
            ck_assert(idtab_remove(&t, l));
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], 1);
    ck_assert_uint_eq(idtab_count(&t), N / 2);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(idtab_find(&t, (uint64_t)(uintptr_t)&items[i]), i % 2 ? NULL : &items[i].link);
    /* Emptying a table: iterate and remove everything. */
    idtab_iter_init(&it, &t);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));)
        ck_assert(idtab_remove(&t, l));
    ck_assert_uint_eq(idtab_count(&t), 0);
    idtab_iter_init(&it, &t);
    ck_assert_ptr_null(idtab_iter_next(&it));
    idtab_fini(&t);
    free(seen);
    free(items);
}
END_TEST

/* ==== seqwin ================================================================================= */

static size_t s_item_cost(size_t len)
{
    return sizeof(seqwin_item_t) + len;
}

START_TEST(test_seqwin_bounded)
{
    seqwin_t w;
    char data[100];
    memset(data, 'x', sizeof data);
    seqwin_init(&w, 3 * s_item_cost(100), 7);
    ck_assert_uint_eq(seqwin_start(&w), 7);
    ck_assert_ptr_null(seqwin_after(&w, 0));
    for (uint64_t s = 8; s <= 10; s++)
        seqwin_add(&w, s, s, 1, data, sizeof data);
    ck_assert_uint_eq(seqwin_bytes(&w), 3 * s_item_cost(100));
    ck_assert_uint_eq(seqwin_start(&w), 7); /* nothing dropped yet */
    seqwin_add(&w, 11, 11, 1, data, sizeof data);
    /* The oldest (8) went; everything after 8 is still held. */
    ck_assert_uint_eq(seqwin_start(&w), 8);
    ck_assert_uint_eq(seqwin_bytes(&w), 3 * s_item_cost(100));
    const seqwin_item_t *it = seqwin_after(&w, 0);
    ck_assert_uint_eq(it->first, 9);
    ck_assert_uint_eq(seqwin_after(&w, 9)->first, 10);
    ck_assert_uint_eq(seqwin_after(&w, 10)->first, 11);
    ck_assert_ptr_null(seqwin_after(&w, 11));
    /* Ranges: an item is after S when its last sequence is. */
    seqwin_add(&w, 12, 20, 2, data, 10);
    ck_assert_uint_eq(seqwin_after(&w, 15)->first, 12);
    ck_assert_uint_eq(seqwin_after(&w, 15)->kind, 2);
    ck_assert_uint_eq(seqwin_after(&w, 15)->len, 10);
    /* An item larger than the whole budget: everything older goes, the newest stays. */
    char *big = calloc(1, 1000);
    big[999] = 'z';
    seqwin_add(&w, 21, 21, 3, big, 1000);
    ck_assert_uint_eq(seqwin_start(&w), 20);
    ck_assert_uint_eq(seqwin_bytes(&w), s_item_cost(1000));
    it = seqwin_after(&w, 0);
    ck_assert_uint_eq(it->first, 21);
    ck_assert_ptr_null(it->next);
    big[999] = 'q'; /* copied in */
    ck_assert_int_eq(it->data[999], 'z');
    free(big);
    seqwin_fini(&w);
}
END_TEST

START_TEST(test_seqwin_clear_and_raise)
{
    seqwin_t w;
    seqwin_init(&w, 1 << 20, 0);
    seqwin_add(&w, 1, 1, 1, "a", 1);
    seqwin_add(&w, 2, 2, 1, "b", 1);
    seqwin_raise_start(&w, 1);
    ck_assert_uint_eq(seqwin_start(&w), 1);
    seqwin_raise_start(&w, 0); /* only ever raised */
    ck_assert_uint_eq(seqwin_start(&w), 1);
    ck_assert_uint_eq(seqwin_after(&w, 1)->data[0], 'b');
    seqwin_clear(&w, 50);
    ck_assert_uint_eq(seqwin_start(&w), 50);
    ck_assert_uint_eq(seqwin_bytes(&w), 0);
    ck_assert_ptr_null(seqwin_after(&w, 0));
    seqwin_add(&w, 51, 51, 1, "c", 1);
    ck_assert_uint_eq(seqwin_after(&w, 50)->data[0], 'c');
    seqwin_fini(&w);
}
END_TEST

/* ==== dispatch =============================================================================== */

typedef struct drec {
    int gets, puts, others, malformed, batch_begin, batch_end;
    uint64_t last_rid, malformed_rid;
    bool malformed_has_rid, last_in_batch;
    char why[96];
    char ident[16];
    char key[16];
    proto_record_t *stolen;
} drec_t;

static void d_on_get(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    drec_t *r = ctx;
    r->gets++;
    r->last_rid = m->rid;
    r->last_in_batch = in->in_batch;
    snprintf(r->key, sizeof r->key, "%.*s", (int)m->key.len, m->key.p);
    snprintf(r->ident, sizeof r->ident, "%.*s", (int)in->ident_len, in->ident ? (const char *)in->ident : "");
    /* The raw bytes are the message's own: they decode to the same message. */
    proto_msg_t again;
    ck_assert_int_eq(proto_decode(in->raw, in->raw_len, &again), PROTO_DEC_OK);
    ck_assert_uint_eq(again.rid, m->rid);
    proto_msg_fini(&again);
}

static void d_on_put(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    drec_t *r = ctx;
    r->puts++;
    r->stolen = m->recs; /* a handler may take an array out of the message */
    m->recs = NULL;
}

static void d_on_other(void *ctx, const dispatch_in_t *in, proto_msg_t *m)
{
    ((drec_t *)ctx)->others++;
}

static void d_on_malformed(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid)
{
    drec_t *r = ctx;
    r->malformed++;
    r->malformed_has_rid = has_rid;
    r->malformed_rid = rid;
    snprintf(r->why, sizeof r->why, "%s", why);
}

static void d_on_batch(void *ctx, const dispatch_in_t *in, bool begin)
{
    drec_t *r = ctx;
    if (begin)
        r->batch_begin++;
    else
        r->batch_end++;
}

static const dispatch_t s_routed = {
    .routed = true,
    .on = {[PROTO_GET] = d_on_get, [PROTO_PUT] = d_on_put},
    .on_other = d_on_other,
    .on_malformed = d_on_malformed,
    .on_batch = d_on_batch,
};

static void s_frame(zmq_msg_t *f, const void *p, size_t n)
{
    zmq_msg_init_size(f, n);
    if (n)
        memcpy(zmq_msg_data(f), p, n);
}

/* Dispatch [ident?, bytes] on table d. */
static void s_feed(const dispatch_t *d, drec_t *r, const char *ident, const proto_buf_t *b)
{
    zmq_msg_t f[2];
    int n = 0;
    if (ident)
        s_frame(&f[n++], ident, strlen(ident));
    s_frame(&f[n++], b->data, b->len);
    dispatch_frames(d, r, NULL, f, n);
    zu_close_frames(f, n);
}

START_TEST(test_dispatch_types)
{
    drec_t r = {0};
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_get(&b, PROTO_GET, 7, "alice", 5);
    s_feed(&s_routed, &r, "peer1", &b);
    ck_assert_int_eq(r.gets, 1);
    ck_assert_uint_eq(r.last_rid, 7);
    ck_assert_str_eq(r.key, "alice");
    ck_assert_str_eq(r.ident, "peer1");
    ck_assert(!r.last_in_batch);
    ck_assert_int_eq(r.batch_begin, 0);
    /* A type without a handler of its own goes to on_other. */
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, 8);
    s_feed(&s_routed, &r, "peer1", &b);
    ck_assert_int_eq(r.others, 1);
    /* A handler that takes an array out of the message owns it (no double free under ASan). */
    proto_record_t rec;
    memset(&rec, 0, sizeof rec);
    proto_record_set_uid(&rec, "bob", 3);
    proto_record_set_node(&rec, "n", 1);
    proto_record_set_msg(&rec, "", 0);
    rec.ttl_s = 10;
    proto_buf_reset(&b);
    proto_enc_records_cmd(&b, PROTO_PUT, 9, &rec, 1);
    s_feed(&s_routed, &r, "peer1", &b);
    ck_assert_int_eq(r.puts, 1);
    ck_assert_ptr_nonnull(r.stolen);
    ck_assert_str_eq(r.stolen[0].user_id, "bob");
    free(r.stolen);
    /* No handler and no on_other: dropped without a word. */
    static const dispatch_t bare = {.on = {[PROTO_GET] = d_on_get}};
    drec_t r2 = {0};
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_PING, 1);
    s_feed(&bare, &r2, NULL, &b);
    ck_assert_int_eq(r2.gets + r2.others + r2.malformed, 0);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 3, "x", 1);
    s_feed(&bare, &r2, NULL, &b);
    ck_assert_int_eq(r2.gets, 1);
    ck_assert_str_eq(r2.ident, "");
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_dispatch_batch)
{
    drec_t r = {0};
    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t b, frame;
    proto_buf_init(&b);
    proto_buf_init(&frame);
    proto_enc_get(&b, PROTO_GET, 1, "a", 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_simple(&b, PROTO_STATS, 2);
    proto_batch_add(&bt, b.data, b.len);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 3, "c", 1);
    proto_batch_add(&bt, b.data, b.len);
    proto_batch_encode(&bt, &frame);
    s_feed(&s_routed, &r, "gw", &frame);
    ck_assert_int_eq(r.batch_begin, 1);
    ck_assert_int_eq(r.batch_end, 1);
    ck_assert_int_eq(r.gets, 2);
    ck_assert_int_eq(r.others, 1);
    ck_assert_uint_eq(r.last_rid, 3); /* in order */
    ck_assert_str_eq(r.key, "c");
    ck_assert_str_eq(r.ident, "gw");
    ck_assert(r.last_in_batch);
    ck_assert_int_eq(r.malformed, 0);
    /* A BATCH inside a BATCH is malformed (and not answerable); the other parts still run. */
    proto_batch_t outer;
    proto_batch_init(&outer);
    proto_batch_add(&outer, frame.data, frame.len);
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 4, "d", 1);
    proto_batch_add(&outer, b.data, b.len);
    proto_buf_t nested;
    proto_buf_init(&nested);
    proto_batch_encode(&outer, &nested);
    memset(&r, 0, sizeof r);
    s_feed(&s_routed, &r, "gw", &nested);
    ck_assert_int_eq(r.malformed, 1);
    ck_assert_str_eq(r.why, "nested batch");
    ck_assert(!r.malformed_has_rid);
    ck_assert_int_eq(r.gets, 1);
    ck_assert_uint_eq(r.last_rid, 4);
    proto_batch_fini(&outer);
    proto_batch_fini(&bt);
    proto_buf_fini(&nested);
    proto_buf_fini(&frame);
    proto_buf_fini(&b);
}
END_TEST

START_TEST(test_dispatch_malformed)
{
    drec_t r = {0};
    proto_buf_t b;
    proto_buf_init(&b);
    /* A readable header naming request 77, a body that is not a GET: answerable. */
    proto_enc_t e;
    proto_enc_init(&e, &b);
    proto_enc_header(&e, 4, PROTO_GET, 77);
    proto_enc_u64(&e, 5);
    s_feed(&s_routed, &r, "p", &b);
    ck_assert_int_eq(r.malformed, 1);
    ck_assert(r.malformed_has_rid);
    ck_assert_uint_eq(r.malformed_rid, 77);
    ck_assert_str_ne(r.why, "");
    /* Garbage: not answerable. */
    proto_buf_reset(&b);
    proto_buf_append(&b, "\xc1\xc1", 2);
    s_feed(&s_routed, &r, "p", &b);
    ck_assert_int_eq(r.malformed, 2);
    ck_assert(!r.malformed_has_rid);
    /* Wrong framing: a routed table fed [message] alone, an empty or an over-long identity, and a
     * message zu_recv refused (n == 0). None reaches a handler. */
    proto_buf_reset(&b);
    proto_enc_get(&b, PROTO_GET, 5, "a", 1);
    s_feed(&s_routed, &r, NULL, &b);
    ck_assert_int_eq(r.malformed, 3);
    ck_assert(!r.malformed_has_rid);
    ck_assert_str_eq(r.why, "unexpected framing");
    s_feed(&s_routed, &r, "", &b);
    ck_assert_int_eq(r.malformed, 4);
    char longid[300];
    memset(longid, 'i', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    s_feed(&s_routed, &r, longid, &b);
    ck_assert_int_eq(r.malformed, 5);
    dispatch_frames(&s_routed, &r, NULL, NULL, 0);
    ck_assert_int_eq(r.malformed, 6);
    ck_assert_str_eq(r.why, "too many frames");
    ck_assert_int_eq(r.gets, 0);
    /* dispatch_bytes: a message already out of its frames. */
    dispatch_in_t in = {.raw = b.data, .raw_len = b.len, .ident = (const uint8_t *)"q", .ident_len = 1};
    dispatch_bytes(&s_routed, &r, &in);
    ck_assert_int_eq(r.gets, 1);
    ck_assert_str_eq(r.ident, "q");
    proto_buf_fini(&b);
}
END_TEST

/* ==== zloop ================================================================================== */

typedef struct lrec {
    int msgs, fds, drains, turns, afters;
    int drain_more; /* the drainer reports "stopped at my bound" this many times */
    uint64_t deadline; /* what the turn hook returns */
    uint64_t last_timeout, last_waited;
    zloop_t *loop;
    int stop_after; /* set *stopflag after this many messages (0: never) */
    volatile sig_atomic_t *stopflag;
} lrec_t;

static void l_on_msg(void *arg, void *sock, zmq_msg_t *frames, int n)
{
    lrec_t *r = arg;
    r->msgs++;
    if (r->stop_after && r->msgs == r->stop_after)
        *r->stopflag = 1;
}

static void l_on_fd(void *arg, int fd)
{
    lrec_t *r = arg;
    uint64_t v;
    ck_assert_int_eq(read(fd, &v, sizeof v), (ssize_t)sizeof v);
    r->fds++;
}

static bool l_drain(void *arg)
{
    lrec_t *r = arg;
    r->drains++;
    if (r->drain_more > 0) {
        r->drain_more--;
        return true;
    }
    return false;
}

static uint64_t l_turn(void *arg, uint64_t now)
{
    lrec_t *r = arg;
    r->turns++;
    return r->deadline ? r->deadline : ZLOOP_NEVER;
}

static void l_woke(void *arg, uint64_t waited, uint64_t timeout)
{
    lrec_t *r = arg;
    r->last_waited = waited;
    r->last_timeout = timeout;
}

static void l_after(void *arg)
{
    ((lrec_t *)arg)->afters++;
}

typedef struct lenv {
    void *zctx, *a, *b; /* a PAIR: tests send on a; the loop reads b */
    zloop_t *loop;
    lrec_t r;
} lenv_t;

static void s_lenv_hooks(lenv_t *e, const char *name, uint64_t max_wait, void (*after)(void *))
{
    memset(e, 0, sizeof *e);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://kit-%s", name);
    e->zctx = zmq_ctx_new();
    e->a = zu_socket(e->zctx, ZMQ_PAIR, 100000, 100000);
    e->b = zu_socket(e->zctx, ZMQ_PAIR, 100000, 100000);
    ck_assert_int_eq(zmq_bind(e->a, ep), 0);
    ck_assert_int_eq(zmq_connect(e->b, ep), 0);
    zloop_hooks_t h = {.arg = &e->r, .turn = l_turn, .woke = l_woke, .after = after};
    e->loop = zloop_new(&h, max_wait);
    e->r.loop = e->loop;
    ck_assert_int_eq(zloop_add_socket(e->loop, e->b, l_on_msg, &e->r), 0);
}

static void s_lenv(lenv_t *e, const char *name, uint64_t max_wait)
{
    s_lenv_hooks(e, name, max_wait, l_after);
}

static void s_lenv_fini(lenv_t *e)
{
    zloop_destroy(&e->loop);
    ck_assert_ptr_null(e->loop);
    zmq_close(e->a);
    zmq_close(e->b);
    zmq_ctx_term(e->zctx);
}

static void s_send_n(void *sock, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(zmq_send(sock, "m", 1, 0), 1);
}

START_TEST(test_zloop_drains_to_eagain)
{
    lenv_t e;
    s_lenv(&e, "drain", 5000);
    s_send_n(e.a, 10);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0); /* the first turn never sleeps */
    ck_assert_uint_eq(e.r.last_timeout, 0);
    ck_assert_int_eq(e.r.msgs, 10);
    ck_assert_int_eq(e.r.turns, 1);
    ck_assert_int_eq(e.r.afters, 1);
    /* Nothing left: the next wait is the timer's; a message arriving wakes it. */
    e.r.deadline = util_mono_ms() + 5000;
    s_send_n(e.a, 1);
    uint64_t t0 = util_mono_ms();
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.msgs, 11);
    ck_assert_uint_gt(e.r.last_timeout, 1000);
    ck_assert_uint_lt(util_mono_ms() - t0, 1000);
    s_lenv_fini(&e);
}
END_TEST

START_TEST(test_zloop_bound_then_no_sleep)
{
    lenv_t e;
    s_lenv(&e, "bound", 10000);
    s_send_n(e.a, ZLOOP_DRAIN_MAX + 10);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.msgs, ZLOOP_DRAIN_MAX); /* the bound */
    /* The rest is read on the next turn without sleeping, timer or not. */
    e.r.deadline = util_mono_ms() + 10000;
    uint64_t t0 = util_mono_ms();
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_uint_eq(e.r.last_timeout, 0);
    ck_assert_int_eq(e.r.msgs, ZLOOP_DRAIN_MAX + 10);
    ck_assert_uint_lt(util_mono_ms() - t0, 1000);
    s_lenv_fini(&e);
}
END_TEST

START_TEST(test_zloop_timer)
{
    lenv_t e;
    s_lenv(&e, "timer", 10000);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0); /* the first turn: no wait */
    e.r.deadline = util_mono_ms() + 50;
    uint64_t t0 = util_mono_ms();
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    uint64_t took = util_mono_ms() - t0;
    ck_assert_uint_le(e.r.last_timeout, 50);
    ck_assert_uint_ge(took, 40);
    ck_assert_uint_lt(took, 2000);
    /* A deadline in the past: no wait. */
    e.r.deadline = 1;
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_uint_eq(e.r.last_timeout, 0);
    /* No deadline: max_wait bounds the wait. */
    zloop_t *short_loop = zloop_new(&(zloop_hooks_t){.arg = &e.r, .turn = l_turn, .woke = l_woke}, 30);
    e.r.deadline = 0;
    ck_assert_int_eq(zloop_turn(short_loop, NULL), 0); /* first: no wait */
    ck_assert_int_eq(zloop_turn(short_loop, NULL), 0);
    ck_assert_uint_eq(e.r.last_timeout, 30);
    zloop_destroy(&short_loop);
    s_lenv_fini(&e);
}
END_TEST

START_TEST(test_zloop_post_send_check)
{
    lenv_t e;
    s_lenv(&e, "postsend", 10000);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0); /* drained: the edge is armed */
    /* A message arrives, then we send on the same socket: the send consumes the ZMQ_FD edge. */
    s_send_n(e.a, 1);
    ck_assert_int_eq(zmq_send(e.b, "r", 1, ZMQ_DONTWAIT), 1);
    struct pollfd p = {.fd = zu_fd(e.b), .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0); /* the situation this loop guards against */
    zloop_sent(e.loop, e.b);
    e.r.deadline = util_mono_ms() + 10000;
    uint64_t t0 = util_mono_ms();
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_uint_eq(e.r.last_timeout, 0); /* ZMQ_EVENTS said a message waits: no sleep */
    ck_assert_int_eq(e.r.msgs, 1);
    ck_assert_uint_lt(util_mono_ms() - t0, 1000);
    /* zloop_sent on a socket the loop does not know is ignored. */
    zloop_sent(e.loop, e.a);
    s_lenv_fini(&e);
}
END_TEST

START_TEST(test_zloop_fd_and_drainer)
{
    lenv_t e;
    s_lenv(&e, "fd", 10000);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(efd, 0);
    ck_assert_int_eq(zloop_add_fd(e.loop, efd, l_on_fd, &e.r), 0);
    void *c = zu_socket(e.zctx, ZMQ_PAIR, 0, 0);
    ck_assert_int_eq(zloop_add_drainer(e.loop, &c, 1, l_drain, &e.r), 0);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.fds, 0); /* not readable: not called */
    ck_assert_int_eq(e.r.drains, 1); /* drainers run every turn */
    uint64_t one = 1;
    ck_assert_int_eq(write(efd, &one, sizeof one), (ssize_t)sizeof one);
    e.r.deadline = util_mono_ms() + 10000;
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.fds, 1);
    ck_assert_int_eq(e.r.drains, 2);
    /* A drainer that stopped at its own bound: the next turn does not sleep. */
    e.r.drain_more = 1;
    ck_assert_int_eq(write(efd, &one, sizeof one), (ssize_t)sizeof one);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.drains, 3);
    ck_assert_int_eq(zloop_turn(e.loop, NULL), 0);
    ck_assert_uint_eq(e.r.last_timeout, 0);
    ck_assert_int_eq(e.r.drains, 4);
    /* Sources beyond the limit are refused. */
    zloop_t *full = zloop_new(NULL, 10);
    for (int i = 0; i < ZLOOP_SOURCES_MAX; i++)
        ck_assert_int_eq(zloop_add_fd(full, efd, l_on_fd, &e.r), 0);
    ck_assert_int_eq(zloop_add_fd(full, efd, l_on_fd, &e.r), -1);
    ck_assert_int_eq(zloop_add_fd(full, -1, l_on_fd, &e.r), -1);
    zloop_destroy(&full);
    zmq_close(c);
    close(efd);
    s_lenv_fini(&e);
}
END_TEST

START_TEST(test_zloop_stop)
{
    lenv_t e;
    s_lenv(&e, "stop", 10000);
    volatile sig_atomic_t stop = 0;
    e.r.stopflag = &stop;
    e.r.stop_after = 5;
    s_send_n(e.a, 20);
    /* The stop flag ends a drain between two messages, and the run after the turn. */
    ck_assert_int_eq(zloop_run(e.loop, &stop), 0);
    ck_assert_int_eq(e.r.msgs, 5);
    ck_assert_int_eq(e.r.turns, 1);
    /* A zloop_stop made before a run ends that run before its first turn. */
    stop = 0;
    e.r.stop_after = 0;
    zloop_stop(e.loop);
    ck_assert_int_eq(zloop_run(e.loop, &stop), 0);
    ck_assert_int_eq(e.r.turns, 1);
    ck_assert_int_eq(e.r.msgs, 5);
    s_lenv_fini(&e);
}
END_TEST

static void s_stop_hook_after(void *arg)
{
    lrec_t *r = arg;
    r->afters++;
    if (r->msgs >= 20)
        zloop_stop(r->loop);
}

START_TEST(test_zloop_run_until_stopped)
{
    /* zloop_stop from a hook: the run ends after that turn. */
    lenv_t e;
    s_lenv_hooks(&e, "run", 50, s_stop_hook_after);
    s_send_n(e.a, 20);
    ck_assert_int_eq(zloop_run(e.loop, NULL), 0);
    ck_assert_int_eq(e.r.msgs, 20);
    s_lenv_fini(&e);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("kit");
    TCase *tc = tcase_create("idtab");
    tcase_add_test(tc, test_idtab_add_find_take);
    tcase_add_test(tc, test_idtab_shared_ids);
    tcase_add_test(tc, test_idtab_iterate_and_remove);
    suite_add_tcase(s, tc);
    tc = tcase_create("seqwin");
    tcase_add_test(tc, test_seqwin_bounded);
    tcase_add_test(tc, test_seqwin_clear_and_raise);
    suite_add_tcase(s, tc);
    tc = tcase_create("dispatch");
    tcase_add_test(tc, test_dispatch_types);
    tcase_add_test(tc, test_dispatch_batch);
    tcase_add_test(tc, test_dispatch_malformed);
    suite_add_tcase(s, tc);
    tc = tcase_create("zloop");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_zloop_drains_to_eagain);
    tcase_add_test(tc, test_zloop_bound_then_no_sleep);
    tcase_add_test(tc, test_zloop_timer);
    tcase_add_test(tc, test_zloop_post_send_check);
    tcase_add_test(tc, test_zloop_fd_and_drainer);
    tcase_add_test(tc, test_zloop_stop);
    tcase_add_test(tc, test_zloop_run_until_stopped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
