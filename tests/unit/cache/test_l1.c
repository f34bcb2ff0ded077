/* test_l1.c — the cache's memory tier (rc_l1): the exact eviction order of
 * each policy on scripted scenarios (recorded through on_evict), LFU ties and
 * survivors, Random's membership, uniformity and determinism, the byte
 * budget with mixed sizes, replacement accounting, TTL and the sweep,
 * compression round trips, O(1) work per operation counted (not timed) over
 * 100k operations per policy, clear by model, and 8 threads at once with the
 * invariants checked afterwards. */
#include "testutil.h"
#include "cache/cache_internal.h"
#include "kiln/core.h"
#include "kiln/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#define FAR 1000000000000LL /* an expiry that never comes */

static rc_key key_n(uint64_t n) { return rc_key_of(&n, sizeof n); }
static bool key_eq(rc_key a, rc_key b) { return a.hi == b.hi && a.lo == b.lo; }

/* on_evict recorder */
typedef struct evlog {
    rc_key keys[4096];
    size_t n;
} evlog;

static void record_evict(void *arg, rc_key k) {
    evlog *l = arg;
    assert_true(l->n < sizeof l->keys / sizeof l->keys[0]);
    l->keys[l->n++] = k;
}

static rc_l1 *make(rc_policy p, uint64_t budget, bool compress, uint64_t seed, evlog *log) {
    rc_l1_opts o = {.budget_bytes = budget, .policy = p, .compress = compress, .seed = seed};
    if (log) {
        o.on_evict = record_evict;
        o.on_evict_arg = log;
    }
    rc_l1 *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_l1_create(&o, &c, &err), KN_OK);
    assert_non_null(c);
    return c;
}

static void put_n(rc_l1 *c, uint64_t n, size_t len) {
    unsigned char buf[512];
    assert_true(len <= sizeof buf);
    memset(buf, (int)(n & 0xff), len);
    assert_true(rc_l1_put(c, key_n(n), 1, buf, len, FAR, 0));
}

static bool get_n(rc_l1 *c, uint64_t n) {
    void *v = NULL;
    size_t len = 0;
    bool hit = rc_l1_get(c, key_n(n), 0, &v, &len, NULL);
    free(v);
    return hit;
}

static void expect_evicted(const evlog *l, const uint64_t *ids, size_t n) {
    if (l->n != n) fail_msg("evicted %zu entries, expected %zu", l->n, n);
    for (size_t i = 0; i < n; i++)
        if (!key_eq(l->keys[i], key_n(ids[i]))) fail_msg("eviction %zu is not key %llu", i, (unsigned long long)ids[i]);
}

/* ---- eviction order ---------------------------------------------------------- */

#define VLEN 100

static void test_lru_order(void **state) {
    (void)state;
    evlog log = {0};
    rc_l1 *c = make(RC_LRU, 4 * rc_l1_entry_cost(VLEN), false, 0, &log);
    for (uint64_t i = 1; i <= 4; i++) put_n(c, i, VLEN);
    assert_int_equal(log.n, 0);
    assert_true(get_n(c, 1)); /* order old->new: 2 3 4 1 */
    put_n(c, 5, VLEN);        /* evicts 2 */
    put_n(c, 6, VLEN);        /* evicts 3 */
    assert_true(get_n(c, 4)); /* 1 5 6 4 */
    put_n(c, 7, VLEN);        /* evicts 1: 5 6 4 7 */
    put_n(c, 5, VLEN);        /* a replacement is a use: 6 4 7 5 */
    put_n(c, 8, VLEN);        /* evicts 6 */
    assert_false(get_n(c, 2)); /* a miss moves nothing */
    put_n(c, 9, VLEN);        /* evicts 4 */
    static const uint64_t want[] = {2, 3, 1, 6, 4};
    expect_evicted(&log, want, 5);
    for (uint64_t i = 5; i <= 9; i++)
        if (i != 6) assert_true(get_n(c, i));
    rc_stats s;
    rc_l1_stats(c, &s);
    assert_int_equal(s.evictions, 5);
    assert_int_equal(s.entries, 4);
    rc_l1_destroy(c);
}

