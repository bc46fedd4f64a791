/* check_cache_apply.c -- Check suite for cache-node/cache_apply.h: the APPLYs a cache-node holds
 * until the store confirms or refutes them.
 *
 *   settle    confirmed (same or later version), refuted (the store as of a sequence past it
 *             shows an older record or none), left alone (the store is not there yet);
 *   stream    the stream reaching a sequence refutes every APPLY at or below it, lowest first;
 *   window    unconfirmed past its deadline, in arrival order; a replaced key moves;
 *   bounds    at most max keys (a key already held can still be raised); clear; many keys in a
 *             shuffled order come out of the heap sorted.
 *
 * Pure: no sockets, no clock.
 */
#include "cache_apply.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_take(cache_apply_t *a, uint64_t seq, uint64_t now, char *key)
{
    size_t kl = 0;
    uint64_t v = cache_apply_take_refuted(a, seq, now, key, &kl);
    ck_assert_uint_eq(kl, v ? strlen(key) : kl);
    return v;
}

START_TEST(test_settle)
{
    cache_apply_t *a = cache_apply_new(16);
    bool refuted = true;
    ck_assert_int_eq(cache_apply_add(a, "alice", 5, 100, 1000), 0);
    ck_assert_int_eq(cache_apply_add(a, "bob", 3, 200, 1000), 0);
    ck_assert_int_eq(cache_apply_add(a, "carol", 5, 300, 1000), 0);
    ck_assert_uint_eq(cache_apply_count(a), 3);
    /* Unknown key: nothing. */
    ck_assert_uint_eq(cache_apply_store_says(a, "dave", 4, 1, 1000, &refuted), 0);
    ck_assert(!refuted);
    /* The store is not there yet (as_of below the APPLY): left alone. */
    ck_assert_uint_eq(cache_apply_store_says(a, "alice", 5, 90, 99, &refuted), 0);
    ck_assert(!refuted);
    ck_assert_uint_eq(cache_apply_pending(a, "alice", 5), 100);
    /* Confirmed at its version. */
    ck_assert_uint_eq(cache_apply_store_says(a, "alice", 5, 100, 100, &refuted), 100);
    ck_assert(!refuted);
    ck_assert_uint_eq(cache_apply_pending(a, "alice", 5), 0);
    /* Superseded by a later write: also settled, not refuted. */
    ck_assert_uint_eq(cache_apply_store_says(a, "bob", 3, 250, 250, &refuted), 200);
    ck_assert(!refuted);
    /* The store as of 400 shows carol at 150: the APPLY at 300 was never the store's. */
    ck_assert_uint_eq(cache_apply_store_says(a, "carol", 5, 150, 400, &refuted), 300);
    ck_assert(refuted);
    /* ... and absent (version 0) as of a later sequence refutes too. */
    ck_assert_int_eq(cache_apply_add(a, "eve", 3, 500, 1000), 0);
    ck_assert_uint_eq(cache_apply_store_says(a, "eve", 3, 0, 500, &refuted), 500);
    ck_assert(refuted);
    ck_assert_uint_eq(cache_apply_count(a), 0);
    cache_apply_destroy(&a);
    ck_assert_ptr_null(a);
    cache_apply_destroy(&a);
}
END_TEST

