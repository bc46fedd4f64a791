/* integ_observe.c -- what operators look at, against the real processes: the gateway's /metrics
 * (Prometheus conventions across every process, the notifier's numbers through the gateway,
 * METRICS_PREFIX) and its access log (ACCESS_LOG: one JSON line per request, never a token).
 *
 * Every check pins the exact answer: a family without its HELP line, a counter not named
 * _total, a process missing its process_* series, a token anywhere in the log -- each fails.
 * promtool's own check of the same text is tests/monitoring (make test's monitoring-check step).
 */
#include "harness.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define TMO 5000

/* ==== the exposition, parsed ================================================================== */

typedef struct fam {
    char name[160], type[16];
    bool help, help_documented, typed;
    int samples;
} fam_t;

typedef struct expo {
    fam_t f[512];
    int n;
} expo_t;

static fam_t *s_find(expo_t *e, const char *name)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->f[i].name, name) == 0)
            return &e->f[i];
    return NULL;
}

/* The family a sample belongs to: its name, or a histogram's base for _bucket/_sum/_count. */
static fam_t *s_family_of(expo_t *e, const char *sample)
{
    fam_t *f = s_find(e, sample);
    if (f)
        return f;
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    for (int s = 0; s < 3; s++) {
        size_t n = strlen(sample), k = strlen(sufs[s]);
        if (n > k && strcmp(sample + n - k, sufs[s]) == 0) {
            char base[160];
            snprintf(base, sizeof base, "%.*s", (int)(n - k), sample);
            f = s_find(e, base);
            if (f && strcmp(f->type, "histogram") == 0)
                return f;
        }
    }
    return NULL;
}

/* Parse strictly: HELP then TYPE once per family, before its samples; samples contiguous. */
static void s_parse(const char *text, expo_t *e)
{
    memset(e, 0, sizeof *e);
    fam_t *cur = NULL;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "last line not terminated");
        char line[1024];
        size_t len = (size_t)(nl - p);
        ck_assert_msg(len < sizeof line, "line too long: %.80s", p);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        char name[160];
        if (strncmp(line, "# HELP ", 7) == 0) {
            ck_assert_int_eq(sscanf(line + 7, "%159s", name), 1);
            ck_assert_msg(!s_find(e, name), "second HELP for %s", name);
            ck_assert(e->n < 512);
            cur = &e->f[e->n++];
            snprintf(cur->name, sizeof cur->name, "%s", name);
            cur->help = true;
            const char *text_at = line + 7 + strlen(name);
            cur->help_documented = strlen(text_at) > 10 && !strstr(text_at, "undocumented");
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char type[32];
            ck_assert_int_eq(sscanf(line + 7, "%159s %31s", name, type), 2);
            ck_assert_msg(cur && strcmp(cur->name, name) == 0, "TYPE %s without its HELP line right before", name);
            ck_assert_msg(!cur->typed, "second TYPE for %s", name);
            cur->typed = true;
            snprintf(cur->type, sizeof cur->type, "%s", type);
            continue;
        }
        ck_assert_msg(line[0] != '#', "unexpected comment: %s", line);
        size_t nl2 = strcspn(line, "{ ");
        snprintf(name, sizeof name, "%.*s", (int)nl2, line);
        fam_t *f = s_family_of(e, name);
        ck_assert_msg(f != NULL && f == cur, "sample %s is not under its own family's HELP/TYPE lines", name);
        char *end;
        const char *val = strrchr(line, ' ');
        strtod(val + 1, &end);
        ck_assert_msg(*end == '\0', "value of %s is not a number", line);
        f->samples++;
    }
}

static bool s_ends(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static char *s_metrics(int port)
{
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "GET", "/metrics", NULL, NULL, 0, &r, TMO), 0);
    ck_assert_int_eq(r.status, 200);
    char *body = strdup(r.body);
    th_resp_free(&r);
    return body;
}

/* True when the exposition has a series starting with `prefix` (a name and labels). */
static bool s_has(const char *text, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *p = text; (p = strstr(p, prefix)); p += pl)
        if (p == text || p[-1] == '\n')
            return true;
    return false;
}

typedef struct mwait {
    int port;
    const char *series;
} mwait_t;

