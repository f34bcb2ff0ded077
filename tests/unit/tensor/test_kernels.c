/*
 * test_kernels.c — the SIMD kernel sets against the scalar reference, the
 * SIMD activation quantizers byte for byte, and batch invariance bit for bit;
 * MXFP4 also at the edges of its E8M0 scale.
 *
 * Sets tested: every set this CPU supports, or only $KILN_CPU when it is set
 * (the test script reruns the kernel tests once per set).
 */
#include "testutil.h"

#include "kiln/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const q_type HOT[] = {Q_TYPE_Q4_K, Q_TYPE_Q5_K, Q_TYPE_Q6_K, Q_TYPE_Q8_0, Q_TYPE_Q4_0,
                             Q_TYPE_MXFP4, Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_F32};
#define N_HOT (int)(sizeof HOT / sizeof HOT[0])

/* The kernel sets under test. */
static int test_levels(kn_cpu_level out[KN_CPU_LEVEL_COUNT]) {
    kn_cpu_features f;
    kn_cpu_features_detect(&f);
    const char *e = getenv("KILN_CPU");
    kn_cpu_level l;
    if (e && *e && kn_cpu_level_parse(e, &l) && kn_cpu_supports(&f, l)) {
        out[0] = l;
        return 1;
    }
    int n = 0;
    for (int i = 0; i < KN_CPU_LEVEL_COUNT; i++)
        if (kn_cpu_supports(&f, (kn_cpu_level)i)) out[n++] = (kn_cpu_level)i;
    return n;
}

static void fill_normal(tu_rng *r, float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = tu_rng_normal(r) * scale;
}

/* M rows of K weights quantized with the reference quantizer (caller frees). */
static uint8_t *make_weights(tu_rng *r, q_type t, int64_t M, int64_t K) {
    const q_traits *tr = q_get_traits(t);
    const size_t row = q_row_size(t, K);
    uint8_t *w = malloc(row * (size_t)M);
    float *x = malloc(sizeof(float) * (size_t)K);
    assert_non_null(w);
    assert_non_null(x);
    for (int64_t m = 0; m < M; m++) {
        fill_normal(r, x, K, 0.5f + (float)(m % 5));
        tr->from_float(x, w + (size_t)m * row, K);
    }
    free(x);
    return w;
}

/* n_cols activation columns of K floats (caller frees). */
static float *make_floats(tu_rng *r, int64_t K, int64_t n_cols) {
    float *x = malloc(sizeof(float) * (size_t)(K * n_cols));
    assert_non_null(x);
    for (int64_t c = 0; c < n_cols; c++) fill_normal(r, x + c * K, K, 0.25f + 0.1f * (float)(c % 7));
    return x;
}

/* sum |w_i * a_i| of the dequantized rows: the scale of rounding errors. */
static double abs_dot(q_type wt, const void *w, const void *a, int64_t K) {
    const q_traits *tw = q_get_traits(wt), *ta = q_get_traits(tw->vec_dot_type);
    float *x = malloc(sizeof(float) * (size_t)K), *y = malloc(sizeof(float) * (size_t)K);
    tw->to_float(w, x, K);
    ta->to_float(a, y, K);
    double s = 0;
    for (int64_t i = 0; i < K; i++) s += fabs((double)x[i] * y[i]);
    free(x);
    free(y);
    return s;
}

/* Whether set l computes type t bit-identically to the scalar reference:
 * block kernels that keep exact integer sums and the reference's float order
 * (quants_ref.h). The AVX-512 Q4_K, Q5_K and Q6_K kernels instead keep 16 float
 * partial sums per output across blocks (see x86.h), so only their
 * integer parts are exact. */
static bool ref_exact(q_type t, kn_cpu_level l) {
    if (!q_get_traits(t)->is_quantized) return false;
    return !(l == KN_CPU_AVX512 && (t == Q_TYPE_Q4_K || t == Q_TYPE_Q5_K || t == Q_TYPE_Q6_K));
}

