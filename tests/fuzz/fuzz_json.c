/* fuzz_json.c -- the gateway's request-body parsers (gateway/gw_json.c): the PUT/POST record body,
 * the heartbeat body and the three kinds of batch body, each fed the same bytes.
 *
 * Oracles besides the sanitizers:
 *   - an accepted body yields values the API allows (status, message UTF-8 without controls,
 *     ttl range, valid and distinct ids, at most `max` items, ids inside the caller's store);
 *   - a refused body yields one of the documented error texts;
 *   - what the gateway would render from the parsed records is valid JSON that reads back as the
 *     same values (the renderer trusts what the parsers let through).
 */
#include "fuzz_common.h"
#include "gw_lib.h"
#include "util.h"

#include <jansson.h>

#define MAX_BATCH 32
#define DEFAULT_TTL 3600

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_quiet();
    return 0;
}

/* An error text is one of the short codes, then ": " and the rule it names. */
static bool s_one_of(const char *s, const char *const *list)
{
    for (; *list; list++) {
        size_t n = strlen(*list);
        if (strncmp(s, *list, n) == 0 && strncmp(s + n, ": ", 2) == 0 && s[n + 2])
            return true;
    }
    return false;
}

/* Render r as the API does and read it back with jansson. */
static void s_check_render(const proto_record_t *r)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t shown = *r;
    shown.expires_at_us = 4102444800000000ull; /* not expired: the message is rendered */
    gw_json_record(&b, &shown, 0);
    json_error_t e;
    json_t *o = json_loadb(b.p, b.len, JSON_REJECT_DUPLICATES, &e);
    if (!o)
        fprintf(stderr, "rendered record is not JSON: %s: %.*s\n", e.text, (int)b.len, b.p);
    FZ_CHECK(o && json_is_object(o));
    json_t *uid = json_object_get(o, "user_id"), *msg = json_object_get(o, "message");
    FZ_CHECK(json_is_string(uid) && json_string_length(uid) == r->uid_len &&
             memcmp(json_string_value(uid), r->user_id, r->uid_len) == 0);
    if (r->msg_len)
        FZ_CHECK(json_is_string(msg) && json_string_length(msg) == r->msg_len &&
                 memcmp(json_string_value(msg), r->message, r->msg_len) == 0);
    else
        FZ_CHECK(msg == NULL);
    FZ_CHECK(json_integer_value(json_object_get(o, "ttl")) == (json_int_t)r->ttl_s);
    json_decref(o);
    gw_buf_free(&b);
}

static void s_check_fields(const proto_record_t *r, bool with_uid)
{
    FZ_CHECK(r->status < PRESENCE_STATUS_COUNT);
    FZ_CHECK(r->msg_len <= PROTO_MESSAGE_MAX && r->message[r->msg_len] == '\0');
    FZ_CHECK(util_valid_message(r->message, r->msg_len));
    FZ_CHECK(r->ttl_s >= 1 && r->ttl_s <= PROTO_TTL_MAX);
    if (with_uid)
        FZ_CHECK(gw_valid_user_id(r->user_id, r->uid_len) && r->user_id[r->uid_len] == '\0');
}

static void s_set_body(const char *body, size_t len)
{
    static const char *const errs[] = {"invalid JSON", "invalid status", "invalid message", "invalid ttl", NULL};
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, "fuzz", 4);
    proto_record_set_node(&r, "node-1", 6);
    const char *err = NULL;
    if (gw_parse_set_body(body, len, DEFAULT_TTL, &r, &err) == 0) {
        s_check_fields(&r, true);
        s_check_render(&r);
    } else {
        FZ_CHECK(err && s_one_of(err, errs));
    }
}

static void s_heartbeat_body(const char *body, size_t len)
{
    static const char *const errs[] = {"invalid JSON", "invalid ttl", NULL};
    uint32_t ttl = 12345;
    const char *err = NULL;
    if (gw_parse_heartbeat_body(body, len, &ttl, &err) == 0)
        FZ_CHECK(ttl <= PROTO_TTL_MAX);
    else
        FZ_CHECK(err && s_one_of(err, errs));
}

static void s_batch_body(const char *body, size_t len)
{
    proto_str_t ids[MAX_BATCH];
    proto_record_t *recs = malloc(MAX_BATCH * sizeof *recs);
    char *idstore = malloc(len + 1); /* what the gateway gives it: the body's length plus one */
    char errbuf[200];
    uint32_t n = 0;
    errbuf[0] = '\0';
    int kind = gw_parse_batch_body(body, len, MAX_BATCH, DEFAULT_TTL, ids, idstore, recs, &n, errbuf, sizeof errbuf);
    FZ_CHECK(n <= MAX_BATCH);
    if (kind == GW_BATCH_READ) {
        FZ_CHECK(n >= 1);
        for (uint32_t i = 0; i < n; i++) {
            FZ_CHECK(gw_valid_user_id(ids[i].p, ids[i].len));
            FZ_CHECK(ids[i].p >= idstore && ids[i].p + ids[i].len <= idstore + len);
            for (uint32_t k = 0; k < i; k++)
                FZ_CHECK(ids[k].len != ids[i].len || memcmp(ids[k].p, ids[i].p, ids[i].len) != 0);
        }
    } else if (kind == GW_BATCH_WRITE || kind == GW_BATCH_HEARTBEAT) {
        FZ_CHECK(n >= 1);
        gw_buf_t b;
        gw_buf_init(&b);
        for (uint32_t i = 0; i < n; i++) {
            proto_record_set_node(&recs[i], "node-1", 6);
            if (kind == GW_BATCH_WRITE) {
                s_check_fields(&recs[i], true);
                s_check_render(&recs[i]);
            } else {
                FZ_CHECK(gw_valid_user_id(recs[i].user_id, recs[i].uid_len));
                FZ_CHECK(recs[i].ttl_s <= PROTO_TTL_MAX);
                for (uint32_t k = 0; k < i; k++)
                    FZ_CHECK(recs[k].uid_len != recs[i].uid_len ||
                             memcmp(recs[k].user_id, recs[i].user_id, recs[i].uid_len) != 0);
            }
        }
        if (kind == GW_BATCH_WRITE) {
            gw_json_envelope(&b, recs, n, 0);
            json_error_t e;
            json_t *o = json_loadb(b.p, b.len, 0, &e);
            FZ_CHECK(o && json_is_object(json_object_get(o, "data")));
            json_decref(o);
        }
        gw_buf_free(&b);
    } else {
        FZ_CHECK(kind == -1);
        FZ_CHECK(errbuf[0] != '\0' && memchr(errbuf, '\0', sizeof errbuf));
        /* The error is rendered into a JSON body: it must come out as valid JSON. */
        gw_buf_t b;
        gw_buf_init(&b);
        gw_json_error(&b, errbuf);
        json_error_t e;
        json_t *o = json_loadb(b.p, b.len, 0, &e);
        if (!o)
            fprintf(stderr, "error body is not JSON: %s: %.*s\n", e.text, (int)b.len, b.p);
        FZ_CHECK(o != NULL);
        json_decref(o);
        gw_buf_free(&b);
    }
    free(idstore);
    free(recs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > GW_BODY_MAX)
        return 0; /* the gateway answers 413 before parsing */
    const char *body = (const char *)data;
    s_set_body(body, size);
    s_heartbeat_body(body, size);
    s_batch_body(body, size);
    return 0;
}
