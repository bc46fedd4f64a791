/* cli.h -- what every binary does with its command line before it starts anything, and the
 * opening every daemon's main() shares (cli_start, cli_stop_on_signals).
 *
 * `--help` (or -h) prints the usage, what the binary is for and the environment variables it
 * reads (from envreg.h), and exits 0; `--version` (or -V) prints the version and the commit it
 * was built from, and exits 0. Neither starts anything, opens anything or mints anything.
 * A daemon takes no arguments: anything else is a usage error (exit 2).
 *
 * cli_check_env() warns once per process tree about variables that look like ours but are not
 * (the launcher checks for its children and tells them so).
 */
#ifndef PRESENCE_CLI_H
#define PRESENCE_CLI_H

#include <signal.h>
#include <stdbool.h>

typedef struct cli_desc {
    const char *name;    /* the binary's name, e.g. "gateway" */
    const char *summary; /* one line: what it is */
    const char *usage;   /* the synopsis after the name, "" for none */
    const char *more;    /* further help text (may be NULL) */
    unsigned procs;      /* envreg bits: whose variables to list */
    bool takes_args;     /* false: any argument but --help/--version is an error */
} cli_desc_t;

/* Handle --help/--version anywhere in argv (exit 0 after printing); for a binary that takes no
 * arguments, exit 2 with the usage on stderr when given any. Returns only when the program
 * should go on. */
void cli_handle(int argc, char **argv, const cli_desc_t *d);

/* cli_handle for a test or benchmark tool (no environment of ours to list). */
void cli_tool(int argc, char **argv, const char *name, const char *usage, const char *summary);

/* Print the usage to stderr and exit 2 (for a program's own argument errors). */
void cli_usage_error(const cli_desc_t *d, const char *why);

/* The version string ("2.1.0") and the commit ("abc123def456" or "unknown"). */
const char *cli_version(void);
const char *cli_commit(void);

/* Warn (LOG_WARN) about every environment variable that looks like ours but is unknown, unless
 * PRESENCE_ENV_CHECKED is set (the launcher did it for the whole node). Call after log_init().
 * Returns how many were unknown. */
int cli_check_env(void);

/* The opening of every daemon's main(): cli_handle, log_init(log_component), cli_check_env (before
 * the configuration: a typo is named even when it makes the rest fail), then config(arg, err). When
 * logging or the configuration fails it prints "<name>: <err>" to stderr and exits 2; it returns
 * only when the daemon should go on. */
void cli_start(int argc, char **argv, const cli_desc_t *d, const char *log_component,
               int (*config)(void *arg, char *err), void *arg);

/* SIGTERM and SIGINT set *flag (the daemon's loop checks it); SIGPIPE is ignored. For a
 * single-threaded daemon (the gateway waits for its signals with sigwait instead). */
void cli_stop_on_signals(volatile sig_atomic_t *flag);

#endif
