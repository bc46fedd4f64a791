/* ws_steps.h -- steps the WebSocket integration tests share (integ_ws.c, integ_ws_faults.c): connect
 * as a user, take the next message of a type, read a record over REST, wait (polling, with a
 * deadline) until a record shows a state, read a gateway metric.
 *
 * Each step asserts (Check) what it needs and fails the test with a message naming what was
 * missing. One test thread.
 */
#ifndef PRESENCE_WS_STEPS_H
#define PRESENCE_WS_STEPS_H

#include "ws_client.h"

#include <jansson.h>
#include <stdint.h>

/* Upgrade GET /api/v2/presence/connect on 127.0.0.1:port as `user` (token in ?access_token=;
 * NULL: no token) with more query `q` ("" or "&device=x..."), extra headers (or NULL). Returns the
 * HTTP status (101: upgraded). */
int ws_step_open(ws_client_t *c, int port, const char *user, const char *q, const char *headers);
/* ws_step_open that must upgrade; returns the welcome (caller owns: json_decref). */
json_t *ws_step_connect(ws_client_t *c, int port, const char *user, const char *q);
/* The next text message, which must be a JSON object of type `type` (caller owns it). */
json_t *ws_step_next(ws_client_t *c, const char *type, int timeout_ms);
/* Nothing arrives within ms (pings are answered by the client and not returned). */
void ws_step_quiet(ws_client_t *c, int ms, const char *why);
/* The server's close frame with `code`, then the end of the connection (frames before it skipped). */
void ws_step_expect_close(ws_client_t *c, int code, const char *why);

/* GET /api/v2/presence/{uid}: the HTTP status; *rec the record (caller owns) on 200, else NULL. */
int ws_step_get(int port, const char *uid, json_t **rec);
/* A REST write as uid itself (token for uid): the HTTP status. */
int ws_step_rest(int port, const char *method, const char *uid, const char *suffix, const char *body);
/* Poll until uid shows `status` with `sessions` live sessions (-1: any), at most timeout_ms. */
void ws_step_wait_record(int port, const char *uid, const char *status, long long sessions, int timeout_ms);
/* The gateway's metric `name` (a series without labels) from /metrics; 0 when absent. */
uint64_t ws_step_metric(int port, const char *name);
/* An RFC 3339 UTC time as the API writes it ("2026-01-15T11:30:00.123456Z"): microseconds since the
 * epoch, 0 when it does not parse. */
uint64_t ws_step_time_us(const char *rfc3339);

#endif
