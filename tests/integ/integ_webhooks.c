/* integ_webhooks.c -- the webhook notifier against the real processes: store-node, a cache-node and
 * a gateway (writes go through the HTTP API), the notifier following the store's change stream,
 * and receivers run by this process (tests/integ/webhooks/webhook_rx.c) that answer 200, 500 or
 * 400, stall, or close the connection, over HTTP or TLS.
 *
 * Every test pins the exact events a target must receive (id = the version the write was
 * answered with, type, user, previous_status), in order; a marker write after the changes under
 * test bounds "nothing else came" without sleeping (events arrive in version order per target).
 *
 * WEBHOOK_BENCH=N adds a benchmark case: N status changes written straight to the store in
 * batches, events/s delivered to one local receiver (see BENCHMARKS.md).
 */
#include "harness.h"
#include "proto.h"
#include "util.h"
#include "tests/integ/webhooks/webhook_rx.h"

#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECRET0 "test-secret-zero-0123456789"
#define SECRET1 "test-secret-one-0123456789a"
#define WAIT_MS 15000

typedef struct wh {
    th_node_t node;
    th_proc_t *notifier;
    wrx_t *rx[2];
    int nrx;
    char endpoint[300];
} wh_t;

/* NAME=value settings for every process of the node (NULL: none), set by a test before s_start. */
static const char *const *s_node_extra;

/* Start the node, nrx receivers and the notifier with one URL per receiver. `events` (or NULL)
 * is WEBHOOK_EVENTS; extra is a NULL-terminated NAME=value list for the notifier. */
static void s_start(wh_t *w, int nrx, const char *events, const char *const *extra)
{
    memset(w, 0, sizeof *w);
    ck_assert_int_eq(th_node_start(&w->node, 1, s_node_extra), 0);
    char urls[256] = "";
    for (int i = 0; i < nrx; i++) {
        w->rx[i] = wrx_start(true);
        ck_assert_ptr_nonnull(w->rx[i]);
        snprintf(urls + strlen(urls), sizeof urls - strlen(urls), "%shttp://127.0.0.1:%d/hook/%d", i ? "," : "",
                 wrx_port(w->rx[i]), i);
    }
    w->nrx = nrx;
    snprintf(w->endpoint, sizeof w->endpoint, "ipc://%s/run/notifier.sock", w->node.dir);
    th_proc_t *p = w->notifier = th_proc("notifier", "notifier");
    th_env(p, "DATA_DIR", "%s", w->node.dir);
    th_env(p, "LOG_LEVEL", "info");
    th_env(p, "STORE_CMD_ENDPOINT", "%s", w->node.store_cmd);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", w->node.store_pub);
    th_env(p, "NOTIFIER_ENDPOINT", "%s", w->endpoint);
    th_env(p, "WEBHOOK_URLS", "%s", urls);
    th_env(p, "WEBHOOK_SECRETS", nrx == 2 ? SECRET0 "," SECRET1 : SECRET0);
    if (events)
        th_env(p, "WEBHOOK_EVENTS", "%s", events);
    th_env(p, "WEBHOOK_DEBOUNCE_MS", "0");
    th_env(p, "WEBHOOK_BACKOFF_MIN_MS", "50");
    th_env(p, "WEBHOOK_BACKOFF_MAX_MS", "300");
    th_env(p, "WEBHOOK_TIMEOUT_MS", "2000");
    th_env(p, "WEBHOOK_CONNECT_TIMEOUT_MS", "1000");
    th_env(p, "NOTIFIER_STOP_GRACE_MS", "500");
    for (int i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(eq - extra[i]), extra[i]);
        th_env(p, name, "%s", eq + 1);
    }
    ck_assert_int_eq(th_start(p, 20000), 0);
    ck_assert_ptr_nonnull(strstr(p->ready, "notifier endpoint="));
}

static void s_stop(wh_t *w)
{
    ck_assert_int_eq(th_stop(w->notifier, 10000), 0);
    ck_assert_int_eq(th_node_stop(&w->node), 0);
    for (int i = 0; i < w->nrx; i++)
        wrx_stop(&w->rx[i]);
}

/* ---- writes through the API ------------------------------------------------------------------ */

static uint64_t s_version_of(const th_resp_t *r, const char *uid)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    ck_assert_msg(j != NULL, "bad JSON: %s", r->body);
    json_t *rec = json_object_get(json_object_get(j, "data"), uid);
    ck_assert_msg(rec != NULL, "no record for %s: %s", uid, r->body);
    uint64_t v = (uint64_t)json_integer_value(json_object_get(rec, "version"));
    json_decref(j);
    ck_assert_uint_gt(v, 0);
    return v;
}

/* PUT status (and message; NULL = none) for uid as uid; returns the stored version. */
static uint64_t s_put(wh_t *w, const char *uid, const char *status, const char *msg)
{
    char auth[1024], path[256], body[512];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    if (msg)
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"message\":\"%s\",\"ttl\":600}", status, msg);
    else
        snprintf(body, sizeof body, "{\"status\":\"%s\",\"ttl\":600}", status);
    th_resp_t r;
    ck_assert_int_eq(th_http(w->node.port, "PUT", path, auth, body, strlen(body), &r, 5000), 0);
    ck_assert_msg(r.status == 200, "PUT %s: %d %s", uid, r.status, r.body);
    uint64_t v = s_version_of(&r, uid);
    th_resp_free(&r);
    return v;
}

static uint64_t s_heartbeat(wh_t *w, const char *uid)
{
    char auth[1024], path[256];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s/heartbeat", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(w->node.port, "POST", path, auth, "", 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    uint64_t v = s_version_of(&r, uid);
    th_resp_free(&r);
    return v;
}

static void s_delete(wh_t *w, const char *uid)
{
    char auth[1024], path[256];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(w->node.port, "DELETE", path, auth, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
}

/* The record as GET renders it (caller json_decref). */
static json_t *s_get_record(wh_t *w, const char *uid)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    th_resp_t r;
    ck_assert_int_eq(th_http(w->node.port, "GET", path, NULL, NULL, 0, &r, 5000), 0);
    ck_assert_int_eq(r.status, 200);
    json_error_t je;
    json_t *j = json_loadb(r.body, r.body_len, 0, &je);
    th_resp_free(&r);
    json_t *rec = json_incref(json_object_get(json_object_get(j, "data"), uid));
    json_decref(j);
    ck_assert_ptr_nonnull(rec);
    return rec;
}

/* ---- what a receiver got ----------------------------------------------------------------------- */

typedef struct ev {
    uint64_t id;
    char type[16], user[64], prev[16];
    json_t *obj; /* the whole event */
    size_t body; /* index of the request it came in */
} ev_t;

typedef struct evs {
    ev_t *v;
    size_t n, cap;
} evs_t;

static void s_evs_free(evs_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        json_decref(e->v[i].obj);
    free(e->v);
    memset(e, 0, sizeof *e);
}

