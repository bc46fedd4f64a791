/* zutil.h -- thin helpers over raw libzmq sockets used by every process.
 *
 * Sockets made here have LINGER 0 (libzmq's default of -1 would hang zmq_ctx_term on unsent
 * messages to absent peers) and explicit high-water marks. Receives are whole multipart messages
 * with ZMQ_DONTWAIT; sends never block (DONTWAIT) and report EAGAIN to the caller, which turns it
 * into an overload answer or a counted drop.
 */
#ifndef PRESENCE_ZUTIL_H
#define PRESENCE_ZUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define ZU_FRAMES_MAX 4

/* Largest frame any socket accepts from a peer (ZMQ_MAXMSGSIZE): PROTO_FRAME_MAX, the largest
 * frame the wire protocol decodes (proto.h). Without it libzmq allocates whatever size a peer's
 * frame header claims (up to 2^63) and buffers the bytes as they come: one connection to a tcp
 * endpoint could make a process allocate gigabytes. A peer that announces a larger frame is
 * disconnected before anything is allocated. */
#define ZU_MAXMSGSIZE (16ll << 20)
/* A PUB socket only ever receives subscriptions (ours are 1-byte topics) and handshake commands
 * (a CURVE INITIATE is ~300 bytes). libzmq keeps every subscription in a trie costing ~32 bytes per
 * prefix byte: a 16 MiB subscription made a store-node grow by 512 MiB. */
#define ZU_PUB_MAXMSGSIZE 4096ll

/* Create a socket with LINGER 0, ZMQ_MAXMSGSIZE (ZU_PUB_MAXMSGSIZE for PUB/XPUB, else
 * ZU_MAXMSGSIZE) and the given HWMs (0 = libzmq default). NULL on error. */
void *zu_socket(void *ctx, int type, int sndhwm, int rcvhwm);

/* Receive one whole multipart message without blocking. Fills frames[0..*n) (initialised
 * zmq_msg_t the caller must close with zu_close_frames). Messages with more than `max` frames are
 * consumed and dropped. Returns 0, or -1 with errno (EAGAIN when nothing is waiting; EPROTO for
 * a message with too many frames). */
int zu_recv(void *sock, zmq_msg_t *frames, int max, int *n);
void zu_close_frames(zmq_msg_t *frames, int n);

/* Send [ident?, data]. With ident == NULL only the data frame is sent. `data` is copied.
 * Returns 0 or -1 with errno (EAGAIN at the HWM, EHOSTUNREACH for an unknown ROUTER peer). */
int zu_send(void *sock, const void *ident, size_t ident_len, const void *data, size_t len);
/* Same, but takes ownership of `data` (malloc'd), freeing it with free() once sent (or on error). */
int zu_send_owned(void *sock, const void *ident, size_t ident_len, void *data, size_t len);

/* True when the socket has a message waiting (reads ZMQ_EVENTS, which also processes the socket's
 * command mailbox as the ZMQ_FD contract requires). */
int zu_readable(void *sock);
/* The socket's ZMQ_FD (edge-style readiness signal; never read or written by us), or -1. */
int zu_fd(void *sock);

/* Write "ready <line>\n" to the fd named by READY_FD (if set) and close it. */
void zu_signal_ready(const char *line);

#endif
