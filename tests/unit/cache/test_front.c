/* test_front.c — the cache's front (rc_cache): reads fall through L1 to L2,
 * an L2 hit is promoted to L1 with its original expiry (not a fresh TTL),
 * stores reach L2 through the writer (rc_flush), clears by tier, type and
 * model, a disabled type stores nothing, entries survive a destroy/create
 * (the writer flushes at destroy), the kiln_cache_* metrics move with the
 * events, and 8 threads store and look up at once (run under TSan by the
 * test script). */
#include "testutil.h"
#include "kiln/cache.h"
#include "kiln/core.h"
#include "kiln/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rc_key key_n(uint64_t n) { return rc_key_of(&n, sizeof n); }

static rc_opts opts(const char *dir, double ttl_s, met_registry *reg) {
    return (rc_opts){.enabled = {true, true},
                     .l1_bytes = 1 << 20,
                     .policy = RC_LRU,
                     .compress = true,
                     .ttl_s = {ttl_s, ttl_s},
                     .dir = dir,
                     .l2_bytes = 64 << 20,
                     .maintain_interval_s = 3600,
                     .metrics = reg};
}

static void value_of(uint64_t n, char *buf, size_t cap) { snprintf(buf, cap, "value-%llu-%s", (unsigned long long)n, "x"); }

static void expect(rc_cache *c, rc_type t, uint64_t model, uint64_t n, rc_tier want) {
    void *v = NULL;
    size_t len = 0;
    rc_tier got = rc_lookup(c, t, model, key_n(n), &v, &len);
    assert_int_equal(got, want);
    if (want != RC_TIER_NONE) {
        char buf[64];
        value_of(n, buf, sizeof buf);
        assert_int_equal(len, strlen(buf));
        assert_memory_equal(v, buf, len);
    } else {
        assert_null(v);
    }
    free(v);
}

static void put(rc_cache *c, rc_type t, uint64_t model, uint64_t n) {
    char buf[64];
    value_of(n, buf, sizeof buf);
    rc_store(c, t, model, key_n(n), buf, strlen(buf));
}

static void test_fall_through_and_promotion(void **state) {
    (void)state;
    char dir[256];
    tu_tmpdir(dir, sizeof dir);
    rc_opts o = opts(dir, 3600, NULL);
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    const uint64_t m = rc_model_tag("tiny");
    put(c, RC_RESPONSE, m, 1);
    expect(c, RC_RESPONSE, m, 1, RC_TIER_L1);
    expect(c, RC_EMBEDDING, m, 1, RC_TIER_NONE); /* types are separate */
    expect(c, RC_RESPONSE, rc_model_tag("other"), 2, RC_TIER_NONE);
    rc_flush(c);
    assert_int_equal(rc_clear(c, true, RC_RESPONSE, 0, true, false), 1); /* L1 only */
    expect(c, RC_RESPONSE, m, 1, RC_TIER_L2);                            /* from disk, promoted */
    expect(c, RC_RESPONSE, m, 1, RC_TIER_L1);
    rc_stats s1, s2;
    rc_stats_get(c, RC_TIER_L1, RC_RESPONSE, &s1);
    rc_stats_get(c, RC_TIER_L2, RC_RESPONSE, &s2);
    assert_int_equal(s1.entries, 1);
    assert_int_equal(s1.hits, 2);
    assert_int_equal(s2.entries, 1);
    assert_int_equal(s2.hits, 1);
    /* clearing L2 only leaves L1 serving */
    assert_int_equal(rc_clear(c, false, RC_RESPONSE, 0, false, true), 1);
    expect(c, RC_RESPONSE, m, 1, RC_TIER_L1);
    rc_cache_destroy(c);
    tu_rmdir(dir);
}

/* A promotion keeps the entry's expiry: with a 1.2 s TTL, an entry looked up
 * from L2 at ~0.7 s must be gone at ~1.5 s. A fresh TTL on promotion would
 * keep it until ~1.9 s. */
static void test_promotion_keeps_expiry(void **state) {
    (void)state;
    char dir[256];
    tu_tmpdir(dir, sizeof dir);
    rc_opts o = opts(dir, 1.2, NULL);
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    double t0 = kn_now_s();
    put(c, RC_EMBEDDING, 7, 5);
    rc_flush(c);
    rc_clear(c, true, RC_EMBEDDING, 0, true, false);
    kn_sleep_ms(700);
    expect(c, RC_EMBEDDING, 7, 5, RC_TIER_L2);
    expect(c, RC_EMBEDDING, 7, 5, RC_TIER_L1);
    while (kn_now_s() - t0 < 1.5) kn_sleep_ms(20);
    expect(c, RC_EMBEDDING, 7, 5, RC_TIER_NONE);
    rc_stats s;
    rc_stats_get(c, RC_TIER_L1, RC_EMBEDDING, &s);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(s.entries, 0);
    rc_cache_destroy(c);
    tu_rmdir(dir);
}

