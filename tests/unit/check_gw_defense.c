/* check_gw_defense.c -- Check suite for the gateway's pure defences against hostile clients.
 *
 *   clientaddr  gw_clientaddr.h: TRUSTED_PROXIES parsing (valid and refused lists, exact error
 *               texts), CIDR membership for both families, and the X-Forwarded-For walk: the
 *               rightmost untrusted hop, spoofed left hops ignored, broken chains, several header
 *               lines, an untrusted peer that sends the header.
 *
 *   climit      gw_climit.h: a key at its bound gets nothing until it gives one back, keys are
 *               independent, an unbounded table, keys freed with their last count, and 8 threads
 *               taking and giving one hot key never exceed the bound.
 *
 *   head        gw_head.h: complete and partial heads, the end of a head with CRLF or LF, too big,
 *               not HTTP/1 (HTTP/2 preface, garbage, folded lines, bad names, too many lines), and
 *               every body framing (none, length, chunked, unclear: repeated, invalid, both);
 *   penalty     gw_penalty.h: a key is penalised until its end, a later end extends it, other keys
 *               are not, and a full set gives up the entry that ends first (bounded table).
 *
 * No sockets, no files; threads only in the climit race.
 */
#include "gw_clientaddr.h"
#include "gw_climit.h"
#include "gw_head.h"
#include "gw_penalty.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== clientaddr =============================================================================== */

static void s_addr(const char *text, uint8_t out[16])
{
    ck_assert_msg(gw_clientaddr_parse_addr(text, strlen(text), out) == 0, "'%s' should parse", text);
}

/* pick() with the peer as text and the header values as a NULL-terminated list. */
static const char *s_pick(const char *peer, bool trust, const char *trusted, const char *const *xff)
{
    static char out[GW_CLIENTADDR_LEN];
    gw_trusted_t t;
    char err[256];
    ck_assert_msg(gw_clientaddr_parse(trusted, &t, err, sizeof err) == 0, "%s", err);
    proto_str_t v[8];
    size_t n = 0;
    for (; xff && xff[n]; n++)
        v[n] = (proto_str_t){xff[n], strlen(xff[n])};
    uint8_t p[16];
    if (peer)
        s_addr(peer, p);
    size_t len = gw_clientaddr_pick(peer ? p : NULL, trust, &t, v, n, out);
    ck_assert_uint_eq(len, strlen(out));
    return out;
}