static void test_fifo_order(void **state) {
    (void)state;
    evlog log = {0};
    rc_l1 *c = make(RC_FIFO, 4 * rc_l1_entry_cost(VLEN), false, 0, &log);
    for (uint64_t i = 1; i <= 4; i++) put_n(c, i, VLEN);
    assert_true(get_n(c, 1)); /* hits do not move: 1 2 3 4 */
    put_n(c, 5, VLEN);        /* evicts 1 */
    put_n(c, 6, VLEN);        /* evicts 2 */
    assert_true(get_n(c, 3));
    put_n(c, 7, VLEN);        /* evicts 3: 4 5 6 7 */
    put_n(c, 4, VLEN);        /* a replacement is a new insertion: 5 6 7 4 */
    put_n(c, 8, VLEN);        /* evicts 5 */
    put_n(c, 9, VLEN);        /* evicts 6: 7 4 8 9 */
    static const uint64_t want[] = {1, 2, 3, 5, 6};
    expect_evicted(&log, want, 5);
    assert_true(get_n(c, 7));
    assert_true(get_n(c, 4));
    put_n(c, 10, VLEN); /* evicts 7 even though it was just read */
    assert_int_equal(log.n, 6);
    assert_true(key_eq(log.keys[5], key_n(7)));
    rc_l1_destroy(c);
}

static void test_lfu_order(void **state) {
    (void)state;
    evlog log = {0};
    rc_l1 *c = make(RC_LFU, 4 * rc_l1_entry_cost(VLEN), false, 0, &log);
    for (uint64_t i = 1; i <= 4; i++) put_n(c, i, VLEN); /* all at 1 */
    assert_true(get_n(c, 1));
    assert_true(get_n(c, 1)); /* 1: 3 */
    assert_true(get_n(c, 2)); /* 2: 2 */
    assert_true(get_n(c, 3)); /* 3: 2, more recent than 2 */
    put_n(c, 5, VLEN);        /* the only one at 1 is 4: evicted */
    put_n(c, 6, VLEN);        /* 5 (at 1, older than the newcomer 6) */
    put_n(c, 7, VLEN);        /* 6 */
    assert_true(get_n(c, 7)); /* 7: 2, the most recent at 2 */
    put_n(c, 8, VLEN);        /* nothing else at 1: the least recent at 2, key 2 */
    put_n(c, 3, VLEN);        /* a replacement is a use: 3 goes to 3 (were it reset to 1, 3 would go before 7) */
    put_n(c, 9, VLEN);        /* 8 */
    assert_true(get_n(c, 9)); /* 9: 2, after 7 */
    put_n(c, 10, VLEN);       /* the least recent at 2 is now 7 (3 left it) */
    put_n(c, 11, VLEN);       /* 10 */
    assert_true(get_n(c, 11)); /* 11: 2, after 9 */
    put_n(c, 12, VLEN);       /* 9 (3 is at 3, not at 2 with a fresh recency) */
    static const uint64_t want[] = {4, 5, 6, 2, 8, 7, 10, 9};
    expect_evicted(&log, want, 8);
    assert_true(get_n(c, 1));
    assert_true(get_n(c, 3));
    assert_true(get_n(c, 11));
    assert_true(get_n(c, 12));
    assert_false(get_n(c, 10));
    rc_l1_destroy(c);
}

/* Ties within a frequency go to the least recent; an entry used many times
 * outlives a stream of one-time keys. */
static void test_lfu_ties_and_survivor(void **state) {
    (void)state;
    evlog log = {0};
    rc_l1 *c = make(RC_LFU, 8 * rc_l1_entry_cost(VLEN), false, 0, &log);
    for (uint64_t i = 1; i <= 8; i++) put_n(c, i, VLEN);
    /* bring 1..8 to frequency 2 in the order 5 3 8 1 7 2 6 4 */
    static const uint64_t order[] = {5, 3, 8, 1, 7, 2, 6, 4};
    for (int i = 0; i < 8; i++) assert_true(get_n(c, order[i]));
    for (uint64_t i = 0; i < 100; i++) assert_true(get_n(c, 1));
    /* each new key first pushes out the previous newcomer (at 1); with two
     * newcomers at once, the old ones at 2 go in recency order */
    put_n(c, 100, VLEN); /* evicts 5 */
    for (uint64_t i = 0; i < 2; i++) assert_true(get_n(c, 100)); /* 100: 3 */
    put_n(c, 101, VLEN); /* evicts 3 */
    put_n(c, 102, VLEN); /* evicts 101 */
    static const uint64_t want[] = {5, 3, 101};
    expect_evicted(&log, want, 3);
    for (uint64_t i = 1000; i < 1500; i++) put_n(c, i, VLEN);
    assert_true(get_n(c, 1));   /* used 102 times */
    assert_true(get_n(c, 100)); /* 3 uses, more than any one-time key */
    rc_l1_destroy(c);
}

/* Random: every victim was present and never the newcomer, the victim's
 * position is uniform over trials, and a seed fixes the sequence. */
typedef struct present_set {
    uint64_t ids[16];
    int n;
    int bad;
} present_set;

