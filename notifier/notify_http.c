/* notify_http.c -- libcurl multi glue for webhook POSTs (see notify_http.h).
 *
 * Why the multi_socket API with an epoll set: the notifier's one loop (common/zloop.c) polls a
 * fixed set of fds, and libcurl's sockets come and go. libcurl tells us each socket it wants
 * watched (CURLMOPT_SOCKETFUNCTION) and its next timeout (CURLMOPT_TIMERFUNCTION); the sockets go
 * into one level-triggered epoll set, whose own fd is one more fd of the loop, so the notifier
 * still sleeps in exactly one place. The per-target easy handle is removed from the multi handle
 * when its request ends and added again for the next one; options persist on the handle, and the
 * connection stays in the multi handle's cache (keep-alive).
 *
 * Response bodies are read and discarded (a receiver's answer carries nothing we use); the total
 * timeout bounds one that never ends. Single owner thread.
 */
#include "notify_http.h"
#include "cfg.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EVENTS_MAX 64

typedef struct slot {
    CURL *easy;
    struct curl_slist *headers;
    bool active;
    uint64_t started_us;
    char errbuf[CURL_ERROR_SIZE];
} slot_t;

struct notify_http {
    CURLM *multi;
    slot_t *slots;
    uint32_t n, inflight;
    notify_http_cfg_t cfg;
    int epfd;
    uint64_t timer_at_ms; /* libcurl's next timeout (monotonic ms); UINT64_MAX = none */
};

/* libcurl: watch socket s for `what` (or stop watching it). */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    notify_http_t *h = userp;
    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL); /* may be closed already: nothing to undo */
        return 0;
    }
    struct epoll_event ev = {.events = 0, .data.fd = s};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev) < 0 && errno == ENOENT && epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev) < 0)
        return -1;
    return 0;
}

/* libcurl: call us back (CURL_SOCKET_TIMEOUT) in timeout_ms; -1 = no timer. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    notify_http_t *h = userp;
    (void)multi;
    h->timer_at_ms = timeout_ms < 0 ? UINT64_MAX : util_mono_ms() + (uint64_t)timeout_ms;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    (void)p;
    (void)ud;
    return size * nmemb; /* discarded */
}

static int s_setup(notify_http_t *h, slot_t *s, uint32_t idx, char *err)
{
    CURL *e = s->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                                                  \
    do {                                                                                                               \
        if (rc == CURLE_OK)                                                                                            \
            rc = curl_easy_setopt(e, opt, val);                                                                        \
    } while (0)
    SET(CURLOPT_PRIVATE, (void *)(uintptr_t)idx);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->cfg.ca_file && *h->cfg.ca_file)
        SET(CURLOPT_CAINFO, h->cfg.ca_file);
    SET(CURLOPT_PROXY, h->cfg.proxy ? h->cfg.proxy : "");
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)h->cfg.connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, (long)h->cfg.timeout_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, h->cfg.user_agent ? h->cfg.user_agent : "presence-notifier");
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_ERRORBUFFER, s->errbuf);
    SET(CURLOPT_POST, 1L);
