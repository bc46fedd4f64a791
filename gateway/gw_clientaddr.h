/* gw_clientaddr.h -- who the client is: the connection's peer, or -- behind trusted proxies -- the
 * rightmost X-Forwarded-For hop that is not one of them (gateway/gw_clientaddr.c explains why).
 *
 * Pure functions on caller-owned data: the gateway parses TRUSTED_PROXIES once at startup
 * (gw_config.c) and picks the address per request (gw_guard.c) for rate limits, watch-stream
 * limits and log lines. Reentrant; a parsed list is read-only and may be shared by threads.
 */
#ifndef PRESENCE_GW_CLIENTADDR_H
#define PRESENCE_GW_CLIENTADDR_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_TRUSTED_MAX 64     /* CIDRs in TRUSTED_PROXIES */
#define GW_CLIENTADDR_LEN 48  /* an address as text (INET6_ADDRSTRLEN) with its NUL */

/* One CIDR: an IPv4 one is kept as its IPv4-mapped IPv6 form (::ffff:a.b.c.d/96+bits), so one
 * comparison serves both families. */
typedef struct gw_cidr {
    uint8_t addr[16];
    uint8_t bits; /* prefix length in the 128-bit form */
} gw_cidr_t;

typedef struct gw_trusted {
    gw_cidr_t v[GW_TRUSTED_MAX];
    uint32_t n;
} gw_trusted_t;

/* Parse list ("10.0.0.0/8, 192.168.1.7, fd00::/8": comma-separated IPv4/IPv6 addresses, each
 * with an optional /prefix) into *out (emptied first; "" gives an empty list). Returns 0, or -1
 * with err (errlen bytes) naming the entry and the rule. */
int gw_clientaddr_parse(const char *list, gw_trusted_t *out, char *err, size_t errlen);

/* Parse one address as text (IPv4 "a.b.c.d", optionally ":port"; IPv6, optionally "[...]" and
 * ":port"; surrounding blanks ignored) into its 16-byte form (IPv4 mapped). Returns 0, or -1 when
 * it is not an address. */
int gw_clientaddr_parse_addr(const char *s, size_t n, uint8_t out[16]);

/* The 16-byte form of a peer address (sa, len as getpeername gives them). Returns false when it
 * is neither IPv4 nor IPv6 (or len is 0). */
struct sockaddr;
bool gw_clientaddr_from_sockaddr(const struct sockaddr *sa, size_t len, uint8_t out[16]);

/* True when addr (16-byte form) is inside one of t's CIDRs. */
bool gw_clientaddr_is_trusted(const gw_trusted_t *t, const uint8_t addr[16]);

/* The client's address as canonical text (inet_ntop; IPv4 as a.b.c.d) into out
 * (GW_CLIENTADDR_LEN bytes); returns its length.
 *   peer       the connection's peer (16-byte form), or NULL when unknown (then "?")
 *   trust      TRUST_PROXY: X-Forwarded-For is looked at only when true
 *   t          TRUSTED_PROXIES; empty = the peer is the one trusted proxy
 *   xff[0..n)  every X-Forwarded-For header value, in the order they came
 * Rule: the peer is the client unless trust is on and the peer is trusted (any peer with an empty
 * list). Then the hops are walked from the right: the first one that is not trusted is the client.
 * A hop that is not an address stops the walk: the last trusted address (the proxy that wrote the
 * broken hop) is the client. When every hop is trusted, the leftmost one is. */
size_t gw_clientaddr_pick(const uint8_t *peer, bool trust, const gw_trusted_t *t, const proto_str_t *xff, size_t n,
                          char *out);

#endif
