/* integ_leaf.c -- hub and spoke: a center and two leaf regions on one machine.
 *
 *   - a write at leaf A is served by leaf B within 1 s (B had the key cached: the stream, not a
 *     read-through, brings it), and an overwrite is never followed by the old value at B;
 *   - SIGKILL the whole center: leaf reads go on (X-Presence-Stale: true), writes and misses
 *     answer 503 well within REQUEST_TIMEOUT_MS;
 *   - restart the center on its data dir: writes work again at both leaves and B catches up;
 *   - kill and restart a relay: the region comes back on its own;
 *   - invisible mode holds at a leaf: others see offline, no sessions, a frozen version;
 *   - CurveZMQ: an authorised relay works, a relay with another key is refused.
 */
#include "harness.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static char s_center_ep[64];

static int s_start_center(th_node_t *c, const char *const *extra_in)
{
    int port = th_free_port_pair();
    if (port < 0)
        return -1;
    snprintf(s_center_ep, sizeof s_center_ep, "tcp://127.0.0.1:%d", port);
    char p[32];
    snprintf(p, sizeof p, "CENTER_PORT=%d", port);
    const char *env[16] = {p, "CENTER_BIND_ADDR=127.0.0.1", "CENTER_INSECURE=true"};
    int n = 3;
    for (int i = 0; extra_in && extra_in[i] && n < 15; i++)
        env[n++] = extra_in[i];
    env[n] = NULL;
    return th_node_start(c, 2, env);
}

static long s_version(const th_resp_t *r, const char *uid, char *msg, size_t msglen)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
    long v = rec ? (long)json_integer_value(json_object_get(rec, "version")) : -1;
    if (msg && rec) {
        const char *m = json_string_value(json_object_get(rec, "message"));
        snprintf(msg, msglen, "%s", m ? m : "");
    }
    if (j)
        json_decref(j);
    return v;
}

static int s_put(int port, const char *uid, const char *body, long *version)
{
    char auth[1024], path[128];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    if (th_http(port, "PUT", path, auth, body, strlen(body), &r, 5000) < 0)
        return -1;
    int st = r.status;
    if (version)
        *version = st == 200 ? s_version(&r, uid, NULL, 0) : -1;
    th_resp_free(&r);
    return st;
}

typedef struct seen {
    int port;
    const char *uid;
    long want;
    long last;
    bool regressed;
    bool stale;
} seen_t;

static bool s_sees(void *arg)
{
    seen_t *s = arg;
    char path[128];
    snprintf(path, sizeof path, "/api/v2/presence/%s", s->uid);
    th_resp_t r;
    if (th_http(s->port, "GET", path, NULL, NULL, 0, &r, 3000) < 0)
        return false;
    long v = r.status == 200 ? s_version(&r, s->uid, NULL, 0) : -1;
    char h[16];
    s->stale = th_resp_header(&r, "x-presence-stale", h, sizeof h) != NULL;
    th_resp_free(&r);
    if (v >= 0 && v < s->last)
        s->regressed = true;
    if (v > s->last)
        s->last = v;
    return v >= s->want;
}

static bool s_unready(void *arg)
{
    th_resp_t r;
    if (th_http(*(int *)arg, "GET", "/health/readiness", NULL, NULL, 0, &r, 3000) < 0)
        return false;
    bool un = r.status == 503;
    th_resp_free(&r);
    return un;
}

static bool s_write_ok(void *arg)
{
    seen_t *s = arg;
    long v;
    return s_put(s->port, s->uid, "{\"status\":\"online\"}", &v) == 200;
}

