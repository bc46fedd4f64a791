/* check_entry.c -- Check suite for the replicated store's log entries (store-node/store_entry.h).
 *
 * Covered: a GROUP of every write (PUT with sessions fields, TOUCH, DEL, LEASE), with and without
 * command ids, decodes to the same ops (the fields the store applies); one op alone (no BATCH);
 * SWEEP and LEAD; outputs sized to the records; and every malformed entry is refused with a reason
 * (magic, padding, kind, op count, a truncated or foreign op, a read among the ops, an empty PUT,
 * bytes after a SWEEP), never a crash.
 */
#include "store_entry.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static proto_record_t s_rec(const char *uid, int status, const char *msg)
{
    proto_record_t r;
    memset(&r, 0, sizeof r);
    proto_record_set_uid(&r, uid, strlen(uid));
    proto_record_set_msg(&r, msg, strlen(msg));
    proto_record_set_node(&r, "node-a", 6);
    r.status = (uint8_t)status;
    r.ttl_s = 120;
    r.cflags = PROTO_CMD_F_MSG;
    return r;
}

START_TEST(test_group_roundtrip)
{
    proto_record_t put[2] = {s_rec("alice", PRESENCE_BUSY, "meeting"), s_rec("bob", PRESENCE_AWAY, "")};
    put[1].cflags = PROTO_CMD_F_OPEN | PROTO_CMD_F_MSG;
    proto_record_set_sid(&put[1], "tab-1", 5);
    put[1].lease_id = 99;
    put[1].conn_id = 7;
    proto_record_t touch = s_rec("carol", 0, "");
    touch.cflags = 0;
    proto_record_t del = s_rec("dave", 0, "");
    store_op_t ops[4];
    memset(ops, 0, sizeof ops);
    ops[0] = (store_op_t){.type = PROTO_PUT, .n = 2, .in = put, .has_cmd_id = true};
    memset(ops[0].cmd_id, 0xab, PROTO_CMD_ID_LEN);
    ops[1] = (store_op_t){.type = PROTO_TOUCH, .n = 1, .in = &touch};
    ops[2] = (store_op_t){.type = PROTO_DEL, .n = 1, .in = &del, .has_cmd_id = true};
    memset(ops[2].cmd_id, 0xcd, PROTO_CMD_ID_LEN);
    ops[3] = (store_op_t){.type = PROTO_LEASE, .n = 1, .lease_id = 5, .lease_op = PROTO_LEASE_END, .lease_ttl_ms = 3000};
    snprintf(ops[3].lease_node, sizeof ops[3].lease_node, "gw-1");
    proto_batch_t b;
    proto_batch_init(&b);
    proto_buf_t scratch, ent;
    proto_buf_init(&scratch);
    proto_buf_init(&ent);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_gt(store_entry_add_op(&b, &ops[i], &scratch), 0);
    store_entry_group(&ent, 1700000000000000ULL, &b);
    store_entry_t e;
    char err[STORE_ERR_LEN] = "";
    ck_assert_msg(store_entry_decode(ent.data, ent.len, &e, err) == 0, "decode: %s", err);
    ck_assert_uint_eq(e.kind, STORE_ENTRY_GROUP);
    ck_assert_uint_eq(e.now_us, 1700000000000000ULL);
    ck_assert_uint_eq(e.nops, 4);
    ck_assert_uint_eq(e.ops[0].type, PROTO_PUT);
    ck_assert_uint_eq(e.ops[0].n, 2);
    ck_assert(e.ops[0].has_cmd_id);
    ck_assert_mem_eq(e.ops[0].cmd_id, ops[0].cmd_id, PROTO_CMD_ID_LEN);
    ck_assert_str_eq(e.ops[0].in[0].user_id, "alice");
    ck_assert_str_eq(e.ops[0].in[0].message, "meeting");
    ck_assert_uint_eq(e.ops[0].in[0].status, PRESENCE_BUSY);
    ck_assert_uint_eq(e.ops[0].in[0].ttl_s, 120);
    ck_assert_str_eq(e.ops[0].in[1].session_id, "tab-1");
    ck_assert_uint_eq(e.ops[0].in[1].lease_id, 99);
    ck_assert_uint_eq(e.ops[0].in[1].conn_id, 7);
    ck_assert_uint_eq(e.ops[0].in[1].cflags, PROTO_CMD_F_OPEN | PROTO_CMD_F_MSG);
    ck_assert_ptr_nonnull(e.ops[0].out);
    ck_assert_uint_eq(e.ops[1].type, PROTO_TOUCH);
    ck_assert(!e.ops[1].has_cmd_id);
    ck_assert_str_eq(e.ops[1].in[0].user_id, "carol");
    ck_assert_ptr_eq(e.ops[1].out, e.ops[0].out + 2); /* one output per record, in order */
    ck_assert_uint_eq(e.ops[2].type, PROTO_DEL);
    ck_assert_str_eq(e.ops[2].in[0].user_id, "dave");
    ck_assert_mem_eq(e.ops[2].cmd_id, ops[2].cmd_id, PROTO_CMD_ID_LEN);
    ck_assert_uint_eq(e.ops[3].type, PROTO_LEASE);
    ck_assert_uint_eq(e.ops[3].lease_id, 5);
    ck_assert_uint_eq(e.ops[3].lease_op, PROTO_LEASE_END);
    ck_assert_uint_eq(e.ops[3].lease_ttl_ms, 3000);
    ck_assert_str_eq(e.ops[3].lease_node, "gw-1");
    store_entry_fini(&e);
    /* One op alone travels without a BATCH. */
    proto_batch_reset(&b);
    store_entry_add_op(&b, &ops[2], &scratch);
    store_entry_group(&ent, 5, &b);
    ck_assert_int_eq(store_entry_decode(ent.data, ent.len, &e, err), 0);
    ck_assert_uint_eq(e.nops, 1);
    ck_assert_uint_eq(e.ops[0].type, PROTO_DEL);
    store_entry_fini(&e);
    proto_batch_fini(&b);
    proto_buf_fini(&scratch);
    proto_buf_fini(&ent);
}
END_TEST