static void test_clear_by_model_and_restart(void **state) {
    (void)state;
    char dir[256];
    tu_tmpdir(dir, sizeof dir);
    rc_opts o = opts(dir, 3600, NULL);
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    uint64_t a = rc_model_tag("a"), b = rc_model_tag("b");
    for (uint64_t i = 0; i < 10; i++) put(c, RC_RESPONSE, i % 2 ? a : b, i);
    /* 5 of model a, in L1 and (after the flush clear does) in L2 */
    assert_int_equal(rc_clear(c, true, RC_RESPONSE, a, true, true), 10);
    for (uint64_t i = 0; i < 10; i++) expect(c, RC_RESPONSE, i % 2 ? a : b, i, i % 2 ? RC_TIER_NONE : RC_TIER_L1);
    rc_cache_destroy(c); /* the writer flushes what is queued */
    c = NULL;
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    for (uint64_t i = 0; i < 10; i++) expect(c, RC_RESPONSE, i % 2 ? a : b, i, i % 2 ? RC_TIER_NONE : RC_TIER_L2);
    rc_cache_destroy(c);
    tu_rmdir(dir);
}

static void test_disabled_and_memory_only(void **state) {
    (void)state;
    rc_opts o = opts(NULL, 3600, NULL);
    o.enabled[RC_EMBEDDING] = false;
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    assert_true(rc_enabled(c, RC_RESPONSE));
    assert_false(rc_enabled(c, RC_EMBEDDING));
    put(c, RC_EMBEDDING, 1, 1);
    expect(c, RC_EMBEDDING, 1, 1, RC_TIER_NONE);
    put(c, RC_RESPONSE, 1, 1);
    expect(c, RC_RESPONSE, 1, 1, RC_TIER_L1);
    rc_flush(c); /* no L2: returns at once */
    rc_stats s;
    rc_stats_get(c, RC_TIER_L2, RC_RESPONSE, &s);
    assert_int_equal(s.entries, 0);
    rc_cache_destroy(c);
    assert_false(rc_enabled(NULL, RC_RESPONSE));
    rc_cache_destroy(NULL);
}

static double metric_value(met_registry *r, const char *series) {
    size_t len = 0;
    char *text = met_render(r, &len);
    assert_non_null(text);
    const char *p = strstr(text, series);
    double v = -1;
    if (p) v = strtod(p + strlen(series), NULL);
    free(text);
    return v;
}

static void test_metrics(void **state) {
    (void)state;
    char dir[256];
    tu_tmpdir(dir, sizeof dir);
    met_registry *reg = met_registry_create();
    rc_opts o = opts(dir, 3600, reg);
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    expect(c, RC_RESPONSE, 1, 1, RC_TIER_NONE);
    put(c, RC_RESPONSE, 1, 1);
    expect(c, RC_RESPONSE, 1, 1, RC_TIER_L1);
    expect(c, RC_RESPONSE, 1, 1, RC_TIER_L1);
    rc_flush(c);
    rc_metrics_refresh(c);
    assert_true(metric_value(reg, "kiln_cache_hits_total{tier=\"l1\",type=\"response\"} ") == 2);
    assert_true(metric_value(reg, "kiln_cache_misses_total{tier=\"l1\",type=\"response\"} ") == 1);
    assert_true(metric_value(reg, "kiln_cache_misses_total{tier=\"l2\",type=\"response\"} ") == 1);
    assert_true(metric_value(reg, "kiln_cache_entries{tier=\"l1\",type=\"response\"} ") == 1);
    assert_true(metric_value(reg, "kiln_cache_entries{tier=\"l2\",type=\"response\"} ") == 1);
    assert_true(metric_value(reg, "kiln_cache_bytes{tier=\"l1\",type=\"response\"} ") > 0);
    rc_cache_destroy(c);
    met_registry_destroy(reg);
    tu_rmdir(dir);
}

typedef struct worker {
    rc_cache *c;
    int id;
    int bad;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    for (uint64_t i = 0; i < 400; i++) {
        uint64_t n = (uint64_t)w->id * 1000 + i % 50;
        put(w->c, (rc_type)(i % 2), 3, n);
        void *v = NULL;
        size_t len = 0;
        if (rc_lookup(w->c, (rc_type)(i % 2), 3, key_n(n), &v, &len) != RC_TIER_NONE) {
            char buf[64];
            value_of(n, buf, sizeof buf);
            if (len != strlen(buf) || memcmp(v, buf, len)) w->bad++;
        }
        free(v);
        if (i % 97 == 0) rc_clear(w->c, false, (rc_type)(i % 2), 0, true, false);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    char dir[256];
    tu_tmpdir(dir, sizeof dir);
    rc_opts o = opts(dir, 3600, NULL);
    o.l1_bytes = 16 << 10; /* small: evictions under contention */
    o.maintain_interval_s = 0.05;
    rc_cache *c = NULL;
    kn_err err = {0};
    assert_int_equal(rc_cache_create(&o, &c, &err), KN_OK);
    pthread_t th[8];
    worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker){.c = c, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    rc_flush(c);
    rc_stats s;
    rc_stats_get(c, RC_TIER_L1, RC_RESPONSE, &s);
    assert_true(s.bytes <= o.l1_bytes);
    rc_cache_destroy(c);
    tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fall_through_and_promotion), cmocka_unit_test(test_promotion_keeps_expiry),
        cmocka_unit_test(test_clear_by_model_and_restart), cmocka_unit_test(test_disabled_and_memory_only),
        cmocka_unit_test(test_metrics),                    cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
