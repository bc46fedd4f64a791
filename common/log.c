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
    char line[2600];
    size_t len;
    if (level < 0 || level > LOG_ERROR)
        level = LOG_ERROR;
    if (s_json) {
        len = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"comp\":\"%s\",\"pid\":%d,\"msg\":\"", ts,
                               s_names[level], s_comp, (int)getpid());
        for (const unsigned char *p = (const unsigned char *)msg; *p && len < sizeof line - 8; p++) {
            if (*p == '"' || *p == '\\') {
                line[len++] = '\\';
                line[len++] = (char)*p;
            } else if (*p < 0x20) {
                len += (size_t)snprintf(line + len, sizeof line - len, "\\u%04x", *p);
            } else {
                line[len++] = (char)*p;
            }
        }
        memcpy(line + len, "\"}\n", 3);
        len += 3;
    } else {
        len = (size_t)snprintf(line, sizeof line, "%s %c %s %d %s\n", ts, s_letters[level], s_comp, (int)getpid(), msg);
        if (len >= sizeof line)
            len = sizeof line - 1;
    }
    (void)util_write_all(STDERR_FILENO, line, len);
}