/* Every event the receiver accepted so far, in arrival order. */
static void s_events(wrx_t *rx, evs_t *out)
{
    s_evs_free(out);
    static wrx_body_t b[1024];
    size_t nb = wrx_bodies(rx, 0, b, 1024);
    for (size_t i = 0; i < nb; i++) {
        json_error_t je;
        json_t *arr = json_loadb(b[i].body, b[i].len, 0, &je);
        ck_assert_msg(json_is_array(arr), "body %zu is not a JSON array: %s", i, b[i].body);
        ck_assert_uint_gt(json_array_size(arr), 0);
        for (size_t k = 0; k < json_array_size(arr); k++) {
            json_t *o = json_array_get(arr, k);
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 256;
                out->v = realloc(out->v, out->cap * sizeof *out->v);
            }
            ev_t *e = &out->v[out->n++];
            e->id = (uint64_t)json_integer_value(json_object_get(o, "id"));
            snprintf(e->type, sizeof e->type, "%s", json_string_value(json_object_get(o, "type")));
            snprintf(e->user, sizeof e->user, "%s", json_string_value(json_object_get(o, "user_id")));
            snprintf(e->prev, sizeof e->prev, "%s", json_string_value(json_object_get(o, "previous_status")));
            ck_assert_ptr_nonnull(json_object_get(o, "record"));
            ck_assert(json_is_string(json_object_get(o, "at")));
            /* session events carry previous_sessions besides the six fields of every event */
            bool session = strncmp(e->type, "session_", 8) == 0;
            ck_assert_uint_eq(json_object_size(o), session ? 7 : 6);
            if (session)
                ck_assert(json_is_integer(json_object_get(o, "previous_sessions")));
            e->obj = json_incref(o);
            e->body = i;
        }
        json_decref(arr);
        free(b[i].body);
    }
}

typedef struct want {
    uint64_t id;
    const char *type, *user, *prev;
} want_t;

static void s_expect(const evs_t *got, const want_t *want, size_t n, const char *what)
{
    bool same = got->n == n;
    for (size_t i = 0; i < n && same; i++)
        same = got->v[i].id == want[i].id && strcmp(got->v[i].type, want[i].type) == 0 &&
               strcmp(got->v[i].user, want[i].user) == 0 && strcmp(got->v[i].prev, want[i].prev) == 0;
    for (size_t i = 0; i < got->n && !same; i++)
        fprintf(stderr, "  %s got[%zu] id=%llu %s %s prev=%s\n", what, i, (unsigned long long)got->v[i].id,
                got->v[i].type, got->v[i].user, got->v[i].prev);
    ck_assert_msg(got->n == n, "%s: %zu events, want %zu", what, got->n, n);
    for (size_t i = 0; i < n; i++) {
        const ev_t *e = &got->v[i];
        ck_assert_msg(e->id == want[i].id && strcmp(e->type, want[i].type) == 0 && strcmp(e->user, want[i].user) == 0 &&
                          strcmp(e->prev, want[i].prev) == 0,
                      "%s event %zu: id=%llu %s %s prev=%s, want id=%llu %s %s prev=%s", what, i,
                      (unsigned long long)e->id, e->type, e->user, e->prev, (unsigned long long)want[i].id,
                      want[i].type, want[i].user, want[i].prev);
    }
}

typedef struct evwait {
    wrx_t *rx;
    uint64_t n;
} evwait_t;

static bool s_has_events(void *arg)
{
    evwait_t *e = arg;
    return wrx_events(e->rx) >= e->n;
}

static bool s_wait_events(wrx_t *rx, uint64_t n, int ms)
{
    evwait_t e = {rx, n};
    return th_wait_for(s_has_events, &e, ms);
}

typedef struct idwait {
    wrx_t *rx;
    uint64_t id;
} idwait_t;

static bool s_has_id(void *arg)
{
    idwait_t *iw = arg;
    static wrx_body_t b[1024];
    char pat[40];
    snprintf(pat, sizeof pat, "{\"id\":%llu,", (unsigned long long)iw->id);
    size_t n = wrx_bodies(iw->rx, 0, b, 1024);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        found = found || strstr(b[i].body, pat) != NULL;
        free(b[i].body);
    }
    return found;
}

/* Wait until an event with this id has been accepted. */
static bool s_wait_id(wrx_t *rx, uint64_t id, int ms)
{
    idwait_t iw = {rx, id};
    return th_wait_for(s_has_id, &iw, ms);
}

typedef struct reqwait {
    wrx_t *rx;
    uint64_t n;
} reqwait_t;

static bool s_has_requests(void *arg)
{
    reqwait_t *r = arg;
    return wrx_requests(r->rx) >= r->n;
}

static uint64_t s_stat(wh_t *w, const char *name)
{
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, w->endpoint), 0);
    uint64_t v = 0;
    ck_assert_msg(th_zc_stat(&z, name, &v) == 0, "no stat %s", name);
    th_zc_close(&z);
    return v;
}

/* ==== tests ================================================================================== */

