/* gw_head.h -- an HTTP/1 request head, parsed only as far as the gateway's front needs it to
 * judge a request before its body is read (gateway/gw_front.c): method, target, how the body is
 * framed, Authorization and Origin.
 *
 * Pure: works on the caller's bytes, allocates nothing; every pointer it returns is borrowed from
 * them. Anything unusual (folded lines, a doubtful body framing, not HTTP/1 at all) is reported as
 * such, for h2o's full parser to answer -- this is no second HTTP parser, only a gate.
 */
#ifndef PRESENCE_GW_HEAD_H
#define PRESENCE_GW_HEAD_H

#include <stddef.h>
#include <stdint.h>

enum gw_head_result {
    GW_HEAD_MORE = 0,  /* no end of head yet, under max: read more */
    GW_HEAD_DONE,      /* a whole head: *h filled */
    GW_HEAD_NOT_HTTP1, /* not an HTTP/1 request line (the HTTP/2 preface, garbage): for h2o */
    GW_HEAD_TOO_BIG,   /* max bytes and still no end of head */
};

enum gw_head_body {
    GW_BODY_NONE = 0, /* no Content-Length, no Transfer-Encoding */
    GW_BODY_LENGTH,   /* one valid Content-Length (content_length, may be 0) */
    GW_BODY_CHUNKED,  /* Transfer-Encoding naming chunked, no Content-Length */
    GW_BODY_UNCLEAR,  /* anything else (invalid or repeated lengths, both headers): h2o decides */
};

typedef struct gw_head {
    size_t len; /* bytes of the head, its empty line included */
    const char *method, *target;
    size_t method_len, target_len;
    int body; /* enum gw_head_body */
    uint64_t content_length;
    const char *auth, *origin; /* the first Authorization / Origin value, leading blanks skipped (NULL: none) */
    size_t auth_len, origin_len;
} gw_head_t;

/* Look at buf[0..len): a request head ends at its first empty line, within max bytes. Returns an
 * enum gw_head_result; *h is filled on GW_HEAD_DONE. */
int gw_head_parse(const char *buf, size_t len, size_t max, gw_head_t *h);

#endif
