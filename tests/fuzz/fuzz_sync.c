/* fuzz_sync.c -- the change-stream client (sync/sync_client.c) driven through its state machine by
 * a sequence of fuzzer-chosen events: stream messages (raw frames or well-formed CHANGES / HUGZ
 * built from the input), catch-up replies (raw, or well-formed and answering the client's latest
 * request id), timer ticks with the clock pushed forward, and forced resyncs.
 *
 * Messages reach the client through sync_client_input(), the same path sync_client_handle() takes
 * for a received message, so no publisher is needed. The client's DEALER is connected to a ROUTER
 * bound here (inproc) so its catch-up requests really leave; the target reads them back to learn
 * the request id to answer and checks that each is a well-formed CATCHUP.
 *
 * Oracles besides the sanitizers:
 *   - every change handed to apply() is well formed;
 *   - until the first reset (a snapshot), applied sequence numbers strictly increase whatever the
 *     store sends (s_apply_list guards this), and the client's sequence never goes backwards
 *     except across a snapshot reply;
 *   - the state is one of the four, and every catch-up request decodes.
 * FUZZ_SYNC_STRICT=1 also requires strictly increasing sequences across snapshots (the handler
 * contract in sync_client.h); a store that lies can break that, so it is for exploration only.
 */
#include "fuzz_common.h"
#include "proto.h"
#include "sync_client.h"
#include "util.h"
#include "zutil.h"

#include <unistd.h>
#include <zmq.h>

#define PUB_EP "inproc://fuzz-sync-pub"
#define CMD_EP "inproc://fuzz-sync-cmd"
#define MAX_OPS 96

static void *s_zctx, *s_pub, *s_router;
static bool s_strict;

typedef struct harness {
    bool resets_seen;
    bool in_snapshot_reply; /* the event being fed is a catch-up reply in a snapshot mode */
    uint64_t last_applied;  /* highest incremental sequence applied since the last reset */
    uint64_t applies, resets, states;
    uint64_t last_rid;      /* request id of the client's latest catch-up */
    bool have_rid;
} harness_t;

static harness_t H;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    s_strict = getenv("FUZZ_SYNC_STRICT") && strcmp(getenv("FUZZ_SYNC_STRICT"), "1") == 0;
    s_zctx = zmq_ctx_new();
    /* Closed sockets are destroyed by libzmq's reaper thread; on a busy machine it can fall
     * hundreds of clients behind the fuzzer, so allow many sockets (and wait below if needed). */
    zmq_ctx_set(s_zctx, ZMQ_MAX_SOCKETS, 16384);
    s_pub = zu_socket(s_zctx, ZMQ_PUB, 0, 0);
    s_router = zu_socket(s_zctx, ZMQ_ROUTER, 0, 0);
    if (!s_pub || !s_router || zmq_bind(s_pub, PUB_EP) < 0 || zmq_bind(s_router, CMD_EP) < 0) {
        fprintf(stderr, "fuzz_sync: zmq setup: %s\n", zmq_strerror(errno));
        abort();
    }
    return 0;
}

static void on_apply(void *ctx, const proto_change_t *c)
{
    harness_t *h = ctx;
    h->applies++;
    FZ_CHECK(c->kind >= PROTO_CH_SET && c->kind <= PROTO_CH_TOUCH);
    FZ_CHECK(c->rec.version > 0 && util_valid_user_id(c->rec.user_id, c->rec.uid_len));
    if (h->in_snapshot_reply)
        return; /* snapshot records come in key order */
    if (!h->resets_seen || s_strict) {
        if (c->rec.version <= h->last_applied)
            fprintf(stderr, "apply seq %llu after %llu\n", (unsigned long long)c->rec.version,
                    (unsigned long long)h->last_applied);
        FZ_CHECK(c->rec.version > h->last_applied);
    }
    if (c->rec.version > h->last_applied)
        h->last_applied = c->rec.version;
}

static void on_reset(void *ctx)
{
    harness_t *h = ctx;
    h->resets++;
    h->resets_seen = true;
    h->last_applied = 0;
}

static void on_state(void *ctx, int state)
{
    harness_t *h = ctx;
    h->states++;
    FZ_CHECK(state >= SYNC_CATCHING_UP && state <= SYNC_UPSTREAM_DOWN);
}

/* Read the catch-up requests the client sent; remember the last request id. */
static void s_drain_router(void)
{
    zmq_msg_t frames[ZU_FRAMES_MAX];
    int n;
    /* Let the publisher process its command mailbox too: closed subscribers' pipes are torn down
     * there, and until they are the closed sockets cannot be reaped. */
    zu_readable(s_pub);
    for (;;) {
        if (zu_recv(s_router, frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EINTR)
                continue; /* libFuzzer's SIGALRM (-timeout) interrupts the wait */
            FZ_CHECK(errno == EAGAIN);
            return;
        }
        FZ_CHECK(n == 2);
        proto_msg_t m;
        int rc = proto_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), &m);
        FZ_CHECK(rc == PROTO_DEC_OK && m.type == PROTO_CATCHUP);
        H.last_rid = m.rid;
        H.have_rid = true;
        proto_msg_fini(&m);
        zu_close_frames(frames, n);
    }
}

