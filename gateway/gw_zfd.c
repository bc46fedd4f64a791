/* gw_zfd.c -- a ZeroMQ socket in an h2o loop through its ZMQ_FD (see gw_zfd.h for the recipe).
 *
 * h2o 2.2.5's epoll backend is level-triggered; libzmq's signaler is consumed by the receives, so
 * an idle socket does not spin the loop. One loop thread.
 */
#include "gw_zfd.h"
#include "zutil.h"

#include <unistd.h>

static void s_drain(gw_zfd_t *z)
{
    if (z->drain(z->arg))
        gw_zfd_kick(z); /* stopped at its bound: go on next turn, other sockets get their share */
}

static void on_ready(h2o_socket_t *sock, const char *err)
{
    s_drain(sock->data);
}

static void on_again(h2o_timeout_entry_t *e)
{
    s_drain(H2O_STRUCT_FROM_MEMBER(gw_zfd_t, again, e));
}

int gw_zfd_open(gw_zfd_t *z, h2o_context_t *h2o, void *zsock, bool (*drain)(void *arg), void *arg)
{
    int fd = zu_fd(zsock);
    if (fd < 0)
        return -1;
    z->h2o = h2o;
    z->drain = drain;
    z->arg = arg;
    z->again = (h2o_timeout_entry_t){.cb = on_again};
    z->hs = h2o_evloop_socket_create(h2o->loop, dup(fd), H2O_SOCKET_FLAG_DONT_READ);
    z->hs->data = z;
    h2o_socket_read_start(z->hs, on_ready);
    return 0;
}

void gw_zfd_kick(gw_zfd_t *z)
{
    if (z->hs && !h2o_timeout_is_linked(&z->again))
        h2o_timeout_link(z->h2o->loop, &z->h2o->zero_timeout, &z->again);
}

void gw_zfd_close(gw_zfd_t *z)
{
    if (h2o_timeout_is_linked(&z->again))
        h2o_timeout_unlink(&z->again);
    if (z->hs) {
        h2o_socket_read_stop(z->hs);
        h2o_socket_close(z->hs);
        z->hs = NULL;
    }
}