static bool s_metrics_have(void *arg)
{
    mwait_t *m = arg;
    th_resp_t r;
    if (th_http(m->port, "GET", "/metrics", NULL, NULL, 0, &r, TMO) < 0)
        return false;
    bool ok = r.status == 200 && s_has(r.body, m->series);
    th_resp_free(&r);
    return ok;
}

/* A node and a notifier (targets a port nothing listens on: its failures are numbers too),
 * the gateway polling the notifier. extra: more NAME=value for every process. */
typedef struct obs {
    th_node_t node;
    th_proc_t *notifier;
    char endpoint[300];
} obs_t;

static void s_start(obs_t *o, const char *const *extra)
{
    snprintf(o->endpoint, sizeof o->endpoint, "ipc://%s/notifier.sock", th_tmpdir());
    const char *env[16];
    char ep[340];
    snprintf(ep, sizeof ep, "NOTIFIER_ENDPOINT=%s", o->endpoint);
    int n = 0;
    env[n++] = ep;
    for (int i = 0; extra && extra[i] && n < 15; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    ck_assert_int_eq(th_node_start(&o->node, 2, env), 0);
    th_proc_t *p = o->notifier = th_proc("notifier", "notifier");
    th_env(p, "DATA_DIR", "%s", o->node.dir);
    th_env(p, "STORE_CMD_ENDPOINT", "%s", o->node.store_cmd);
    th_env(p, "STORE_PUB_ENDPOINT", "%s", o->node.store_pub);
    th_env(p, "NOTIFIER_ENDPOINT", "%s", o->endpoint);
    th_env(p, "WEBHOOK_URLS", "http://127.0.0.1:1/nothing-listens-here");
    th_env(p, "WEBHOOK_SECRETS", "observe-secret-0123456789");
    th_env(p, "WEBHOOK_BACKOFF_MIN_MS", "100");
    th_env(p, "WEBHOOK_BACKOFF_MAX_MS", "200");
    ck_assert_int_eq(th_start(p, 20000), 0);
}

static void s_stop(obs_t *o)
{
    ck_assert_int_eq(th_stop(o->notifier, 10000), 0);
    ck_assert_int_eq(th_node_stop(&o->node), 0);
}

static void s_put(int port, const char *uid, const char *status)
{
    char auth[1024], path[200], body[100];
    th_auth_header(auth, sizeof auth, uid, NULL);
    snprintf(path, sizeof path, "/api/v2/presence/%s", uid);
    snprintf(body, sizeof body, "{\"status\":\"%s\"}", status);
    th_resp_t r;
    ck_assert_int_eq(th_http(port, "PUT", path, auth, body, strlen(body), &r, TMO), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
}

/* ==== /metrics ================================================================================ */

START_TEST(test_metrics_conventions)
{
    obs_t o;
    s_start(&o, NULL);
    int port = o.node.port;
    s_put(port, "mia", "online");
    /* The notifier's numbers arrive through the gateway's poll; its event for mia is one of them. */
    mwait_t w = {port, "notifier_events_total{type=\"online\"} 1"};
    ck_assert_msg(th_wait_for(s_metrics_have, &w, 15000), "the notifier's numbers never reached /metrics");
    mwait_t w2 = {port, "notifier_webhook_failures_total{target=\"0\"}"};
    ck_assert(th_wait_for(s_metrics_have, &w2, 15000));
    char *text = s_metrics(port);
    static expo_t e;
    s_parse(text, &e);
    ck_assert_int_ge(e.n, 100);
    for (int i = 0; i < e.n; i++) {
        fam_t *f = &e.f[i];
        ck_assert_msg(f->typed, "%s has no TYPE", f->name);
        ck_assert_msg(f->help_documented, "%s has no HELP text of its own (gateway/gw_promtext.c)", f->name);
        ck_assert_msg(f->samples > 0, "%s has no samples", f->name);
        /* counters are _total, and _total is a counter */
        ck_assert_msg(s_ends(f->name, "_total") == (strcmp(f->type, "counter") == 0), "%s is a %s", f->name, f->type);
        /* base units only, at the end of the name (before _total) */
        ck_assert_msg(!s_ends(f->name, "_ms") && !s_ends(f->name, "_us") && !strstr(f->name, "millis") &&
                          !strstr(f->name, "_ms_") && !strstr(f->name, "_us_"),
                      "%s: not a base unit", f->name);
        if (strstr(f->name, "_seconds"))
            ck_assert_msg(s_ends(f->name, "_seconds") || s_ends(f->name, "_seconds_total"), "%s: unit not last",
                          f->name);
        if (strstr(f->name, "_bytes"))
            ck_assert_msg(s_ends(f->name, "_bytes") || s_ends(f->name, "_bytes_total"), "%s: unit not last", f->name);
    }
    /* The spec's families (API.md) keep their names. */
    static const char *const spec[] = {"http_requests_total", "http_request_duration_seconds", "http_requests_inflight",
                                       "cache_items", "cache_hits_total", "cache_misses_total", "cache_evictions_total",
                                       "cache_cost_bytes", "store_writes_total", "store_commit_seconds", "sync_sequence",
                                       "sync_lag_seconds", "sync_gaps_total", "sse_clients"};
    for (size_t i = 0; i < sizeof spec / sizeof *spec; i++)
        ck_assert_msg(s_find(&e, spec[i]) != NULL, "spec family %s missing", spec[i]);
    ck_assert_str_eq(s_find(&e, "store_commit_seconds")->type, "histogram");
    /* process_* and build info for every process of the node. */
    static const char *const procs[] = {"proc=\"gateway\"", "proc=\"cache-node\"", "proc=\"store-node\"",
                                        "proc=\"notifier\""};
    static const char *const pfams[] = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                                        "process_open_fds", "process_max_fds", "process_start_time_seconds",
                                        "presence_build_info"};
    for (size_t i = 0; i < 4; i++)
        for (size_t k = 0; k < 6; k++) {
            char want[160];
            snprintf(want, sizeof want, "%s{%s", pfams[k], procs[i]);
            ck_assert_msg(s_has(text, want), "no %s", want);
        }
    ck_assert_str_eq(s_find(&e, "process_cpu_seconds_total")->type, "counter");
    ck_assert_str_eq(s_find(&e, "presence_build_info")->type, "gauge");
    ck_assert_msg(strstr(text, "presence_build_info{proc=\"gateway\",node_id=\"") &&
                      strstr(text, ",version=\"2.1.0\",commit=\""),
                  "build info labels");
    /* two cache-nodes: two series each, told apart by node */
    ck_assert_int_eq(s_find(&e, "process_open_fds")->samples, 5);
    /* the store's series come through both cache-nodes but appear once */
    ck_assert_int_eq(s_find(&e, "store_writes_total")->samples, 1);
    /* the notifier, through the gateway */
    ck_assert(s_has(text, "notifier_up 1\n"));
    ck_assert(s_has(text, "notifier_live 1\n"));
    ck_assert_str_eq(s_find(&e, "notifier_webhook_request_duration_seconds")->type, "histogram");
    ck_assert(s_has(text, "notifier_webhook_lag_seconds{target=\"0\"} "));
    free(text);
    /* The notifier stops: notifier_up says so and its numbers go away (never stale ones). */
    ck_assert_int_eq(th_stop(o.notifier, 10000), 0);
    mwait_t w3 = {port, "notifier_up 0\n"};
    ck_assert(th_wait_for(s_metrics_have, &w3, 15000));
    text = s_metrics(port);
    ck_assert(!s_has(text, "notifier_live"));
    free(text);
    ck_assert_int_eq(th_start(o.notifier, 20000), 0);
    s_stop(&o);
}
END_TEST

START_TEST(test_metrics_prefix)
{
    obs_t o;
    static const char *const extra[] = {"METRICS_PREFIX=presence_", NULL};
    s_start(&o, extra);
    s_put(o.node.port, "pia", "online");
    mwait_t w = {o.node.port, "presence_notifier_live 1"};
    ck_assert(th_wait_for(s_metrics_have, &w, 15000));
    char *text = s_metrics(o.node.port);
    static expo_t e;
    s_parse(text, &e);
    for (int i = 0; i < e.n; i++)
        ck_assert_msg(strncmp(e.f[i].name, "presence_", 9) == 0 || strncmp(e.f[i].name, "process_", 8) == 0,
                      "%s lacks the prefix", e.f[i].name);
    ck_assert(s_find(&e, "presence_http_requests_total") != NULL);
    ck_assert(s_find(&e, "presence_store_commit_seconds") != NULL);
    ck_assert(s_find(&e, "presence_build_info") != NULL); /* not presence_presence_ */
    ck_assert(s_find(&e, "process_cpu_seconds_total") != NULL);
    ck_assert(s_find(&e, "http_requests_total") == NULL);
    free(text);
    s_stop(&o);
}
END_TEST

START_TEST(test_metrics_prefix_invalid)
{
    th_proc_t *g = th_proc("gateway", "gateway");
    th_env(g, "CACHE_ENDPOINTS", "ipc://%s/none.sock", th_tmpdir());
    th_env(g, "SERVICE_PORT", "0");
    th_env(g, "JWT_SECRET", "%s", TH_SECRET);
    th_env(g, "METRICS_PREFIX", "9lives");
    ck_assert_int_eq(th_start(g, 5000), -1);
    ck_assert(g->reaped && WIFEXITED(g->status) && WEXITSTATUS(g->status) == 2);
    FILE *f = fopen(g->err_path, "r");
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_msg(strstr(buf, "METRICS_PREFIX: invalid value '9lives'"), "%s", buf);
}
END_TEST

/* ==== the access log ========================================================================== */

static json_t *s_access_lines(const th_proc_t *gw, char **raw)
{
    FILE *f = fopen(gw->err_path, "r");
    ck_assert_ptr_nonnull(f);
    json_t *arr = json_array();
    size_t cap = 1 << 20, len = 0;
    *raw = calloc(1, cap);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        if (len + l < cap - 1) {
            memcpy(*raw + len, line, l);
            len += l;
        }
        if (!strstr(line, "\"msg\":\"access\""))
            continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        ck_assert_msg(o != NULL, "access line is not JSON (%s): %s", je.text, line);
        json_array_append_new(arr, o);
    }
    fclose(f);
    return arr;
}

