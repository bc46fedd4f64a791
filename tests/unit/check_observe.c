/* check_observe.c -- Check suite for the gateway's observability logic: the Prometheus text of
 * /metrics (gateway/gw_promtext.c) and the access log's line (gateway/gw_access.c), both pure.
 *
 * Outputs are pinned byte for byte: a family's HELP and TYPE, the counter/histogram/gauge rule,
 * duplicates dropped, microseconds shown as seconds, the prefix and what it skips; the target's
 * redaction for every spelling of a token parameter, the escaping of hostile bytes, truncation,
 * and the line as JSON.
 */
#include "gw_access.h"
#include "gw_promtext.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_str(gw_buf_t *b)
{
    gw_buf_add(b, "", 1);
    b->len--;
    return b->p;
}

/* ==== the exposition ========================================================================== */

START_TEST(test_render_families)
{
    stats_list_t a, c;
    stats_list_init(&a);
    stats_list_init(&c);
    stats_add(&a, "http_requests_inflight", 2);
    stats_add(&a, "sse_events_total", 7);
    stats_add(&a, "store_time_seconds:us", 1500000);
    stats_add(&c, "store_writes_total", 5);
    stats_add(&c, "cache_hits_total{node=\"c1\"}", 3);
    stats_add(&c, "store_writes_total", 9); /* the store's numbers again, from another node: dropped */
    const stats_list_t *lists[] = {&a, &c};
    gw_buf_t b;
    gw_buf_init(&b);
    gw_promtext_render(&b, lists, 2, NULL);
    const char *want = "# HELP cache_hits_total Reads answered from the cache.\n"
                       "# TYPE cache_hits_total counter\n"
                       "cache_hits_total{node=\"c1\"} 3\n"
                       "# HELP http_requests_inflight HTTP requests received and not yet answered.\n"
                       "# TYPE http_requests_inflight gauge\n"
                       "http_requests_inflight 2\n"
                       "# HELP sse_events_total Events written to SSE watch streams.\n"
                       "# TYPE sse_events_total counter\n"
                       "sse_events_total 7\n"
                       "# HELP store_time_seconds The store's clock when it answered, seconds since the Unix epoch.\n"
                       "# TYPE store_time_seconds gauge\n"
                       "store_time_seconds 1.500000\n"
                       "# HELP store_writes_total Records written.\n"
                       "# TYPE store_writes_total counter\n"
                       "store_writes_total 5\n";
    ck_assert_str_eq(s_str(&b), want);
    gw_buf_free(&b);
    stats_list_fini(&a);
    stats_list_fini(&c);
}
END_TEST

