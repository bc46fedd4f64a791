/* check_kit.c -- Check suites for the kit the process shells share: the id-keyed table
 * (common/idtab.c), the byte-bounded change window (common/seqwin.c), the message dispatcher
 * (proto/dispatch.c) and the ZMQ_FD poll loop (common/zloop.c).
 *
 * The loop is tested on real ZeroMQ sockets (inproc PAIRs) and a real eventfd, including the case
 * it exists for: a send that consumes the ZMQ_FD edge of a message arriving meanwhile.
 */
#include "idtab.h"
#include "seqwin.h"
#include "util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== idtab ================================================================================== */

typedef struct item {
    idtab_link_t link;
    int value;
} item_t;

START_TEST(test_idtab_add_find_take)
{
    idtab_t t;
    idtab_init(&t);
    ck_assert_ptr_null(idtab_find(&t, 1));
    ck_assert_ptr_null(idtab_take(&t, 1));
    enum { N = 10000 };
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].link.id = (uint64_t)i + 1;
        items[i].value = i;
        idtab_add(&t, &items[i].link);
    }
    ck_assert_uint_eq(idtab_count(&t), N);
    ck_assert_uint_ge(t.size, 2 * N); /* grew: never more than half full */
    for (int i = 0; i < N; i++) {
        idtab_link_t *l = idtab_find(&t, (uint64_t)i + 1);
        ck_assert_ptr_eq(l, &items[i].link);
        ck_assert_int_eq(IDTAB_ENTRY(l, item_t, link)->value, i);
    }
    ck_assert_ptr_null(idtab_find(&t, N + 1));
    ck_assert_ptr_null(idtab_find(&t, 0));
    for (int i = 0; i < N; i += 2)
        ck_assert_ptr_eq(idtab_take(&t, (uint64_t)i + 1), &items[i].link);
    ck_assert_uint_eq(idtab_count(&t), N / 2);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(idtab_find(&t, (uint64_t)i + 1), i % 2 ? &items[i].link : NULL);
    idtab_fini(&t);
    ck_assert_uint_eq(idtab_count(&t), 0);
    ck_assert_ptr_null(idtab_find(&t, 2));
    /* Usable again after fini. */
    idtab_add(&t, &items[0].link);
    ck_assert_ptr_eq(idtab_find(&t, 1), &items[0].link);
    idtab_fini(&t);
    free(items);
}
END_TEST

START_TEST(test_idtab_shared_ids)
{
    /* Several entries with one id (names whose hashes collide): newest first, each reachable,
     * each removable by itself. */
    idtab_t t;
    idtab_init(&t);
    item_t a = {.link.id = 42, .value = 1}, b = {.link.id = 42, .value = 2}, c = {.link.id = 42, .value = 3};
    item_t other = {.link.id = 43, .value = 9};
    idtab_add(&t, &a.link);
    idtab_add(&t, &other.link);
    idtab_add(&t, &b.link);
    idtab_add(&t, &c.link);
    idtab_link_t *l = idtab_find(&t, 42);
    ck_assert_ptr_eq(l, &c.link);
    l = idtab_find_next(l);
    ck_assert_ptr_eq(l, &b.link);
    l = idtab_find_next(l);
    ck_assert_ptr_eq(l, &a.link);
    ck_assert_ptr_null(idtab_find_next(l));
    ck_assert(idtab_remove(&t, &b.link));
    ck_assert(!idtab_remove(&t, &b.link)); /* not linked any more */
    ck_assert_ptr_eq(idtab_find_next(idtab_find(&t, 42)), &a.link);
    ck_assert_ptr_eq(idtab_take(&t, 42), &c.link);
    ck_assert_ptr_eq(idtab_take(&t, 42), &a.link);
    ck_assert_ptr_null(idtab_take(&t, 42));
    ck_assert_ptr_eq(idtab_find(&t, 43), &other.link);
    ck_assert_uint_eq(idtab_count(&t), 1);
    idtab_fini(&t);
}
END_TEST

START_TEST(test_idtab_iterate_and_remove)
{
    idtab_t t;
    idtab_init(&t);
    enum { N = 3000 };
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].link.id = (uint64_t)(uintptr_t)&items[i]; /* pointer keys */
        items[i].value = i;
        idtab_add(&t, &items[i].link);
    }
    /* Visit each entry once, removing every odd one as it is visited. */
    int *seen = calloc(N, sizeof *seen);
    idtab_iter_t it;
    idtab_iter_init(&it, &t);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        item_t *x = IDTAB_ENTRY(l, item_t, link);
        seen[x->value]++;
        if (x->value % 2)
            ck_assert(idtab_remove(&t, l));
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], 1);
    ck_assert_uint_eq(idtab_count(&t), N / 2);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(idtab_find(&t, (uint64_t)(uintptr_t)&items[i]), i % 2 ? NULL : &items[i].link);
    /* Emptying a table: iterate and remove everything. */
    idtab_iter_init(&it, &t);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));)
        ck_assert(idtab_remove(&t, l));
    ck_assert_uint_eq(idtab_count(&t), 0);
    idtab_iter_init(&it, &t);
    ck_assert_ptr_null(idtab_iter_next(&it));
    idtab_fini(&t);
    free(seen);
    free(items);
}
END_TEST

