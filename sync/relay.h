/* relay.h -- the sync relay: a leaf region's one link to the center (sync/relay.c explains it).
 *
 * The process (sync/relay_main.c) reads the environment into a relay_config_t, makes a relay
 * (which binds the region's sockets and connects to the center) and runs it until a signal. The
 * same calls serve unit tests: a test binds its own "center" on inproc endpoints, makes a relay
 * between it and a "cache-node" DEALER of its own, and runs it on a thread of its own -- no
 * process, no sleep, real ZeroMQ (tests/unit/check_relay.c).
 *
 * A relay is one thread's: none of these calls is thread-safe.
 */
#ifndef PRESENCE_RELAY_H
#define PRESENCE_RELAY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct relay_config {
    char cmd_ep[512], pub_ep[512];         /* region side, bound: ROUTER (commands), PUB (stream) */
    char center[512];                      /* CENTER_ENDPOINT as given (tcp://HOST:P), for the logs */
    char center_cmd[600], center_pub[600]; /* the center's ROUTER (P) and PUB (P+1) */
    uint64_t window_max;                   /* RELAY_WINDOW_BYTES */
    uint64_t req_timeout_ms;               /* a forwarded command's deadline */
    uint64_t hb_limit_ms;                  /* the center's stream is silent after this long */
    bool curve;                            /* CurveZMQ client keys below (Z85) */
    char srv_pub[41], cli_pub[41], cli_sec[41];
} relay_config_t;

typedef struct relay relay_t;

/* Bind the region's sockets, connect to the center, start following its stream. Returns 0 with
 * *out set (the caller owns it: free with relay_destroy); or, with err (CFG_ERR_LEN) set, -1 when
 * a socket could not be bound or connected and -2 when libzmq refused the CurveZMQ keys (a
 * configuration error). zctx stays the caller's and must outlive the relay. */
int relay_new(void *zctx, const relay_config_t *c, relay_t **out, char *err);
/* Answer every command still out (EUNAVAIL "relay stopping"), close the sockets, free. NULL-safe;
 * sets *rp to NULL. */
void relay_destroy(relay_t **rp);

/* One loop turn: timers (deadlines, stats poll, heartbeat), a wait of at most a second, then every
 * socket drained. Returns 0, or -1 when polling failed. */
int relay_turn(relay_t *r, const volatile sig_atomic_t *stop);
/* Turns until *stop is set. Returns 0, or -1 when polling failed. */
int relay_run(relay_t *r, const volatile sig_atomic_t *stop);

#endif