static void random_check_evict(void *arg, rc_key k) {
    present_set *p = arg;
    for (int i = 0; i < p->n; i++)
        if (key_eq(key_n(p->ids[i]), k)) {
            p->ids[i] = p->ids[--p->n];
            return;
        }
    p->bad++;
}

static void test_random_policy(void **state) {
    (void)state;
    enum { SLOTS = 8, TRIALS = 4000 };
    /* membership over a long run */
    present_set ps = {0};
    rc_l1_opts o = {.budget_bytes = SLOTS * rc_l1_entry_cost(VLEN), .policy = RC_RANDOM, .seed = 42,
                    .on_evict = random_check_evict, .on_evict_arg = &ps};
    rc_l1 *c = NULL;
    assert_int_equal(rc_l1_create(&o, &c, NULL), KN_OK);
    for (uint64_t i = 1; i <= 2000; i++) {
        put_n(c, i, VLEN);
        ps.ids[ps.n++] = i;
        assert_true(ps.n <= SLOTS);
        assert_true(get_n(c, i)); /* the newcomer is never the victim */
        if (i % 7 == 0) { /* a delete is not an eviction */
            assert_true(rc_l1_del(c, key_n(ps.ids[0])));
            ps.ids[0] = ps.ids[--ps.n];
        }
    }
    assert_int_equal(ps.bad, 0);
    for (int i = 0; i < ps.n; i++) assert_true(get_n(c, ps.ids[i]));
    rc_l1_destroy(c);

    /* uniformity: which of 8 keys (inserted in order) the 9th put evicts */
    int counts[SLOTS] = {0};
    for (int t = 0; t < TRIALS; t++) {
        evlog log = {0};
        c = make(RC_RANDOM, SLOTS * rc_l1_entry_cost(VLEN), false, (uint64_t)t * 7919 + 1, &log);
        for (uint64_t i = 0; i <= SLOTS; i++) put_n(c, i, VLEN);
        assert_int_equal(log.n, 1);
        int slot = -1;
        for (int i = 0; i < SLOTS; i++)
            if (key_eq(log.keys[0], key_n((uint64_t)i))) slot = i;
        assert_true(slot >= 0);
        counts[slot]++;
        rc_l1_destroy(c);
    }
    /* chi-square with 7 degrees of freedom: P(X > 24.3) ~ 0.001 */
    double chi = 0, e = (double)TRIALS / SLOTS;
    for (int i = 0; i < SLOTS; i++) chi += (counts[i] - e) * (counts[i] - e) / e;
    if (chi > 24.3) fail_msg("random victims are not uniform: chi-square %.1f", chi);

    /* determinism */
    evlog a = {0}, b = {0}, d = {0};
    rc_l1 *ca = make(RC_RANDOM, SLOTS * rc_l1_entry_cost(VLEN), false, 1234, &a);
    rc_l1 *cb = make(RC_RANDOM, SLOTS * rc_l1_entry_cost(VLEN), false, 1234, &b);
    rc_l1 *cd = make(RC_RANDOM, SLOTS * rc_l1_entry_cost(VLEN), false, 4321, &d);
    for (uint64_t i = 0; i < 200; i++) {
        put_n(ca, i, VLEN);
        put_n(cb, i, VLEN);
        put_n(cd, i, VLEN);
    }
    assert_int_equal(a.n, 192);
    assert_int_equal(b.n, 192);
    assert_int_equal(d.n, 192);
    assert_memory_equal(a.keys, b.keys, a.n * sizeof a.keys[0]);
    assert_memory_not_equal(a.keys, d.keys, a.n * sizeof a.keys[0]);
    rc_l1_destroy(ca);
    rc_l1_destroy(cb);
    rc_l1_destroy(cd);
}

/* ---- budget, replacement ------------------------------------------------------ */