/* ==== seqwin ================================================================================= */

static size_t s_item_cost(size_t len)
{
    return sizeof(seqwin_item_t) + len;
}

START_TEST(test_seqwin_bounded)
{
    seqwin_t w;
    char data[100];
    memset(data, 'x', sizeof data);
    seqwin_init(&w, 3 * s_item_cost(100), 7);
    ck_assert_uint_eq(seqwin_start(&w), 7);
    ck_assert_ptr_null(seqwin_after(&w, 0));
    for (uint64_t s = 8; s <= 10; s++)
        seqwin_add(&w, s, s, 1, data, sizeof data);
    ck_assert_uint_eq(seqwin_bytes(&w), 3 * s_item_cost(100));
    ck_assert_uint_eq(seqwin_start(&w), 7); /* nothing dropped yet */
    seqwin_add(&w, 11, 11, 1, data, sizeof data);
    /* The oldest (8) went; everything after 8 is still held. */
    ck_assert_uint_eq(seqwin_start(&w), 8);
    ck_assert_uint_eq(seqwin_bytes(&w), 3 * s_item_cost(100));
    const seqwin_item_t *it = seqwin_after(&w, 0);
    ck_assert_uint_eq(it->first, 9);
    ck_assert_uint_eq(seqwin_after(&w, 9)->first, 10);
    ck_assert_uint_eq(seqwin_after(&w, 10)->first, 11);
    ck_assert_ptr_null(seqwin_after(&w, 11));
    /* Ranges: an item is after S when its last sequence is. */
    seqwin_add(&w, 12, 20, 2, data, 10);
    ck_assert_uint_eq(seqwin_after(&w, 15)->first, 12);
    ck_assert_uint_eq(seqwin_after(&w, 15)->kind, 2);
    ck_assert_uint_eq(seqwin_after(&w, 15)->len, 10);
    /* An item larger than the whole budget: everything older goes, the newest stays. */
    char *big = calloc(1, 1000);
    big[999] = 'z';
    seqwin_add(&w, 21, 21, 3, big, 1000);
    ck_assert_uint_eq(seqwin_start(&w), 20);
    ck_assert_uint_eq(seqwin_bytes(&w), s_item_cost(1000));
    it = seqwin_after(&w, 0);
    ck_assert_uint_eq(it->first, 21);
    ck_assert_ptr_null(it->next);
    big[999] = 'q'; /* copied in */
    ck_assert_int_eq(it->data[999], 'z');
    free(big);
    seqwin_fini(&w);
}
END_TEST

START_TEST(test_seqwin_clear_and_raise)
{
    seqwin_t w;
    seqwin_init(&w, 1 << 20, 0);
    seqwin_add(&w, 1, 1, 1, "a", 1);
    seqwin_add(&w, 2, 2, 1, "b", 1);
    seqwin_raise_start(&w, 1);
    ck_assert_uint_eq(seqwin_start(&w), 1);
    seqwin_raise_start(&w, 0); /* only ever raised */
    ck_assert_uint_eq(seqwin_start(&w), 1);
    ck_assert_uint_eq(seqwin_after(&w, 1)->data[0], 'b');
    seqwin_clear(&w, 50);
    ck_assert_uint_eq(seqwin_start(&w), 50);
    ck_assert_uint_eq(seqwin_bytes(&w), 0);
    ck_assert_ptr_null(seqwin_after(&w, 0));
    seqwin_add(&w, 51, 51, 1, "c", 1);
    ck_assert_uint_eq(seqwin_after(&w, 50)->data[0], 'c');
    seqwin_fini(&w);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("kit");
    TCase *tc;
    tc = tcase_create("idtab");
    tcase_add_test(tc, test_idtab_add_find_take);
    tcase_add_test(tc, test_idtab_shared_ids);
    tcase_add_test(tc, test_idtab_iterate_and_remove);
    suite_add_tcase(s, tc);
    tc = tcase_create("seqwin");
    tcase_add_test(tc, test_seqwin_bounded);
    tcase_add_test(tc, test_seqwin_clear_and_raise);
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
