/* gen_seeds.c -- writes the seed corpora of the fuzz targets (make fuzz-seeds):
 *
 *   proto/       one message of every type, made by proto's own encoders, plus a record
 *   sync/        event sequences in fuzz_sync's input format (catch-ups, streams, gaps, silences)
 *   store/       command sequences in fuzz_store's input format (writes, reads, catch-ups, sweeps)
 *   jwt/         Authorization headers: valid tokens signed with the targets' secret, and broken ones
 *   jwt_claims/  selector byte + claims (and headers) for fuzz_jwt_claims
 *   json/ query/ http/   request bodies, query strings and whole requests for every route
 *   ws/          fuzz_ws inputs: described frames (every message type, fragments, controls, close,
 *                limits) and raw masked streams
 *
 * Files are named g-<what>; re-running overwrites them and leaves other files (crash reproducers
 * added by hand, r-<what>) alone.
 */
#include "gw_lib.h"
#include "proto.h"

#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"

static const char *s_root;

static void s_write(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s_root, dir);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/g-%s", s_root, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void s_text(const char *dir, const char *name, const char *s)
{
    s_write(dir, name, s, strlen(s));
}

static void s_buf(const char *dir, const char *name, proto_buf_t *b)
{
    s_write(dir, name, b->data, b->len);
    proto_buf_reset(b);
}

static proto_record_t s_rec(const char *uid, int status, const char *msg, uint64_t version)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_node(&r, "node-1", 6);
    proto_record_set_msg(&r, msg, strlen(msg));
    r.status = (uint8_t)status;
    r.ttl_s = 300;
    r.last_seen_us = r.updated_at_us = 1767225600000000ull;
    r.expires_at_us = r.last_seen_us + 300000000ull;
    r.version = version;
    return r;
}

static proto_change_t s_change(uint8_t kind, const char *uid, uint64_t seq)
{
    proto_change_t c;
    c.kind = kind;
    c.rec = s_rec(uid, PRESENCE_ONLINE, kind == PROTO_CH_SET ? "in a meeting" : "", seq);
    if (kind == PROTO_CH_DEL)
        c.rec.node_len = 0, c.rec.node_id[0] = '\0';
    return c;
}

