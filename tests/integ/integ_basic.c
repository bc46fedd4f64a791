/* integ_basic.c -- the thin path through real processes (foundation issue).
 *
 *   - PUT then GET through gateway -> cache-node -> store-node (LMDB): the envelope, the record's
 *     fields in API order, and a write response identical to the following GET;
 *   - records survive a restart of every process on the same data dir;
 *   - liveness, and readiness that follows the store's availability;
 *   - the launcher (what `make run` execs): dev secret, ready line, the token tool's token works,
 *     a crashed child is restarted, SIGTERM stops every child.
 */
#include "harness.h"
#include "zutil.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static json_t *s_json(const th_resp_t *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    ck_assert_msg(j != NULL, "response is not JSON: %.200s", r->body);
    return j;
}

static json_t *s_record(json_t *root, const char *uid)
{
    ck_assert(json_is_true(json_object_get(root, "success")));
    json_t *rec = json_object_get(json_object_get(root, "data"), uid);
    ck_assert_msg(rec != NULL, "no record for %s", uid);
    return rec;
}

static int s_put(int port, const char *uid, const char *body, th_resp_t *r)
{
    char auth[1024], path[256];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    return th_http(port, "PUT", path, auth, body, strlen(body), r, 5000);
}

START_TEST(test_put_get_roundtrip)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, NULL), 0);
    th_resp_t r;
    ck_assert_int_eq(s_put(n.port, "alice", "{\"status\":\"busy\",\"message\":\"In a meeting\",\"ttl\":600}", &r), 0);
    ck_assert_int_eq(r.status, 200);
    char ct[64];
    ck_assert_str_eq(th_resp_header(&r, "content-type", ct, sizeof ct), "application/json");
    /* Field order as API.md lists it. */
    const char *order[] = {"\"user_id\"", "\"status\"", "\"message\"", "\"last_seen\"", "\"updated_at\"",
                           "\"expires_at\"", "\"node_id\"", "\"ttl\"", "\"version\""};
    const char *prev = r.body;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const char *at = strstr(r.body, order[i]);
        ck_assert_msg(at && at > prev, "field %s missing or out of order in %s", order[i], r.body);
        prev = at;
    }
    json_t *put = s_json(&r);
    json_t *rec = s_record(put, "alice");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "status")), "busy");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "message")), "In a meeting");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "node_id")), "test-node");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "ttl")), 600);
    ck_assert_int_ge(json_integer_value(json_object_get(rec, "version")), 1);
    const char *ls = json_string_value(json_object_get(rec, "last_seen"));
    ck_assert_msg(ls && strlen(ls) == 27 && ls[26] == 'Z' && ls[19] == '.', "last_seen %s not RFC 3339 with us", ls);
    char *put_rec = json_dumps(rec, JSON_SORT_KEYS);
    th_resp_free(&r);

    /* The write response is the record exactly as stored: the next GET returns the same JSON. */
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/alice", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    json_t *get = s_json(&r);
    char *get_rec = json_dumps(s_record(get, "alice"), JSON_SORT_KEYS);
    ck_assert_str_eq(put_rec, get_rec);
    free(put_rec);
    free(get_rec);
    json_decref(put);
    json_decref(get);
    th_resp_free(&r);

    /* Unknown user: JSON 404 with the API's message. */
    ck_assert_int_eq(th_http(n.port, "GET", "/api/v2/presence/nobody", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_ptr_nonnull(strstr(r.body, "presence not found for user nobody"));
    th_resp_free(&r);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_restart_keeps_records)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, NULL), 0);
    long versions[20];
    for (int i = 0; i < 20; i++) {
        char uid[32], body[128];
        snprintf(uid, sizeof uid, "user%d", i);
        snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"m%d\"}", i);
        th_resp_t r;
        ck_assert_int_eq(s_put(n.port, uid, body, &r), 0);
        ck_assert_int_eq(r.status, 200);
        json_t *j = s_json(&r);
        versions[i] = (long)json_integer_value(json_object_get(s_record(j, uid), "version"));
        json_decref(j);
        th_resp_free(&r);
    }
    ck_assert_int_eq(th_node_stop(&n), 0);

    /* Same data dir, every process restarted. */
    ck_assert_int_eq(th_restart(n.store, 20000), 0);
    for (int i = 0; i < n.ncache; i++)
        ck_assert_int_eq(th_restart(n.cache[i], 20000), 0);
    ck_assert_int_eq(th_restart(n.gw, 20000), 0);
    const char *colon = strrchr(n.gw->ready, ':');
    n.port = atoi(colon + 1);
    for (int i = 0; i < 20; i++) {
        char path[64], uid[32], msg[16];
        snprintf(uid, sizeof uid, "user%d", i);
        snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
        snprintf(msg, sizeof msg, "m%d", i);
        th_resp_t r;
        ck_assert_int_eq(th_http(n.port, "GET", path, NULL, NULL, 0, &r, 5000), 0);
        ck_assert_int_eq(r.status, 200);
        json_t *j = s_json(&r);
        json_t *rec = s_record(j, uid);
        ck_assert_int_eq(json_integer_value(json_object_get(rec, "version")), versions[i]);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "message")), msg);
        json_decref(j);
        th_resp_free(&r);
    }
    /* A write after the restart gets a higher version than any before it. */
    th_resp_t r;
    ck_assert_int_eq(s_put(n.port, "user0", "{\"status\":\"away\"}", &r), 0);
    json_t *j = s_json(&r);
    ck_assert_int_gt(json_integer_value(json_object_get(s_record(j, "user0"), "version")), versions[19]);
    json_decref(j);
    th_resp_free(&r);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