/* Bit-exact kernels must agree bit for bit. Others: within 1e-5 * sum|w_i*a_i|.
 * Justification: both sides sum the same exact integers (converted exactly
 * to float), so the only differences are float roundings of partial sums,
 * each at most 2^-24 relative to a partial sum of size ~sum|w_i*a_i| (Q4_K's
 * d and dmin parts can each be somewhat larger when they cancel); the
 * reference adds one rounded term per block (<= 20 here) and the SIMD kernels
 * about as many plus 4 (the final horizontal sum): tens of 2^-24 ~ 6e-8.
 * Measured worst case over 2000 random rows of K = 4096: 1.4e-7 (Q4_K),
 * 3.7e-8 (Q6_K). A wrong scale, sub-block or sign misses by far more. */
static void check_close(q_type t, kn_cpu_level l, float got, float want, double scale, const char *what) {
    const double tol = 1e-5 * scale + 1e-30;
    const bool exact = ref_exact(t, l);
    if (exact ? memcmp(&got, &want, sizeof got) != 0 : !(fabs((double)got - (double)want) <= tol)) {
        fprintf(stderr, "%s %s set %s: got %.9g want %.9g (tol %.3g)\n", what, q_type_name(t), kn_cpu_level_name(l),
                got, want, tol);
        fail();
    }
}

/* vec_dot and gemm of every hot type and set against the reference. */
static void test_kernels_vs_reference(void **state) {
    (void)state;
    kn_cpu_level lv[KN_CPU_LEVEL_COUNT];
    const int nl = test_levels(lv);
    tu_rng rng = {0x5eed1234};
    for (int ti = 0; ti < N_HOT; ti++) {
        const q_type t = HOT[ti];
        const q_traits *tr = q_get_traits(t);
        assert_non_null(tr);
        assert_non_null(tr->vec_dot);
        const int64_t blk = tr->blck_size == 1 ? 1 : (tr->blck_size < 256 ? 32 : 256);
        const int64_t Ks[3] = {blk == 1 ? 777 : blk * 5, blk == 1 ? 16 : blk * 3, blk == 1 ? 3 : blk};
        for (int ki = 0; ki < 3; ki++) {
            const int64_t K = Ks[ki], M = 37, NC = 11;
            uint8_t *w = make_weights(&rng, t, M, K);
            float *x = make_floats(&rng, K, NC);
            const size_t wrow = q_row_size(t, K);
            tensor_ops ref;
            tensor_ops_init(&ref, KN_CPU_GENERIC);
            uint8_t *act = malloc(tensor_act_bytes(t, K, NC));
            tensor_act_quantize(&ref, t, x, K, K, NC, act);
            const size_t arow = tensor_act_bytes(t, K, 1);
            float *want = malloc(sizeof(float) * M * NC), *got = malloc(sizeof(float) * M * NC);
            double *scale = malloc(sizeof(double) * M * NC);
            for (int64_t c = 0; c < NC; c++)
                for (int64_t m = 0; m < M; m++) {
                    tr->vec_dot(K, &want[c * M + m], w + m * wrow, act + c * arow);
                    scale[c * M + m] = abs_dot(t, w + m * wrow, act + c * arow, K);
                }
            for (int li = 0; li < nl; li++) {
                tensor_ops ops;
                tensor_ops_init(&ops, lv[li]);
                assert_non_null(ops.vec_dot[t]);
                /* every hot type has its own kernels in the SIMD sets (else this test compares the
                 * reference with itself) */
                if (lv[li] >= KN_CPU_AVX2 && (ops.vec_dot[t] == tr->vec_dot || !ops.gemm[t]))
                    fail_msg("%s: set %s runs the scalar reference", q_type_name(t),
                             kn_cpu_level_name(lv[li]));
                for (int64_t c = 0; c < NC; c++)
                    for (int64_t m = 0; m < M; m++) {
                        float s = NAN;
                        ops.vec_dot[t](K, &s, w + m * wrow, act + c * arow);
                        check_close(t, lv[li], s, want[c * M + m], scale[c * M + m], "vec_dot");
                    }
                if (ops.gemm[t]) {
                    for (int64_t i = 0; i < M * NC; i++) got[i] = NAN;
                    ops.gemm[t](K, w, wrow, (int)M, act, arow, (int)NC, got, M);
                    for (int64_t i = 0; i < M * NC; i++) check_close(t, lv[li], got[i], want[i], scale[i], "gemm");
                }
                /* the matmul driver, rows 5..31 only, into a strided output */
                const int64_t ldy = M + 3;
                float *y = malloc(sizeof(float) * ldy * NC);
                for (int64_t i = 0; i < ldy * NC; i++) y[i] = -7.0f;
                tensor_matmul_rows(&ops, t, w, K, 5, 31, act, NC, y, ldy);
                for (int64_t c = 0; c < NC; c++)
                    for (int64_t m = 0; m < ldy; m++) {
                        if (m < 5 || m >= 31) {
                            assert_true(y[c * ldy + m] == -7.0f);
                        } else {
                            check_close(t, lv[li], y[c * ldy + m], want[c * M + m], scale[c * M + m], "matmul_rows");
                        }
                    }
                free(y);
            }
            free(w);
            free(x);
            free(act);
            free(want);
            free(got);
            free(scale);
        }
    }
}

