/* test_kvquant.c — the KV cache's Q8P row format (tensor_kv8p_*).
 *
 *  - round trip against a double-precision reference on seeded Gaussian
 *    rows, rows with outliers, tiny and large rows: the stored scale is
 *    amax / 180 (F32), every value is within d/2 of its input, and the
 *    relative RMS error is below Q8_0's by the expected 127/180 factor;
 *  - the codes are exactly the reference levels round(x / d) (ties aside);
 *  - the F16 decode equals q_f32_to_f16 of the float decode;
 *  - edge rows: zeros, a single spike, exact levels reproduced exactly;
 *  - the bytes are pinned by a hash, which this test checks under every
 *    kernel set it is run with (KILN_CPU=generic/avx2/avx512). */
#include "testutil.h"
#include "kiln/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define ROW 128
#define NROWS 64

/* row r of a deterministic test set: Gaussian rows at several magnitudes,
 * some with an outlier channel */
static void make_row(tu_rng *g, int r, float *x) {
    static const float mags[] = {1.0f, 0.01f, 37.0f, 3e-3f, 900.0f};
    const float m = mags[r % 5];
    for (int i = 0; i < ROW; i++) x[i] = m * tu_rng_normal(g);
    if (r % 3 == 0) x[(r * 7) % ROW] = m * 12.0f;
}

static void test_round_trip_bounds(void **state) {
    (void)state;
    tu_rng g = {.s = 4242};
    const size_t rb = tensor_kv8p_row_size(ROW);
    assert_int_equal(rb, ROW / 32 * 38);
    assert_int_equal(tensor_kv8p_row_size(48), 0);
    uint8_t *buf = malloc(rb), *q8 = malloc(q_row_size(Q_TYPE_Q8_0, ROW));
    float x[ROW], y[ROW], y8[ROW];
    q_f16_t h[ROW];
    double e2 = 0, e8 = 0, s2 = 0;
    const q_traits *t8 = q_get_traits(Q_TYPE_Q8_0);
    for (int r = 0; r < NROWS; r++) {
        make_row(&g, r, x);
        tensor_kv8p_quantize(x, buf, ROW);
        tensor_kv8p_dequantize(buf, y, ROW);
        tensor_kv8p_dequantize_f16(buf, h, ROW);
        const block_kv8p *b = (const block_kv8p *)buf;
        for (int k = 0; k < ROW / 32; k++) {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[k * 32 + i]));
            const double d = tensor_kv8p_scale(&b[k]);
            /* the scale: amax / 180 in float */
            assert_true(d == (double)(amax / 180.0f));
            for (int i = 0; i < 32; i++) {
                const int j = k * 32 + i;
                /* the reference level, in double */
                double ql = nearbyint((double)x[j] / d);
                if (ql > 180) ql = 180;
                if (ql < -180) ql = -180;
                const double err = fabs((double)y[j] - (double)x[j]);
                const double lim = fabs((double)x[j] / d) > 180.0 ? fabs((double)x[j]) - 180.0 * d : 0.5 * d;
                if (err > lim * (1 + 1e-6) + 180.0 * d * 0x1p-24 + 1e-30) { /* + the float product's rounding */
                    fprintf(stderr, "row %d value %d: x %g y %g d %g\n", r, j, x[j], y[j], d);
                    fail();
                }
                /* the level itself matches the reference unless x/d sits on a tie */
                const double frac = fabs(fabs((double)x[j] / d) - floor(fabs((double)x[j] / d)) - 0.5);
                if (frac > 1e-4) assert_true(y[j] == (float)ql * (float)d);
                assert_int_equal(h[j], q_f32_to_f16(y[j]));
                e2 += err * err;
                s2 += (double)x[j] * x[j];
            }
        }
        t8->from_float(x, q8, ROW);
        t8->to_float(q8, y8, ROW);
        for (int i = 0; i < ROW; i++) e8 += ((double)y8[i] - x[i]) * ((double)y8[i] - x[i]);
    }
    const double rel = sqrt(e2 / s2), rel8 = sqrt(e8 / s2);
    fprintf(stderr, "relative RMS error: Q8P %.5f, Q8_0 %.5f (ratio %.3f)\n", rel, rel8, rel / rel8);
    /* 361 levels against Q8_0's 255: the error must shrink by about 127/180 = 0.706 */
    assert_true(rel / rel8 < 0.75);
    assert_true(rel / rel8 > 0.65);
    free(buf);
    free(q8);
}

static void test_edge_rows(void **state) {
    (void)state;
    block_kv8p b[2];
    float x[64], y[64];
    memset(x, 0, sizeof x);
    tensor_kv8p_quantize(x, b, 64);
    tensor_kv8p_dequantize(b, y, 64);
    for (int i = 0; i < 64; i++) assert_true(y[i] == 0.0f);
    /* a spike: the spike is exact (180 * d), the rest zeros */
    x[5] = -3.0f, x[40] = 1.5f;
    tensor_kv8p_quantize(x, b, 64);
    tensor_kv8p_dequantize(b, y, 64);
    for (int i = 0; i < 64; i++) {
        if (i == 5 || i == 40) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-22f);
        else assert_true(y[i] == 0.0f);
    }
    /* exact levels: x = q * d with d an f16 value and |q| <= 180 come back exactly */
    const float d = 0.0625f;
    for (int i = 0; i < 64; i++) x[i] = (float)((i * 37) % 361 - 180) * d;
    x[0] = 180 * d, x[32] = -180 * d; /* pin each block's amax */
    tensor_kv8p_quantize(x, b, 64);
    tensor_kv8p_dequantize(b, y, 64);
    for (int i = 0; i < 64; i++) assert_true(y[i] == x[i]);
    /* every code stays below 361^2 */
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 16; i++) assert_true((b[k].lo[i] | (uint32_t)((b[k].hi >> i) & 1) << 16) < 361u * 361u);
}

/* The bytes of a fixed row set, pinned: the format is the same whatever
 * kernel set the process runs with (ctest reruns this under each). */
static void test_bytes_pinned(void **state) {
    (void)state;
    kn_cpu_level lvl;
    kn_err err = {0};
    assert_int_equal(kn_cpu_select(&lvl, &err), KN_OK);
    tu_rng g = {.s = 99};
    const size_t rb = tensor_kv8p_row_size(ROW);
    uint8_t *all = malloc(rb * NROWS);
    float x[ROW];
    for (int r = 0; r < NROWS; r++) {
        /* exact binary fractions from the integer RNG (no libm) */
        for (int i = 0; i < ROW; i++) x[i] = (float)((int32_t)(tu_rng_u64(&g) >> 44) - (1 << 19)) * 0x1p-16f;
        tensor_kv8p_quantize(x, all + (size_t)r * rb, ROW);
    }
    const uint64_t h = XXH64(all, rb * NROWS, 0);
    fprintf(stderr, "kernel set %s: Q8P bytes hash %016llx\n", kn_cpu_level_name(lvl), (unsigned long long)h);
    assert_true(h == UINT64_C(0x1aaec9b2b468cbd6));
    free(all);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_bounds),
        cmocka_unit_test(test_edge_rows),
        cmocka_unit_test(test_bytes_pinned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