typedef struct probe {
    int port;
    const char *path;
    int want;
} probe_t;

static bool s_status_is(void *arg)
{
    probe_t *p = arg;
    th_resp_t r;
    if (th_http(p->port, "GET", p->path, NULL, NULL, 0, &r, 3000) < 0)
        return false;
    bool ok = r.status == p->want;
    th_resp_free(&r);
    return ok;
}

START_TEST(test_health)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 2, NULL), 0);
    th_resp_t r;
    ck_assert_int_eq(th_http(n.port, "GET", "/health/liveness", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    json_t *j = s_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    ck_assert(json_is_string(json_object_get(j, "ts")));
    json_decref(j);
    th_resp_free(&r);
    ck_assert_int_eq(th_http(n.port, "GET", "/health", NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);

    probe_t ready = {n.port, "/health/readiness", 200}, unready = {n.port, "/health/readiness", 503};
    ck_assert(th_wait_for(s_status_is, &ready, 10000));
    ck_assert_int_eq(th_http(n.port, "GET", "/health/readiness", NULL, NULL, 0, &r, 5000), 0);
    j = s_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ready");
    json_decref(j);
    th_resp_free(&r);

    /* Without the store, readiness says so; liveness does not care. */
    th_kill(n.store);
    ck_assert_msg(th_wait_for(s_status_is, &unready, 10000), "readiness stayed 200 without a store");
    ck_assert_int_eq(th_http(n.port, "GET", "/health/readiness", NULL, NULL, 0, &r, 5000), 0);
    j = s_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "unready");
    ck_assert(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    th_resp_free(&r);
    probe_t live = {n.port, "/health/liveness", 200};
    ck_assert(s_status_is(&live));

    /* A cache-node that starts while the store is away serves optimistically, but must not report
     * the store path as working before the store has answered it: readiness stays 503 (checked
     * over 3 s, longer than the cache-node's 2 s store-down window). */
    th_kill(n.cache[0]);
    ck_assert_int_eq(th_restart(n.cache[0], 20000), 0);
    for (uint64_t until = th_now_ms() + 3000; th_now_ms() < until;) {
        ck_assert_int_eq(th_http(n.port, "GET", "/health/readiness", NULL, NULL, 0, &r, 5000), 0);
        ck_assert_msg(r.status == 503, "readiness %d with the store down after a cache-node restart: %s", r.status,
                      r.body);
        th_resp_free(&r);
    }

    ck_assert_int_eq(th_restart(n.store, 20000), 0);
    ck_assert_msg(th_wait_for(s_status_is, &ready, 10000), "readiness did not come back with the store");
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

/* ---- the launcher ---------------------------------------------------------------------------- */

static pid_t s_child_pid(const char *log, const char *name)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return -1;
    char line[1024], want[64];
    snprintf(want, sizeof want, "%s (pid ", name);
    pid_t pid = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, want);
        if (p)
            pid = (pid_t)atoi(p + strlen(want));
    }
    fclose(f);
    return pid;
}

