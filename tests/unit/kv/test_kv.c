/*
 * test_kv.c — the paged KV cache's block accounting and prefix cache:
 * matching, sharing and refcounts, LRU eviction order (tail first),
 * copy-on-write, dedup of identical blocks, collision safety under a
 * forced constant hash, pool exhaustion, and that accounting returns to
 * its starting state. Rows are written through kv_row as the forward pass
 * does, with a value derived from (token, position), so that a wrongly
 * shared or copied block shows up as a wrong row.
 */
#include "testutil.h"

#include "kiln/kv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BS 16
#define LAYERS 2
#define HEADS 2

static kv_cache *mk(int n_seq, int n_ctx, int n_blocks, bool const_hash) {
    kv_geom g = {.n_layer = LAYERS, .n_head_kv = HEADS, .row_bytes = 8};
    kv_opts o = {.n_seq = n_seq, .n_ctx = n_ctx, .block_size = BS, .n_blocks = n_blocks, .prefix_cache = true,
                 .salt = 42, .test_const_hash = const_hash};
    kv_cache *kv = NULL;
    kn_err err;
    assert_int_equal(kv_cache_create(&g, &o, &kv, &err), KN_OK);
    return kv;
}

/* What the "forward pass" stores at (layer, head, pos) for a token: it
 * depends on the whole prefix (like real KV) through a running hash. */
static uint64_t row_value(uint64_t prefix, int layer, int head) { return prefix * 1000003u + (uint64_t)layer * 31 + head; }

/* Feeds tokens[from..to) of seq as one batch and writes their rows. */
static kn_status feed(kv_cache *kv, int seq, const int32_t *tokens, int from, int to) {
    int n = to - from;
    int32_t *s = malloc((size_t)n * sizeof *s), *p = malloc((size_t)n * sizeof *p);
    assert_true(n > 0 && s && p);
    for (int i = 0; i < n; i++) s[i] = seq, p[i] = from + i;
    kn_err err;
    kn_status st = kv_batch_begin(kv, n, s, p, tokens + from, &err);
    if (st == KN_OK) {
        for (int i = 0; i < n; i++) {
            uint64_t h = 1469598103934665603ull;
            for (int k = 0; k <= from + i; k++) h = (h ^ (uint64_t)tokens[k]) * 1099511628211ull;
            for (int l = 0; l < LAYERS; l++)
                for (int hd = 0; hd < HEADS; hd++) {
                    uint64_t v = row_value(h, l, hd);
                    memcpy(kv_row(kv, seq, l, hd, from + i, false, NULL), &v, 8);
                    v = ~v;
                    memcpy(kv_row(kv, seq, l, hd, from + i, true, NULL), &v, 8);
                }
        }
        kv_batch_end(kv, n, s, p);
    }
    free(s);
    free(p);
    return st;
}

/* Checks every row of seq against what tokens[0..n) should have produced. */
static void check_rows(kv_cache *kv, int seq, const int32_t *tokens, int n) {
    assert_true(kv_seq_len(kv, seq) >= n);
    uint64_t h = 1469598103934665603ull;
    for (int pos = 0; pos < n; pos++) {
        h = (h ^ (uint64_t)tokens[pos]) * 1099511628211ull;
        for (int l = 0; l < LAYERS; l++)
            for (int hd = 0; hd < HEADS; hd++) {
                uint64_t want = row_value(h, l, hd), got, gotv;
                memcpy(&got, kv_row(kv, seq, l, hd, pos, false, NULL), 8);
                memcpy(&gotv, kv_row(kv, seq, l, hd, pos, true, NULL), 8);
                assert_true(got == want);
                assert_true(gotv == ~want);
            }
    }
}

static void fill(int32_t *t, int n, int32_t base) {
    for (int i = 0; i < n; i++) t[i] = base + i * 7 % 13;
}

static void assert_pristine(kv_cache *kv) {
    kv_stats st;
    kv_stats_get(kv, &st);
    assert_int_equal(st.blocks_used, 0);
    assert_int_equal(st.blocks_logical, 0);
    assert_int_equal(st.blocks_free + st.blocks_cached, st.blocks_total);
}

