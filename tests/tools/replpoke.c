/* replpoke.c -- one command straight to one member of a replicated center, and what it answered.
 *
 *   replpoke ENDPOINT put UID MESSAGE TIMEOUT_MS   -> OK version N | ENOTLEADER leader M | EUNAVAIL | ... | TIMEOUT
 *   replpoke ENDPOINT get UID TIMEOUT_MS           -> OK version N message M | NOTFOUND | ENOTLEADER leader M | ... | TIMEOUT
 *   replpoke ENDPOINT stats TIMEOUT_MS             -> lines "NAME VALUE": leading, term, leader, role,
 *                                                     committed, records, applied, commit_index, epoch
 *
 * For tests/partition/partition_repl.sh, which must ask one particular member (not "the leader",
 * as a cache-node would) whether it still acknowledges writes while its raft link is cut: the
 * member's command socket is an ipc:// path, reachable from any network namespace. A PUT carries
 * a random command id and a deadline of now + TIMEOUT_MS (as a cache-node's does: a member that
 * gets it late refuses it instead of applying it). Any other answer is printed as the name of
 * its status in proto.h (ETIMEOUT: the member's own deadline check); a member that does not answer within TIMEOUT_MS prints TIMEOUT. Exit 0 when the
 * member answered (whatever it said), 1 on TIMEOUT, 2 on a usage error. One DEALER, one command,
 * every wait bounded by TIMEOUT_MS; single-threaded.
 */
#include "cli.h"
#include "proto.h"
#include "stats.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE "ENDPOINT put UID MESSAGE TIMEOUT_MS | ENDPOINT get UID TIMEOUT_MS | ENDPOINT stats TIMEOUT_MS"

/* The STATS values printed by `stats`, as "short-name stat-name". */
static const char *const s_stat_names[][2] = {
    {"leading", "store_repl_leading"},        {"term", "store_repl_term"},
    {"leader", "store_repl_leader"},          {"role", "store_repl_role"},
    {"committed", "store_committed_sequence"}, {"records", "store_records"},
    {"applied", "store_repl_applied_index"},  {"commit_index", "store_repl_commit_index"},
    {"epoch", "store_epoch"},
};

static int s_usage(const char *why)
{
    fprintf(stderr, "replpoke: %s\nusage: replpoke %s\n", why, USAGE);
    return 2;
}

/* Send b on d and wait for the answer to rid until until_us (monotonic). The store may answer in a
 * BATCH frame: its part with our rid is decoded into *m. Returns 0 with *m to finish, or -1 when
 * nothing answered in time. */
static int s_call(void *d, const proto_buf_t *b, uint64_t rid, uint64_t until_us, proto_msg_t *m)
{
    zmq_pollitem_t pi = {.socket = d, .events = ZMQ_POLLOUT};
    for (;;) { /* the DEALER queues once connected; wait for that, bounded */
        if (zu_send(d, NULL, 0, b->data, b->len) == 0)
            break;
        uint64_t now = util_mono_us();
        if (now >= until_us)
            return -1;
        zmq_poll(&pi, 1, (long)((until_us - now) / 1000) + 1);
    }
    pi.events = ZMQ_POLLIN;
    for (;;) {
        uint64_t now = util_mono_us();
        if (now >= until_us || zmq_poll(&pi, 1, (long)((until_us - now) / 1000) + 1) <= 0)
            return -1;
        zmq_msg_t f[ZU_FRAMES_MAX];
        int nf;
        while (zu_recv(d, f, ZU_FRAMES_MAX, &nf) == 0) {
            bool found = false;
            proto_msg_t outer;
            if (nf == 1 && proto_decode(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &outer) == PROTO_DEC_OK) {
                if (outer.type == PROTO_BATCH) {
                    for (uint32_t i = 0; i < outer.n && !found; i++) {
                        if (proto_decode(outer.parts[i].p, outer.parts[i].len, m) == PROTO_DEC_OK && m->rid == rid)
                            found = true;
                        else
                            proto_msg_fini(m);
                    }
                    proto_msg_fini(&outer);
                } else if (outer.rid == rid) {
                    *m = outer;
                    found = true;
                } else {
                    proto_msg_fini(&outer);
                }
            } else if (nf == 1) {
                proto_msg_fini(&outer);
            }
            zu_close_frames(f, nf);
            if (found)
                return 0;
        }
    }
}