static json_t *s_line_for(json_t *arr, const char *method, const char *target_prefix)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *m = json_string_value(json_object_get(o, "method"));
        const char *t = json_string_value(json_object_get(o, "target"));
        if (m && t && strcmp(m, method) == 0 && strncmp(t, target_prefix, strlen(target_prefix)) == 0)
            return o;
    }
    return NULL;
}

typedef struct lwait {
    th_proc_t *gw;
    size_t n;
} lwait_t;

static bool s_has_lines(void *arg)
{
    lwait_t *w = arg;
    char *raw;
    json_t *a = s_access_lines(w->gw, &raw);
    bool ok = json_array_size(a) >= w->n;
    json_decref(a);
    free(raw);
    return ok;
}

START_TEST(test_access_log)
{
    static const char *const extra[] = {"ACCESS_LOG=true", "TRUST_PROXY=true", NULL};
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, extra), 0);
    int port = n.port;
    char *tok = th_token("ada", NULL);
    char hdr[2048];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    const char *body = "{\"status\":\"busy\"}";
    th_resp_t r;
    /* 1. a write with a header token */
    ck_assert_int_eq(th_http(port, "PUT", "/api/v2/presence/ada", hdr, body, strlen(body), &r, TMO), 0);
    ck_assert_int_eq(r.status, 200);
    size_t put_bytes = r.body_len;
    th_resp_free(&r);
    /* 2. a read with a token in the query (twice, spelled differently), behind a proxy */
    char path[4096];
    snprintf(path, sizeof path, "/api/v2/presence/ada?access_token=%s&Access%%5FToken=%s&keep=1", tok, tok);
    ck_assert_int_eq(th_http(port, "GET", path, "X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n", NULL, 0, &r, TMO), 0);
    ck_assert_int_eq(r.status, 200);
    th_resp_free(&r);
    /* 3. not found, with bytes a JSON line must not carry raw */
    ck_assert_int_eq(th_http(port, "GET", "/nope/%22%0a\"x", NULL, NULL, 0, &r, TMO), 0);
    ck_assert_int_eq(r.status, 404);
    th_resp_free(&r);
    /* 4. a bad token: 401, and the token is not logged either */
    ck_assert_int_eq(th_http(port, "PUT", "/api/v2/presence/ada", "Authorization: Bearer not-a-jwt-secret-9\r\n", body,
                             strlen(body), &r, TMO),
                     0);
    ck_assert_int_eq(r.status, 401);
    th_resp_free(&r);
    lwait_t w = {n.gw, 4};
    ck_assert(th_wait_for(s_has_lines, &w, TMO));
    char *raw;
    json_t *lines = s_access_lines(n.gw, &raw);
    ck_assert_uint_eq(json_array_size(lines), 4);
    json_t *put = s_line_for(lines, "PUT", "/api/v2/presence/ada");
    ck_assert_ptr_nonnull(put);
    ck_assert_str_eq(json_string_value(json_object_get(put, "route")), "presence.user");
    ck_assert_int_eq(json_integer_value(json_object_get(put, "code")), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(put, "bytes")), (json_int_t)put_bytes);
    ck_assert_str_eq(json_string_value(json_object_get(put, "sub")), "ada");
    ck_assert_str_eq(json_string_value(json_object_get(put, "user_id")), "ada");
    ck_assert_str_eq(json_string_value(json_object_get(put, "client")), "127.0.0.1");
    ck_assert_str_eq(json_string_value(json_object_get(put, "proc")), "gw");
    ck_assert_str_eq(json_string_value(json_object_get(put, "level")), "info");
    ck_assert(json_is_real(json_object_get(put, "ms")) && json_real_value(json_object_get(put, "ms")) >= 0);
    ck_assert(json_is_string(json_object_get(put, "ts")));
    json_t *get = s_line_for(lines, "GET", "/api/v2/presence/ada");
    ck_assert_ptr_nonnull(get);
    ck_assert_str_eq(json_string_value(json_object_get(get, "target")),
                     "/api/v2/presence/ada?access_token=REDACTED&Access%5FToken=REDACTED&keep=1");
    ck_assert_str_eq(json_string_value(json_object_get(get, "client")), "203.0.113.9"); /* TRUST_PROXY */
    ck_assert_ptr_null(json_object_get(get, "sub"));                                   /* public read */
    json_t *nf = s_line_for(lines, "GET", "/nope/");
    ck_assert_ptr_nonnull(nf);
    ck_assert_str_eq(json_string_value(json_object_get(nf, "route")), "notfound");
    ck_assert_int_eq(json_integer_value(json_object_get(nf, "code")), 404);
    ck_assert_str_eq(json_string_value(json_object_get(nf, "target")), "/nope/%22%0a%22x");
    size_t i;
    json_t *o;
    int unauthorized = 0;
    json_array_foreach(lines, i, o) unauthorized += json_integer_value(json_object_get(o, "code")) == 401;
    ck_assert_int_eq(unauthorized, 1);
    /* No token, in any form, anywhere in the gateway's log. */
    ck_assert_ptr_null(strstr(raw, tok));
    ck_assert_ptr_null(strstr(raw, "not-a-jwt-secret-9"));
    json_decref(lines);
    free(raw);
    free(tok);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

