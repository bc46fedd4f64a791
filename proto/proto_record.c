/* proto_record.c -- records and the words of the protocol: setters that bound every string,
 * the validators of ids, the public view of a record (invisible mode) and the names of statuses,
 * sources and message types. Pure functions, no msgpack; reentrant.
 */
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

void proto_record_set_uid(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_USER_ID_MAX)
        len = PROTO_USER_ID_MAX;
    memcpy(r->user_id, s, len);
    r->user_id[len] = '\0';
    r->uid_len = (uint8_t)len;
}

void proto_record_set_node(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_NODE_ID_MAX)
        len = PROTO_NODE_ID_MAX;
    memcpy(r->node_id, s, len);
    r->node_id[len] = '\0';
    r->node_len = (uint8_t)len;
}

void proto_record_set_msg(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_MESSAGE_MAX)
        len = PROTO_MESSAGE_MAX;
    memcpy(r->message, s, len);
    r->message[len] = '\0';
    r->msg_len = (uint16_t)len;
}

void proto_record_set_sid(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_SESSION_ID_MAX)
        len = PROTO_SESSION_ID_MAX;
    memcpy(r->session_id, s, len);
    r->session_id[len] = '\0';
    r->sid_len = (uint8_t)len;
}

void proto_record_set_device(proto_record_t *r, const char *s, size_t len)
{
    if (len > PROTO_DEVICE_MAX)
        len = PROTO_DEVICE_MAX;
    memcpy(r->device, s, len);
    r->device[len] = '\0';
    r->device_len = (uint8_t)len;
}

bool proto_valid_session_id(const char *s, size_t len)
{
    if (len == 0 || len > PROTO_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

bool proto_valid_device(const char *s, size_t len)
{
    return len <= PROTO_DEVICE_MAX && util_valid_message(s, len);
}

bool proto_record_invisible(const proto_record_t *r)
{
    return r->source == PRESENCE_SRC_PREFERRED && r->status == PRESENCE_OFFLINE && r->sessions > 0;
}

void proto_record_public(const proto_record_t *r, proto_record_t *out)
{
    *out = *r;
    if (!proto_record_invisible(r))
        return;
    out->sessions = 0;
    out->last_seen_us = r->vis_last_seen_us;
    out->version = r->pub_version;
    if (!(r->rflags & PROTO_REC_F_PUB_RT))
        out->rflags = 0;
}

const char *proto_source_name(int source)
{
    static const char *const names[] = {"none", "preferred", "session"};
    return (source >= 0 && source < PRESENCE_SOURCE_COUNT) ? names[source] : "none";
}

/* ==== names ================================================================================== */

static const char *const s_presence[] = {"online", "away", "busy", "offline"};

const char *proto_presence_name(int p)
{
    return (p >= 0 && p < PRESENCE_STATUS_COUNT) ? s_presence[p] : NULL;
}

int proto_presence_parse(const char *s, size_t len)
{
    for (int i = 0; i < PRESENCE_STATUS_COUNT; i++)
        if (strlen(s_presence[i]) == len && memcmp(s_presence[i], s, len) == 0)
            return i;
    return -1;
}

const char *proto_status_name(int status)
{
    static const char *const names[] = {"ok",       "notfound", "bad request", "overload", "unavailable",
                                        "internal", "timeout",  "not leader"};
    return (status >= 0 && status <= PROTO_STATUS_MAX_) ? names[status] : "unknown";
}

const char *proto_type_name(int type)
{
    switch (type) {
    case PROTO_GET: return "GET";
    case PROTO_MGET: return "MGET";
    case PROTO_PUT: return "PUT";
    case PROTO_TOUCH: return "TOUCH";
    case PROTO_DEL: return "DEL";
    case PROTO_STATS: return "STATS";
    case PROTO_CATCHUP: return "CATCHUP";
    case PROTO_PING: return "PING";
    case PROTO_APPLY: return "APPLY";
    case PROTO_BATCH: return "BATCH";
    case PROTO_REPLY: return "REPLY";
    case PROTO_CATCHUP_REPLY: return "CATCHUP_REPLY";
    case PROTO_PONG: return "PONG";
    case PROTO_STATS_REPLY: return "STATS_REPLY";
    case PROTO_CHANGES: return "CHANGES";
    case PROTO_HUGZ: return "HUGZ";
    case PROTO_LEASE: return "LEASE";
    case PROTO_SESSIONS: return "SESSIONS";
    case PROTO_SESSIONS_REPLY: return "SESSIONS_REPLY";
    default: return "?";
    }
}
