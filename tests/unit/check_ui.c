/* check_ui.c -- Check suite for the live page's file set (gateway/gw_uifiles.c): MANIFEST parsing
 * with every rule and its exact error, loading a real directory (files read whole, ETags from the
 * content, the size bounds, a missing or non-regular file refused with nothing kept), lookups by
 * exact name only (no decoding, no paths), and If-None-Match matching (RFC 9110 13.1.2).
 */
#include "gw_uifiles.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GOOD_MANIFEST                                                                                                  \
    "# the page\n"                                                                                                     \
    "\n"                                                                                                               \
    "index.html    ui/index.html     text/html; charset=utf-8\n"                                                       \
    "  app.js\tui/app.js\ttext/javascript; charset=utf-8   \r\n"                                                      \
    "openapi.yaml  docs/openapi.yaml application/yaml; charset=utf-8"

static int s_parse(const char *text, gw_uifiles_t *set, char *err)
{
    return gw_uifiles_parse(text, strlen(text), set, err, 200);
}

/* The error of parsing text (which must fail). */
static const char *s_parse_err(const char *text)
{
    static char err[200];
    static gw_uifiles_t set;
    err[0] = '\0';
    ck_assert_int_eq(gw_uifiles_parse(text, strlen(text), &set, err, sizeof err), -1);
    return err;
}

START_TEST(test_parse)
{
    gw_uifiles_t set;
    char err[200] = "";
    ck_assert_int_eq(s_parse(GOOD_MANIFEST, &set, err), 0);
    ck_assert_uint_eq(set.n, 3);
    ck_assert_str_eq(set.files[0].name, "index.html");
    ck_assert_str_eq(set.files[0].ctype, "text/html; charset=utf-8");
    ck_assert_str_eq(set.files[1].name, "app.js");
    ck_assert_str_eq(set.files[1].ctype, "text/javascript; charset=utf-8"); /* tabs, CR and trailing blanks gone */
    ck_assert_str_eq(set.files[2].name, "openapi.yaml");
    ck_assert_str_eq(set.files[2].ctype, "application/yaml; charset=utf-8"); /* a last line without \n */
    ck_assert_ptr_null(set.files[0].data);
}
END_TEST

START_TEST(test_parse_rules)
{
    const char *name_rule = "a name is 1-64 bytes of A-Z a-z 0-9 . _ - not starting with '.'";
    char want[200];
    snprintf(want, sizeof want, "MANIFEST line 2: %s", name_rule);
    ck_assert_str_eq(s_parse_err("a.js a.js text/plain\n../x src text/plain\n"), want);
    snprintf(want, sizeof want, "MANIFEST line 1: %s", name_rule);
    ck_assert_str_eq(s_parse_err("a/b src text/plain\n"), want);
    ck_assert_str_eq(s_parse_err(".hidden src text/plain\n"), want);
    ck_assert_str_eq(s_parse_err("a%2fb src text/plain\n"), want);
    char longname[100];
    memset(longname, 'n', 65);
    snprintf(longname + 65, sizeof longname - 65, " src text/plain\n");
    ck_assert_str_eq(s_parse_err(longname), want);
    longname[64] = ' '; /* 64 bytes: the longest name there is */
    gw_uifiles_t set;
    char err[200];
    ck_assert_int_eq(s_parse(longname, &set, err), 0);
    ck_assert_uint_eq(strlen(set.files[0].name), 64);

    ck_assert_str_eq(s_parse_err("a.js ui/a.js\n"),
                     "MANIFEST line 1: expected <name> <source> <Content-Type> (a Content-Type of 1-127 bytes)");
    ck_assert_str_eq(s_parse_err("a.js\n"),
                     "MANIFEST line 1: expected <name> <source> <Content-Type> (a Content-Type of 1-127 bytes)");
    ck_assert_str_eq(s_parse_err("a.js s text/plain\x01x\n"), "MANIFEST line 1: a Content-Type is printable ASCII");
    ck_assert_str_eq(s_parse_err("a.js s text/plain\nb.js s text/plain\na.js t text/css\n"),
                     "MANIFEST line 3: a.js is listed twice");
    ck_assert_str_eq(s_parse_err("# nothing\n\n   \n"), "MANIFEST names no file");
    ck_assert_str_eq(s_parse_err(""), "MANIFEST names no file");
    const char nul[] = "a.js s text/plain\nb\0.js s text/plain\n";
    ck_assert_int_eq(gw_uifiles_parse(nul, sizeof nul - 1, &set, err, sizeof err), -1);
    ck_assert_str_eq(err, "MANIFEST line 2: a NUL byte (not a text file)");

    /* GW_UIFILES_MAX entries parse; one more is refused naming the line. */
    static char many[GW_UIFILES_MAX * 32 + 64];
    size_t at = 0;
    for (int i = 0; i < GW_UIFILES_MAX; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "f%d.txt s text/plain\n", i);
    ck_assert_int_eq(s_parse(many, &set, err), 0);
    ck_assert_uint_eq(set.n, GW_UIFILES_MAX);
    snprintf(many + at, sizeof many - at, "extra.txt s text/plain\n");
    snprintf(want, sizeof want, "MANIFEST line %d: at most %d files", GW_UIFILES_MAX + 1, GW_UIFILES_MAX);
    ck_assert_str_eq(s_parse_err(many), want);
}
END_TEST

