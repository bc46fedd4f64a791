/* check_common.c -- Check suite for common/: util.h (time formatting, id and message validation,
 * hashing) and cfg.h (strict environment parsing).
 *
 * Time formatting is checked against hand-verified instants (epoch, leap days, year ends) and
 * against gmtime_r over many pseudo-random instants. Message validation is checked byte class by
 * byte class and then exhaustively against an independent reference decoder written from the
 * Unicode "well-formed byte sequences" table (all 1-, 2- and 3-byte strings, sampled 4-byte ones).
 * util_hash64 values are pinned: gateways route by it, so a change must be deliberate.
 *
 * cfg tests set and unset their own variables inside each (forked) test, so nothing leaks between
 * tests. Single-threaded; no files, no network.
 */
#include "cfg.h"
#include "envreg.h"
#include "log.h"
#include "proto.h"
#include "util.h"
#include "zutil.h"

#include <check.h>
#include <sched.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A small deterministic PRNG (splitmix64) so failures reproduce. */
static uint64_t s_rng(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------------------------------------------
 * util_fmt_time
 * ------------------------------------------------------------------------------------------------- */

static void s_check_time(uint64_t us, const char *want)
{
    char out[UTIL_TIME_LEN];
    memset(out, 'x', sizeof out);
    size_t n = util_fmt_time(us, out);
    ck_assert_uint_eq(n, 27);
    ck_assert_uint_eq(strlen(out), 27);
    ck_assert_msg(strcmp(out, want) == 0, "util_fmt_time(%llu) = %s, want %s", (unsigned long long)us, out, want);
}

START_TEST(test_time_known)
{
    s_check_time(0, "1970-01-01T00:00:00.000000Z");
    s_check_time(1, "1970-01-01T00:00:00.000001Z");
    s_check_time(999999, "1970-01-01T00:00:00.999999Z");
    s_check_time(1000000, "1970-01-01T00:00:01.000000Z");
    s_check_time(86399999999ULL, "1970-01-01T23:59:59.999999Z");
    s_check_time(86400000000ULL, "1970-01-02T00:00:00.000000Z");
    /* the example of API.md */
    s_check_time(1768473000ULL * 1000000 + 123456, "2026-01-15T10:30:00.123456Z");
    /* leap days: an ordinary leap year, a 400-year leap year, the first after the epoch */
    s_check_time(1709251199ULL * 1000000 + 999999, "2024-02-29T23:59:59.999999Z");
    s_check_time(1709251200ULL * 1000000, "2024-03-01T00:00:00.000000Z");
    s_check_time(951825600ULL * 1000000, "2000-02-29T12:00:00.000000Z");
    s_check_time(68169600ULL * 1000000, "1972-02-29T00:00:00.000000Z");
    /* 2100 is not a leap year: Feb 28 is followed by Mar 1 */
    s_check_time(4107542399ULL * 1000000, "2100-02-28T23:59:59.000000Z");
    s_check_time(4107542400ULL * 1000000, "2100-03-01T00:00:00.000000Z");
    /* ends of years */
    s_check_time(1704067199ULL * 1000000 + 999999, "2023-12-31T23:59:59.999999Z");
    s_check_time(1704067200ULL * 1000000, "2024-01-01T00:00:00.000000Z");
    s_check_time((1704067200ULL - 86400) * 1000000, "2023-12-31T00:00:00.000000Z");
    s_check_time(1735689599ULL * 1000000, "2024-12-31T23:59:59.000000Z"); /* day 366 of a leap year */
    /* past 32-bit time_t */
    s_check_time(2147483648ULL * 1000000, "2038-01-19T03:14:08.000000Z");
    /* the last representable second */
    s_check_time(253402300799ULL * 1000000 + 999999, "9999-12-31T23:59:59.999999Z");
    /* the project's test clock base */
    s_check_time(1700000000000000ULL, "2023-11-14T22:13:20.000000Z");
}
END_TEST

START_TEST(test_time_vs_gmtime)
{
    uint64_t st = 12345;
    for (int i = 0; i < 200000; i++) {
        /* up to year 9999 */
        uint64_t us = s_rng(&st) % (253402300800ULL * 1000000);
        time_t secs = (time_t)(us / 1000000);
        struct tm tm;
        ck_assert_ptr_nonnull(gmtime_r(&secs, &tm));
        char want[64], head[32];
        strftime(head, sizeof head, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(want, sizeof want, "%s.%06uZ", head, (unsigned)(us % 1000000));
        char out[UTIL_TIME_LEN];
        util_fmt_time(us, out);
        ck_assert_msg(strcmp(out, want) == 0, "us=%llu: got %s want %s", (unsigned long long)us, out, want);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * user and node ids
 * ------------------------------------------------------------------------------------------------- */

static int s_allowed(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._~@:=+-", c) != NULL;
}

START_TEST(test_user_id_alphabet)
{
    for (int c = 0; c < 256; c++) {
        char s[3] = {'a', (char)c, 'b'};
        bool want = c != 0 && s_allowed(c);
        ck_assert_msg(util_valid_user_id(s, 3) == want, "byte 0x%02x: want %d", c, want);
        ck_assert_msg(util_valid_user_id(s + 1, 1) == want, "single byte 0x%02x: want %d", c, want);
        ck_assert_msg(util_valid_node_id(s, 3) == want, "node byte 0x%02x: want %d", c, want);
    }
    ck_assert(util_valid_user_id("alice", 5));
    ck_assert(util_valid_user_id("user.name+tag@example.com", 25));
    ck_assert(util_valid_user_id("a:b=c~d_e-f", 11));
    ck_assert(!util_valid_user_id("a b", 3));
    ck_assert(!util_valid_user_id("a/b", 3));
    ck_assert(!util_valid_user_id("a%20b", 5));
    ck_assert(!util_valid_user_id("caf\xc3\xa9", 5)); /* non-ASCII */
    /* the length is what counts, not a NUL */
    ck_assert(!util_valid_user_id("ab\0cd", 5));
    ck_assert(util_valid_user_id("ab\0cd", 2));
}
END_TEST

START_TEST(test_user_id_length)
{
    char buf[300];
    memset(buf, 'u', sizeof buf);
    ck_assert(!util_valid_user_id(buf, 0));
    ck_assert(!util_valid_user_id("", 0));
    ck_assert(util_valid_user_id(buf, 1));
    ck_assert(util_valid_user_id(buf, 127));
    ck_assert(util_valid_user_id(buf, 128));
    ck_assert(!util_valid_user_id(buf, 129));
    ck_assert(!util_valid_user_id(buf, 300));
    ck_assert_int_eq(UTIL_USER_ID_MAX, 128);

    ck_assert(!util_valid_node_id(buf, 0));
    ck_assert(util_valid_node_id(buf, 64));
    ck_assert(!util_valid_node_id(buf, 65));
    ck_assert_int_eq(UTIL_NODE_ID_MAX, 64);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * util_valid_message
 * ------------------------------------------------------------------------------------------------- */

static bool s_msg_ok(const char *s)
{
    return util_valid_message(s, strlen(s));
}

START_TEST(test_message_valid)
{
    ck_assert(util_valid_message("", 0));
    ck_assert(s_msg_ok("In a meeting until 3pm!"));
    ck_assert(s_msg_ok(" ~ "));                     /* space and tilde are printable */
    ck_assert(s_msg_ok("caf\xc3\xa9"));             /* U+00E9, 2 bytes */
    ck_assert(s_msg_ok("\xc2\xa0"));                /* U+00A0: first after C1 */
    ck_assert(s_msg_ok("\xdf\xbf"));                /* U+07FF: last 2-byte */
    ck_assert(s_msg_ok("\xe0\xa0\x80"));            /* U+0800: first 3-byte */
    ck_assert(s_msg_ok("\xe2\x82\xac"));            /* U+20AC euro */
    ck_assert(s_msg_ok("\xed\x9f\xbf"));            /* U+D7FF: just below surrogates */
    ck_assert(s_msg_ok("\xee\x80\x80"));            /* U+E000: just above surrogates */
    ck_assert(s_msg_ok("\xef\xbf\xbd"));            /* U+FFFD */
    ck_assert(s_msg_ok("\xf0\x90\x80\x80"));        /* U+10000: first 4-byte */
    ck_assert(s_msg_ok("\xf0\x9f\x98\x80"));        /* U+1F600 emoji */
    ck_assert(s_msg_ok("\xf4\x8f\xbf\xbf"));        /* U+10FFFF: the last scalar value */
    ck_assert(s_msg_ok("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89 ok")); /* mixed */
    /* the length argument bounds the scan: a multibyte char ending exactly at len */
    ck_assert(util_valid_message("\xe2\x82\xac" "\x01", 3));
}
END_TEST

START_TEST(test_message_invalid)
{
    static const char *const bad[] = {
        "\xc0\x80",             /* overlong NUL */
        "\xc0\xaf",             /* overlong '/' */
        "\xc1\xbf",             /* overlong 2-byte */
        "\xe0\x80\x80",         /* overlong 3-byte */
        "\xe0\x9f\xbf",         /* overlong U+07FF */
        "\xf0\x80\x80\x80",     /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf",     /* overlong U+FFFF */
        "\xed\xa0\x80",         /* U+D800 high surrogate */
        "\xed\xbf\xbf",         /* U+DFFF low surrogate */
        "\xed\xa0\xbd\xed\xb8\x80", /* a CESU-8 surrogate pair */
        "\xf4\x90\x80\x80",     /* U+110000 */
        "\xf5\x80\x80\x80",     /* lead byte beyond U+10FFFF */
        "\xf7\xbf\xbf\xbf",
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "\xfc\x84\x80\x80\x80\x80",
        "\xfe",
        "\xff",
        "\x80",                 /* lone continuation bytes */
        "\xbf",
        "a\x80" "b",
        "\xc3",                 /* truncated sequences */
        "\xe2\x82",
        "\xf0\x9f\x98",
        "ok\xf0\x9f",
        "\xc3\x28",             /* bad continuation */
        "\xe2\x28\xa1",
        "\xe2\x82\x28",
        "\xf0\x28\x8c\xbc",
        "\xf0\x90\x28\xbc",
        "\xf0\x90\x8c\x28",
        "\t", "\n", "\r", "a\x1b[31m", "\x1f", "\x7f", /* C0 and DEL */
        "\xc2\x80", "\xc2\x85", "\xc2\x9f",            /* C1 */
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        ck_assert_msg(!s_msg_ok(bad[i]), "bad[%zu] accepted", i);
    /* NUL inside the length */
    ck_assert(!util_valid_message("a\0b", 3));
    /* the length bounds the scan: a sequence cut by len is truncated */
    ck_assert(!util_valid_message("\xe2\x82\xac", 2));
    for (int c = 0; c < 0x20; c++) {
        char s[3] = {'x', (char)c, 'y'};
        ck_assert_msg(!util_valid_message(s, 3), "C0 0x%02x accepted", c);
    }
    for (int c = 0x80; c <= 0x9f; c++) {
        char s[2] = {(char)0xc2, (char)c};
        ck_assert_msg(!util_valid_message(s, 2), "C1 U+%04X accepted", c);
    }
}
END_TEST

/* Reference: is s[0..len) one well-formed UTF-8 sequence per Unicode Table 3-7, whose scalar
 * value is not a control (C0, DEL, C1)? Written independently of util.c, table-driven. */
static bool s_ref_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char b = s[i];
        unsigned lo2 = 0x80, hi2 = 0xbf;
        size_t n;
        if (b <= 0x7f) {
            if (b < 0x20 || b == 0x7f)
                return false;
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            n = 2;
            if (b == 0xc2 && i + 1 < len && s[i + 1] <= 0x9f)
                return false; /* U+0080..U+009F */
        } else if (b == 0xe0) {
            n = 3, lo2 = 0xa0;
        } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
            n = 3;
        } else if (b == 0xed) {
            n = 3, hi2 = 0x9f;
        } else if (b == 0xf0) {
            n = 4, lo2 = 0x90;
        } else if (b >= 0xf1 && b <= 0xf3) {
            n = 4;
        } else if (b == 0xf4) {
            n = 4, hi2 = 0x8f;
        } else {
            return false;
        }
        if (i + n > len)
            return false;
        if (s[i + 1] < lo2 || s[i + 1] > hi2)
            return false;
        for (size_t k = 2; k < n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += n;
    }
    return true;
}

START_TEST(test_message_exhaustive)
{
    unsigned char s[4];
    /* every 1- and 2-byte string */
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        ck_assert_msg(util_valid_message((char *)s, 1) == s_ref_valid(s, 1), "%02x", a);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            ck_assert_msg(util_valid_message((char *)s, 2) == s_ref_valid(s, 2), "%02x %02x", a, b);
        }
    }
    /* every 3-byte string with a lead byte >= 0xc0 (ASCII leads are covered above) */
    for (unsigned a = 0xc0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (unsigned c = 0; c < 256; c++) {
                s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c;
                if (util_valid_message((char *)s, 3) != s_ref_valid(s, 3))
                    ck_abort_msg("%02x %02x %02x: got %d", a, b, c, util_valid_message((char *)s, 3));
            }
    /* 4-byte strings: every lead and second byte with sampled tails */
    uint64_t st = 99;
    for (unsigned a = 0xe0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (int k = 0; k < 16; k++) {
                uint64_t r = s_rng(&st);
                s[0] = (unsigned char)a, s[1] = (unsigned char)b;
                /* bias the tail towards continuation bytes so valid sequences are common */
                s[2] = (unsigned char)((r & 1) ? 0x80 | ((r >> 8) & 0x3f) : (r >> 8));
                s[3] = (unsigned char)((r & 2) ? 0x80 | ((r >> 16) & 0x3f) : (r >> 16));
                if (util_valid_message((char *)s, 4) != s_ref_valid(s, 4))
                    ck_abort_msg("%02x %02x %02x %02x", s[0], s[1], s[2], s[3]);
            }
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * util_hash64
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_hash_pinned)
{
    /* Computed once from the implementation and pinned: rendezvous routing across gateway
     * processes (and versions, during a rolling upgrade) depends on these staying put. */
    static const struct {
        const char *s;
        uint64_t seed, want;
    } pins[] = {
        {"", 0, 0xe34b2c502c83d4e5ULL},
        {"a", 0, 0x7c48a314957eddfbULL},
        {"alice", 0, 0x9723ebd089dd504aULL},
        {"12345678", 0, 0xfb53f4c8d9709747ULL},
        {"123456789", 0, 0x9b30bea1f9349eedULL},
        {"user@example.com", 0, 0x634cde1288b1d80eULL},
        {"The quick brown fox jumps over the lazy dog", 0, 0xe6418685157d9e4bULL},
        {"alice", 42, 0xd858fd5bf8ea82acULL},
        {"alice", 0x5eed5, 0x8e46e7a80aff2ea7ULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(pins); i++) {
        uint64_t h = util_hash64(pins[i].s, strlen(pins[i].s), pins[i].seed);
        ck_assert_msg(h == pins[i].want, "hash(\"%s\", %llu) = 0x%016llx, pinned 0x%016llx", pins[i].s,
                      (unsigned long long)pins[i].seed, (unsigned long long)h, (unsigned long long)pins[i].want);
    }
    ck_assert_uint_eq(util_mix64(0), 0);
    ck_assert_uint_eq(util_mix64(1), 0x4179b061e0c0e0d0ULL);
}
END_TEST

START_TEST(test_hash_properties)
{
    /* alignment does not matter, only the bytes */
    char buf[80], key[] = "some-user@example.org";
    size_t kl = strlen(key);
    uint64_t h0 = util_hash64(key, kl, 7);
    for (int off = 0; off < 8; off++) {
        memcpy(buf + off, key, kl);
        ck_assert_uint_eq(util_hash64(buf + off, kl, 7), h0);
    }
    /* the seed matters; repeated calls agree */
    ck_assert_uint_ne(util_hash64(key, kl, 8), h0);
    ck_assert_uint_eq(util_hash64(key, kl, 7), h0);
    /* every prefix length of a zero buffer hashes differently (the length is mixed in) */
    memset(buf, 0, sizeof buf);
    uint64_t hs[65];
    for (int n = 0; n <= 64; n++) {
        hs[n] = util_hash64(buf, (size_t)n, 0);
        for (int m = 0; m < n; m++)
            ck_assert_msg(hs[m] != hs[n], "zero buffers of %d and %d bytes collide", m, n);
    }
    /* single-bit flips change about half the output bits (avalanche, loosely) */
    uint64_t total = 0;
    int trials = 0;
    for (size_t byte = 0; byte < kl; byte++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(buf, key, kl);
            buf[byte] ^= (char)(1 << bit);
            total += (uint64_t)__builtin_popcountll(util_hash64(buf, kl, 7) ^ h0);
            trials++;
        }
    double avg = (double)total / trials;
    ck_assert_msg(avg > 28 && avg < 36, "average flipped bits %.2f", avg);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * cfg
 * ------------------------------------------------------------------------------------------------- */

#define VAR "PRESENCE_TTL" /* any listed variable (cfg.c refuses others) */

/* The error must name the variable. */
static void s_err_names(const char *err)
{
    ck_assert_msg(strstr(err, VAR) != NULL, "error does not name the variable: '%s'", err);
}

START_TEST(test_cfg_u64)
{
    char err[CFG_ERR_LEN] = "";
    uint64_t v = 77;
    unsetenv(VAR);
    ck_assert_int_eq(cfg_u64(VAR, 1, 100, &v, err), 0);
    ck_assert_uint_eq(v, 77); /* unset: default kept */
    setenv(VAR, "", 1);
    ck_assert_int_eq(cfg_u64(VAR, 1, 100, &v, err), 0);
    ck_assert_uint_eq(v, 77); /* empty: default kept */
    setenv(VAR, "42", 1);
    ck_assert_int_eq(cfg_u64(VAR, 1, 100, &v, err), 0);
    ck_assert_uint_eq(v, 42);
    setenv(VAR, "1", 1);
    ck_assert_int_eq(cfg_u64(VAR, 1, 100, &v, err), 0);
    ck_assert_uint_eq(v, 1);
    setenv(VAR, "100", 1);
    ck_assert_int_eq(cfg_u64(VAR, 1, 100, &v, err), 0);
    ck_assert_uint_eq(v, 100);
    setenv(VAR, "18446744073709551615", 1);
    ck_assert_int_eq(cfg_u64(VAR, 0, UINT64_MAX, &v, err), 0);
    ck_assert_uint_eq(v, UINT64_MAX);

    static const char *const bad[] = {"0", "101", "abc", "-1", "+5", " 5", "5 ", "4x", "0x10", "1e3", "3.0",
                                      "18446744073709551616", "99999999999999999999999"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        v = 55;
        err[0] = '\0';
        setenv(VAR, bad[i], 1);
        ck_assert_msg(cfg_u64(VAR, 1, 100, &v, err) == -1, "'%s' accepted", bad[i]);
        ck_assert_uint_eq(v, 55); /* untouched on error */
        s_err_names(err);
    }
}
END_TEST

START_TEST(test_cfg_bool)
{
    char err[CFG_ERR_LEN] = "";
    bool v = true;
    unsetenv(VAR);
    ck_assert_int_eq(cfg_bool(VAR, &v, err), 0);
    ck_assert(v);
    setenv(VAR, "", 1);
    ck_assert_int_eq(cfg_bool(VAR, &v, err), 0);
    ck_assert(v);
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < ARRAY_LEN(no); i++) {
        v = true;
        setenv(VAR, no[i], 1);
        ck_assert_int_eq(cfg_bool(VAR, &v, err), 0);
        ck_assert_msg(!v, "'%s' is not false", no[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        v = false;
        setenv(VAR, yes[i], 1);
        ck_assert_int_eq(cfg_bool(VAR, &v, err), 0);
        ck_assert_msg(v, "'%s' is not true", yes[i]);
    }
    static const char *const bad[] = {"maybe", "2", "tru", "yes please", " true", "-1"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        v = true;
        err[0] = '\0';
        setenv(VAR, bad[i], 1);
        ck_assert_msg(cfg_bool(VAR, &v, err) == -1, "'%s' accepted", bad[i]);
        ck_assert(v);
        s_err_names(err);
    }
}
END_TEST

START_TEST(test_cfg_enum)
{
    static const char *const choices[] = {"center", "leaf", NULL};
    char err[CFG_ERR_LEN] = "";
    int v = 0;
    unsetenv(VAR);
    ck_assert_int_eq(cfg_enum(VAR, choices, &v, err), 0);
    ck_assert_int_eq(v, 0);
    setenv(VAR, "", 1);
    v = 1;
    ck_assert_int_eq(cfg_enum(VAR, choices, &v, err), 0);
    ck_assert_int_eq(v, 1);
    setenv(VAR, "leaf", 1);
    v = 0;
    ck_assert_int_eq(cfg_enum(VAR, choices, &v, err), 0);
    ck_assert_int_eq(v, 1);
    setenv(VAR, "center", 1);
    ck_assert_int_eq(cfg_enum(VAR, choices, &v, err), 0);
    ck_assert_int_eq(v, 0);
    static const char *const bad[] = {"edge", "lea", "leafy", "center,leaf", " leaf"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        v = 1;
        err[0] = '\0';
        setenv(VAR, bad[i], 1);
        ck_assert_msg(cfg_enum(VAR, choices, &v, err) == -1, "'%s' accepted", bad[i]);
        ck_assert_int_eq(v, 1);
        s_err_names(err);
        ck_assert_ptr_nonnull(strstr(err, "center"));
        ck_assert_ptr_nonnull(strstr(err, "leaf"));
    }
}
END_TEST

START_TEST(test_cfg_duration)
{
    char err[CFG_ERR_LEN] = "";
    uint64_t v = 1234;
    const uint64_t day = 86400000ULL;
    unsetenv(VAR);
    ck_assert_int_eq(cfg_duration_ms(VAR, 1000, 0, 400 * day, &v, err), 0);
    ck_assert_uint_eq(v, 1234);
    setenv(VAR, "", 1);
    ck_assert_int_eq(cfg_duration_ms(VAR, 1000, 0, 400 * day, &v, err), 0);
    ck_assert_uint_eq(v, 1234);
    static const struct {
        const char *in;
        uint64_t unit, want;
    } ok[] = {
        {"5", 1000, 5000},   {"5", 1, 5},            {"250ms", 1000, 250}, {"7s", 1, 7000},
        {"2m", 1000, 120000}, {"3h", 1000, 10800000}, {"30d", 1000, 30 * 86400000ULL},
        {"0", 1000, 0},      {"0s", 1000, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        setenv(VAR, ok[i].in, 1);
        v = 1;
        ck_assert_msg(cfg_duration_ms(VAR, ok[i].unit, 0, 400 * day, &v, err) == 0, "'%s' rejected: %s", ok[i].in, err);
        ck_assert_msg(v == ok[i].want, "'%s' = %llu, want %llu", ok[i].in, (unsigned long long)v,
                      (unsigned long long)ok[i].want);
    }
    static const char *const bad[] = {"5x", "ms", "s", "-5s", "5 s", " 5", "5.5s", "5sec", "1w",
                                      "18446744073709551615d", "99999999999999999999", "401d"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        v = 1234;
        err[0] = '\0';
        setenv(VAR, bad[i], 1);
        ck_assert_msg(cfg_duration_ms(VAR, 1000, 0, 400 * day, &v, err) == -1, "'%s' accepted", bad[i]);
        ck_assert_uint_eq(v, 1234);
        s_err_names(err);
    }
    /* below the minimum */
    setenv(VAR, "999ms", 1);
    ck_assert_int_eq(cfg_duration_ms(VAR, 1000, 1000, 400 * day, &v, err), -1);
    s_err_names(err);
    setenv(VAR, "1s", 1);
    ck_assert_int_eq(cfg_duration_ms(VAR, 1000, 1000, 400 * day, &v, err), 0);
    ck_assert_uint_eq(v, 1000);
}
END_TEST

START_TEST(test_cfg_str)
{
    char err[CFG_ERR_LEN] = "";
    char out[8] = "dflt";
    unsetenv(VAR);
    ck_assert_int_eq(cfg_str(VAR, out, sizeof out, err), 0);
    ck_assert_str_eq(out, "dflt");
    setenv(VAR, "", 1);
    ck_assert_int_eq(cfg_str(VAR, out, sizeof out, err), 0);
    ck_assert_str_eq(out, "dflt");
    setenv(VAR, "abc", 1);
    ck_assert_int_eq(cfg_str(VAR, out, sizeof out, err), 0);
    ck_assert_str_eq(out, "abc");
    setenv(VAR, "1234567", 1); /* exactly fits with its NUL */
    ck_assert_int_eq(cfg_str(VAR, out, sizeof out, err), 0);
    ck_assert_str_eq(out, "1234567");
    setenv(VAR, "12345678", 1);
    strcpy(out, "keep");
    ck_assert_int_eq(cfg_str(VAR, out, sizeof out, err), -1);
    ck_assert_str_eq(out, "keep");
    s_err_names(err);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * zutil: every socket bounds what a peer may send (ZMQ_MAXMSGSIZE)
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_zu_maxmsgsize)
{
    ck_assert_int_eq(ZU_MAXMSGSIZE, PROTO_FRAME_MAX); /* nothing larger could be decoded anyway */
    void *ctx = zmq_ctx_new();
    static const int types[] = {ZMQ_ROUTER, ZMQ_DEALER, ZMQ_SUB, ZMQ_PUB, ZMQ_XPUB, ZMQ_REP, ZMQ_PAIR};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        void *s = zu_socket(ctx, types[i], 0, 0);
        ck_assert_ptr_nonnull(s);
        int64_t v = 0;
        size_t len = sizeof v;
        ck_assert_int_eq(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &v, &len), 0);
        bool pub = types[i] == ZMQ_PUB || types[i] == ZMQ_XPUB;
        ck_assert_int_eq(v, pub ? ZU_PUB_MAXMSGSIZE : ZU_MAXMSGSIZE);
        zmq_close(s);
    }
    /* Enforced: a frame over the bound never arrives (the peer is dropped), one at it does. */
    char dir[] = "/tmp/ck-zu-XXXXXX", ep[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ep, sizeof ep, "ipc://%s/s", dir);
    void *r = zu_socket(ctx, ZMQ_ROUTER, 0, 0);
    ck_assert_int_eq(zmq_bind(r, ep), 0);
    size_t sizes[2] = {(size_t)ZU_MAXMSGSIZE + 1, (size_t)ZU_MAXMSGSIZE};
    char *big = calloc(1, sizes[0]);
    for (int k = 0; k < 2; k++) {
        void *d = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
        ck_assert_int_eq(zmq_connect(d, ep), 0);
        ck_assert_int_eq(zmq_send(d, big, sizes[k], 0), (int)sizes[k]);
        zmq_pollitem_t pi = {.socket = r, .events = ZMQ_POLLIN};
        int got = zmq_poll(&pi, 1, k == 0 ? 500 : 5000);
        ck_assert_int_eq(got, k == 0 ? 0 : 1);
        if (got) {
            zmq_msg_t f[ZU_FRAMES_MAX];
            int n;
            ck_assert_int_eq(zu_recv(r, f, ZU_FRAMES_MAX, &n), 0);
            ck_assert_int_eq(n, 2);
            ck_assert_uint_eq(zmq_msg_size(&f[1]), sizes[k]);
            zu_close_frames(f, n);
        }
        zmq_close(d);
    }
    free(big);
    zmq_close(r);
    zmq_ctx_term(ctx);
    char path[80];
    snprintf(path, sizeof path, "%s/s", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */


/* ==== logs ======================================================================================= */

/* Log one line with LOG_FORMAT=json and return it parsed. */
static json_t *s_json_log(const char *fmt_msg)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    int saved = dup(2);
    dup2(fds[1], 2);
    setenv("LOG_FORMAT", "json", 1);
    char err[128];
    ck_assert_int_eq(log_init("gw", err, sizeof err), 0);
    log_write(LOG_NOTICE, "%s", fmt_msg);
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    char buf[8192];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1, "not one line: %s", buf);
    json_error_t je;
    json_t *o = json_loads(buf, 0, &je);
    ck_assert_msg(o != NULL, "not JSON (%s): %s", je.text, buf);
    return o;
}

START_TEST(test_log_json_fields)
{
    json_t *o = s_json_log("ready http=127.0.0.1:8080 threads=2 neg=-3 ok=true big=12345678901234567890 z=007");
    ck_assert_str_eq(json_string_value(json_object_get(o, "msg")), "ready");
    ck_assert_str_eq(json_string_value(json_object_get(o, "level")), "notice");
    ck_assert_str_eq(json_string_value(json_object_get(o, "proc")), "gw");
    ck_assert(json_is_integer(json_object_get(o, "pid")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "http")), "127.0.0.1:8080");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "threads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "neg")), -3);
    ck_assert(json_is_true(json_object_get(o, "ok")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "big")), "12345678901234567890"); /* too long: a string */
    ck_assert_str_eq(json_string_value(json_object_get(o, "z")), "007");
    json_decref(o);
    /* words after a key=value are message words; a key that would shadow a fixed field gets x_ */
    o = s_json_log("cache-node 0 marked down: missed its deadline level=9 msg=x");
    ck_assert_str_eq(json_string_value(json_object_get(o, "msg")), "cache-node 0 marked down: missed its deadline");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "x_level")), 9);
    ck_assert_str_eq(json_string_value(json_object_get(o, "x_msg")), "x");
    ck_assert_str_eq(json_string_value(json_object_get(o, "level")), "notice");
    json_decref(o);
    /* quotes, control characters and ill-formed UTF-8 stay valid JSON */
    o = s_json_log("a \"q\" \\ \x01 \xff\xfe caf\xc3\xa9 user=b\"o\xc3");
    ck_assert_str_eq(json_string_value(json_object_get(o, "msg")), "a \"q\" \\ \x01 \xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9");
    ck_assert_str_eq(json_string_value(json_object_get(o, "user")), "b\"o\xef\xbf\xbd");
    json_decref(o);
    unsetenv("LOG_FORMAT");
}
END_TEST

/* Every variable a process reads is listed (cfg.c refuses others), and look-alikes are found. */
/* util_cpu_count follows the affinity mask (a container's cpuset, taskset), not the host's cores. */
START_TEST(test_cpu_count)
{
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    ck_assert_int_eq(util_cpu_count(), CPU_COUNT(&set));
    ck_assert_int_ge(util_cpu_count(), 1);
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &set))
            first = c;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0); /* this forked test's process only */
    ck_assert_int_eq(util_cpu_count(), 1);
}
END_TEST