/* The SIMD activation quantizers write exactly the reference's bytes. */
static void test_act_quantizers_bitexact(void **state) {
    (void)state;
    kn_cpu_level lv[KN_CPU_LEVEL_COUNT];
    const int nl = test_levels(lv);
    tu_rng rng = {77};
    const q_type acts[2] = {Q_TYPE_Q8_K, Q_TYPE_Q8_0};
    const int64_t K = 256 * 6;
    float *x = malloc(sizeof(float) * K);
    for (int trial = 0; trial < 20; trial++) {
        fill_normal(&rng, x, K, trial % 2 ? 3.0f : 0.01f);
        /* block 0: all zero; block 1: +max and -max tie (the first wins);
         * block 2: values on rounding ties of the Q8_0 scale; block 3: tiny */
        memset(x, 0, 256 * sizeof(float));
        x[256 + 9] = 4.0f;
        x[256 + 40] = -4.0f;
        x[256 + 200] = 4.0f;
        for (int j = 0; j < 32; j++) x[512 + j] = (float)(j - 16) * 0.5f;
        x[512 + 31] = 127.0f;
        for (int j = 768; j < 1024; j++) x[j] *= 1e-20f;
        if (trial % 3 == 0) x[1100] = -50.0f;
        for (int ai = 0; ai < 2; ai++) {
            const q_type at = acts[ai];
            const q_traits *tr = q_get_traits(at);
            const size_t bytes = q_row_size(at, K);
            uint8_t *want = malloc(bytes), *got = malloc(bytes);
            memset(want, 0xAB, bytes);
            tr->from_float(x, want, K);
            for (int li = 0; li < nl; li++) {
                tensor_ops ops;
                tensor_ops_init(&ops, lv[li]);
                assert_non_null(ops.quantize[at]);
                memset(got, 0xCD, bytes);
                ops.quantize[at](x, got, K);
                if (memcmp(got, want, bytes) != 0) {
                    size_t i = 0;
                    while (got[i] == want[i]) i++;
                    fprintf(stderr, "%s set %s trial %d: byte %zu differs (%d vs %d)\n", q_type_name(at),
                            kn_cpu_level_name(lv[li]), trial, i, got[i], want[i]);
                    fail();
                }
            }
            free(want);
            free(got);
        }
    }
    free(x);
}

/* Every column of a many-column matmul equals that column computed alone
 * (n_cols = 1, one thread), bit for bit, for 1, 2 and 3 pool threads. */
