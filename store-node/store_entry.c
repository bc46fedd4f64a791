/* store_entry.c -- the replicated store's log entries (store_entry.h draws the layout).
 *
 * Why the commands travel in the wire encoding: it is already the validated, versioned form of
 * every write the store takes, with a strict decoder (proto.c) that bounds every allocation. An
 * entry that was committed but does not decode is a corrupt log or a member of another version:
 * the apply fails and the member stops (never skips an entry).
 *
 * Pure: no I/O, no shared state; thread-safe.
 */
#include "store_entry.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_MAGIC "PSE1"

static void s_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t s_get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void s_header(proto_buf_t *out, uint8_t kind, uint64_t now_us, uint64_t arg)
{
    unsigned char h[STORE_ENTRY_HDR] = {0};
    memcpy(h, ENTRY_MAGIC, 4);
    h[4] = kind;
    s_put64(h + 8, now_us);
    s_put64(h + 16, arg);
    proto_buf_append(out, h, sizeof h);
}

/* ==== encoding =================================================================================== */

size_t store_entry_add_op(proto_batch_t *ops, const store_op_t *op, proto_buf_t *scratch)
{
    const uint8_t *id = op->has_cmd_id ? op->cmd_id : NULL;
    proto_buf_reset(scratch);
    switch (op->type) {
    case PROTO_PUT:
    case PROTO_TOUCH:
        proto_enc_records_cmd_id(scratch, op->type, 0, op->in, op->n, 0, id);
        break;
    case PROTO_DEL:
        proto_enc_get_id(scratch, PROTO_DEL, 0, op->in[0].user_id, op->in[0].uid_len, 0, id);
        break;
    case PROTO_LEASE:
        proto_enc_lease(scratch, 0, op->lease_id, op->lease_op, op->lease_ttl_ms, op->lease_node,
                        strnlen(op->lease_node, PROTO_NODE_ID_MAX));
        break;
    default:
        return 0;
    }
    proto_batch_add(ops, scratch->data, scratch->len);
    return scratch->len;
}

void store_entry_group(proto_buf_t *out, uint64_t now_us, const proto_batch_t *ops)
{
    proto_batch_encode(ops, out);
    size_t n = out->len;
    unsigned char pad[STORE_ENTRY_HDR] = {0};
    proto_buf_append(out, pad, sizeof pad); /* room, then move the ops behind the header */
    memmove(out->data + STORE_ENTRY_HDR, out->data, n);
    out->len = 0;
    s_header(out, STORE_ENTRY_GROUP, now_us, ops->n);
    out->len = STORE_ENTRY_HDR + n;
}

void store_entry_sweep(proto_buf_t *out, uint64_t now_us, uint32_t max)
{
    proto_buf_reset(out);
    s_header(out, STORE_ENTRY_SWEEP, now_us, max);
}

void store_entry_lead(proto_buf_t *out, uint64_t now_us, uint64_t epoch)
{
    proto_buf_reset(out);
    s_header(out, STORE_ENTRY_LEAD, now_us, epoch);
}

/* ==== decoding =================================================================================== */

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        snprintf(err, STORE_ERR_LEN, __VA_ARGS__);                                                                     \
        return -1;                                                                                                     \
    } while (0)

/* One op message into ops[i] (its records stay in msgs[i]; outputs assigned later). */
static int s_op(store_entry_t *e, uint32_t i, const void *p, size_t len, char *err)
{
    proto_msg_t *m = &e->msgs[i];
    if (proto_decode(p, len, m) != PROTO_DEC_OK)
        FAIL("log entry op %u: %s", i, m->err);
    store_op_t *op = &e->ops[i];
    memset(op, 0, sizeof *op);
    op->type = m->type;
    op->has_cmd_id = m->has_cmd_id;
    memcpy(op->cmd_id, m->cmd_id, PROTO_CMD_ID_LEN);
    switch (m->type) {
    case PROTO_PUT:
    case PROTO_TOUCH:
        if (m->n == 0)
            FAIL("log entry op %u: a %s of no record", i, proto_type_name(m->type));
        op->n = m->n;
        op->in = m->recs;
        break;
    case PROTO_DEL:
        op->n = 1;
        m->recs = xcalloc(1, sizeof *m->recs); /* owned by the message: proto_msg_fini frees it */
        proto_record_set_uid(m->recs, m->key.p, m->key.len);
        op->in = m->recs;
        break;
    case PROTO_LEASE:
        op->n = 1;
        op->lease_id = m->lease_id;
        op->lease_op = m->op;
        op->lease_ttl_ms = m->ttl_ms;
        snprintf(op->lease_node, sizeof op->lease_node, "%s", m->node);
        break;
    default:
        FAIL("log entry op %u: a %s is not a write", i, proto_type_name(m->type));
    }
    return 0;
}

