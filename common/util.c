/* util.c -- allocation, clocks, hashing, time formatting and input validation helpers.
 *
 * The hash is ours: 8-byte little-endian words folded with a multiply/rotate step and a final
 * avalanche (util_mix64). It only has to be fast and well-distributed for routing and hash tables;
 * it is never used where an attacker gains from a collision beyond a slightly longer chain.
 */
#include "util.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void s_oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        s_oom(n);
    return p;
}

void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        s_oom(n * sz);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        s_oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int util_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

uint64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t util_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t s_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

uint64_t util_hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (len + 1));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h ^= util_mix64(w + 0x632be59bd9b4e019ULL);
        h = s_rotl(h, 29) * 0xbf58476d1ce4e5b9ULL;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t)p[i] << (8 * i);
    h ^= util_mix64(tail ^ 0x94d049bb133111ebULL);
    return util_mix64(h);
}

/* Civil-from-days (proleptic Gregorian), after Howard Hinnant's well-known derivation. */
static void s_civil(int64_t days, int *y, unsigned *m, unsigned *d)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    unsigned doe = (unsigned)(days - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

size_t util_fmt_time(uint64_t us, char *out)
{
    uint64_t secs = us / 1000000u;
    unsigned frac = (unsigned)(us % 1000000u);
    int64_t days = (int64_t)(secs / 86400u);
    unsigned sod = (unsigned)(secs % 86400u);
    int y;
    unsigned m, d;
    s_civil(days, &y, &m, &d);
    if (y > 9999)
        y = 9999;
    /* Hand-rolled: this runs for every record rendered, snprintf is ~10x slower. */
    char *o = out;
    o[0] = (char)('0' + y / 1000);
    o[1] = (char)('0' + y / 100 % 10);
    o[2] = (char)('0' + y / 10 % 10);
    o[3] = (char)('0' + y % 10);
    o[4] = '-';
    o[5] = (char)('0' + m / 10);
    o[6] = (char)('0' + m % 10);
    o[7] = '-';
    o[8] = (char)('0' + d / 10);
    o[9] = (char)('0' + d % 10);
    o[10] = 'T';
    unsigned hh = sod / 3600, mm = sod / 60 % 60, ss = sod % 60;
    o[11] = (char)('0' + hh / 10);
    o[12] = (char)('0' + hh % 10);
    o[13] = ':';
    o[14] = (char)('0' + mm / 10);
    o[15] = (char)('0' + mm % 10);
    o[16] = ':';
    o[17] = (char)('0' + ss / 10);
    o[18] = (char)('0' + ss % 10);
    o[19] = '.';
    for (int i = 25; i >= 20; i--) {
        o[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    o[26] = 'Z';
    o[27] = '\0';
    return 27;
}

static bool s_id_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '.': case '_': case '~': case '@': case ':': case '=': case '+': case '-':
        return true;
    default:
        return false;
    }
}

bool util_valid_user_id(const char *s, size_t len)
{
    if (len == 0 || len > UTIL_USER_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_id_char((unsigned char)s[i]))
            return false;
    return true;
}

bool util_valid_node_id(const char *s, size_t len)
{
    if (len == 0 || len > UTIL_NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_id_char((unsigned char)s[i]))
            return false;
    return true;
}

bool util_valid_message(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            p++;
            continue;
        }
        uint32_t cp;
        int n;
        if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1f;
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f;
            n = 2;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07;
            n = 3;
        } else {
            return false;
        }
        if (end - p <= n)
            return false;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false; /* overlong or out of range */
        if (cp >= 0xd800 && cp <= 0xdfff)
            return false; /* UTF-16 surrogates are not scalar values */
        if (cp >= 0x80 && cp <= 0x9f)
            return false; /* C1 controls */
        p += n + 1;
    }
    return true;
}

int util_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int util_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