static void test_batch_invariance(void **state) {
    (void)state;
    kn_cpu_level lv[KN_CPU_LEVEL_COUNT];
    const int nl = test_levels(lv);
    static const int NCOLS[] = {1, 3, 7, 16, 64, 512};
    kn_pool *pools[3];
    for (int p = 0; p < 3; p++) {
        pools[p] = kn_pool_create(p + 1);
        assert_non_null(pools[p]);
    }
    tu_rng rng = {4242};
    for (int ti = 0; ti < N_HOT; ti++) {
        const q_type t = HOT[ti];
        const q_traits *tr = q_get_traits(t);
        const int64_t K = tr->blck_size == 1 ? 203 : 512, M = 45, NMAX = 512;
        uint8_t *w = make_weights(&rng, t, M, K);
        float *x = make_floats(&rng, K, NMAX);
        for (int li = 0; li < nl; li++) {
            tensor_ops ops;
            tensor_ops_init(&ops, lv[li]);
            uint8_t *act = malloc(tensor_act_bytes(t, K, NMAX));
            tensor_act_quantize(&ops, t, x, K, K, NMAX, act);
            const size_t arow = tensor_act_bytes(t, K, 1);
            float *alone = malloc(sizeof(float) * M * NMAX), *y = malloc(sizeof(float) * M * NMAX);
            for (int64_t c = 0; c < NMAX; c++) tensor_matmul(&ops, NULL, t, w, K, M, act + c * arow, 1, alone + c * M, M);
            /* the set's vec_dot gives the same bits as its matvec/gemm tiles */
            for (int64_t c = 0; c < NMAX; c += 37)
                for (int64_t m = 0; m < M; m++) {
                    float s;
                    ops.vec_dot[t](K, &s, w + m * q_row_size(t, K), act + c * arow);
                    assert_memory_equal(&s, &alone[c * M + m], sizeof s);
                }
            for (int ni = 0; ni < (int)(sizeof NCOLS / sizeof NCOLS[0]); ni++) {
                const int nc = NCOLS[ni];
                for (int p = 0; p < 3; p++) {
                    if (lv[li] == KN_CPU_GENERIC && nc == 512 && p != 1) continue; /* slow and trivially invariant */
                    memset(y, 0xFF, sizeof(float) * M * nc);
                    /* the last nc columns, so that column offsets vary */
                    const int64_t c0 = NMAX - nc;
                    tensor_matmul(&ops, pools[p], t, w, K, M, act + c0 * arow, nc, y, M);
                    if (memcmp(y, alone + c0 * M, sizeof(float) * M * nc) != 0) {
                        for (int64_t i = 0; i < M * nc; i++)
                            if (memcmp(&y[i], &alone[c0 * M + i], sizeof(float)) != 0) {
                                fprintf(stderr, "%s set %s: %d cols, %d threads: col %lld row %lld: %.9g vs %.9g\n",
                                        q_type_name(t), kn_cpu_level_name(lv[li]), nc, p + 1, (long long)(i / M),
                                        (long long)(i % M), y[i], alone[c0 * M + i]);
                                break;
                            }
                        fail();
                    }
                }
            }
            free(act);
            free(alone);
            free(y);
        }
        free(w);
        free(x);
    }
    for (int p = 0; p < 3; p++) kn_pool_destroy(pools[p]);
}

/* Types without a SIMD kernel still compute (through the reference). */
static void test_fallback_types(void **state) {
    (void)state;
    kn_cpu_level lv[KN_CPU_LEVEL_COUNT];
    const int nl = test_levels(lv);
    tu_rng rng = {99};
    const q_type others[] = {Q_TYPE_Q4_1, Q_TYPE_Q5_0, Q_TYPE_Q5_1, Q_TYPE_Q2_K, Q_TYPE_Q3_K};
    for (size_t ti = 0; ti < sizeof others / sizeof others[0]; ti++) {
        const q_type t = others[ti];
        const q_traits *tr = q_get_traits(t);
        if (!tr || !tr->vec_dot || !tr->from_float) continue;
        const int64_t K = 512, M = 19, NC = 5;
        uint8_t *w = make_weights(&rng, t, M, K);
        float *x = make_floats(&rng, K, NC);
        for (int li = 0; li < nl; li++) {
            tensor_ops ops;
            tensor_ops_init(&ops, lv[li]);
            uint8_t *act = malloc(tensor_act_bytes(t, K, NC));
            tensor_act_quantize(&ops, t, x, K, K, NC, act);
            const size_t arow = tensor_act_bytes(t, K, 1);
            float y[19 * 5];
            tensor_matmul(&ops, NULL, t, w, K, M, act, NC, y, M);
            for (int64_t c = 0; c < NC; c++)
                for (int64_t m = 0; m < M; m++) {
                    float want;
                    tr->vec_dot(K, &want, w + m * q_row_size(t, K), act + c * arow);
                    assert_true(y[c * M + m] == want);
                }
            free(act);
        }
        free(w);
        free(x);
    }
}

