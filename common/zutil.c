/* zutil.c -- raw libzmq helpers (see zutil.h). */
#include "zutil.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *zu_socket(void *ctx, int type, int sndhwm, int rcvhwm)
{
    void *s = zmq_socket(ctx, type);
    if (!s)
        return NULL;
    int zero = 0;
    int64_t maxmsg = type == ZMQ_PUB || type == ZMQ_XPUB ? ZU_PUB_MAXMSGSIZE : ZU_MAXMSGSIZE;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (sndhwm > 0)
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    if (rcvhwm > 0)
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    return s;
}

void zu_close_frames(zmq_msg_t *frames, int n)
{
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

int zu_recv(void *sock, zmq_msg_t *frames, int max, int *n)
{
    *n = 0;
    int more = 1, dropped = 0;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = *n < max ? &frames[*n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, *n == 0 && !dropped ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(m);
            zu_close_frames(frames, *n);
            *n = 0;
            errno = e;
            return -1;
        }
        more = zmq_msg_more(m);
        if (m == &scratch) {
            zmq_msg_close(m);
            dropped = 1;
        } else {
            (*n)++;
        }
    }
    if (dropped) {
        zu_close_frames(frames, *n);
        *n = 0;
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int zu_send(void *sock, const void *ident, size_t ident_len, const void *data, size_t len)
{
    if (ident && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /* Once the first frame is queued the rest of the multipart message is accepted atomically. */
    if (zmq_send(sock, data, len, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

static void s_free(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int zu_send_owned(void *sock, const void *ident, size_t ident_len, void *data, size_t len)
{
    if (ident && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        free(data);
        return -1;
    }
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, data, len, s_free, NULL) < 0) {
        free(data);
        return -1;
    }
    if (zmq_msg_send(&m, sock, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return -1;
    }
    return 0;
}

int zu_fd(void *sock)
{
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &len) < 0)
        return -1;
    return fd;
}

int zu_readable(void *sock)
{
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) < 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

void zu_signal_ready(const char *line)
{
    const char *v = getenv("READY_FD");
    if (!v || !*v)
        return;
    char *end;
    long fd = strtol(v, &end, 10);
    if (*end || fd < 3 || fd > 65535)
        return;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "ready %s\n", line);
    if (n > 0)
        (void)util_write_all((int)fd, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
    close((int)fd);
    unsetenv("READY_FD");
}
