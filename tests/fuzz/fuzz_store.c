/* fuzz_store.c -- the store's handling of decoded commands: frames are decoded with proto_decode
 * and applied to a real LMDB store (store-node/store.c) the way store_node.c does it -- writes
 * through store_apply (alone or grouped), GET/MGET through the raw record reads, CATCHUP through
 * store_read_changes / store_read_records -- with sweeps as the fuzzer's clock moves on.
 *
 * Each input gets a fresh store in a private directory (on /dev/shm when there is one), so a
 * crash reproduces from its input alone.
 *
 * Input: byte 0 configures the store (changelog length, retention, default ttl); then events:
 *     op 0,1  u16 length + a frame (a command; op & 0x10 groups it with the following writes)
 *     op 2    u16: the clock advances that many x 10 ms, then a sweep of at most u8+1 entries
 *     op 3    a structured CATCHUP (epoch right or wrong, after_seq, max, flags, cursor)
 *
 * Oracles besides the sanitizers (what the store sends must be what its clients accept):
 *   - every write commits, stored records decode, and every reply the store-node would build
 *     from them (REPLY, CATCHUP_REPLY, the CHANGES it publishes) passes proto_decode;
 *   - sequence numbers of changes strictly increase across commits and sweeps, and each write's
 *     as_of is its last change's sequence;
 *   - a read after a write returns what the write stored.
 */
#include "fuzz_common.h"
#include "proto.h"
#include "store.h"
#include "util.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_EVENTS 128

static char s_dir[256], s_db[300];

static void s_rmdb(void)
{
    char p[400];
    snprintf(p, sizeof p, "%s/data.mdb", s_db);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", s_db);
    unlink(p);
    rmdir(s_db);
}

static void s_cleanup(void)
{
    s_rmdb();
    rmdir(s_dir);
}

/* A crash aborts without atexit: remove the directories of fuzz_store processes that are gone. */
static void s_remove_stale(const char *base)
{
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid;
        if (sscanf(e->d_name, "fuzz-store-%d-", &pid) != 1 || pid <= 0 || kill(pid, 0) == 0)
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s/db/data.mdb", base, e->d_name);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s/db/lock.mdb", base, e->d_name);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s/db", base, e->d_name);
        rmdir(p);
        snprintf(p, sizeof p, "%s/%s", base, e->d_name);
        rmdir(p);
    }
    closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : getenv("TMPDIR");
    base = base ? base : "/tmp";
    s_remove_stale(base);
    snprintf(s_dir, sizeof s_dir, "%s/fuzz-store-%d-XXXXXX", base, (int)getpid());
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(s_db, sizeof s_db, "%s/db", s_dir);
    atexit(s_cleanup);
    return 0;
}

typedef struct run {
    store_t *s;
    uint64_t now_us;
    uint64_t last_seq; /* highest change sequence seen */
    uint64_t pub_seq;  /* what a store-node would have published up to */
    proto_buf_t buf;
} run_t;

static void s_check_decodes(const proto_buf_t *b, uint8_t type)
{
    proto_msg_t m;
    int rc = proto_decode(b->data, b->len, &m);
    if (rc != PROTO_DEC_OK)
        fprintf(stderr, "the store's %s does not decode: %s\n", proto_type_name(type), m.err);
    FZ_CHECK(rc == PROTO_DEC_OK && m.type == type);
    proto_msg_fini(&m);
}

/* Publish changes the way store_node.c does (one CHANGES message) and check them. */
static void s_publish(run_t *r, const store_changes_t *ch)
{
    if (!ch->n)
        return;
    for (size_t i = 0; i < ch->n; i++) {
        FZ_CHECK(ch->v[i].rec.version > r->last_seq);
        r->last_seq = ch->v[i].rec.version;
    }
    proto_enc_t e;
    proto_buf_reset(&r->buf);
    proto_enc_init(&e, &r->buf);
    uint64_t first = r->pub_seq + 1, last = ch->v[ch->n - 1].rec.version;
    proto_enc_changes_begin(&e, store_epoch(r->s), first, last, (uint32_t)ch->n);
    for (size_t i = 0; i < ch->n; i++)
        proto_enc_change(&e, &ch->v[i]);
    s_check_decodes(&r->buf, PROTO_CHANGES);
    r->pub_seq = last;
}

