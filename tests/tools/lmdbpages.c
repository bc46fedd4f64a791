/* lmdbpages.c -- the pages each database of an LMDB environment uses (what `mdb_stat -a -f` prints),
 * for the bytes-per-record figures of BENCHMARKS.md.
 *
 *   lmdbpages DIR
 *
 * Opens the environment in DIR read-only (beside a running store-node: LMDB lets several processes
 * read one environment; this one takes a reader slot and no write lock) and prints one line:
 *
 *   psize P map_pages M free_pages F <db>_pages N <db>_entries E ... data_pages D
 *
 * map_pages is the file's high-water mark (last page number + 1: what the data file holds),
 * free_pages the pages the freelist holds for reuse, <db>_pages the branch, leaf and overflow
 * pages of each named database (every name the main database lists), and data_pages their sum
 * (the pages live data occupies; map_pages - data_pages - free_pages is LMDB's own: meta pages,
 * the main and free databases' trees). The store-node needs no lmdb-utils package for this.
 */
#include "cli.h"

#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_pages(const MDB_stat *st)
{
    return (uint64_t)st->ms_branch_pages + st->ms_leaf_pages + st->ms_overflow_pages;
}

/* Pages the freelist holds: each record of the free database is [count, pgno...] (IDLs). */
static int s_free_pages(MDB_txn *txn, uint64_t *n)
{
    MDB_cursor *c;
    *n = 0;
    int rc = mdb_cursor_open(txn, 0, &c); /* dbi 0: the free database */
    if (rc)
        return rc;
    MDB_val k, v;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        if (v.mv_size >= sizeof(size_t)) {
            size_t cnt;
            memcpy(&cnt, v.mv_data, sizeof cnt);
            *n += cnt;
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int main(int argc, char **argv)
{
    cli_tool(argc, argv, "lmdbpages", "DIR",
             "Pages each database of an LMDB environment uses (like mdb_stat -a -f), read-only beside its writer.");
    if (argc != 2) {
        fprintf(stderr, "usage: lmdbpages DIR\n");
        return 2;
    }
    MDB_env *env;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 32);
    if (rc == 0)
        rc = mdb_env_open(env, argv[1], MDB_RDONLY | MDB_NOTLS, 0);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        fprintf(stderr, "lmdbpages: %s: %s\n", argv[1], mdb_strerror(rc));
        mdb_env_close(env);
        return 1;
    }
    MDB_envinfo ei;
    MDB_stat est;
    mdb_env_info(env, &ei);
    mdb_env_stat(env, &est);
    uint64_t free_pages = 0, data = 0;
    if ((rc = s_free_pages(txn, &free_pages)) != 0)
        goto fail;
    printf("psize %u map_pages %llu free_pages %llu", est.ms_psize, (unsigned long long)ei.me_last_pgno + 1,
           (unsigned long long)free_pages);
    /* The main database's keys are the names of the others. */
    MDB_dbi main_dbi;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) != 0 || (rc = mdb_cursor_open(txn, main_dbi, &c)) != 0)
        goto fail;
    MDB_val k, v;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        char name[64];
        if (k.mv_size == 0 || k.mv_size >= sizeof name)
            continue;
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        MDB_dbi dbi;
        MDB_stat st;
        if (mdb_dbi_open(txn, name, 0, &dbi) != 0 || mdb_stat(txn, dbi, &st) != 0)
            continue; /* a plain key of the main database, not a database */
        printf(" %s_pages %llu %s_entries %llu", name, (unsigned long long)s_pages(&st), name,
               (unsigned long long)st.ms_entries);
        data += s_pages(&st);
    }
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    printf(" data_pages %llu\n", (unsigned long long)data);
fail:
    if (rc)
        fprintf(stderr, "lmdbpages: %s: %s\n", argv[1], mdb_strerror(rc));
    if (c)
        mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc ? 1 : 0;
}