static void test_match_shares_blocks(void **state) {
    (void)state;
    kv_cache *kv = mk(3, 256, 0, false);
    int32_t a[100], b[100];
    fill(a, 100, 1000);
    memcpy(b, a, 70 * sizeof *a); /* shares 4 full blocks and 6 tokens */
    fill(b + 70, 30, 5000);
    assert_int_equal(kv_seq_match(kv, 0, a, 100), 0);
    assert_int_equal(feed(kv, 0, a, 0, 60), KN_OK);
    assert_int_equal(feed(kv, 0, a, 60, 100), KN_OK);
    check_rows(kv, 0, a, 100);
    kv_stats st;
    kv_stats_get(kv, &st);
    assert_int_equal(st.blocks_used, 7);
    /* b attaches the 4 shared full blocks (a partial block is never shared) */
    assert_int_equal(kv_seq_match(kv, 1, b, 100), 64);
    kv_stats_get(kv, &st);
    assert_int_equal(st.blocks_used, 7);
    assert_int_equal(st.blocks_logical, 11);
    assert_int_equal(feed(kv, 1, b, 64, 100), KN_OK);
    check_rows(kv, 1, b, 100);
    check_rows(kv, 0, a, 100); /* a is untouched by b's writes */
    /* a whole-prompt hit: the caller truncates to recompute the last token;
     * the registered block is copied before the write */
    assert_int_equal(kv_seq_match(kv, 2, a, 96), 96);
    kv_seq_truncate(kv, 2, 95);
    assert_int_equal(kv_seq_need(kv, 2, 95, 96), 1);
    assert_int_equal(feed(kv, 2, a, 95, 96), KN_OK);
    kv_stats_get(kv, &st);
    assert_int_equal(st.cow_copies, 1);
    check_rows(kv, 2, a, 96);
    check_rows(kv, 0, a, 100);
    for (int s = 0; s < 3; s++) kv_seq_truncate(kv, s, 0);
    assert_pristine(kv);
    /* everything registered is still there for a later match */
    assert_int_equal(kv_seq_match(kv, 0, a, 100), 96);
    check_rows(kv, 0, a, 96);
    kv_seq_truncate(kv, 0, 0);
    kv_cache_destroy(kv);
}

static void test_lru_evicts_tail_first(void **state) {
    (void)state;
    /* 2 sequences of 64 positions: 4 blocks each, a pool of 9 */
    kv_cache *kv = mk(2, 64, 9, false);
    int32_t a[64], b[64];
    fill(a, 64, 100);
    fill(b, 64, 900);
    assert_int_equal(kv_seq_match(kv, 0, a, 64), 0);
    assert_int_equal(feed(kv, 0, a, 0, 64), KN_OK);
    kv_seq_truncate(kv, 0, 0); /* a's 4 blocks are cached, unreferenced */
    kv_stats st;
    kv_stats_get(kv, &st);
    assert_int_equal(st.blocks_cached, 4);
    /* b takes the 5 free blocks, then evicts 2 of a's: its tail first */
    assert_int_equal(kv_seq_match(kv, 1, b, 64), 0);
    assert_int_equal(feed(kv, 1, b, 0, 64), KN_OK);
    assert_int_equal(feed(kv, 0, b, 0, 48), KN_OK); /* seq 0 computes b's first 3 blocks too */
    kv_stats_get(kv, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.dedups, 3); /* the same content as seq 1's: one copy kept */
    kv_seq_truncate(kv, 0, 0);
    /* a's head survived: 2 blocks still match */
    assert_int_equal(kv_seq_match(kv, 0, a, 64), 32);
    check_rows(kv, 0, a, 32);
    kv_seq_truncate(kv, 0, 0);
    kv_seq_truncate(kv, 1, 0);
    assert_pristine(kv);
    kv_cache_destroy(kv);
}

