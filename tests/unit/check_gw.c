/* check_gw.c -- Check suite for the gateway's pure logic (gateway/gw_lib.h).
 *
 * JSON output is compared as whole strings (field order, RFC 3339 times with 6 fractional digits,
 * escaping, the omitted empty message, expired records rendered offline). Request parsing covers
 * the set/heartbeat/batch bodies and the users= query list, valid and hostile. JWTs are made with
 * gw_auth_sign, with libjwt directly (missing or odd claims) and by hand (alg none, tampering),
 * then checked by gw_auth_verify against a fixed "now". CORS reads the CORS_* environment, set
 * inside each (forked) test. The rate limiter runs on a fake clock, plus a 4-thread smoke test;
 * rendezvous routing is checked for determinism, balance and minimal disruption; route patterns
 * (gw_path.h) for their parameters and optional tails.
 *
 * Threads only in the rate-limiter smoke test; no sockets, no files.
 */
#include "gw_lib.h"
#include "gw_path.h"
#include "gw_rendezvous.h"
#include "util.h"

#include <check.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The error texts, pinned here word for word (the short code clients match on, then the rule). */
#define E_UID_RULE "user ids are 1-128 bytes of A-Z a-z 0-9 . _ ~ @ : = + -, not batch, watch, connect, . or .."
#define E_JSON "invalid JSON: the body must be one JSON object"
#define E_STATUS "invalid status: must be one of online, away, busy, offline"
#define E_TTL "invalid ttl: ttl must be an integer from 1 to 604800 (seconds)"
#define E_MSG_TYPE "invalid message: must be a string"
#define E_MSG_LEN "invalid message: message is longer than 256 bytes"
#define E_MSG_TEXT "invalid message: must be UTF-8 text without control characters"
#define E_SHAPE "the body holds exactly one of user_ids (a batch read), presences (a batch write) or heartbeats (bulk heartbeats)"
#define E_UID "invalid user_id: " E_UID_RULE
#define E_FORBIDDEN(sub) "forbidden: token for '" sub "' may write only '" sub "' (scope presence:admin writes anyone)"

#define NOW_S 1700000000LL
#define NOW_US ((uint64_t)NOW_S * 1000000ULL)

/* ---------------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------------- */

static proto_record_t s_rec(const char *uid, int status, const char *msg, uint64_t last_seen, uint64_t updated,
                            uint32_t ttl, const char *node, uint64_t version)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, node, strlen(node));
    r.status = (uint8_t)status;
    r.last_seen_us = last_seen;
    r.updated_at_us = updated;
    r.ttl_s = ttl;
    r.expires_at_us = last_seen + (uint64_t)ttl * 1000000ULL;
    r.version = version;
    return r;
}

/* NUL-terminate a gw_buf for string comparison. */
static const char *s_str(gw_buf_t *b)
{
    gw_buf_add(b, "", 1);
    b->len--;
    return b->p;
}

/* ---------------------------------------------------------------------------------------------------
 * JSON output
 * ------------------------------------------------------------------------------------------------- */

/* 2026-01-15T10:30:00.123456Z */
#define LS 1768473000123456ULL
/* 2026-01-15T10:13:20.000001Z */
#define UP 1768472000000001ULL

START_TEST(test_json_record_exact)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t r = s_rec("alice", PRESENCE_BUSY, "in a meeting", LS, UP, 3600, "eu-1", 42);
    gw_json_record(&b, &r, LS);
    ck_assert_str_eq(s_str(&b), "{\"user_id\":\"alice\",\"status\":\"busy\",\"message\":\"in a meeting\","
                                "\"last_seen\":\"2026-01-15T10:30:00.123456Z\","
                                "\"updated_at\":\"2026-01-15T10:13:20.000001Z\","
                                "\"expires_at\":\"2026-01-15T11:30:00.123456Z\","
                                "\"node_id\":\"eu-1\",\"ttl\":3600,\"version\":42}");
    /* no message: the key is omitted */
    gw_buf_reset(&b);
    r = s_rec("bob@example.com", PRESENCE_ONLINE, "", 0, 0, 1, "n", 18446744073709551615ULL);
    gw_json_record(&b, &r, 0);
    ck_assert_str_eq(s_str(&b), "{\"user_id\":\"bob@example.com\",\"status\":\"online\","
                                "\"last_seen\":\"1970-01-01T00:00:00.000000Z\","
                                "\"updated_at\":\"1970-01-01T00:00:00.000000Z\","
                                "\"expires_at\":\"1970-01-01T00:00:01.000000Z\","
                                "\"node_id\":\"n\",\"ttl\":1,\"version\":18446744073709551615}");
    /* every status name */
    static const char *const names[] = {"online", "away", "busy", "offline"};
    for (int s = 0; s < PRESENCE_STATUS_COUNT; s++) {
        gw_buf_reset(&b);
        r = s_rec("u", s, "", LS, LS, 60, "n", 1);
        gw_json_record(&b, &r, LS);
        char want[64];
        snprintf(want, sizeof want, "\"status\":\"%s\"", names[s]);
        ck_assert_ptr_nonnull(strstr(s_str(&b), want));
    }
    /* an offline record with a message keeps it (only expiry clears it) */
    gw_buf_reset(&b);
    r = s_rec("carol", PRESENCE_OFFLINE, "gone fishing", LS, UP, 60, "n", 7);
    gw_json_record(&b, &r, LS + 3600000000ULL);
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"status\":\"offline\",\"message\":\"gone fishing\""));
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"updated_at\":\"2026-01-15T10:13:20.000001Z\""));
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_json_record_expired)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t r = s_rec("alice", PRESENCE_AWAY, "brb", LS, UP, 60, "eu-1", 9);
    const char *live = "{\"user_id\":\"alice\",\"status\":\"away\",\"message\":\"brb\","
                       "\"last_seen\":\"2026-01-15T10:30:00.123456Z\",\"updated_at\":\"2026-01-15T10:13:20.000001Z\","
                       "\"expires_at\":\"2026-01-15T10:31:00.123456Z\",\"node_id\":\"eu-1\",\"ttl\":60,\"version\":9}";
    const char *expired = "{\"user_id\":\"alice\",\"status\":\"offline\","
                          "\"last_seen\":\"2026-01-15T10:30:00.123456Z\",\"updated_at\":\"2026-01-15T10:31:00.123456Z\","
                          "\"expires_at\":\"2026-01-15T10:31:00.123456Z\",\"node_id\":\"eu-1\",\"ttl\":60,\"version\":9}";
    /* one microsecond before expires_at: as stored */
    gw_json_record(&b, &r, r.expires_at_us - 1);
    ck_assert_str_eq(s_str(&b), live);
    /* at and after expires_at: offline, no message, updated_at = expires_at */
    gw_buf_reset(&b);
    gw_json_record(&b, &r, r.expires_at_us);
    ck_assert_str_eq(s_str(&b), expired);
    gw_buf_reset(&b);
    gw_json_record(&b, &r, r.expires_at_us + 86400000000ULL);
    ck_assert_str_eq(s_str(&b), expired);
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_json_escaping)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t r = s_rec("u", PRESENCE_ONLINE, "say \"hi\" \\o/ caf\xc3\xa9 \xf0\x9f\x98\x80", LS, LS, 60, "n", 1);
    gw_json_record(&b, &r, LS);
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"message\":\"say \\\"hi\\\" \\\\o/ caf\xc3\xa9 \xf0\x9f\x98\x80\","));
    /* the output is valid JSON and the message reads back unchanged */
    json_error_t je;
    json_t *o = json_loads(s_str(&b), 0, &je);
    ck_assert_msg(o != NULL, "invalid JSON: %s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(o, "message")), r.message);
    json_decref(o);
    /* the string helper escapes controls too (defence in depth) */
    gw_buf_reset(&b);
    gw_buf_add_jstr(&b, "a\x01" "b\nc\x1f" "d\x7f" "e\"\\", 11);
    ck_assert_str_eq(s_str(&b), "\"a\\u0001b\\u000ac\\u001fd\\u007fe\\\"\\\\\"");
    gw_buf_reset(&b);
    gw_buf_add_jstr(&b, "", 0);
    ck_assert_str_eq(s_str(&b), "\"\"");
    /* a long string needing escapes everywhere (buffer growth) */
    char big[3000];
    memset(big, '"', sizeof big);
    gw_buf_reset(&b);
    gw_buf_add_jstr(&b, big, sizeof big);
    ck_assert_uint_eq(b.len, 2 + 2 * sizeof big);
    /* the other buffer helpers */
    gw_buf_reset(&b);
    gw_buf_add_u64(&b, 0);
    gw_buf_adds(&b, ",");
    gw_buf_add_u64(&b, UINT64_MAX);
    gw_buf_addf(&b, ",%s-%d", "x", 5);
    ck_assert_str_eq(s_str(&b), "0,18446744073709551615,x-5");
    gw_buf_free(&b);
    ck_assert_ptr_null(b.p);
}
END_TEST

START_TEST(test_json_envelope_error)
{
    gw_buf_t b;
    gw_buf_init(&b);
    gw_json_envelope(&b, NULL, 0, LS);
    ck_assert_str_eq(s_str(&b), "{\"success\":true,\"data\":{}}");

    proto_record_t r[3] = {s_rec("alice", PRESENCE_ONLINE, "", LS, LS, 60, "n1", 1),
                           s_rec("bob", PRESENCE_BUSY, "x", LS, LS, 60, "n2", 2),
                           s_rec("carol", PRESENCE_AWAY, "", LS - 120000000ULL, LS - 120000000ULL, 60, "n3", 3)};
    gw_buf_t one;
    gw_buf_init(&one);
    gw_json_record(&one, &r[0], LS);
    gw_buf_reset(&b);
    gw_json_envelope(&b, r, 1, LS);
    char want[2048];
    snprintf(want, sizeof want, "{\"success\":true,\"data\":{\"alice\":%s}}", s_str(&one));
    ck_assert_str_eq(s_str(&b), want);

    gw_buf_reset(&b);
    gw_json_envelope(&b, r, 3, LS);
    size_t o = (size_t)snprintf(want, sizeof want, "{\"success\":true,\"data\":{");
    for (int i = 0; i < 3; i++) {
        gw_buf_reset(&one);
        gw_json_record(&one, &r[i], LS);
        o += (size_t)snprintf(want + o, sizeof want - o, "%s\"%s\":%s", i ? "," : "", r[i].user_id, s_str(&one));
    }
    snprintf(want + o, sizeof want - o, "}}");
    ck_assert_str_eq(s_str(&b), want);
    /* carol is expired at LS: rendered offline inside the envelope too */
    json_error_t je;
    json_t *root = json_loads(s_str(&b), 0, &je);
    ck_assert_msg(root != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(root, "data"), "carol"), "status")),
                     "offline");
    ck_assert(json_is_true(json_object_get(root, "success")));
    ck_assert_ptr_null(json_object_get(root, "error"));
    json_decref(root);

    gw_buf_reset(&b);
    gw_json_error(&b, "presence not found for user alice");
    ck_assert_str_eq(s_str(&b), "{\"success\":false,\"error\":\"presence not found for user alice\"}");
    gw_buf_reset(&b);
    gw_json_error(&b, "bad \"x\" \\ y");
    ck_assert_str_eq(s_str(&b), "{\"success\":false,\"error\":\"bad \\\"x\\\" \\\\ y\"}");
    gw_buf_free(&one);
    gw_buf_free(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Input: percent-decoding and bodies
 * ------------------------------------------------------------------------------------------------- */

START_TEST(test_pct_decode)
{
    static const struct {
        const char *in, *out;
        ssize_t n;
    } ok[] = {
        {"", "", 0},
        {"alice", "alice", 5},
        {"a%20b", "a b", 3},
        {"%41%42c", "ABc", 3},
        {"%2b%2B", "++", 2},
        {"alice%40example.com", "alice@example.com", 17},
        {"%2541", "%41", 3}, /* decoded once only */
        {"%e2%82%ac", "\xe2\x82\xac", 3},
        {"+", "+", 1}, /* a path: '+' is literal */
    };
    char out[64];
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        memset(out, 'x', sizeof out);
        ssize_t n = gw_pct_decode(ok[i].in, strlen(ok[i].in), out);
        ck_assert_msg(n == ok[i].n, "'%s': %zd", ok[i].in, n);
        ck_assert_mem_eq(out, ok[i].out, (size_t)n);
        ck_assert_int_eq(out[n], '\0');
    }
    ck_assert_int_eq(gw_pct_decode("%00", 3, out), 1);
    ck_assert_int_eq(out[0], '\0');
    static const char *const bad[] = {"%", "%4", "a%", "a%4", "%zz", "%4g", "%g4", "100%", "%%41", "a% 1"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        ck_assert_msg(gw_pct_decode(bad[i], strlen(bad[i]), out) == -1, "'%s' accepted", bad[i]);
    /* the length bounds the input: "%41" cut to "%4" */
    ck_assert_int_eq(gw_pct_decode("%41", 2, out), -1);
}
END_TEST

static int s_set(const char *body, proto_record_t *r, const char **err)
{
    memset(r, 0, sizeof *r);
    *err = NULL;
    return gw_parse_set_body(body, strlen(body), 3600, r, err);
}

static void s_set_bad(const char *body, const char *want_err)
{
    proto_record_t r;
    const char *err;
    ck_assert_msg(s_set(body, &r, &err) == -1, "accepted: %.200s", body);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strcmp(err, want_err) == 0, "%.200s: error '%s', want '%s'", body, err, want_err);
}