static void test_budget_mixed_sizes(void **state) {
    (void)state;
    enum { NKEYS = 600 };
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    static unsigned char buf[20000];
    tu_rng r = {.s = 7};
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)tu_rng_u64(&r);
    for (int p = 0; p < 4; p++) {
        const uint64_t budget = 200000;
        evlog log = {0};
        rc_l1 *c = make(pols[p], budget, false, 3, &log);
        size_t lens[NKEYS] = {0};
        rc_stats s;
        for (int i = 0; i < 3000; i++) {
            uint64_t k = tu_rng_u64(&r) % NKEYS;
            size_t len = (size_t)(tu_rng_u64(&r) % 100 == 0 ? tu_rng_u64(&r) % 20000 : tu_rng_u64(&r) % 2000);
            assert_true(rc_l1_put(c, key_n(k), 1, buf, len, FAR, 0));
            lens[k] = len;
            rc_l1_stats(c, &s);
            if (s.bytes > budget) fail_msg("%s: %llu bytes over the budget", rc_policy_name(pols[p]),
                                           (unsigned long long)s.bytes);
            if (i % 5 == 0) get_n(c, tu_rng_u64(&r) % NKEYS);
        }
        /* bytes is exactly the sum of what is there */
        rc_stats before;
        rc_l1_stats(c, &before);
        uint64_t sum = 0, n = 0;
        for (uint64_t k = 0; k < NKEYS; k++) {
            void *v;
            size_t len;
            if (rc_l1_get(c, key_n(k), 0, &v, &len, NULL)) {
                assert_int_equal(len, lens[k]);
                assert_memory_equal(v, buf, len);
                free(v);
                sum += rc_l1_entry_cost(len);
                n++;
            }
        }
        assert_int_equal(n, before.entries);
        assert_int_equal(sum, before.bytes);
        assert_true(before.evictions > 0);
        /* an entry alone over the budget is refused and evicts nothing */
        size_t big = (size_t)budget - rc_l1_entry_cost(0) + 1;
        unsigned char *huge = calloc(1, big);
        assert_non_null(huge);
        size_t nlog = log.n;
        assert_false(rc_l1_put(c, key_n(99999), 1, huge, big, FAR, 0));
        assert_true(rc_l1_put(c, key_n(99999), 1, huge, big - 1, FAR, 0)); /* exactly the budget: fits */
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 1);
        assert_int_equal(s.bytes, budget);
        assert_int_equal(log.n, nlog + n);
        nlog = log.n;
        assert_false(rc_l1_put(c, key_n(5), 1, huge, big, FAR, 0));
        assert_int_equal(log.n, nlog);
        assert_true(get_n(c, 99999));
        free(huge);
        rc_l1_destroy(c);
    }
}

static void test_replace_bytes(void **state) {
    (void)state;
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    unsigned char a[300], b[50];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    for (int p = 0; p < 4; p++) {
        rc_l1 *c = make(pols[p], 1 << 20, true, 1, NULL);
        rc_stats s;
        put_n(c, 1, 100);
        put_n(c, 2, 10);
        assert_true(rc_l1_put(c, key_n(1), 1, a, sizeof a, FAR, 0));
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 2);
        assert_int_equal(s.bytes, rc_l1_entry_cost(300) + rc_l1_entry_cost(10));
        assert_true(rc_l1_put(c, key_n(1), 1, b, sizeof b, 500, 0));
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 2);
        assert_int_equal(s.bytes, rc_l1_entry_cost(50) + rc_l1_entry_cost(10));
        void *v;
        size_t len;
        int64_t exp = 0;
        assert_true(rc_l1_get(c, key_n(1), 0, &v, &len, &exp));
        assert_int_equal(len, sizeof b);
        assert_memory_equal(v, b, sizeof b);
        assert_int_equal(exp, 500);
        free(v);
        assert_true(rc_l1_del(c, key_n(1)));
        assert_false(rc_l1_del(c, key_n(1)));
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 1);
        assert_int_equal(s.bytes, rc_l1_entry_cost(10));
        assert_int_equal(s.evictions, 0);
        rc_l1_destroy(c);
    }
}

/* ---- TTL ------------------------------------------------------------------------ */

static void test_ttl(void **state) {
    (void)state;
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    for (int p = 0; p < 4; p++) {
        rc_l1 *c = make(pols[p], 1 << 20, false, 9, NULL);
        unsigned char v8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        assert_false(rc_l1_put(c, key_n(1), 1, v8, 8, 5, 5)); /* expiry == now */
        assert_false(rc_l1_put(c, key_n(1), 1, v8, 8, 4, 5));
        assert_true(rc_l1_put(c, key_n(1), 1, v8, 8, 1000, 0));
        void *v;
        size_t len;
        int64_t exp;
        assert_true(rc_l1_get(c, key_n(1), 999, &v, &len, &exp));
        assert_int_equal(exp, 1000);
        free(v);
        assert_false(rc_l1_get(c, key_n(1), 1000, &v, &len, &exp));
        assert_null(v);
        rc_stats s;
        rc_l1_stats(c, &s);
        assert_int_equal(s.hits, 1);
        assert_int_equal(s.misses, 1);
        assert_int_equal(s.expirations, 1);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, 0);
        assert_false(rc_l1_get(c, key_n(1), 0, &v, &len, &exp)); /* gone, even for an earlier clock */

        /* the sweep: 1000 expiring among 1000 live, in bounded batches */
        for (uint64_t i = 0; i < 2000; i++) assert_true(rc_l1_put(c, key_n(i), 1, v8, 8, i % 2 ? FAR : 100, 0));
        assert_int_equal(rc_l1_sweep(c, 99, 100000), 0);
        size_t total = 0, calls = 0, got;
        for (int i = 0; i < 40; i++) { /* one at a time first */
            got = rc_l1_sweep(c, 200, 1);
            assert_true(got <= 1);
            total += got;
        }
        assert_true(total > 0);
        while ((got = rc_l1_sweep(c, 200, 50)) > 0 || total < 1000) {
            assert_true(got <= 50);
            total += got;
            calls++;
            if (calls > 500) fail_msg("%s: the sweep found %zu of 1000 in 500 calls", rc_policy_name(pols[p]), total);
        }
        assert_int_equal(total, 1000);
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 1000);
        assert_int_equal(s.expirations, 1001);
        assert_int_equal(s.bytes, 1000 * rc_l1_entry_cost(8));
        for (uint64_t i = 0; i < 2000; i++) assert_int_equal(get_n(c, i), i % 2 == 1);
        rc_l1_destroy(c);
    }
}