static void s_proto(void)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t e;
    proto_enc_init(&e, &b);
    proto_record_t recs[3] = {s_rec("alice", PRESENCE_ONLINE, "hello", 7), s_rec("bob", PRESENCE_BUSY, "", 9),
                              s_rec("user:42@example.com", PRESENCE_AWAY, "caf\xc3\xa9 \xe2\x98\x95", 12)};
    proto_str_t keys[3] = {{"alice", 5}, {"bob", 3}, {"carol", 5}};

    proto_enc_get(&b, PROTO_GET, 1, "alice", 5);
    s_buf("proto", "get", &b);
    proto_enc_get(&b, PROTO_DEL, 2, "bob", 3);
    s_buf("proto", "del", &b);
    proto_enc_keys(&b, 3, keys, 3);
    s_buf("proto", "mget", &b);
    proto_enc_keys(&b, 4, keys, 0);
    s_buf("proto", "mget-empty", &b);
    proto_enc_records_cmd(&b, PROTO_PUT, 5, recs, 3);
    s_buf("proto", "put", &b);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 6, recs, 2);
    s_buf("proto", "touch", &b);
    proto_enc_records_cmd(&b, PROTO_APPLY, 7, recs, 3);
    s_buf("proto", "apply", &b);
    proto_enc_simple(&b, PROTO_STATS, 8);
    s_buf("proto", "stats", &b);
    proto_enc_simple(&b, PROTO_PING, 0xffffffffffull);
    s_buf("proto", "ping", &b);
    proto_enc_catchup(&b, 9, 77, 100, 1000, PROTO_CATCHUP_F_NO_DATA, 0, "", 0);
    s_buf("proto", "catchup", &b);
    proto_enc_catchup(&b, 10, 77, 0, 1000, PROTO_CATCHUP_F_SNAP_CONT, 55, "bob", 3);
    s_buf("proto", "catchup-cont", &b);
    proto_enc_reply(&b, 11, PROTO_OK, 12, recs, 3, NULL, 0);
    s_buf("proto", "reply", &b);
    proto_enc_reply(&b, 12, PROTO_EOVERLOAD, 0, NULL, 0, "store write queue full", PROTO_REPLY_F_STALE);
    s_buf("proto", "reply-error", &b);
    proto_absent_t absent[2] = {{1, 150}, {4, 151}};
    proto_enc_reply_abs(&b, 13, PROTO_OK, 12, recs, 3, NULL, 0, absent, 2);
    s_buf("proto", "reply-absent", &b);

    proto_change_t ch[3] = {s_change(PROTO_CH_SET, "alice", 101), s_change(PROTO_CH_DEL, "bob", 102),
                            s_change(PROTO_CH_TOUCH, "carol", 104)};
    proto_enc_catchup_reply_begin(&e, 13, PROTO_OK, 77, PROTO_CATCHUP_INCREMENTAL, 104, true, 3);
    for (int i = 0; i < 3; i++)
        proto_enc_change(&e, &ch[i]);
    proto_enc_catchup_reply_end(&e, "", 0);
    s_buf("proto", "catchup-reply", &b);
    proto_change_t snap[2] = {s_change(PROTO_CH_SET, "bob", 90), s_change(PROTO_CH_SET, "alice", 95)};
    proto_enc_catchup_reply_begin(&e, 14, PROTO_OK, 78, PROTO_CATCHUP_SNAPSHOT, 120, false, 2);
    for (int i = 0; i < 2; i++)
        proto_enc_change(&e, &snap[i]);
    proto_enc_catchup_reply_end(&e, "bob", 3);
    s_buf("proto", "catchup-reply-snapshot", &b);
    proto_enc_changes_begin(&e, 77, 101, 104, 3);
    for (int i = 0; i < 3; i++)
        proto_enc_change(&e, &ch[i]);
    s_buf("proto", "changes", &b);

    proto_stat_t st[2] = {{{"store_epoch", 11}, 77}, {{"cache_hits_total{node=\"c1\"}", 27}, 12345}};
    proto_enc_stats(&b, PROTO_PONG, 15, PROTO_OK, st, 1);
    s_buf("proto", "pong", &b);
    proto_enc_stats(&b, PROTO_STATS_REPLY, 16, PROTO_OK, st, 2);
    s_buf("proto", "stats-reply", &b);
    proto_enc_hugz(&b, 77, 104, 1767225600000000ull);
    s_buf("proto", "hugz", &b);
    proto_enc_hugz_flags(&b, 77, 104, 1767225600000000ull, PROTO_HUGZ_F_UPSTREAM_DOWN);
    s_buf("proto", "hugz-flags", &b);

    /* sessions and leases */
    proto_record_t srec[2] = {s_rec("alice", PRESENCE_AWAY, "", 0), s_rec("bob", PRESENCE_BUSY, "on a call", 0)};
    proto_record_set_sid(&srec[0], "phone-1", 7);
    proto_record_set_device(&srec[0], "phone", 5);
    srec[1].cflags = PROTO_CMD_F_OPEN | PROTO_CMD_F_MSG;
    proto_record_set_sid(&srec[1], "tab.2", 5);
    srec[1].lease_id = 0x51;
    srec[1].conn_id = 9;
    srec[1].message_ttl_s = 120;
    proto_enc_records_cmd_dl(&b, PROTO_PUT, 31, srec, 2, 1767225600000000ull);
    s_buf("proto", "put-sessions", &b);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 32, srec, 2);
    s_buf("proto", "touch-sessions", &b);
    proto_enc_lease(&b, 33, 0x51, PROTO_LEASE_REFRESH, 15000, "gw-1", 4);
    s_buf("proto", "lease", &b);
    proto_enc_lease(&b, 34, 0x51, PROTO_LEASE_END, 15000, "gw-1", 4);
    s_buf("proto", "lease-end", &b);
    proto_enc_get(&b, PROTO_SESSIONS, 35, "alice", 5);
    s_buf("proto", "sessions", &b);
    proto_session_t ses = {.connected_at_us = 1767225600000000ull, .last_seen_us = 1767225601000000ull,
                           .expires_at_us = 1767225660000000ull, .lease_id = 0x51, .conn_id = 9, .ttl_s = 60,
                           .status = PRESENCE_BUSY, .manual_status = PRESENCE_BUSY};
    snprintf(ses.session_id, sizeof ses.session_id, "tab.2");
    ses.sid_len = 5;
    snprintf(ses.node_id, sizeof ses.node_id, "node-1");
    ses.node_len = 6;
    proto_enc_sessions_reply(&b, 36, PROTO_OK, &ses, 1);
    s_buf("proto", "sessions-reply", &b);
    proto_record_t rt = s_rec("ivy", PRESENCE_OFFLINE, "", 140);
    rt.rflags = PROTO_REC_F_RT | PROTO_REC_F_PUB_RT;
    rt.sessions = 2;
    rt.source = PRESENCE_SRC_PREFERRED;
    rt.preferred_until_us = rt.expires_at_us;
    rt.pub_version = 120;
    rt.vis_last_seen_us = rt.last_seen_us - 5;
    proto_enc_reply(&b, 37, PROTO_OK, 140, &rt, 1, NULL, 0);
    s_buf("proto", "reply-invisible", &b);

    proto_batch_t bt;
    proto_batch_init(&bt);
    proto_buf_t part;
    proto_buf_init(&part);
    proto_enc_get(&part, PROTO_GET, 21, "alice", 5);
    proto_batch_add(&bt, part.data, part.len);
    proto_buf_reset(&part);
    proto_enc_records_cmd(&part, PROTO_PUT, 22, recs, 1);
    proto_batch_add(&bt, part.data, part.len);
    proto_buf_reset(&part);
    proto_enc_simple(&part, PROTO_PING, 23);
    proto_batch_add(&bt, part.data, part.len);
    proto_batch_encode(&bt, &b);
    s_buf("proto", "batch", &b);
    proto_batch_fini(&bt);
    proto_buf_fini(&part);

    proto_record_encode(&b, &recs[2]);
    s_buf("proto", "record", &b);
    /* Another protocol version: [2, GET, 1, "alice"]. */
    static const uint8_t v2[] = {0x94, 0x02, 0x01, 0x01, 0xa5, 'a', 'l', 'i', 'c', 'e'};
    s_write("proto", "version2", v2, sizeof v2);
    proto_buf_fini(&b);
}