/* Rejected; the error is one of two acceptable texts (both are 400s). */
static void s_set_bad2(const char *body, const char *e1, const char *e2)
{
    proto_record_t r;
    const char *err;
    ck_assert_msg(s_set(body, &r, &err) == -1, "accepted: %.200s", body);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strcmp(err, e1) == 0 || strcmp(err, e2) == 0, "%.200s: error '%s'", body, err);
}

START_TEST(test_parse_set_body)
{
    proto_record_t r;
    const char *err;
    ck_assert_int_eq(s_set("{\"status\":\"busy\",\"message\":\"in a meeting\",\"ttl\":120}", &r, &err), 0);
    ck_assert_uint_eq(r.status, PRESENCE_BUSY);
    ck_assert_str_eq(r.message, "in a meeting");
    ck_assert_uint_eq(r.msg_len, 12);
    ck_assert_uint_eq(r.ttl_s, 120);
    /* absent message and ttl: empty and the default */
    ck_assert_int_eq(s_set("{\"status\":\"online\"}", &r, &err), 0);
    ck_assert_uint_eq(r.status, PRESENCE_ONLINE);
    ck_assert_uint_eq(r.msg_len, 0);
    ck_assert_uint_eq(r.ttl_s, 3600);
    ck_assert_int_eq(gw_parse_set_body("{\"status\":\"away\"}", 17, 77, &r, &err), 0);
    ck_assert_uint_eq(r.ttl_s, 77);
    ck_assert_int_eq(s_set("{\"status\":\"offline\"}", &r, &err), 0);
    ck_assert_uint_eq(r.status, PRESENCE_OFFLINE);
    /* whitespace, unknown fields, key order */
    ck_assert_int_eq(s_set(" \n{ \"ttl\" : 1 , \"foo\":{\"bar\":[1,2,{}]}, \"status\" : \"away\" }\n ", &r, &err), 0);
    ck_assert_uint_eq(r.status, PRESENCE_AWAY);
    ck_assert_uint_eq(r.ttl_s, 1);
    /* ttl bounds and forms */
    ck_assert_int_eq(s_set("{\"status\":\"online\",\"ttl\":604800}", &r, &err), 0);
    ck_assert_uint_eq(r.ttl_s, 604800);
    ck_assert_int_eq(s_set("{\"status\":\"online\",\"ttl\":3600.0}", &r, &err), 0);
    ck_assert_uint_eq(r.ttl_s, 3600);
    ck_assert_int_eq(s_set("{\"status\":\"online\",\"ttl\":1e3}", &r, &err), 0);
    ck_assert_uint_eq(r.ttl_s, 1000);
    /* messages: escapes, multi-byte UTF-8, the 256-byte limit counted in bytes */
    ck_assert_int_eq(s_set("{\"status\":\"online\",\"message\":\"say \\\"hi\\\" \\\\ \\u00e9 \xf0\x9f\x98\x80\"}", &r, &err), 0);
    ck_assert_str_eq(r.message, "say \"hi\" \\ \xc3\xa9 \xf0\x9f\x98\x80");
    char body[2048];
    char msg[600];
    memset(msg, 'm', 256);
    msg[256] = '\0';
    snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\"}", msg);
    ck_assert_int_eq(s_set(body, &r, &err), 0);
    ck_assert_uint_eq(r.msg_len, 256);
    msg[256] = 'm';
    msg[257] = '\0';
    snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\"}", msg);
    s_set_bad(body, E_MSG_LEN);
    for (int i = 0; i < 128; i++)
        memcpy(msg + 2 * i, "\xc3\xa9", 2); /* 128 x U+00E9 = 256 bytes */
    msg[256] = '\0';
    snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\"}", msg);
    ck_assert_int_eq(s_set(body, &r, &err), 0);
    ck_assert_uint_eq(r.msg_len, 256);
    snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s\xc3\xa9\"}", msg);
    s_set_bad(body, E_MSG_LEN);
    /* 256 multi-byte characters are over the limit even though they are only 256 "characters" */
    snprintf(body, sizeof body, "{\"status\":\"online\",\"message\":\"%s%s\"}", msg, msg);
    s_set_bad(body, E_MSG_LEN);

    /* status: missing, wrong type, unknown, case variants */
    s_set_bad("{}", E_STATUS);
    s_set_bad("{\"message\":\"x\"}", E_STATUS);
    s_set_bad("{\"status\":\"Online\"}", E_STATUS);
    s_set_bad("{\"status\":\"ONLINE\"}", E_STATUS);
    s_set_bad("{\"status\":\" online\"}", E_STATUS);
    s_set_bad("{\"status\":\"online \"}", E_STATUS);
    s_set_bad("{\"status\":\"\"}", E_STATUS);
    s_set_bad("{\"status\":\"invisible\"}", E_STATUS);
    s_set_bad("{\"status\":\"online\\u0000\"}", E_JSON); /* NUL is refused by the parser */
    s_set_bad("{\"status\":1}", E_STATUS);
    s_set_bad("{\"status\":null}", E_STATUS);
    s_set_bad("{\"status\":true}", E_STATUS);
    s_set_bad("{\"status\":[\"online\"]}", E_STATUS);
    s_set_bad("{\"Status\":\"online\"}", E_STATUS);

    /* message: control characters (escaped, so the JSON itself is valid), wrong type */
    s_set_bad("{\"status\":\"online\",\"message\":\"a\\u0001b\"}", E_MSG_TEXT);
    s_set_bad("{\"status\":\"online\",\"message\":\"line\\nbreak\"}", E_MSG_TEXT);
    s_set_bad("{\"status\":\"online\",\"message\":\"tab\\there\"}", E_MSG_TEXT);
    s_set_bad("{\"status\":\"online\",\"message\":\"del\\u007f\"}", E_MSG_TEXT);
    s_set_bad("{\"status\":\"online\",\"message\":\"c1\\u0085\"}", E_MSG_TEXT);
    s_set_bad("{\"status\":\"online\",\"message\":123}", E_MSG_TYPE);
    s_set_bad("{\"status\":\"online\",\"message\":true}", E_MSG_TYPE);
    s_set_bad("{\"status\":\"online\",\"message\":[\"x\"]}", E_MSG_TYPE);
    s_set_bad("{\"status\":\"online\",\"message\":{}}", E_MSG_TYPE);
    /* invalid UTF-8 (raw bytes, or an escaped lone surrogate): not acceptable JSON text or message */
    s_set_bad2("{\"status\":\"online\",\"message\":\"\xff\"}", E_JSON, E_MSG_TEXT);
    s_set_bad2("{\"status\":\"online\",\"message\":\"\xc3\"}", E_JSON, E_MSG_TEXT);
    s_set_bad2("{\"status\":\"online\",\"message\":\"\xc0\x80\"}", E_JSON, E_MSG_TEXT);
    s_set_bad2("{\"status\":\"online\",\"message\":\"\xed\xa0\x80\"}", E_JSON, E_MSG_TEXT);
    s_set_bad2("{\"status\":\"online\",\"message\":\"\\ud800\"}", E_JSON, E_MSG_TEXT);
    s_set_bad2("{\"status\":\"online\",\"message\":\"\\u0000\"}", E_JSON, E_MSG_TEXT);

    /* ttl: out of range, not an integer */
    s_set_bad("{\"status\":\"online\",\"ttl\":0}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":604801}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":-1}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":3.5}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":0.5}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":\"3600\"}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":true}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":[60]}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":1e300}", E_TTL);
    s_set_bad("{\"status\":\"online\",\"ttl\":4294967297}", E_TTL); /* 2^32 + 1 must not wrap */
    s_set_bad("{\"status\":\"online\",\"ttl\":-9223372036854775808}", E_TTL);
    /* numbers too big for the parser are rejected too */
    s_set_bad2("{\"status\":\"online\",\"ttl\":99999999999999999999999}", E_JSON, E_TTL);
    s_set_bad2("{\"status\":\"online\",\"ttl\":1e999}", E_JSON, E_TTL);
    s_set_bad2("{\"status\":\"online\",\"x\":-1e999}", E_JSON, E_JSON);

    /* not an object, or not JSON at all */
    static const char *const notobj[] = {"", " ", "[]", "[{\"status\":\"online\"}]", "\"x\"", "null", "true", "42",
                                         "{", "}", "{\"status\":\"online\"", "{\"status\":\"online\"} x",
                                         "{\"status\":\"online\"}{}", "{\"status\":\"online\",}", "{status:\"online\"}",
                                         "{'status':'online'}", "\xef\xbb\xbf{\"status\":\"online\"} junk"};
    for (size_t i = 0; i < ARRAY_LEN(notobj); i++)
        s_set_bad(notobj[i], E_JSON);
    ck_assert_int_eq(gw_parse_set_body(NULL, 0, 60, &r, &err), -1);
    ck_assert_str_eq(err, E_JSON);
    /* a NUL inside the body */
    ck_assert_int_eq(gw_parse_set_body("{\"status\":\"online\"}\0", 20, 60, &r, &err), -1);
    /* duplicate keys are invalid JSON (which one would win?) */
    s_set_bad("{\"status\":\"online\",\"status\":\"away\"}", E_JSON);
    s_set_bad("{\"status\":\"online\",\"ttl\":5,\"ttl\":6}", E_JSON);
    /* deep nesting: moderate is fine (ignored field), hostile is refused without crashing */
    char *deep = malloc(300000);
    for (int depth = 0; depth < 2; depth++) {
        int n = depth ? 100000 : 50;
        size_t o = (size_t)sprintf(deep, "{\"status\":\"online\",\"x\":");
        memset(deep + o, '[', (size_t)n);
        o += (size_t)n;
        memset(deep + o, ']', (size_t)n);
        o += (size_t)n;
        strcpy(deep + o, "}");
        int rc = gw_parse_set_body(deep, strlen(deep), 60, &r, &err);
        if (depth == 0) {
            ck_assert_int_eq(rc, 0);
        } else {
            ck_assert_int_eq(rc, -1);
            ck_assert_str_eq(err, E_JSON);
        }
    }
    free(deep);
}
END_TEST

/* Ill-formed UTF-8 anywhere makes the body invalid, also where no field we read looks (an unknown
 * key or value): the re-read that names the wrong field must not let the rest through. */
START_TEST(test_parse_ill_formed_elsewhere)
{
    proto_record_t r;
    const char *err = NULL;
    static const char *const bodies[] = {"{\"\xff\":1,\"status\":\"online\"}",
                                         "{\"status\":\"online\",\"x\":\"\xc3\x28\"}",
                                         "{\"status\":\"online\",\"x\":[\"\xed\xa0\x80\"]}"};
    for (size_t i = 0; i < ARRAY_LEN(bodies); i++) {
        err = NULL;
        ck_assert_int_eq(gw_parse_set_body(bodies[i], strlen(bodies[i]), 60, &r, &err), -1);
        ck_assert_str_eq(err, E_JSON);
    }
    uint32_t ttl;
    static const char hb[] = "{\"ttl\":60,\"\xff\":0}";
    ck_assert_int_eq(gw_parse_heartbeat_body(hb, strlen(hb), &ttl, &err), -1);
    ck_assert_str_eq(err, E_JSON);
    proto_str_t ids[4];
    char store[512], eb[128];
    proto_record_t recs[4];
    uint32_t n;
    static const char rd[] = "{\"user_ids\":[\"a\"],\"\xfe\":1}";
    ck_assert_int_eq(gw_parse_batch_body(rd, strlen(rd), 4, 60, ids, store, recs, &n, eb, sizeof eb), -1);
    ck_assert_str_eq(eb, E_JSON);
    static const char wr[] = "{\"presences\":[{\"user_id\":\"a\",\"status\":\"away\",\"\xc0\xaf\":1}]}";
    ck_assert_int_eq(gw_parse_batch_body(wr, strlen(wr), 4, 60, ids, store, recs, &n, eb, sizeof eb), -1);
    ck_assert_str_eq(eb, E_JSON);
    /* The field's own error still wins when the bad bytes are in a field we read. */
    static const char msg[] = "{\"status\":\"online\",\"message\":\"\xff\"}";
    ck_assert_int_eq(gw_parse_set_body(msg, strlen(msg), 60, &r, &err), -1);
    ck_assert_str_eq(err, E_MSG_TEXT);
}
END_TEST