START_TEST(test_parse_lists)
{
    gw_trusted_t t;
    char err[256] = "";
    ck_assert_int_eq(gw_clientaddr_parse("", &t, err, sizeof err), 0);
    ck_assert_uint_eq(t.n, 0);
    ck_assert_int_eq(gw_clientaddr_parse(" 10.0.0.0/8 , 192.168.1.7,fd00::/8,::1 ", &t, err, sizeof err), 0);
    ck_assert_uint_eq(t.n, 4);
    ck_assert_uint_eq(t.v[0].bits, 96 + 8);
    ck_assert_uint_eq(t.v[1].bits, 128);
    ck_assert_uint_eq(t.v[2].bits, 8);
    ck_assert_uint_eq(t.v[3].bits, 128);

    const char *bad[] = {"10.0.0.0/33", "10.0.0.0/", "fd00::/129", "example.com", "10.0.0.0/8x", "1.2.3.4.5", "[::1]", NULL};
    for (int i = 0; bad[i]; i++) {
        ck_assert_msg(gw_clientaddr_parse(bad[i], &t, err, sizeof err) == -1, "'%s' accepted", bad[i]);
        char want[256];
        snprintf(want, sizeof want,
                 "TRUSTED_PROXIES: '%s' is not an address or CIDR (IPv4 or IPv6 literal, optional /prefix)", bad[i]);
        ck_assert_str_eq(err, want);
    }
    /* The bad entry is named even after good ones. */
    ck_assert_int_eq(gw_clientaddr_parse("10.0.0.1, nope", &t, err, sizeof err), -1);
    ck_assert_str_eq(err, "TRUSTED_PROXIES: 'nope' is not an address or CIDR (IPv4 or IPv6 literal, optional /prefix)");
    /* At most GW_TRUSTED_MAX entries. */
    char big[2048] = "";
    for (int i = 0; i <= GW_TRUSTED_MAX; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%s10.0.%d.1", i ? "," : "", i);
    ck_assert_int_eq(gw_clientaddr_parse(big, &t, err, sizeof err), -1);
    ck_assert_str_eq(err, "TRUSTED_PROXIES: at most 64 entries");
}
END_TEST

START_TEST(test_membership)
{
    gw_trusted_t t;
    char err[256];
    ck_assert_int_eq(gw_clientaddr_parse("10.1.2.3/8,192.168.1.0/25,2001:db8::/32,::1", &t, err, sizeof err), 0);
    struct {
        const char *a;
        bool in;
    } cases[] = {
        {"10.0.0.1", true},        {"10.255.255.255", true}, {"11.0.0.1", false},      {"192.168.1.127", true},
        {"192.168.1.128", false},  {"2001:db8::5", true},    {"2001:db9::5", false},   {"::1", true},
        {"::2", false},            {"::ffff:10.9.9.9", true}, {"9.9.9.9", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t a[16];
        s_addr(cases[i].a, a);
        ck_assert_msg(gw_clientaddr_is_trusted(&t, a) == cases[i].in, "%s", cases[i].a);
    }
    /* /0 trusts everything of its family. */
    ck_assert_int_eq(gw_clientaddr_parse("0.0.0.0/0", &t, err, sizeof err), 0);
    uint8_t a[16];
    s_addr("203.0.113.9", a);
    ck_assert(gw_clientaddr_is_trusted(&t, a));
    s_addr("2001:db8::1", a);
    ck_assert(!gw_clientaddr_is_trusted(&t, a));
}
END_TEST

START_TEST(test_addr_forms)
{
    uint8_t a[16], b[16];
    s_addr("1.2.3.4", a);
    s_addr(" 1.2.3.4:8080 ", b);
    ck_assert_mem_eq(a, b, 16);
    s_addr("[2001:db8::1]:443", a);
    s_addr("2001:DB8:0::1", b);
    ck_assert_mem_eq(a, b, 16);
    const char *bad[] = {"", " ", "1.2.3", "1.2.3.4:", "1.2.3.4:x", "[::1", "[::1]x", "unknown", "01.2.3.4.5", NULL};
    for (int i = 0; bad[i]; i++)
        ck_assert_msg(gw_clientaddr_parse_addr(bad[i], strlen(bad[i]), a) == -1, "'%s' parsed", bad[i]);
}
END_TEST

START_TEST(test_pick)
{
    /* TRUST_PROXY off: the peer, whatever the header says. */
    const char *spoof[] = {"6.6.6.6", NULL};
    ck_assert_str_eq(s_pick("203.0.113.5", false, "", spoof), "203.0.113.5");
    /* On, no list: the peer is the one proxy; the rightmost hop is the client, left hops are the
     * client's own text. */
    const char *chain[] = {"6.6.6.6, 198.51.100.7", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "", chain), "198.51.100.7");
    /* With a list: walk from the right over trusted proxies. */
    const char *two[] = {"6.6.6.6, 198.51.100.7, 10.0.0.3", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "10.0.0.0/8", two), "198.51.100.7");
    /* A peer outside the list is the client: its header is not believed. */
    ck_assert_str_eq(s_pick("203.0.113.5", true, "10.0.0.0/8", two), "203.0.113.5");
    /* Several header lines are one list, in order. */
    const char *lines[] = {"6.6.6.6", "198.51.100.7", "10.0.0.3", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "10.0.0.0/8", lines), "198.51.100.7");
    /* A broken hop stops the walk at the proxy that wrote it. */
    const char *broken[] = {"6.6.6.6, garbage, 10.0.0.3", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "10.0.0.0/8", broken), "10.0.0.3");
    const char *broken_last[] = {"6.6.6.6, garbage", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "", broken_last), "10.0.0.2");
    /* Every hop trusted: the leftmost. */
    const char *all[] = {"10.0.0.9, 10.0.0.3", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "10.0.0.0/8", all), "10.0.0.9");
    /* No header: the peer. Empty elements are skipped; ports and brackets dropped; canonical text. */
    ck_assert_str_eq(s_pick("10.0.0.2", true, "", NULL), "10.0.0.2");
    const char *ports[] = {"[2001:DB8::0:1]:443,, ", NULL};
    ck_assert_str_eq(s_pick("10.0.0.2", true, "", ports), "2001:db8::1");
    const char *v4port[] = {"198.51.100.7:5555", NULL};
    ck_assert_str_eq(s_pick("::1", true, "::1", v4port), "198.51.100.7");
    /* Unknown peer. */
    ck_assert_str_eq(s_pick(NULL, true, "", chain), "?");
}
END_TEST

/* ==== climit ==================================================================================== */

