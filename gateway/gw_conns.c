/* gw_conns.c -- the connections a gateway thread can cut (see gw_conns.h).
 *
 * Keyed by the h2o socket's address in an idtab; each entry is one allocation freed by the
 * socket's on_close hook. One thread.
 */
#include "gw_conns.h"
#include "idtab.h"
#include "util.h"

#include <stdlib.h>
#include <sys/socket.h>

typedef struct conn {
    idtab_link_t link; /* by the h2o socket's address */
    gw_conns_t *owner;
    h2o_socket_t *sock;
    int fd;
} conn_t;

struct gw_conns {
    idtab_t tab;
};

gw_conns_t *gw_conns_new(void)
{
    gw_conns_t *c = xcalloc(1, sizeof *c);
    idtab_init(&c->tab);
    return c;
}

void gw_conns_destroy(gw_conns_t **cp)
{
    gw_conns_t *c = *cp;
    if (!c)
        return;
    /* Sockets still open keep their hook: detach them so a later close frees nothing of ours. */
    idtab_iter_t it;
    idtab_iter_init(&it, &c->tab);
    for (idtab_link_t *l; (l = idtab_iter_next(&it));) {
        conn_t *e = IDTAB_ENTRY(l, conn_t, link);
        idtab_remove(&c->tab, l);
        e->sock->on_close.cb = NULL;
        e->sock->on_close.data = NULL;
        free(e);
    }
    idtab_fini(&c->tab);
    free(c);
    *cp = NULL;
}

static void on_conn_close(void *data)
{
    conn_t *e = data;
    idtab_remove(&e->owner->tab, &e->link);
    free(e);
}

void gw_conns_add(gw_conns_t *c, h2o_socket_t *sock, int fd)
{
    conn_t *e = xmalloc(sizeof *e);
    e->link.id = (uint64_t)(uintptr_t)sock;
    e->owner = c;
    e->sock = sock;
    e->fd = fd;
    idtab_add(&c->tab, &e->link);
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = e;
}

int gw_conns_cut(gw_conns_t *c, h2o_req_t *req)
{
    if (req->version >= 0x200 || !req->conn->callbacks->get_socket)
        return -1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    idtab_link_t *l = sock ? idtab_find(&c->tab, (uint64_t)(uintptr_t)sock) : NULL;
    if (!l)
        return -1;
    /* The pending write fails; h2o closes the connection and stops the response. */
    shutdown(IDTAB_ENTRY(l, conn_t, link)->fd, SHUT_RDWR);
    return 0;
}