START_TEST(test_parse_heartbeat_body)
{
    uint32_t ttl = 99;
    const char *err = NULL;
    ck_assert_int_eq(gw_parse_heartbeat_body("", 0, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 0);
    ck_assert_int_eq(gw_parse_heartbeat_body(NULL, 0, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 0);
    ttl = 99;
    ck_assert_int_eq(gw_parse_heartbeat_body(" \r\n\t", 4, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 0);
    ck_assert_int_eq(gw_parse_heartbeat_body("{}", 2, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 0);
    ck_assert_int_eq(gw_parse_heartbeat_body("{\"ttl\":120}", 11, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 120);
    ck_assert_int_eq(gw_parse_heartbeat_body(" {\"ttl\":604800} ", 16, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 604800);
    ck_assert_int_eq(gw_parse_heartbeat_body("{\"status\":\"whatever\"}", 21, &ttl, &err), 0);
    ck_assert_uint_eq(ttl, 0);
    static const struct {
        const char *body, *err;
    } bad[] = {
        {"{\"ttl\":0}", E_TTL},      {"{\"ttl\":-5}", E_TTL},       {"{\"ttl\":604801}", E_TTL},
        {"{\"ttl\":\"60\"}", E_TTL}, {"{\"ttl\":1.5}", E_TTL},      {"[]", E_JSON},
        {"null", E_JSON},           {"{\"ttl\":5} x", E_JSON},     {"{\"ttl\":5,\"ttl\":6}", E_JSON},
        {"{", E_JSON},              {"60", E_JSON},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err = NULL;
        ck_assert_msg(gw_parse_heartbeat_body(bad[i].body, strlen(bad[i].body), &ttl, &err) == -1, "accepted %s",
                      bad[i].body);
        ck_assert_ptr_nonnull(err);
        ck_assert_str_eq(err, bad[i].err);
    }
}
END_TEST

/* ---- batch bodies -------------------------------------------------------------------------------- */

typedef struct {
    proto_str_t ids[8];
    char idstore[4096];
    proto_record_t recs[8];
    uint32_t n;
    char err[256];
} batch_t;

static int s_batch(batch_t *b, const char *body, uint32_t max)
{
    memset(b, 0, sizeof *b);
    ck_assert_uint_le(max, 8);
    ck_assert_uint_lt(strlen(body), sizeof b->idstore);
    return gw_parse_batch_body(body, strlen(body), max, 3600, b->ids, b->idstore, b->recs, &b->n, b->err, sizeof b->err);
}

static bool s_has_id(const batch_t *b, const char *id)
{
    for (uint32_t i = 0; i < b->n; i++)
        if (b->ids[i].len == strlen(id) && memcmp(b->ids[i].p, id, b->ids[i].len) == 0)
            return true;
    return false;
}

START_TEST(test_parse_batch_body)
{
    batch_t *b = malloc(sizeof *b);
    /* a read: duplicates collapse, empty items are skipped, order kept */
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"alice\",\"bob\",\"alice\",\"\",\"carol@x.org\",\"bob\"]}", 5), GW_BATCH_READ);
    ck_assert_uint_eq(b->n, 3);
    ck_assert_uint_eq(b->ids[0].len, 5);
    ck_assert_mem_eq(b->ids[0].p, "alice", 5);
    ck_assert_mem_eq(b->ids[1].p, "bob", 3);
    ck_assert_mem_eq(b->ids[2].p, "carol@x.org", 11);
    /* max counts distinct ids: 6 entries, 5 distinct */
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"a\"]}", 5), GW_BATCH_READ);
    ck_assert_uint_eq(b->n, 5);
    ck_assert(s_has_id(b, "e"));
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "too many"));
    /* empty and missing lists */
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[]}", 5), -1);
    ck_assert_str_eq(b->err, "user_ids is required: " E_SHAPE);
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"\",\"\"]}", 5), -1);
    ck_assert_str_eq(b->err, "user_ids is required: " E_SHAPE);
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":null}", 5), -1);
    ck_assert_str_eq(b->err, "user_ids is required: " E_SHAPE);
    ck_assert_int_eq(s_batch(b, "{}", 5), -1);
    ck_assert_str_eq(b->err, "user_ids is required: " E_SHAPE);
    ck_assert_int_eq(s_batch(b, "{\"other\":1}", 5), -1);
    /* invalid ids are named */
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"ok\",\"bad id\"]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid user_id"));
    ck_assert_ptr_nonnull(strstr(b->err, "bad id"));
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"ok\",\"a/b\"]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "a/b"));
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"ok\",5]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid user_id"));
    char body[1024], longid[200];
    memset(longid, 'x', 129);
    longid[129] = '\0';
    snprintf(body, sizeof body, "{\"user_ids\":[\"%s\"]}", longid);
    ck_assert_int_eq(s_batch(b, body, 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid user_id"));
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":\"alice\"}", 5), -1);
    ck_assert_int_eq(s_batch(b, "[\"alice\"]", 5), -1);
    ck_assert_str_eq(b->err, E_JSON);
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"a\"],\"user_ids\":[\"b\"]}", 5), -1);
    ck_assert_str_eq(b->err, E_JSON);

    /* a write */
    ck_assert_int_eq(s_batch(b,
                             "{\"presences\":[{\"user_id\":\"alice\",\"status\":\"online\"},"
                             "{\"user_id\":\"bob\",\"status\":\"away\",\"message\":\"lunch\",\"ttl\":60}]}",
                             5),
                     GW_BATCH_WRITE);
    ck_assert_uint_eq(b->n, 2);
    ck_assert_str_eq(b->recs[0].user_id, "alice");
    ck_assert_uint_eq(b->recs[0].uid_len, 5);
    ck_assert_uint_eq(b->recs[0].status, PRESENCE_ONLINE);
    ck_assert_uint_eq(b->recs[0].msg_len, 0);
    ck_assert_uint_eq(b->recs[0].ttl_s, 3600);
    ck_assert_str_eq(b->recs[1].user_id, "bob");
    ck_assert_uint_eq(b->recs[1].status, PRESENCE_AWAY);
    ck_assert_str_eq(b->recs[1].message, "lunch");
    ck_assert_uint_eq(b->recs[1].ttl_s, 60);
    /* both kinds at once, or an empty write */
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"a\"],\"presences\":[{\"user_id\":\"a\",\"status\":\"online\"}]}", 5), -1);
    ck_assert(b->err[0] != '\0');
    ck_assert_int_eq(s_batch(b, "{\"presences\":[]}", 5), -1);
    ck_assert(b->err[0] != '\0');
    ck_assert_int_eq(s_batch(b, "{\"presences\":{}}", 5), -1);
    /* all-or-nothing validation: any bad entry fails the whole body, naming the entry */
    ck_assert_int_eq(s_batch(b,
                             "{\"presences\":[{\"user_id\":\"alice\",\"status\":\"online\"},"
                             "{\"user_id\":\"bob\",\"status\":\"Online\"}]}",
                             5),
                     -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid status"));
    ck_assert_ptr_nonnull(strstr(b->err, "bob"));
    ck_assert_int_eq(s_batch(b, "{\"presences\":[{\"user_id\":\"bad id\",\"status\":\"online\"}]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid user_id"));
    ck_assert_ptr_nonnull(strstr(b->err, "bad id"));
    ck_assert_int_eq(s_batch(b, "{\"presences\":[{\"status\":\"online\"}]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid user_id"));
    ck_assert_int_eq(s_batch(b, "{\"presences\":[\"alice\"]}", 5), -1);
    ck_assert_int_eq(s_batch(b, "{\"presences\":[{\"user_id\":\"a\",\"status\":\"online\",\"ttl\":0}]}", 5), -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid ttl"));
    ck_assert_int_eq(s_batch(b, "{\"presences\":[{\"user_id\":\"a\",\"status\":\"online\",\"message\":\"\\u0007\"}]}", 5),
                     -1);
    ck_assert_ptr_nonnull(strstr(b->err, "invalid message"));
    /* more entries than max */
    size_t o = (size_t)snprintf(body, sizeof body, "{\"presences\":[");
    for (int i = 0; i < 6; i++)
        o += (size_t)snprintf(body + o, sizeof body - o, "%s{\"user_id\":\"u%d\",\"status\":\"busy\"}", i ? "," : "", i);
    snprintf(body + o, sizeof body - o, "]}");
    ck_assert_int_eq(s_batch(b, body, 5), -1);
    ck_assert(b->err[0] != '\0');
    ck_assert_int_eq(s_batch(b, body, 6), GW_BATCH_WRITE);
    ck_assert_uint_eq(b->n, 6);
    ck_assert_str_eq(b->recs[5].user_id, "u5");
    /* not JSON */
    ck_assert_int_eq(s_batch(b, "", 5), -1);
    ck_assert_str_eq(b->err, E_JSON);
    ck_assert_int_eq(s_batch(b, "{\"user_ids\":[\"a\"]} trailing", 5), -1);
    ck_assert_str_eq(b->err, E_JSON);
    free(b);
}
END_TEST

/* ---- query strings ------------------------------------------------------------------------------- */

typedef struct {
    proto_str_t ids[16];
    char idstore[1024];
    char err[256];
    int n;
} users_t;

static int s_users(users_t *u, const char *q, uint32_t max)
{
    memset(u, 0, sizeof *u);
    ck_assert_uint_le(max, 16);
    ck_assert_uint_lt(strlen(q), sizeof u->idstore);
    u->n = gw_parse_users(q, strlen(q), max, u->ids, u->idstore, u->err, sizeof u->err);
    return u->n;
}

static void s_users_eq(const users_t *u, const char *const *want, int n)
{
    ck_assert_int_eq(u->n, n);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(u->ids[i].len == strlen(want[i]) && memcmp(u->ids[i].p, want[i], u->ids[i].len) == 0,
                      "id %d: '%.*s', want '%s'", i, (int)u->ids[i].len, u->ids[i].p, want[i]);
    }
}

START_TEST(test_parse_users)
{
    users_t *u = malloc(sizeof *u);
    static const char *const abc[] = {"a", "b", "c"};
    s_users(u, "users=a,b,c", 10);
    s_users_eq(u, abc, 3);
    s_users(u, "users=a%2Cb%2cc", 10); /* an encoded comma separates too */
    s_users_eq(u, abc, 3);
    s_users(u, "users=a,%20b%20,+c+", 10); /* spaces (and '+' = space) are trimmed */
    s_users_eq(u, abc, 3);
    s_users(u, "users=,a,,b,,c,", 10); /* empty items skipped */
    s_users_eq(u, abc, 3);
    s_users(u, "users=a,b,a,c,b,c", 10); /* duplicates collapse */
    s_users_eq(u, abc, 3);
    s_users(u, "x=1&users=a,b,c&y=2", 10);
    s_users_eq(u, abc, 3);
    static const char *const mail[] = {"alice@example.com", "+plus", "a.b~c:d=e-f_g"};
    s_users(u, "users=alice%40example.com,%2Bplus,a.b~c:d=e-f_g", 10);
    s_users_eq(u, mail, 3);
    /* at most max distinct ids */
    ck_assert_int_eq(s_users(u, "users=a,b,c,d,e", 5), 5);
    ck_assert_int_eq(s_users(u, "users=a,b,c,d,e,a,b", 5), 5);
    ck_assert_int_eq(s_users(u, "users=a,b,c,d,e,f", 5), -1);
    ck_assert_ptr_nonnull(strstr(u->err, "too many user ids"));
    /* invalid ids are named */
    ck_assert_int_eq(s_users(u, "users=a,bad%2Fid", 10), -1);
    ck_assert_str_eq(u->err, "invalid user_id: bad/id (" E_UID_RULE ")");
    ck_assert_int_eq(s_users(u, "users=a,b+c", 10), -1); /* '+' is a space: "b c" */
    ck_assert_str_eq(u->err, "invalid user_id: b c (" E_UID_RULE ")");
    ck_assert_int_eq(s_users(u, "users=a,%zz", 10), -1);
    ck_assert_ptr_nonnull(strstr(u->err, "invalid user_id"));
    ck_assert_int_eq(s_users(u, "users=a%2", 10), -1);
    ck_assert_ptr_nonnull(strstr(u->err, "invalid user_id"));
    char q[400], id[200];
    memset(id, 'x', 129);
    id[129] = '\0';
    snprintf(q, sizeof q, "users=a,%s", id);
    ck_assert_int_eq(s_users(u, q, 10), -1);
    ck_assert_ptr_nonnull(strstr(u->err, "invalid user_id"));
    id[128] = '\0';
    snprintf(q, sizeof q, "users=a,%s", id);
    ck_assert_int_eq(s_users(u, q, 10), 2);
    /* missing or empty */
    static const char *const missing[] = {"", "users=", "users", "users=,,,", "users=+,%20", "user=a", "xusers=a",
                                          "foo=1&bar=2"};
    for (size_t i = 0; i < ARRAY_LEN(missing); i++) {
        ck_assert_msg(s_users(u, missing[i], 10) == -1, "'%s' accepted", missing[i]);
        ck_assert_str_eq(u->err, "users parameter is required");
    }
    free(u);
}
END_TEST