/* fuzz_sync's input: a config byte, then events (see fuzz_sync.c). */
enum { EV_RAW_SUB = 0, EV_RAW_REPLY = 1, EV_CHANGES = 2, EV_HUGZ = 3, EV_CATCHUP = 4, EV_TICK = 5, EV_RESYNC = 6,
       EV_STATS = 7 };

typedef struct seq {
    uint8_t b[4096];
    size_t n;
} seq_t;

static void s_put(seq_t *s, const uint8_t *p, size_t n)
{
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

#define PUT(s, ...)                                                                                                  \
    do {                                                                                                             \
        const uint8_t b_[] = {__VA_ARGS__};                                                                          \
        s_put((s), b_, sizeof b_);                                                                                   \
    } while (0)

static void s_put_chunk(seq_t *s, const proto_buf_t *b)
{
    PUT(s, (uint8_t)(b->len >> 8), (uint8_t)b->len);
    s_put(s, (const uint8_t *)b->data, b->len);
}

static void s_sync(void)
{
    seq_t s;
    /* The first tick sends the first catch-up; an incremental reply (epoch 1, changes 1 and 3, done
     * through 3); live changes 4..5; a heartbeat at 5; silence; the heartbeat again. */
    s.n = 0;
    PUT(&s, 0x0f);
    PUT(&s, EV_TICK, 0);
    /* fl=done, epoch, mode, through, n, seq base, then per change: kind, id, [status,] step */
    PUT(&s, EV_CATCHUP, 0x04, 0, 0, 3, 2, 0, /**/ 0, 0, 1, 1, /**/ 1, 1, 0);
    /* epoch, first-1, n-1, then per change: kind, id, [status,] step */
    PUT(&s, EV_CHANGES, 0, 3, 1, /**/ 0, 0, 0, 0, /**/ 2, 2, 0);
    PUT(&s, EV_HUGZ, 0, 5, 0);
    PUT(&s, EV_TICK, 100);
    PUT(&s, EV_HUGZ, 0, 5, 0);
    PUT(&s, EV_STATS);
    s_write("sync", "incremental-live", s.b, s.n);

    /* A gap (changes from 10 while at 3) buffered during the repairing catch-up, then replayed. */
    s.n = 0;
    PUT(&s, 0x07);
    PUT(&s, EV_TICK, 0);
    PUT(&s, EV_CATCHUP, 0x04, 0, 0, 3, 0, 0);
    PUT(&s, EV_CHANGES, 0, 9, 0, /**/ 0, 0, 0, 0);
    PUT(&s, EV_CHANGES, 0, 10, 0, /**/ 1, 0, 0);
    PUT(&s, EV_CATCHUP, 0x04, 0, 0, 9, 1, 3, /**/ 0, 2, 0, 0);
    PUT(&s, EV_STATS, EV_HUGZ, 0, 11, 0, EV_STATS);
    s_write("sync", "gap-repair", s.b, s.n);

    /* A snapshot in two chunks (cursor, then the end of the key scan), then the incremental rest. */
    s.n = 0;
    PUT(&s, 0x08);
    PUT(&s, EV_TICK, 0);
    /* fl=cursor, epoch 2, SNAPSHOT, through 50, 2 records: version-1, id, status, step; cursor id */
    PUT(&s, EV_CATCHUP, 0x08, 1, 1, 50, 2, 0, /**/ 40, 0, 1, 0, /**/ 41, 1, 0, 0, /**/ 1);
    PUT(&s, EV_CATCHUP, 0x00, 1, 2, 50, 1, 0, /**/ 45, 2, 0, 0);
    PUT(&s, EV_CATCHUP, 0x04, 1, 0, 52, 1, 50, /**/ 0, 0, 0, 0);
    PUT(&s, EV_HUGZ, 1, 52, 0, EV_STATS);
    s_write("sync", "snapshot-chunks", s.b, s.n);

    /* Silence, a relay's upstream-down heartbeat, another epoch, a snapshot reset, a forced resync. */
    s.n = 0;
    PUT(&s, 0x00);
    PUT(&s, EV_TICK, 0, EV_CATCHUP, 0x04, 0, 0, 0, 0, 0);
    PUT(&s, EV_TICK, 200, EV_TICK, 200, EV_HUGZ, 0, 0, 1, EV_HUGZ, 2, 0, 0, EV_TICK, 60);
    PUT(&s, EV_CATCHUP, 0x04, 2, 1, 7, 0, 0, EV_RESYNC, EV_TICK, 0, EV_STATS);
    s_write("sync", "silence-epoch", s.b, s.n);

    /* Raw frames: a real CHANGES on the stream, a real CATCHUP_REPLY with its rid rewritten. */
    proto_buf_t b;
    proto_buf_init(&b);
    proto_enc_t e;
    proto_enc_init(&e, &b);
    proto_change_t ch[2] = {s_change(PROTO_CH_SET, "alice", 1), s_change(PROTO_CH_TOUCH, "alice", 2)};
    s.n = 0;
    PUT(&s, 0x0f, EV_TICK, 0);
    proto_enc_catchup_reply_begin(&e, 1, PROTO_OK, 2, PROTO_CATCHUP_SNAPSHOT, 0, true, 0);
    proto_enc_catchup_reply_end(&e, "", 0);
    PUT(&s, EV_RAW_REPLY, 0x01);
    s_put_chunk(&s, &b);
    proto_buf_reset(&b);
    proto_enc_changes_begin(&e, 2, 1, 2, 2);
    proto_enc_change(&e, &ch[0]);
    proto_enc_change(&e, &ch[1]);
    PUT(&s, EV_RAW_SUB, 0x00);
    s_put_chunk(&s, &b);
    proto_buf_reset(&b);
    proto_enc_hugz(&b, 2, 2, 1767225600000000ull);
    PUT(&s, EV_RAW_SUB, 0x01);
    s_put_chunk(&s, &b);
    PUT(&s, EV_STATS);
    s_write("sync", "raw-frames", s.b, s.n);
    proto_buf_fini(&b);
}

/* fuzz_store's input: a config byte, then events (see fuzz_store.c). */
static void s_frame(seq_t *s, uint8_t op, proto_buf_t *b)
{
    PUT(s, op);
    s_put_chunk(s, b);
    proto_buf_reset(b);
}

static void s_store(void)
{
    proto_buf_t b;
    proto_buf_init(&b);
    proto_record_t recs[3] = {s_rec("alice", PRESENCE_ONLINE, "hello", 0), s_rec("bob", PRESENCE_BUSY, "", 0),
                              s_rec("carol", PRESENCE_AWAY, "back soon", 0)};
    proto_str_t keys[3] = {{"alice", 5}, {"bob", 3}, {"nobody", 6}};
    seq_t s;

    /* Writes, reads, a catch-up of each kind, expiry and purge by sweeps. */
    s.n = 0;
    PUT(&s, 0x01);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, recs, 3);
    s_frame(&s, 0, &b);
    proto_enc_get(&b, PROTO_GET, 2, "alice", 5);
    s_frame(&s, 0, &b);
    proto_enc_keys(&b, 3, keys, 3);
    s_frame(&s, 0, &b);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 4, recs + 1, 1);
    s_frame(&s, 0, &b);
    proto_enc_get(&b, PROTO_DEL, 5, "carol", 5);
    s_frame(&s, 0, &b);
    proto_enc_catchup(&b, 6, 12345, 0, 100, 0, 0, "", 0); /* another epoch: snapshot */
    s_frame(&s, 0, &b);
    PUT(&s, 3, 0x01, 1, 5, 0, 0); /* right epoch, after 1, max 5 */
    PUT(&s, 2, 0x80, 0x00, 10);   /* +327 s: past every ttl */
    PUT(&s, 2, 0x40, 0x00, 10);
    PUT(&s, 3, 0x01, 0, 5, 0, 0);
    s_write("store", "basic", s.b, s.n);

    /* A group commit of three ops, a short changelog (snapshot after pruning) and a cursor. */
    s.n = 0;
    PUT(&s, 0x00);
    proto_enc_records_cmd(&b, PROTO_PUT, 1, recs, 2);
    s_frame(&s, 0x10, &b);
    proto_enc_records_cmd(&b, PROTO_TOUCH, 2, recs + 2, 1);
    s_frame(&s, 0x10, &b);
    proto_enc_get(&b, PROTO_DEL, 3, "alice", 5);
    s_frame(&s, 0, &b);
    proto_enc_records_cmd(&b, PROTO_PUT, 4, recs, 3);
    s_frame(&s, 0, &b);
    PUT(&s, 2, 0x00, 0x01, 255);
    PUT(&s, 3, 0x01, 0, 2, 0, 0);       /* below the floor: snapshot */
    PUT(&s, 3, 0x05, 0, 1, 0, 2);       /* snapshot continuation after "bob" */
    proto_enc_catchup(&b, 9, 1, 2, 1, PROTO_CATCHUP_F_NO_DATA, 0, "", 0);
    s_frame(&s, 0, &b);
    s_write("store", "group-prune", s.b, s.n);

    /* Sessions: a REST one, a lease and its connections (open, resume, end), the lease lapsing. */
    s.n = 0;
    PUT(&s, 0x01);
    proto_record_t ses[2] = {s_rec("alice", PRESENCE_ONLINE, "", 0), s_rec("bob", PRESENCE_BUSY, "", 0)};
    proto_record_set_sid(&ses[0], "desk", 4);
    ses[0].ttl_s = 30;
    proto_enc_records_cmd(&b, PROTO_PUT, 1, ses, 1);
    s_frame(&s, 0, &b);
    proto_enc_lease(&b, 2, 0x77, PROTO_LEASE_REFRESH, 2000, "gw", 2);
    s_frame(&s, 0, &b);
    proto_record_set_sid(&ses[1], "tab", 3);
    ses[1].lease_id = 0x77;
    ses[1].conn_id = 1;
    ses[1].cflags = PROTO_CMD_F_OPEN;
    proto_enc_records_cmd(&b, PROTO_PUT, 3, &ses[1], 1);
    s_frame(&s, 0, &b);
    ses[1].conn_id = 2; /* a resume on another connection */
    proto_enc_records_cmd(&b, PROTO_PUT, 4, &ses[1], 1);
    s_frame(&s, 0, &b);
    proto_enc_get(&b, PROTO_SESSIONS, 5, "bob", 3);
    s_frame(&s, 0, &b);
    PUT(&s, 2, 0x00, 0x02, 50); /* +5.12 s: the lease lapses, the REST session still lives */
    PUT(&s, 2, 0x00, 0x10, 50);
    proto_enc_get(&b, PROTO_SESSIONS, 6, "alice", 5);
    s_frame(&s, 0, &b);
    s_write("store", "sessions", s.b, s.n);
    proto_buf_fini(&b);
}