START_TEST(test_render_histogram_and_prefix)
{
    stats_hist_t h;
    stats_hist_init_latency(&h);
    stats_hist_observe(&h, 300);   /* 0.0003 s */
    stats_hist_observe(&h, 20000); /* 0.02 s */
    stats_list_t l;
    stats_list_init(&l);
    stats_add_hist(&l, "store_commit_seconds", NULL, &h);
    stats_add(&l, "process_open_fds{proc=\"store-node\"}", 9);
    stats_add(&l, "presence_build_info{proc=\"store-node\",version=\"2.1.0\",commit=\"x\"}", 1);
    stats_add(&l, "some_new_gauge", 4);
    const stats_list_t *lists[] = {&l};
    gw_buf_t b;
    gw_buf_init(&b);
    gw_promtext_render(&b, lists, 1, "presence_");
    const char *t = s_str(&b);
    /* one family for the histogram, its series in le order, sum in seconds */
    ck_assert_ptr_nonnull(strstr(t, "# TYPE presence_store_commit_seconds histogram\n"
                                    "presence_store_commit_seconds_bucket{le=\"0.0001\"} 0\n"
                                    "presence_store_commit_seconds_bucket{le=\"0.00025\"} 0\n"
                                    "presence_store_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(t, "presence_store_commit_seconds_bucket{le=\"+Inf\"} 2\n"
                                    "presence_store_commit_seconds_sum 0.020300\n"
                                    "presence_store_commit_seconds_count 2\n"));
    ck_assert_ptr_null(strstr(t, "# TYPE presence_store_commit_seconds_sum"));
    ck_assert_ptr_null(strstr(t, "# TYPE presence_store_commit_seconds_bucket"));
    /* process_* and presence_* keep their names */
    ck_assert_ptr_nonnull(strstr(t, "# TYPE process_open_fds gauge\nprocess_open_fds{proc=\"store-node\"} 9\n"));
    ck_assert_ptr_nonnull(strstr(t, "# TYPE presence_build_info gauge\npresence_build_info{proc=\"store-node\""));
    ck_assert_ptr_null(strstr(t, "presence_presence_"));
    /* a family the table does not describe says so (tests/metrics and integ_observe fail on it) */
    ck_assert_ptr_nonnull(strstr(t, "# HELP presence_some_new_gauge undocumented"));
    gw_buf_free(&b);
    stats_list_fini(&l);
}
END_TEST

START_TEST(test_help_table)
{
    size_t n;
    const char *const *f = gw_promtext_families(&n);
    ck_assert_uint_ge(n, 130);
    for (size_t i = 0; i < n; i++) {
        const char *h = gw_promtext_help(f[i]);
        ck_assert_ptr_nonnull(h);
        ck_assert_msg(strlen(h) > 10 && h[strlen(h) - 1] == '.', "%s: %s", f[i], h);
        ck_assert_msg(!strchr(h, '\n') && !strchr(h, '\\'), "%s: HELP needs no escaping", f[i]);
        for (size_t k = 0; k < i; k++)
            ck_assert_msg(strcmp(f[i], f[k]) != 0, "%s twice", f[i]);
        /* the naming rules every family follows */
        size_t l = strlen(f[i]);
        ck_assert_msg(!(l > 3 && (!strcmp(f[i] + l - 3, "_ms") || !strcmp(f[i] + l - 3, "_us"))), "%s", f[i]);
    }
    ck_assert_ptr_null(gw_promtext_help("no_such_family"));
}
END_TEST

/* ==== the access log ========================================================================== */

static const char *s_target(const char *in)
{
    static char out[GW_ACCESS_TARGET_MAX + 4];
    gw_access_target(in, strlen(in), out, sizeof out);
    return out;
}

START_TEST(test_access_target)
{
    ck_assert_str_eq(s_target("/api/v2/presence/alice"), "/api/v2/presence/alice");
    ck_assert_str_eq(s_target("/x?access_token=abc.def.ghi&users=a,b"), "/x?access_token=REDACTED&users=a,b");
    ck_assert_str_eq(s_target("/x?users=a&ACCESS_TOKEN=abc"), "/x?users=a&ACCESS_TOKEN=REDACTED");
    ck_assert_str_eq(s_target("/x?access%5Ftoken=abc"), "/x?access%5Ftoken=REDACTED");
    ck_assert_str_eq(s_target("/x?access%5ftoken=abc;id_token=z"), "/x?access%5ftoken=REDACTED;id_token=REDACTED");
    ck_assert_str_eq(s_target("/x?tok%65n=abc"), "/x?tok%65n=REDACTED");
    ck_assert_str_eq(s_target("/x?access_token"), "/x?access_token"); /* no value: nothing to hide */
    ck_assert_str_eq(s_target("/x?a=1&&b=2&"), "/x?a=1&&b=2&");
    ck_assert_str_eq(s_target("/x?a=access_token"), "/x?a=access_token");
    /* bytes a JSON string or a terminal must not get raw */
    ck_assert_str_eq(s_target("/\"a\\b\x01\n\xff c"), "/%22a%5Cb%01%0A%FF%20c");
    /* bounded: a long target is cut and marked */
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[0] = '/';
    big[sizeof big - 1] = '\0';
    const char *t = s_target(big);
    ck_assert_uint_le(strlen(t), GW_ACCESS_TARGET_MAX + 3);
    ck_assert_str_eq(t + strlen(t) - 3, "...");
    /* a token after the cut is not shown either */
    char tail[3000];
    snprintf(tail, sizeof tail, "/x?%0*d&access_token=SECRET", 2000, 0);
    ck_assert_ptr_null(strstr(s_target(tail), "SECRET"));
}
END_TEST

START_TEST(test_access_line)
{
    gw_access_t a = {.ts_us = 1700000000123456ull, .proc = "gw", .pid = 42, .method = "PUT", .method_len = 3,
                     .route = "presence.user", .target = "/api/v2/presence/al\"ice?access_token=t0k",
                     .code = 200, .dur_us = 1234, .bytes = 301, .client = "10.0.0.7", .sub = "al\"ice", .sub_len = 6,
                     .user_id = "al\"ice", .uid_len = 6};
    a.target_len = strlen(a.target);
    gw_buf_t b;
    gw_buf_init(&b);
    gw_access_line(&b, &a);
    const char *want = "{\"ts\":\"2023-11-14T22:13:20.123456Z\",\"level\":\"info\",\"proc\":\"gw\",\"pid\":42,"
                       "\"msg\":\"access\",\"method\":\"PUT\",\"route\":\"presence.user\","
                       "\"target\":\"/api/v2/presence/al%22ice?access_token=REDACTED\",\"code\":200,\"ms\":1.234,"
                       "\"bytes\":301,\"client\":\"10.0.0.7\",\"sub\":\"al\\\"ice\",\"user_id\":\"al\\\"ice\"}\n";
    ck_assert_str_eq(s_str(&b), want);
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    json_decref(j);
    /* anonymous, no {id}, a method and a subject that are not clean text */
    gw_buf_reset(&b);
    a.sub = "\xff\x01x";
    a.sub_len = 3;
    a.user_id = NULL;
    a.method = "G\"T\x7f";
    a.method_len = 4;
    gw_access_line(&b, &a);
    j = json_loadb(b.p, b.len, 0, &je);
    ck_assert_msg(j != NULL, "%s: %s", je.text, s_str(&b));
    ck_assert_str_eq(json_string_value(json_object_get(j, "method")), "G%22T%7F");
    ck_assert_str_eq(json_string_value(json_object_get(j, "sub")), "\xc3\xbf\x01x"); /* \u00ff \u0001 x */
    ck_assert_ptr_null(json_object_get(j, "user_id"));
    json_decref(j);
    gw_buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("observe");
    TCase *m = tcase_create("promtext");
    tcase_set_timeout(m, 30);
    tcase_add_test(m, test_render_families);
    tcase_add_test(m, test_render_histogram_and_prefix);
    tcase_add_test(m, test_help_table);
    suite_add_tcase(s, m);
    TCase *a = tcase_create("access");
    tcase_set_timeout(a, 30);
    tcase_add_test(a, test_access_target);
    tcase_add_test(a, test_access_line);
    suite_add_tcase(s, a);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
