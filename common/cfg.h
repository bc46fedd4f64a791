/* cfg.h -- typed, strict reading of environment variables.
 *
 * Every getter returns 0 when the variable is unset or empty (out keeps the default) or valid
 * (out is set), and -1 when it is set but invalid; then `err` names the variable and the rule.
 * An invalid value is always a startup error, never a silent fallback (API.md, Configuration).
 */
#ifndef PRESENCE_CFG_H
#define PRESENCE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_ERR_LEN 256

int cfg_u64(const char *name, uint64_t min, uint64_t max, uint64_t *out, char *err);
int cfg_bool(const char *name, bool *out, char *err);
/* String: copied into out (size outlen); too long is an error. */
int cfg_str(const char *name, char *out, size_t outlen, char *err);
/* One of a NULL-terminated list of choices; *out is the index. */
int cfg_enum(const char *name, const char *const *choices, int *out, char *err);
/* Duration: integer with optional unit ms|s|m|h|d (no unit = `default_unit_ms`), result in ms. */
int cfg_duration_ms(const char *name, uint64_t default_unit_ms, uint64_t min_ms, uint64_t max_ms, uint64_t *out, char *err);

#endif
