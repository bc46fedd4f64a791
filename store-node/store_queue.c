/* store_queue.c -- the two queues between the store-node's main thread and the threads that write
 * (store_node_int.h draws them): jobs main -> writer (queue_lock + queue_cond, bounded by
 * STORE_QUEUE_MAX items), completions writer or raft thread -> main (done_lock + an eventfd the
 * main loop polls).
 *
 * Below the writer (store_writer.c) and the replication glue (store_repl.c): both report through
 * it, neither calls the other's thread code. Locks: queue_lock and done_lock are never held
 * together, and never while calling anything else. Any thread.
 */
#include "store_node_int.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* ==== completions (writer -> main) ============================================================= */

void store_queue_complete(store_node_t *sn, completion_t *c)
{
    pthread_mutex_lock(&sn->done_lock);
    if (sn->d_tail)
        sn->d_tail->next = c;
    else
        sn->d_head = c;
    sn->d_tail = c;
    pthread_mutex_unlock(&sn->done_lock);
    uint64_t one = 1;
    if (write(sn->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd write: %s", strerror(errno));
}

completion_t *store_queue_take(store_node_t *sn)
{
    uint64_t v;
    if (read(sn->efd, &v, sizeof v) < 0 && errno != EAGAIN)
        LOG_RATELIMITED(LOG_ERROR, 1000, "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&sn->done_lock);
    completion_t *c = sn->d_head;
    sn->d_head = sn->d_tail = NULL;
    pthread_mutex_unlock(&sn->done_lock);
    return c;
}

/* ==== the job queue (main -> writer) =========================================================== */

bool store_queue_reserve(store_node_t *sn, uint64_t n)
{
    pthread_mutex_lock(&sn->queue_lock);
    bool full = sn->q_items + n > sn->cfg.queue_max && sn->q_items > 0;
    if (!full)
        sn->q_items += n;
    pthread_mutex_unlock(&sn->queue_lock);
    return !full;
}

void store_queue_push(store_node_t *sn, job_t *j)
{
    pthread_mutex_lock(&sn->queue_lock);
    if (sn->q_tail)
        sn->q_tail->next = j;
    else
        sn->q_head = j;
    sn->q_tail = j;
    pthread_cond_signal(&sn->queue_cond);
    pthread_mutex_unlock(&sn->queue_lock);
}

void store_queue_wake(store_node_t *sn)
{
    pthread_mutex_lock(&sn->queue_lock);
    sn->kick = true;
    pthread_cond_signal(&sn->queue_cond);
    pthread_mutex_unlock(&sn->queue_lock);
}

void store_queue_signal(store_node_t *sn)
{
    pthread_mutex_lock(&sn->queue_lock);
    pthread_cond_signal(&sn->queue_cond);
    pthread_mutex_unlock(&sn->queue_lock);
}

void store_queue_release(store_node_t *sn, uint64_t n)
{
    pthread_mutex_lock(&sn->queue_lock);
    sn->q_items -= n;
    pthread_mutex_unlock(&sn->queue_lock);
}

uint64_t store_queue_queued(store_node_t *sn)
{
    pthread_mutex_lock(&sn->queue_lock);
    uint64_t n = sn->q_items;
    pthread_mutex_unlock(&sn->queue_lock);
    return n;
}

/* ==== life ======================================================================================= */

int store_queue_init(store_node_t *sn)
{
    pthread_mutex_init(&sn->queue_lock, NULL);
    pthread_mutex_init(&sn->done_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sn->queue_cond, &ca);
    pthread_condattr_destroy(&ca);
    sn->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return sn->efd < 0 ? -1 : 0;
}

void store_queue_fini(store_node_t *sn)
{
    if (sn->efd >= 0)
        close(sn->efd);
    sn->efd = -1;
    pthread_mutex_destroy(&sn->queue_lock);
    pthread_mutex_destroy(&sn->done_lock);
    pthread_cond_destroy(&sn->queue_cond);
}