static void s_jwt(void)
{
    const unsigned char *k = (const unsigned char *)FZ_SECRET;
    size_t kl = strlen(FZ_SECRET);
    const int64_t iat = 1767225600, exp = 4102444800; /* 2026 .. 2100 */
    char buf[4096];
    char *t;
    t = gw_auth_sign(k, kl, JWT_ALG_HS256, "presence-service", "alice", "", iat, exp);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "valid", buf);
    snprintf(buf, sizeof buf, "bearer   %s  ", t);
    s_text("jwt", "valid-spaces", buf);
    free(t);
    t = gw_auth_sign(k, kl, JWT_ALG_HS256, "presence-service", "backend", "presence:read presence:admin", iat, exp);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "admin", buf);
    free(t);
    t = gw_auth_sign(k, kl, JWT_ALG_HS256, "presence-service", "alice", "", iat - 7200, iat - 3600);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "expired", buf);
    free(t);
    t = gw_auth_sign(k, kl, JWT_ALG_HS512, "presence-service", "alice", "", iat, exp);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "hs512", buf);
    free(t);
    t = gw_auth_sign(k, kl, JWT_ALG_HS256, "someone-else", "alice", "", iat, exp);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "wrong-issuer", buf);
    free(t);
    t = gw_auth_sign((const unsigned char *)"another-secret-another-secret-xx", 32, JWT_ALG_HS256, "presence-service",
                     "alice", "", iat, exp);
    snprintf(buf, sizeof buf, "Bearer %s", t);
    s_text("jwt", "wrong-secret", buf);
    free(t);
    /* {"alg":"none","typ":"JWT"}.{"sub":"alice","exp":4102444800}. */
    s_text("jwt", "alg-none", "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.");
    s_text("jwt", "basic", "Basic YWxpY2U6c2VjcmV0");
    s_text("jwt", "empty-bearer", "Bearer ");

    /* fuzz_jwt_claims: selector byte, then claims (or header \0 claims). */
    static const struct {
        const char *name;
        uint8_t sel;
        const char *text;
    } claims[] = {
        {"basic", 0, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"iat\":1767225600,\"exp\":4102444800}"},
        {"admin", 0,
         "{\"iss\":\"presence-service\",\"sub\":\"svc\",\"scope\":\"presence:read presence:admin\",\"exp\":4102444800}"},
        {"real-exp", 4, "{\"sub\":\"bob\",\"exp\":4102444800.5,\"nbf\":1767225000}"},
        {"nbf-future", 0, "{\"iss\":\"presence-service\",\"sub\":\"bob\",\"exp\":4102444800,\"nbf\":4102444000}"},
        {"no-exp", 0, "{\"iss\":\"presence-service\",\"sub\":\"bob\"}"},
        {"exp-string", 0, "{\"iss\":\"presence-service\",\"sub\":\"bob\",\"exp\":\"4102444800\"}"},
        {"sub-number", 0, "{\"iss\":\"presence-service\",\"sub\":42,\"exp\":4102444800}"},
        {"hs384", 1, "{\"iss\":\"presence-service\",\"sub\":\"carol\",\"exp\":4102444800}"},
        {"not-object", 0, "[1,2,3]"},
    };
    for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++) {
        size_t n = strlen(claims[i].text);
        buf[0] = (char)claims[i].sel;
        memcpy(buf + 1, claims[i].text, n);
        s_write("jwt_claims", claims[i].name, buf, n + 1);
    }
    static const char hdr_claims[] =
        "\x08{\"alg\":\"HS512\",\"typ\":\"JWT\"}\0{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":4102444800}";
    s_write("jwt_claims", "header-hs512", hdr_claims, sizeof hdr_claims - 1);
    static const char hdr_none[] = "\x00{\"alg\":\"none\"}\0{\"sub\":\"alice\",\"exp\":4102444800}";
    s_write("jwt_claims", "header-none", hdr_none, sizeof hdr_none - 1);
}

