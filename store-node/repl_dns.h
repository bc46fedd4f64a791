/* repl_dns.h -- a raft_uv_transport that dials members by host name (used by repl*.c only).
 *
 * libraft 0.15's TCP transport (raft_uv_tcp) parses every address with uv_ip4_addr: it takes
 * IPv4 literals only. A member list of stable names ("store-1.store:7001", a Kubernetes
 * StatefulSet behind a headless Service) must stay in the Raft configuration as names, because
 * the addresses behind them change when a pod is rescheduled. This transport wraps raft_uv_tcp
 * and resolves a name (uv_getaddrinfo, on libuv's thread pool: the loop never blocks) at every
 * connection attempt, so a moved member is found again on the next reconnect. IPv4 literals go
 * straight through.
 *
 * Threads: everything runs on the loop thread that owns the transport.
 */
#ifndef PRESENCE_REPL_DNS_H
#define PRESENCE_REPL_DNS_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>

/* Initialise *t (memory owned by the caller, to be passed to raft_uv_init) on `loop`. The
 * listening socket binds `bind_address` when given ("A.B.C.D:PORT"), else the member's own
 * address, which must then be an IPv4 literal. Returns 0 or a RAFT_* code. */
int repl_dns_init(struct raft_uv_transport *t, struct uv_loop_s *loop, const char *bind_address);

/* Release *t's memory after raft_uv closed it (libraft's close callback), or after a failed
 * start before raft_init. */
void repl_dns_close(struct raft_uv_transport *t);

/* True when `host` is an IPv4 dotted quad. */
bool repl_dns_is_ipv4(const char *host);

#endif