START_TEST(test_query_param)
{
    const char *v = NULL;
    size_t n = 99;
    const char *q = "a=1&users=x,y&b=&c&users=second&ab=9";
    size_t ql = strlen(q);
    ck_assert(gw_query_param(q, ql, "a", &v, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_mem_eq(v, "1", 1);
    ck_assert(gw_query_param(q, ql, "users", &v, &n)); /* the first occurrence */
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(v, "x,y", 3);
    ck_assert(gw_query_param(q, ql, "b", &v, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert(gw_query_param(q, ql, "c", &v, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert(gw_query_param(q, ql, "ab", &v, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert_mem_eq(v, "9", 1);
    ck_assert(!gw_query_param(q, ql, "user", &v, &n)); /* no prefix matches */
    ck_assert(!gw_query_param(q, ql, "sers", &v, &n));
    ck_assert(!gw_query_param(q, ql, "d", &v, &n));
    ck_assert(!gw_query_param("", 0, "a", &v, &n));
    /* the length bounds the scan */
    ck_assert(!gw_query_param("a=1&zz=2", 3, "zz", &v, &n));
    ck_assert(gw_query_param("zz=2&a=1", 4, "zz", &v, &n));
    ck_assert_uint_eq(n, 1);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * JWT
 * ------------------------------------------------------------------------------------------------- */

static const unsigned char SECRET[] = "0123456789abcdef0123456789abcdef-test-secret";
#define SECRET_LEN (sizeof SECRET - 1)

static gw_auth_t s_auth(void)
{
    gw_auth_t a;
    memset(&a, 0, sizeof a);
    a.secret = (unsigned char *)SECRET;
    a.secret_len = SECRET_LEN;
    snprintf(a.issuer, sizeof a.issuer, "presence-service");
    a.alg = JWT_ALG_HS256;
    a.leeway_s = 60;
    return a;
}

/* Verify "Bearer <tok>". */
static int s_verify(const gw_auth_t *a, const char *tok, gw_claims_t *c, const char **err)
{
    char hdr[20000];
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    *err = NULL;
    return gw_auth_verify(a, hdr, strlen(hdr), NOW_S, c, err);
}

static void s_reject(const gw_auth_t *a, const char *tok, const char *why)
{
    gw_claims_t c;
    const char *err;
    ck_assert_msg(s_verify(a, tok, &c, &err) == -1, "%s: accepted", why);
    ck_assert_msg(err != NULL && *err, "%s: no reason", why);
}

/* A token with arbitrary claims (a JSON object), made with libjwt directly. Free with free(). */
static char *s_jwt(jwt_alg_t alg, const unsigned char *key, size_t klen, const char *json_grants)
{
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    if (json_grants)
        ck_assert_int_eq(jwt_add_grants_json(j, json_grants), 0);
    ck_assert_int_eq(jwt_set_alg(j, alg, key, (int)klen), 0);
    char *t = jwt_encode_str(j);
    ck_assert_ptr_nonnull(t);
    jwt_free(j);
    return t;
}

static void s_b64url(const char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tab[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
}

START_TEST(test_jwt_valid)
{
    gw_auth_t a = s_auth();
    char *tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 3600);
    ck_assert_ptr_nonnull(tok);
    gw_claims_t c;
    const char *err;
    ck_assert_msg(s_verify(&a, tok, &c, &err) == 0, "rejected: %s", err);
    ck_assert_str_eq(c.sub, "alice");
    ck_assert_uint_eq(c.sub_len, 5);
    ck_assert(!c.admin);
    ck_assert_int_eq(c.exp, NOW_S + 3600);
    /* spaces around the token are tolerated; the header length bounds it */
    char hdr[4096];
    snprintf(hdr, sizeof hdr, "Bearer   %s  GARBAGE", tok);
    size_t len = strlen(hdr) - strlen("GARBAGE");
    ck_assert_int_eq(gw_auth_verify(&a, hdr, len, NOW_S, &c, &err), 0);
    ck_assert_str_eq(c.sub, "alice");
    /* an email sub */
    free(tok);
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice@example.com", "", NOW_S, NOW_S + 60);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), 0);
    ck_assert_str_eq(c.sub, "alice@example.com");
    free(tok);
    /* a configured HS512 accepts HS512 tokens */
    a.alg = JWT_ALG_HS512;
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS512, "presence-service", "bob", NULL, NOW_S, NOW_S + 60);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), 0);
    free(tok);
    /* signing needs a secret */
    ck_assert_ptr_null(gw_auth_sign(SECRET, 0, JWT_ALG_HS256, "i", "s", NULL, NOW_S, NOW_S + 60));
    ck_assert_ptr_null(gw_auth_sign(NULL, 10, JWT_ALG_HS256, "i", "s", NULL, NOW_S, NOW_S + 60));
}
END_TEST

START_TEST(test_jwt_header_forms)
{
    gw_auth_t a = s_auth();
    gw_claims_t c;
    const char *err;
    ck_assert_int_eq(gw_auth_verify(&a, NULL, 0, NOW_S, &c, &err), -1);
    ck_assert_str_eq(err, "missing authorization header");
    ck_assert_int_eq(gw_auth_verify(&a, "", 0, NOW_S, &c, &err), -1);
    ck_assert_str_eq(err, "missing authorization header");
    static const char *const bad[] = {"Basic dXNlcjpwYXNz", "Basic x", "Bearer", "Bearer ", "Bearer     ", "Token abc",
                                      "Bearerabc.def.ghi", "abc.def.ghi", "Bearer abc", "Bearer abc.def.ghi",
                                      "Bearer a.b", "Bearer ...", "Bearer !!!.###.$$$", "Bearer abc def",
                                      "Bearer eyJhbGciOiJIUzI1NiJ9", "Bearer \x01\x02"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err = NULL;
        ck_assert_msg(gw_auth_verify(&a, bad[i], strlen(bad[i]), NOW_S, &c, &err) == -1, "'%s' accepted", bad[i]);
        ck_assert_ptr_nonnull(err);
        ck_assert(*err);
    }
    /* a valid token after another scheme */
    char *tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    char hdr[2048];
    snprintf(hdr, sizeof hdr, "Basic %s", tok);
    ck_assert_int_eq(gw_auth_verify(&a, hdr, strlen(hdr), NOW_S, &c, &err), -1);
    /* claims are cleared on failure */
    ck_assert_uint_eq(c.sub_len, 0);
    ck_assert(!c.admin);
    /* an over-long token (well past any real one) */
    size_t big = 20000;
    char *huge = malloc(big + 8);
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'a', big);
    huge[7 + big] = '\0';
    for (size_t k = 100; k < big; k += 4000)
        huge[7 + k] = '.';
    ck_assert_int_eq(gw_auth_verify(&a, huge, strlen(huge), NOW_S, &c, &err), -1);
    free(huge);
    /* a validly signed token that is too long (a 10 KB claim) */
    char *grants = malloc(12000);
    int o = snprintf(grants, 12000, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld,\"pad\":\"", NOW_S + 60);
    memset(grants + o, 'p', 10000);
    strcpy(grants + o + 10000, "\"}");
    char *long_tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, grants);
    ck_assert_uint_gt(strlen(long_tok), 10000);
    s_reject(&a, long_tok, "over-long signed token");
    free(long_tok);
    free(grants);
    free(tok);
}
END_TEST

START_TEST(test_jwt_signature)
{
    gw_auth_t a = s_auth();
    static const unsigned char other[] = "another-secret-of-at-least-32-bytes!!";
    char *tok = gw_auth_sign(other, sizeof other - 1, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "wrong secret");
    free(tok);
    /* a secret that differs only in the last byte */
    unsigned char near[sizeof SECRET];
    memcpy(near, SECRET, sizeof SECRET);
    near[SECRET_LEN - 1] ^= 1;
    tok = gw_auth_sign(near, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "near secret");
    free(tok);

    /* tampering: a new payload with the old signature, a flipped signature char, no signature */
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    ck_assert_ptr_nonnull(d2);
    char payload[512], p64[800], forged[2048];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"presence-service\",\"sub\":\"mallory\",\"scope\":\"presence:admin\",\"iat\":%lld,\"exp\":%lld}",
             NOW_S, NOW_S + 60);
    s_b64url(payload, strlen(payload), p64);
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - tok), tok, p64, d2);
    s_reject(&a, forged, "tampered payload");
    snprintf(forged, sizeof forged, "%s", tok);
    size_t last = strlen(forged) - 1;
    forged[last] = forged[last] == 'A' ? 'B' : 'A';
    s_reject(&a, forged, "flipped signature");
    snprintf(forged, sizeof forged, "%.*s", (int)(d2 - tok + 1), tok);
    s_reject(&a, forged, "no signature");
    snprintf(forged, sizeof forged, "%.*s", (int)(d2 - tok), tok);
    s_reject(&a, forged, "two parts");

    /* alg none, built by hand, with and without the trailing dot */
    char h64[128], none[2048];
    const char *hnone = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    s_b64url(hnone, strlen(hnone), h64);
    snprintf(payload, sizeof payload, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld}", NOW_S + 60);
    s_b64url(payload, strlen(payload), p64);
    snprintf(none, sizeof none, "%s.%s.", h64, p64);
    s_reject(&a, none, "alg none");
    snprintf(none, sizeof none, "%s.%s", h64, p64);
    s_reject(&a, none, "alg none, no dot");
    snprintf(none, sizeof none, "%s.%s.%s", h64, p64, d2 + 1);
    s_reject(&a, none, "alg none with a signature");
    const char *hnone2 = "{\"alg\":\"None\"}";
    s_b64url(hnone2, strlen(hnone2), h64);
    snprintf(none, sizeof none, "%s.%s.", h64, p64);
    s_reject(&a, none, "alg None");
    free(tok);

    /* algorithm substitution: HS512/HS384 signed with the same secret, HS256 configured */
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS512, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "HS512 token");
    free(tok);
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS384, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "HS384 token");
    free(tok);
    /* and the reverse */
    a.alg = JWT_ALG_HS512;
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "HS256 token, HS512 configured");
    /* an empty configured secret never verifies anything (libjwt would skip the check) */
    a = s_auth();
    a.secret_len = 0;
    s_reject(&a, tok, "empty secret");
    a.secret = NULL;
    s_reject(&a, tok, "NULL secret");
    free(tok);
}
END_TEST

/* A token whose header is `hdr` (JSON), signed with HMAC-SHA256 by hand. */
static void s_hand_token(const char *hdr, const char *payload, char *out, size_t outlen)
{
    char h64[512], p64[1024], sig64[128];
    s_b64url(hdr, strlen(hdr), h64);
    s_b64url(payload, strlen(payload), p64);
    char input[1600];
    int n = snprintf(input, sizeof input, "%s.%s", h64, p64);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)SECRET_LEN, (const unsigned char *)input, (size_t)n, mac, &maclen);
    s_b64url((const char *)mac, maclen, sig64);
    snprintf(out, outlen, "%s.%s", input, sig64);
}

/* The header's alg is compared exactly (RFC 7515: case-sensitive), and `crit` is refused: we
 * understand no extension a token could declare critical (RFC 7515 4.1.11). */
