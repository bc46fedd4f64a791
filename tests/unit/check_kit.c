/* check_kit.c -- Check suites for the kit the process shells share: the id-keyed table
 * (common/idtab.c), the byte-bounded change window (common/seqwin.c), the message dispatcher
 * (proto/dispatch.c) and the ZMQ_FD poll loop (common/zloop.c).
 *
 * The loop is tested on real ZeroMQ sockets (inproc PAIRs) and a real eventfd, including the case
 * it exists for: a send that consumes the ZMQ_FD edge of a message arriving meanwhile.
 */
#include "idtab.h"
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

static Suite *s_suite(void)
{
    Suite *s = suite_create("kit");
    TCase *tc;
    tc = tcase_create("idtab");
    tcase_add_test(tc, test_idtab_add_find_take);
    tcase_add_test(tc, test_idtab_shared_ids);
    tcase_add_test(tc, test_idtab_iterate_and_remove);
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
