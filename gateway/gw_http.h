/* gw_http.h -- the gateway's one h2o handler: every request enters here (gateway/gw_http.c). */
#ifndef PRESENCE_GW_HTTP_H
#define PRESENCE_GW_HTTP_H

#include <h2o.h>

/* h2o's on_req for the path "/": CORS, route, method, the route's guard, its handler. Always
 * answers (returns 0). Runs on the event-loop thread of the request's connection. */
int gw_http_on_req(h2o_handler_t *self, h2o_req_t *req);
/* The routes' metric labels, by route (for gw_metrics_init); *n is set to their number. */
const char *const *gw_http_route_labels(int *n);

#endif
