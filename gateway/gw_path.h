/* gw_path.h -- matching a request path against a route pattern (the route table's path column).
 *
 * A pattern is literal text with parameter segments: {id} and {sid} each match one non-empty
 * segment (up to the next '/'), and a trailing [...] group is optional, e.g.
 * "/api/v2/presence/{id}/sessions[/{sid}]". A parameter of another name ({file}) is captured as sid.
 * Pure: no allocation, no state; reentrant. The gateway's
 * router (gw_routes.c) uses it; unit tests call it directly.
 */
#ifndef PRESENCE_GW_PATH_H
#define PRESENCE_GW_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* What a match captured: borrowed pointers into the path (NULL when the pattern has no such
 * parameter, or the optional group holding it was absent). */
typedef struct gw_path_params {
    const char *id, *sid;
    size_t id_len, sid_len;
} gw_path_params_t;

/* Does path[0..len) (without its query) match pattern? Fills *out on a match (cleared first). */
bool gw_path_match(const char *pattern, const char *path, size_t len, gw_path_params_t *out);
/* The pattern has parameters (a literal pattern is tried before any that has). */
bool gw_path_has_params(const char *pattern);

#endif