START_TEST(test_jwt_header_strict)
{
    gw_auth_t a = s_auth();
    char payload[256], tok[2048];
    snprintf(payload, sizeof payload, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld}", NOW_S + 60);
    gw_claims_t c;
    const char *err;
    s_hand_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), 0); /* the hand-made token itself is fine */
    s_hand_token("{\"alg\":\"hs256\",\"typ\":\"JWT\"}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_str_eq(err, "invalid token algorithm");
    s_hand_token("{\"alg\":\"Hs256\"}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_str_eq(err, "invalid token algorithm");
    s_hand_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_str_eq(err, "invalid token: crit names an extension this service does not understand");
    s_hand_token("{\"alg\":\"HS256\",\"crit\":[\"x-unknown\"],\"x-unknown\":1}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    s_hand_token("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", payload, tok, sizeof tok); /* duplicate key */
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    /* scope must be a string */
    snprintf(payload, sizeof payload,
             "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld,\"scope\":[\"presence:admin\"]}", NOW_S + 60);
    s_hand_token("{\"alg\":\"HS256\"}", payload, tok, sizeof tok);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_str_eq(err, "invalid token claims");
}
END_TEST

/* "." and ".." would be unreachable through clients that normalise paths; route words are not ids. */
START_TEST(test_reserved_user_ids)
{
    static const char *const no[] = {".", "..", "batch", "watch", "connect"};
    for (size_t i = 0; i < ARRAY_LEN(no); i++)
        ck_assert_msg(!gw_valid_user_id(no[i], strlen(no[i])), "'%s' accepted", no[i]);
    static const char *const yes[] = {"...", ".a", "a.", "a..b", "batches", "connected", "Watch"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++)
        ck_assert_msg(gw_valid_user_id(yes[i], strlen(yes[i])), "'%s' refused", yes[i]);
}
END_TEST

START_TEST(test_jwt_time_claims)
{
    gw_auth_t a = s_auth();
    gw_claims_t c;
    const char *err;
    char *tok;
    /* exp: beyond the 60 s leeway rejected, within accepted */
    static const struct {
        long long exp;
        int want;
    } exps[] = {{NOW_S - 61, -1}, {NOW_S - 3600, -1}, {NOW_S - 60, 0}, {NOW_S - 30, 0}, {NOW_S, 0}, {NOW_S + 1, 0}};
    for (size_t i = 0; i < ARRAY_LEN(exps); i++) {
        tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S - 7200, exps[i].exp);
        int rc = s_verify(&a, tok, &c, &err);
        ck_assert_msg(rc == exps[i].want, "exp now%+lld: rc %d (%s)", exps[i].exp - NOW_S, rc, err ? err : "");
        free(tok);
    }
    /* a far-future exp is valid (and must not overflow when the leeway is added) */
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", NULL, NOW_S, INT64_MAX);
    ck_assert_msg(s_verify(&a, tok, &c, &err) == 0, "exp INT64_MAX: %s", err);
    free(tok);
    char g[512];
    snprintf(g, sizeof g, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":9.1e18}");
    tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
    ck_assert_msg(s_verify(&a, tok, &c, &err) == 0, "exp 9.1e18: %s", err);
    free(tok);
    /* missing, zero, negative, string, null, bool exp */
    static const char *const badexp[] = {
        "{\"iss\":\"presence-service\",\"sub\":\"alice\"}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":0}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":-5}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":\"9999999999\"}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":null}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":true}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":[9999999999]}",
        "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":1e300}",
    };
    for (size_t i = 0; i < ARRAY_LEN(badexp); i++) {
        tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, badexp[i]);
        s_reject(&a, tok, badexp[i]);
        free(tok);
    }
    /* missing exp built with the libjwt grant API, as a client library would */
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    ck_assert_int_eq(jwt_add_grant(j, "iss", "presence-service"), 0);
    ck_assert_int_eq(jwt_add_grant(j, "sub", "alice"), 0);
    ck_assert_int_eq(jwt_add_grant_int(j, "iat", NOW_S), 0);
    ck_assert_int_eq(jwt_set_alg(j, JWT_ALG_HS256, SECRET, (int)SECRET_LEN), 0);
    tok = jwt_encode_str(j);
    jwt_free(j);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err, "exp")); /* the reason names the claim */
    free(tok);
    /* nbf: in the future beyond the leeway rejected, within accepted, non-numeric rejected */
    static const struct {
        long long nbf;
        int want;
    } nbfs[] = {{NOW_S + 61, -1}, {NOW_S + 3600, -1}, {NOW_S + 60, 0}, {NOW_S + 30, 0}, {NOW_S - 10, 0}};
    for (size_t i = 0; i < ARRAY_LEN(nbfs); i++) {
        snprintf(g, sizeof g, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld,\"nbf\":%lld}", NOW_S + 7200,
                 nbfs[i].nbf);
        tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
        int rc = s_verify(&a, tok, &c, &err);
        ck_assert_msg(rc == nbfs[i].want, "nbf now%+lld: rc %d (%s)", nbfs[i].nbf - NOW_S, rc, err ? err : "");
        free(tok);
    }
    snprintf(g, sizeof g, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld,\"nbf\":\"soon\"}", NOW_S + 60);
    tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
    s_reject(&a, tok, "string nbf");
    free(tok);
}
END_TEST

START_TEST(test_jwt_claims)
{
    gw_auth_t a = s_auth();
    gw_claims_t c;
    const char *err;
    char g[1024], *tok;
    /* iss */
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "someone-else", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "wrong iss");
    free(tok);
    tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service-x", "alice", NULL, NOW_S, NOW_S + 60);
    s_reject(&a, tok, "iss with a suffix");
    free(tok);
    static const char *const badclaims[] = {
        "{\"sub\":\"alice\",\"exp\":%lld}",                                      /* no iss */
        "{\"iss\":5,\"sub\":\"alice\",\"exp\":%lld}",                            /* non-string iss */
        "{\"iss\":\"presence-service\",\"exp\":%lld}",                           /* no sub */
        "{\"iss\":\"presence-service\",\"sub\":\"\",\"exp\":%lld}",              /* empty sub */
        "{\"iss\":\"presence-service\",\"sub\":5,\"exp\":%lld}",                 /* non-string sub */
        "{\"iss\":\"presence-service\",\"sub\":null,\"exp\":%lld}",
        "{\"iss\":\"presence-service\",\"sub\":[\"alice\"],\"exp\":%lld}",
        "{\"iss\":\"presence-service\",\"sub\":{\"id\":\"alice\"},\"exp\":%lld}",
    };
    for (size_t i = 0; i < ARRAY_LEN(badclaims); i++) {
        snprintf(g, sizeof g, badclaims[i], NOW_S + 60);
        tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
        s_reject(&a, tok, g);
        free(tok);
    }
    /* sub built with jwt_add_grant_int: a number, not a string */
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    jwt_add_grant(j, "iss", "presence-service");
    jwt_add_grant_int(j, "sub", 12345);
    jwt_add_grant_int(j, "exp", NOW_S + 60);
    jwt_set_alg(j, JWT_ALG_HS256, SECRET, (int)SECRET_LEN);
    tok = jwt_encode_str(j);
    jwt_free(j);
    s_reject(&a, tok, "integer sub");
    free(tok);

    /* scope: presence:admin among others sets admin; look-alikes do not */
    static const struct {
        const char *scope;
        bool admin;
    } scopes[] = {
        {"presence:admin", true},
        {"read write presence:admin", true},
        {"presence:admin presence:read", true},
        {"  presence:admin  ", true},
        {"presence:administrator", false},
        {"xpresence:admin", false},
        {"presence:admi", false},
        {"presence:Admin", false},
        {"presence:read presence:write", false},
        {"presence:admin,presence:read", false}, /* space-separated, not commas */
    };
    for (size_t i = 0; i < ARRAY_LEN(scopes); i++) {
        tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", scopes[i].scope, NOW_S,
                           NOW_S + 60);
        ck_assert_int_eq(s_verify(&a, tok, &c, &err), 0);
        ck_assert_msg(c.admin == scopes[i].admin, "scope '%s': admin %d", scopes[i].scope, c.admin);
        free(tok);
    }
    /* a non-string scope is a malformed token (scope is a space-separated string, RFC 8693) */
    snprintf(g, sizeof g, "{\"iss\":\"presence-service\",\"sub\":\"alice\",\"exp\":%lld,\"scope\":[\"presence:admin\"]}",
             NOW_S + 60);
    tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), -1);
    ck_assert_str_eq(err, "invalid token claims");
    free(tok);
    /* no issuer configured: iss is not required */
    a.issuer[0] = '\0';
    snprintf(g, sizeof g, "{\"sub\":\"alice\",\"exp\":%lld}", NOW_S + 60);
    tok = s_jwt(JWT_ALG_HS256, SECRET, SECRET_LEN, g);
    ck_assert_int_eq(s_verify(&a, tok, &c, &err), 0);
    free(tok);
}
END_TEST

START_TEST(test_jwt_cache)
{
    gw_auth_t a = s_auth();
    gw_authcache_t *c = gw_authcache_new(16);
    char *tok = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", "alice", "", NOW_S, NOW_S + 100);
    ck_assert_ptr_nonnull(tok);
    char hdr[4096];
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    gw_claims_t cl;
    const char *err = NULL;
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S, &cl, &err), 0);
    ck_assert_str_eq(cl.sub, "alice");
    ck_assert_uint_eq(gw_authcache_hits(c), 0);
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S + 1, &cl, &err), 0);
    ck_assert_uint_eq(gw_authcache_hits(c), 1);
    ck_assert_str_eq(cl.sub, "alice");
    /* a token that differs in one byte of its signature is verified, not served from the cache */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s", hdr);
    size_t bl = strlen(bad);
    bad[bl - 2] = bad[bl - 2] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, bad, bl, NOW_S, &cl, &err), -1);
    ck_assert_uint_eq(gw_authcache_hits(c), 1);
    /* the genuine one is still cached and still honoured ... */
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S + 2, &cl, &err), 0);
    /* ... until it expires: exp 100 s ahead + 60 s leeway */
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S + 160, &cl, &err), 0);
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S + 161, &cl, &err), -1);
    ck_assert_str_eq(err, "token expired");
    /* and an expired entry is not resurrected by a later verification either */
    ck_assert_int_eq(gw_auth_verify_cached(c, &a, hdr, strlen(hdr), NOW_S + 161, &cl, &err), -1);
    /* many tokens: slots are reused, answers stay right */
    for (int i = 0; i < 200; i++) {
        char sub[16];
        snprintf(sub, sizeof sub, "u%d", i);
        char *t = gw_auth_sign(SECRET, SECRET_LEN, JWT_ALG_HS256, "presence-service", sub, "", NOW_S, NOW_S + 100);
        char h2[4096];
        snprintf(h2, sizeof h2, "Bearer %s", t);
        for (int k = 0; k < 2; k++) {
            ck_assert_int_eq(gw_auth_verify_cached(c, &a, h2, strlen(h2), NOW_S, &cl, &err), 0);
            ck_assert_str_eq(cl.sub, sub);
        }
        free(t);
    }
    free(tok);
    gw_authcache_free(c);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * CORS
 * ------------------------------------------------------------------------------------------------- */

static void s_cors_clear(void)
{
    static const char *const vars[] = {"CORS_ENABLED", "CORS_ALLOWED_ORIGINS", "CORS_ALLOWED_METHODS",
                                       "CORS_ALLOWED_HEADERS", "CORS_ALLOW_CREDENTIALS", "CORS_MAX_AGE"};
    for (size_t i = 0; i < ARRAY_LEN(vars); i++)
        unsetenv(vars[i]);
}

static int s_cors_verdict(const gw_cors_t *c, const char *origin, const char **echo, size_t *elen)
{
    *echo = NULL;
    *elen = 0;
    return gw_cors_check(c, origin, origin ? strlen(origin) : 0, echo, elen);
}

