/* integ_store.c -- no acknowledged write is lost when the store-node is SIGKILLed mid-stream.
 *
 * WRITERS threads keep PUTs flowing through the HTTP API (keep-alive connections, each thread its
 * own users). Every 200 answer is an acknowledgement: we record, per user, the highest acknowledged
 * version and its message. After a first batch of acknowledgements the store-node is SIGKILLed
 * while writes are in flight, then restarted on the same data dir; the writers continue (503s and
 * 504s during the outage are not acknowledgements) until a second batch is acknowledged. Then
 * every user's record must have at least its highest acknowledged version (and the acknowledged
 * message when the versions are equal), and a write after all this gets a higher version than any
 * acknowledged before. Also: 504 "upstream timed out" for a hop that does not answer in time, 503
 * "store unavailable" at once for a store that is gone.
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

#define WRITERS 32
#define USERS_PER_WRITER 40
#define PHASE1 2000
#define PHASE2 2000

typedef struct acked {
    long version;
    char message[32];
} acked_t;

static int s_port;
static atomic_long s_acked, s_errors;
static atomic_int s_stop;
static acked_t s_acks[WRITERS][USERS_PER_WRITER];
static char s_admin[2048];

static void *s_writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    th_conn_t c;
    c.fd = -1;
    c.port = s_port;
    long n = 0;
    while (!atomic_load(&s_stop)) {
        int u = (int)(n % USERS_PER_WRITER);
        char path[64], body[128], msg[32];
        snprintf(path, sizeof path, "/api/v2/presence/w%d-u%d", w, u);
        snprintf(msg, sizeof msg, "m%ld", n);
        int bl = snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\"}", msg);
        n++;
        th_resp_t r;
        if (th_conn_request(&c, "PUT", path, s_admin, body, (size_t)bl, &r, 10000) < 0) {
            atomic_fetch_add(&s_errors, 1);
            continue;
        }
        if (r.status == 200) {
            json_error_t e;
            json_t *j = json_loadb(r.body, r.body_len, 0, &e);
            char uid[32];
            snprintf(uid, sizeof uid, "w%d-u%d", w, u);
            json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
            long v = rec ? (long)json_integer_value(json_object_get(rec, "version")) : 0;
            if (v > s_acks[w][u].version) {
                s_acks[w][u].version = v;
                snprintf(s_acks[w][u].message, sizeof s_acks[w][u].message, "%s", msg);
            }
            if (j)
                json_decref(j);
            atomic_fetch_add(&s_acked, 1);
        } else {
            atomic_fetch_add(&s_errors, 1);
        }
        th_resp_free(&r);
    }
    th_conn_close(&c);
    return NULL;
}

static bool s_acked_at_least(void *arg)
{
    return atomic_load(&s_acked) >= *(long *)arg;
}

START_TEST(test_kill_store_mid_stream)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_WRITES=0", NULL};
    ck_assert_int_eq(th_node_start(&n, 2, env), 0);
    s_port = n.port;
    th_auth_header(s_admin, sizeof s_admin, "loadtest", "presence:admin");
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, s_writer, (void *)(intptr_t)i);

    long want = PHASE1;
    ck_assert_msg(th_wait_for(s_acked_at_least, &want, 60000), "only %ld writes acknowledged", atomic_load(&s_acked));
    th_kill(n.store); /* SIGKILL with writes in flight */
    long at_kill = atomic_load(&s_acked);
    ck_assert_int_eq(th_restart(n.store, 30000), 0);
    want = at_kill + PHASE2;
    ck_assert_msg(th_wait_for(s_acked_at_least, &want, 60000), "writes did not resume after the restart (%ld acked)",
                  atomic_load(&s_acked));
    atomic_store(&s_stop, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);

    long max_acked = 0;
    int checked = 0;
    for (int w = 0; w < WRITERS; w++) {
        for (int u = 0; u < USERS_PER_WRITER; u++) {
            if (!s_acks[w][u].version)
                continue;
            char path[64], uid[32];
            snprintf(uid, sizeof uid, "w%d-u%d", w, u);
            snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
            th_resp_t r;
            ck_assert_int_eq(th_http(n.port, "GET", path, NULL, NULL, 0, &r, 10000), 0);
            ck_assert_int_eq(r.status, 200);
            json_error_t e;
            json_t *j = json_loadb(r.body, r.body_len, 0, &e);
            json_t *rec = json_object_get(json_object_get(j, "data"), uid);
            long v = (long)json_integer_value(json_object_get(rec, "version"));
            ck_assert_msg(v >= s_acks[w][u].version, "%s: version %ld < acknowledged %ld", uid, v, s_acks[w][u].version);
            if (v == s_acks[w][u].version)
                ck_assert_str_eq(json_string_value(json_object_get(rec, "message")), s_acks[w][u].message);
            if (s_acks[w][u].version > max_acked)
                max_acked = s_acks[w][u].version;
            json_decref(j);
            th_resp_free(&r);
            checked++;
        }
    }
    ck_assert_int_gt(checked, WRITERS * USERS_PER_WRITER / 2);
    th_resp_t r;
    const char *body = "{\"status\":\"away\"}";
    ck_assert_int_eq(th_http(n.port, "PUT", "/api/v2/presence/w0-u0", s_admin, body, strlen(body), &r, 10000), 0);
    ck_assert_int_eq(r.status, 200);
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    long v = (long)json_integer_value(json_object_get(json_object_get(json_object_get(j, "data"), "w0-u0"), "version"));
    ck_assert_int_gt(v, max_acked);
    json_decref(j);
    th_resp_free(&r);
    fprintf(stderr, "integ_store: %ld writes acknowledged (%ld at the kill), %ld errors during the outage, %d users checked\n",
            atomic_load(&s_acked), at_kill, atomic_load(&s_errors), checked);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST


/* Heartbeats that only refresh last_seen/expires_at are committed without an fsync (flushed within
 * TOUCH_SYNC_MS); a heartbeat that creates a record or brings a user back online is a change of
 * state and is fsynced before its answer. After a crash (SIGKILL: no clean close) the store
 * continues after its durable sequence reservation, so the versions caches saw from relaxed
 * commits are never handed out again and the next write is served by the cache. */
static long s_json_version(const th_resp_t *r, const char *uid, char *status, size_t slen)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    json_t *rec = j ? json_object_get(json_object_get(j, "data"), uid) : NULL;
    long v = rec ? (long)json_integer_value(json_object_get(rec, "version")) : -1;
    if (status)
        snprintf(status, slen, "%s", rec ? json_string_value(json_object_get(rec, "status")) : "");
    if (j)
        json_decref(j);
    return v;
}

START_TEST(test_heartbeat_durability)
{
    th_node_t n;
    const char *env[] = {"RATE_LIMIT_WRITES=0", "TOUCH_SYNC_MS=60000", NULL};
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_auth_header(s_admin, sizeof s_admin, "loadtest", "presence:admin");
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, n.store_cmd), 0);
    uint64_t relaxed0 = 0, relaxed1 = 0, relaxed2 = 0;
    ck_assert_int_eq(th_zc_stat(&z, "store_relaxed_commits_total", &relaxed0), 0);
    th_resp_t r;
    ck_assert_int_eq(th_http(n.port, "POST", "/api/v2/presence/hb1/heartbeat", s_admin, "{}", 2, &r, 10000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    ck_assert_int_eq(th_zc_stat(&z, "store_relaxed_commits_total", &relaxed1), 0);
    ck_assert_uint_eq(relaxed1, relaxed0); /* created the record: synced */
    long seen = 0;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(th_http(n.port, "POST", "/api/v2/presence/hb1/heartbeat", s_admin, "{}", 2, &r, 10000), 0);
        ck_assert_int_eq(r.status, 200);
        seen = s_json_version(&r, "hb1", NULL, 0);
        th_resp_free(&r);
    }
    ck_assert_int_eq(th_zc_stat(&z, "store_relaxed_commits_total", &relaxed2), 0);
    ck_assert_uint_ge(relaxed2, relaxed1 + 1); /* pure refreshes: relaxed */
    /* The cache has served version `seen` (a relaxed commit). Crash the store and restart it. */
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/hb1", NULL, NULL, 0, &r, 10000), 0);
    ck_assert_int_eq(s_json_version(&r, "hb1", NULL, 0), seen);
    th_resp_free(&r);
    th_zc_close(&z);
    th_kill(n.store);
    ck_assert_int_eq(th_restart(n.store, 30000), 0);
    const char *body = "{\"status\":\"busy\"}";
    long v = -1;
    uint64_t deadline = th_now_ms() + 15000;
    while (th_now_ms() < deadline) { /* 503 until the cache-node sees the store again */
        ck_assert_int_eq(th_http(n.port, "PUT", "/api/v2/presence/hb1", s_admin, body, strlen(body), &r, 10000), 0);
        int st = r.status;
        if (st == 200)
            v = s_json_version(&r, "hb1", NULL, 0);
        th_resp_free(&r);
        if (st == 200)
            break;
        ck_assert_msg(st == 503 || st == 504, "PUT after restart: %d", st);
    }
    ck_assert_int_gt(v, seen);
    char status[16];
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/hb1", NULL, NULL, 0, &r, 10000), 0);
    ck_assert_int_eq(s_json_version(&r, "hb1", status, sizeof status), v);
    ck_assert_str_eq(status, "busy");
    th_resp_free(&r);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* Slower builds (ASan: CK_TIMEOUT_MULTIPLIER=3) get proportionally longer bounds. */
static uint64_t s_mult(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int v = m ? atoi(m) : 1;
    return v > 0 ? (uint64_t)v : 1;
}

/* One timed PUT as admin: the status, the body's error text (or "") and the time it took. */
static int s_timed_put(int port, const char *uid, char *err, size_t elen, uint64_t *ms)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    const char *body = "{\"status\":\"online\"}";
    th_resp_t r;
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(th_http(port, "PUT", path, s_admin, body, strlen(body), &r, 10000), 0);
    *ms = th_now_ms() - t0;
    int st = r.status;
    json_t *j = r.body ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
    const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
    snprintf(err, elen, "%s", e ? e : "");
    json_decref(j);
    th_resp_free(&r);
    return st;
}

