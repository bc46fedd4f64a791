/* trace_stats.c -- what a key trace allows a cache to do: frequency structure and hit-ratio bounds.
 *
 *   gcc -std=gnu11 -O2 -Wall -Wextra -o build/trace_stats tests/bench/trace_stats.c -lz -lm
 *   build/trace_stats [--hot K] FILE SIZE...
 *
 * FILE is a trace as cachesim reads it (gzip or plain text, one key per line; CRLF, blank lines and
 * "*" lines are skipped). For every cache SIZE (in entries) it prints, as hit percentages of all refs:
 *   lru       exact LRU (stack distances), for cross-checking reference_hits.csv;
 *   static    the static frequency oracle: a cache that holds the SIZE keys with the highest *total*
 *             counts over the whole trace (known in advance), each from its first reference on
 *             ("demand": the first reference of each is a miss) -- and "preloaded" (no such miss);
 *   pastfreq  an idealised online LFU: at every read the cache holds the SIZE keys with the highest
 *             counts *so far* (exact, never aged, unbounded memory); ties split evenly (expected value).
 * With --hot K the K most referenced keys are taken as a "hot pool" and the rest as a "cold pool", and it
 * tests whether the cold references look independent and uniform over the cold pool (the independent
 * reference model, IRM): the cold pool's size N is estimated from the number of distinct cold keys and
 * their references (Poisson occupancy), the per-key counts are compared with Poisson (dispersion index,
 * chi-square), and two online predictors are run on the cold stream alone with SIZE - K slots (LRU, and
 * the past-frequency LFU above), to be compared with (SIZE - K) / N, all that IRM allows. It then prints
 * the IRM bound on the expected hits of ANY online policy:
 *   (hot refs - K) + cold refs * (SIZE - K) / N
 * (each hot key is far likelier than any cold key, so the best online policy keeps the hot pool plus any
 * SIZE - K cold keys; under IRM nothing in the past tells which cold key comes next), and the standard
 * deviation of the cold hits around that expectation.
 *
 * Everything is O(refs log refs); memory is a few words per reference.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define KEY_MAX 255

static void *s_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "trace_stats: out of memory\n");
        exit(1);
    }
    return p;
}

static void *s_grow(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "trace_stats: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- key interning: open addressing over FNV-1a hashes of the key strings ---- */

typedef struct {
    char **names;
    uint32_t *slots; /* id + 1, 0 = empty */
    size_t nslots, n;
} keys_t;

static uint64_t s_fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint32_t s_intern(keys_t *k, const char *s, size_t n)
{
    if ((k->n + 1) * 2 > k->nslots) {
        size_t ns = k->nslots ? k->nslots * 2 : 1024;
        uint32_t *slots = s_alloc(ns * sizeof(*slots));
        for (size_t i = 0; i < k->nslots; i++) {
            if (!k->slots[i])
                continue;
            const char *name = k->names[k->slots[i] - 1];
            size_t j = s_fnv(name, strlen(name)) & (ns - 1);
            while (slots[j])
                j = (j + 1) & (ns - 1);
            slots[j] = k->slots[i];
        }
        free(k->slots);
        k->slots = slots;
        k->nslots = ns;
        k->names = s_grow(k->names, ns / 2 * sizeof(*k->names));
    }
    size_t j = s_fnv(s, n) & (k->nslots - 1);
    while (k->slots[j]) {
        const char *name = k->names[k->slots[j] - 1];
        if (strlen(name) == n && memcmp(name, s, n) == 0)
            return k->slots[j] - 1;
        j = (j + 1) & (k->nslots - 1);
    }
    char *copy = s_alloc(n + 1);
    memcpy(copy, s, n);
    k->names[k->n] = copy;
    k->slots[j] = (uint32_t)++k->n;
    return (uint32_t)(k->n - 1);
}

/* ---- Fenwick tree (1-based positions) ---- */

typedef struct {
    int64_t *t;
    size_t n;
} fenwick_t;

static void fw_init(fenwick_t *f, size_t n)
{
    f->n = n;
    f->t = s_alloc((n + 1) * sizeof(*f->t));
}

static void fw_add(fenwick_t *f, size_t i, int64_t d)
{
    for (; i <= f->n; i += i & (~i + 1))
        f->t[i] += d;
}

static int64_t fw_sum(const fenwick_t *f, size_t i) /* sum of 1..i */
{
    int64_t s = 0;
    for (; i > 0; i -= i & (~i + 1))
        s += f->t[i];
    return s;
}

