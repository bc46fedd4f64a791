/* envreg.h -- the one list of every environment variable the processes read.
 *
 * Each process reads its settings with cfg.h; every name it reads must be listed here (cfg.c
 * aborts at startup on a name that is not: a new setting cannot be added without its line, its
 * default and its meaning). The list serves three purposes:
 *   - `--help` of each binary prints the variables that binary reads (envreg_usage);
 *   - a variable that looks like ours (one of ENVREG_PREFIXES) but is not in the list gets a
 *     warning at startup naming it (a typo such as RATE_LIMIT_WRITES_BURST would otherwise be
 *     ignored silently);
 *   - tests check docs/CONFIG.md and the README against it.
 *
 * Read-only data and pure functions: thread-safe.
 */
#ifndef PRESENCE_ENVREG_H
#define PRESENCE_ENVREG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Which processes read a variable (bit set). */
enum envreg_proc {
    ENVREG_GATEWAY = 1u << 0,
    ENVREG_CACHE = 1u << 1,
    ENVREG_STORE = 1u << 2,
    ENVREG_RELAY = 1u << 3,
    ENVREG_LAUNCHER = 1u << 4,
    ENVREG_PROBE = 1u << 5,
    ENVREG_TOKEN = 1u << 6,
    ENVREG_KEYGEN = 1u << 7,
    ENVREG_NOTIFIER = 1u << 8,
};
#define ENVREG_DAEMONS (ENVREG_GATEWAY | ENVREG_CACHE | ENVREG_STORE | ENVREG_RELAY | ENVREG_LAUNCHER | ENVREG_NOTIFIER)

typedef struct envreg_var {
    const char *name;
    unsigned procs;   /* enum envreg_proc bits */
    const char *def;  /* the default as a user would write it ("" = none / required) */
    const char *help; /* one line */
} envreg_var_t;

/* The whole list, in the order --help prints it. *n is set to its length. */
const envreg_var_t *envreg_all(size_t *n);
/* The entry for `name`, or NULL when it is not ours. A NAME_FILE variant of a listed NAME whose
 * entry says so (help mentions "_FILE") is found through NAME. */
const envreg_var_t *envreg_find(const char *name);
/* True when `name` starts with one of the prefixes our variables use (PRESENCE_, RATE_LIMIT_,
 * CORS_, CACHE_, GATEWAY_, STORE_, SYNC_, WS_, JWT_, SSE_, RELAY_, CENTER_, CURVE_, WEBHOOK_). */
bool envreg_looks_ours(const char *name);
/* Call `warn(name, ctx)` for every variable of the environment that looks ours but is not
 * listed. Returns how many there were. */
int envreg_check_unknown(void (*warn)(const char *name, void *ctx), void *ctx);
/* Print "  NAME  default  meaning" lines for the variables of processes `procs` to f. */
void envreg_usage(FILE *f, unsigned procs);

#endif