/* 503 and 504 mean different things (API.md, ARCHITECTURE.md's failure table): a hop that does not
 * answer in time is 504 "upstream timed out" at REQUEST_TIMEOUT_MS; a store that is gone is 503
 * "store unavailable", quickly (well under a second), for writes and for misses alike. */
START_TEST(test_503_and_504)
{
    static const char *const env[] = {"REQUEST_TIMEOUT_MS=800", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, env), 0);
    th_auth_header(s_admin, sizeof s_admin, "loadtest", "presence:admin");
    char err[128];
    uint64_t ms = 0;
    ck_assert_int_eq(s_timed_put(n.port, "t1", err, sizeof err, &ms), 200);

    /* The only cache-node stops (SIGSTOP): the gateway's request waits for it, then 504. */
    th_signal(n.cache[0], SIGSTOP);
    int st = s_timed_put(n.port, "t1", err, sizeof err, &ms);
    th_signal(n.cache[0], SIGCONT);
    ck_assert_msg(st == 504 && strcmp(err, "upstream timed out") == 0, "PUT to a stopped cache-node: %d '%s'", st, err);
    ck_assert_msg(ms >= 750 && ms < 800 + 700 * s_mult(), "504 after %llu ms (REQUEST_TIMEOUT_MS=800)",
                  (unsigned long long)ms);
    uint64_t until = th_now_ms() + 10000;
    while ((st = s_timed_put(n.port, "t1", err, sizeof err, &ms)) != 200 && th_now_ms() < until)
        ;
    ck_assert_int_eq(st, 200);

    /* The store dies (and stays dead): once the cache-node knows, every write and every miss is
     * 503 "store unavailable" at once. */
    th_kill(n.store);
    until = th_now_ms() + 5000;
    while ((st = s_timed_put(n.port, "t1", err, sizeof err, &ms)) != 503 && th_now_ms() < until)
        ck_assert_msg(st == 200 || st == 504, "PUT while the store dies: %d '%s'", st, err);
    ck_assert_msg(st == 503, "no 503 within 5 s of the store's death (last %d '%s')", st, err);
    for (int i = 0; i < 5; i++) {
        st = s_timed_put(n.port, "t1", err, sizeof err, &ms);
        ck_assert_msg(st == 503 && strcmp(err, "store unavailable") == 0, "PUT with the store dead: %d '%s'", st, err);
        ck_assert_msg(ms < 1000 * s_mult(), "503 took %llu ms", (unsigned long long)ms);
    }
    th_resp_t r;
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/never-written", NULL, NULL, 0, &r, 10000), 0);
    uint64_t gms = th_now_ms() - t0;
    ck_assert_msg(r.status == 503 && r.body && strstr(r.body, "store unavailable"), "a miss with the store dead: %d %s",
                  r.status, r.body ? r.body : "");
    ck_assert_msg(gms < 1000 * s_mult(), "the miss's 503 took %llu ms", (unsigned long long)gms);
    th_resp_free(&r);
    ck_assert_int_eq(th_restart(n.store, 30000), 0);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_store");
    TCase *tc = tcase_create("durability");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_kill_store_mid_stream);
    tcase_add_test(tc, test_heartbeat_durability);
    tcase_add_test(tc, test_503_and_504);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
