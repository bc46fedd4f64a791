/* zloop.c -- the ZMQ_FD poll loop (see zloop.h for the contract it implements).
 *
 * The pollfd array is built as sources are added: a socket source contributes its ZMQ_FD, a
 * drainer one per socket, an fd source its fd. The fds are never read or written here (libzmq
 * owns the ZMQ_FDs; the owner reads its eventfd in its callback). One thread.
 */
#include "zloop.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

enum { SRC_SOCKET = 1, SRC_FD, SRC_DRAINER };

typedef struct source {
    int kind;
    void *arg;
    void *socks[2];
    bool sent[2];
    int nsocks;
    int fd;
    int pfd; /* index of the source's first pollfd */
    zloop_msg_fn msg;
    zloop_fd_fn on_fd;
    zloop_drain_fn drain;
} source_t;

struct zloop {
    zloop_hooks_t hooks;
    uint64_t max_wait_ms;
    source_t src[ZLOOP_SOURCES_MAX];
    int nsrc;
    struct pollfd pfd[ZLOOP_SOURCES_MAX * 2];
    int npfd;
    bool again; /* a drain stopped at its bound, or a post-send check found a message */
    bool stopped;
};

zloop_t *zloop_new(const zloop_hooks_t *hooks, uint64_t max_wait_ms)
{
    zloop_t *l = xcalloc(1, sizeof *l);
    if (hooks)
        l->hooks = *hooks;
    l->max_wait_ms = max_wait_ms;
    l->again = true; /* drain once before the first wait */
    return l;
}

void zloop_destroy(zloop_t **lp)
{
    free(*lp);
    *lp = NULL;
}

static source_t *s_add(zloop_t *l, int kind, void *arg, int nfds)
{
    if (l->nsrc == ZLOOP_SOURCES_MAX || l->npfd + nfds > (int)ARRAY_LEN(l->pfd))
        return NULL;
    source_t *s = &l->src[l->nsrc++];
    *s = (source_t){.kind = kind, .arg = arg, .fd = -1, .pfd = l->npfd};
    return s;
}

static int s_add_socks(zloop_t *l, source_t *s, void *const *socks, int n)
{
    for (int i = 0; i < n; i++) {
        int fd = zu_fd(socks[i]);
        if (fd < 0) {
            l->nsrc--;
            return -1;
        }
        s->socks[i] = socks[i];
        l->pfd[s->pfd + i] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    s->nsocks = n;
    l->npfd += n;
    return 0;
}

int zloop_add_socket(zloop_t *l, void *sock, zloop_msg_fn fn, void *arg)
{
    source_t *s = s_add(l, SRC_SOCKET, arg, 1);
    if (!s)
        return -1;
    s->msg = fn;
    return s_add_socks(l, s, &sock, 1);
}

int zloop_add_drainer(zloop_t *l, void *const *socks, int n, zloop_drain_fn fn, void *arg)
{
    source_t *s = n >= 1 && n <= 2 ? s_add(l, SRC_DRAINER, arg, n) : NULL;
    if (!s)
        return -1;
    s->drain = fn;
    return s_add_socks(l, s, socks, n);
}

int zloop_add_fd(zloop_t *l, int fd, zloop_fd_fn fn, void *arg)
{
    source_t *s = fd >= 0 ? s_add(l, SRC_FD, arg, 1) : NULL;
    if (!s)
        return -1;
    s->on_fd = fn;
    s->fd = fd;
    l->pfd[l->npfd++] = (struct pollfd){.fd = fd, .events = POLLIN};
    return 0;
}

void zloop_sent(zloop_t *l, void *sock)
{
    for (int i = 0; i < l->nsrc; i++)
        for (int k = 0; k < l->src[i].nsocks; k++)
            if (l->src[i].socks[k] == sock) {
                l->src[i].sent[k] = true;
                return;
            }
}

/* Rule 2: a socket sent on since the last wait may hold a message whose edge the send consumed. */
static void s_post_send_checks(zloop_t *l)
{
    for (int i = 0; i < l->nsrc; i++)
        for (int k = 0; k < l->src[i].nsocks; k++) {
            if (!l->src[i].sent[k])
                continue;
            l->src[i].sent[k] = false;
            if (!l->again && zu_readable(l->src[i].socks[k]))
                l->again = true;
        }
}

/* Rule 1: drain to EAGAIN, at most ZLOOP_DRAIN_MAX messages. */
static void s_drain_socket(zloop_t *l, source_t *s, const volatile sig_atomic_t *stop)
{
    int k;
    for (k = 0; k < ZLOOP_DRAIN_MAX && !(stop && *stop); k++) {
        zmq_msg_t frames[ZU_FRAMES_MAX];
        int n;
        if (zu_recv(s->socks[0], frames, ZU_FRAMES_MAX, &n) < 0) {
            if (errno == EPROTO) {
                s->msg(s->arg, s->socks[0], frames, 0);
                continue;
            }
            return;
        }
        s->msg(s->arg, s->socks[0], frames, n);
        zu_close_frames(frames, n);
    }
    if (k == ZLOOP_DRAIN_MAX)
        l->again = true;
}

int zloop_turn(zloop_t *l, const volatile sig_atomic_t *stop)
{
    uint64_t now = util_mono_ms();
    uint64_t next = l->hooks.turn ? l->hooks.turn(l->hooks.arg, now) : ZLOOP_NEVER;
    s_post_send_checks(l);
    uint64_t timeout = l->again || next <= now ? 0 : MIN(next - now, l->max_wait_ms);
    uint64_t before = util_mono_ms();
    if (poll(l->pfd, (nfds_t)l->npfd, (int)timeout) < 0 && errno != EINTR)
        return -1;
    if (l->hooks.woke)
        l->hooks.woke(l->hooks.arg, util_mono_ms() - before, timeout);
    l->again = false;
    for (int i = 0; i < l->nsrc; i++) {
        source_t *s = &l->src[i];
        if (s->kind == SRC_SOCKET)
            s_drain_socket(l, s, stop);
        else if (s->kind == SRC_DRAINER && s->drain(s->arg))
            l->again = true;
        else if (s->kind == SRC_FD && (l->pfd[s->pfd].revents & POLLIN))
            s->on_fd(s->arg, s->fd);
    }
    if (l->hooks.after)
        l->hooks.after(l->hooks.arg);
    return 0;
}

int zloop_run(zloop_t *l, const volatile sig_atomic_t *stop)
{
    int rc = 0;
    while (!(stop && *stop) && !l->stopped && rc == 0)
        rc = zloop_turn(l, stop);
    l->stopped = false;
    return rc;
}

void zloop_stop(zloop_t *l)
{
    l->stopped = true;
}
