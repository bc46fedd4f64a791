/* fuzz_common.h -- small helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * FZ_CHECK(cond) states an invariant of the code under test: when it fails the target prints the
 * condition and aborts, which libFuzzer reports as a crash and saves the input. Targets never
 * check with assert() (NDEBUG would silently drop the oracle).
 *
 * fz_reader_t splits the fuzzer's bytes into fields: once the input runs out every getter returns
 * zeros / empty slices, so a target never reads past the input and every prefix is meaningful.
 */
#ifndef PRESENCE_FUZZ_COMMON_H
#define PRESENCE_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FZ_CHECK(cond)                                                                                               \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                            \
            abort();                                                                                                 \
        }                                                                                                            \
    } while (0)

/* The code under test logs through LOG(); a fuzzer run would drown in it. */
static inline void fz_quiet(void)
{
    log_min_level = LOG_ERROR + 1;
}

typedef struct fz_reader {
    const uint8_t *p;
    size_t left;
} fz_reader_t;

static inline void fz_init(fz_reader_t *r, const uint8_t *data, size_t size)
{
    r->p = data;
    r->left = size;
}

static inline uint8_t fz_u8(fz_reader_t *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

static inline uint16_t fz_u16(fz_reader_t *r)
{
    uint16_t hi = fz_u8(r);
    return (uint16_t)(hi << 8 | fz_u8(r));
}

static inline uint64_t fz_u64(fz_reader_t *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fz_u8(r);
    return v;
}

/* Up to `want` bytes (fewer when the input runs out). */
static inline const uint8_t *fz_bytes(fz_reader_t *r, size_t want, size_t *got)
{
    const uint8_t *p = r->p;
    *got = want < r->left ? want : r->left;
    r->p += *got;
    r->left -= *got;
    return p;
}

/* A chunk with a 16-bit length prefix. */
static inline const uint8_t *fz_chunk(fz_reader_t *r, size_t *got)
{
    return fz_bytes(r, fz_u16(r), got);
}

/* A copy of [p, p+n) in its own allocation of exactly n bytes, so AddressSanitizer sees any read
 * past the end of a slice (libFuzzer's own buffer is exactly sized, but slices of it are not). */
static inline char *fz_dup(const void *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    if (!d)
        abort();
    if (n)
        memcpy(d, p, n);
    return d;
}

/* The same with a terminating NUL (for APIs that take C strings). */
static inline char *fz_strdup(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        abort();
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

#endif