#undef SET
    if (rc != CURLE_OK) {
        snprintf(err, CFG_ERR_LEN, "libcurl: %s", curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

notify_http_t *notify_http_new(const notify_http_cfg_t *cfg, uint32_t ntargets, char *err)
{
    notify_http_t *h = xcalloc(1, sizeof *h);
    h->epfd = -1;
    h->cfg = *cfg;
    h->n = ntargets;
    h->slots = xcalloc(ntargets ? ntargets : 1, sizeof *h->slots);
    h->timer_at_ms = UINT64_MAX;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (h->epfd < 0) {
        snprintf(err, CFG_ERR_LEN, "epoll_create1: %s", strerror(errno));
        goto fail;
    }
    h->multi = curl_multi_init();
    if (!h->multi || curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK) {
        snprintf(err, CFG_ERR_LEN, "libcurl: curl_multi_init failed");
        goto fail;
    }
    for (uint32_t i = 0; i < ntargets; i++) {
        h->slots[i].easy = curl_easy_init();
        if (!h->slots[i].easy) {
            snprintf(err, CFG_ERR_LEN, "libcurl: curl_easy_init failed");
            goto fail;
        }
        if (s_setup(h, &h->slots[i], i, err) < 0)
            goto fail;
    }
    return h;
fail:
    notify_http_destroy(&h);
    return NULL;
}

void notify_http_destroy(notify_http_t **hp)
{
    notify_http_t *h = *hp;
    if (!h)
        return;
    for (uint32_t i = 0; i < h->n; i++) {
        slot_t *s = &h->slots[i];
        if (s->active && h->multi)
            curl_multi_remove_handle(h->multi, s->easy);
        if (s->easy)
            curl_easy_cleanup(s->easy);
        curl_slist_free_all(s->headers);
    }
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->epfd >= 0)
        close(h->epfd);
    free(h->slots);
    free(h);
    *hp = NULL;
}

int notify_http_check_url(const char *url, char *err)
{
    CURLU *u = curl_url();
    if (!u) {
        snprintf(err, CFG_ERR_LEN, "libcurl: curl_url failed");
        return -1;
    }
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    char *host = NULL;
    if (rc == CURLUE_OK)
        rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_free(host);
    curl_url_cleanup(u);
    if (rc != CURLUE_OK) {
        snprintf(err, CFG_ERR_LEN, "%s", curl_url_strerror(rc));
        return -1;
    }
    return 0;
}

int notify_http_post(notify_http_t *h, uint32_t target, const char *url, const char *const *headers, const void *body,
                     size_t len)
{
    if (target >= h->n || h->slots[target].active)
        return -1;
    slot_t *s = &h->slots[target];
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip before larger bodies. */
    if (l)
        l = curl_slist_append(l, "Expect:");
    for (size_t i = 0; l && headers && headers[i]; i++)
        l = curl_slist_append(l, headers[i]);
    if (!l)
        return -1;
    s->headers = l;
    s->errbuf[0] = '\0';
    CURLcode rc = curl_easy_setopt(s->easy, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body);
    if (rc != CURLE_OK || curl_multi_add_handle(h->multi, s->easy) != CURLM_OK)
        return -1;
    s->active = true;
    s->started_us = util_mono_us();
    h->inflight++;
    return 0;
}

int notify_http_fd(const notify_http_t *h)
{
    return h->epfd;
}

uint64_t notify_http_deadline(const notify_http_t *h)
{
    return h->timer_at_ms;
}

int notify_http_drive(notify_http_t *h, uint64_t now_ms)
{
    struct epoll_event ev[EVENTS_MAX];
    int running = 0, rc = 0;
    int n = epoll_wait(h->epfd, ev, EVENTS_MAX, 0);
    for (int i = 0; i < n; i++) {
        int flags = 0;
        if (ev[i].events & (EPOLLIN | EPOLLHUP))
            flags |= CURL_CSELECT_IN;
        if (ev[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (ev[i].events & EPOLLERR)
            flags |= CURL_CSELECT_ERR;
        if (curl_multi_socket_action(h->multi, ev[i].data.fd, flags, &running) != CURLM_OK)
            rc = -1;
    }
    if (now_ms >= h->timer_at_ms) {
        h->timer_at_ms = UINT64_MAX; /* libcurl sets the next one from inside the call */
        if (curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK)
            rc = -1;
    }
    return rc;
}

int notify_http_wait(notify_http_t *h, int timeout_ms)
{
    uint64_t now = util_mono_ms();
    if (h->timer_at_ms != UINT64_MAX)
        timeout_ms = (int)MIN((uint64_t)timeout_ms, h->timer_at_ms > now ? h->timer_at_ms - now : 0);
    struct pollfd p = {.fd = h->epfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR)
        return -1;
    return notify_http_drive(h, util_mono_ms());
}

int notify_http_next_done(notify_http_t *h, notify_http_done_t *d)
{
    int left;
    CURLMsg *m;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        void *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        uint32_t idx = (uint32_t)(uintptr_t)priv;
        if (idx >= h->n || h->slots[idx].easy != m->easy_handle)
            continue;
        slot_t *s = &h->slots[idx];
        memset(d, 0, sizeof *d);
        d->target = idx;
        d->elapsed_us = util_mono_us() - s->started_us;
        CURLcode res = m->data.result;
        long code = 0;
        if (res == CURLE_OK) {
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
            curl_off_t ra = 0;
            if (curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
                d->retry_after_s = (uint64_t)ra;
            d->status = code >= 100 && code <= 999 ? (int)code : 0;
            if (!d->status)
                snprintf(d->error, sizeof d->error, "no HTTP status");
        } else {
            snprintf(d->error, sizeof d->error, "%s%s%s", curl_easy_strerror(res), s->errbuf[0] ? ": " : "",
                     s->errbuf);
        }
        curl_multi_remove_handle(h->multi, s->easy);
        s->active = false;
        h->inflight--;
        return 1;
    }
    return 0;
}

void notify_http_cancel(notify_http_t *h, uint32_t target)
{
    if (target >= h->n || !h->slots[target].active)
        return;
    curl_multi_remove_handle(h->multi, h->slots[target].easy);
    h->slots[target].active = false;
    h->inflight--;
}

uint32_t notify_http_inflight(const notify_http_t *h)
{
    return h->inflight;
}
