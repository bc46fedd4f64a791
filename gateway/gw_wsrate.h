/* gw_wsrate.h -- the per-connection message budget of the WebSocket endpoint: messages per
 * second with a burst, and a connection that goes over it is closed with 1008 (REALTIME.md).
 *
 * The bucket is GCRA (the "virtual scheduling" form of a token bucket): the whole state is one
 * 64-bit time, the theoretical arrival time of the next message, so it costs 8 bytes per
 * connection and needs no refill arithmetic. A message of cost c is allowed when the bucket,
 * refilled at `per_sec` tokens per second up to `burst`, still holds c tokens. Costs let the
 * gateway charge more for what it must reject (a malformed message costs GW_WSRATE_ERROR_COST),
 * so a client that keeps sending garbage is closed quickly while an occasional mistake is only
 * answered with an error.
 *
 * Threading: a gw_wsrate_t belongs to its connection's loop thread; the config is read-only.
 */
#ifndef PRESENCE_GW_WSRATE_H
#define PRESENCE_GW_WSRATE_H

#include <stdbool.h>
#include <stdint.h>

#define GW_WSRATE_PER_SEC_DEFAULT 20u /* messages per second, sustained */
#define GW_WSRATE_BURST_DEFAULT 60u   /* messages at once after a quiet period */
#define GW_WSRATE_ERROR_COST 5u       /* suggested cost of a message answered with an error */
#define GW_WSRATE_REASON "message rate over the limit" /* the 1008 close reason */

typedef struct gw_wsrate_cfg {
    uint32_t per_sec; /* tokens per second; 0 disables the limit */
    uint32_t burst;   /* bucket size in tokens; values below 1 act as 1 */
} gw_wsrate_cfg_t;

typedef struct gw_wsrate {
    uint64_t tat_us; /* theoretical arrival time; 0 = a full bucket */
} gw_wsrate_t;

/* A full bucket. */
void gw_wsrate_init(gw_wsrate_t *r);

/* Take `cost` tokens (0 counts as 1) at monotonic time now_us. Returns true when allowed (the
 * tokens are taken), false when the bucket does not hold them (nothing taken: the caller closes
 * with 1008 GW_WSRATE_REASON). A cost above the burst is never allowed. With cfg->per_sec == 0
 * always true. now_us must not go backwards by more than the bucket's span (a monotonic clock). */
bool gw_wsrate_take(gw_wsrate_t *r, const gw_wsrate_cfg_t *cfg, uint32_t cost, uint64_t now_us);

/* Whole tokens the bucket holds at now_us (for tests and metrics). */
uint32_t gw_wsrate_tokens(const gw_wsrate_t *r, const gw_wsrate_cfg_t *cfg, uint64_t now_us);

#endif