/* ---- the analyses ---- */

/* LRU hits at each size, from stack distances: the distance of a reuse is the number of distinct keys
 * referenced since the previous reference, plus one; LRU of size C hits iff distance <= C. */
static void s_lru_hits(const uint32_t *seq, size_t n, size_t nkeys, const uint64_t *sizes, int nsizes, uint64_t *hits)
{
    fenwick_t f;
    fw_init(&f, n);
    size_t *last = s_alloc(nkeys * sizeof(*last)); /* position + 1 of the previous reference, 0 = none */
    for (int s = 0; s < nsizes; s++)
        hits[s] = 0;
    for (size_t t = 0; t < n; t++) {
        uint32_t k = seq[t];
        if (last[k]) {
            uint64_t dist = (uint64_t)(fw_sum(&f, t) - fw_sum(&f, last[k])) + 1;
            for (int s = 0; s < nsizes; s++)
                hits[s] += dist <= sizes[s];
            fw_add(&f, last[k], -1);
        }
        fw_add(&f, t + 1, 1);
        last[k] = t + 1;
    }
    free(last);
    free(f.t);
}

/* The idealised online LFU: expected hits when the cache holds the m keys with the highest counts so
 * far (ties broken at random). Keys never seen cannot be held. */
static void s_pastfreq_hits(const uint32_t *seq, size_t n, size_t nkeys, const uint64_t *sizes, int nsizes,
                            double *hits)
{
    fenwick_t f; /* position c: number of keys whose count so far is c (c >= 1) */
    fw_init(&f, n + 1);
    uint64_t *cnt = s_alloc(nkeys * sizeof(*cnt));
    int64_t seen = 0;
    for (int s = 0; s < nsizes; s++)
        hits[s] = 0;
    for (size_t t = 0; t < n; t++) {
        uint32_t k = seq[t];
        uint64_t c = cnt[k];
        if (c) {
            int64_t greater = seen - fw_sum(&f, c), equal = fw_sum(&f, c) - fw_sum(&f, c - 1);
            for (int s = 0; s < nsizes; s++) {
                double in = ((double)sizes[s] - (double)greater) / (double)equal;
                hits[s] += in < 0 ? 0 : in > 1 ? 1 : in;
            }
            fw_add(&f, c, -1);
        } else {
            seen++;
        }
        cnt[k] = c + 1;
        fw_add(&f, c + 1, 1);
    }
    free(cnt);
    free(f.t);
}