START_TEST(test_two_leaves)
{
    th_node_t c, a, b;
    ck_assert_int_eq(s_start_center(&c, NULL), 0);
    const char *lenv[] = {"RATE_LIMIT_WRITES=0", NULL};
    ck_assert_int_eq(th_leaf_start(&a, 2, s_center_ep, lenv), 0);
    ck_assert_int_eq(th_leaf_start(&b, 2, s_center_ep, lenv), 0);

    long v;
    ck_assert_int_eq(s_put(a.port, "walt", "{\"status\":\"online\",\"message\":\"m0\"}", &v), 200);
    seen_t sb = {b.port, "walt", v, 0, false, false};
    ck_assert(th_wait_for(s_sees, &sb, 5000)); /* B reads through once and now caches walt */

    uint64_t worst = 0;
    for (int i = 1; i <= 50; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"status\":\"busy\",\"message\":\"m%d\"}", i);
        ck_assert_int_eq(s_put(a.port, "walt", body, &v), 200);
        sb.want = v;
        uint64_t t0 = th_now_ms();
        ck_assert_msg(th_wait_for(s_sees, &sb, 1000), "leaf B did not serve version %ld within 1 s", v);
        if (th_now_ms() - t0 > worst)
            worst = th_now_ms() - t0;
        ck_assert_msg(!sb.regressed, "leaf B served an older version after a newer one");
    }
    th_resp_t r;
    char msg[32];
    ck_assert_int_eq(th_http(b.port, "GET", "/api/v2/presence/walt", NULL, NULL, 0, &r, 5000), 0);
    s_version(&r, "walt", msg, sizeof msg);
    ck_assert_str_eq(msg, "m50");
    th_resp_free(&r);
    fprintf(stderr, "integ_leaf: worst A->B propagation over 50 writes: %llu ms\n", (unsigned long long)worst);

    /* The whole center dies. */
    th_kill(c.gw);
    for (int i = 0; i < c.ncache; i++)
        th_kill(c.cache[i]);
    th_kill(c.store);
    /* Cached reads go on at B, marked stale once the region knows its link is down. */
    seen_t stale = {b.port, "walt", sb.want, 0, false, false};
    uint64_t deadline = th_now_ms() + 10000;
    while (!(s_sees(&stale) && stale.stale) && th_now_ms() < deadline)
        ;
    ck_assert_msg(stale.stale, "leaf B did not mark its cached answer stale");
    /* Writes and misses: 503, fast. */
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(s_put(a.port, "walt", "{\"status\":\"away\"}", NULL), 503);
    ck_assert_int_eq(th_http(b.port, "GET", "/api/v2/presence/nobody-here", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_msg(r.status == 503, "miss at B: %d %s", r.status, r.body);
    th_resp_free(&r);
    ck_assert_msg(th_now_ms() - t0 < 1000, "503s took %llu ms", (unsigned long long)(th_now_ms() - t0));
    /* Leaf A's relay notices on its own (within the heartbeat limit): readiness follows. */
    ck_assert_msg(th_wait_for(s_unready, &a.port, 10000), "leaf A stayed ready without a center");
    /* /health/store at the leaf: 503, writes "unready" (ARCHITECTURE.md's failure table). */
    ck_assert_int_eq(th_http(a.port, "GET", "/health/store", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_msg(r.status == 503 && r.body && strstr(r.body, "\"writes\":\"unready\"") &&
                      strstr(r.body, "\"node_type\":\"leaf\""),
                  "leaf A's /health/store without a center: %d %s", r.status, r.body ? r.body : "");
    th_resp_free(&r);

    /* The center comes back on its data: writes work again everywhere and B catches up. */
    ck_assert_int_eq(th_restart(c.store, 30000), 0);
    seen_t wa = {a.port, "walt", 0, 0, false, false}, wb = {b.port, "xena", 0, 0, false, false};
    ck_assert_msg(th_wait_for(s_write_ok, &wa, 15000), "writes at leaf A did not resume");
    ck_assert_msg(th_wait_for(s_write_ok, &wb, 15000), "writes at leaf B did not resume");
    ck_assert_int_eq(s_put(a.port, "walt", "{\"status\":\"online\",\"message\":\"back\"}", &v), 200);
    seen_t back = {b.port, "walt", v, 0, false, false};
    ck_assert_msg(th_wait_for(s_sees, &back, 5000), "leaf B did not catch up after the center came back");
    ck_assert(!back.stale);

    /* Kill and restart leaf B's relay: the region recovers by itself. */
    th_kill(b.relay);
    ck_assert_int_eq(th_restart(b.relay, 20000), 0);
    ck_assert_int_eq(s_put(a.port, "walt", "{\"status\":\"busy\",\"message\":\"after relay restart\"}", &v), 200);
    seen_t rb = {b.port, "walt", v, 0, false, false};
    ck_assert_msg(th_wait_for(s_sees, &rb, 10000), "leaf B did not recover after its relay restarted");
    ck_assert_msg(th_wait_for(s_write_ok, &wb, 10000), "writes at leaf B did not resume after its relay restarted");

    ck_assert_int_eq(th_node_stop(&a), 0);
    ck_assert_int_eq(th_node_stop(&b), 0);
    ck_assert_int_eq(th_stop(c.store, 15000), 0);
}
END_TEST

/* GET uid at port as sub (NULL: anonymous): the record's status, sessions and version. */
static int s_view(int port, const char *uid, const char *sub, char *status, size_t slen, long *sessions, long *version)
{
    char auth[1024] = "", path[128];
    if (sub)
        th_auth_header(auth, sizeof auth, sub, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    if (th_http(port, "GET", path, sub ? auth : NULL, NULL, 0, &r, 3000) < 0)
        return -1;
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
    int st = r.status;
    th_resp_free(&r);
    if (!rec) {
        if (j)
            json_decref(j);
        return st == 200 ? -1 : st;
    }
    const char *sv = json_string_value(json_object_get(rec, "status"));
    snprintf(status, slen, "%s", sv ? sv : "");
    *sessions = (long)json_integer_value(json_object_get(rec, "sessions"));
    *version = (long)json_integer_value(json_object_get(rec, "version"));
    json_decref(j);
    return st;
}

typedef struct vis {
    int port;
    const char *uid, *sub, *want;
} vis_t;

static bool s_shows(void *arg)
{
    vis_t *v = arg;
    char st[16];
    long n, ver;
    return s_view(v->port, v->uid, v->sub, st, sizeof st, &n, &ver) == 200 && strcmp(st, v->want) == 0;
}

/* Invisible mode through a leaf region: the leaf's cache-nodes hold the whole record, the leaf's
 * gateway renders it per reader -- others see offline with no sessions and a frozen version. */
START_TEST(test_invisible_at_leaf)
{
    th_node_t c, a;
    ck_assert_int_eq(s_start_center(&c, NULL), 0);
    const char *lenv[] = {"RATE_LIMIT_WRITES=0", NULL};
    ck_assert_int_eq(th_leaf_start(&a, 2, s_center_ep, lenv), 0);
    ck_assert_int_eq(s_put(a.port, "ivy", "{\"status\":\"online\",\"session\":\"phone\"}", NULL), 200);
    ck_assert_int_eq(s_put(c.port, "ivy", "{\"status\":\"offline\",\"ttl\":600}", NULL), 200);
    vis_t v = {a.port, "ivy", NULL, "offline"};
    ck_assert(th_wait_for(s_shows, &v, 5000));
    char st[16];
    long n = -1, pub = -1, ver = -1;
    ck_assert_int_eq(s_view(a.port, "ivy", NULL, st, sizeof st, &n, &pub), 200);
    ck_assert_int_eq(n, 0);
    /* a device joins at the center: the leaf shows others nothing new */
    long v2;
    ck_assert_int_eq(s_put(c.port, "ivy", "{\"status\":\"busy\",\"session\":\"desk\"}", &v2), 200);
    ck_assert_int_eq(s_view(a.port, "ivy", "ivy", st, sizeof st, &n, &ver), 200);
    uint64_t dl = th_now_ms() + 5000;
    while ((ver < v2 || n != 2) && th_now_ms() < dl) /* the leaf's stream brings the new version */
        ck_assert_int_eq(s_view(a.port, "ivy", "ivy", st, sizeof st, &n, &ver), 200);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(st, "offline");
    ck_assert_int_eq(ver, v2);
    long pub2 = -1;
    ck_assert_int_eq(s_view(a.port, "ivy", "bob", st, sizeof st, &n, &pub2), 200);
    ck_assert_str_eq(st, "offline");
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(pub2, pub);
    ck_assert_int_eq(th_node_stop(&a), 0);
    ck_assert_int_eq(th_node_stop(&c), 0);
}
END_TEST

START_TEST(test_curve)
{
    char srv_pub[41], srv_sec[41], a_pub[41], a_sec[41], x_pub[41], x_sec[41];
    ck_assert_int_eq(zmq_curve_keypair(srv_pub, srv_sec), 0);
    ck_assert_int_eq(zmq_curve_keypair(a_pub, a_sec), 0);
    ck_assert_int_eq(zmq_curve_keypair(x_pub, x_sec), 0);
    char e1[80], e2[80];
    snprintf(e1, sizeof e1, "CURVE_SERVER_SECRET_KEY=%s", srv_sec);
    snprintf(e2, sizeof e2, "CURVE_ALLOWED_CLIENTS=%s", a_pub);
    const char *cenv[] = {e1, e2, NULL};
    th_node_t c, good, bad;
    ck_assert_int_eq(s_start_center(&c, cenv), 0);

    char g1[80], g2[80], g3[80];
    snprintf(g1, sizeof g1, "CURVE_SERVER_PUBLIC_KEY=%s", srv_pub);
    snprintf(g2, sizeof g2, "CURVE_PUBLIC_KEY=%s", a_pub);
    snprintf(g3, sizeof g3, "CURVE_SECRET_KEY=%s", a_sec);
    const char *genv[] = {g1, g2, g3, NULL};
    ck_assert_int_eq(th_leaf_start(&good, 1, s_center_ep, genv), 0);
    seen_t w = {good.port, "yuri", 0, 0, false, false};
    ck_assert_msg(th_wait_for(s_write_ok, &w, 10000), "the authorised relay could not write");

    char b2[80], b3[80];
    snprintf(b2, sizeof b2, "CURVE_PUBLIC_KEY=%s", x_pub);
    snprintf(b3, sizeof b3, "CURVE_SECRET_KEY=%s", x_sec);
    const char *benv[] = {g1, b2, b3, NULL};
    ck_assert_int_eq(th_leaf_start(&bad, 1, s_center_ep, benv), 0);
    /* Its link never comes up: writes are refused (503) for as long as we look. */
    seen_t wb = {bad.port, "zoe", 0, 0, false, false};
    ck_assert_msg(!th_wait_for(s_write_ok, &wb, 3000), "a relay with an unauthorised key got through");
    /* The center says why. */
    bool refused = false;
    FILE *f = fopen(c.store->err_path, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "not authorised"))
            refused = true;
    if (f)
        fclose(f);
    ck_assert_msg(refused, "the center did not log the refusal");
    ck_assert_int_eq(th_node_stop(&good), 0);
    ck_assert_int_eq(th_node_stop(&bad), 0);
    ck_assert_int_eq(th_node_stop(&c), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_leaf");
    TCase *tc = tcase_create("hub_and_spoke");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_two_leaves);
    tcase_add_test(tc, test_invisible_at_leaf);
    tcase_add_test(tc, test_curve);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