static void test_forced_collisions_are_not_reused(void **state) {
    (void)state;
    kv_cache *kv = mk(2, 128, 0, true); /* every block hashes the same */
    int32_t a[64], b[64];
    fill(a, 64, 7);
    memcpy(b, a, sizeof a);
    b[20] = 99999; /* differs in block 1 */
    assert_int_equal(kv_seq_match(kv, 0, a, 64), 0);
    assert_int_equal(feed(kv, 0, a, 0, 64), KN_OK);
    kv_seq_truncate(kv, 0, 0);
    assert_int_equal(kv_seq_match(kv, 1, b, 64), BS); /* block 0 only */
    kv_stats st;
    kv_stats_get(kv, &st);
    assert_true(st.collisions > 0); /* the hash matched, the tokens did not */
    assert_int_equal(feed(kv, 1, b, BS, 64), KN_OK);
    check_rows(kv, 1, b, 64);
    kv_seq_truncate(kv, 1, 0);
    /* same tokens under another parent never match: c = b's block 2..3
     * after a different first block */
    int32_t c[64];
    memcpy(c, a, sizeof c);
    c[0] = 424242;
    assert_int_equal(kv_seq_match(kv, 0, c, 64), 0);
    kv_seq_truncate(kv, 0, 0);
    assert_pristine(kv);
    kv_cache_destroy(kv);
}

static void test_pool_exhaustion_changes_nothing(void **state) {
    (void)state;
    kv_cache *kv = mk(2, 64, 5, false); /* one full sequence plus one block */
    int32_t a[64], b[64];
    fill(a, 64, 1);
    fill(b, 64, 2);
    kv_seq_match(kv, 0, a, 64);
    kv_seq_match(kv, 1, b, 64);
    assert_int_equal(feed(kv, 0, a, 0, 48), KN_OK);
    assert_int_equal(kv_available(kv), 2);
    assert_int_equal(feed(kv, 1, b, 0, 48), KN_EBUSY); /* needs 3 */
    assert_int_equal(kv_seq_len(kv, 1), 0);
    assert_int_equal(kv_available(kv), 2);
    assert_int_equal(feed(kv, 1, b, 0, 32), KN_OK);
    assert_int_equal(kv_seq_need(kv, 1, 32, 33), 1);
    assert_int_equal(feed(kv, 1, b, 32, 33), KN_EBUSY);
    assert_int_equal(kv_seq_len(kv, 1), 32);
    check_rows(kv, 1, b, 32);
    check_rows(kv, 0, a, 48);
    kv_seq_truncate(kv, 0, 0);
    kv_seq_truncate(kv, 1, 0);
    assert_pristine(kv);
    kv_cache_destroy(kv);
}

static void test_bad_batches(void **state) {
    (void)state;
    kv_cache *kv = mk(2, 64, 0, false);
    kn_err err;
    int32_t s[2] = {0, 0}, p[2] = {1, 2}, t[2] = {5, 6};
    assert_int_equal(kv_batch_begin(kv, 2, s, p, t, &err), KN_EINVAL); /* skips position 0 */
    p[0] = 0, p[1] = 2;
    assert_int_equal(kv_batch_begin(kv, 2, s, p, t, &err), KN_EINVAL); /* gap */
    s[1] = 5;
    p[1] = 1;
    assert_int_equal(kv_batch_begin(kv, 2, s, p, t, &err), KN_EINVAL); /* bad sequence */
    s[1] = 0;
    p[0] = 63, p[1] = 64;
    assert_int_equal(kv_batch_begin(kv, 1, s, p + 1, t, &err), KN_ERANGE);
    assert_pristine(kv);
    kv_geom g = {.n_layer = 1, .n_head_kv = 1, .row_bytes = 8};
    kv_opts o = {.n_seq = 1, .n_ctx = 64, .block_size = 24};
    kv_cache *bad = NULL;
    assert_int_equal(kv_cache_create(&g, &o, &bad, &err), KN_EINVAL);
    o.block_size = 16;
    o.n_blocks = 4; /* cannot hold one full sequence plus one */
    assert_int_equal(kv_cache_create(&g, &o, &bad, &err), KN_EINVAL);
    assert_null(bad);
    kv_cache_destroy(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_shares_blocks),
        cmocka_unit_test(test_lru_evicts_tail_first),
        cmocka_unit_test(test_forced_collisions_are_not_reused),
        cmocka_unit_test(test_pool_exhaustion_changes_nothing),
        cmocka_unit_test(test_bad_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