static int s_cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int s_cmp_id_by_count(const void *a, const void *b, void *ctx)
{
    const uint64_t *cnt = ctx;
    uint64_t x = cnt[*(const uint32_t *)a], y = cnt[*(const uint32_t *)b];
    if (x != y)
        return x < y ? 1 : -1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

static int s_pools(const uint32_t *seq, size_t n, size_t nk, const uint64_t *cnt, uint64_t hot, const uint64_t *sizes,
                   int nsizes);

static int s_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *s == '-' || errno || *end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t hot = 0, sizes[64];
    int nsizes = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--hot") == 0 && i + 1 < argc) {
            if (s_parse_u64(argv[++i], &hot) < 0 || hot == 0) {
                fprintf(stderr, "trace_stats: --hot needs a positive integer\n");
                return 2;
            }
        } else if (!path) {
            path = argv[i];
        } else if (nsizes < 64 && s_parse_u64(argv[i], &sizes[nsizes]) == 0 && sizes[nsizes] > 0) {
            nsizes++;
        } else {
            fprintf(stderr, "usage: %s [--hot K] FILE SIZE...\n", argv[0]);
            return 2;
        }
    }
    if (!path || nsizes == 0) {
        fprintf(stderr, "usage: %s [--hot K] FILE SIZE...\n", argv[0]);
        return 2;
    }

    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        fprintf(stderr, "trace_stats: cannot open %s\n", path);
        return 1;
    }
    keys_t keys = {0};
    uint32_t *seq = NULL;
    size_t n = 0, cap = 0;
    char line[KEY_MAX + 4];
    while (gzgets(gz, line, (int)sizeof(line))) {
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "trace_stats: %s: a key longer than %d bytes\n", path, KEY_MAX);
            return 1;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0 || (len == 1 && line[0] == '*'))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            seq = s_grow(seq, cap * sizeof(*seq));
        }
        seq[n++] = s_intern(&keys, line, len);
    }
    gzclose(gz);
    size_t nk = keys.n;
    if (n == 0) {
        fprintf(stderr, "trace_stats: %s holds no references\n", path);
        return 1;
    }

    uint64_t *cnt = s_alloc(nk * sizeof(*cnt));
    for (size_t t = 0; t < n; t++)
        cnt[seq[t]]++;
    uint64_t *sorted = s_alloc(nk * sizeof(*sorted));
    memcpy(sorted, cnt, nk * sizeof(*sorted));
    qsort(sorted, nk, sizeof(*sorted), s_cmp_desc);
    double R = (double)n;
    size_t once = 0;
    for (size_t i = 0; i < nk; i++)
        once += cnt[i] == 1;
    printf("%s: %zu refs, %zu distinct keys, infinite-cache hit %.2f%%; per-key counts: max %llu, median %llu; "
           "%zu keys referenced once\n",
           path, n, nk, 100.0 * (R - (double)nk) / R, (unsigned long long)sorted[0], (unsigned long long)sorted[nk / 2],
           once);

    uint64_t lru[64];
    double past[64];
    s_lru_hits(seq, n, nk, sizes, nsizes, lru);
    s_pastfreq_hits(seq, n, nk, sizes, nsizes, past);
    printf("\n%8s %9s %16s %18s %11s\n", "size", "lru %", "static demand %", "static preloaded %", "pastfreq %");
    for (int s = 0; s < nsizes; s++) {
        uint64_t top = 0, m = sizes[s] < nk ? sizes[s] : nk;
        for (uint64_t i = 0; i < m; i++)
            top += sorted[i];
        printf("%8llu %9.2f %16.2f %18.2f %11.2f\n", (unsigned long long)sizes[s], 100.0 * (double)lru[s] / R,
               100.0 * (double)(top - m) / R, 100.0 * (double)top / R, 100.0 * past[s] / R);
    }
    int rc = 0;
    if (hot)
        rc = s_pools(seq, n, nk, cnt, hot, sizes, nsizes);
    for (size_t i = 0; i < nk; i++)
        free(keys.names[i]);
    free(keys.names);
    free(keys.slots);
    free(seq);
    free(cnt);
    free(sorted);
    return rc;
}