START_TEST(test_sweep_lead)
{
    proto_buf_t b;
    proto_buf_init(&b);
    store_entry_t e;
    char err[STORE_ERR_LEN];
    store_entry_sweep(&b, 42, 1000);
    ck_assert_int_eq(store_entry_decode(b.data, b.len, &e, err), 0);
    ck_assert_uint_eq(e.kind, STORE_ENTRY_SWEEP);
    ck_assert_uint_eq(e.now_us, 42);
    ck_assert_uint_eq(e.arg, 1000);
    store_entry_fini(&e);
    store_entry_lead(&b, 43, 0x1234567890ULL);
    ck_assert_int_eq(store_entry_decode(b.data, b.len, &e, err), 0);
    ck_assert_uint_eq(e.kind, STORE_ENTRY_LEAD);
    ck_assert_uint_eq(e.arg, 0x1234567890ULL);
    store_entry_fini(&e);
    proto_buf_fini(&b);
}
END_TEST

static void s_refused(const void *p, size_t len, const char *what)
{
    store_entry_t e;
    char err[STORE_ERR_LEN] = "";
    ck_assert_msg(store_entry_decode(p, len, &e, err) == -1, "%s: decoded", what);
    ck_assert_msg(err[0], "%s: refused without a reason", what);
    store_entry_fini(&e);
}

START_TEST(test_malformed)
{
    proto_record_t r = s_rec("eve", 0, "hi");
    store_op_t op = {.type = PROTO_PUT, .n = 1, .in = &r};
    proto_batch_t b;
    proto_batch_init(&b);
    proto_buf_t scratch, ent;
    proto_buf_init(&scratch);
    proto_buf_init(&ent);
    store_entry_add_op(&b, &op, &scratch);
    store_entry_add_op(&b, &op, &scratch);
    store_entry_group(&ent, 1, &b);
    unsigned char *bad = malloc(ent.len);
    s_refused(ent.data, 10, "shorter than a header");
    memcpy(bad, ent.data, ent.len);
    bad[0] = 'X';
    s_refused(bad, ent.len, "bad magic");
    memcpy(bad, ent.data, ent.len);
    bad[6] = 1;
    s_refused(bad, ent.len, "padding not zero");
    memcpy(bad, ent.data, ent.len);
    bad[4] = 9;
    s_refused(bad, ent.len, "unknown kind");
    memcpy(bad, ent.data, ent.len);
    bad[16] = 3; /* three ops announced, two present */
    s_refused(bad, ent.len, "op count");
    memcpy(bad, ent.data, ent.len);
    bad[16] = 0;
    s_refused(bad, ent.len, "no ops");
    for (size_t cut = STORE_ENTRY_HDR; cut < ent.len; cut += 7)
        s_refused(ent.data, cut, "truncated");
    s_refused(ent.data, STORE_ENTRY_HDR, "a group without its ops");
    /* A read among the ops, an empty PUT. */
    proto_batch_reset(&b);
    proto_buf_reset(&scratch);
    proto_enc_get(&scratch, PROTO_GET, 0, "eve", 3);
    proto_batch_add(&b, scratch.data, scratch.len);
    store_entry_group(&ent, 1, &b);
    s_refused(ent.data, ent.len, "a GET as an op");
    proto_batch_reset(&b);
    proto_buf_reset(&scratch);
    proto_enc_records_cmd(&scratch, PROTO_PUT, 0, &r, 0);
    proto_batch_add(&b, scratch.data, scratch.len);
    store_entry_group(&ent, 1, &b);
    s_refused(ent.data, ent.len, "a PUT of no record");
    /* A sweep with bytes after its header, or a max of 0. */
    store_entry_sweep(&ent, 1, 10);
    proto_buf_append(&ent, "x", 1);
    s_refused(ent.data, ent.len, "bytes after a sweep");
    store_entry_sweep(&ent, 1, 0);
    s_refused(ent.data, ent.len, "sweep of 0");
    free(bad);
    proto_batch_fini(&b);
    proto_buf_fini(&scratch);
    proto_buf_fini(&ent);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("entry");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_group_roundtrip);
    tcase_add_test(tc, test_sweep_lead);
    tcase_add_test(tc, test_malformed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