/* A group of write commands (PUT, TOUCH, DEL) in one store_apply, then their replies. */
static void s_writes(run_t *r, proto_msg_t *ms, size_t n)
{
    store_op_t ops[4];
    proto_record_t del_in[4];
    proto_record_t *outs[4] = {0};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        proto_msg_t *m = &ms[i];
        store_op_t *op = &ops[k];
        memset(op, 0, sizeof *op);
        op->type = m->type;
        if (m->type == PROTO_LEASE) {
            op->lease_id = m->lease_id;
            op->lease_op = m->op;
            op->lease_ttl_ms = m->ttl_ms;
            snprintf(op->lease_node, sizeof op->lease_node, "%s", m->node);
        } else if (m->type == PROTO_DEL) {
            memset(&del_in[k], 0, sizeof del_in[k]);
            proto_record_set_uid(&del_in[k], m->key.p, m->key.len);
            op->n = 1;
            op->in = &del_in[k];
        } else {
            if (m->n == 0)
                continue; /* answered at once by the store-node */
            op->n = m->n;
            op->in = m->recs;
            outs[k] = xcalloc(m->n, sizeof *outs[k]);
            op->out = outs[k];
        }
        k++;
    }
    if (k) {
        store_changes_t ch;
        store_changes_init(&ch);
        char err[STORE_ERR_LEN];
        int rc = store_apply(r->s, ops, k, r->now_us, false, &ch, err);
        if (rc != 0)
            fprintf(stderr, "store_apply: %s\n", err);
        FZ_CHECK(rc == 0);
        s_publish(r, &ch);
        for (size_t i = 0; i < k; i++) {
            store_op_t *op = &ops[i];
            /* NOTFOUND: a DEL of nobody, or a session command for a session that is not there (or is
             * held by another connection, or under a lease the store does not hold). */
            FZ_CHECK(op->status == PROTO_OK || (op->type != PROTO_LEASE && op->status == PROTO_NOTFOUND));
            proto_buf_reset(&r->buf);
            if (op->type == PROTO_LEASE) {
                proto_enc_reply(&r->buf, 1, op->status, op->as_of, NULL, 0, NULL, op->flags);
            } else if (op->status == PROTO_OK && op->type != PROTO_DEL) {
                for (uint32_t j = 0; j < op->n; j++) {
                    FZ_CHECK(op->out[j].uid_len == op->in[j].uid_len &&
                             memcmp(op->out[j].user_id, op->in[j].user_id, op->in[j].uid_len) == 0);
                    FZ_CHECK(op->out[j].version <= op->as_of);
                }
                proto_enc_reply(&r->buf, 1, PROTO_OK, op->as_of, op->out, op->n, NULL, 0);
            } else {
                proto_enc_reply(&r->buf, 1, op->status, op->as_of, NULL, 0, NULL, 0);
            }
            s_check_decodes(&r->buf, PROTO_REPLY);
            /* Read back: what the write stored is what a GET returns now. */
            if (op->type != PROTO_DEL && op->type != PROTO_LEASE && op->status == PROTO_OK) {
                char err2[STORE_ERR_LEN];
                store_read_t *rd = store_read_begin(r->s, err2);
                FZ_CHECK(rd != NULL);
                const proto_record_t *last = &op->out[op->n - 1];
                proto_record_t got;
                int grc = store_read_get(rd, last->user_id, last->uid_len, &got);
                /* A later op of the group may have changed it again, or deleted it. */
                FZ_CHECK(grc == STORE_OK || (grc == STORE_NOTFOUND && i < k - 1));
                if (grc == STORE_OK)
                    FZ_CHECK(got.version >= last->version);
                if (i == k - 1)
                    FZ_CHECK(got.version == last->version && got.status == last->status &&
                             got.msg_len == last->msg_len && memcmp(got.message, last->message, got.msg_len) == 0);
                store_read_end(&rd);
            }
        }
        store_changes_fini(&ch);
    }
    for (size_t i = 0; i < k; i++)
        free(outs[i]);
}