static void s_feed(sync_client_t *sc, bool sub, const void *topic, size_t tlen, const void *msg, size_t mlen,
                   int nframes)
{
    zmq_msg_t f[ZU_FRAMES_MAX];
    int n = 0;
    if (sub) {
        zmq_msg_init_size(&f[n], tlen);
        if (tlen)
            memcpy(zmq_msg_data(&f[n]), topic, tlen);
        n++;
    }
    zmq_msg_init_size(&f[n], mlen);
    if (mlen)
        memcpy(zmq_msg_data(&f[n]), msg, mlen);
    n++;
    while (n < nframes && n < ZU_FRAMES_MAX)
        zmq_msg_init(&f[n++]);
    sync_client_input(sc, sub, f, n);
    zu_close_frames(f, n);
}

static const char *const s_ids[] = {"alice", "bob", "carol", "dave", "eve", "mallory", "x", "user:42"};

/* A well-formed change of the kind and sequence given. */
static void s_make_change(fz_reader_t *r, proto_change_t *c, uint8_t kind, uint64_t seq)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    proto_record_t *rec = &c->rec;
    const char *id = s_ids[fz_u8(r) % ARRAY_LEN(s_ids)];
    proto_record_set_uid(rec, id, strlen(id));
    proto_record_set_node(rec, "node-1", 6);
    proto_record_set_msg(rec, kind == PROTO_CH_SET ? "hello" : "", kind == PROTO_CH_SET ? 5 : 0);
    rec->status = kind == PROTO_CH_SET ? fz_u8(r) % PRESENCE_STATUS_COUNT : 0;
    rec->ttl_s = kind == PROTO_CH_DEL ? 0 : 60;
    rec->last_seen_us = rec->updated_at_us = 1700000000000000ull;
    rec->expires_at_us = rec->last_seen_us + 60000000ull;
    rec->version = seq;
}

static uint8_t s_kind(fz_reader_t *r)
{
    return (uint8_t)(PROTO_CH_SET + fz_u8(r) % 3);
}