/* Every status by the name the proto.h enum gives it ("ENOTLEADER", "EUNAVAIL", ...). */
static const char *const s_status_names[] = {
    [PROTO_OK] = "OK",           [PROTO_NOTFOUND] = "NOTFOUND", [PROTO_EBADREQ] = "EBADREQ",
    [PROTO_EOVERLOAD] = "EOVERLOAD", [PROTO_EUNAVAIL] = "EUNAVAIL", [PROTO_EINTERNAL] = "EINTERNAL",
    [PROTO_ETIMEOUT] = "ETIMEOUT", [PROTO_ENOTLEADER] = "ENOTLEADER",
};

static void s_print_status(const proto_msg_t *m)
{
    if (m->status <= PROTO_STATUS_MAX_)
        printf("%s", s_status_names[m->status]);
    else
        printf("STATUS%u", m->status);
    if (m->status == PROTO_ENOTLEADER)
        printf(" leader %llu", (unsigned long long)m->seq);
    putchar('\n');
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "replpoke", USAGE, "One command straight to one member of a replicated center.");
    if (argc < 4)
        return s_usage("too few arguments");
    const char *ep = argv[1], *op = argv[2];
    bool put = strcmp(op, "put") == 0, get = strcmp(op, "get") == 0, stats = strcmp(op, "stats") == 0;
    if (!put && !get && !stats)
        return s_usage("the command must be put, get or stats");
    if (argc != (put ? 6 : get ? 5 : 4))
        return s_usage("wrong number of arguments for this command");
    long timeout_ms = atol(argv[argc - 1]);
    if (timeout_ms < 1 || timeout_ms > 600000)
        return s_usage("TIMEOUT_MS must be 1..600000");
    const char *uid = put || get ? argv[3] : NULL;
    if (uid && (!*uid || strlen(uid) > PROTO_USER_ID_MAX))
        return s_usage("UID must be 1..128 bytes");
    if (put && strlen(argv[4]) > PROTO_MESSAGE_MAX)
        return s_usage("MESSAGE must be at most 256 bytes");

    void *ctx = zmq_ctx_new();
    void *d = zu_socket(ctx, ZMQ_DEALER, 16, 16);
    if (!d || zmq_connect(d, ep) < 0) {
        fprintf(stderr, "replpoke: connect %s: %s\n", ep, zmq_strerror(errno));
        return 2;
    }
    uint64_t rid = 1;
    uint64_t until = util_mono_us() + (uint64_t)timeout_ms * 1000;
    proto_buf_t b;
    proto_buf_init(&b);
    if (put) {
        proto_record_t rec;
        memset(&rec, 0, sizeof rec);
        proto_record_set_uid(&rec, uid, strlen(uid));
        proto_record_set_node(&rec, "replpoke", 8);
        proto_record_set_msg(&rec, argv[4], strlen(argv[4]));
        rec.status = PRESENCE_ONLINE;
        rec.ttl_s = 3600;
        rec.cflags = PROTO_CMD_F_MSG;
        uint8_t id[PROTO_CMD_ID_LEN];
        util_random(id, sizeof id);
        proto_enc_records_cmd_id(&b, PROTO_PUT, rid, &rec, 1, util_now_us() + (uint64_t)timeout_ms * 1000, id);
    } else if (get) {
        proto_enc_get(&b, PROTO_GET, rid, uid, strlen(uid));
    } else {
        proto_enc_simple(&b, PROTO_STATS, rid);
    }
    proto_msg_t m;
    int rc = s_call(d, &b, rid, until, &m);
    proto_buf_fini(&b);
    if (rc < 0) {
        printf("TIMEOUT\n");
    } else {
        if (stats) {
            for (size_t i = 0; i < sizeof s_stat_names / sizeof s_stat_names[0]; i++) {
                uint64_t v = 0;
                stats_find(m.stats, m.n, s_stat_names[i][1], &v);
                printf("%s %llu\n", s_stat_names[i][0], (unsigned long long)v);
            }
        } else if (m.status == PROTO_OK && m.n >= 1 && m.recs) {
            if (put)
                printf("OK version %llu\n", (unsigned long long)m.recs[0].version);
            else
                printf("OK version %llu message %s\n", (unsigned long long)m.recs[0].version, m.recs[0].message);
        } else {
            s_print_status(&m); /* (an OK without its record prints "OK": still an acknowledgement) */
        }
        proto_msg_fini(&m);
    }
    zmq_close(d);
    zmq_ctx_term(ctx);
    return rc < 0 ? 1 : 0;
}