static void s_json(void)
{
    s_text("json", "set", "{\"status\":\"online\",\"message\":\"In a meeting\",\"ttl\":300}");
    s_text("json", "set-min", "{\"status\":\"away\"}");
    s_text("json", "set-null", "{\"status\":\"busy\",\"message\":null,\"ttl\":null}");
    s_text("json", "set-utf8", "{\"status\":\"online\",\"message\":\"caf\xc3\xa9 \\u2615 \\ud83d\\ude00\"}");
    s_text("json", "set-bad-utf8", "{\"status\":\"online\",\"message\":\"a\xff\xfe\"}");
    s_text("json", "set-real-ttl", "{\"status\":\"offline\",\"ttl\":3600.0}");
    s_text("json", "set-bad-ttl", "{\"status\":\"online\",\"ttl\":1e300}");
    s_text("json", "set-dup", "{\"status\":\"online\",\"status\":\"away\"}");
    s_text("json", "heartbeat", "{\"ttl\":120}");
    s_text("json", "heartbeat-empty", "  \r\n");
    s_text("json", "batch-read", "{\"user_ids\":[\"alice\",\"bob\",\"alice\",\"\",\"user:42@example.com\"]}");
    s_text("json", "batch-write",
           "{\"presences\":[{\"user_id\":\"alice\",\"status\":\"online\",\"message\":\"hi\"},"
           "{\"user_id\":\"bob\",\"status\":\"busy\",\"ttl\":60}]}");
    s_text("json", "batch-heartbeats", "{\"heartbeats\":[\"alice\",\"bob\",\"alice\"],\"ttl\":90}");
    s_text("json", "batch-both", "{\"user_ids\":[\"a\"],\"presences\":[]}");
    s_text("json", "batch-reserved", "{\"user_ids\":[\"batch\",\"watch\"]}");
    s_text("json", "nested", "[[[[[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]]]");
}