static uint64_t s_epoch(fz_reader_t *r)
{
    return 1 + fz_u8(r) % 3; /* a few epochs, so changes of epoch happen */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r;
    fz_init(&r, data, size);
    s_drain_router(); /* nothing of an earlier input's may be taken for this one's */

    uint8_t cfgb = fz_u8(&r);
    sync_config_t cfg = {
        .pub_ep = PUB_EP,
        .cmd_ep = CMD_EP,
        .heartbeat_limit_ms = 3000,
        .request_timeout_ms = 2000,
        .chunk_items = 100,
        .buffer_max = (uint32_t)(1 + (cfgb & 7)) * 4, /* x 256 bytes: small, so overflow happens */
        .want_snapshot_data = (cfgb & 8) != 0,
    };
    sync_handler_t h = {.ctx = &H, .apply = on_apply, .reset = on_reset, .state = on_state};
    char err[256];
    sync_client_t *sc = sync_client_new(s_zctx, &cfg, &h, err);
    for (int wait_ms = 0; !sc && wait_ms < 10000; wait_ms++) {
        /* Out of socket slots until the reaper catches up (not the client's fault). */
        usleep(1000);
        s_drain_router();
        sc = sync_client_new(s_zctx, &cfg, &h, err);
    }
    if (!sc) {
        fprintf(stderr, "fuzz_sync: %s\n", err);
        abort();
    }
    memset(&H, 0, sizeof H); /* a new client has sent nothing yet */
    uint64_t offset = 0;
    proto_buf_t b;
    proto_buf_init(&b);
    for (int op = 0; op < MAX_OPS && r.left; op++) {
        uint8_t kind = fz_u8(&r);
        uint64_t seq_before = sync_client_seq(sc);
        bool snapshot_reply = false;
        uint64_t resets_before = H.resets;
        proto_buf_reset(&b);
        switch (kind % 8) {
        case 0: { /* raw stream message */
            uint8_t fl = fz_u8(&r);
            size_t len;
            const uint8_t *p = fz_chunk(&r, &len);
            char topic[2] = {(fl & 1) ? PROTO_TOPIC_HUGZ : PROTO_TOPIC_CHANGES, 'x'};
            s_feed(sc, true, topic, (fl & 2) ? 2 : 1, p, len, 2 + ((fl >> 2) & 3));
            break;
        }
        case 1: { /* raw reply */
            uint8_t fl = fz_u8(&r);
            size_t len;
            const uint8_t *p = fz_chunk(&r, &len);
            if ((fl & 1) && H.have_rid && proto_rewrite_rid(p, len, H.last_rid, &b) == 0) {
                p = (const uint8_t *)b.data;
                len = b.len;
            }
            proto_msg_t m;
            if (proto_decode(p, len, &m) == PROTO_DEC_OK && m.type == PROTO_CATCHUP_REPLY &&
                m.mode != PROTO_CATCHUP_INCREMENTAL)
                snapshot_reply = true;
            proto_msg_fini(&m);
            H.in_snapshot_reply = snapshot_reply;
            s_feed(sc, false, NULL, 0, p, len, 1 + ((fl >> 1) & 3));
            break;
        }
        case 2: { /* well-formed CHANGES */
            uint64_t epoch = s_epoch(&r);
            uint64_t first = 1 + fz_u8(&r);
            uint32_t n = 1 + fz_u8(&r) % 4;
            proto_enc_t e;
            proto_enc_init(&e, &b);
            proto_change_t ch[4];
            uint64_t seq = first;
            for (uint32_t i = 0; i < n; i++) {
                s_make_change(&r, &ch[i], s_kind(&r), seq);
                seq += 1 + fz_u8(&r) % 2;
            }
            proto_enc_changes_begin(&e, epoch, first, ch[n - 1].rec.version, n);
            for (uint32_t i = 0; i < n; i++)
                proto_enc_change(&e, &ch[i]);
            char t = PROTO_TOPIC_CHANGES;
            s_feed(sc, true, &t, 1, b.data, b.len, 2);
            break;
        }
        case 3: { /* well-formed HUGZ */
            uint64_t epoch = s_epoch(&r);
            uint64_t seq = fz_u8(&r);
            uint8_t fl = fz_u8(&r);
            proto_enc_hugz_flags(&b, epoch, seq, util_now_us(), fl & 1 ? PROTO_HUGZ_F_UPSTREAM_DOWN : 0);
            char t = PROTO_TOPIC_HUGZ;
            s_feed(sc, true, &t, 1, b.data, b.len, 2);
            break;
        }
        case 4: { /* well-formed CATCHUP_REPLY */
            uint8_t fl = fz_u8(&r);
            uint64_t rid = (fl & 1) || !H.have_rid ? fz_u8(&r) : H.last_rid;
            uint8_t status = (fl & 2) ? (uint8_t)(fz_u8(&r) % (PROTO_STATUS_MAX_ + 1)) : PROTO_OK;
            uint64_t epoch = s_epoch(&r);
            uint8_t mode = (uint8_t)(fz_u8(&r) % 3);
            uint64_t through = fz_u8(&r);
            bool done = (fl & 4) != 0;
            uint32_t n = fz_u8(&r) % 4;
            proto_change_t ch[4];
            uint64_t seq = 1 + fz_u8(&r);
            for (uint32_t i = 0; i < n; i++) {
                s_make_change(&r, &ch[i], mode == PROTO_CATCHUP_INCREMENTAL ? s_kind(&r) : PROTO_CH_SET,
                              mode == PROTO_CATCHUP_INCREMENTAL ? seq : 1 + fz_u8(&r));
                seq += 1 + fz_u8(&r) % 2;
            }
            const char *cursor = (fl & 8) ? s_ids[fz_u8(&r) % ARRAY_LEN(s_ids)] : "";
            proto_enc_t e;
            proto_enc_init(&e, &b);
            proto_enc_catchup_reply_begin(&e, rid, status, epoch, mode, through, done, n);
            for (uint32_t i = 0; i < n; i++)
                proto_enc_change(&e, &ch[i]);
            proto_enc_catchup_reply_end(&e, cursor, strlen(cursor));
            snapshot_reply = mode != PROTO_CATCHUP_INCREMENTAL;
            H.in_snapshot_reply = snapshot_reply;
            s_feed(sc, false, NULL, 0, b.data, b.len, 1);
            break;
        }
        case 5: /* time passes */
            offset += (uint64_t)fz_u8(&r) * 40;
            sync_client_tick(sc, util_mono_ms() + offset);
            break;
        case 6:
            sync_client_resync(sc);
            break;
        case 7: {
            sync_stats_t st;
            sync_client_get_stats(sc, &st);
            FZ_CHECK(st.seq == sync_client_seq(sc) && st.state == sync_client_state(sc));
            FZ_CHECK(st.changes_applied <= H.applies);
            break;
        }
        }
        H.in_snapshot_reply = false;
        int state = sync_client_state(sc);
        FZ_CHECK(state >= SYNC_CATCHING_UP && state <= SYNC_UPSTREAM_DOWN);
        if (!snapshot_reply && H.resets == resets_before)
            FZ_CHECK(sync_client_seq(sc) >= seq_before);
        s_drain_router();
    }
    proto_buf_fini(&b);
    sync_client_destroy(&sc);
    FZ_CHECK(sc == NULL);
    return 0;
}