int store_entry_decode(const void *data, size_t len, store_entry_t *e, char *err)
{
    memset(e, 0, sizeof *e);
    const unsigned char *p = data;
    if (len < STORE_ENTRY_HDR || memcmp(p, ENTRY_MAGIC, 4) != 0 || p[5] || p[6] || p[7])
        FAIL("log entry of %zu bytes has no valid header", len);
    e->kind = p[4];
    e->now_us = s_get64(p + 8);
    e->arg = s_get64(p + 16);
    if (e->kind == STORE_ENTRY_SWEEP || e->kind == STORE_ENTRY_LEAD) {
        if (len != STORE_ENTRY_HDR)
            FAIL("log entry kind %u with %zu bytes after its header", e->kind, len - STORE_ENTRY_HDR);
        if (e->kind == STORE_ENTRY_SWEEP && (e->arg == 0 || e->arg > UINT32_MAX))
            FAIL("sweep entry with max %llu", (unsigned long long)e->arg);
        return 0;
    }
    if (e->kind != STORE_ENTRY_GROUP)
        FAIL("log entry of unknown kind %u", e->kind);
    if (e->arg == 0 || e->arg > PROTO_ITEMS_MAX || len == STORE_ENTRY_HDR)
        FAIL("group entry with %llu ops", (unsigned long long)e->arg);
    const void *body = p + STORE_ENTRY_HDR;
    size_t blen = len - STORE_ENTRY_HDR;
    e->nops = (uint32_t)e->arg;
    e->ops = xcalloc(e->nops, sizeof *e->ops);
    e->msgs = xcalloc(e->nops, sizeof *e->msgs);
    if (e->nops == 1) {
        if (s_op(e, 0, body, blen, err) < 0)
            return -1;
    } else {
        if (proto_decode(body, blen, &e->whole) != PROTO_DEC_OK)
            FAIL("group entry: %s", e->whole.err);
        if (e->whole.type != PROTO_BATCH || e->whole.n != e->nops)
            FAIL("group entry: %u ops announced, a %s of %u found", e->nops, proto_type_name(e->whole.type),
                 e->whole.n);
        for (uint32_t i = 0; i < e->nops; i++)
            if (s_op(e, i, e->whole.parts[i].p, e->whole.parts[i].len, err) < 0)
                return -1;
    }
    /* The stored records of PUTs and TOUCHes: one output per input record (bounded by the
     * decoder: at most PROTO_ITEMS_MAX per op, and by the entry's bytes). */
    size_t total = 0;
    for (uint32_t i = 0; i < e->nops; i++)
        if (e->ops[i].type == PROTO_PUT || e->ops[i].type == PROTO_TOUCH)
            total += e->ops[i].n;
    e->out = xcalloc(total ? total : 1, sizeof *e->out);
    for (uint32_t i = 0, at = 0; i < e->nops; i++) {
        if (e->ops[i].type == PROTO_PUT || e->ops[i].type == PROTO_TOUCH) {
            e->ops[i].out = &e->out[at];
            at += e->ops[i].n;
        }
    }
    return 0;
}

void store_entry_fini(store_entry_t *e)
{
    for (uint32_t i = 0; e->msgs && i < e->nops; i++)
        proto_msg_fini(&e->msgs[i]);
    proto_msg_fini(&e->whole);
    free(e->msgs);
    free(e->ops);
    free(e->out);
    memset(e, 0, sizeof *e);
}