static void s_query(void)
{
    s_text("query", "users", "users=alice,bob,carol");
    s_text("query", "users-encoded", "users=alice%2Cbob%2cuser%3A42%40example.com&since=17");
    s_text("query", "users-spaces", "x=1&users=+alice+,%20bob%20,,alice&y");
    s_text("query", "users-bad-escape", "users=alice%2");
    s_text("query", "users-reserved", "users=watch");
    s_text("query", "origin", "https://app.example.com");
    s_text("query", "message", "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80");
}

static void s_http(void)
{
    s_text("http", "get-user", "GET /api/v2/presence/alice\n\n");
    s_text("http", "get-user-encoded", "GET /api/v2/presence/user%3A42%40example.com\nOrigin: https://app.example.com\n\n");
    s_text("http", "put-user",
           "PUT /api/v2/presence/alice\nAuthorization: @user:alice\nContent-Type: application/json\n\n"
           "{\"status\":\"online\",\"message\":\"hi\",\"ttl\":300}");
    s_text("http", "put-other", "PUT /api/v2/presence/bob\nAuthorization: @user:alice\n\n{\"status\":\"away\"}");
    s_text("http", "post-admin", "POST /api/v2/presence/bob\nAuthorization: @admin\n\n{\"status\":\"busy\"}");
    s_text("http", "put-expired", "PUT /api/v2/presence/alice\nAuthorization: @expired\n\n{\"status\":\"away\"}");
    s_text("http", "put-noauth", "PUT /api/v2/presence/alice\n\n{\"status\":\"away\"}");
    s_text("http", "delete", "DELETE /api/v2/presence/alice\nAuthorization: @user:alice\n\n");
    s_text("http", "heartbeat", "POST /api/v2/presence/alice/heartbeat\nAuthorization: @user:alice\n\n{\"ttl\":60}");
    s_text("http", "multi", "GET /api/v2/presence?users=alice,bob%2Ccarol\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\n\n");
    s_text("http", "batch-read", "POST /api/v2/presence/batch\n\n{\"user_ids\":[\"alice\",\"bob\"]}");
    s_text("http", "batch-write",
           "POST /api/v2/presence/batch\nAuthorization: @admin\n\n"
           "{\"presences\":[{\"user_id\":\"alice\",\"status\":\"online\"}]}");
    s_text("http", "batch-heartbeats",
           "POST /api/v2/presence/batch\nAuthorization: @user:alice\n\n{\"heartbeats\":[\"alice\"],\"ttl\":30}");
    s_text("http", "watch", "GET /api/v2/presence/watch?users=alice,bob&since=42\n\n");
    s_text("http", "watch-last-event-id", "GET /api/v2/presence/watch?users=alice\nLast-Event-ID: 12345\n\n");
    s_text("http", "options", "OPTIONS /api/v2/presence/alice\nOrigin: http://localhost:3000\n\n");
    s_text("http", "forbidden-origin", "GET /health\nOrigin: https://evil.example\n\n");
    s_text("http", "health", "HEAD /health/liveness\n\n");
    s_text("http", "readiness", "GET /health/readiness\n\n");
    s_text("http", "metrics", "GET /metrics\n\n");
    s_text("http", "cache-metrics", "GET /api/v2/cache/metrics\nAuthorization: @admin\n\n");
    s_text("http", "method", "PATCH /api/v2/presence/alice\n\n");
    s_text("http", "notfound", "GET /api/v2/presence/alice/nope\n\n");
}