START_TEST(test_envreg)
{
    size_t n;
    const envreg_var_t *v = envreg_all(&n);
    ck_assert_uint_gt(n, 50);
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_eq(envreg_find(v[i].name), &v[i]);
        ck_assert_msg(v[i].procs != 0, "%s is read by nobody", v[i].name);
        for (size_t k = i + 1; k < n; k++)
            ck_assert_str_ne(v[i].name, v[k].name);
    }
    ck_assert_ptr_null(envreg_find("RATE_LIMIT_WRITES_BURST"));
    ck_assert(envreg_looks_ours("RATE_LIMIT_WRITES_BURST"));
    ck_assert(envreg_looks_ours("WS_PING_MS"));
    ck_assert(!envreg_looks_ours("PATH"));
    ck_assert(!envreg_looks_ours("HOME"));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("common");

    TCase *tc = tcase_create("time");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_time_known);
    tcase_add_test(tc, test_time_vs_gmtime);
    suite_add_tcase(s, tc);

    tc = tcase_create("ids");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_user_id_alphabet);
    tcase_add_test(tc, test_user_id_length);
    suite_add_tcase(s, tc);

    tc = tcase_create("message");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_message_valid);
    tcase_add_test(tc, test_message_invalid);
    tcase_add_test(tc, test_message_exhaustive);
    suite_add_tcase(s, tc);

    tc = tcase_create("hash");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_hash_pinned);
    tcase_add_test(tc, test_hash_properties);
    suite_add_tcase(s, tc);

    tc = tcase_create("cfg");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_cfg_u64);
    tcase_add_test(tc, test_cfg_bool);
    tcase_add_test(tc, test_cfg_enum);
    tcase_add_test(tc, test_cfg_duration);
    tcase_add_test(tc, test_cfg_str);
    suite_add_tcase(s, tc);

    tc = tcase_create("logs_env");
    tcase_add_test(tc, test_log_json_fields);
    tcase_add_test(tc, test_envreg);
    tcase_add_test(tc, test_cpu_count);
    suite_add_tcase(s, tc);

    tc = tcase_create("zutil");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_zu_maxmsgsize);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