/* ---- compression ---------------------------------------------------------------- */

static void roundtrip(rc_l1 *c, uint64_t id, const unsigned char *val, size_t len) {
    assert_true(rc_l1_put(c, key_n(id), 1, val, len, FAR, 0));
    void *v;
    size_t got;
    assert_true(rc_l1_get(c, key_n(id), 0, &v, &got, NULL));
    assert_int_equal(got, len);
    assert_memory_equal(v, val, len);
    free(v);
}

static void test_compression(void **state) {
    (void)state;
    enum { N = 64 * 1024 };
    unsigned char *text = malloc(N), *noise = malloc(N);
    assert_non_null(text);
    assert_non_null(noise);
    for (size_t i = 0; i < N; i++) text[i] = (unsigned char)"The quick brown fox jumps over the lazy dog. "[i % 45];
    for (size_t i = 0; i < N; i += 97) text[i] = (unsigned char)('0' + i % 10);
    tu_rng r = {.s = 11};
    for (size_t i = 0; i < N; i++) noise[i] = (unsigned char)tu_rng_u64(&r);
    rc_stats s;

    rc_l1 *c = make(RC_LRU, 1 << 20, true, 0, NULL);
    roundtrip(c, 1, text, N);
    rc_l1_stats(c, &s);
    if (s.bytes > N / 8) fail_msg("64 KiB of text takes %llu bytes", (unsigned long long)s.bytes);
    roundtrip(c, 2, noise, N);
    rc_l1_stats(c, &s);
    uint64_t text_bytes = s.bytes - rc_l1_entry_cost(N);
    assert_true(text_bytes < N / 8); /* the noise is stored raw */
    /* the threshold: more than RC_COMPRESS_MIN bytes */
    roundtrip(c, 3, text, RC_COMPRESS_MIN);
    rc_l1_stats(c, &s);
    assert_int_equal(s.bytes, text_bytes + rc_l1_entry_cost(N) + rc_l1_entry_cost(RC_COMPRESS_MIN));
    roundtrip(c, 4, text, RC_COMPRESS_MIN + 1);
    rc_l1_stats(c, &s);
    assert_true(s.bytes < text_bytes + rc_l1_entry_cost(N) + rc_l1_entry_cost(RC_COMPRESS_MIN) +
                              rc_l1_entry_cost(RC_COMPRESS_MIN + 1));
    roundtrip(c, 5, text, 0);
    rc_l1_destroy(c);

    /* off: stored raw */
    c = make(RC_LRU, 1 << 20, false, 0, NULL);
    roundtrip(c, 1, text, N);
    rc_l1_stats(c, &s);
    assert_int_equal(s.bytes, rc_l1_entry_cost(N));
    rc_l1_destroy(c);

    /* a compressed entry fits a budget its raw size would not; noise one
     * byte over the budget is refused (after trying to compress it) and
     * evicts nothing */
    c = make(RC_LRU, N / 4, true, 0, NULL);
    roundtrip(c, 1, text, N);
    assert_false(rc_l1_put(c, key_n(2), 1, noise, N, FAR, 0));
    assert_false(rc_l1_put(c, key_n(2), 1, noise, N / 4 - rc_l1_entry_cost(0) + 1, FAR, 0));
    rc_l1_stats(c, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.evictions, 0);
    assert_true(get_n(c, 1));
    assert_true(rc_l1_put(c, key_n(2), 1, noise, N / 4 - rc_l1_entry_cost(0), FAR, 0)); /* exactly: fits */
    rc_l1_stats(c, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, N / 4);
    rc_l1_destroy(c);
    free(text);
    free(noise);
}

