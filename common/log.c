/* log.c -- stderr logging in text or JSON lines (see log.h). One write(2) per line so lines from
 * several threads or processes sharing stderr never interleave mid-line. */
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <unistd.h>

int log_min_level = LOG_INFO;
static bool s_json;
static char s_comp[16] = "?";

static const char *const s_names[] = {"debug", "info", "notice", "warn", "error"};
static const char s_letters[] = "DINWE";

int log_init(const char *component, char *err, size_t errlen)
{
    snprintf(s_comp, sizeof s_comp, "%s", component);
    const char *lvl = getenv("LOG_LEVEL");
    if (lvl && *lvl) {
        int found = -1;
        for (int i = 0; i < 5; i++)
            if (strcasecmp(lvl, s_names[i]) == 0)
                found = i;
        if (strcasecmp(lvl, "warning") == 0)
            found = LOG_WARN;
        if (found < 0) {
            snprintf(err, errlen, "LOG_LEVEL: invalid value '%s' (debug|info|notice|warn|error)", lvl);
            return -1;
        }
        log_min_level = found;
    }
    const char *fmt = getenv("LOG_FORMAT");
    if (fmt && *fmt) {
        if (strcasecmp(fmt, "json") == 0)
            s_json = true;
        else if (strcasecmp(fmt, "text") == 0)
            s_json = false;
        else {
            snprintf(err, errlen, "LOG_FORMAT: invalid value '%s' (json|text)", fmt);
            return -1;
        }
    }
    return 0;
}

bool log_ratelimit_ok(uint64_t *next_ms, uint64_t interval_ms)
{
    uint64_t now = util_mono_ms();
    if (now < *next_ms)
        return false;
    *next_ms = now + interval_ms;
    return true;
}

/* ==== JSON lines ============================================================================== *
 * A line is {"ts","level","proc","pid","msg"} plus one field per trailing key=value token of the
 * message ("ready http=127.0.0.1:8080 threads=2" gives msg "ready", "http" and "threads": 2), so a
 * log pipeline gets real fields without every call site changing. A value is a JSON number when it
 * is a plain integer, true/false, else a string; keys that would shadow the fixed ones get "x_". */

typedef struct jline {
    char *p;
    size_t len, cap;
} jline_t;

static void s_put(jline_t *j, const char *s, size_t n)
{
    if (j->len + n > j->cap)
        n = j->cap - j->len;
    memcpy(j->p + j->len, s, n);
    j->len += n;
}

static size_t s_utf8_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t k = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (!k || k > n)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return util_valid_message((const char *)p, k) ? k : 0;
}

/* A JSON string body (no quotes): escapes, control characters, ill-formed UTF-8 as U+FFFD. */
static void s_put_jstr(jline_t *j, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n && j->len + 8 < j->cap;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            s_put(j, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[8];
            s_put(j, e, (size_t)snprintf(e, sizeof e, "\\u%04x", c));
            i++;
        } else if (c < 0x80) {
            s_put(j, (const char *)p + i, 1);
            i++;
        } else {
            size_t k = s_utf8_len(p + i, n - i);
            if (k) {
                s_put(j, (const char *)p + i, k);
                i += k;
            } else {
                s_put(j, "\\ufffd", 6);
                i++;
            }
        }
    }
}

static bool s_is_key(const char *s, size_t n)
{
    if (n == 0 || n > 40 || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

/* Where the trailing key=value tokens of msg start (len when there are none). */
static size_t s_fields_start(const char *msg, size_t len)
{
    size_t start = len, end = len;
    while (end > 0) {
        size_t b = end;
        while (b > 0 && msg[b - 1] != ' ')
            b--;
        const char *eq = memchr(msg + b, '=', end - b);
        if (!eq || eq == msg + b || eq + 1 == msg + end || !s_is_key(msg + b, (size_t)(eq - (msg + b))))
            break;
        start = b;
        if (b == 0)
            break;
        end = b - 1;
    }
    return start;
}

static void s_put_value(jline_t *j, const char *v, size_t n)
{
    bool num = n > 0 && n <= 18;
    for (size_t i = (n && v[0] == '-') ? 1 : 0; i < n && num; i++)
        num = v[i] >= '0' && v[i] <= '9';
    if (num && !(n == 1 && v[0] == '-') && !(n > 1 && v[v[0] == '-'] == '0')) {
        s_put(j, v, n);
    } else if ((n == 4 && memcmp(v, "true", 4) == 0) || (n == 5 && memcmp(v, "false", 5) == 0)) {
        s_put(j, v, n);
    } else {
        s_put(j, "\"", 1);
        s_put_jstr(j, v, n);
        s_put(j, "\"", 1);
    }
}

static size_t s_json_line(char *line, size_t cap, const char *ts, int level, const char *msg)
{
    jline_t j = {line, 0, cap - 2};
    char head[200];
    s_put(&j, head,
          (size_t)snprintf(head, sizeof head, "{\"ts\":\"%s\",\"level\":\"%s\",\"proc\":\"%s\",\"pid\":%d,\"msg\":\"", ts,
                           s_names[level], s_comp, (int)getpid()));
    size_t len = strlen(msg), fs = s_fields_start(msg, len);
    size_t mlen = fs == len ? len : (fs ? fs - 1 : 0);
    s_put_jstr(&j, msg, mlen);
    s_put(&j, "\"", 1);
    for (size_t i = fs; i < len;) {
        size_t e = i;
        while (e < len && msg[e] != ' ')
            e++;
        const char *eq = memchr(msg + i, '=', e - i);
        size_t kl = (size_t)(eq - (msg + i));
        static const char *const fixed[] = {"ts", "level", "proc", "pid", "msg"};
        bool shadow = false;
        for (size_t f = 0; f < sizeof fixed / sizeof fixed[0]; f++)
            shadow |= strlen(fixed[f]) == kl && memcmp(fixed[f], msg + i, kl) == 0;
        s_put(&j, shadow ? ",\"x_" : ",\"", shadow ? 4 : 2);
        s_put(&j, msg + i, kl);
        s_put(&j, "\":", 2);
        s_put_value(&j, eq + 1, (size_t)(msg + e - (eq + 1)));
        i = e + 1;
    }
    memcpy(line + j.len, "}\n", 2);
    return j.len + 2;
}

void log_write(int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char ts[UTIL_TIME_LEN];
    util_fmt_time(util_now_us(), ts);
    char line[4096];
    size_t len;
    if (level < 0 || level > LOG_ERROR)
        level = LOG_ERROR;
    if (s_json) {
        len = s_json_line(line, sizeof line, ts, level, msg);
    } else {
        len = (size_t)snprintf(line, sizeof line, "%s %c %s %d %s\n", ts, s_letters[level], s_comp, (int)getpid(), msg);
        if (len >= sizeof line)
            len = sizeof line - 1;
    }
    (void)util_write_all(STDERR_FILENO, line, len);
}
