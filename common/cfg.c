/* cfg.c -- strict environment parsing (see cfg.h). */
#include "cfg.h"
#include "envreg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *s_get(const char *name)
{
    /* Every setting is listed in envreg.c (--help, the unknown-variable warning and the docs
     * check rely on it): reading one that is not is a programming error, caught by any test
     * that starts the binary. */
    if (!envreg_find(name)) {
        fprintf(stderr, "internal error: environment variable %s is not listed in common/envreg.c\n", name);
        abort();
    }
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static int s_parse_u64(const char *v, uint64_t *out, const char **end)
{
    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    char *e;
    unsigned long long x = strtoull(v, &e, 10);
    if (errno)
        return -1;
    *out = x;
    *end = e;
    return 0;
}

int cfg_u64(const char *name, uint64_t min, uint64_t max, uint64_t *out, char *err)
{
    const char *v = s_get(name);
    if (!v)
        return 0;
    uint64_t x;
    const char *e;
    if (s_parse_u64(v, &x, &e) < 0 || *e != '\0' || x < min || x > max) {
        snprintf(err, CFG_ERR_LEN, "%s: invalid value '%.64s' (want an integer in %llu..%llu)", name, v,
                 (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = x;
    return 0;
}

int cfg_bool(const char *name, bool *out, char *err)
{
    const char *v = s_get(name);
    if (!v)
        return 0;
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    snprintf(err, CFG_ERR_LEN, "%s: invalid value '%.64s' (want true|false)", name, v);
    return -1;
}

int cfg_str(const char *name, char *out, size_t outlen, char *err)
{
    const char *v = s_get(name);
    if (!v)
        return 0;
    size_t n = strlen(v);
    if (n >= outlen) {
        snprintf(err, CFG_ERR_LEN, "%s: value too long (%zu bytes, at most %zu)", name, n, outlen - 1);
        return -1;
    }
    memcpy(out, v, n + 1);
    return 0;
}

int cfg_enum(const char *name, const char *const *choices, int *out, char *err)
{
    const char *v = s_get(name);
    if (!v)
        return 0;
    for (int i = 0; choices[i]; i++) {
        if (strcasecmp(v, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char list[128] = "";
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? "|" : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    snprintf(err, CFG_ERR_LEN, "%s: invalid value '%.64s' (want %s)", name, v, list);
    return -1;
}

int cfg_duration_ms(const char *name, uint64_t default_unit_ms, uint64_t min_ms, uint64_t max_ms, uint64_t *out, char *err)
{
    const char *v = s_get(name);
    if (!v)
        return 0;
    uint64_t x, unit = default_unit_ms;
    const char *e;
    if (s_parse_u64(v, &x, &e) < 0)
        goto bad;
    if (*e) {
        if (strcmp(e, "ms") == 0)
            unit = 1;
        else if (strcmp(e, "s") == 0)
            unit = 1000;
        else if (strcmp(e, "m") == 0)
            unit = 60000;
        else if (strcmp(e, "h") == 0)
            unit = 3600000;
        else if (strcmp(e, "d") == 0)
            unit = 86400000;
        else
            goto bad;
    }
    if (x > UINT64_MAX / unit)
        goto bad;
    x *= unit;
    if (x < min_ms || x > max_ms)
        goto bad;
    *out = x;
    return 0;
bad:
    snprintf(err, CFG_ERR_LEN, "%s: invalid duration '%.64s' (want N[ms|s|m|h|d] within %llu..%llu ms)", name, v,
             (unsigned long long)min_ms, (unsigned long long)max_ms);
    return -1;
}
