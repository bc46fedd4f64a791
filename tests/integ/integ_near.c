/* integ_near.c -- the gateway's near cache (gateway/gw_near.h, gw_nearcall.c) stays coherent.
 *
 * A node (store-node, two cache-nodes, gateway A) and a second gateway B on the same tier, both
 * with their near caches on (the default):
 *   - a writer through A and readers through B, concurrently: no reader ever gets an older version
 *     of a user than one it already got, B's near cache answers most reads (its metrics say so),
 *     and B shows every final version once the writer stops;
 *   - read-your-writes through one gateway: a GET on a new connection (either thread) after a PUT
 *     returns at least the PUT's version;
 *   - a gateway that was stopped (SIGSTOP) while its stream lost messages (tiny publisher HWM)
 *     drops its entries before it answers anything: the first read after SIGCONT is the version
 *     written during the stop, never the one it held;
 *   - a silent stream (the store stopped past the heartbeat limit) leaves no near answer unmarked:
 *     reads carry X-Presence-Stale until the stream is live again, then the near cache serves;
 *   - a multi-get mixing near hits, misses and unknown users answers each exactly as single GETs.
 */
#include "harness.h"

#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_SCOPE "presence:admin"

/* ==== helpers ================================================================================== */

/* Gateway B: the node's tier, its own process. */
static th_proc_t *s_gateway_b(const th_node_t *n, int threads, const char *const *extra, int *port)
{
    th_proc_t *g = th_proc("gateway-b", "gateway");
    th_env(g, "DATA_DIR", "%s", n->dir);
    th_env(g, "JWT_SECRET", "%s", TH_SECRET);
    th_env(g, "NODE_ID", "node-b");
    th_env(g, "LOG_LEVEL", "info");
    th_env(g, "STORE_CMD_ENDPOINT", "%s", n->store_cmd);
    th_env(g, "STORE_PUB_ENDPOINT", "%s", n->store_pub);
    th_env(g, "SERVICE_ADDR", "127.0.0.1");
    th_env(g, "SERVICE_PORT", "0");
    th_env(g, "CACHE_ENDPOINTS", "%s", n->cache_eps);
    th_env(g, "GATEWAY_THREADS", "%d", threads);
    th_env(g, "RATE_LIMIT_WRITES", "0");
    for (int i = 0; extra && extra[i]; i++) {
        char name[64];
        const char *eq = strchr(extra[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(g, name, "%s", eq + 1);
    }
    ck_assert_int_eq(th_start(g, 20000), 0);
    const char *colon = strrchr(g->ready, ':');
    *port = colon ? atoi(colon + 1) : 0;
    ck_assert_int_gt(*port, 0);
    return g;
}

static json_t *s_json(const th_resp_t *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    ck_assert_msg(j != NULL, "response is not JSON: %.200s", r->body);
    return j;
}

/* The version of uid's record in a 200 answer; 0 for a 404. */
static uint64_t s_version_of(const th_resp_t *r, const char *uid)
{
    if (r->status == 404)
        return 0;
    ck_assert_msg(r->status == 200, "status %d: %.200s", r->status, r->body);
    json_t *j = s_json(r);
    json_t *rec = json_object_get(json_object_get(j, "data"), uid);
    ck_assert_msg(rec != NULL, "no record for %s in %.200s", uid, r->body);
    uint64_t v = (uint64_t)json_integer_value(json_object_get(rec, "version"));
    json_decref(j);
    return v;
}

/* PUT through port on a keep-alive connection (c) or a new one (c NULL); returns the stored version. */
static uint64_t s_put(th_conn_t *c, int port, const char *uid, const char *auth, const char *status, const char *msg)
{
    char path[128], body[256];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    int bl = snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\",\"ttl\":3600}", status, msg);
    th_resp_t r;
    int rc = c ? th_conn_request(c, "PUT", path, auth, body, (size_t)bl, &r, 10000)
               : th_http(port, "PUT", path, auth, body, (size_t)bl, &r, 10000);
    ck_assert_int_eq(rc, 0);
    uint64_t v = s_version_of(&r, uid);
    th_resp_free(&r);
    ck_assert_uint_gt(v, 0);
    return v;
}

/* GET on a new connection: the version (0: not found); *stale set from X-Presence-Stale. */
static uint64_t s_get(int port, const char *uid, bool *stale)
{
    char path[128], hv[16];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", path, NULL, NULL, 0, &r, 30000), 0);
    if (stale)
        *stale = th_resp_header(&r, "x-presence-stale", hv, sizeof hv) != NULL;
    uint64_t v = s_version_of(&r, uid);
    th_resp_free(&r);
    return v;
}

/* A gateway metric (a plain series without labels), or 0 when absent. */
static uint64_t s_metric(int port, const char *name)
{
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", "/metrics", NULL, NULL, 0, &r, 10000), 0);
    ck_assert_int_eq(r.status, 200);
    uint64_t v = 0;
    size_t nl = strlen(name);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            v = strtoull(p + nl + 1, NULL, 10);
            break;
        }
    th_resp_free(&r);
    return v;
}

