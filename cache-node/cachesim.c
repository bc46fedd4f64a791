/* cachesim.c -- replay a key trace through the cache engine and print its hit ratio.
 *
 *   cachesim --policy lru|wtinylfu --size N [--seed S] FILE
 *
 * FILE is gzip or plain text (zlib's gzopen reads both), one key per line. CRLF is tolerated; blank
 * lines and lines holding only "*" (LIRS trace breakpoints) are skipped. Each key is a cache_get; a
 * miss is followed by a cache_put of version 1, as a read-through cache would do. The capacity is N
 * entries (unit cost). Output is exactly one line: "hits H refs R ratio X" with X in percent.
 *
 * It links the same engine (libcache.a) the cache-node runs, so the numbers describe the production one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cache-node/cache.h"

static void s_usage(const char *argv0)
{
    fprintf(stderr, "usage: %s --policy lru|wtinylfu --size N [--seed S] FILE\n", argv0);
}

/* Parse a decimal uint64 that must be the whole string. Returns 0 or -1. */
static int s_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *policy = NULL, *path = NULL;
    uint64_t size = 0, seed = 0;
    bool have_size = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--policy") == 0 && i + 1 < argc) {
            policy = argv[++i];
        } else if (strcmp(a, "--size") == 0 && i + 1 < argc) {
            if (s_parse_u64(argv[++i], &size) < 0 || size == 0) {
                fprintf(stderr, "cachesim: --size must be a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
            have_size = true;
        } else if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
            if (s_parse_u64(argv[++i], &seed) < 0) {
                fprintf(stderr, "cachesim: --seed must be a non-negative integer, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "cachesim: unknown or incomplete option '%s'\n", a);
            s_usage(argv[0]);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "cachesim: more than one trace file given\n");
            s_usage(argv[0]);
            return 2;
        }
    }
    if (!policy || !have_size || !path) {
        s_usage(argv[0]);
        return 2;
    }
    cache_config_t cfg = {.max_cost = size, .unit_cost = true, .seed = seed};
    if (strcmp(policy, "lru") == 0) {
        cfg.policy = CACHE_POLICY_LRU;
    } else if (strcmp(policy, "wtinylfu") == 0) {
        cfg.policy = CACHE_POLICY_WTINYLFU;
    } else {
        fprintf(stderr, "cachesim: unknown policy '%s' (lru or wtinylfu)\n", policy);
        return 2;
    }

    gzFile f = gzopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cachesim: cannot open %s: %s\n", path, errno ? strerror(errno) : "out of memory");
        return 1;
    }
    cache_t *c = cache_new(&cfg);
    if (!c) {
        fprintf(stderr, "cachesim: invalid cache configuration\n");
        gzclose(f);
        return 2;
    }

    int rc = 0;
    uint64_t hits = 0, refs = 0, lineno = 0;
    char line[CACHE_KEY_MAX + 4]; /* key, CR, LF, NUL */
    while (gzgets(f, line, (int)sizeof(line))) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            fprintf(stderr, "cachesim: %s:%llu: key longer than %u bytes\n", path, (unsigned long long)lineno,
                    CACHE_KEY_MAX);
            rc = 1;
            goto out;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0 || (n == 1 && line[0] == '*'))
            continue;
        if (n > CACHE_KEY_MAX) {
            fprintf(stderr, "cachesim: %s:%llu: key longer than %u bytes\n", path, (unsigned long long)lineno,
                    CACHE_KEY_MAX);
            rc = 1;
            goto out;
        }
        refs++;
        cache_view_t v;
        if (cache_get(c, line, n, &v)) {
            hits++;
        } else {
            cache_put(c, line, n, 1, "", 0, 0);
        }
    }
    int zerr;
    const char *msg = gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        fprintf(stderr, "cachesim: %s: read error: %s\n", path, zerr == Z_ERRNO ? strerror(errno) : msg);
        rc = 1;
        goto out;
    }
    printf("hits %llu refs %llu ratio %.2f\n", (unsigned long long)hits, (unsigned long long)refs,
           refs ? 100.0 * (double)hits / (double)refs : 0.0);
out:
    cache_destroy(&c);
    gzclose(f);
    return rc;
}
