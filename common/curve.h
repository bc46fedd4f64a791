/* curve.h -- CurveZMQ keys and the ZAP authenticator for the center <-> relay link.
 *
 * Keys are Z85 text (40 characters), read from an environment variable NAME or from the file
 * named by NAME_FILE (first line). The center authorises relay public keys listed in
 * CURVE_ALLOWED_CLIENTS (comma-separated) or CURVE_ALLOWED_CLIENTS_FILE (one per line): a relay
 * whose key is not listed completes no handshake (libzmq asks our ZAP handler, which says 400).
 */
#ifndef PRESENCE_CURVE_H
#define PRESENCE_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#define CURVE_KEY_LEN 40

/* Load key NAME into out (41 bytes). Returns 1 loaded, 0 not configured, -1 invalid (err set). */
int curve_key_load(const char *name, char *out, char *err);
/* Make `sock` a CURVE client of the server with public key srv_pub. Returns 0 or -1 (err). */
int curve_client(void *sock, const char *srv_pub, const char *cli_pub, const char *cli_sec, char *err);
/* Make `sock` a CURVE server with secret key srv_sec (set before bind). Returns 0 or -1 (err). */
int curve_server(void *sock, const char *srv_sec, char *err);

/* The ZAP authenticator: a REP socket on inproc://zeromq.zap.01 in context zctx, driven by the
 * owner's poll loop. */
typedef struct curve_zap curve_zap_t;
/* Load the allowed client keys (see above). Returns NULL with err when none is configured or a
 * key is invalid. */
curve_zap_t *curve_zap_new(void *zctx, char *err);
void curve_zap_destroy(curve_zap_t **z);
void *curve_zap_socket(curve_zap_t *z);
/* Answer every waiting ZAP request. Returns the number of refusals. */
int curve_zap_handle(curve_zap_t *z);

#endif