/* ==== concurrent writer and readers ============================================================ */

#define USERS 8
#define READERS 4
#define RUN_MS 4000

typedef struct shared {
    int port_a, port_b;
    char admin[1024];
    atomic_bool stop;
    _Atomic uint64_t final[USERS]; /* the writer's last acknowledged version per user */
    atomic_int failures;
    char why[256];
} shared_t;

typedef struct reader {
    shared_t *sh;
    int idx;
    uint64_t reads, regressions, changes_seen;
    uint64_t last[USERS];
} reader_t;

static void *s_writer(void *arg)
{
    shared_t *sh = arg;
    th_conn_t c;
    c.fd = -1;
    c.port = sh->port_a;
    static const char *const st[] = {"online", "away", "busy"};
    for (unsigned i = 0; !atomic_load(&sh->stop); i++) {
        char uid[16], msg[32], path[64], body[160];
        int u = (int)(i % USERS);
        snprintf(uid, sizeof uid, "near%d", u);
        snprintf(msg, sizeof msg, "w%u", i);
        snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
        int bl = snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\",\"ttl\":3600}", st[i % 3], msg);
        th_resp_t r;
        if (th_conn_request(&c, "PUT", path, sh->admin, body, (size_t)bl, &r, 10000) < 0) {
            atomic_fetch_add(&sh->failures, 1);
            continue;
        }
        if (r.status == 200) {
            json_error_t e;
            json_t *j = json_loadb(r.body, r.body_len, 0, &e);
            json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
            if (rec)
                atomic_store(&sh->final[u], (uint64_t)json_integer_value(json_object_get(rec, "version")));
            json_decref(j);
        } else {
            atomic_fetch_add(&sh->failures, 1);
        }
        th_resp_free(&r);
    }
    th_conn_close(&c);
    return NULL;
}

/* One keep-alive connection to B (one gateway thread): versions per user never go back. */
static void *s_reader(void *arg)
{
    reader_t *rd = arg;
    th_conn_t c;
    c.fd = -1;
    c.port = rd->sh->port_b;
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(rd->idx + 1);
    while (!atomic_load(&rd->sh->stop)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int u = (int)(x % USERS);
        char uid[16], path[64];
        snprintf(uid, sizeof uid, "near%d", u);
        snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
        th_resp_t r;
        if (th_conn_request(&c, "GET", path, NULL, NULL, 0, &r, 10000) < 0) {
            atomic_fetch_add(&rd->sh->failures, 1);
            continue;
        }
        uint64_t v = 0;
        if (r.status == 200) {
            json_error_t e;
            json_t *j = json_loadb(r.body, r.body_len, 0, &e);
            json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
            v = rec ? (uint64_t)json_integer_value(json_object_get(rec, "version")) : 0;
            json_decref(j);
        }
        if (r.status != 200 || !v) {
            atomic_fetch_add(&rd->sh->failures, 1);
        } else {
            rd->reads++;
            if (v < rd->last[u]) {
                if (!rd->regressions++)
                    snprintf(rd->sh->why, sizeof rd->sh->why, "reader %d: %s version %llu after %llu", rd->idx, uid,
                             (unsigned long long)v, (unsigned long long)rd->last[u]);
            } else if (v > rd->last[u]) {
                rd->changes_seen += rd->last[u] != 0;
                rd->last[u] = v;
            }
        }
        th_resp_free(&r);
    }
    th_conn_close(&c);
    return NULL;
}