START_TEST(test_cors_defaults)
{
    s_cors_clear();
    gw_cors_t c;
    char err[256] = "";
    ck_assert_msg(gw_cors_config(&c, err) == 0, "%s", err);
    ck_assert(c.enabled);
    ck_assert(c.wildcard);
    ck_assert(!c.credentials);
    ck_assert_int_eq(c.max_age, 600);
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < ARRAY_LEN(methods); i++)
        ck_assert_msg(strstr(c.methods, methods[i]) != NULL, "%s missing from '%s'", methods[i], c.methods);
    ck_assert_ptr_nonnull(strstr(c.headers, "Authorization"));
    ck_assert_ptr_nonnull(strstr(c.headers, "Content-Type"));
    const char *echo;
    size_t elen;
    ck_assert_int_eq(s_cors_verdict(&c, "https://anything.example", &echo, &elen), GW_CORS_ALLOW);
    ck_assert_uint_eq(elen, 1);
    ck_assert_mem_eq(echo, "*", 1);
    ck_assert_int_eq(s_cors_verdict(&c, NULL, &echo, &elen), GW_CORS_NONE);
    gw_cors_free(&c);
    gw_cors_free(&c);

    /* empty values count as unset */
    setenv("CORS_ENABLED", "", 1);
    setenv("CORS_ALLOWED_ORIGINS", "", 1);
    setenv("CORS_MAX_AGE", "", 1);
    ck_assert_int_eq(gw_cors_config(&c, err), 0);
    ck_assert(c.enabled && c.wildcard);
    ck_assert_int_eq(c.max_age, 600);
    gw_cors_free(&c);

    /* an explicit "*" is the wildcard; methods and headers lists are normalised */
    setenv("CORS_ALLOWED_ORIGINS", " * ", 1);
    setenv("CORS_ALLOWED_METHODS", "GET, PUT", 1);
    setenv("CORS_ALLOWED_HEADERS", "Authorization ,X-Custom", 1);
    setenv("CORS_MAX_AGE", "3600", 1);
    ck_assert_msg(gw_cors_config(&c, err) == 0, "%s", err);
    ck_assert(c.wildcard);
    ck_assert_str_eq(c.methods, "GET, PUT");
    ck_assert_str_eq(c.headers, "Authorization, X-Custom");
    ck_assert_int_eq(c.max_age, 3600);
    gw_cors_free(&c);

    /* disabled: no verdict at all */
    setenv("CORS_ENABLED", "false", 1);
    ck_assert_int_eq(gw_cors_config(&c, err), 0);
    ck_assert(!c.enabled);
    ck_assert_int_eq(s_cors_verdict(&c, "https://a.example", &echo, &elen), GW_CORS_NONE);
    gw_cors_free(&c);
}
END_TEST

START_TEST(test_cors_list)
{
    s_cors_clear();
    setenv("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example:8443 ,http://localhost:3000", 1);
    gw_cors_t c;
    char err[256] = "";
    ck_assert_msg(gw_cors_config(&c, err) == 0, "%s", err);
    ck_assert(!c.wildcard);
    ck_assert_uint_eq(c.norigins, 3);
    const char *echo;
    size_t elen;
    static const char *const allowed[] = {"https://a.example", "https://b.example:8443", "http://localhost:3000"};
    for (size_t i = 0; i < ARRAY_LEN(allowed); i++) {
        ck_assert_int_eq(s_cors_verdict(&c, allowed[i], &echo, &elen), GW_CORS_ALLOW);
        ck_assert_uint_eq(elen, strlen(allowed[i]));
        ck_assert_mem_eq(echo, allowed[i], elen); /* echoed, not "*" */
    }
    static const char *const forbidden[] = {"https://evil.example", "https://a.example.evil", "https://a.exampl",
                                            "http://a.example", "https://b.example", "https://a.example/",
                                            "null", "", "*"};
    for (size_t i = 0; i < ARRAY_LEN(forbidden); i++)
        ck_assert_msg(s_cors_verdict(&c, forbidden[i], &echo, &elen) == GW_CORS_FORBID, "'%s' not forbidden",
                      forbidden[i]);
    ck_assert_int_eq(s_cors_verdict(&c, NULL, &echo, &elen), GW_CORS_NONE);
    /* the length bounds the origin */
    const char *longer = "https://a.exampleXYZ";
    ck_assert_int_eq(gw_cors_check(&c, longer, strlen("https://a.example"), &echo, &elen), GW_CORS_ALLOW);
    ck_assert_uint_eq(elen, strlen("https://a.example"));
    ck_assert_int_eq(gw_cors_check(&c, longer, strlen(longer), &echo, &elen), GW_CORS_FORBID);
    gw_cors_free(&c);
    ck_assert_uint_eq(c.norigins, 0);

    /* credentials with a list are fine */
    setenv("CORS_ALLOW_CREDENTIALS", "true", 1);
    ck_assert_int_eq(gw_cors_config(&c, err), 0);
    ck_assert(c.credentials);
    ck_assert_int_eq(s_cors_verdict(&c, "https://a.example", &echo, &elen), GW_CORS_ALLOW);
    gw_cors_free(&c);
}
END_TEST

START_TEST(test_cors_long_lists)
{
    /* A long origin list that the variable accepts must be honoured entirely: no origin may be
     * dropped silently (every accepted configuration means what it says). */
    s_cors_clear();
    enum { N = 194 }; /* 4073 bytes; 4266 once normalised to ", " */
    char *list = malloc(8192);
    size_t o = 0;
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(list + o, 8192 - o, "%shttps://o%03d.example", i ? "," : "", i);
    ck_assert_uint_lt(o, 4095); /* within what CORS_ALLOWED_ORIGINS may hold */
    setenv("CORS_ALLOWED_ORIGINS", list, 1);
    gw_cors_t c;
    char err[256] = "";
    int rc = gw_cors_config(&c, err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(c.norigins, N);
    const char *echo;
    size_t elen;
    char origin[64];
    for (int i = 0; i < N; i++) {
        snprintf(origin, sizeof origin, "https://o%03d.example", i);
        ck_assert_msg(s_cors_verdict(&c, origin, &echo, &elen) == GW_CORS_ALLOW, "%s refused", origin);
    }
    gw_cors_free(&c);
    /* a methods or headers list that cannot be kept whole is a configuration error, not a
     * silently shortened list */
    o = 0;
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(list + o, 8192 - o, "%sX-Header-%02d", i ? "," : "", i);
    ck_assert_uint_lt(o, 480);
    s_cors_clear();
    setenv("CORS_ALLOWED_HEADERS", list, 1);
    err[0] = '\0';
    rc = gw_cors_config(&c, err);
    if (rc == 0)
        ck_assert_msg(strstr(c.headers, "X-Header-39") != NULL, "headers cut to '%s'", c.headers);
    else
        ck_assert_ptr_nonnull(strstr(err, "CORS_ALLOWED_HEADERS"));
    gw_cors_free(&c);
    list[239] = '\0'; /* 20 items, 239 bytes: fits the variable (255), 258 once normalised */
    s_cors_clear();
    setenv("CORS_ALLOWED_METHODS", list, 1);
    err[0] = '\0';
    rc = gw_cors_config(&c, err);
    if (rc == 0) {
        char last[64];
        const char *lp = strrchr(list, ',') + 1;
        snprintf(last, sizeof last, "%s", lp);
        ck_assert_msg(strstr(c.methods, last) != NULL, "methods cut to '%s'", c.methods);
    } else {
        ck_assert_ptr_nonnull(strstr(err, "CORS_ALLOWED_METHODS"));
    }
    gw_cors_free(&c);
    free(list);
}
END_TEST

START_TEST(test_cors_errors)
{
    gw_cors_t c;
    char err[256];
    /* "*" with credentials is refused at startup */
    s_cors_clear();
    setenv("CORS_ALLOW_CREDENTIALS", "true", 1);
    err[0] = '\0';
    ck_assert_int_eq(gw_cors_config(&c, err), -1);
    ck_assert_msg(strstr(err, "CORS_ALLOWED_ORIGINS") || strstr(err, "CORS_ALLOW_CREDENTIALS"), "err '%s'", err);
    gw_cors_free(&c);
    setenv("CORS_ALLOWED_ORIGINS", "*", 1);
    ck_assert_int_eq(gw_cors_config(&c, err), -1);
    gw_cors_free(&c);
    /* "*" inside a list */
    s_cors_clear();
    static const char *const lists[] = {"https://a.example,*", "*,https://a.example", "https://a.example, * ,http://b"};
    for (size_t i = 0; i < ARRAY_LEN(lists); i++) {
        setenv("CORS_ALLOWED_ORIGINS", lists[i], 1);
        err[0] = '\0';
        ck_assert_msg(gw_cors_config(&c, err) == -1, "'%s' accepted", lists[i]);
        ck_assert_ptr_nonnull(strstr(err, "CORS_ALLOWED_ORIGINS"));
        gw_cors_free(&c);
    }
    /* invalid values name their variable */
    static const struct {
        const char *var, *val;
    } bad[] = {{"CORS_ENABLED", "maybe"}, {"CORS_ALLOW_CREDENTIALS", "2"}, {"CORS_MAX_AGE", "-5"},
               {"CORS_MAX_AGE", "ten"}, {"CORS_MAX_AGE", "99999999999"}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        s_cors_clear();
        setenv(bad[i].var, bad[i].val, 1);
        err[0] = '\0';
        ck_assert_msg(gw_cors_config(&c, err) == -1, "%s=%s accepted", bad[i].var, bad[i].val);
        ck_assert_msg(strstr(err, bad[i].var) != NULL, "err '%s' does not name %s", err, bad[i].var);
        gw_cors_free(&c);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Rate limiting
 * ------------------------------------------------------------------------------------------------- */

#define SEC_US 1000000ULL

START_TEST(test_ratelimit_burst_refill)
{
    gw_ratelimit_t *rl = gw_ratelimit_new(10, 40, 1024);
    ck_assert_ptr_nonnull(rl);
    uint64_t t = 1000 * SEC_US;
    for (int i = 0; i < 40; i++)
        ck_assert_msg(gw_ratelimit_take(rl, "alice", 5, 1, t) == 0, "request %d refused", i);
    unsigned wait = gw_ratelimit_take(rl, "alice", 5, 1, t);
    ck_assert_uint_ge(wait, 1);
    ck_assert_uint_le(wait, 1); /* one token at 10/s: under a second */
    /* refusals do not consume; other keys are independent */
    ck_assert_uint_ge(gw_ratelimit_take(rl, "alice", 5, 1, t), 1);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "bob", 3, 1, t), 0);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "alicex", 6, 1, t), 0);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "alic", 4, 1, t), 0);
    /* refill: 1 s later 10 tokens */
    t += SEC_US;
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(gw_ratelimit_take(rl, "alice", 5, 1, t), 0);
    ck_assert_uint_ge(gw_ratelimit_take(rl, "alice", 5, 1, t), 1);
    /* the bucket never holds more than the burst */
    t += 1000 * SEC_US;
    for (int i = 0; i < 40; i++)
        ck_assert_uint_eq(gw_ratelimit_take(rl, "alice", 5, 1, t), 0);
    ck_assert_uint_ge(gw_ratelimit_take(rl, "alice", 5, 1, t), 1);
    /* time going backwards gives no tokens */
    ck_assert_uint_ge(gw_ratelimit_take(rl, "alice", 5, 1, t - 500 * SEC_US), 1);
    /* costs above one */
    t += 4 * SEC_US; /* 40 tokens back */
    ck_assert_uint_eq(gw_ratelimit_take(rl, "alice", 5, 30, t), 0);
    wait = gw_ratelimit_take(rl, "alice", 5, 30, t); /* 10 left, 20 missing at 10/s: 2 s */
    ck_assert_uint_eq(wait, 2);
    gw_ratelimit_free(rl);

    /* Retry-After rounds up to whole seconds and is at least 1 */
    rl = gw_ratelimit_new(0.25, 1, 16);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "k", 1, 1, t), 0);
    wait = gw_ratelimit_take(rl, "k", 1, 1, t);
    ck_assert_uint_eq(wait, 4);
    ck_assert_uint_ge(gw_ratelimit_take(rl, "k", 1, 1, t + 3 * SEC_US), 1);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "k", 1, 1, t + 4 * SEC_US), 0);
    gw_ratelimit_free(rl);
    rl = gw_ratelimit_new(1000, 1, 16);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "k", 1, 1, t), 0);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "k", 1, 1, t), 1); /* 1 ms away still says 1 s */
    gw_ratelimit_free(rl);
    gw_ratelimit_free(NULL);
}
END_TEST

START_TEST(test_ratelimit_disabled)
{
    gw_ratelimit_t *rl = gw_ratelimit_new(0, 5, 16);
    for (int i = 0; i < 10000; i++)
        ck_assert_uint_eq(gw_ratelimit_take(rl, "alice", 5, 1, 1000), 0);
    gw_ratelimit_free(rl);
    ck_assert_uint_eq(gw_ratelimit_take(NULL, "alice", 5, 1, 1000), 0);
}
END_TEST