/* SESSIONS: a user's live sessions, as the store-node answers them. */
static void s_sessions(run_t *r, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *rd = store_read_begin(r->s, err);
    FZ_CHECK(rd != NULL);
    static proto_session_t ss[PROTO_SESSIONS_MAX];
    uint32_t n = 0;
    FZ_CHECK(store_read_sessions(rd, m->key.p, m->key.len, r->now_us, ss, PROTO_SESSIONS_MAX, &n) == STORE_OK);
    FZ_CHECK(n <= 256);
    proto_buf_reset(&r->buf);
    proto_enc_sessions_reply(&r->buf, m->rid, PROTO_OK, ss, n);
    s_check_decodes(&r->buf, PROTO_SESSIONS_REPLY);
    store_read_end(&rd);
}

static void s_read(run_t *r, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *rd = store_read_begin(r->s, err);
    FZ_CHECK(rd != NULL);
    proto_enc_t e;
    proto_buf_reset(&r->buf);
    proto_enc_init(&e, &r->buf);
    uint64_t as_of = store_read_seq(rd);
    FZ_CHECK(as_of == r->last_seq || r->last_seq == 0);
    uint32_t n = m->type == PROTO_GET ? 1 : m->n;
    const void **ds = xcalloc(n ? n : 1, sizeof *ds);
    size_t *ls = xcalloc(n ? n : 1, sizeof *ls);
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        proto_str_t key = m->type == PROTO_GET ? m->key : m->keys[i];
        int rc = store_read_get_raw(rd, key.p, key.len, &ds[found], &ls[found]);
        FZ_CHECK(rc == STORE_OK || rc == STORE_NOTFOUND);
        if (rc == STORE_OK) {
            proto_record_t rec;
            FZ_CHECK(proto_record_decode(ds[found], ls[found], &rec) == 0);
            FZ_CHECK(rec.uid_len == key.len && memcmp(rec.user_id, key.p, key.len) == 0);
            FZ_CHECK(rec.version <= as_of);
            found++;
        }
    }
    proto_enc_reply_raw_begin(&e, m->rid, PROTO_OK, as_of, found);
    for (uint32_t i = 0; i < found; i++)
        proto_enc_raw(&e, ds[i], ls[i]);
    proto_enc_reply_raw_end(&e, NULL, 0);
    store_read_end(&rd);
    s_check_decodes(&r->buf, PROTO_REPLY);
    free(ds);
    free(ls);
}

/* The store-node's catch-up (store_catchup), with the answer checked. */
static void s_catchup(run_t *r, const proto_msg_t *m)
{
    char err[STORE_ERR_LEN];
    store_read_t *rd = store_read_begin(r->s, err);
    FZ_CHECK(rd != NULL);
    uint64_t epoch = store_epoch(r->s), snap_seq = store_read_seq(rd);
    uint32_t max = (uint32_t)MIN(MAX(m->max_items, 1), STORE_CATCHUP_MAX_ITEMS);
    store_changes_t ch;
    store_changes_init(&ch);
    store_catchup_t cu;
    int rc = store_catchup(rd, epoch, m, &ch, &cu);
    if (cu.mode == PROTO_CATCHUP_INCREMENTAL) {
        /* Incremental: in sequence order, after the request, within the snapshot. */
        for (size_t i = 0; i < ch.n; i++) {
            FZ_CHECK(ch.v[i].rec.version > m->seq && ch.v[i].rec.version <= snap_seq);
            if (i)
                FZ_CHECK(ch.v[i].rec.version > ch.v[i - 1].rec.version);
        }
        FZ_CHECK(cu.through >= m->seq);
    }
    FZ_CHECK(rc == STORE_OK);
    FZ_CHECK(ch.n <= max);
    FZ_CHECK(cu.clen <= PROTO_USER_ID_MAX);
    store_read_end(&rd);
    proto_enc_t e;
    proto_buf_reset(&r->buf);
    proto_enc_init(&e, &r->buf);
    proto_enc_catchup_reply_begin(&e, m->rid, PROTO_OK, epoch, cu.mode, cu.through, cu.done, (uint32_t)ch.n);
    for (size_t i = 0; i < ch.n; i++)
        proto_enc_change(&e, &ch.v[i]);
    proto_enc_catchup_reply_end(&e, cu.cursor, cu.clen);
    s_check_decodes(&r->buf, PROTO_CATCHUP_REPLY);
    store_changes_fini(&ch);
}

