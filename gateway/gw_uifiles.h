/* gw_uifiles.h -- the live page's static files, as the gateway serves them: the set named by
 * UI_DIR/MANIFEST, read into memory once at startup, looked up by exact name.
 *
 * MANIFEST (ui/MANIFEST, installed beside the files) has one file a line,
 *   <name>  <source in the checkout>  <Content-Type, may hold spaces>
 * with '#' comments and blank lines. Only names listed there exist: a request names a file, it
 * never names a path, so nothing outside the set can be reached (no traversal to guard against).
 *
 * Bounds: GW_UIFILES_MAX entries, names of GW_UIFILE_NAME_MAX bytes of [A-Za-z0-9._-] not starting
 * with '.', Content-Types of printable ASCII, each file at most GW_UIFILE_SIZE_MAX bytes, all of
 * them GW_UIFILES_TOTAL_MAX.
 *
 * Loading reads files (startup only, before any thread serves). A loaded set is read-only: every
 * thread may look it up without locks. The parsing and matching calls are pure and reentrant.
 */
#ifndef PRESENCE_GW_UIFILES_H
#define PRESENCE_GW_UIFILES_H

#include <stdbool.h>
#include <stddef.h>

#define GW_UIFILES_MAX 64
#define GW_UIFILE_NAME_MAX 64
#define GW_UIFILE_CTYPE_MAX 127
#define GW_UIFILE_SIZE_MAX (8u << 20)
#define GW_UIFILES_TOTAL_MAX (32u << 20)
#define GW_UIFILES_MANIFEST_MAX (64u << 10)

typedef struct gw_uifile {
    char name[GW_UIFILE_NAME_MAX + 1];
    char ctype[GW_UIFILE_CTYPE_MAX + 1];
    char etag[24];       /* strong validator of the content: "\"<16 hex digits>\"" */
    unsigned char *data; /* the content (owned by the set) */
    size_t len;
} gw_uifile_t;

typedef struct gw_uifiles {
    gw_uifile_t files[GW_UIFILES_MAX];
    size_t n;
} gw_uifiles_t;

/* Parse MANIFEST text[0..len): fills out->files[i].name and .ctype (no data), out->n. Returns 0,
 * or -1 with err (errlen bytes) naming the line and the rule it broke (a bad name, a missing
 * Content-Type, a name listed twice, too many lines). */
int gw_uifiles_parse(const char *text, size_t len, gw_uifiles_t *out, char *err, size_t errlen);

/* Read dir/MANIFEST and every file it names into *set (zeroed first). Returns 0, or -1 with err
 * naming the file and the rule (missing, not a regular file, too large); nothing is kept then.
 * Caller owns the loaded data: release it with gw_uifiles_fini. Startup only (blocking reads). */
int gw_uifiles_load(gw_uifiles_t *set, const char *dir, char *err, size_t errlen);

/* Release what gw_uifiles_load read; the set is empty afterwards. NULL-safe, idempotent. */
void gw_uifiles_fini(gw_uifiles_t *set);

/* The file named exactly name[0..len) (no decoding, no normalisation), or NULL. Borrowed: valid
 * while the set is loaded. */
const gw_uifile_t *gw_uifiles_find(const gw_uifiles_t *set, const char *name, size_t len);

/* Does an If-None-Match value hdr[0..len) match etag (RFC 9110 13.1.2: "*", or a comma-separated
 * list of entity tags compared weakly, W/ ignored)? A malformed list matches nothing. */
bool gw_uifiles_etag_match(const char *hdr, size_t len, const char *etag);

#endif
