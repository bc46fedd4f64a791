/* log.h -- one logging macro for every process.
 *
 * Lines go to stderr, one per event, as text
 *   2026-11-23T10:00:00.123456Z I gw 1234 message key=value
 * or, with LOG_FORMAT=json, as one JSON object per line whose fields are the message's trailing
 * key=value tokens (integers and true/false as JSON values, the rest as strings):
 *   {"ts":"...","level":"info","proc":"gw","pid":1234,"msg":"message","key":"value","n":3}
 * The level is checked before formatting, so disabled levels cost one comparison.
 * log_init() is called once at startup, before threads start; LOG() is thread-safe after that.
 */
#ifndef PRESENCE_LOG_H
#define PRESENCE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_NOTICE, LOG_WARN, LOG_ERROR };

extern int log_min_level;

/* Configure from LOG_LEVEL / LOG_FORMAT. Returns 0, or -1 with a message in err (names the variable). */
int log_init(const char *component, char *err, size_t errlen);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG(level, ...)                                                                                                    \
    do {                                                                                                               \
        if ((level) >= log_min_level)                                                                                  \
            log_write((level), __VA_ARGS__);                                                                           \
    } while (0)

/* Rate-limited logging: at most one line per `interval_ms` per call site; counts what it skipped. */
#define LOG_RATELIMITED(level, interval_ms, ...)                                                                         \
    do {                                                                                                               \
        static uint64_t log_rl_next_;                                                                                  \
        static unsigned log_rl_skipped_;                                                                               \
        if ((level) >= log_min_level) {                                                                                \
            if (log_ratelimit_ok(&log_rl_next_, (interval_ms))) {                                                     \
                if (log_rl_skipped_)                                                                                   \
                    log_write((level), "(%u similar lines suppressed)", log_rl_skipped_);                             \
                log_rl_skipped_ = 0;                                                                                   \
                log_write((level), __VA_ARGS__);                                                                       \
            } else {                                                                                                   \
                log_rl_skipped_++;                                                                                     \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

bool log_ratelimit_ok(uint64_t *next_ms, uint64_t interval_ms);

#endif
