/* dispatch.c -- received frames to per-type handlers (see dispatch.h).
 *
 * One level of recursion at most: a BATCH's parts are dispatched as messages in their own right,
 * and a part that is itself a BATCH is refused as malformed, so a frame can never nest deeper.
 * No state, no I/O; reentrant.
 */
#include "dispatch.h"

static void s_malformed(const dispatch_t *d, void *ctx, const dispatch_in_t *in, const char *why)
{
    if (!d->on_malformed)
        return;
    uint8_t type;
    uint64_t rid;
    bool has_rid = in->raw && proto_peek_header(in->raw, in->raw_len, &type, &rid) == 0 && type != PROTO_BATCH;
    d->on_malformed(ctx, in, why, has_rid, has_rid ? rid : 0);
}

static void s_dispatch(const dispatch_t *d, void *ctx, const dispatch_in_t *in)
{
    proto_msg_t m;
    if (proto_decode(in->raw, in->raw_len, &m) != PROTO_DEC_OK) {
        s_malformed(d, ctx, in, m.err);
        proto_msg_fini(&m);
        return;
    }
    if (m.type == PROTO_BATCH) {
        if (in->in_batch) {
            s_malformed(d, ctx, in, "nested batch");
        } else {
            if (d->on_batch)
                d->on_batch(ctx, in, true);
            for (uint32_t i = 0; i < m.n; i++) {
                dispatch_in_t part = *in;
                part.raw = m.parts[i].p;
                part.raw_len = m.parts[i].len;
                part.in_batch = true;
                s_dispatch(d, ctx, &part);
            }
            if (d->on_batch)
                d->on_batch(ctx, in, false);
        }
        proto_msg_fini(&m);
        return;
    }
    dispatch_fn fn = d->on[m.type] ? d->on[m.type] : d->on_other;
    if (fn)
        fn(ctx, in, &m);
    proto_msg_fini(&m);
}

void dispatch_bytes(const dispatch_t *d, void *ctx, const dispatch_in_t *in)
{
    dispatch_in_t top = *in;
    top.in_batch = false;
    s_dispatch(d, ctx, &top);
}

void dispatch_frames(const dispatch_t *d, void *ctx, void *sock, zmq_msg_t *frames, int n)
{
    dispatch_in_t in = {.sock = sock};
    int want = d->routed ? 2 : 1;
    if (n != want || (d->routed && (zmq_msg_size(&frames[0]) == 0 || zmq_msg_size(&frames[0]) > DISPATCH_IDENT_MAX))) {
        if (d->on_malformed)
            d->on_malformed(ctx, &in, n == 0 ? "too many frames" : "unexpected framing", false, 0);
        return;
    }
    if (d->routed) {
        in.ident = zmq_msg_data(&frames[0]);
        in.ident_len = zmq_msg_size(&frames[0]);
    }
    in.raw = zmq_msg_data(&frames[want - 1]);
    in.raw_len = zmq_msg_size(&frames[want - 1]);
    s_dispatch(d, ctx, &in);
}
