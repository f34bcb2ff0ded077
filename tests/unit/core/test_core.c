/* test_core.c — the core module: thread pool, range splitting, arena,
 * errors, CPU selection and file reading. */
#include "testutil.h"
#include "kiln/core.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sum_job {
    int64_t n;
    int64_t *out; /* one slot per thread */
    _Atomic int calls;
} sum_job;

static void sum_fn(void *ctx, int ith, int nth) {
    sum_job *j = ctx;
    int64_t lo, hi, s = 0;
    kn_split_range(j->n, 1, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) s += i;
    j->out[ith] = s;
    atomic_fetch_add(&j->calls, 1);
}

static void test_pool_runs_every_thread(void **state) {
    (void)state;
    for (int nt = 1; nt <= 4; nt++) {
        kn_pool *p = kn_pool_create(nt);
        assert_non_null(p);
        assert_int_equal(kn_pool_size(p), nt);
        int64_t out[4];
        sum_job j = {.n = 100001, .out = out};
        atomic_init(&j.calls, 0);
        for (int rep = 0; rep < 200; rep++) { /* many back-to-back jobs */
            memset(out, 0, sizeof out);
            kn_pool_run(p, sum_fn, &j);
            int64_t s = 0;
            for (int i = 0; i < nt; i++) s += out[i];
            assert_int_equal(s, (int64_t)100000 * 100001 / 2);
        }
        assert_int_equal(atomic_load(&j.calls), 200 * nt);
        kn_pool_destroy(p);
    }
    kn_pool_destroy(NULL);
}

static void test_split_range(void **state) {
    (void)state;
    for (int nth = 1; nth <= 7; nth++) {
        int64_t prev = 0;
        for (int i = 0; i < nth; i++) {
            int64_t lo, hi;
            kn_split_range(1000, 16, i, nth, &lo, &hi);
            assert_int_equal(lo, prev);
            assert_true(hi >= lo);
            if (hi < 1000) assert_int_equal(hi % 16, 0);
            prev = hi;
        }
        assert_int_equal(prev, 1000);
    }
}

static void test_arena(void **state) {
    (void)state;
    kn_arena a;
    assert_int_equal(kn_arena_init(&a, 1024), KN_OK);
    void *x = kn_arena_alloc(&a, 100);
    void *y = kn_arena_alloc(&a, 100);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal((uintptr_t)y % 64, 0);
    assert_null(kn_arena_alloc(&a, 2000));
    assert_null(kn_arena_alloc(&a, SIZE_MAX));
    kn_arena_reset(&a);
    assert_ptr_equal(kn_arena_alloc(&a, 10), x);
    kn_arena_free(&a);
}

static void test_errors_and_overflow(void **state) {
    (void)state;
    kn_err e = {0};
    assert_int_equal(kn_fail(&e, KN_ERANGE, "value %d too big", 7), KN_ERANGE);
    kn_err_prefix(&e, "file.gguf");
    assert_string_equal(e.msg, "file.gguf: value 7 too big");
    uint64_t r;
    assert_false(kn_mul_u64(1ull << 40, 1ull << 30, &r));
    assert_true(kn_mul_u64(1ull << 20, 1ull << 30, &r));
    assert_false(kn_add_u64(UINT64_MAX, 1, &r));
}

static void test_cpu_select(void **state) {
    (void)state;
    kn_cpu_features f;
    kn_cpu_features_detect(&f);
    kn_cpu_level l;
    kn_err e = {0};
    setenv("KILN_CPU", "generic", 1);
    assert_int_equal(kn_cpu_select(&l, &e), KN_OK);
    assert_int_equal(l, KN_CPU_GENERIC);
    setenv("KILN_CPU", "pentium", 1);
    assert_int_equal(kn_cpu_select(&l, &e), KN_EINVAL);
    assert_non_null(strstr(e.msg, "pentium"));
    unsetenv("KILN_CPU");
    assert_int_equal(kn_cpu_select(&l, &e), KN_OK);
    assert_int_equal(l, kn_cpu_best(&f));
}

static void test_read_file(void **state) {
    (void)state;
    char dir[512], path[600];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/f.txt", dir);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 10000; i++) fputc('a' + i % 26, f);
    fclose(f);
    char *buf;
    size_t len;
    kn_err e = {0};
    assert_int_equal(kn_read_file(path, 1 << 20, &buf, &len, &e), KN_OK);
    assert_int_equal(len, 10000);
    assert_int_equal(buf[10000], 0);
    free(buf);
    assert_int_equal(kn_read_file(path, 5000, &buf, &len, &e), KN_ERANGE);
    assert_int_equal(kn_read_file("/nonexistent/x", 10, &buf, &len, &e), KN_EIO);
    tu_rmdir(dir);
}

static void test_buf(void **state) {
    (void)state;
    kn_buf b = {0};
    char chunk[300];
    for (int i = 0; i < 300; i++) chunk[i] = (char)('a' + i % 26);
    size_t total = 0;
    for (int k = 0; k < 50; k++) {
        assert_true(kn_buf_add(&b, chunk, (size_t)k, 0));
        total += (size_t)k;
    }
    assert_int_equal(b.n, total);
    assert_int_equal(b.p[b.n], 0);
    assert_memory_equal(b.p + total - 49, chunk, 49);
    /* the bound: whole appends only, the buffer unchanged when refused */
    kn_buf c = {0};
    assert_true(kn_buf_add(&c, chunk, 100, 150));
    assert_false(kn_buf_add(&c, chunk, 51, 150));
    assert_int_equal(c.n, 100);
    assert_true(kn_buf_add(&c, chunk, 50, 150));
    assert_int_equal(c.n, 150);
    assert_true(c.cap <= 151);
    kn_buf_free(&b);
    kn_buf_free(&c);
    assert_null(b.p);
    kn_buf_free(&b); /* idempotent */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs_every_thread), cmocka_unit_test(test_split_range),
        cmocka_unit_test(test_arena),                  cmocka_unit_test(test_errors_and_overflow),
        cmocka_unit_test(test_cpu_select),             cmocka_unit_test(test_read_file), cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
