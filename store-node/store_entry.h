/* store_entry.h -- the replicated store's log entries: what a leader proposes and every member
 * applies (docs/REPLICATION.md, "What a log entry is").
 *
 *   0       4      5       8               16              24
 *   +-------+------+-------+---------------+---------------+---------------------------------+
 *   | "PSE1"| kind | 0 0 0 | now_us (LE64) | arg (LE64)    | GROUP: the ops, one proto message |
 *   +-------+------+-------+---------------+---------------+---------------------------------+
 *
 *   GROUP  arg = number of ops; the ops are the commands as the wire carries them (PUT, TOUCH,
 *          DEL, LEASE; request id 0, no deadline, the command id when the sender gave one), as
 *          one BATCH message (or the lone command): decoded by proto_decode, as strictly as
 *          anything from the network.
 *   SWEEP  arg = users the sweep may touch (STORE_SWEEP_MAX of the leader)
 *   LEAD   arg = an epoch for a state that has none (0 when the leader's state has one)
 *
 * now_us is the leader's wall clock when it formed the entry: the only time an apply uses, so
 * every member computes the same result. Pure: no I/O, no state, thread-safe.
 */
#ifndef PRESENCE_STORE_ENTRY_H
#define PRESENCE_STORE_ENTRY_H

#include "proto.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define STORE_ENTRY_HDR 24
#define STORE_ENTRY_TARGET (1u << 20) /* a leader closes an entry once its ops reach this many bytes */

enum store_entry_kind { STORE_ENTRY_GROUP = 1, STORE_ENTRY_SWEEP = 2, STORE_ENTRY_LEAD = 3 };

/* A decoded entry. For GROUP, ops[i].in points into msgs[i] and ops[i].out into `out` (room for
 * every record of a PUT or TOUCH): ready for store_apply_at. Owned: release with store_entry_fini. */
typedef struct store_entry {
    uint8_t kind;
    uint64_t now_us, arg;
    uint32_t nops;
    store_op_t *ops;
    proto_msg_t *msgs;
    proto_msg_t whole; /* the BATCH (parts borrowed from the entry bytes) */
    proto_record_t *out;
} store_entry_t;

/* Append one op (a job's command) to the group being built in `ops` (a proto batch): the wire
 * encoding of op->type with op->in, op->n, the lease fields and the command id. `scratch` is a
 * buffer of the caller's. Returns the encoded size. */
size_t store_entry_add_op(proto_batch_t *ops, const store_op_t *op, proto_buf_t *scratch);
/* A GROUP entry of the ops collected in `ops` (n of them), into out (reset first). */
void store_entry_group(proto_buf_t *out, uint64_t now_us, const proto_batch_t *ops);
void store_entry_sweep(proto_buf_t *out, uint64_t now_us, uint32_t max);
void store_entry_lead(proto_buf_t *out, uint64_t now_us, uint64_t epoch);

/* Decode an entry (borrowed bytes: keep them alive while e is used). Returns 0, or -1 with err
 * (STORE_ERR_LEN) naming what is wrong; call store_entry_fini either way. */
int store_entry_decode(const void *data, size_t len, store_entry_t *e, char *err);
void store_entry_fini(store_entry_t *e);

#endif