typedef struct final_check {
    int port;
    const char *uid;
    uint64_t want;
} final_check_t;

static bool s_has_final(void *arg)
{
    final_check_t *f = arg;
    return s_get(f->port, f->uid, NULL) >= f->want;
}

START_TEST(test_monotonic_across_gateways)
{
    th_node_t n;
    const char *const env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    shared_t *sh = calloc(1, sizeof *sh);
    sh->port_a = n.port;
    th_proc_t *b = s_gateway_b(&n, 2, NULL, &sh->port_b);
    th_auth_header(sh->admin, sizeof sh->admin, "writer", ADMIN_SCOPE);
    for (int u = 0; u < USERS; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "near%d", u);
        atomic_store(&sh->final[u], s_put(NULL, sh->port_a, uid, sh->admin, "online", "start"));
    }
    uint64_t hits0 = s_metric(sh->port_b, "gateway_near_hits_total");
    pthread_t wt, rt[READERS];
    reader_t rd[READERS];
    memset(rd, 0, sizeof rd);
    pthread_create(&wt, NULL, s_writer, sh);
    for (int i = 0; i < READERS; i++) {
        rd[i].sh = sh;
        rd[i].idx = i;
        pthread_create(&rt[i], NULL, s_reader, &rd[i]);
    }
    uint64_t until = th_now_ms() + RUN_MS;
    while (th_now_ms() < until) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL); /* the run's length, not a synchronisation */
    }
    atomic_store(&sh->stop, true);
    pthread_join(wt, NULL);
    uint64_t reads = 0, changes = 0, regressions = 0;
    for (int i = 0; i < READERS; i++) {
        pthread_join(rt[i], NULL);
        reads += rd[i].reads;
        changes += rd[i].changes_seen;
        regressions += rd[i].regressions;
    }
    uint64_t hits = s_metric(sh->port_b, "gateway_near_hits_total") - hits0;
    fprintf(stderr, "integ_near: %llu reads through B (%llu near hits), %llu newer versions seen, %d failures\n",
            (unsigned long long)reads, (unsigned long long)hits, (unsigned long long)changes,
            atomic_load(&sh->failures));
    ck_assert_msg(regressions == 0, "%llu regressions; first: %s", (unsigned long long)regressions, sh->why);
    ck_assert_int_eq(atomic_load(&sh->failures), 0);
    ck_assert_uint_gt(reads, 200);
    ck_assert_uint_gt(changes, 20);       /* the readers followed the writes ... */
    ck_assert_uint_gt(hits, reads / 4);    /* ... much of it from B's near cache */
    /* Once the writer stops, B shows every final version (its stream delivers them). */
    for (int u = 0; u < USERS; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "near%d", u);
        final_check_t f = {sh->port_b, uid, atomic_load(&sh->final[u])};
        ck_assert_msg(th_wait_for(s_has_final, &f, 5000), "B never showed %s version %llu", uid,
                      (unsigned long long)f.want);
    }
    ck_assert_int_eq(th_stop(b, 15000), 0);
    ck_assert_int_eq(th_node_stop(&n), 0);
    free(sh);
}
END_TEST

/* ==== read-your-writes within one gateway ======================================================= */

