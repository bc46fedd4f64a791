/* leader.c -- which member of a replicated center a client sends its commands to (leader.h).
 *
 * Key decision: hints carry the term when the member knows it (a leading member's PONG), and a
 * hint of a lower term than one already followed is ignored, so a cut-off old leader that has not
 * stepped down yet cannot pull clients back from the new one. Hints without a term (a heartbeat,
 * an ENOTLEADER answer) are taken as they come: they name the leader its sender knows now.
 *
 * Pure; one owner thread.
 */
#include "leader.h"
#include "cfg.h"

#include <stdio.h>
#include <string.h>

int leader_parse(leader_t *l, const char *list, const char *what, char *err)
{
    memset(l, 0, sizeof *l);
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            snprintf(err, CFG_ERR_LEN, "%s: empty endpoint in the list (want EP[,EP...] in member order)", what);
            return -1;
        }
        if (l->n == PROTO_MEMBERS_MAX) {
            snprintf(err, CFG_ERR_LEN, "%s: more than %d endpoints", what, PROTO_MEMBERS_MAX);
            return -1;
        }
        if (len >= LEADER_EP_MAX) {
            snprintf(err, CFG_ERR_LEN, "%s: endpoint %u too long (at most %d bytes)", what, l->n + 1, LEADER_EP_MAX - 1);
            return -1;
        }
        memcpy(l->ep[l->n], p, len);
        l->ep[l->n][len] = '\0';
        l->n++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

bool leader_hint(leader_t *l, uint64_t member, uint64_t term)
{
    if (member == 0 || member > l->n)
        return false;
    if (term) {
        if (term < l->term)
            return false; /* an older leadership than one already followed */
        l->term = term;
    }
    if (member - 1 == l->cur)
        return false;
    l->cur = (unsigned)(member - 1);
    l->switches++;
    return true;
}

bool leader_next(leader_t *l)
{
    if (l->n < 2)
        return false;
    l->cur = (l->cur + 1) % l->n;
    l->switches++;
    return true;
}

const char *leader_endpoint(const leader_t *l)
{
    return l->ep[l->cur];
}