/* The --hot K analysis (see the top of the file). */
static int s_pools(const uint32_t *seq, size_t n, size_t nk, const uint64_t *cnt, uint64_t hot, const uint64_t *sizes,
                   int nsizes)
{
    double R = (double)n;
    if (hot >= nk) {
        fprintf(stderr, "trace_stats: --hot %llu leaves no cold keys\n", (unsigned long long)hot);
        return 2;
    }

    /* Hot pool: the K most referenced keys. */
    uint32_t *ids = s_alloc(nk * sizeof(*ids));
    for (size_t i = 0; i < nk; i++)
        ids[i] = (uint32_t)i;
    qsort_r(ids, nk, sizeof(*ids), s_cmp_id_by_count, (void *)cnt);
    unsigned char *is_hot = s_alloc(nk);
    uint64_t hot_refs = 0;
    for (uint64_t i = 0; i < hot; i++) {
        is_hot[ids[i]] = 1;
        hot_refs += cnt[ids[i]];
    }
    uint64_t cold_refs = n - hot_refs, cold_keys = nk - hot;
    uint64_t hot_odd = 0, cold_odd = 0, hot_after_hot = 0;
    for (size_t t = 0; t < n; t++) {
        if (is_hot[seq[t]]) {
            hot_odd += t & 1;
            hot_after_hot += t > 0 && is_hot[seq[t - 1]];
        } else {
            cold_odd += t & 1;
        }
    }
    printf("\nhot pool: the %llu most referenced keys: %llu refs (%.2f%%), per-key counts %llu..%llu; cold pool: "
           "%llu keys seen, %llu refs\n",
           (unsigned long long)hot, (unsigned long long)hot_refs, 100.0 * (double)hot_refs / R,
           (unsigned long long)cnt[ids[hot - 1]], (unsigned long long)cnt[ids[0]], (unsigned long long)cold_keys,
           (unsigned long long)cold_refs);
    printf("interleaving: %.2f%% of hot refs and %.2f%% of cold refs sit at odd positions; a hot ref follows a hot "
           "ref %.2f%% of the time\n",
           100.0 * (double)hot_odd / (double)hot_refs, 100.0 * (double)cold_odd / (double)cold_refs,
           100.0 * (double)hot_after_hot / (double)hot_refs);

    /* Cold pool size N under IRM: D distinct of N keys after r uniform draws has expectation
     * N (1 - exp(-r/N)); solve for N by bisection. */
    double D = (double)cold_keys, r = (double)cold_refs, lo = D, hi = D * 1000.0;
    for (int it = 0; it < 200; it++) {
        double mid = (lo + hi) / 2;
        if (mid * (1 - exp(-r / mid)) < D)
            lo = mid;
        else
            hi = mid;
    }
    double N = (lo + hi) / 2, lambda = r / N;
    /* counts of the seen cold keys against a zero-truncated Poisson(lambda) */
    double mean = 0, var = 0;
    uint64_t maxc = 0;
    for (size_t i = hot; i < nk; i++) {
        mean += (double)cnt[ids[i]];
        if (cnt[ids[i]] > maxc)
            maxc = cnt[ids[i]];
    }
    mean /= D;
    for (size_t i = hot; i < nk; i++)
        var += ((double)cnt[ids[i]] - mean) * ((double)cnt[ids[i]] - mean);
    var /= D;
    uint64_t *hist = s_alloc((maxc + 2) * sizeof(*hist));
    for (size_t i = hot; i < nk; i++)
        hist[cnt[ids[i]]]++;
    /* chi-square over classes 1..maxc, pooling classes until the expectation reaches 5 */
    double chi = 0, obs = 0, expct = 0, p = exp(-lambda) * lambda / (1 - exp(-lambda)), cum = 0;
    int dof = -2; /* classes - 1 - one fitted parameter */
    for (uint64_t c = 1; c <= maxc; c++) {
        double pc = c == maxc ? 1 - cum : p;
        cum += p;
        obs += (double)hist[c];
        expct += D * pc;
        if (expct >= 5 || c == maxc) {
            chi += (obs - expct) * (obs - expct) / expct;
            dof++;
            obs = expct = 0;
        }
        p = p * lambda / (double)(c + 1);
    }
    /* the zero class: keys of the pool never drawn */
    double missing = N - D;
    printf("cold pool under IRM: N = %.0f keys (%.0f never referenced), lambda = %.3f refs/key; seen keys' counts: "
           "mean %.3f, variance %.3f (zero-truncated Poisson: mean %.3f, variance %.3f); chi-square %.1f on %d "
           "degrees of freedom (5%% critical value %.1f)\n",
           N, missing, lambda, mean, var, lambda / (1 - exp(-lambda)),
           lambda / (1 - exp(-lambda)) * (1 + lambda - lambda / (1 - exp(-lambda))), chi, dof,
           dof * pow(1 - 2.0 / (9 * dof) + 1.645 * sqrt(2.0 / (9 * dof)), 3)); /* Wilson-Hilferty */

    /* The cold stream alone, and what past-based predictors get on it with SIZE - K slots. */
    uint32_t *cseq = s_alloc((cold_refs ? cold_refs : 1) * sizeof(*cseq));
    size_t cn = 0;
    for (size_t t = 0; t < n; t++)
        if (!is_hot[seq[t]])
            cseq[cn++] = seq[t];
    uint64_t csizes[64], clru[64];
    double cpast[64];
    int ncs = 0;
    for (int s = 0; s < nsizes; s++)
        if (sizes[s] > hot)
            csizes[ncs++] = sizes[s] - hot;
    s_lru_hits(cseq, cn, nk, csizes, ncs, clru);
    s_pastfreq_hits(cseq, cn, nk, csizes, ncs, cpast);
    printf("\n%8s %10s %12s %12s %13s %14s %10s\n", "size", "cold slots", "cold: IRM %", "cold: lru %",
           "cold: pastfreq %", "IRM bound %", "bound sd");
    for (int s = 0, cs = 0; s < nsizes; s++) {
        if (sizes[s] <= hot) {
            printf("%8llu  (not above the hot pool)\n", (unsigned long long)sizes[s]);
            continue;
        }
        double q = (double)csizes[cs] / N;
        if (q > 1)
            q = 1;
        double bound = (double)(hot_refs - hot) + r * q, sd = sqrt(r * q * (1 - q));
        printf("%8llu %10llu %12.2f %12.2f %13.2f %14.2f %10.2f\n", (unsigned long long)sizes[s],
               (unsigned long long)csizes[cs], 100.0 * q, 100.0 * (double)clru[cs] / r, 100.0 * cpast[cs] / r,
               100.0 * bound / R, 100.0 * sd / R);
        cs++;
    }
    free(ids);
    free(is_hot);
    free(hist);
    free(cseq);
    return 0;
}
