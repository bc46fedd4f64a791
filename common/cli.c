/* cli.c -- --help, --version, the unknown-variable warning and the opening of main() shared by
 * every binary (cli.h).
 *
 * The version and commit are compiled into this file only (common/module.mk passes them as
 * -D flags and rebuilds it when the checkout's commit changes), so a new commit relinks the
 * binaries without recompiling everything.
 */
#include "cli.h"
#include "cfg.h"
#include "envreg.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PRESENCE_VERSION
#define PRESENCE_VERSION "dev"
#endif
#ifndef PRESENCE_COMMIT
#define PRESENCE_COMMIT "unknown"
#endif

const char *cli_version(void)
{
    return PRESENCE_VERSION;
}

const char *cli_commit(void)
{
    return PRESENCE_COMMIT;
}

static void s_usage(FILE *f, const cli_desc_t *d)
{
    fprintf(f, "usage: %s%s%s\n       %s --help | --version\n\n%s\n", d->name, d->usage[0] ? " " : "", d->usage, d->name,
            d->summary);
    if (d->more)
        fprintf(f, "\n%s", d->more);
    if (d->procs) {
        fprintf(f, "\nEnvironment (an invalid value stops the process with a message naming the variable):\n");
        envreg_usage(f, d->procs);
    }
}

void cli_usage_error(const cli_desc_t *d, const char *why)
{
    if (why)
        fprintf(stderr, "%s: %s\n", d->name, why);
    s_usage(stderr, d);
    exit(2);
}

void cli_handle(int argc, char **argv, const cli_desc_t *d)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout, d);
            exit(0);
        }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("%s %s (commit %s)\n", d->name, PRESENCE_VERSION, PRESENCE_COMMIT);
            exit(0);
        }
    }
    if (!d->takes_args && argc > 1) {
        char why[160];
        snprintf(why, sizeof why, "unexpected argument '%.100s' (configured by the environment only)", argv[1]);
        cli_usage_error(d, why);
    }
}

static void s_warn(const char *name, void *ctx)
{
    (void)ctx;
    LOG(LOG_WARN, "unknown variable %s in the environment is ignored (a typo? `--help` lists the variables)", name);
}

int cli_check_env(void)
{
    const char *done = getenv("PRESENCE_ENV_CHECKED");
    if (done && *done)
        return 0;
    return envreg_check_unknown(s_warn, NULL);
}

void cli_tool(int argc, char **argv, const char *name, const char *usage, const char *summary)
{
    cli_desc_t d = {.name = name, .summary = summary, .usage = usage, .takes_args = true};
    cli_handle(argc, argv, &d);
}

void cli_start(int argc, char **argv, const cli_desc_t *d, const char *log_component,
               int (*config)(void *arg, char *err), void *arg)
{
    cli_handle(argc, argv, d);
    char err[CFG_ERR_LEN] = "";
    if (log_init(log_component, err, sizeof err) < 0 || (cli_check_env(), config(arg, err) < 0)) {
        fprintf(stderr, "%s: %s\n", d->name, err);
        exit(2);
    }
}

static volatile sig_atomic_t *s_stop_flag;

static void on_stop_signal(int sig)
{
    (void)sig;
    *s_stop_flag = 1;
}

void cli_stop_on_signals(volatile sig_atomic_t *flag)
{
    s_stop_flag = flag;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}
