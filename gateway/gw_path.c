/* gw_path.c -- route patterns against request paths (see gw_path.h).
 *
 * One pass over pattern and path together: literal characters must be equal, a {name} takes the
 * path up to the next '/' (at least one character), '[' opens the optional tail -- absent when the
 * path ends there -- and ']' closes it. The whole path must be consumed. Pure and reentrant.
 */
#include "gw_path.h"

#include <string.h>

bool gw_path_has_params(const char *pattern)
{
    return strchr(pattern, '{') != NULL;
}

bool gw_path_match(const char *pat, const char *p, size_t len, gw_path_params_t *out)
{
    const char *end = p + len;
    memset(out, 0, sizeof *out);
    while (*pat) {
        if (*pat == '[') {
            const char *close = strchr(pat, ']');
            if (p == end) /* the optional tail is absent: nothing may follow it */
                return close && close[1] == '\0';
            pat++;
            continue;
        }
        if (*pat == ']') {
            pat++;
            continue;
        }
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            if (!close)
                return false;
            const char *seg = p;
            while (p < end && *p != '/')
                p++;
            if (p == seg)
                return false;
            if (close - pat == 3 && memcmp(pat, "{id", 3) == 0) {
                out->id = seg;
                out->id_len = (size_t)(p - seg);
            } else {
                out->sid = seg;
                out->sid_len = (size_t)(p - seg);
            }
            pat = close + 1;
            continue;
        }
        if (p == end || *p != *pat)
            return false;
        p++;
        pat++;
    }
    return p == end;
}