/* ---- O(1) --------------------------------------------------------------------- */

static void test_o1_work(void **state) {
    (void)state;
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    enum { KEYS = 20000, OPS = 100000 };
    static unsigned char buf[512];
    for (int p = 0; p < 4; p++) {
        /* room for about 1500 of the 20000 keys */
        rc_l1 *c = make(pols[p], 1500 * rc_l1_entry_cost(264), false, 5, NULL);
        tu_rng r = {.s = 100 + (uint64_t)p};
        uint64_t nops = 0;
        for (int i = 0; i < OPS; i++, nops++) {
            uint64_t x = tu_rng_u64(&r), k;
            /* skewed keys so that LFU and LRU see repeats */
            k = x % 4 == 0 ? (x >> 8) % 200 : (x >> 8) % KEYS;
            int op = (int)((x >> 40) % 10);
            if (i >= 60000 && i < 80000) {
                /* a wave of deletes: the table shrinks (incrementally) */
                rc_l1_del(c, key_n((uint64_t)(i - 60000)));
            } else if (op < 5) {
                get_n(c, k);
            } else if (op < 9) {
                assert_true(rc_l1_put(c, key_n(k), 1, buf, 16 + (x >> 48) % 497, FAR, 0));
            } else {
                rc_l1_del(c, key_n(k));
            }
        }
        rc_l1_work w;
        rc_l1_work_get(c, &w);
        rc_stats s;
        rc_l1_stats(c, &s);
        double pp = (double)w.probes / (double)w.ops, mp = (double)w.moves / (double)w.ops;
        print_message("%-6s ops %llu probes/op %.2f moves/op %.2f max probes %llu max moves %llu evictions %llu\n",
                      rc_policy_name(pols[p]), (unsigned long long)w.ops, pp, mp,
                      (unsigned long long)w.max_probes_op, (unsigned long long)w.max_moves_op,
                      (unsigned long long)s.evictions);
        assert_int_equal(w.ops, nops);
        assert_true(s.evictions > 10000);
        assert_true(pp < 4.0);
        assert_true(mp < 8.0);
        assert_true(w.max_probes_op <= 64);
        assert_true(w.max_moves_op <= 64);
        rc_l1_destroy(c);
    }
}

/* Every entry stays reachable while the table grows and shrinks (two
 * tables during each migration): after each put and each delete, sampled
 * keys that must be there are found and deleted ones are not. */
static void test_rehash_lookups(void **state) {
    (void)state;
    enum { N = 5000 };
    rc_l1 *c = make(RC_LRU, (uint64_t)N * rc_l1_entry_cost(8), false, 0, NULL);
    for (uint64_t i = 0; i < N; i++) {
        put_n(c, i, 8);
        for (uint64_t j = i; j > 0; j /= 2) assert_true(get_n(c, j));
        assert_true(get_n(c, 0));
        assert_false(get_n(c, i + 1));
    }
    for (uint64_t i = 0; i < N; i++) {
        assert_true(rc_l1_del(c, key_n(i)));
        assert_false(get_n(c, i));
        for (uint64_t j = N - 1; j > i; j = i + (j - i) / 2) assert_true(get_n(c, j));
    }
    rc_stats s;
    rc_l1_stats(c, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.evictions, 0);
    rc_l1_destroy(c);
}

/* ---- clear -------------------------------------------------------------------- */

static void test_clear_model(void **state) {
    (void)state;
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    const uint64_t A = rc_model_tag("a"), B = rc_model_tag("b"), C = rc_model_tag("c");
    unsigned char v[32] = {0};
    for (int p = 0; p < 4; p++) {
        rc_l1 *c = make(pols[p], 1 << 22, false, 2, NULL);
        for (uint64_t i = 0; i < 1000; i++)
            assert_true(rc_l1_put(c, key_n(i), i % 10 < 4 ? A : i % 10 < 8 ? B : C, v, sizeof v, FAR, 0));
        assert_int_equal(rc_l1_clear(c, B), 400);
        assert_int_equal(rc_l1_clear(c, B), 0);
        for (uint64_t i = 0; i < 1000; i++) assert_int_equal(get_n(c, i), !(i % 10 >= 4 && i % 10 < 8));
        rc_stats s;
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 600);
        assert_int_equal(s.bytes, 600 * rc_l1_entry_cost(sizeof v));
        assert_int_equal(rc_l1_clear(c, 0), 600);
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, 0);
        assert_int_equal(s.evictions, 0);
        for (uint64_t i = 0; i < 1000; i++) assert_false(get_n(c, i));
        /* still usable (the table shrank back) */
        put_n(c, 7, 10);
        assert_true(get_n(c, 7));
        rc_l1_destroy(c);
    }
}