/* ---- loading a directory ---- */

static char s_dir[256];

static void s_write(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Remove the test's directory (each test runs in its own forked process). */
static void s_rmdir(void)
{
    if (s_dir[0])
        nftw(s_dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_mkdir(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/check_ui.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s_dir));
}

START_TEST(test_load)
{
    s_mkdir();
    s_write("MANIFEST", "a.txt ui/a.txt text/plain\nb.txt ui/b.txt text/plain\nc.txt x text/css\nempty x text/plain\n");
    s_write("a.txt", "hello");
    s_write("b.txt", "hello");
    s_write("c.txt", "hellO");
    s_write("empty", "");
    s_write("other.txt", "not listed");
    gw_uifiles_t set;
    char err[300] = "";
    ck_assert_msg(gw_uifiles_load(&set, s_dir, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(set.n, 4);
    const gw_uifile_t *a = gw_uifiles_find(&set, "a.txt", 5), *b = gw_uifiles_find(&set, "b.txt", 5),
                      *c = gw_uifiles_find(&set, "c.txt", 5), *e = gw_uifiles_find(&set, "empty", 5);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->len, 5);
    ck_assert_int_eq(memcmp(a->data, "hello", 5), 0);
    ck_assert_str_eq(c->ctype, "text/css");
    ck_assert_uint_eq(e->len, 0);
    /* The ETag is the content's: equal contents, equal tags; one byte apart, different tags. */
    ck_assert_uint_eq(strlen(a->etag), 18);
    ck_assert_int_eq(a->etag[0], '"');
    ck_assert_int_eq(a->etag[17], '"');
    ck_assert_str_eq(a->etag, b->etag);
    ck_assert_str_ne(a->etag, c->etag);
    ck_assert_str_ne(a->etag, e->etag);
    /* Names only, exactly: nothing else under the directory, no decoding, no paths. */
    ck_assert_ptr_null(gw_uifiles_find(&set, "other.txt", 9));
    ck_assert_ptr_null(gw_uifiles_find(&set, "MANIFEST", 8));
    ck_assert_ptr_null(gw_uifiles_find(&set, "A.TXT", 5));
    ck_assert_ptr_null(gw_uifiles_find(&set, "a.tx", 4));
    ck_assert_ptr_null(gw_uifiles_find(&set, "a.txtx", 6));
    ck_assert_ptr_null(gw_uifiles_find(&set, "%61.txt", 7));
    ck_assert_ptr_null(gw_uifiles_find(&set, "./a.txt", 7));
    ck_assert_ptr_null(gw_uifiles_find(&set, "", 0));
    gw_uifiles_fini(&set);
    ck_assert_uint_eq(set.n, 0);
    gw_uifiles_fini(&set); /* idempotent */
    gw_uifiles_fini(NULL);
    s_rmdir();
}
END_TEST

START_TEST(test_load_refusals)
{
    s_mkdir();
    gw_uifiles_t set;
    char err[300] = "", want[400];
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/MANIFEST: No such file or directory", s_dir);
    ck_assert_str_eq(err, want);

    s_write("MANIFEST", "a.txt s text/plain\nmissing.txt s text/plain\n");
    s_write("a.txt", "a");
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/missing.txt: No such file or directory", s_dir);
    ck_assert_str_eq(err, want);
    ck_assert_uint_eq(set.n, 0); /* nothing kept */

    char sub[300];
    snprintf(sub, sizeof sub, "%s/adir", s_dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    s_write("MANIFEST", "adir s text/plain\n");
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/adir: not a regular file", s_dir);
    ck_assert_str_eq(err, want);

    s_write("MANIFEST", "../a.txt s text/plain\n");
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/MANIFEST line 1: a name is 1-64 bytes of A-Z a-z 0-9 . _ - not starting with '.'",
             s_dir);
    ck_assert_str_eq(err, want);

    /* One byte over the size bound (a sparse file: nothing is written). */
    char big[300];
    snprintf(big, sizeof big, "%s/big.bin", s_dir);
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)GW_UIFILE_SIZE_MAX + 1), 0);
    close(fd);
    s_write("MANIFEST", "big.bin s application/octet-stream\n");
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/big.bin: too large for the page's files (see gw_uifiles.h)", s_dir);
    ck_assert_str_eq(err, want);
    /* At the bound it loads. */
    fd = open(big, O_WRONLY);
    ck_assert_int_eq(ftruncate(fd, (off_t)GW_UIFILE_SIZE_MAX), 0);
    close(fd);
    ck_assert_msg(gw_uifiles_load(&set, s_dir, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(set.files[0].len, GW_UIFILE_SIZE_MAX);
    gw_uifiles_fini(&set);

    /* The manifest itself is bounded too. */
    char mpath[300];
    snprintf(mpath, sizeof mpath, "%s/MANIFEST", s_dir);
    fd = open(mpath, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(ftruncate(fd, (off_t)GW_UIFILES_MANIFEST_MAX + 1), 0);
    close(fd);
    ck_assert_int_eq(gw_uifiles_load(&set, s_dir, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s/MANIFEST: too large for the page's files (see gw_uifiles.h)", s_dir);
    ck_assert_str_eq(err, want);
    s_rmdir();
}
END_TEST

START_TEST(test_etag_match)
{
    const char *tag = "\"0123456789abcdef\"";
#define M(h) gw_uifiles_etag_match(h, strlen(h), tag)
    ck_assert(M("\"0123456789abcdef\""));
    ck_assert(M("W/\"0123456789abcdef\"")); /* weak comparison (If-None-Match) */
    ck_assert(M("\"x\", \"0123456789abcdef\""));
    ck_assert(M("\"x\",W/\"0123456789abcdef\" , \"y\""));
    ck_assert(M("*"));
    ck_assert(M("  *  "));
    ck_assert(!M(""));
    ck_assert(!M("\"0123456789abcdeF\""));
    ck_assert(!M("\"0123456789abcde\""));
    ck_assert(!M("0123456789abcdef")); /* not quoted: not an entity tag */
    ck_assert(!M("\"0123456789abcdef"));
    ck_assert(!M("w/\"0123456789abcdef\""));
    ck_assert(!M("\"x\" junk, \"0123456789abcdef\"")); /* malformed list: matches nothing */
    ck_assert(!M(",,,"));
#undef M
    /* Length-bounded: a tag that continues past len is not read. */
    const char *h = "\"0123456789abcdef\"";
    ck_assert(!gw_uifiles_etag_match(h, strlen(h) - 1, tag));
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("ui");
    TCase *tc = tcase_create("uifiles");
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_parse_rules);
    tcase_add_test(tc, test_load);
    tcase_add_test(tc, test_load_refusals);
    tcase_add_test(tc, test_etag_match);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
