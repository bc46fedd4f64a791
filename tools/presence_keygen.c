/* presence_keygen.c -- make a CurveZMQ key pair for the center <-> leaf link.
 *
 *   presence-keygen            print   CURVE_PUBLIC_KEY=<z85> and CURVE_SECRET_KEY=<z85>
 *   presence-keygen PREFIX     write   PREFIX.pub (0644) and PREFIX.secret (0600), one key per
 *                              file, the form the *_FILE variables read; existing files are
 *                              never overwritten (exit 1)
 *
 * The center's store-node takes its secret key (CURVE_SERVER_SECRET_KEY[_FILE]) and lists the
 * relays' public keys (CURVE_ALLOWED_CLIENTS[_FILE]); a leaf's relay takes the center's public key
 * (CURVE_SERVER_PUBLIC_KEY[_FILE]) and its own pair (CURVE_PUBLIC_KEY, CURVE_SECRET_KEY).
 */
#include "cli.h"
#include "envreg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static int s_write(const char *prefix, const char *ext, const char *key, mode_t mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "presence-keygen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = strlen(key);
    int ok = write(fd, key, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
    if (close(fd) < 0 || !ok) {
        fprintf(stderr, "presence-keygen: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static const cli_desc_t s_cli = {
    .name = "presence-keygen",
    .summary = "Make a CurveZMQ key pair for the center <-> leaf link.",
    .usage = "[PREFIX]",
    .more = "Without PREFIX it prints CURVE_PUBLIC_KEY=<z85> and CURVE_SECRET_KEY=<z85>; with PREFIX it writes\n"
            "PREFIX.pub (0644) and PREFIX.secret (0600), never overwriting a file (exit 1).\n",
    .procs = ENVREG_KEYGEN,
    .takes_args = true,
};

int main(int argc, char **argv)
{
    cli_handle(argc, argv, &s_cli);
    if (argc > 2 || (argc == 2 && (argv[1][0] == '-' || !argv[1][0])))
        cli_usage_error(&s_cli, argc > 2 ? "at most one PREFIX" : "PREFIX must be a file name prefix");
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "presence-keygen: zmq_curve_keypair: %s (libzmq built without CURVE?)\n",
                zmq_strerror(errno));
        return 1;
    }
    if (argc == 1) {
        printf("CURVE_PUBLIC_KEY=%s\nCURVE_SECRET_KEY=%s\n", pub, sec);
        return 0;
    }
    char path[4096];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s.%s", argv[1], i ? "pub" : "secret");
        if (access(path, F_OK) == 0) {
            fprintf(stderr, "presence-keygen: %s exists; not overwriting\n", path);
            return 1;
        }
    }
    if (s_write(argv[1], "secret", sec, 0600) < 0 || s_write(argv[1], "pub", pub, 0644) < 0)
        return 1;
    return 0;
}