START_TEST(test_climit_bounds)
{
    gw_climit_t *t = gw_climit_new();
    gw_climit_slot_t *a[3];
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(a[i] = gw_climit_take(t, "10.0.0.1", 8, 3));
    ck_assert_ptr_null(gw_climit_take(t, "10.0.0.1", 8, 3));
    ck_assert_uint_eq(gw_climit_count(t, "10.0.0.1", 8), 3);
    /* Another key is independent; a prefix is another key. */
    gw_climit_slot_t *b = gw_climit_take(t, "10.0.0.2", 8, 3);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(gw_climit_take(t, "10.0.0.1x", 9, 1));
    ck_assert_uint_eq(gw_climit_keys(t), 3);
    gw_climit_give(t, a[1]);
    ck_assert_uint_eq(gw_climit_count(t, "10.0.0.1", 8), 2);
    ck_assert_ptr_nonnull(a[1] = gw_climit_take(t, "10.0.0.1", 8, 3));
    for (int i = 0; i < 3; i++)
        gw_climit_give(t, a[i]);
    gw_climit_give(t, b);
    gw_climit_give(t, NULL);
    ck_assert_uint_eq(gw_climit_count(t, "10.0.0.1", 8), 0);
    ck_assert_uint_eq(gw_climit_keys(t), 1); /* only 10.0.0.1x is still held */
    /* max 0: no bound; many keys (the stripes' tables grow). */
    gw_climit_slot_t *many[5000];
    for (int i = 0; i < 5000; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "sub:user%d", i % 2500);
        ck_assert_ptr_nonnull(many[i] = gw_climit_take(t, k, (size_t)n, 0));
    }
    ck_assert_uint_eq(gw_climit_keys(t), 2501);
    ck_assert_uint_eq(gw_climit_count(t, "sub:user7", 9), 2);
    for (int i = 0; i < 5000; i++)
        gw_climit_give(t, many[i]);
    ck_assert_uint_eq(gw_climit_keys(t), 1);
    gw_climit_free(t);
    gw_climit_free(NULL);
}
END_TEST

static gw_climit_t *s_hot;
static _Atomic int s_over;

static void *s_hot_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        gw_climit_slot_t *s = gw_climit_take(s_hot, "hot", 3, 4);
        if (!s)
            continue;
        if (gw_climit_count(s_hot, "hot", 3) > 4)
            s_over++;
        gw_climit_give(s_hot, s);
    }
    return NULL;
}

START_TEST(test_climit_threads)
{
    s_hot = gw_climit_new();
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, s_hot_worker, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(s_over, 0);
    ck_assert_uint_eq(gw_climit_count(s_hot, "hot", 3), 0);
    ck_assert_uint_eq(gw_climit_keys(s_hot), 0);
    gw_climit_free(s_hot);
}
END_TEST

/* ==== head ====================================================================================== */

static int s_head(const char *text, size_t max, gw_head_t *h)
{
    return gw_head_parse(text, strlen(text), max, h);
}