/* MXFP4 rows of raw random bytes (every code, -0 included) with block
 * scales at the E8M0 edges (subnormal 2^-128 and 2^-127, 2^127, products
 * that overflow to inf, and inf - inf = NaN across blocks): every set's
 * vec_dot and gemm give the reference's bits. from_float never writes
 * these scales, so test_kernels_vs_reference does not reach them. */
static void test_mxfp4_scale_edges(void **state) {
    (void)state;
    kn_cpu_level lv[KN_CPU_LEVEL_COUNT];
    const int nl = test_levels(lv);
    static const uint8_t es[] = {0, 1, 2, 3, 100, 127, 128, 129, 200, 253, 254, 255};
    const int64_t K = 32 * 7, M = 21, NC = 6;
    const size_t wrow = q_row_size(Q_TYPE_MXFP4, K);
    tu_rng rng = {0xe8e0};
    for (int trial = 0; trial < 40; trial++) {
        uint8_t *w = malloc(wrow * M);
        for (size_t i = 0; i < wrow * M; i++) w[i] = (uint8_t)tu_rng_u64(&rng);
        for (int64_t m = 0; m < M; m++)
            for (int64_t b = 0; b < K / 32; b++) {
                block_mxfp4 *blk = (block_mxfp4 *)(w + m * wrow) + b;
                /* trial 0..19: small and subnormal scales only; later: anything, inf and NaN included */
                const size_t n_es = trial < 20 ? 4 : sizeof es;
                blk->e = es[tu_rng_u64(&rng) % n_es];
            }
        float *x = make_floats(&rng, K, NC);
        tensor_ops ref;
        tensor_ops_init(&ref, KN_CPU_GENERIC);
        uint8_t *act = malloc(tensor_act_bytes(Q_TYPE_MXFP4, K, NC));
        tensor_act_quantize(&ref, Q_TYPE_MXFP4, x, K, K, NC, act);
        const size_t arow = tensor_act_bytes(Q_TYPE_MXFP4, K, 1);
        float want[21 * 6], got[21 * 6];
        for (int64_t c = 0; c < NC; c++)
            for (int64_t m = 0; m < M; m++)
                q_get_traits(Q_TYPE_MXFP4)->vec_dot(K, &want[c * M + m], w + m * wrow, act + c * arow);
        for (int li = 0; li < nl; li++) {
            tensor_ops ops;
            tensor_ops_init(&ops, lv[li]);
            for (int64_t c = 0; c < NC; c++)
                for (int64_t m = 0; m < M; m++) {
                    float s = 0.5f;
                    ops.vec_dot[Q_TYPE_MXFP4](K, &s, w + m * wrow, act + c * arow);
                    if (memcmp(&s, &want[c * M + m], sizeof s) != 0)
                        fail_msg("MXFP4 set %s trial %d vec_dot row %lld col %lld: %.9g, reference %.9g",
                                 kn_cpu_level_name(lv[li]), trial, (long long)m, (long long)c, s,
                                 want[c * M + m]);
                }
            for (int64_t i = 0; i < M * NC; i++) got[i] = 0.5f;
            tensor_matmul_rows(&ops, Q_TYPE_MXFP4, w, K, 0, M, act, NC, got, M);
            for (int64_t i = 0; i < M * NC; i++)
                if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
                    fail_msg("MXFP4 set %s trial %d matmul row %lld col %lld: %.9g, reference %.9g",
                             kn_cpu_level_name(lv[li]), trial, (long long)(i % M), (long long)(i / M), got[i],
                             want[i]);
        }
        free(w);
        free(x);
        free(act);
    }
}

static void test_bandwidth_probe(void **state) {
    (void)state;
    kn_pool *p = kn_pool_create(2);
    assert_non_null(p);
    const double bw = tensor_measure_bandwidth(p, 8u << 20);
    assert_true(bw > 1e8); /* any machine reads more than 100 MB/s */
    kn_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_vs_reference), cmocka_unit_test(test_act_quantizers_bitexact),
        cmocka_unit_test(test_batch_invariance),     cmocka_unit_test(test_fallback_types),
        cmocka_unit_test(test_mxfp4_scale_edges),    cmocka_unit_test(test_bandwidth_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
