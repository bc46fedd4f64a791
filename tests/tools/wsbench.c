/* wsbench.c -- throughput of the gateway's WebSocket engine (gw_wsframe.h, gw_wsmsg.h) on one core,
 * no sockets: frame decoding (unmask, checks, reassembly), message parsing, frame encoding.
 *
 *   wsbench [SECONDS_PER_CASE]     (default 1; one line per case)
 *
 * small50-64k / small50-8k: masked 50-byte text frames, 64 KiB of them per pass, fed whole or in
 * 8 KiB reads (h2o's read size: frames cut at read borders); text16k / binary64k: large frames
 * (unmask + UTF-8, unmask only); frag64k: a 64 KiB text message in 1 KiB fragments; parse-set:
 * decode + gw_wsmsg_parse of a small set message; encode200: gw_wsframe_encode of 200 bytes.
 * Decoding unmasks in place, so each pass decodes a fresh copy of the input; the copies' time is
 * measured apart and subtracted (the kernel's copy into the read buffer is not ours).
 * Prints: wsbench case=NAME frames=N bytes=N secs=S MB_s=X frames_s=Y ns_frame=Z
 */
#include "cli.h"
#include "gw_lib.h"
#include "gw_wsframe.h"
#include "gw_wsmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t s_frame(uint8_t *out, unsigned b0, const void *p, size_t n, uint32_t salt)
{
    uint8_t key[4] = {(uint8_t)salt, (uint8_t)(salt >> 8), 0x5a, 0xc3};
    size_t o = 0;
    out[o++] = (uint8_t)b0;
    if (n < 126) {
        out[o++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        out[o++] = 0x80 | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    } else {
        out[o++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[o++] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    memcpy(out + o, key, 4);
    o += 4;
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++)
        out[o + i] = s[i] ^ key[i & 3];
    return o + n;
}

typedef struct result {
    uint64_t frames, bytes;
    double secs;
} result_t;

/* Decode `in` (len bytes, `per_pass` messages) repeatedly for `secs`, in reads of `rd` bytes.
 * With parse, every TEXT also goes through gw_wsmsg_parse. */
static result_t s_decode_case(const uint8_t *in, size_t len, uint64_t per_pass, size_t rd, bool parse, double secs)
{
    uint8_t *work = malloc(len);
    gw_wsframe_dec_t d;
    gw_wsframe_dec_init(&d, 0);
    result_t r = {0, 0, 0};
    uint64_t passes = 0, sink = 0;
    double t0 = s_now();
    while (s_now() - t0 < secs) {
        for (int rep = 0; rep < 16; rep++) {
            memcpy(work, in, len);
            for (size_t off = 0; off < len;) {
                size_t k = len - off < rd ? len - off : rd, pos = 0;
                for (;;) {
                    gw_wsframe_event_t ev;
                    size_t used;
                    int rc = gw_wsframe_decode(&d, work + off + pos, k - pos, &used, &ev);
                    pos += used;
                    if (rc == GW_WSFRAME_MORE)
                        break;
                    if (rc != GW_WSFRAME_TEXT && rc != GW_WSFRAME_BINARY) {
                        fprintf(stderr, "wsbench: unexpected result %d (%s)\n", rc, ev.reason ? ev.reason : "");
                        exit(1);
                    }
                    sink += ev.len;
                    if (parse) {
                        gw_wsmsg_t m;
                        char err[GW_WSMSG_ERR_LEN];
                        if (gw_wsmsg_parse((const char *)ev.data, ev.len, NULL, &m, err, sizeof err) != 0) {
                            fprintf(stderr, "wsbench: parse: %s\n", err);
                            exit(1);
                        }
                        sink += (uint64_t)m.type;
                        gw_wsmsg_fini(&m);
                    }
                }
                off += k;
            }
            passes++;
        }
    }
    double total = s_now() - t0;
    /* the copies alone, the same number of times */
    double c0 = s_now();
    for (uint64_t i = 0; i < passes; i++) {
        memcpy(work, in, len);
        __asm__ volatile("" : : "r"(work) : "memory");
    }
    double copy = s_now() - c0;
    r.frames = passes * per_pass;
    r.bytes = passes * len;
    r.secs = total - copy;
    if (sink == 0)
        fprintf(stderr, "wsbench: nothing decoded\n");
    gw_wsframe_dec_fini(&d);
    free(work);
    return r;
}

static void s_print(const char *name, result_t r)
{
    printf("wsbench case=%s frames=%llu bytes=%llu secs=%.3f MB_s=%.1f frames_s=%.0f ns_frame=%.1f\n", name,
           (unsigned long long)r.frames, (unsigned long long)r.bytes, r.secs, (double)r.bytes / r.secs / 1e6,
           (double)r.frames / r.secs, r.secs * 1e9 / (double)r.frames);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "wsbench", "[SECONDS_PER_CASE]",
             "Throughput of the WebSocket engine: frame decoding, message parsing, frame encoding (one core, no I/O).");
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(secs > 0)) {
        fprintf(stderr, "usage: wsbench [SECONDS_PER_CASE]\n");
        return 2;
    }
    static uint8_t buf[1 << 20];
    static char payload[1 << 17];

    /* 50-byte text frames: a realistic small client message */
    const char *small = "{\"type\":\"activity\",\"pad\":\"0123456789abcdefghijkl\"}";
    size_t sl = strlen(small), n = 0, frames = 0;
    if (sl != 50) {
        fprintf(stderr, "wsbench: small message is %zu bytes\n", sl);
        return 1;
    }
    while (n + 56 <= 65536)
        n += s_frame(buf + n, 0x81, small, sl, (uint32_t)frames++);
    s_print("small50-64k", s_decode_case(buf, n, frames, n, false, secs));
    s_print("small50-8k", s_decode_case(buf, n, frames, 8192, false, secs));

    memset(payload, 'a', 16384);
    n = 0, frames = 0;
    while (n + 16384 + 8 <= sizeof buf && frames < 32)
        n += s_frame(buf + n, 0x81, payload, 16384, (uint32_t)frames++);
    s_print("text16k", s_decode_case(buf, n, frames, n, false, secs));

    for (size_t i = 0; i < 65536; i++)
        payload[i] = (char)(i * 7);
    n = 0, frames = 0;
    while (n + 65536 + 14 <= sizeof buf && frames < 8)
        n += s_frame(buf + n, 0x82, payload, 65536, (uint32_t)frames++);
    s_print("binary64k", s_decode_case(buf, n, frames, n, false, secs));

    memset(payload, 'f', 65536);
    n = 0;
    for (int f = 0; f < 64; f++)
        n += s_frame(buf + n, (f == 0 ? 0x01 : 0x00) | (f == 63 ? 0x80 : 0), payload + f * 1024, 1024, (uint32_t)f);
    s_print("frag64k", s_decode_case(buf, n, 1, n, false, secs));

    const char *set = "{\"type\":\"set\",\"status\":\"away\",\"message\":\"brb\"}";
    n = 0, frames = 0;
    while (n + 64 <= 65536)
        n += s_frame(buf + n, 0x81, set, strlen(set), (uint32_t)frames++);
    s_print("parse-set", s_decode_case(buf, n, frames, n, true, secs));

    /* encoding a 200-byte presence message */
    memset(payload, 'p', 200);
    uint64_t enc = 0, sink = 0;
    double t0 = s_now();
    while (s_now() - t0 < secs)
        for (int i = 0; i < 10000; i++, enc++) {
            sink += gw_wsframe_encode(buf + (enc & 1023), 512, GW_WSFRAME_OP_TEXT, payload, 200);
            __asm__ volatile("" : : "r"(buf) : "memory");
        }
    result_t r = {enc, sink, s_now() - t0};
    s_print("encode200", r);
    return 0;
}