static void s_sweep(run_t *r, uint32_t max)
{
    store_changes_t ch;
    store_changes_init(&ch);
    char err[STORE_ERR_LEN];
    uint64_t next, expired = 0, purged = 0;
    int n = store_sweep(r->s, r->now_us, max, &ch, &next, &expired, &purged, err);
    if (n < 0)
        fprintf(stderr, "store_sweep: %s\n", err);
    FZ_CHECK(n >= 0 && (size_t)n == ch.n && expired + purged <= (uint64_t)n);
    s_publish(r, &ch);
    store_changes_fini(&ch);
}

static bool s_is_write(uint8_t t)
{
    return t == PROTO_PUT || t == PROTO_TOUCH || t == PROTO_DEL || t == PROTO_LEASE;
}

static const char *const s_keys[] = {"", "alice", "bob", "carol", "zzz", "a"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t in;
    fz_init(&in, data, size);
    uint8_t cfgb = fz_u8(&in);
    s_rmdb();
    store_config_t cfg = {
        .path = s_db,
        .sync_mode = STORE_SYNC_NONE,
        .map_size = 1u << 20,
        .map_size_max = 64u << 20,
        .retention_us = (uint64_t)(cfgb & 3) * 30 * 1000000,
        .default_ttl_s = 1 + (cfgb >> 2 & 3) * 60,
        .log_max = 1 + (cfgb >> 4) * 2,
    };
    run_t r;
    memset(&r, 0, sizeof r);
    proto_buf_init(&r.buf);
    char err[STORE_ERR_LEN];
    if (store_open(&cfg, &r.s, err) < 0) {
        fprintf(stderr, "store_open: %s\n", err);
        abort();
    }
    r.now_us = 1767225600000000ull;
    proto_msg_t group[4];
    size_t ng = 0;
    for (int ev = 0; ev < MAX_EVENTS && in.left; ev++) {
        uint8_t op = fz_u8(&in);
        if (op % 4 <= 1) {
            size_t len;
            const uint8_t *p = fz_chunk(&in, &len);
            proto_msg_t *m = &group[ng];
            if (proto_decode(p, len, m) != PROTO_DEC_OK) {
                proto_msg_fini(m);
                continue;
            }
            if (s_is_write(m->type)) {
                ng++;
                if ((op & 0x10) && ng < 4)
                    continue; /* grouped with the next write */
                s_writes(&r, group, ng);
                for (size_t i = 0; i < ng; i++)
                    proto_msg_fini(&group[i]);
                ng = 0;
                continue;
            }
            if (m->type == PROTO_SESSIONS)
                s_sessions(&r, m);
            else if (m->type == PROTO_GET || m->type == PROTO_MGET)
                s_read(&r, m);
            else if (m->type == PROTO_CATCHUP)
                s_catchup(&r, m);
            proto_msg_fini(m);
        } else if (op % 4 == 2) {
            r.now_us += (uint64_t)fz_u16(&in) * 10000;
            s_sweep(&r, 1 + fz_u8(&in));
        } else {
            proto_msg_t m;
            memset(&m, 0, sizeof m);
            m.type = PROTO_CATCHUP;
            m.rid = 7;
            uint8_t fl = fz_u8(&in);
            m.epoch = (fl & 1) ? store_epoch(r.s) : fz_u8(&in);
            m.seq = fz_u8(&in);
            m.max_items = fz_u8(&in) % 8;
            m.flags = fl >> 1 & 3;
            m.first_seq = fz_u8(&in);
            const char *k = s_keys[fz_u8(&in) % ARRAY_LEN(s_keys)];
            m.key.p = k;
            m.key.len = (uint32_t)strlen(k);
            s_catchup(&r, &m);
        }
    }
    if (ng) {
        s_writes(&r, group, ng);
        for (size_t i = 0; i < ng; i++)
            proto_msg_fini(&group[i]);
    }
    store_close(&r.s);
    FZ_CHECK(r.s == NULL);
    proto_buf_fini(&r.buf);
    return 0;
}
