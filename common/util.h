/* util.h -- small helpers every process uses: allocation that aborts on OOM, clocks, hashing,
 * RFC 3339 time formatting and user-id validation.
 *
 * Everything here is thread-safe (no hidden state) unless a comment says otherwise.
 */
#ifndef PRESENCE_UTIL_H
#define PRESENCE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Allocation that never returns NULL: on OOM it logs and aborts (as redis zmalloc does).
 * Sizes controlled by clients must be bounded by the caller *before* calling these. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* The CPUs this process may run on (its affinity mask: a container's cpuset, taskset), at least 1;
 * the online CPUs when the mask cannot be read. What defaults sized to the machine use. */
int util_cpu_count(void);

/* Wall clock in microseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t util_now_us(void);
/* Monotonic clock in milliseconds / microseconds (CLOCK_MONOTONIC); never goes backwards. */
uint64_t util_mono_ms(void);
uint64_t util_mono_us(void);

/* 64-bit hash of a byte string (our own multiply-xorshift construction; not cryptographic).
 * Stable across processes and runs: the gateway's rendezvous routing depends on that. */
uint64_t util_hash64(const void *data, size_t len, uint64_t seed);
/* Finaliser for 64-bit integers (a bijection with good avalanche). */
static inline uint64_t util_mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

/* Format `us` (microseconds since epoch, UTC) as RFC 3339 with 6 fractional digits,
 * e.g. "2026-01-15T10:30:00.123456Z". `out` must hold UTIL_TIME_LEN bytes; returns the length (27). */
#define UTIL_TIME_LEN 32
size_t util_fmt_time(uint64_t us, char *out);

/* User ids: 1..128 bytes of [A-Za-z0-9._~@:=+-] (API.md). */
#define UTIL_USER_ID_MAX 128
bool util_valid_user_id(const char *s, size_t len);

/* Node ids (NODE_ID): 1..64 bytes of the same alphabet. */
#define UTIL_NODE_ID_MAX 64
bool util_valid_node_id(const char *s, size_t len);

/* True when `s[0..len)` is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and holds no
 * control characters (C0, DEL, C1). Used for status messages. */
bool util_valid_message(const char *s, size_t len);

/* Fill `buf` with `n` random bytes from getrandom(2). Returns 0, or -1 with errno. */
int util_random(void *buf, size_t n);

/* Write the whole buffer to fd, retrying on EINTR/short writes. Returns 0 or -1. */
int util_write_all(int fd, const void *buf, size_t n);

#endif