typedef struct restarted {
    const char *log;
    const char *name;
    pid_t old;
} restarted_t;

static bool s_restarted(void *arg)
{
    restarted_t *r = arg;
    FILE *f = fopen(r->log, "r");
    if (!f)
        return false;
    char line[1024], want[80];
    snprintf(want, sizeof want, "%s restarted (pid ", r->name);
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, want))
            found = true;
    fclose(f);
    return found;
}

static bool s_gone(void *arg)
{
    return kill(*(pid_t *)arg, 0) < 0;
}

START_TEST(test_launcher)
{
    const char *dir = th_tmpdir();
    ck_assert_ptr_nonnull(dir);
    char data[300];
    snprintf(data, sizeof data, "%s/data", dir);
    th_proc_t *l = th_proc("presenced", "presenced");
    th_env(l, "DATA_DIR", "%s", data);
    th_env(l, "SERVICE_PORT", "0");
    th_env(l, "SERVICE_ADDR", "127.0.0.1"); /* tests bind loopback; the ready line names it */
    th_env(l, "GATEWAY_THREADS", "2");
    ck_assert_int_eq(th_start(l, 30000), 0);
    ck_assert_ptr_nonnull(strstr(l->ready, "http=127.0.0.1:"));
    int port = atoi(strrchr(l->ready, ':') + 1);
    ck_assert_int_gt(port, 0);

    /* Without JWT_SECRET the launcher made a development secret; the token tool signs with it. */
    char secret_path[400];
    snprintf(secret_path, sizeof secret_path, "%s/dev-jwt-secret", data);
    struct stat st;
    ck_assert_int_eq(stat(secret_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    char bin[512], cmd[1200], tok[2048] = "";
    snprintf(cmd, sizeof cmd, "env -u JWT_SECRET DATA_DIR='%s' '%s' alice", data, th_bin("presence-token", bin, sizeof bin));
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while (fgets(tok, sizeof tok, p))
        ;
    ck_assert_int_eq(pclose(p), 0);
    tok[strcspn(tok, "\n")] = '\0';
    ck_assert_int_gt(strlen(tok), 20);
    char auth[2200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    th_resp_t r;
    const char *body = "{\"status\":\"online\"}";
    ck_assert_int_eq(th_http(port, "PUT", "/api/v2/presence/alice", auth, body, strlen(body), &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);

    /* Kill a child by its pid (from the launcher's log): it is restarted and service resumes. */
    pid_t cache1 = s_child_pid(l->err_path, "cache-node-1");
    ck_assert_int_gt(cache1, 0);
    kill(cache1, SIGKILL);
    restarted_t rs = {l->err_path, "cache-node-1", cache1};
    ck_assert_msg(th_wait_for(s_restarted, &rs, 10000), "cache-node-1 was not restarted");
    probe_t get = {port, "/api/v2/presence/alice", 200};
    ck_assert(th_wait_for(s_status_is, &get, 10000));

    /* SIGTERM stops every child, and the launcher exits cleanly. */
    pid_t gw = s_child_pid(l->err_path, "gateway"), store = s_child_pid(l->err_path, "store-node");
    ck_assert_int_eq(th_stop(l, 20000), 0);
    ck_assert(th_wait_for(s_gone, &gw, 5000));
    ck_assert(th_wait_for(s_gone, &store, 5000));
}
END_TEST


/* Replies are batched per loop turn; a turn's worth of big multi-gets must still leave in frames
 * the receiver accepts (ZMQ_MAXMSGSIZE 16 MiB on every socket): 100 MGETs of 1000 cached records
 * with long messages in one BATCH is ~35 MB of answers, which must arrive whole, in several frames. */
START_TEST(test_big_batch_replies)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, NULL), 0);
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, n.cache_eps), 0);
    char msg[251];
    memset(msg, 'm', 250);
    msg[250] = '\0';
    enum { KEYS = 1000, GETS = 100 };
    static char names[KEYS][16];
    proto_str_t keys[KEYS];
    for (int i = 0; i < KEYS; i++) {
        snprintf(names[i], sizeof names[i], "big%04d", i);
        keys[i] = (proto_str_t){names[i], strlen(names[i])};
        proto_record_t r;
        ck_assert_int_eq(th_zc_put(&z, names[i], PRESENCE_BUSY, msg, &r), PROTO_OK);
    }
    proto_buf_t b, one;
    proto_buf_init(&b);
    proto_buf_init(&one);
    proto_msg_t m;
    proto_enc_keys(&b, 1, keys, KEYS); /* warm: every key cached */
    ck_assert_int_eq(th_zc_call(&z, &b, 1, &m, 10000), 0);
    ck_assert_uint_eq(m.n, KEYS);
    proto_msg_fini(&m);
    proto_batch_t bt;
    proto_batch_init(&bt);
    for (int g = 0; g < GETS; g++) {
        proto_enc_keys(&one, 100 + (uint64_t)g, keys, KEYS);
        proto_batch_add(&bt, one.data, one.len);
        proto_buf_reset(&one);
    }
    proto_batch_encode(&bt, &b);
    ck_assert_int_eq(zu_send(z.sock, NULL, 0, b.data, b.len), 0);
    bool seen[GETS] = {false};
    int got = 0, frames = 0;
    uint64_t deadline = th_now_ms() + 20000;
    while (got < GETS && th_now_ms() < deadline) {
        zmq_pollitem_t pi = {.socket = z.sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 200) <= 0)
            continue;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        if (zu_recv(z.sock, f, ZU_FRAMES_MAX, &nf) < 0)
            continue;
        ck_assert_int_eq(nf, 1);
        ck_assert_uint_le(zmq_msg_size(&f[0]), 4u << 20);
        frames++;
        ck_assert_int_eq(proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &m), PROTO_DEC_OK);
        uint32_t nparts = m.type == PROTO_BATCH ? m.n : 1;
        for (uint32_t i = 0; i < nparts; i++) {
            proto_msg_t part;
            if (m.type == PROTO_BATCH)
                ck_assert_int_eq(proto_decode(m.parts[i].p, m.parts[i].len, &part), PROTO_DEC_OK);
            else
                ck_assert_int_eq(proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &part), PROTO_DEC_OK);
            ck_assert(part.rid >= 100 && part.rid < 100 + GETS);
            ck_assert_uint_eq(part.n, KEYS);
            if (!seen[part.rid - 100]) {
                seen[part.rid - 100] = true;
                got++;
            }
            proto_msg_fini(&part);
        }
        proto_msg_fini(&m);
        zu_close_frames(f, nf);
    }
    ck_assert_msg(got == GETS, "%d of %d answers arrived", got, GETS);
    ck_assert_int_gt(frames, 1);
    proto_batch_fini(&bt);
    proto_buf_fini(&b);
    proto_buf_fini(&one);
    th_zc_close(&z);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integ_basic");
    TCase *tc = tcase_create("thin_path");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_put_get_roundtrip);
    tcase_add_test(tc, test_restart_keeps_records);
    tcase_add_test(tc, test_health);
    tcase_add_test(tc, test_launcher);
    tcase_add_test(tc, test_big_batch_replies);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    th_cleanup_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
