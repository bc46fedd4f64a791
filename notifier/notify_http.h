/* notify_http.h -- webhook POSTs through libcurl's multi interface, one request per target at a
 * time, driven from the notifier's single loop (common/zloop.h).
 *
 * Each target has one easy handle, reused for every request, so the connection (and TLS session)
 * to a target is kept alive in the multi handle's connection cache between batches. Transfers
 * never block. libcurl's sockets live in one epoll set whose fd (notify_http_fd) the loop polls
 * with its ZeroMQ sockets; the loop calls notify_http_drive() when that fd is readable or
 * libcurl's timer (notify_http_deadline) is due, and collects answers with
 * notify_http_next_done().
 *
 * Every request has a connect timeout and a total timeout, TLS peer and host verification on
 * (there is no switch to turn it off), only http and https, no redirects followed, no proxy
 * unless one is configured (the *_proxy environment variables are ignored). Not thread-safe.
 */
#ifndef PRESENCE_NOTIFY_HTTP_H
#define PRESENCE_NOTIFY_HTTP_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct notify_http notify_http_t;

typedef struct notify_http_cfg {
    uint64_t connect_timeout_ms, timeout_ms;
    const char *ca_file;    /* PEM bundle to verify servers with; NULL or "" = libcurl's default */
    const char *proxy;      /* NULL or "" = no proxy */
    const char *user_agent;
} notify_http_cfg_t;

typedef struct notify_http_done {
    uint32_t target;
    int status;             /* the HTTP status, or 0 when the request failed (error says why) */
    uint64_t retry_after_s; /* a Retry-After the server sent (0 = none) */
    uint64_t elapsed_us;
    char error[CURL_ERROR_SIZE];
} notify_http_done_t;

/* libcurl must be initialised (curl_global_init) first. Returns NULL with err (CFG_ERR_LEN). */
notify_http_t *notify_http_new(const notify_http_cfg_t *cfg, uint32_t ntargets, char *err);
void notify_http_destroy(notify_http_t **h);

/* Check that libcurl accepts url (its own URL parser). Returns 0, or -1 with err. */
int notify_http_check_url(const char *url, char *err);

/* POST body to url for target (which has no request out). `headers` is a NULL-terminated list of
 * extra "Name: value" lines (copied). The body is borrowed until the request's answer has been
 * collected or it was cancelled. Returns 0, or -1 (nothing started). */
int notify_http_post(notify_http_t *h, uint32_t target, const char *url, const char *const *headers, const void *body,
                     size_t len);
/* The epoll fd holding libcurl's sockets: readable when one of them has something to do. */
int notify_http_fd(const notify_http_t *h);
/* libcurl's next timer as a monotonic ms deadline (UINT64_MAX: none). */
uint64_t notify_http_deadline(const notify_http_t *h);
/* Drive the transfers: the sockets epoll reports ready, then libcurl's timer when it is due at
 * now_ms (monotonic). Never blocks. Returns 0, or -1 on a libcurl error. */
int notify_http_drive(notify_http_t *h, uint64_t now_ms);
/* Wait (at most timeout_ms, and never past libcurl's timer) for libcurl's sockets, then drive.
 * For the shutdown drain, outside the loop. Returns 0, or -1 on an error. */
int notify_http_wait(notify_http_t *h, int timeout_ms);
/* Fill *d with one finished request (its target may post again). Returns 1, or 0 when none. */
int notify_http_next_done(notify_http_t *h, notify_http_done_t *d);
/* Abandon target's request, if any. */
void notify_http_cancel(notify_http_t *h, uint32_t target);
/* Requests out. */
uint32_t notify_http_inflight(const notify_http_t *h);

#endif