/* ---- ws: fuzz_ws's input format (see tests/fuzz/fuzz_ws.c) ---------------------------------- */

typedef struct ws_seed {
    uint8_t b[4096];
    size_t n;
} ws_seed_t;

/* Structured input: config byte (bit 0 set; bits 1-2 the maximum), a split seed byte. */
static void s_ws_begin(ws_seed_t *w, unsigned max_sel, uint8_t seed)
{
    w->n = 0;
    w->b[w->n++] = (uint8_t)(1 | max_sel << 1 | (seed & 0xf8));
    w->b[w->n++] = seed;
}

/* One described frame: b0, flags, len (255 + 16 bits when longer), payload. */
static void s_ws_frame(ws_seed_t *w, unsigned b0, unsigned flags, const char *p, size_t n)
{
    w->b[w->n++] = (uint8_t)b0;
    w->b[w->n++] = (uint8_t)flags;
    if (n >= 255) {
        w->b[w->n++] = 255;
        w->b[w->n++] = (uint8_t)(n >> 8);
        w->b[w->n++] = (uint8_t)n;
    } else {
        w->b[w->n++] = (uint8_t)n;
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void s_ws_text(const char *name, const char *json)
{
    ws_seed_t w;
    s_ws_begin(&w, 0, 0x2a);
    s_ws_frame(&w, 0x81, 0, json, strlen(json));
    s_write("ws", name, w.b, w.n);
}

/* Raw input: a masked client frame appended to a stream. */
static void s_ws_raw(ws_seed_t *w, unsigned b0, bool masked, const char *p, size_t n)
{
    static const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
    w->b[w->n++] = (uint8_t)b0;
    w->b[w->n++] = (uint8_t)((masked ? 0x80 : 0) | n); /* n < 126 here */
    if (masked) {
        memcpy(w->b + w->n, key, 4);
        w->n += 4;
    }
    for (size_t i = 0; i < n; i++)
        w->b[w->n++] = (uint8_t)(p[i] ^ (masked ? key[i & 3] : 0));
}

static void s_ws(void)
{
    s_ws_text("ping", "{\"type\":\"ping\"}");
    s_ws_text("activity", "{\"type\":\"activity\"}");
    s_ws_text("set", "{\"type\":\"set\",\"status\":\"busy\",\"message\":\"in a call \\u2615\",\"message_ttl\":3600}");
    s_ws_text("set-clear", "{\"type\":\"set\",\"message\":null,\"status\":\"away\"}");
    s_ws_text("set-bad", "{\"type\":\"set\",\"status\":\"gone\",\"message_ttl\":0}");
    s_ws_text("watch", "{\"type\":\"watch\",\"users\":[\"alice\",\"bob@example.com\",\"alice\"],\"since\":42}");
    s_ws_text("watch-bad", "{\"type\":\"watch\",\"users\":[\"ok\",\"bad id\",7],\"since\":-1}");
    s_ws_text("unwatch", "{\"type\":\"unwatch\",\"users\":[\"alice\"]}");
    s_ws_text("unknown", "{\"type\":\"hello\",\"x\":[1,2,{\"y\":null}]}");

    ws_seed_t w;
    /* a message in three fragments with controls between them, a multi-byte character cut */
    s_ws_begin(&w, 0, 0x11);
    s_ws_frame(&w, 0x01, 0, "{\"type\":\"set\",\"message\":\"caf\xc3", 29);
    s_ws_frame(&w, 0x89, 0, "mid", 3);
    s_ws_frame(&w, 0x00, 0, "\xa9\"", 2);
    s_ws_frame(&w, 0x8a, 0, "", 0);
    s_ws_frame(&w, 0x80, 0, "}", 1);
    s_ws_frame(&w, 0x88, 0, "\x03\xe8" "bye", 5);
    s_write("ws", "fragments", w.b, w.n);
    /* every control, then a bad close code */
    s_ws_begin(&w, 0, 0x53);
    s_ws_frame(&w, 0x89, 0, "", 0);
    s_ws_frame(&w, 0x8a, 0, "pong", 4);
    s_ws_frame(&w, 0x82, 0, "\x00\xff", 2);
    s_ws_frame(&w, 0x88, 0, "\x03\xed", 2);
    s_write("ws", "controls", w.b, w.n);
    /* limits: a maximum of 100 (selector 1), 100 bytes then 101 */
    char big[300];
    memset(big, 'a', sizeof big);
    s_ws_begin(&w, 1, 0x99);
    s_ws_frame(&w, 0x82, 0, big, 100);
    s_ws_frame(&w, 0x02, 0, big, 60);
    s_ws_frame(&w, 0x80, 0, big, 41);
    s_write("ws", "limit-100", w.b, w.n);
    /* length encodings: 126 (16-bit), a forced 16-bit 5, a forced 64-bit 300 */
    s_ws_begin(&w, 3, 0x07);
    s_ws_frame(&w, 0x82, 0, big, 126);
    s_ws_frame(&w, 0x82, 2, big, 5);
    s_ws_frame(&w, 0x82, 4, big, 300);
    s_write("ws", "lengths", w.b, w.n);
    /* broken frames: unmasked, reserved bits, unknown opcode, fragmented ping */
    s_ws_begin(&w, 2, 0x3c);
    s_ws_frame(&w, 0x81, 1, "x", 1);
    s_write("ws", "unmasked", w.b, w.n);
    s_ws_begin(&w, 2, 0x3c);
    s_ws_frame(&w, 0xc1, 0, "x", 1);
    s_write("ws", "rsv", w.b, w.n);
    s_ws_begin(&w, 2, 0x3c);
    s_ws_frame(&w, 0x83, 0, "x", 1);
    s_ws_frame(&w, 0x09, 0, "", 0);
    s_write("ws", "opcode", w.b, w.n);
    /* invalid UTF-8 split across fragments */
    s_ws_begin(&w, 0, 0x61);
    s_ws_frame(&w, 0x01, 0, "ok \xed", 4);
    s_ws_frame(&w, 0x80, 0, "\xa0\x80", 2);
    s_write("ws", "utf8-surrogate", w.b, w.n);
    /* raw streams (config byte with bit 0 clear) */
    w.n = 0;
    w.b[w.n++] = 0x00;
    w.b[w.n++] = 0x5e;
    s_ws_raw(&w, 0x81, true, "{\"type\":\"ping\"}", 15);
    s_ws_raw(&w, 0x82, true, "bin", 3);
    s_ws_raw(&w, 0x89, true, "p", 1);
    s_ws_raw(&w, 0x88, true, "\x03\xe8", 2);
    s_write("ws", "raw-stream", w.b, w.n);
    w.n = 0;
    w.b[w.n++] = 0x00;
    w.b[w.n++] = 0x01;
    s_ws_raw(&w, 0x81, false, "hello", 5);
    s_write("ws", "raw-unmasked", w.b, w.n);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds CORPUS_DIR\n");
        return 2;
    }
    s_root = argv[1];
    mkdir(s_root, 0755);
    s_proto();
    s_sync();
    s_store();
    s_jwt();
    s_json();
    s_query();
    s_http();
    s_ws();
    return 0;
}