START_TEST(test_head_parse)
{
    gw_head_t h;
    const char *put = "PUT /api/v2/presence/a%20b?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:   Bearer t.k.n \r\n"
                      "Origin: https://x\r\nContent-Length: 19\r\n\r\n{\"status\":\"online\"}";
    ck_assert_int_eq(s_head(put, 8192, &h), GW_HEAD_DONE);
    ck_assert_uint_eq(h.len, strlen(put) - 19);
    ck_assert_int_eq((int)h.method_len, 3);
    ck_assert(strncmp(h.method, "PUT", 3) == 0);
    ck_assert(h.target_len == strlen("/api/v2/presence/a%20b?x=1") && strncmp(h.target, "/api/v2/presence/a%20b?x=1", h.target_len) == 0);
    ck_assert_int_eq(h.body, GW_BODY_LENGTH);
    ck_assert_uint_eq(h.content_length, 19);
    /* leading blanks go, trailing ones stay (as h2o hands them over) */
    ck_assert(h.auth_len == 13 && strncmp(h.auth, "Bearer t.k.n ", 13) == 0);
    ck_assert(h.origin_len == 9 && strncmp(h.origin, "https://x", 9) == 0);
    /* LF-only line ends; no body. */
    ck_assert_int_eq(s_head("GET /health HTTP/1.0\nHost: a\n\n", 8192, &h), GW_HEAD_DONE);
    ck_assert_int_eq(h.body, GW_BODY_NONE);
    ck_assert_ptr_null(h.auth);
    /* Partial heads: more, until max. */
    ck_assert_int_eq(s_head("", 8192, &h), GW_HEAD_MORE);
    ck_assert_int_eq(s_head("GE", 8192, &h), GW_HEAD_MORE);
    ck_assert_int_eq(s_head("GET /x HTTP/1.1\r\nHost: a\r\n", 8192, &h), GW_HEAD_MORE);
    ck_assert_int_eq(s_head("GET /x HTTP/1.1\r\nHost: a\r\n", 20, &h), GW_HEAD_TOO_BIG);
    /* The end must lie within max. */
    ck_assert_int_eq(s_head("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 20, &h), GW_HEAD_TOO_BIG);
    /* Not ours: the HTTP/2 preface, garbage, lower-case or long methods, bad lines. */
    const char *other[] = {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x16\x03\x01\x02", "get / HTTP/1.1\r\n\r\n",
                           "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n", " GET / HTTP/1.1\r\n\r\n",
                           "GET / HTTP/2.0\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                           "GET / HTTP/1.1\r\nno colon\r\n\r\n", "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                           "GET / HTTP/1.1\r\n: x\r\n\r\n", NULL};
    for (int i = 0; other[i]; i++)
        ck_assert_msg(s_head(other[i], 8192, &h) == GW_HEAD_NOT_HTTP1, "case %d", i);
    char many[4096] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 101; i++)
        strcat(many, "X: y\r\n");
    strcat(many, "\r\n");
    ck_assert_int_eq(s_head(many, 8192, &h), GW_HEAD_NOT_HTTP1);
    /* Body framings. */
    struct {
        const char *headers;
        int body;
        uint64_t len;
    } bodies[] = {
        {"Transfer-Encoding: chunked\r\n", GW_BODY_CHUNKED, 0},
        {"Transfer-Encoding: gzip, CHUNKED\r\n", GW_BODY_CHUNKED, 0},
        {"Transfer-Encoding: gzip\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: 0\r\n", GW_BODY_LENGTH, 0},
        {"content-length: 1000000\r\n", GW_BODY_LENGTH, 1000000},
        {"Content-Length: 9999999999999999999\r\n", GW_BODY_LENGTH, 9999999999999999999ull},
        {"Content-Length: 99999999999999999999\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: 19 \r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: -1\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: 0x10\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length:\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: 5\r\nContent-Length: 5\r\n", GW_BODY_UNCLEAR, 0},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", GW_BODY_UNCLEAR, 0},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "POST /api/v2/presence/batch HTTP/1.1\r\nHost: a\r\n%s\r\n", bodies[i].headers);
        ck_assert_int_eq(s_head(req, 8192, &h), GW_HEAD_DONE);
        ck_assert_msg(h.body == bodies[i].body, "case %zu: body %d", i, h.body);
        if (h.body == GW_BODY_LENGTH)
            ck_assert_uint_eq(h.content_length, bodies[i].len);
    }
}
END_TEST

/* ==== penalty ==================================================================================== */

START_TEST(test_penalty)
{
    gw_penalty_t *p = gw_penalty_new(64);
    ck_assert(!gw_penalty_check(p, "a", 1, 0));
    gw_penalty_add(p, "a", 1, 1000);
    ck_assert(gw_penalty_check(p, "a", 1, 999));
    ck_assert(!gw_penalty_check(p, "a", 1, 1000));
    ck_assert(!gw_penalty_check(p, "b", 1, 500));
    gw_penalty_add(p, "a", 1, 5000); /* extended */
    gw_penalty_add(p, "a", 1, 2000); /* an earlier end does not shorten it */
    ck_assert(gw_penalty_check(p, "a", 1, 4999));
    gw_penalty_free(p);
    /* A tiny table (one set of 4): the fifth key takes the slot that ends first. */
    p = gw_penalty_new(1);
    for (int i = 0; i < 4; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        gw_penalty_add(p, k, 2, (uint64_t)(1000 + i));
    }
    gw_penalty_add(p, "k9", 2, 9000);
    ck_assert(gw_penalty_check(p, "k9", 2, 10));
    ck_assert(!gw_penalty_check(p, "k0", 2, 10)); /* ended first: replaced */
    ck_assert(gw_penalty_check(p, "k1", 2, 10) && gw_penalty_check(p, "k3", 2, 10));
    gw_penalty_free(p);
    gw_penalty_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gw_defense");
    TCase *tc = tcase_create("clientaddr");
    tcase_add_test(tc, test_parse_lists);
    tcase_add_test(tc, test_membership);
    tcase_add_test(tc, test_addr_forms);
    tcase_add_test(tc, test_pick);
    suite_add_tcase(s, tc);
    tc = tcase_create("head");
    tcase_add_test(tc, test_head_parse);
    suite_add_tcase(s, tc);
    tc = tcase_create("penalty");
    tcase_add_test(tc, test_penalty);
    suite_add_tcase(s, tc);
    tc = tcase_create("climit");
    tcase_add_test(tc, test_climit_bounds);
    tcase_add_test(tc, test_climit_threads);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
