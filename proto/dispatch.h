/* dispatch.h -- received frames to per-type handlers: framing check, decode, BATCH split.
 *
 * Every process reads protocol messages the same way: check the frames' shape ([ident, message]
 * on a ROUTER, [message] on a DEALER), decode, open a BATCH into its parts (a BATCH inside a BATCH
 * is malformed), and hand each message to the handler for its type. A dispatch_t is that table:
 * a process declares one per socket role, usually `static const`, with designated initialisers
 * (`.on = {[PROTO_GET] = s_on_read, ...}`), and feeds it whole received messages.
 *
 * It sits in proto/ (not common/) because it decodes: common/ stays below the wire format.
 * Nothing here does I/O or keeps state; the handlers run synchronously, in the caller's thread.
 */
#ifndef PRESENCE_DISPATCH_H
#define PRESENCE_DISPATCH_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define DISPATCH_IDENT_MAX 255 /* the longest routing id we accept (libzmq's are 5 bytes) */

/* Where one message came from. Borrowed: valid during the handler call only. */
typedef struct dispatch_in {
    void *sock;            /* the socket passed to dispatch_frames (the caller's to interpret) */
    const uint8_t *ident;  /* the sender's routing id on a ROUTER; NULL on a DEALER, or when the
                              framing was wrong */
    size_t ident_len;
    const void *raw;       /* this message's own bytes (a BATCH part: the part) */
    size_t raw_len;
    bool in_batch;         /* it was a part of a BATCH */
} dispatch_in_t;

/* A decoded message. `m` is the dispatcher's: released after the call (a handler may take an
 * array out of it, setting the field to NULL). */
typedef void (*dispatch_fn)(void *ctx, const dispatch_in_t *in, proto_msg_t *m);

typedef struct dispatch {
    bool routed;         /* frames are [ident, message] (a ROUTER); else [message] */
    dispatch_fn on[256]; /* by message type; NULL: on_other */
    dispatch_fn on_other; /* a type without a handler of its own; NULL: dropped */
    /* A frame that is not a message: wrong framing, undecodable, or a BATCH inside a BATCH. `why`
     * is a short reason (the decoder's). `has_rid`: its header was readable and names a request
     * (not a BATCH) -- the sender can be answered with rid. Optional (NULL: dropped). */
    void (*on_malformed)(void *ctx, const dispatch_in_t *in, const char *why, bool has_rid, uint64_t rid);
    /* A BATCH begins (begin) or ends (!begin); its parts are dispatched in between. Optional. */
    void (*on_batch)(void *ctx, const dispatch_in_t *in, bool begin);
} dispatch_t;

/* Dispatch one received message (frames[0..n), as zu_recv returns them; n == 0 stands for a
 * message zu_recv refused for having too many frames). The frames stay the caller's. */
void dispatch_frames(const dispatch_t *d, void *ctx, void *sock, zmq_msg_t *frames, int n);
/* Dispatch one message already out of its frames: in->raw/raw_len (and ident, sock) set by the
 * caller; in->in_batch false. */
void dispatch_bytes(const dispatch_t *d, void *ctx, const dispatch_in_t *in);

#endif
