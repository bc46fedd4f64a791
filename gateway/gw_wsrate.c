/* gw_wsrate.c -- per-connection message budget, GCRA in 8 bytes (see gw_wsrate.h).
 *
 * With emission interval T = 1 s / per_sec and bucket span tau = burst * T, the state `tat` is the
 * time at which the bucket would be full again. A message of cost c at time now is allowed iff
 * max(tat, now) + c*T - now <= tau; then tat = max(tat, now) + c*T. Integer microseconds
 * throughout (T is rounded down, which errs a hair towards allowing), so no floating point and no
 * drift. Threading: none (one connection, one thread).
 */
#include "gw_wsrate.h"

void gw_wsrate_init(gw_wsrate_t *r)
{
    r->tat_us = 0;
}

static uint64_t s_interval(const gw_wsrate_cfg_t *cfg)
{
    uint64_t t = 1000000u / cfg->per_sec;
    return t ? t : 1;
}

bool gw_wsrate_take(gw_wsrate_t *r, const gw_wsrate_cfg_t *cfg, uint32_t cost, uint64_t now_us)
{
    if (cfg->per_sec == 0)
        return true;
    uint64_t t = s_interval(cfg), burst = cfg->burst ? cfg->burst : 1;
    uint64_t start = r->tat_us > now_us ? r->tat_us : now_us;
    uint64_t next = start + (uint64_t)(cost ? cost : 1) * t;
    if (next - now_us > burst * t)
        return false;
    r->tat_us = next;
    return true;
}

uint32_t gw_wsrate_tokens(const gw_wsrate_t *r, const gw_wsrate_cfg_t *cfg, uint64_t now_us)
{
    uint64_t burst = cfg->burst ? cfg->burst : 1;
    if (cfg->per_sec == 0)
        return (uint32_t)burst;
    uint64_t t = s_interval(cfg);
    uint64_t owed = r->tat_us > now_us ? r->tat_us - now_us : 0; /* time until full */
    uint64_t missing = (owed + t - 1) / t;                         /* tokens not yet refilled */
    return missing >= burst ? 0 : (uint32_t)(burst - missing);
}