START_TEST(test_read_your_writes)
{
    th_node_t n;
    const char *const env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_THREADS=2", NULL};
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    char admin[1024];
    th_auth_header(admin, sizeof admin, "writer", ADMIN_SCOPE);
    /* Warm both threads' near caches with the users first, so stale entries could be served. */
    for (int u = 0; u < 4; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "ryw%d", u);
        s_put(NULL, n.port, uid, admin, "online", "start");
        for (int k = 0; k < 4; k++)
            ck_assert_uint_gt(s_get(n.port, uid, NULL), 0);
    }
    uint64_t hits0 = s_metric(n.port, "gateway_near_hits_total");
    for (int i = 0; i < 300; i++) {
        char uid[16], msg[16];
        snprintf(uid, sizeof uid, "ryw%d", i % 4);
        snprintf(msg, sizeof msg, "m%d", i);
        uint64_t v = s_put(NULL, n.port, uid, admin, i % 2 ? "busy" : "away", msg);
        uint64_t g = s_get(n.port, uid, NULL); /* a new connection: either thread */
        ck_assert_msg(g >= v, "GET of %s after its PUT returned version %llu < %llu", uid, (unsigned long long)g,
                      (unsigned long long)v);
        ck_assert_uint_ge(s_get(n.port, uid, NULL), g);
    }
    /* and the near cache was in use meanwhile (reads after the stream caught up) */
    ck_assert_uint_gt(s_metric(n.port, "gateway_near_hits_total"), hits0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== a stopped gateway whose stream lost messages ============================================= */

#define GAP_USERS 50

START_TEST(test_stopped_gateway_drops)
{
    th_node_t n;
    /* A tiny publisher queue: a subscriber that does not read loses messages for real. */
    const char *const env[] = {"RATE_LIMIT_WRITES=0", "STORE_PUB_HWM=20", "SYNC_SUB_HWM=20", NULL};
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    int port_b;
    /* B's first reads after SIGCONT wait for its timers, its nodes' links and its stream's catch-up
     * of 3,000 changes: on a loaded or sanitized build that can outlast the default 2 s request
     * timeout. This test is about what B answers, not how fast. */
    static const char *const b_env[] = {"REQUEST_TIMEOUT_MS=20000", NULL};
    th_proc_t *b = s_gateway_b(&n, 1, b_env, &port_b);
    char admin[1024];
    th_auth_header(admin, sizeof admin, "writer", ADMIN_SCOPE);
    uint64_t held[GAP_USERS];
    for (int u = 0; u < GAP_USERS; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "gap%d", u);
        held[u] = s_put(NULL, n.port, uid, admin, "online", "before");
        final_check_t f = {port_b, uid, held[u]};
        ck_assert(th_wait_for(s_has_final, &f, 5000)); /* B holds it (near entry) */
    }
    uint64_t hits0 = s_metric(port_b, "gateway_near_hits_total");
    for (int u = 0; u < GAP_USERS; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "gap%d", u);
        ck_assert_uint_eq(s_get(port_b, uid, NULL), held[u]);
    }
    ck_assert_uint_ge(s_metric(port_b, "gateway_near_hits_total") - hits0, GAP_USERS);
    uint64_t drops0 = s_metric(port_b, "gateway_near_drops_total");

    th_signal(b, SIGSTOP);
    th_conn_t c;
    c.fd = -1;
    c.port = n.port;
    uint64_t last[GAP_USERS];
    for (int i = 0; i < 3000; i++) {
        char uid[16], msg[16];
        int u = i % GAP_USERS;
        snprintf(uid, sizeof uid, "gap%d", u);
        snprintf(msg, sizeof msg, "during%d", i);
        last[u] = s_put(&c, n.port, uid, admin, "busy", msg);
    }
    th_conn_close(&c);
    th_signal(b, SIGCONT);

    /* The very first answers after the stop: never the entries B held, which are all stale now. */
    for (int u = 0; u < GAP_USERS; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "gap%d", u);
        uint64_t v = s_get(port_b, uid, NULL);
        ck_assert_msg(v == last[u], "B answered %s version %llu after the stop; written meanwhile: %llu (held %llu)",
                      uid, (unsigned long long)v, (unsigned long long)last[u], (unsigned long long)held[u]);
    }
    ck_assert_uint_ge(s_metric(port_b, "gateway_near_drops_total") - drops0, GAP_USERS);
    ck_assert_uint_ge(s_metric(port_b, "gateway_near_stalls_total"), 1);
    ck_assert_int_eq(th_stop(b, 15000), 0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== a silent stream ============================================================================ */

typedef struct stale_wait {
    int port;
    const char *uid;
    bool want_stale;
} stale_wait_t;

static bool s_stale_is(void *arg)
{
    stale_wait_t *w = arg;
    bool stale;
    s_get(w->port, w->uid, &stale);
    return stale == w->want_stale;
}

START_TEST(test_silence_marks_stale)
{
    th_node_t n;
    const char *const env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    char admin[1024];
    th_auth_header(admin, sizeof admin, "writer", ADMIN_SCOPE);
    uint64_t v = s_put(NULL, n.port, "quiet", admin, "online", "x");
    bool stale = true;
    ck_assert_uint_eq(s_get(n.port, "quiet", &stale), v);
    ck_assert(!stale);
    uint64_t hits0 = s_metric(n.port, "gateway_near_hits_total");
    ck_assert_uint_eq(s_get(n.port, "quiet", &stale), v);
    ck_assert(!stale);
    ck_assert_uint_gt(s_metric(n.port, "gateway_near_hits_total"), hits0); /* a near hit */

    th_signal(n.store, SIGSTOP);
    /* Past the heartbeat limit (3 s) the stream is silent: the near cache drops its entries and the
     * cache-node answers, marked stale (its store is unreachable). Never an unmarked answer from a
     * stream that stopped. */
    stale_wait_t w = {n.port, "quiet", true};
    ck_assert_msg(th_wait_for(s_stale_is, &w, 15000), "no stale mark while the store is stopped");
    ck_assert_uint_eq(s_get(n.port, "quiet", &stale), v);
    ck_assert(stale);
    ck_assert_uint_ge(s_metric(n.port, "gateway_near_drops_total"), 1);
    th_signal(n.store, SIGCONT);
    w.want_stale = false;
    ck_assert_msg(th_wait_for(s_stale_is, &w, 15000), "still stale after the store came back");
    /* live again: the near cache serves once more */
    hits0 = s_metric(n.port, "gateway_near_hits_total");
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(s_get(n.port, "quiet", NULL), v);
    ck_assert_uint_gt(s_metric(n.port, "gateway_near_hits_total"), hits0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ==== multi-get through the near cache =========================================================== */

START_TEST(test_multi_get_mixed)
{
    th_node_t n;
    const char *const env[] = {"RATE_LIMIT_WRITES=0", "GATEWAY_THREADS=1", NULL};
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    char admin[1024];
    th_auth_header(admin, sizeof admin, "writer", ADMIN_SCOPE);
    uint64_t ver[6];
    for (int u = 0; u < 6; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "mg%d", u);
        ver[u] = s_put(NULL, n.port, uid, admin, "online", "m");
    }
    /* mg0..mg2 become near entries; mg3..mg5 are asked of the nodes by the multi-get */
    for (int u = 0; u < 3; u++) {
        char uid[16];
        snprintf(uid, sizeof uid, "mg%d", u);
        ck_assert_uint_eq(s_get(n.port, uid, NULL), ver[u]);
    }
    for (int round = 0; round < 2; round++) {
        th_resp_t r;
        ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence?users=mg0,mg3,nobody,mg1,mg4,mg2,mg5", NULL, NULL, 0,
                                 &r, 10000),
                         0);
        ck_assert_int_eq(r.status, 200);
        json_t *j = s_json(&r);
        json_t *data = json_object_get(j, "data");
        ck_assert_uint_eq(json_object_size(data), 6);
        ck_assert_ptr_null(json_object_get(data, "nobody"));
        for (int u = 0; u < 6; u++) {
            char uid[16];
            snprintf(uid, sizeof uid, "mg%d", u);
            json_t *rec = json_object_get(data, uid);
            ck_assert_msg(rec != NULL, "%s missing from %s", uid, r.body);
            ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "version")), ver[u]);
            ck_assert_str_eq(json_string_value(json_object_get(rec, "user_id")), uid);
        }
        json_decref(j);
        th_resp_free(&r);
    }
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("integ_near");
    TCase *tc = tcase_create("coherence");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_monotonic_across_gateways);
    tcase_add_test(tc, test_read_your_writes);
    tcase_add_test(tc, test_stopped_gateway_drops);
    tcase_add_test(tc, test_silence_marks_stale);
    tcase_add_test(tc, test_multi_get_mixed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