START_TEST(test_ratelimit_many_keys)
{
    /* a small table and 200k distinct keys: every new key starts with a full bucket, and the
     * table recycles idle buckets instead of allocating */
    gw_ratelimit_t *rl = gw_ratelimit_new(1, 3, 64);
    uint64_t t = 5000 * SEC_US;
    char key[32];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
        ck_assert_uint_eq(gw_ratelimit_take(rl, key, (size_t)n, 1, t + (uint64_t)i), 0);
    }
    struct mallinfo2 after = mallinfo2();
    ck_assert_msg(after.uordblks <= before.uordblks, "allocated %zu bytes while taking", after.uordblks - before.uordblks);
    /* the most recently used key keeps its state while the table churns through other keys */
    gw_ratelimit_free(rl);
    rl = gw_ratelimit_new(1e-6, 2, 4); /* a single set of buckets; no refill to speak of */
    ck_assert_uint_eq(gw_ratelimit_take(rl, "hot", 3, 1, 10 * SEC_US), 0);
    ck_assert_uint_eq(gw_ratelimit_take(rl, "hot", 3, 1, 10 * SEC_US), 0);
    ck_assert_uint_ge(gw_ratelimit_take(rl, "hot", 3, 1, 10 * SEC_US), 1);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "cold-%d", i);
        uint64_t now = (11 + 2 * (uint64_t)i) * SEC_US;
        ck_assert_uint_eq(gw_ratelimit_take(rl, key, (size_t)n, 1, now), 0);
        /* "hot" is used again right after every new key: never the idlest bucket */
        ck_assert_msg(gw_ratelimit_take(rl, "hot", 3, 1, now + SEC_US) >= 1, "hot key reset after %d new keys", i + 1);
    }
    gw_ratelimit_free(rl);
}
END_TEST

typedef struct {
    gw_ratelimit_t *rl;
    int id;
    long allowed_shared, allowed_own;
} rl_thread_t;

static void *s_rl_thread(void *arg)
{
    rl_thread_t *t = arg;
    char own[16];
    int n = snprintf(own, sizeof own, "own-%d", t->id);
    for (int i = 0; i < 100000; i++) {
        if (gw_ratelimit_take(t->rl, "shared", 6, 1, 777 * SEC_US) == 0)
            t->allowed_shared++;
        if (gw_ratelimit_take(t->rl, own, (size_t)n, 1, 777 * SEC_US) == 0)
            t->allowed_own++;
    }
    return NULL;
}

START_TEST(test_ratelimit_threads)
{
    /* no refill (a frozen clock): exactly `burst` requests get through in total, whatever the
     * interleaving, for the shared key and for each thread's own key */
    gw_ratelimit_t *rl = gw_ratelimit_new(1, 1000, 1024);
    pthread_t th[4];
    rl_thread_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (rl_thread_t){.rl = rl, .id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, s_rl_thread, &args[i]), 0);
    }
    long shared = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        shared += args[i].allowed_shared;
        ck_assert_int_eq(args[i].allowed_own, 1000);
    }
    ck_assert_int_eq(shared, 1000);
    gw_ratelimit_free(rl);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Rendezvous routing
 * ------------------------------------------------------------------------------------------------- */

static void s_seeds(uint64_t *seeds, int n)
{
    for (int i = 0; i < n; i++) {
        char ep[64];
        int l = snprintf(ep, sizeof ep, "tcp://cache-%d.presence.svc:5555", i);
        seeds[i] = util_hash64(ep, (size_t)l, 0x5eed5);
    }
}

START_TEST(test_rendezvous_basics)
{
    uint64_t seeds[4];
    s_seeds(seeds, 4);
    bool up[4] = {true, true, true, true};
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int l = snprintf(key, sizeof key, "user-%d", i);
        int a = gw_rendezvous(key, (size_t)l, seeds, up, 4);
        ck_assert(a >= 0 && a < 4);
        ck_assert_int_eq(gw_rendezvous(key, (size_t)l, seeds, up, 4), a); /* deterministic */
    }
    /* only up nodes are chosen */
    bool some[4] = {false, true, false, true};
    for (int i = 0; i < 1000; i++) {
        int l = snprintf(key, sizeof key, "user-%d", i);
        int a = gw_rendezvous(key, (size_t)l, seeds, some, 4);
        ck_assert(a == 1 || a == 3);
    }
    bool one[4] = {false, false, true, false};
    ck_assert_int_eq(gw_rendezvous("x", 1, seeds, one, 4), 2);
    bool none[4] = {false, false, false, false};
    ck_assert_int_eq(gw_rendezvous("x", 1, seeds, none, 4), -1);
    ck_assert_int_eq(gw_rendezvous("x", 1, seeds, up, 0), -1);
    /* the choice depends on the node's seed, not its position */
    uint64_t swapped[2] = {seeds[1], seeds[0]};
    for (int i = 0; i < 200; i++) {
        int l = snprintf(key, sizeof key, "user-%d", i);
        int a = gw_rendezvous(key, (size_t)l, seeds, up, 2);
        ck_assert_int_eq(gw_rendezvous(key, (size_t)l, swapped, up, 2), 1 - a);
    }
}
END_TEST

START_TEST(test_rendezvous_balance_disruption)
{
    enum { KEYS = 10000 };
    uint64_t seeds[4];
    s_seeds(seeds, 4);
    char key[32];
    int *owner = malloc(KEYS * sizeof *owner);
    for (int n = 2; n <= 4; n++) {
        bool up[4] = {true, true, true, true};
        int count[4] = {0};
        for (int i = 0; i < KEYS; i++) {
            int l = snprintf(key, sizeof key, "user-%d@example.com", i);
            owner[i] = gw_rendezvous(key, (size_t)l, seeds, up, n);
            ck_assert(owner[i] >= 0 && owner[i] < n);
            count[owner[i]]++;
        }
        double fair = (double)KEYS / n;
        for (int k = 0; k < n; k++)
            ck_assert_msg(count[k] >= fair * 0.9 && count[k] <= fair * 1.1, "%d nodes: node %d owns %d keys (fair %.0f)",
                          n, k, count[k], fair);
        /* remove each node in turn: only its keys move, and they spread over the others */
        for (int gone = 0; gone < n; gone++) {
            bool up2[4] = {true, true, true, true};
            up2[gone] = false;
            int moved_to[4] = {0};
            for (int i = 0; i < KEYS; i++) {
                int l = snprintf(key, sizeof key, "user-%d@example.com", i);
                int b = gw_rendezvous(key, (size_t)l, seeds, up2, n);
                if (owner[i] != gone)
                    ck_assert_msg(b == owner[i], "key %d moved from %d to %d when node %d left", i, owner[i], b, gone);
                else
                    moved_to[b]++;
            }
            ck_assert_int_eq(moved_to[gone], 0);
            for (int k = 0; k < n; k++)
                if (k != gone)
                    ck_assert_msg(moved_to[k] > 0, "node %d's keys all went elsewhere than %d", gone, k);
        }
    }
    free(owner);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Regressions found by fuzzing (tests/fuzz/)
 * ------------------------------------------------------------------------------------------------- */

/* The error body must be JSON even when it quotes what the client sent. */
static void s_assert_json_error(const char *msg, const char *want)
{
    gw_buf_t b;
    gw_buf_init(&b);
    gw_json_error(&b, msg);
    json_error_t e;
    json_t *o = json_loadb(b.p, b.len, 0, &e);
    ck_assert_msg(o != NULL, "not JSON (%s): %.*s", e.text, (int)b.len, b.p);
    ck_assert(json_is_false(json_object_get(o, "success")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "error")), want);
    json_decref(o);
    gw_buf_free(&b);
}


/* ==== sessions: record fields, views, request fields (REALTIME.md) =========================== */

START_TEST(test_json_record_sessions)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t r = s_rec("alice", PRESENCE_BUSY, "in a meeting", LS, UP, 3600, "eu-1", 42);
    /* a 2.0 user (no sessions ever): the 2.0 shape, exactly */
    r.sessions = 0;
    r.source = PRESENCE_SRC_PREFERRED;
    r.preferred_until_us = r.expires_at_us;
    gw_json_record(&b, &r, LS);
    ck_assert_ptr_null(strstr(s_str(&b), "sessions"));
    ck_assert_ptr_null(strstr(s_str(&b), "source"));
    /* a user of sessions: the new fields after version, in this order */
    gw_buf_reset(&b);
    r.rflags = PROTO_REC_F_RT | PROTO_REC_F_PUB_RT;
    r.sessions = 2;
    r.source = PRESENCE_SRC_SESSION;
    r.preferred_until_us = 0;
    r.message_expires_at_us = LS + 60000000ULL;
    gw_json_record(&b, &r, LS);
    ck_assert_str_eq(s_str(&b), "{\"user_id\":\"alice\",\"status\":\"busy\",\"message\":\"in a meeting\","
                                "\"last_seen\":\"2026-01-15T10:30:00.123456Z\","
                                "\"updated_at\":\"2026-01-15T10:13:20.000001Z\","
                                "\"expires_at\":\"2026-01-15T11:30:00.123456Z\","
                                "\"node_id\":\"eu-1\",\"ttl\":3600,\"version\":42,\"sessions\":2,\"source\":\"session\","
                                "\"message_expires_at\":\"2026-01-15T10:31:00.123456Z\"}");
    /* preferred: its end is shown */
    gw_buf_reset(&b);
    r.source = PRESENCE_SRC_PREFERRED;
    r.preferred_until_us = LS + 1000000ULL;
    r.message_expires_at_us = 0;
    gw_json_record(&b, &r, LS);
    ck_assert_ptr_nonnull(strstr(s_str(&b), ",\"source\":\"preferred\",\"preferred_until\":\"2026-01-15T10:30:01.123456Z\"}"));
    gw_buf_free(&b);
}
END_TEST

/* The sessions list: exact shape, order kept, expired sessions left out. */
START_TEST(test_json_sessions)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_session_t ss[3];
    memset(ss, 0, sizeof ss);
    const char *ids[] = {"phone", "old", "desk"};
    for (int i = 0; i < 3; i++) {
        snprintf(ss[i].session_id, sizeof ss[i].session_id, "%s", ids[i]);
        ss[i].sid_len = (uint8_t)strlen(ids[i]);
        snprintf(ss[i].device, sizeof ss[i].device, "d\"%d", i);
        ss[i].device_len = (uint8_t)strlen(ss[i].device);
        snprintf(ss[i].node_id, sizeof ss[i].node_id, "gw-1");
        ss[i].node_len = 4;
        ss[i].status = i == 2 ? PRESENCE_BUSY : PRESENCE_ONLINE;
        ss[i].connected_at_us = UP;
        ss[i].last_seen_us = LS;
        ss[i].expires_at_us = i == 1 ? LS : LS + 1000000ULL; /* "old" expires now */
    }
    gw_json_sessions(&b, "ann", 3, ss, 3, LS);
    ck_assert_str_eq(s_str(&b), "{\"success\":true,\"data\":{\"ann\":["
                                "{\"session_id\":\"phone\",\"device\":\"d\\\"0\",\"status\":\"online\","
                                "\"connected_at\":\"2026-01-15T10:13:20.000001Z\",\"last_seen\":\"2026-01-15T10:30:00.123456Z\","
                                "\"expires_at\":\"2026-01-15T10:30:01.123456Z\",\"node_id\":\"gw-1\"},"
                                "{\"session_id\":\"desk\",\"device\":\"d\\\"2\",\"status\":\"busy\","
                                "\"connected_at\":\"2026-01-15T10:13:20.000001Z\",\"last_seen\":\"2026-01-15T10:30:00.123456Z\","
                                "\"expires_at\":\"2026-01-15T10:30:01.123456Z\",\"node_id\":\"gw-1\"}]}}");
    gw_buf_reset(&b);
    gw_json_sessions(&b, "ann", 3, ss, 0, LS);
    ck_assert_str_eq(s_str(&b), "{\"success\":true,\"data\":{\"ann\":[]}}");
    gw_buf_free(&b);
}
END_TEST

/* Invisible: everyone but the user and admins sees an offline record with no sessions, the old
 * last_seen and version; the user and admins see their own view. */