/* The Prometheus series move with the counters. */
static void test_metrics_series(void **state) {
    (void)state;
    met_registry *reg = met_registry_create();
    assert_non_null(reg);
    static const char *const names[] = {"t_hits_total", "t_misses_total", "t_evictions_total", "t_expirations_total"};
    met_series *ser[4];
    for (int i = 0; i < 4; i++) {
        met_family *f = met_counter(reg, names[i], "test", 0, NULL);
        assert_non_null(f);
        assert_non_null(ser[i] = met_get(f, NULL));
    }
    rc_l1_opts o = {.budget_bytes = 3 * rc_l1_entry_cost(VLEN),
                    .policy = RC_LRU,
                    .metrics = {.hits = ser[0], .misses = ser[1], .evictions = ser[2], .expirations = ser[3]}};
    rc_l1 *c = NULL;
    assert_int_equal(rc_l1_create(&o, &c, NULL), KN_OK);
    unsigned char v[VLEN] = {0};
    for (uint64_t i = 0; i < 5; i++) assert_true(rc_l1_put(c, key_n(i), 1, v, VLEN, 100 + (int64_t)i, 0)); /* 2 evicted */
    for (uint64_t i = 0; i < 5; i++) get_n(c, i);                                                    /* 3 hits, 2 misses */
    void *val;
    size_t len;
    assert_false(rc_l1_get(c, key_n(3), 103, &val, &len, NULL)); /* expired: a miss too */
    assert_int_equal(rc_l1_sweep(c, 1000, 10), 2);
    rc_stats s;
    rc_l1_stats(c, &s);
    assert_int_equal(s.hits, 3);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.expirations, 3);
    assert_true(met_value(ser[0]) == 3.0);
    assert_true(met_value(ser[1]) == 3.0);
    assert_true(met_value(ser[2]) == 2.0);
    assert_true(met_value(ser[3]) == 3.0);
    rc_l1_destroy(c);
    met_registry_destroy(reg);
}

static void test_create_errors(void **state) {
    (void)state;
    rc_l1 *c = (rc_l1 *)&c;
    kn_err err = {0};
    rc_l1_opts o = {.budget_bytes = 0};
    assert_int_equal(rc_l1_create(&o, &c, &err), KN_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err.msg, "budget"));
    o = (rc_l1_opts){.budget_bytes = 100, .policy = (rc_policy)9};
    assert_int_equal(rc_l1_create(&o, &c, &err), KN_EINVAL);
    assert_non_null(strstr(err.msg, "policy"));
    rc_l1_destroy(NULL);
    /* a budget smaller than one entry's bookkeeping stores nothing */
    c = make(RC_LRU, rc_l1_entry_cost(0) - 1, false, 0, NULL);
    assert_false(rc_l1_put(c, key_n(1), 1, "", 0, FAR, 0));
    rc_l1_destroy(c);
}

/* ---- 8 threads -------------------------------------------------------------------- */

enum { HK_KEYS = 1000, HK_THREADS = 8 };

/* The value of key id at version ver: its length and bytes are a function
 * of (id, ver), so a reader can check what it got; half the keys hold
 * compressible text (compressed when long), half noise. */
static size_t hk_len(uint64_t id, unsigned ver) { return 16 + (size_t)((id * 131 + ver * 977) % 3000); }

static void hk_fill(unsigned char *p, uint64_t id, unsigned ver) {
    size_t len = hk_len(id, ver);
    memcpy(p, &id, 8);
    memcpy(p + 8, &ver, 4);
    memset(p + 12, 0, 4);
    uint64_t s = id * 0x9E3779B97F4A7C15ull + ver;
    for (size_t i = 16; i < len; i++) {
        if (id % 2) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            p[i] = (unsigned char)(s >> 56);
        } else {
            p[i] = (unsigned char)('a' + (i + ver) % 7);
        }
    }
}

typedef struct hk_ctx {
    rc_l1 *c;
    int id;
    atomic_bool *stop;
    int64_t t0_ms;
    unsigned long ops, hits, bad;
} hk_ctx;

static int64_t mono_ms(void) { return (int64_t)(kn_now_ns() / 1000000); }