START_TEST(test_stream_and_window)
{
    cache_apply_t *a = cache_apply_new(16);
    char key[129];
    ck_assert_int_eq(cache_apply_add(a, "k3", 2, 300, 1100), 0);
    ck_assert_int_eq(cache_apply_add(a, "k1", 2, 100, 1200), 0);
    ck_assert_int_eq(cache_apply_add(a, "k2", 2, 200, 1300), 0);
    ck_assert_uint_eq(cache_apply_next_deadline(a), 1100);
    /* Nothing refuted before the stream reaches a version or a deadline passes. */
    ck_assert_uint_eq(s_take(a, 99, 1099, key), 0);
    /* The stream at 250: k1 then k2 (lowest version first), not k3. */
    ck_assert_uint_eq(s_take(a, 250, 0, key), 100);
    ck_assert_str_eq(key, "k1");
    ck_assert_uint_eq(s_take(a, 250, 0, key), 200);
    ck_assert_str_eq(key, "k2");
    ck_assert_uint_eq(s_take(a, 250, 0, key), 0);
    /* k3's window passes. */
    ck_assert_uint_eq(s_take(a, 0, 1099, key), 0);
    ck_assert_uint_eq(s_take(a, 0, 1100, key), 300);
    ck_assert_str_eq(key, "k3");
    ck_assert_uint_eq(cache_apply_next_deadline(a), UINT64_MAX);

    /* A later APPLY of a held key keeps the higher version and its deadline (and moves to the
     * back of the deadline order); a lower one changes nothing. */
    ck_assert_int_eq(cache_apply_add(a, "a", 1, 10, 100), 0);
    ck_assert_int_eq(cache_apply_add(a, "b", 1, 20, 150), 0);
    ck_assert_int_eq(cache_apply_add(a, "a", 1, 30, 200), 0);
    ck_assert_int_eq(cache_apply_add(a, "a", 1, 5, 50), 0);
    ck_assert_uint_eq(cache_apply_pending(a, "a", 1), 30);
    ck_assert_uint_eq(cache_apply_next_deadline(a), 150);
    ck_assert_uint_eq(s_take(a, 0, 199, key), 20);
    ck_assert_str_eq(key, "b");
    ck_assert_uint_eq(s_take(a, 25, 199, key), 0); /* a is at 30 now */
    ck_assert_uint_eq(s_take(a, 0, 200, key), 30);
    cache_apply_destroy(&a);
}
END_TEST

START_TEST(test_bounds)
{
    cache_apply_t *a = cache_apply_new(3);
    ck_assert_int_eq(cache_apply_add(a, "a", 1, 1, 10), 0);
    ck_assert_int_eq(cache_apply_add(a, "b", 1, 2, 10), 0);
    ck_assert_int_eq(cache_apply_add(a, "c", 1, 3, 10), 0);
    ck_assert_int_eq(cache_apply_add(a, "d", 1, 4, 10), -1); /* full */
    ck_assert_int_eq(cache_apply_add(a, "a", 1, 9, 10), 0);  /* held keys may still be raised */
    ck_assert_int_eq(cache_apply_add(a, "", 0, 4, 10), -1);
    char big[200];
    memset(big, 'x', sizeof big);
    ck_assert_int_eq(cache_apply_add(a, big, 129, 4, 10), -1);
    cache_apply_clear(a);
    ck_assert_uint_eq(cache_apply_count(a), 0);
    ck_assert_int_eq(cache_apply_add(a, "d", 1, 4, 10), 0);
    cache_apply_destroy(&a);

    /* 5000 keys in a shuffled order, some settled out of the middle: the rest come out sorted. */
    a = cache_apply_new(5000);
    uint32_t order[5000];
    for (uint32_t i = 0; i < 5000; i++)
        order[i] = i;
    uint64_t x = 88172645463325252ull;
    for (uint32_t i = 4999; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t j = (uint32_t)(x % (i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    char key[129];
    for (uint32_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "u%u", order[i]);
        ck_assert_int_eq(cache_apply_add(a, key, strlen(key), 1000 + order[i], 1), 0);
    }
    bool refuted;
    for (uint32_t i = 0; i < 5000; i += 3) {
        snprintf(key, sizeof key, "u%u", i);
        ck_assert_uint_eq(cache_apply_store_says(a, key, strlen(key), 1000 + i, 1000 + i, &refuted), 1000 + i);
    }
    uint64_t last = 0, n = 0, v;
    size_t kl;
    while ((v = cache_apply_take_refuted(a, UINT64_MAX - 1, 0, key, &kl))) {
        ck_assert_uint_gt(v, last);
        ck_assert_uint_ne((v - 1000) % 3, 0);
        last = v;
        n++;
    }
    ck_assert_uint_eq(n, 5000 - 1667);
    ck_assert_uint_eq(cache_apply_count(a), 0);
    cache_apply_destroy(&a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cache_apply");
    TCase *tc = tcase_create("ledger");
    tcase_add_test(tc, test_settle);
    tcase_add_test(tc, test_stream_and_window);
    tcase_add_test(tc, test_bounds);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