START_TEST(test_json_record_invisible)
{
    gw_buf_t b;
    gw_buf_init(&b);
    proto_record_t r = s_rec("ivy", PRESENCE_OFFLINE, "", LS, UP, 3600, "n", 50);
    r.rflags = PROTO_REC_F_RT | PROTO_REC_F_PUB_RT;
    r.sessions = 2;
    r.source = PRESENCE_SRC_PREFERRED;
    r.preferred_until_us = LS + 3600000000ULL;
    r.pub_version = 40;
    r.vis_last_seen_us = UP;
    ck_assert(proto_record_invisible(&r));
    gw_json_record(&b, &r, LS); /* the default: public */
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"version\":40,\"sessions\":0,"));
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"last_seen\":\"2026-01-15T10:13:20.000001Z\""));
    gw_buf_reset(&b);
    gw_viewer_t self = {.sub = "ivy", .sub_len = 3}, other = {.sub = "bob", .sub_len = 3},
                admin = {.sub = "ops", .sub_len = 3, .admin = true};
    ck_assert(gw_viewer_is_private(&self, "ivy", 3));
    ck_assert(!gw_viewer_is_private(&other, "ivy", 3));
    ck_assert(gw_viewer_is_private(&admin, "ivy", 3));
    ck_assert(!gw_viewer_is_private(NULL, "ivy", 3));
    gw_json_envelope_as(&b, &r, 1, LS, &self);
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"version\":50,\"sessions\":2,"));
    gw_buf_reset(&b);
    gw_json_envelope_as(&b, &r, 1, LS, &other);
    ck_assert_ptr_nonnull(strstr(s_str(&b), "\"version\":40,\"sessions\":0,"));
    /* others who saw the 2.0 shape before keep it */
    gw_buf_reset(&b);
    r.rflags = PROTO_REC_F_RT;
    gw_json_envelope_as(&b, &r, 1, LS, &other);
    ck_assert_ptr_null(strstr(s_str(&b), "sessions"));
    gw_buf_free(&b);
}
END_TEST

START_TEST(test_parse_session_fields)
{
    proto_record_t r;
    const char *err = NULL;
    memset(&r, 0, sizeof r);
    static const char ok[] = "{\"status\":\"away\",\"session\":\"phone-1\",\"device\":\"phone\",\"ttl\":60}";
    ck_assert_int_eq(gw_parse_set_body(ok, strlen(ok), 3600, &r, &err), 0);
    ck_assert_str_eq(r.session_id, "phone-1");
    ck_assert_str_eq(r.device, "phone");
    ck_assert_int_eq(r.cflags & PROTO_CMD_F_MSG, 0); /* a session's PUT without message keeps it */
    static const char msg[] = "{\"status\":\"busy\",\"session\":\"s\",\"message\":\"x\",\"message_ttl\":30}";
    ck_assert_int_eq(gw_parse_set_body(msg, strlen(msg), 3600, &r, &err), 0);
    ck_assert_int_eq(r.cflags & PROTO_CMD_F_MSG, PROTO_CMD_F_MSG);
    ck_assert_uint_eq(r.message_ttl_s, 30);
    static const char legacy[] = "{\"status\":\"busy\"}";
    ck_assert_int_eq(gw_parse_set_body(legacy, strlen(legacy), 3600, &r, &err), 0);
    ck_assert_int_eq(r.cflags & PROTO_CMD_F_MSG, PROTO_CMD_F_MSG); /* 2.0: absent message = cleared */
    ck_assert_uint_eq(r.sid_len, 0);
    static const struct {
        const char *body, *err;
    } bad[] = {
        {"{\"status\":\"online\",\"session\":\"\"}", GW_ERR_SESSION},
        {"{\"status\":\"online\",\"session\":\"a b\"}", GW_ERR_SESSION},
        {"{\"status\":\"online\",\"session\":7}", GW_ERR_SESSION},
        {"{\"status\":\"online\",\"device\":\"phone\"}", GW_ERR_DEVICE_NO_SESSION},
        {"{\"status\":\"online\",\"session\":\"s\",\"device\":\"a\\u0001\"}", GW_ERR_DEVICE},
        {"{\"status\":\"online\",\"message\":\"m\",\"message_ttl\":0}", GW_ERR_MESSAGE_TTL},
        {"{\"status\":\"online\",\"message_ttl\":60}", GW_ERR_MESSAGE_TTL_ALONE},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err = NULL;
        ck_assert_msg(gw_parse_set_body(bad[i].body, strlen(bad[i].body), 3600, &r, &err) == -1, "%s accepted",
                      bad[i].body);
        ck_assert_str_eq(err, bad[i].err);
    }
    /* the texts, word for word */
    ck_assert_str_eq(GW_ERR_SESSION, "invalid session: a session id is 1-64 bytes of A-Z a-z 0-9 . _ -");
    char sid65[80];
    memset(sid65, 's', 65);
    sid65[65] = '\0';
    char body[200];
    snprintf(body, sizeof body, "{\"status\":\"online\",\"session\":\"%s\"}", sid65);
    ck_assert_int_eq(gw_parse_set_body(body, strlen(body), 3600, &r, &err), -1);
    sid65[64] = '\0';
    snprintf(body, sizeof body, "{\"status\":\"online\",\"session\":\"%s\"}", sid65);
    ck_assert_int_eq(gw_parse_set_body(body, strlen(body), 3600, &r, &err), 0);
    /* heartbeats */
    static const char hb[] = "{\"session\":\"tab-2\",\"device\":\"desktop\"}";
    ck_assert_int_eq(gw_parse_heartbeat(hb, strlen(hb), &r, &err), 0);
    ck_assert_str_eq(r.session_id, "tab-2");
    ck_assert_uint_eq(r.ttl_s, 0);
    ck_assert_int_eq(gw_parse_heartbeat("", 0, &r, &err), 0);
    ck_assert_uint_eq(r.sid_len, 0);
}
END_TEST

/* fuzz_http: GET /api/v2/presence?users=alice,car%A5ol answered 400 with the raw byte 0xa5 in
 * "invalid user_id: ...", so the body was not valid UTF-8, hence not JSON. */
START_TEST(test_fuzz_error_body_utf8)
{
    s_assert_json_error("invalid user_id: car\xa5ol", "invalid user_id: car\xef\xbf\xbdol");
    s_assert_json_error("x\xc3", "x\xef\xbf\xbd");                /* cut sequence at the end */
    s_assert_json_error("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    s_assert_json_error("caf\xc3\xa9 \"q\"\n", "caf\xc3\xa9 \"q\"\n");     /* valid text unchanged */

    /* The parsers' own errors, end to end. */
    static const char q[] = "users=alice,car%A5ol";
    proto_str_t ids[8];
    char store[sizeof q], eb[GW_ERR_LEN];
    ck_assert_int_eq(gw_parse_users(q, strlen(q), 8, ids, store, eb, sizeof eb), -1);
    s_assert_json_error(eb, "invalid user_id: car\xef\xbf\xbdol (" E_UID_RULE ")");

    /* A batch id of 2-byte characters cut at 128 bytes in the middle of one. */
    char body[400];
    int off = snprintf(body, sizeof body, "{\"user_ids\":[\"x");
    for (int i = 0; i < 100; i++)
        off += snprintf(body + off, sizeof body - (size_t)off, "\xc3\xa9");
    off += snprintf(body + off, sizeof body - (size_t)off, "\"]}");
    proto_record_t recs[8];
    char idstore[sizeof body];
    uint32_t n;
    ck_assert_int_eq(gw_parse_batch_body(body, (size_t)off, 8, 60, ids, idstore, recs, &n, eb, sizeof eb), -1);
    gw_buf_t b;
    gw_buf_init(&b);
    gw_json_error(&b, eb);
    json_error_t e;
    json_t *o = json_loadb(b.p, b.len, 0, &e);
    ck_assert_msg(o != NULL, "not JSON (%s): %.*s", e.text, (int)b.len, b.p);
    json_decref(o);
    gw_buf_free(&b);
}
END_TEST

/* ---------------------------------------------------------------------------------------------------
 * Suite
 * ------------------------------------------------------------------------------------------------- */

/* ==== route patterns ========================================================================== */

static bool s_path(const char *pat, const char *path, gw_path_params_t *pp)
{
    return gw_path_match(pat, path, strlen(path), pp);
}

START_TEST(test_path_patterns)
{
    gw_path_params_t pp;
    /* Literal patterns: the whole path, nothing more, nothing less. */
    ck_assert(s_path("/health", "/health", &pp));
    ck_assert_ptr_null(pp.id);
    ck_assert(!s_path("/health", "/health/", &pp));
    ck_assert(!s_path("/health", "/healthz", &pp));
    ck_assert(!s_path("/health/liveness", "/health", &pp));
    ck_assert(!gw_path_has_params("/api/v2/presence/batch"));
    ck_assert(gw_path_has_params("/api/v2/presence/{id}"));
    /* {id}: one non-empty segment, raw (decoding is the guard's). */
    ck_assert(s_path("/api/v2/presence/{id}", "/api/v2/presence/alice%40x", &pp));
    ck_assert_int_eq((int)pp.id_len, 9);
    ck_assert_int_eq(memcmp(pp.id, "alice%40x", 9), 0);
    ck_assert(!s_path("/api/v2/presence/{id}", "/api/v2/presence/", &pp));
    ck_assert(!s_path("/api/v2/presence/{id}", "/api/v2/presence", &pp));
    ck_assert(!s_path("/api/v2/presence/{id}", "/api/v2/presence/a/b", &pp));
    ck_assert(!s_path("/api/v2/presence/{id}", "/api/v2/presence//", &pp));
    ck_assert(s_path("/api/v2/presence/{id}/heartbeat", "/api/v2/presence/bob/heartbeat", &pp));
    ck_assert_int_eq((int)pp.id_len, 3);
    ck_assert(!s_path("/api/v2/presence/{id}/heartbeat", "/api/v2/presence//heartbeat", &pp));
    ck_assert(!s_path("/api/v2/presence/{id}/heartbeat", "/api/v2/presence/bob/heartbeat/", &pp));
    /* An optional tail with a second parameter. */
    const char *sessions = "/api/v2/presence/{id}/sessions[/{sid}]";
    ck_assert(s_path(sessions, "/api/v2/presence/carol/sessions", &pp));
    ck_assert_int_eq((int)pp.id_len, 5);
    ck_assert_ptr_null(pp.sid);
    ck_assert(s_path(sessions, "/api/v2/presence/carol/sessions/phone-1", &pp));
    ck_assert_int_eq((int)pp.sid_len, 7);
    ck_assert_int_eq(memcmp(pp.sid, "phone-1", 7), 0);
    ck_assert(!s_path(sessions, "/api/v2/presence/carol/sessions/", &pp));
    ck_assert(!s_path(sessions, "/api/v2/presence/carol/sessions/a/b", &pp));
    ck_assert(!s_path(sessions, "/api/v2/presence/carol/sessionsx", &pp));
    ck_assert(!s_path(sessions, "/api/v2/presence/carol", &pp));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("gw");

    TCase *tc = tcase_create("json");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_json_record_sessions);
    tcase_add_test(tc, test_json_record_invisible);
    tcase_add_test(tc, test_json_sessions);
    tcase_add_test(tc, test_parse_session_fields);
    tcase_add_test(tc, test_json_record_exact);
    tcase_add_test(tc, test_json_record_expired);
    tcase_add_test(tc, test_json_escaping);
    tcase_add_test(tc, test_json_envelope_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("input");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_pct_decode);
    tcase_add_test(tc, test_parse_set_body);
    tcase_add_test(tc, test_parse_heartbeat_body);
    tcase_add_test(tc, test_parse_ill_formed_elsewhere);
    tcase_add_test(tc, test_parse_batch_body);
    tcase_add_test(tc, test_parse_users);
    tcase_add_test(tc, test_query_param);
    suite_add_tcase(s, tc);

    tc = tcase_create("jwt");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_jwt_valid);
    tcase_add_test(tc, test_jwt_header_forms);
    tcase_add_test(tc, test_jwt_signature);
    tcase_add_test(tc, test_jwt_header_strict);
    tcase_add_test(tc, test_reserved_user_ids);
    tcase_add_test(tc, test_jwt_time_claims);
    tcase_add_test(tc, test_jwt_claims);
    tcase_add_test(tc, test_jwt_cache);
    suite_add_tcase(s, tc);

    tc = tcase_create("cors");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_cors_defaults);
    tcase_add_test(tc, test_cors_list);
    tcase_add_test(tc, test_cors_long_lists);
    tcase_add_test(tc, test_cors_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("ratelimit");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_ratelimit_burst_refill);
    tcase_add_test(tc, test_ratelimit_disabled);
    tcase_add_test(tc, test_ratelimit_many_keys);
    tcase_add_test(tc, test_ratelimit_threads);
    suite_add_tcase(s, tc);

    tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_fuzz_error_body_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("rendezvous");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_rendezvous_basics);
    tcase_add_test(tc, test_rendezvous_balance_disruption);
    suite_add_tcase(s, tc);
    tc = tcase_create("paths");
    tcase_add_test(tc, test_path_patterns);
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