START_TEST(test_access_log_off_by_default)
{
    th_node_t n;
    ck_assert_int_eq(th_node_start(&n, 1, NULL), 0);
    th_resp_t r;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(th_http(n.port, "GET", "/health", NULL, NULL, 0, &r, TMO), 0);
        ck_assert_int_eq(r.status, 200);
        th_resp_free(&r);
    }
    /* Requests are counted (the log line would be written at the same point): none logged. */
    mwait_t w = {n.port, "http_requests_total{method=\"GET\",route=\"health\",code=\"200\"} 3"};
    ck_assert(th_wait_for(s_metrics_have, &w, TMO));
    char *raw;
    json_t *lines = s_access_lines(n.gw, &raw);
    ck_assert_uint_eq(json_array_size(lines), 0);
    ck_assert_ptr_null(strstr(raw, "\"msg\":\"access\""));
    json_decref(lines);
    free(raw);
    ck_assert_int_eq(th_node_stop(&n), 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("observe");
    TCase *m = tcase_create("metrics");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, test_metrics_conventions);
    tcase_add_test(m, test_metrics_prefix);
    tcase_add_test(m, test_metrics_prefix_invalid);
    suite_add_tcase(s, m);
    TCase *a = tcase_create("access_log");
    tcase_set_timeout(a, 60);
    tcase_add_test(a, test_access_log);
    tcase_add_test(a, test_access_log_off_by_default);
    suite_add_tcase(s, a);
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
