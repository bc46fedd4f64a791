/* curve.c -- CurveZMQ key loading and a minimal ZAP 1.0 handler (see curve.h and ZeroMQ RFC 27).
 *
 * A ZAP request is: version "1.0", request id, domain, address, routing id, mechanism, then the
 * mechanism's credentials -- for CURVE the client's 32-byte public key. The reply is: version,
 * request id, status code ("200" accept / "400" refuse), status text, user id, metadata.
 */
#include "curve.h"
#include "cfg.h"
#include "log.h"
#include "util.h"
#include "zutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct curve_zap {
    void *sock;
    unsigned char (*keys)[32];
    size_t nkeys;
};

static bool s_z85_ok(const char *k)
{
    if (strlen(k) != CURVE_KEY_LEN)
        return false;
    unsigned char bin[32];
    return zmq_z85_decode(bin, k) != NULL;
}

static void s_trim(char *s)
{
    s[strcspn(s, "\r\n")] = '\0';
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

int curve_key_load(const char *name, char *out, char *err)
{
    char v[256] = "", fname[96];
    if (cfg_str(name, v, sizeof v, err) < 0)
        return -1;
    if (!v[0]) {
        snprintf(fname, sizeof fname, "%s_FILE", name);
        char path[512] = "";
        if (cfg_str(fname, path, sizeof path, err) < 0)
            return -1;
        if (!path[0])
            return 0;
        FILE *f = fopen(path, "r");
        if (!f || !fgets(v, sizeof v, f)) {
            snprintf(err, CFG_ERR_LEN, "%s: cannot read %s", fname, path);
            if (f)
                fclose(f);
            return -1;
        }
        fclose(f);
    }
    s_trim(v);
    if (!s_z85_ok(v)) {
        snprintf(err, CFG_ERR_LEN, "%s: not a 40-character Z85 CurveZMQ key", name);
        return -1;
    }
    memcpy(out, v, CURVE_KEY_LEN + 1);
    return 1;
}

int curve_client(void *sock, const char *srv_pub, const char *cli_pub, const char *cli_sec, char *err)
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, srv_pub, CURVE_KEY_LEN) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, cli_pub, CURVE_KEY_LEN) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cli_sec, CURVE_KEY_LEN) < 0) {
        snprintf(err, CFG_ERR_LEN, "CurveZMQ client keys rejected: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int curve_server(void *sock, const char *srv_sec, char *err)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, srv_sec, CURVE_KEY_LEN) < 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "presence", 8) < 0) {
        snprintf(err, CFG_ERR_LEN, "CurveZMQ server key rejected: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

static int s_add_key(curve_zap_t *z, const char *k, char *err)
{
    char t[128];
    snprintf(t, sizeof t, "%s", k);
    s_trim(t);
    char *p = t;
    while (*p == ' ')
        p++;
    if (!*p || *p == '#')
        return 0;
    if (!s_z85_ok(p)) {
        snprintf(err, CFG_ERR_LEN, "CURVE_ALLOWED_CLIENTS: '%.48s' is not a Z85 public key", p);
        return -1;
    }
    z->keys = xrealloc(z->keys, (z->nkeys + 1) * sizeof *z->keys);
    zmq_z85_decode(z->keys[z->nkeys++], p);
    return 0;
}

curve_zap_t *curve_zap_new(void *zctx, char *err)
{
    curve_zap_t *z = xcalloc(1, sizeof *z);
    char list[8192] = "", path[512] = "";
    if (cfg_str("CURVE_ALLOWED_CLIENTS", list, sizeof list, err) < 0 ||
        cfg_str("CURVE_ALLOWED_CLIENTS_FILE", path, sizeof path, err) < 0)
        goto fail;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (s_add_key(z, tok, err) < 0)
            goto fail;
    if (path[0]) {
        FILE *f = fopen(path, "r");
        if (!f) {
            snprintf(err, CFG_ERR_LEN, "CURVE_ALLOWED_CLIENTS_FILE: cannot read %s", path);
            goto fail;
        }
        char line[256];
        while (fgets(line, sizeof line, f))
            if (s_add_key(z, line, err) < 0) {
                fclose(f);
                goto fail;
            }
        fclose(f);
    }
    if (!z->nkeys) {
        snprintf(err, CFG_ERR_LEN, "CURVE_ALLOWED_CLIENTS: no relay key is authorised (the link would accept nobody)");
        goto fail;
    }
    z->sock = zu_socket(zctx, ZMQ_REP, 0, 0);
    if (!z->sock || zmq_bind(z->sock, "inproc://zeromq.zap.01") < 0) {
        snprintf(err, CFG_ERR_LEN, "ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    return z;
fail:
    curve_zap_destroy(&z);
    return NULL;
}

void curve_zap_destroy(curve_zap_t **zp)
{
    curve_zap_t *z = *zp;
    if (!z)
        return;
    if (z->sock)
        zmq_close(z->sock);
    free(z->keys);
    free(z);
    *zp = NULL;
}

void *curve_zap_socket(curve_zap_t *z)
{
    return z->sock;
}

int curve_zap_handle(curve_zap_t *z)
{
    int refused = 0;
    for (int k = 0; k < 64; k++) {
        zmq_msg_t f[8];
        int n = 0, more = 1;
        bool bad = false;
        while (more) {
            zmq_msg_t scratch, *m = n < 8 ? &f[n] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, z->sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(m);
                if (n == 0)
                    return refused;
                bad = true;
                break;
            }
            more = zmq_msg_more(m);
            if (m == &scratch) {
                zmq_msg_close(m);
                bad = true;
            } else {
                n++;
            }
        }
        bool ok = false;
        /* Local ipc sockets use the NULL mechanism; the TCP link sockets are CURVE servers, so a
         * NULL client can never reach them. Only CURVE clients are checked against the list. */
        if (!bad && n >= 6 && zmq_msg_size(&f[5]) == 4 && memcmp(zmq_msg_data(&f[5]), "NULL", 4) == 0)
            ok = true;
        if (!ok && !bad && n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
            zmq_msg_size(&f[6]) == 32) {
            for (size_t i = 0; i < z->nkeys && !ok; i++)
                ok = memcmp(z->keys[i], zmq_msg_data(&f[6]), 32) == 0;
        }
        if (!ok) {
            refused++;
            LOG_RATELIMITED(LOG_WARN, 1000, "refused a relay whose CurveZMQ key is not authorised");
        }
        /* Reply: version, request id (echoed), status, text, user id, metadata. */
        zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2)
            zmq_send(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        else
            zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? "OK" : "key not authorised", ok ? 2 : 18, ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? "relay" : "", ok ? 5 : 0, ZMQ_SNDMORE);
        zmq_send(z->sock, "", 0, 0);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
    return refused;
}