START_TEST(test_events_in_order)
{
    wh_t w;
    s_start(&w, 1, NULL, NULL);
    uint64_t a1 = s_put(&w, "alice", "online", NULL);
    uint64_t a2 = s_put(&w, "alice", "busy", NULL);
    uint64_t a3 = s_put(&w, "alice", "busy", "in a meeting");
    uint64_t b1 = s_put(&w, "bob", "online", NULL);
    uint64_t a4 = s_put(&w, "alice", "offline", NULL); /* offline and the message cleared */
    uint64_t a5 = s_put(&w, "alice", "offline", NULL); /* changes nothing: no event */
    s_delete(&w, "bob");                                 /* offline, record null */
    uint64_t c1 = s_put(&w, "carol", "away", NULL);
    uint64_t c2 = s_heartbeat(&w, "carol");              /* kept the status: no event */
    uint64_t m = s_put(&w, "zed", "online", NULL);       /* marker */
    ck_assert_uint_gt(a5, a4);
    ck_assert_uint_gt(c2, c1);
    ck_assert(s_wait_events(w.rx[0], 9, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    /* bob's delete has the tombstone's version: between his last write and carol's. */
    uint64_t bdel = got.n >= 7 ? got.v[6].id : 0;
    ck_assert_uint_gt(bdel, a5);
    ck_assert_uint_lt(bdel, c1);
    want_t want[] = {
        {a1, "online", "alice", "offline"}, {a2, "status", "alice", "online"}, {a3, "message", "alice", "busy"},
        {b1, "online", "bob", "offline"},   {a4, "offline", "alice", "busy"},  {a4, "message", "alice", "busy"},
        {bdel, "offline", "bob", "online"}, {c1, "online", "carol", "offline"}, {m, "online", "zed", "offline"},
    };
    s_expect(&got, want, ARRAY_LEN(want), "receiver");
    /* The record is the REST API's rendering; a delete's is null. */
    json_t *rest = s_get_record(&w, "carol");
    json_t *ev_rec = json_object_get(got.v[7].obj, "record");
    /* carol's heartbeat moved last_seen/expires_at/version since: compare what the event showed. */
    ck_assert_str_eq(json_string_value(json_object_get(ev_rec, "status")), "away");
    ck_assert_str_eq(json_string_value(json_object_get(ev_rec, "user_id")), "carol");
    ck_assert_int_eq(json_integer_value(json_object_get(ev_rec, "version")), (json_int_t)c1);
    ck_assert_str_eq(json_string_value(json_object_get(ev_rec, "updated_at")),
                     json_string_value(json_object_get(rest, "updated_at")));
    json_decref(rest);
    rest = s_get_record(&w, "zed");
    ck_assert_msg(json_equal(rest, json_object_get(got.v[8].obj, "record")), "zed's record differs from GET");
    json_decref(rest);
    ck_assert(json_is_null(json_object_get(got.v[6].obj, "record")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(got.v[4].obj, "record"), "status")), "offline");
    /* `at` of a change is the record's updated_at. */
    ck_assert_str_eq(json_string_value(json_object_get(got.v[0].obj, "at")),
                     json_string_value(json_object_get(json_object_get(got.v[0].obj, "record"), "updated_at")));
    ck_assert_uint_eq(s_stat(&w, "notifier_webhook_delivered_events_total"), 9);
    /* Every batch went over one kept-alive connection. */
    ck_assert_uint_gt(wrx_accepted(w.rx[0]), 1);
    ck_assert_uint_eq(wrx_connections(w.rx[0]), 1);
    ck_assert_uint_eq(s_stat(&w, "notifier_live"), 1);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* Run docs/webhooks/verify.{py,js} (the snippets of docs/WEBHOOKS.md) on one delivery: returns
 * the script's exit status, or -1 when the interpreter or the script is not there. */
static int s_doc_verify(const char *dir, const char *interp, const char *script, const char *secret, const char *sig,
                        const char *body, size_t len)
{
    char path[300], cmd[1200];
    snprintf(path, sizeof path, "docs/webhooks/%s", script);
    if (access(path, R_OK) != 0 || (access("/usr/bin/node", X_OK) != 0 && strcmp(interp, "node") == 0))
        return -1;
    char file[300];
    snprintf(file, sizeof file, "%s/body", dir);
    FILE *f = fopen(file, "wb");
    fwrite(body, 1, len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s '%s' '%s' '%s'", interp, path, secret, sig, file);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* HMAC-SHA256 of "<t>.<body>" recomputed here, and by the documented snippets. */
START_TEST(test_signature)
{
    wh_t w;
    s_start(&w, 2, NULL, NULL);
    s_put(&w, "sig1", "online", NULL);
    s_put(&w, "sig2", "busy", "x");
    for (int r = 0; r < 2; r++) {
        ck_assert(s_wait_events(w.rx[r], 3, WAIT_MS));
        wrx_body_t b[16];
        size_t n = wrx_bodies(w.rx[r], 0, b, 16);
        ck_assert_uint_gt(n, 0);
        for (size_t i = 0; i < n; i++) {
            unsigned long long t = 0;
            char hex[65] = "";
            ck_assert_msg(sscanf(b[i].sig, "t=%llu,v1=%64[0-9a-f]", &t, hex) == 2, "signature header '%s'", b[i].sig);
            ck_assert_uint_eq(strlen(hex), 64);
            ck_assert_uint_eq(strlen(b[i].sig), strlen("t=,v1=") + strlen(hex) + (size_t)snprintf(NULL, 0, "%llu", t));
            long long skew = (long long)time(NULL) - (long long)t;
            ck_assert_msg(skew >= -5 && skew <= 60, "timestamp %llu is %lld s off", t, skew);
            const char *key = r == 0 ? SECRET0 : SECRET1;
            size_t ml = (size_t)snprintf(NULL, 0, "%llu.", t) + b[i].len;
            char *msg = malloc(ml + 1);
            snprintf(msg, ml + 1, "%llu.%s", t, b[i].body);
            unsigned char md[32];
            unsigned int mdl = 0;
            ck_assert_ptr_nonnull(HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)msg, ml, md, &mdl));
            char want[65];
            for (int k = 0; k < 32; k++)
                sprintf(want + 2 * k, "%02x", md[k]);
            ck_assert_str_eq(hex, want);
            /* ... and with the other target's secret it does not verify. */
            const char *other = r == 0 ? SECRET1 : SECRET0;
            HMAC(EVP_sha256(), other, (int)strlen(other), (unsigned char *)msg, ml, md, &mdl);
            for (int k = 0; k < 32; k++)
                sprintf(want + 2 * k, "%02x", md[k]);
            ck_assert_str_ne(hex, want);
            ck_assert_str_eq(b[i].path, r == 0 ? "/hook/0" : "/hook/1");
            static const char *const snippets[][2] = {{"python3", "verify.py"}, {"node", "verify.js"}};
            for (int k = 0; k < 2; k++) {
                int ok = s_doc_verify(w.node.dir, snippets[k][0], snippets[k][1], key, b[i].sig, b[i].body, b[i].len);
                if (ok < 0) {
                    fprintf(stderr, "skipped: %s %s (not installed or not run from the source tree)\n",
                            snippets[k][0], snippets[k][1]);
                    continue;
                }
                ck_assert_msg(ok == 0, "%s says the signature is invalid", snippets[k][1]);
                ck_assert_int_eq(s_doc_verify(w.node.dir, snippets[k][0], snippets[k][1], other, b[i].sig, b[i].body, b[i].len), 1);
            }
            free(msg);
            free(b[i].body);
        }
    }
    s_stop(&w);
}
END_TEST

/* A target answering 500 is retried (with backoff) and gets everything, in order, once it answers
 * 200; a healthy target meanwhile is not held back. */
START_TEST(test_failing_target_recovers)
{
    wh_t w;
    s_start(&w, 2, NULL, NULL);
    wrx_set_mode(w.rx[0], WRX_FAIL);
    want_t want[12];
    char users[12][16];
    for (int i = 0; i < 12; i++) {
        snprintf(users[i], sizeof users[i], "fail%02d", i);
        want[i] = (want_t){s_put(&w, users[i], i % 2 ? "busy" : "online", NULL), "online", users[i], "offline"};
    }
    uint64_t t0 = th_now_ms();
    ck_assert(s_wait_events(w.rx[1], 12, WAIT_MS));
    uint64_t healthy_ms = th_now_ms() - t0;
    /* The failing one was tried again and again meanwhile. */
    reqwait_t rq = {w.rx[0], 3};
    ck_assert(th_wait_for(s_has_requests, &rq, WAIT_MS));
    ck_assert_uint_eq(wrx_accepted(w.rx[0]), 0);
    evs_t got = {.n = 0};
    s_events(w.rx[1], &got);
    s_expect(&got, want, 12, "healthy target");
    ck_assert_msg(healthy_ms < 3000, "the healthy target took %llu ms", (unsigned long long)healthy_ms);
    ck_assert_uint_ge(s_stat(&w, "notifier_webhook_retries_total"), 2);
    ck_assert_uint_ge(s_stat(&w, "notifier_webhook_failures_total"), 2);
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert(s_wait_events(w.rx[0], 12, WAIT_MS));
    s_events(w.rx[0], &got);
    s_expect(&got, want, 12, "recovered target");
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* A target that accepts the request and never answers: the request times out and is retried. */
START_TEST(test_stalled_target_times_out)
{
    wh_t w;
    static const char *const extra[] = {"WEBHOOK_TIMEOUT_MS=400", NULL};
    s_start(&w, 1, NULL, extra);
    wrx_set_mode(w.rx[0], WRX_STALL);
    uint64_t v = s_put(&w, "stall", "online", NULL);
    reqwait_t rq = {w.rx[0], 2};
    ck_assert(th_wait_for(s_has_requests, &rq, WAIT_MS)); /* the first timed out, a retry came */
    ck_assert_uint_ge(wrx_connections(w.rx[0]), 2);      /* the stalled connection was given up */
    ck_assert_uint_eq(wrx_accepted(w.rx[0]), 0);
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert(s_wait_events(w.rx[0], 1, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t want[] = {{v, "online", "stall", "offline"}};
    s_expect(&got, want, 1, "receiver");
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* A target that closes the connection without answering is retried too. */
START_TEST(test_closing_target_retried)
{
    wh_t w;
    s_start(&w, 1, NULL, NULL);
    wrx_set_mode(w.rx[0], WRX_CLOSE);
    uint64_t v = s_put(&w, "closer", "online", NULL);
    reqwait_t rq = {w.rx[0], 3};
    ck_assert(th_wait_for(s_has_requests, &rq, WAIT_MS));
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert(s_wait_events(w.rx[0], 1, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t want[] = {{v, "online", "closer", "offline"}};
    s_expect(&got, want, 1, "receiver");
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* A 4xx answer drops the batch (WEBHOOK_ON_4XX=drop): counted, not retried. */
START_TEST(test_4xx_dropped)
{
    wh_t w;
    s_start(&w, 1, NULL, NULL);
    wrx_set_mode(w.rx[0], WRX_REJECT);
    s_put(&w, "rej1", "online", NULL);
    reqwait_t rq = {w.rx[0], 1};
    ck_assert(th_wait_for(s_has_requests, &rq, WAIT_MS));
    wrx_set_mode(w.rx[0], WRX_OK);
    uint64_t v2 = s_put(&w, "rej2", "online", NULL);
    ck_assert(s_wait_events(w.rx[0], 1, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t want[] = {{v2, "online", "rej2", "offline"}};
    s_expect(&got, want, 1, "receiver");
    ck_assert_uint_eq(wrx_requests(w.rx[0]), 2);
    ck_assert_uint_eq(s_stat(&w, "notifier_webhook_dropped_events_total"), 1);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

typedef struct seqwait {
    wh_t *w;
    uint64_t seq;
} seqwait_t;

static bool s_notifier_at(void *arg)
{
    seqwait_t *s = arg;
    th_zc_t z;
    if (th_zc_open(&z, s->w->endpoint) != 0)
        return false;
    uint64_t v = 0;
    bool ok = th_zc_stat(&z, "notifier_sync_sequence", &v) == 0 && v >= s->seq;
    th_zc_close(&z);
    return ok;
}

/* SIGKILL while a batch is out (the receiver has it but has not answered), changes while the
 * notifier is down, restart: every event arrives; the batch comes again, and an event delivered
 * twice is the same event (same id, same JSON). */
START_TEST(test_sigkill_loses_nothing)
{
    wh_t w;
    static const char *const extra[] = {"WEBHOOK_TIMEOUT_MS=5000", "WEBHOOK_BATCH_MAX=16", NULL};
    s_start(&w, 1, NULL, extra);
    /* The receiver keeps the first batch (as a receiver that processed it) but never answers. */
    wrx_set_mode(w.rx[0], WRX_TAKE_STALL);
    enum { N1 = 40, N2 = 15, NB = 5 };
    want_t want[N1 + N2 + NB + 1];
    char users[N1 + N2][16];
    size_t nw = 0;
    for (int i = 0; i < N1; i++) {
        snprintf(users[i], sizeof users[i], "k%02d", i);
        want[nw++] = (want_t){s_put(&w, users[i], "online", NULL), "online", users[i], "offline"};
    }
    reqwait_t rq = {w.rx[0], 1};
    ck_assert(th_wait_for(s_has_requests, &rq, WAIT_MS)); /* a batch is out, unanswered */
    seqwait_t sw = {&w, want[N1 - 1].id};
    ck_assert(th_wait_for(s_notifier_at, &sw, WAIT_MS));
    th_kill(w.notifier);
    /* While it is down: new users, and some of the first ones change status. */
    for (int i = 0; i < N2; i++) {
        snprintf(users[N1 + i], sizeof users[N1 + i], "d%02d", i);
        want[nw++] = (want_t){s_put(&w, users[N1 + i], "away", NULL), "online", users[N1 + i], "offline"};
    }
    for (int i = 0; i < NB; i++)
        want[nw++] = (want_t){s_put(&w, users[i], "busy", NULL), "status", users[i], "online"};
    /* ... and one is deleted: the store's catch-up from the notifier's saved position brings the
     * tombstone, whose version comes after every write so far, so it comes last. */
    uint64_t before_restart = want[nw - 1].id;
    s_delete(&w, users[NB]);
    want[nw++] = (want_t){0, "offline", users[NB], "online"};
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert_int_eq(th_restart(w.notifier, 20000), 0);
    ck_assert(s_wait_events(w.rx[0], nw, WAIT_MS * 2));
    uint64_t marker = s_put(&w, "zz-marker", "online", NULL);
    ck_assert(s_wait_id(w.rx[0], marker, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    /* Dedupe by (id, type, user): duplicates must be identical; first occurrences in order. */
    size_t uniq = 0;
    for (size_t i = 0; i < got.n; i++) {
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) {
            if (got.v[k].id == got.v[i].id && strcmp(got.v[k].type, got.v[i].type) == 0 &&
                strcmp(got.v[k].user, got.v[i].user) == 0) {
                dup = true;
                ck_assert_msg(json_equal(got.v[k].obj, got.v[i].obj), "duplicate of id %llu differs",
                              (unsigned long long)got.v[i].id);
            }
        }
        if (dup)
            continue;
        if (uniq < nw) {
            const want_t *x = &want[uniq];
            if (x->id == 0) { /* the delete: its tombstone's version */
                ck_assert_uint_gt(got.v[i].id, before_restart);
                ck_assert(json_is_null(json_object_get(got.v[i].obj, "record")));
            }
            ck_assert_msg((x->id == 0 || got.v[i].id == x->id) && strcmp(got.v[i].type, x->type) == 0 &&
                              strcmp(got.v[i].user, x->user) == 0 && strcmp(got.v[i].prev, x->prev) == 0,
                          "event %zu: id=%llu %s %s prev=%s, want id=%llu %s %s prev=%s", uniq,
                          (unsigned long long)got.v[i].id, got.v[i].type, got.v[i].user, got.v[i].prev,
                          (unsigned long long)x->id, x->type, x->user, x->prev);
        } else {
            ck_assert_uint_eq(got.v[i].id, marker);
        }
        uniq++;
    }
    if (uniq != nw + 1)
        for (size_t i = 0; i < got.n; i++)
            fprintf(stderr, "  got[%zu] id=%llu %s %s prev=%s (request %zu)\n", i, (unsigned long long)got.v[i].id,
                    got.v[i].type, got.v[i].user, got.v[i].prev, got.v[i].body);
    ck_assert_uint_eq(uniq, nw + 1);
    ck_assert_uint_gt(got.n, uniq); /* the unacknowledged first batch came again */
    /* The restart resumed from the saved stream position: no snapshot. */
    ck_assert_uint_eq(s_stat(&w, "notifier_sync_resumes_total"), 1);
    ck_assert_uint_eq(s_stat(&w, "notifier_sync_snapshots_total"), 0);
    fprintf(stderr, "sigkill: %zu events received for %zu distinct (%zu duplicates)\n", got.n, uniq, got.n - uniq);
    /* A clean restart now re-sends nothing that was acknowledged. */
    size_t before = wrx_events(w.rx[0]);
    ck_assert_int_eq(th_stop(w.notifier, 10000), 0);
    ck_assert_int_eq(th_start(w.notifier, 20000), 0);
    uint64_t m2 = s_put(&w, "zz-marker2", "online", NULL);
    ck_assert(s_wait_events(w.rx[0], before + 1, WAIT_MS));
    s_events(w.rx[0], &got);
    ck_assert_uint_eq(got.n, before + 1);
    ck_assert_uint_eq(got.v[got.n - 1].id, m2);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

typedef struct floorwait {
    const char *store;
    uint64_t past;
} floorwait_t;

static bool s_store_floor_past(void *arg)
{
    floorwait_t *f = arg;
    th_zc_t z;
    if (th_zc_open(&z, f->store) != 0)
        return false;
    uint64_t floor = 0;
    bool ok = th_zc_stat(&z, "store_log_floor", &floor) == 0 && floor > f->past;
    th_zc_close(&z);
    return ok;
}

/* A position the store can no longer serve (its changelog was pruned past it while the notifier
 * was down): the restart takes a snapshot and emits the difference -- the latest state of each
 * user that changed, in version order, nothing for users that did not. */
START_TEST(test_restart_snapshot_when_log_pruned)
{
    wh_t w;
    static const char *const node_extra[] = {"STORE_LOG_MAX=20", NULL};
    s_node_extra = node_extra;
    s_start(&w, 1, NULL, NULL);
    s_node_extra = NULL;
    uint64_t k0 = s_put(&w, "k0", "online", NULL), k1 = s_put(&w, "k1", "online", NULL);
    ck_assert(s_wait_id(w.rx[0], k1, WAIT_MS));
    ck_assert_int_eq(th_stop(w.notifier, 10000), 0);
    /* While it is down: k0 busy then away (one status event: away, previous online), 40 new
     * users (the changelog of 20 entries no longer reaches back), k1 untouched. */
    want_t want[43];
    size_t nw = 0;
    (void)s_put(&w, "k0", "busy", NULL);
    uint64_t k0b = s_put(&w, "k0", "away", NULL);
    want[nw++] = (want_t){k0b, "status", "k0", "online"};
    static char names[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "n%02d", i);
        want[nw] = (want_t){s_put(&w, names[i], "online", NULL), "online", names[i], "offline"};
        nw++;
    }
    /* The store's sweeper prunes its changelog to 20 entries: wait until it no longer reaches back
     * to where the notifier stopped (k1). */
    floorwait_t fw = {w.node.store_cmd, k1};
    ck_assert(th_wait_for(s_store_floor_past, &fw, WAIT_MS));
    ck_assert_int_eq(th_start(w.notifier, 20000), 0);
    uint64_t marker = s_put(&w, "zz-marker", "online", NULL);
    want[nw++] = (want_t){marker, "online", "zz-marker", "offline"};
    ck_assert(s_wait_id(w.rx[0], marker, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    ck_assert_uint_ge(got.n, 2);
    ck_assert_uint_eq(got.v[0].id, k0);
    ck_assert_uint_eq(got.v[1].id, k1);
    evs_t rest = {.v = got.v + 2, .n = got.n - 2};
    s_expect(&rest, want, nw, "after the snapshot");
    ck_assert_uint_eq(s_stat(&w, "notifier_sync_resumes_total"), 1);
    ck_assert_uint_eq(s_stat(&w, "notifier_sync_snapshots_total"), 1);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* Sessions (REALTIME.md) and invisible mode: target 0 gets the public view, target 1 is
 * privileged (WEBHOOK_PRIVILEGED) and gets the user's own. */
START_TEST(test_sessions_and_invisible)
{
    wh_t w;
    static const char *const extra[] = {"WEBHOOK_PRIVILEGED=false,true", NULL};
    s_start(&w, 2, NULL, extra);
    char auth[1024];
    th_auth_header(auth, sizeof auth, "ivy", NULL);
    const char *path = "/api/v2/presence/ivy";
    const char *bodies[] = {
        "{\"status\":\"online\",\"session\":\"s1\",\"device\":\"desk\",\"ttl\":600}", /* online, session_start */
        "{\"status\":\"online\",\"session\":\"s2\",\"device\":\"phone\",\"ttl\":600}", /* session_start */
        "{\"status\":\"offline\",\"ttl\":600}",              /* invisible */
        "{\"status\":\"offline\",\"session\":\"s2\"}",      /* a session ends while invisible */
        "{\"status\":\"online\",\"ttl\":600}",               /* visible again */
    };
    uint64_t v[5];
    for (int i = 0; i < 5; i++) {
        th_resp_t r;
        ck_assert_int_eq(th_http(w.node.port, "PUT", path, auth, bodies[i], strlen(bodies[i]), &r, 5000), 0);
        ck_assert_msg(r.status == 200, "PUT %d: %d %s", i, r.status, r.body);
        th_resp_free(&r);
        /* The change's version as the store has it (the answer shows the public view, whose
         * version stays put while the user is invisible). */
        th_zc_t z;
        proto_record_t rec;
        ck_assert_int_eq(th_zc_open(&z, w.node.store_cmd), 0);
        ck_assert_int_eq(th_zc_get(&z, "ivy", &rec, NULL), 0);
        th_zc_close(&z);
        v[i] = rec.version;
    }
    uint64_t m = s_put(&w, "zz-marker", "online", NULL);
    ck_assert(s_wait_id(w.rx[0], m, WAIT_MS));
    ck_assert(s_wait_id(w.rx[1], m, WAIT_MS));
    evs_t got0 = {.n = 0}, got1 = {.n = 0};
    s_events(w.rx[0], &got0);
    s_events(w.rx[1], &got1);
    /* The public view: going invisible is going offline with no sessions; the session that ends
     * meanwhile is not seen; coming back shows the one session left. */
    want_t pub[] = {
        {v[0], "online", "ivy", "offline"},       {v[0], "session_start", "ivy", "offline"},
        {v[1], "session_start", "ivy", "online"}, {v[2], "offline", "ivy", "online"},
        {v[2], "session_end", "ivy", "online"},   {v[4], "online", "ivy", "offline"},
        {v[4], "session_start", "ivy", "offline"}, {m, "online", "zz-marker", "offline"},
    };
    s_expect(&got0, pub, ARRAY_LEN(pub), "public target");
    int pub_prev_sessions[] = {-1, 0, 1, -1, 2, -1, 0, -1};
    for (size_t i = 0; i < ARRAY_LEN(pub); i++)
        if (pub_prev_sessions[i] >= 0)
            ck_assert_int_eq(json_integer_value(json_object_get(got0.v[i].obj, "previous_sessions")),
                             pub_prev_sessions[i]);
    /* Going invisible, the public record shows offline with no sessions. */
    json_t *rec = json_object_get(got0.v[3].obj, "record");
    ck_assert_str_eq(json_string_value(json_object_get(rec, "status")), "offline");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "sessions")), 0);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "version")), v[2]);
    /* The user's own view: offline while the sessions stay, the session's end, and back online. */
    want_t own[] = {
        {v[0], "online", "ivy", "offline"},       {v[0], "session_start", "ivy", "offline"},
        {v[1], "session_start", "ivy", "online"}, {v[2], "offline", "ivy", "online"},
        {v[3], "session_end", "ivy", "offline"},  {v[4], "online", "ivy", "offline"},
        {m, "online", "zz-marker", "offline"},
    };
    s_expect(&got1, own, ARRAY_LEN(own), "privileged target");
    rec = json_object_get(got1.v[3].obj, "record");
    ck_assert_int_eq(json_integer_value(json_object_get(rec, "sessions")), 2);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(rec, "version")), v[2]);
    ck_assert_int_eq(json_integer_value(json_object_get(got1.v[4].obj, "previous_sessions")), 2);
    s_evs_free(&got0);
    s_evs_free(&got1);
    s_stop(&w);
}
END_TEST

/* The log's bound: a target that fails while more than WEBHOOK_LOG_MAX_BYTES of events pile up
 * loses the oldest ones (a counted gap) and gets the rest, in order, once it recovers. */
START_TEST(test_log_bound_gap)
{
    wh_t w;
    static const char *const extra[] = {"WEBHOOK_LOG_MAX_BYTES=1048576", NULL};
    s_start(&w, 1, NULL, extra);
    wrx_set_mode(w.rx[0], WRX_FAIL);
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, w.node.store_cmd), 0);
    /* 6,000 status changes (~430 bytes of log each: 2.5 MiB) straight to the store. */
    enum { TOTAL = 6000, USERS = 1000, PER = 500 };
    static proto_record_t recs[PER];
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t last = 0;
    for (int sent = 0; sent < TOTAL; sent += PER) {
        for (int i = 0; i < PER; i++) {
            char uid[32];
            snprintf(uid, sizeof uid, "g%04d", (sent + i) % USERS);
            memset(&recs[i], 0, sizeof recs[i]);
            proto_record_set_uid(&recs[i], uid, strlen(uid));
            proto_record_set_node(&recs[i], "test", 4);
            recs[i].status = (uint8_t)(((sent + i) / USERS) % 3);
            recs[i].ttl_s = 3600;
        }
        uint64_t rid = ++z.rid;
        proto_buf_reset(&b);
        proto_enc_records_cmd(&b, PROTO_PUT, rid, recs, PER);
        proto_msg_t m;
        ck_assert_int_eq(th_zc_call(&z, &b, rid, &m, 10000), 0);
        ck_assert_int_eq(m.status, PROTO_OK);
        last = m.recs[PER - 1].version;
        proto_msg_fini(&m);
    }
    proto_buf_fini(&b);
    th_zc_close(&z);
    seqwait_t sw = {&w, last};
    ck_assert(th_wait_for(s_notifier_at, &sw, WAIT_MS));
    ck_assert_uint_le(s_stat(&w, "notifier_log_bytes"), 1048576);
    ck_assert_uint_gt(s_stat(&w, "notifier_log_bound_pruned_total"), 0);
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert(s_wait_id(w.rx[0], last, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    uint64_t delivered = s_stat(&w, "notifier_webhook_delivered_events_total");
    uint64_t gap = s_stat(&w, "notifier_webhook_gap_events_total");
    ck_assert_uint_ge(s_stat(&w, "notifier_webhook_gaps_total"), 1);
    ck_assert_uint_eq(delivered, got.n);
    ck_assert_uint_eq(delivered + gap, TOTAL); /* every event: delivered or counted in the gap */
    ck_assert_uint_gt(gap, 0);
    for (size_t i = 1; i < got.n; i++)
        ck_assert_uint_eq(got.v[i].id, got.v[i - 1].id + 1); /* the rest, in order, none missing */
    ck_assert_uint_eq(got.v[got.n - 1].id, last);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* Filters per target. */
START_TEST(test_filters)
{
    wh_t w;
    s_start(&w, 2, "online+offline,status+message", NULL);
    uint64_t f1 = s_put(&w, "frank", "online", NULL);
    uint64_t f2 = s_put(&w, "frank", "busy", NULL);
    uint64_t f3 = s_put(&w, "frank", "busy", "lunch");
    uint64_t f4 = s_put(&w, "frank", "offline", "lunch");
    uint64_t g1 = s_put(&w, "gina", "online", NULL);
    uint64_t g2 = s_put(&w, "gina", "away", NULL);
    ck_assert(s_wait_events(w.rx[0], 3, WAIT_MS));
    ck_assert(s_wait_events(w.rx[1], 3, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t w0[] = {{f1, "online", "frank", "offline"}, {f4, "offline", "frank", "busy"}, {g1, "online", "gina", "offline"}};
    s_expect(&got, w0, 3, "online+offline");
    s_events(w.rx[1], &got);
    want_t w1[] = {{f2, "status", "frank", "online"}, {f3, "message", "frank", "busy"}, {g2, "status", "gina", "online"}};
    s_expect(&got, w1, 3, "status+message");
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* Debounce: an offline followed by an online within the window sends nothing. */
START_TEST(test_debounce)
{
    wh_t w;
    static const char *const extra[] = {"WEBHOOK_DEBOUNCE_MS=1500", NULL};
    s_start(&w, 1, NULL, extra);
    uint64_t h1 = s_put(&w, "hank", "online", NULL);
    s_put(&w, "hank", "offline", NULL);
    s_put(&w, "hank", "online", NULL); /* back within the window: both dropped */
    uint64_t j1 = s_put(&w, "jill", "busy", NULL);
    s_put(&w, "jill", "offline", NULL);
    uint64_t j3 = s_put(&w, "jill", "online", NULL); /* back, but not busy: a status event */
    uint64_t t_off = th_now_ms();
    uint64_t h4 = s_put(&w, "hank", "offline", NULL); /* stays offline: delivered after the window */
    uint64_t m = s_put(&w, "ivan", "online", NULL);
    ck_assert(s_wait_events(w.rx[0], 5, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t want[] = {{h1, "online", "hank", "offline"},
                     {j1, "online", "jill", "offline"},
                     {j3, "status", "jill", "busy"},
                     {h4, "offline", "hank", "online"},
                     {m, "online", "ivan", "offline"}};
    s_expect(&got, want, ARRAY_LEN(want), "receiver");
    /* hank's offline waited out the window (and ivan behind it). */
    wrx_body_t b[16];
    size_t nb = wrx_bodies(w.rx[0], 0, b, 16);
    uint64_t off_at = 0;
    for (size_t i = 0; i < nb; i++) {
        if (strstr(b[i].body, "\"type\":\"offline\",\"user_id\":\"hank\""))
            off_at = b[i].at_ms;
        free(b[i].body);
    }
    ck_assert_uint_ge(off_at, t_off + 1400);
    ck_assert_uint_eq(s_stat(&w, "notifier_debounced_total"), 2);
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

static bool s_two_tls_failures(void *arg)
{
    return wrx_tls_failures(arg) >= 2;
}

/* https: the server's certificate is verified. A self-signed one is refused (the handshake fails,
 * the event waits and is retried); with WEBHOOK_CA_FILE naming it, the same event is delivered. */
START_TEST(test_tls_verified)
{
    wh_t w;
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(th_node_start(&w.node, 1, NULL), 0);
    char cert[300], key[300], cmd[1200];
    snprintf(cert, sizeof cert, "%s/cert.pem", w.node.dir);
    snprintf(key, sizeof key, "%s/key.pem", w.node.dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
             key, cert);
    if (system(cmd) != 0) {
        fprintf(stderr, "skipped: test_tls_verified (no openssl command to make a certificate)\n");
        th_node_stop(&w.node);
        return;
    }
    w.rx[0] = wrx_start_tls(true, cert, key);
    ck_assert_ptr_nonnull(w.rx[0]);
    w.nrx = 1;
    snprintf(w.endpoint, sizeof w.endpoint, "ipc://%s/run/notifier.sock", w.node.dir);
    th_proc_t *p = w.notifier = th_proc("notifier", "notifier");
    th_env(p, "DATA_DIR", "%s", w.node.dir);
    th_env(p, "STORE_CMD_ENDPOINT", "%s", w.node.store_cmd);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", w.node.store_pub);
    th_env(p, "NOTIFIER_ENDPOINT", "%s", w.endpoint);
    th_env(p, "WEBHOOK_URLS", "https://127.0.0.1:%d/tls", wrx_port(w.rx[0]));
    th_env(p, "WEBHOOK_SECRETS", SECRET0);
    th_env(p, "WEBHOOK_BACKOFF_MIN_MS", "50");
    th_env(p, "WEBHOOK_BACKOFF_MAX_MS", "300");
    ck_assert_int_eq(th_start(p, 20000), 0);
    uint64_t v = s_put(&w, "tls-user", "online", NULL);
    /* Refused: handshakes fail, nothing is read, the notifier counts failures and retries. */
    ck_assert(th_wait_for(s_two_tls_failures, w.rx[0], WAIT_MS));
    ck_assert_uint_eq(wrx_requests(w.rx[0]), 0);
    ck_assert_uint_ge(s_stat(&w, "notifier_webhook_failures_total"), 2);
    /* Trust the certificate: the event that waited is delivered. */
    ck_assert_int_eq(th_stop(p, 10000), 0);
    th_env(p, "WEBHOOK_CA_FILE", "%s", cert);
    ck_assert_int_eq(th_start(p, 20000), 0);
    ck_assert(s_wait_events(w.rx[0], 1, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(w.rx[0], &got);
    want_t want[] = {{v, "online", "tls-user", "offline"}};
    s_expect(&got, want, 1, "TLS receiver");
    s_evs_free(&got);
    s_stop(&w);
}
END_TEST

/* `presenced` starts the notifier when WEBHOOK_URLS is set (and only then). */
START_TEST(test_launcher_starts_notifier)
{
    const char *dir = th_tmpdir();
    char data[300];
    snprintf(data, sizeof data, "%s/data", dir);
    wrx_t *rx = wrx_start(true);
    th_proc_t *l = th_proc("presenced", "presenced");
    th_env(l, "DATA_DIR", "%s", data);
    th_env(l, "SERVICE_PORT", "0");
    th_env(l, "CACHE_NODES", "1");
    th_env(l, "GATEWAY_THREADS", "1");
    th_env(l, "JWT_SECRET", "%s", TH_SECRET);
    th_env(l, "WEBHOOK_URLS", "http://127.0.0.1:%d/launched", wrx_port(rx));
    th_env(l, "WEBHOOK_SECRETS", SECRET0);
    th_env(l, "WEBHOOK_DEBOUNCE_MS", "0");
    ck_assert_int_eq(th_start(l, 30000), 0);
    wh_t w;
    memset(&w, 0, sizeof w);
    w.node.port = atoi(strrchr(l->ready, ':') + 1);
    snprintf(w.endpoint, sizeof w.endpoint, "ipc://%s/run/notifier.sock", data);
    ck_assert_uint_eq(s_stat(&w, "notifier_live"), 1);
    /* The container health probe finds it by role, on its default endpoint. */
    char bin[512], cmd[1200];
    snprintf(cmd, sizeof cmd, "env PRESENCE_ROLE=notifier DATA_DIR='%s' '%s' -t 5000 -r notifier_live", data,
             th_bin("presence-probe", bin, sizeof bin));
    ck_assert_int_eq(system(cmd), 0);
    uint64_t v = s_put(&w, "launched", "busy", NULL);
    ck_assert(s_wait_events(rx, 1, WAIT_MS));
    evs_t got = {.n = 0};
    s_events(rx, &got);
    want_t want[] = {{v, "online", "launched", "offline"}};
    s_expect(&got, want, 1, "receiver");
    s_evs_free(&got);
    ck_assert_int_eq(th_stop(l, 20000), 0);
    wrx_stop(&rx);
}
END_TEST

/* --help, --version, and configuration errors that name the variable. */
static int s_run(const char *dir, const char *const *env, const char *arg, char *out, size_t outlen)
{
    th_proc_t *p = th_proc("notifier-cfg", "notifier");
    snprintf(p->err_path, sizeof p->err_path, "%s/out.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        clearenv();
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        char *argv[] = {p->bin, (char *)arg, NULL};
        execv(p->bin, argv);
        _exit(127);
    }
    int st = 0;
    uint64_t deadline = th_now_ms() + 10000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (th_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL); /* polling a child's exit against a deadline */
    }
    FILE *f = fopen(p->err_path, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_cli_and_config_errors)
{
    static char out[16384];
    const char *d = th_tmpdir();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(s_run(d, NULL, "--help", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "WEBHOOK_URLS"));
    ck_assert_ptr_nonnull(strstr(out, "WEBHOOK_SECRETS"));
    ck_assert_ptr_nonnull(strstr(out, "WEBHOOK_DEBOUNCE_MS"));
    ck_assert_int_eq(s_run(d, NULL, "--version", out, sizeof out), 0);
    ck_assert(strncmp(out, "notifier ", 9) == 0);
    ck_assert_int_eq(s_run(d, NULL, "--bogus", out, sizeof out), 2);
    struct {
        const char *env[4];
        const char *want;
    } bad[] = {
        {{NULL}, "notifier: WEBHOOK_URLS: required"},
        {{"WEBHOOK_URLS=http://127.0.0.1:1/x", NULL}, "notifier: WEBHOOK_SECRETS: required"},
        {{"WEBHOOK_URLS=gopher://x/", "WEBHOOK_SECRETS=0123456789abcdef", NULL},
         "notifier: WEBHOOK_URLS: item 1 'gopher://x/' is not an http:// or https:// URL"},
        {{"WEBHOOK_URLS=http://a/x", "WEBHOOK_SECRETS=0123456789abcdef", "WEBHOOK_TIMEOUT_MS=soon", NULL},
         "notifier: WEBHOOK_TIMEOUT_MS: invalid duration 'soon'"},
        {{"WEBHOOK_URLS=http://a/x", "WEBHOOK_SECRETS=0123456789abcdef", "WEBHOOK_EVENTS=online+away", NULL},
         "notifier: WEBHOOK_EVENTS: item 1: unknown event type 'away'"},
        {{"WEBHOOK_URLS=http://[::1/x", "WEBHOOK_SECRETS=0123456789abcdef", NULL}, "notifier: WEBHOOK_URLS: item 1: "},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(s_run(d, bad[i].env, NULL, out, sizeof out), 2);
        ck_assert_msg(strncmp(out, bad[i].want, strlen(bad[i].want)) == 0, "case %zu: '%s'", i, out);
    }
}
END_TEST

/* ==== benchmark (WEBHOOK_BENCH=N) ============================================================ */

/* CPU seconds (user + system) a process has used so far. */
static double s_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Write `total` status changes straight to the store (PUT batches of 1000 over its ROUTER), each
 * one event. Returns the last version written. */
static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t s_bench_write(th_zc_t *z, uint64_t first, uint64_t total)
{
    const uint32_t users = 10000, per_put = 1000;
    static proto_record_t recs[1000];
    proto_buf_t b;
    proto_buf_init(&b);
    uint64_t last = 0;
    for (uint64_t sent = 0; sent < total;) {
        uint32_t n = (uint32_t)MIN(per_put, total - sent);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t k = first + sent + i;
            char uid[32];
            snprintf(uid, sizeof uid, "b%05u", (unsigned)(k % users));
            memset(&recs[i], 0, sizeof recs[i]);
            proto_record_set_uid(&recs[i], uid, strlen(uid));
            proto_record_set_node(&recs[i], "bench", 5);
            /* every write changes the user's status: online, away, busy, online, ... */
            recs[i].status = (uint8_t)((k / users) % 3);
            recs[i].ttl_s = 3600;
        }
        uint64_t rid = ++z->rid;
        proto_buf_reset(&b);
        proto_enc_records_cmd(&b, PROTO_PUT, rid, recs, n);
        proto_msg_t m;
        ck_assert_int_eq(th_zc_call(z, &b, rid, &m, 10000), 0);
        ck_assert_int_eq(m.status, PROTO_OK);
        ck_assert_uint_eq(m.n, n);
        last = m.recs[n - 1].version;
        proto_msg_fini(&m);
        sent += n;
    }
    proto_buf_fini(&b);
    return last;
}

START_TEST(test_bench_delivery)
{
    uint64_t total = strtoull(getenv("WEBHOOK_BENCH"), NULL, 10);
    wh_t w;
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(th_node_start(&w.node, 1, NULL), 0);
    w.rx[0] = wrx_start(false);
    w.nrx = 1;
    snprintf(w.endpoint, sizeof w.endpoint, "ipc://%s/run/notifier.sock", w.node.dir);
    th_proc_t *p = w.notifier = th_proc("notifier", "notifier");
    th_env(p, "DATA_DIR", "%s", w.node.dir);
    th_env(p, "STORE_CMD_ENDPOINT", "%s", w.node.store_cmd);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", w.node.store_pub);
    th_env(p, "NOTIFIER_ENDPOINT", "%s", w.endpoint);
    th_env(p, "WEBHOOK_URLS", "http://127.0.0.1:%d/bench", wrx_port(w.rx[0]));
    th_env(p, "WEBHOOK_SECRETS", SECRET0);
    th_env(p, "WEBHOOK_DEBOUNCE_MS", "0");
    th_env(p, "WEBHOOK_BACKOFF_MIN_MS", "50");
    th_env(p, "WEBHOOK_BACKOFF_MAX_MS", "200");
    const char *bm = getenv("WEBHOOK_BENCH_BATCH");
    if (bm)
        th_env(p, "WEBHOOK_BATCH_MAX", "%s", bm);
    ck_assert_int_eq(th_start(p, 20000), 0);
    th_zc_t z;
    ck_assert_int_eq(th_zc_open(&z, w.node.store_cmd), 0);

    /* 1. live: changes written as fast as the store takes them, delivered as they come. */
    double cpu0 = s_cpu_s(p->pid);
    uint64_t t0 = th_now_ms();
    s_bench_write(&z, 0, total);
    uint64_t t_written = th_now_ms();
    ck_assert(s_wait_events(w.rx[0], total, 300000));
    uint64_t t_done = th_now_ms();
    double secs = (double)(t_done - t0) / 1000.0, cpu = s_cpu_s(p->pid) - cpu0;
    uint64_t reqs = wrx_accepted(w.rx[0]);
    fprintf(stderr,
            "bench live: %llu events delivered in %.2f s = %.0f events/s end to end (the store took %.2f s for the "
            "writes); %.1f events per request; notifier CPU %.2f s (%.1f us per event)\n",
            (unsigned long long)total, secs, (double)total / secs, (double)(t_written - t0) / 1000.0,
            (double)total / (double)reqs, cpu, cpu * 1e6 / (double)total);

    /* 2. backlog: the receiver fails while the changes are written; then it recovers and the
     * notifier delivers its log as fast as it can. */
    wrx_set_mode(w.rx[0], WRX_FAIL);
    uint64_t last = s_bench_write(&z, total, total);
    seqwait_t sw = {&w, last};
    ck_assert(th_wait_for(s_notifier_at, &sw, 300000));
    cpu0 = s_cpu_s(p->pid);
    t0 = th_now_ms();
    wrx_set_mode(w.rx[0], WRX_OK);
    ck_assert(s_wait_events(w.rx[0], 2 * total, 300000));
    secs = (double)(th_now_ms() - t0) / 1000.0;
    cpu = s_cpu_s(p->pid) - cpu0;
    fprintf(stderr,
            "bench backlog: %llu logged events delivered in %.2f s = %.0f events/s (%.1f events per request); notifier "
            "CPU %.2f s (%.1f us per event)\n",
            (unsigned long long)total, secs, (double)total / secs,
            (double)total / (double)(wrx_accepted(w.rx[0]) - reqs), cpu, cpu * 1e6 / (double)total);
    ck_assert_uint_eq(wrx_events(w.rx[0]), 2 * total);

    /* 3. latency at a steady rate: WEBHOOK_BENCH_RATE events/s (default 2,000) for 5 s, written
     * 10 per PUT; for each event, from the moment the store acknowledged its write to the moment
     * the receiver answered the POST that carried it. */
    const char *rs = getenv("WEBHOOK_BENCH_RATE");
    uint64_t rate = rs ? strtoull(rs, NULL, 10) : 2000, per = 10, nputs = rate * 5 / per;
    uint64_t *vfirst = calloc(nputs, sizeof *vfirst), *acked = calloc(nputs, sizeof *acked);
    wrx_set_keep(w.rx[0], true);
    uint64_t base = 2 * total, start_us = th_now_ms() * 1000;
    static proto_record_t lrecs[10];
    proto_buf_t lb;
    proto_buf_init(&lb);
    for (uint64_t k = 0; k < nputs; k++) {
        uint64_t due_us = start_us + k * 1000000 * per / rate;
        for (;;) { /* pacing to the rate (not synchronisation: the receiver's clock decides nothing) */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            uint64_t n_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
            if (n_us >= due_us)
                break;
            struct timespec d = {0, (long)MIN(due_us - n_us, 1000) * 1000};
            nanosleep(&d, NULL);
        }
        for (uint64_t i = 0; i < per; i++) {
            char uid[32];
            snprintf(uid, sizeof uid, "lat%05llu", (unsigned long long)((k * per + i) % 5000));
            memset(&lrecs[i], 0, sizeof lrecs[i]);
            proto_record_set_uid(&lrecs[i], uid, strlen(uid));
            proto_record_set_node(&lrecs[i], "bench", 5);
            lrecs[i].status = (uint8_t)(((k * per + i) / 5000) % 3);
            lrecs[i].ttl_s = 3600;
        }
        uint64_t rid = ++z.rid;
        proto_buf_reset(&lb);
        proto_enc_records_cmd(&lb, PROTO_PUT, rid, lrecs, (uint32_t)per);
        proto_msg_t m;
        ck_assert_int_eq(th_zc_call(&z, &lb, rid, &m, 10000), 0);
        ck_assert_int_eq(m.status, PROTO_OK);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        acked[k] = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
        vfirst[k] = m.recs[0].version;
        proto_msg_fini(&m);
    }
    proto_buf_fini(&lb);
    uint64_t nlat = nputs * per;
    ck_assert(s_wait_events(w.rx[0], base + nlat, 60000));
    uint64_t *lat = calloc(nlat, sizeof *lat);
    size_t got = 0;
    static wrx_body_t lbodies[100000];
    size_t nb = wrx_bodies(w.rx[0], 0, lbodies, 100000);
    for (size_t i = 0; i < nb; i++) {
        for (const char *q = lbodies[i].body; (q = strstr(q, "{\"id\":")); q += 6) {
            uint64_t id = strtoull(q + 6, NULL, 10);
            /* the PUT that wrote it: the last one whose first version is <= id */
            size_t lo = 0, hi = nputs;
            while (hi - lo > 1) {
                size_t mid = (lo + hi) / 2;
                if (vfirst[mid] <= id)
                    lo = mid;
                else
                    hi = mid;
            }
            if (id >= vfirst[lo] && id < vfirst[lo] + per && got < nlat)
                lat[got++] = lbodies[i].at_us > acked[lo] ? lbodies[i].at_us - acked[lo] : 0;
        }
        free(lbodies[i].body);
    }
    ck_assert_uint_eq(got, nlat);
    qsort(lat, got, sizeof *lat, s_cmp_u64);
    fprintf(stderr,
            "bench latency: %llu events at %llu/s: write acknowledged -> receiver answered p50 %.2f ms p99 %.2f ms "
            "max %.2f ms (%zu requests)\n",
            (unsigned long long)nlat, (unsigned long long)rate, (double)lat[got / 2] / 1000.0,
            (double)lat[got * 99 / 100] / 1000.0, (double)lat[got - 1] / 1000.0, nb);
    free(lat);
    free(vfirst);
    free(acked);
    th_zc_close(&z);
    s_stop(&w);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("webhooks");
    TCase *tc = tcase_create("delivery");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_events_in_order);
    tcase_add_test(tc, test_signature);
    tcase_add_test(tc, test_failing_target_recovers);
    tcase_add_test(tc, test_stalled_target_times_out);
    tcase_add_test(tc, test_closing_target_retried);
    tcase_add_test(tc, test_4xx_dropped);
    tcase_add_test(tc, test_sigkill_loses_nothing);
    tcase_add_test(tc, test_log_bound_gap);
    tcase_add_test(tc, test_restart_snapshot_when_log_pruned);
    tcase_add_test(tc, test_sessions_and_invisible);
    tcase_add_test(tc, test_filters);
    tcase_add_test(tc, test_debounce);
    tcase_add_test(tc, test_cli_and_config_errors);
    tcase_add_test(tc, test_launcher_starts_notifier);
    tcase_add_test(tc, test_tls_verified);
    suite_add_tcase(s, tc);
    if (getenv("WEBHOOK_BENCH")) {
        TCase *b = tcase_create("bench");
        tcase_set_timeout(b, 600);
        tcase_add_test(b, test_bench_delivery);
        suite_add_tcase(s, b);
    }
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