static void *hk_worker(void *arg) {
    hk_ctx *h = arg;
    tu_rng r = {.s = 0x1234 + (uint64_t)h->id};
    unsigned char buf[3100], want[3100];
    while (!atomic_load(h->stop)) {
        for (int j = 0; j < 64; j++, h->ops++) {
            uint64_t x = tu_rng_u64(&r), id = (x >> 8) % HK_KEYS;
            int64_t now = mono_ms() - h->t0_ms + 1000;
            unsigned op = (unsigned)(x % 10000);
            if (op < 5000) {
                void *v;
                size_t len;
                int64_t exp;
                if (rc_l1_get(h->c, key_n(id), now, &v, &len, &exp)) {
                    h->hits++;
                    unsigned ver;
                    uint64_t got_id;
                    if (len < 16) {
                        h->bad++;
                    } else {
                        memcpy(&got_id, v, 8);
                        memcpy(&ver, (unsigned char *)v + 8, 4);
                        if (got_id != id || ver > 3 || len != hk_len(id, ver) || exp <= now) h->bad++;
                        else {
                            hk_fill(want, id, ver);
                            if (memcmp(want, v, len)) h->bad++;
                        }
                    }
                    free(v);
                }
            } else if (op < 9000) {
                unsigned ver = (unsigned)((x >> 40) % 4);
                hk_fill(buf, id, ver);
                int64_t ttl = (x >> 50) % 4 == 0 ? 1 + (int64_t)((x >> 20) % 50) : 1000000;
                rc_l1_put(h->c, key_n(id), 1 + id % 3, buf, hk_len(id, ver), now + ttl, now);
            } else if (op < 9800) {
                rc_l1_del(h->c, key_n(id));
            } else if (op < 9997) {
                rc_l1_sweep(h->c, now, 1 + (x >> 30) % 64);
            } else {
                rc_l1_clear(h->c, (x >> 30) % 4); /* 0: everything */
            }
        }
    }
    return NULL;
}

static size_t stored_len_of(const unsigned char *v, size_t len) {
    if (len <= RC_COMPRESS_MIN) return len;
    size_t bound = ZSTD_compressBound(len);
    void *tmp = malloc(bound);
    assert_non_null(tmp);
    size_t n = ZSTD_compress(tmp, bound, v, len, 1);
    free(tmp);
    assert_false(ZSTD_isError(n));
    return n < len ? n : len;
}

static void test_threads(void **state) {
    (void)state;
    static const rc_policy pols[] = {RC_LRU, RC_LFU, RC_FIFO, RC_RANDOM};
    for (int p = 0; p < 4; p++) {
        const uint64_t budget = 600 * rc_l1_entry_cost(1000);
        rc_l1 *c = make(pols[p], budget, true, 77, NULL);
        atomic_bool stop = false;
        hk_ctx h[HK_THREADS];
        pthread_t th[HK_THREADS];
        int64_t t0 = mono_ms();
        for (int i = 0; i < HK_THREADS; i++) {
            h[i] = (hk_ctx){.c = c, .id = i + 10 * p, .stop = &stop, .t0_ms = t0};
            assert_int_equal(pthread_create(&th[i], NULL, hk_worker, &h[i]), 0);
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 125 * 1000000L}; /* 4 policies: 0.5 s in all */
        nanosleep(&ts, NULL);
        atomic_store(&stop, true);
        unsigned long ops = 0, hits = 0, bad = 0;
        for (int i = 0; i < HK_THREADS; i++) {
            pthread_join(th[i], NULL);
            ops += h[i].ops;
            hits += h[i].hits;
            bad += h[i].bad;
        }
        print_message("%-6s %lu ops, %lu hits\n", rc_policy_name(pols[p]), ops, hits);
        assert_int_equal(bad, 0);
        assert_true(hits > 0);

        /* the invariants: every remaining entry is found, and bytes is the
         * sum of their costs (stored lengths recomputed with zstd) */
        rc_stats s;
        rc_l1_stats(c, &s);
        assert_true(s.bytes <= budget);
        uint64_t n = 0, sum = 0;
        for (uint64_t id = 0; id < HK_KEYS; id++) {
            void *v;
            size_t len;
            if (rc_l1_get(c, key_n(id), INT64_MIN + 1, &v, &len, NULL)) { /* a clock before any expiry */
                n++;
                sum += rc_l1_entry_cost(stored_len_of(v, len));
                free(v);
            }
        }
        assert_int_equal(n, s.entries);
        assert_int_equal(sum, s.bytes);
        assert_int_equal(rc_l1_clear(c, 0), n);
        rc_l1_stats(c, &s);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, 0);
        rc_l1_destroy(c);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_order),          cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_lfu_order),          cmocka_unit_test(test_lfu_ties_and_survivor),
        cmocka_unit_test(test_random_policy),      cmocka_unit_test(test_budget_mixed_sizes),
        cmocka_unit_test(test_replace_bytes),      cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_compression),        cmocka_unit_test(test_o1_work),
        cmocka_unit_test(test_rehash_lookups),
        cmocka_unit_test(test_clear_model),        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_metrics_series),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
