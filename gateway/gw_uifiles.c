/* gw_uifiles.c -- the live page's files: MANIFEST parsed, the files read once, looked up by name
 * (see gw_uifiles.h).
 *
 * Key decision: the whole set is read into memory at startup (a few hundred KiB: the page, the JS
 * client, the OpenAPI document). Serving it then never touches the file system, so no request can
 * block an event loop on a disk or name a path; a new page is a restart away (`make run` restarts
 * anyway). Each file's ETag is a hash of its content, so it changes exactly when the content does.
 * Loading runs in main before the threads; the loaded set is read-only afterwards.
 */
#include "gw_uifiles.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void s_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool s_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > GW_UIFILE_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static bool s_space(char c)
{
    return c == ' ' || c == '\t';
}

/* ==== MANIFEST ================================================================================= */

/* One line (no newline): blank and comment lines are skipped; else name, source, Content-Type. */
static int s_line(const char *p, size_t n, unsigned lineno, gw_uifiles_t *out, char *err, size_t errlen)
{
    while (n && (s_space(p[n - 1]) || p[n - 1] == '\r'))
        n--;
    size_t i = 0;
    while (i < n && s_space(p[i]))
        i++;
    if (i == n || p[i] == '#')
        return 0;
    const char *name = p + i;
    while (i < n && !s_space(p[i]))
        i++;
    size_t nlen = (size_t)(p + i - name);
    while (i < n && s_space(p[i]))
        i++;
    while (i < n && !s_space(p[i])) /* the source column: where the file came from in the checkout */
        i++;
    while (i < n && s_space(p[i]))
        i++;
    const char *ctype = p + i;
    size_t clen = n - i;
    if (!s_name_ok(name, nlen)) {
        s_err(err, errlen, "MANIFEST line %u: a name is 1-%d bytes of A-Z a-z 0-9 . _ - not starting with '.'", lineno,
              GW_UIFILE_NAME_MAX);
        return -1;
    }
    if (clen == 0 || clen > GW_UIFILE_CTYPE_MAX) {
        s_err(err, errlen, "MANIFEST line %u: expected <name> <source> <Content-Type> (a Content-Type of 1-%d bytes)",
              lineno, GW_UIFILE_CTYPE_MAX);
        return -1;
    }
    for (size_t k = 0; k < clen; k++)
        if ((unsigned char)ctype[k] < 0x20 || (unsigned char)ctype[k] > 0x7e) {
            s_err(err, errlen, "MANIFEST line %u: a Content-Type is printable ASCII", lineno);
            return -1;
        }
    if (gw_uifiles_find(out, name, nlen)) {
        s_err(err, errlen, "MANIFEST line %u: %.*s is listed twice", lineno, (int)nlen, name);
        return -1;
    }
    if (out->n == GW_UIFILES_MAX) {
        s_err(err, errlen, "MANIFEST line %u: at most %d files", lineno, GW_UIFILES_MAX);
        return -1;
    }
    gw_uifile_t *f = &out->files[out->n++];
    memcpy(f->name, name, nlen);
    f->name[nlen] = '\0';
    memcpy(f->ctype, ctype, clen);
    f->ctype[clen] = '\0';
    return 0;
}

int gw_uifiles_parse(const char *text, size_t len, gw_uifiles_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    unsigned lineno = 0;
    size_t at = 0;
    while (at < len) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (text + at)) : len - at;
        lineno++;
        if (memchr(text + at, '\0', n)) {
            s_err(err, errlen, "MANIFEST line %u: a NUL byte (not a text file)", lineno);
            return -1;
        }
        if (s_line(text + at, n, lineno, out, err, errlen) < 0)
            return -1;
        at += n + 1;
    }
    if (out->n == 0) {
        s_err(err, errlen, "MANIFEST names no file");
        return -1;
    }
    return 0;
}

/* ==== reading ================================================================================== */

/* The whole regular file dir/name, at most max bytes, into a new buffer (*len). NULL with err. */
static unsigned char *s_read(const char *dir, const char *name, size_t max, size_t *len, char *err, size_t errlen)
{
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        s_err(err, errlen, "%s/%s: path too long", dir, name);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        s_err(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        s_err(err, errlen, "%s: %s", path,
              !S_ISREG(st.st_mode) ? "not a regular file" : "too large for the page's files (see gw_uifiles.h)");
        close(fd);
        return NULL;
    }
    size_t want = (size_t)st.st_size, got = 0;
    unsigned char *buf = xmalloc(want ? want : 1);
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            s_err(err, errlen, "%s: %s", path, r < 0 ? strerror(errno) : "shorter than its size (changed while read)");
            close(fd);
            free(buf);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = want;
    return buf;
}

int gw_uifiles_load(gw_uifiles_t *set, const char *dir, char *err, size_t errlen)
{
    size_t mlen = 0;
    memset(set, 0, sizeof *set);
    unsigned char *manifest = s_read(dir, "MANIFEST", GW_UIFILES_MANIFEST_MAX, &mlen, err, errlen);
    if (!manifest)
        return -1;
    char perr[200];
    int rc = gw_uifiles_parse((const char *)manifest, mlen, set, perr, sizeof perr);
    free(manifest);
    if (rc < 0) {
        s_err(err, errlen, "%s/%s", dir, perr);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; i < set->n; i++) {
        gw_uifile_t *f = &set->files[i];
        f->data = s_read(dir, f->name, GW_UIFILE_SIZE_MAX, &f->len, err, errlen);
        if (!f->data)
            goto fail;
        total += f->len;
        if (total > GW_UIFILES_TOTAL_MAX) {
            s_err(err, errlen, "%s: the files of MANIFEST exceed %u bytes together", dir, GW_UIFILES_TOTAL_MAX);
            goto fail;
        }
        snprintf(f->etag, sizeof f->etag, "\"%016llx\"",
                 (unsigned long long)util_hash64(f->data, f->len, 0x75692d66696c65ull));
    }
    return 0;
fail:
    gw_uifiles_fini(set);
    return -1;
}

void gw_uifiles_fini(gw_uifiles_t *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->files[i].data);
    memset(set, 0, sizeof *set);
}

const gw_uifile_t *gw_uifiles_find(const gw_uifiles_t *set, const char *name, size_t len)
{
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->files[i].name) == len && memcmp(set->files[i].name, name, len) == 0)
            return &set->files[i];
    return NULL;
}

/* ==== conditional requests ===================================================================== */

bool gw_uifiles_etag_match(const char *h, size_t len, const char *etag)
{
    size_t elen = strlen(etag), i = 0;
    while (i < len) {
        while (i < len && (s_space(h[i]) || h[i] == ','))
            i++;
        if (i == len)
            break;
        if (h[i] == '*')
            return true;
        if (len - i >= 2 && h[i] == 'W' && h[i + 1] == '/')
            i += 2;
        if (i == len || h[i] != '"')
            return false; /* not an entity tag: the list is malformed */
        const char *close = memchr(h + i + 1, '"', len - i - 1);
        if (!close)
            return false;
        size_t tlen = (size_t)(close - (h + i)) + 1; /* with both quotes, like etag */
        if (tlen == elen && memcmp(h + i, etag, elen) == 0)
            return true;
        i += tlen;
    }
    return false;
}
