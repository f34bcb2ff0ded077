/* test_vec_dot_ref.c — the scalar reference dot products and the fp16/bf16
 * helpers of tensor.h.
 *
 *  - every weight type's reference vec_dot equals the dot product of the
 *    dequantized weight row and the dequantized activation row (quantized to
 *    the type's vec_dot_type), within float rounding, on random data;
 *  - the block types reduce in the documented fixed order: the result over n
 *    is the float fold, block by block, of the single-block results;
 *  - fp16/bf16 conversions: exhaustive round trips, known bit patterns for
 *    subnormals, inf, nan and rounding ties, and sampled agreement with an
 *    independent round-to-nearest-even reference (and with F16C hardware
 *    when the CPU has it). */
#include "testutil.h"
#include "kiln/tensor.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

static const q_type weight_types[] = {Q_TYPE_F32,  Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_Q8_0, Q_TYPE_Q4_0,
                                      Q_TYPE_Q4_1, Q_TYPE_Q5_0, Q_TYPE_Q5_1, Q_TYPE_Q2_K, Q_TYPE_Q3_K,
                                      Q_TYPE_Q4_K, Q_TYPE_Q5_K, Q_TYPE_Q6_K, Q_TYPE_MXFP4};
#define N_WT (sizeof weight_types / sizeof weight_types[0])

#define MAXN 4096

typedef struct rows {
    float w[MAXN], a[MAXN], wd[MAXN], ad[MAXN];
    uint8_t wq[MAXN * 4], aq[MAXN * 4];
} rows;

/* Random rows: Gaussian, with per-block magnitudes varying over 3 decades so
 * that block scales differ, and an offset on some blocks (exercises mins). */
static void fill(tu_rng *rng, float *x, int64_t n, float offset) {
    for (int64_t b = 0; b < n; b += 32) {
        const float mag = powf(10.0f, 3.0f * tu_rng_uniform(rng) - 1.5f);
        const float off = (b / 32) % 3 == 0 ? offset * mag : 0.0f;
        for (int64_t i = b; i < b + 32 && i < n; i++) x[i] = off + mag * tu_rng_normal(rng);
    }
}

/* Bound on what the activation's fp16 s = fp16(d * sum(q)) adds beyond the
 * dequantized rows (Q8_1 only): sum over blocks of |m| * |s - d*sum(q)|. */
static double q8_1_s_slack(q_type wt, const void *w, const void *a, int64_t n) {
    if (wt != Q_TYPE_Q4_1 && wt != Q_TYPE_Q5_1) return 0.0;
    const block_q8_1 *y = a;
    double slack = 0.0;
    for (int64_t b = 0; b < n / 32; b++) {
        const float m = wt == Q_TYPE_Q4_1 ? q_f16_to_f32(((const block_q4_1 *)w)[b].m)
                                          : q_f16_to_f32(((const block_q5_1 *)w)[b].m);
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += y[b].qs[i];
        const double exact = (double)q_f16_to_f32(y[b].d) * sum;
        slack += fabs((double)m) * fabs((double)q_f16_to_f32(y[b].s) - exact);
    }
    return slack;
}

static void check_dot(q_type wt, int64_t n, uint64_t seed, rows *r) {
    const q_traits *tw = q_get_traits(wt), *ta = q_get_traits(tw->vec_dot_type);
    assert_non_null(tw);
    assert_non_null(ta);
    assert_true(q_row_size(wt, n) <= sizeof r->wq && q_row_size(tw->vec_dot_type, n) <= sizeof r->aq);
    tu_rng rng = {.s = seed};
    fill(&rng, r->w, n, 2.0f);
    fill(&rng, r->a, n, 0.5f);
    tw->from_float(r->w, r->wq, n);
    ta->from_float(r->a, r->aq, n);
    tw->to_float(r->wq, r->wd, n);
    ta->to_float(r->aq, r->ad, n);
    double ref = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)r->wd[i] * (double)r->ad[i];
        mag += fabs((double)r->wd[i] * (double)r->ad[i]);
    }
    float s = NAN;
    tw->vec_dot(n, &s, r->wq, r->aq);
    /* float rounding: a few roundings per block term plus one per block
     * accumulation, each relative to at most the sum of |terms| */
    const double tol = 2.0 * FLT_EPSILON * ((double)n / 32.0 + 4.0) * mag + q8_1_s_slack(wt, r->wq, r->aq, n);
    const double diff = fabs((double)s - ref);
    if (!(diff <= tol))
        fail_msg("%s n=%lld seed=%llu: vec_dot %.9g, dequantized dot %.9g (diff %.3g > tol %.3g)", tw->name,
                 (long long)n, (unsigned long long)seed, (double)s, ref, diff, tol);

    /* the same call twice gives the same bits */
    float s2 = NAN;
    tw->vec_dot(n, &s2, r->wq, r->aq);
    assert_memory_equal(&s, &s2, sizeof s);
}

static void test_vec_dot_matches_dequantized_dot(void **state) {
    (void)state;
    rows *r = malloc(sizeof *r);
    assert_non_null(r);
    static const int64_t sizes[] = {32, 96, 256, 512, 768, 4096};
    for (size_t k = 0; k < N_WT; k++) {
        const q_traits *tw = q_get_traits(weight_types[k]);
        const int64_t blk = tw->blck_size > q_get_traits(tw->vec_dot_type)->blck_size
                                ? tw->blck_size
                                : q_get_traits(tw->vec_dot_type)->blck_size;
        int checked = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            if (sizes[si] % blk) continue;
            for (uint64_t seed = 1; seed <= 6; seed++) {
                check_dot(weight_types[k], sizes[si], seed * 7919 + k, r);
                checked++;
            }
        }
        assert_true(checked >= 12);
    }
    free(r);
}

/* Zero rows give exactly zero; a row dotted with an all-zero activation too. */
static void test_vec_dot_zeros(void **state) {
    (void)state;
    rows *r = calloc(1, sizeof *r);
    assert_non_null(r);
    tu_rng rng = {.s = 3};
    for (size_t k = 0; k < N_WT; k++) {
        const q_traits *tw = q_get_traits(weight_types[k]), *ta = q_get_traits(tw->vec_dot_type);
        const int64_t n = 512;
        fill(&rng, r->w, n, 1.0f);
        memset(r->a, 0, sizeof r->a);
        tw->from_float(r->w, r->wq, n);
        ta->from_float(r->a, r->aq, n);
        float s = NAN;
        tw->vec_dot(n, &s, r->wq, r->aq);
        if (s != 0.0f) fail_msg("%s: dot with zero activations is %g", tw->name, (double)s);
        memset(r->w, 0, sizeof r->w);
        fill(&rng, r->a, n, 1.0f);
        tw->from_float(r->w, r->wq, n);
        ta->from_float(r->a, r->aq, n);
        tw->vec_dot(n, &s, r->wq, r->aq);
        if (s != 0.0f) fail_msg("%s: dot of a zero row is %g", tw->name, (double)s);
    }
    free(r);
}

/* quants_ref.h: block types add one float term per block, in block order,
 * starting from 0. The result over n blocks is then the float fold of the
 * single-block results, bit for bit. */
static void test_vec_dot_block_order(void **state) {
    (void)state;
    rows *r = malloc(sizeof *r);
    assert_non_null(r);
    for (size_t k = 0; k < N_WT; k++) {
        const q_traits *tw = q_get_traits(weight_types[k]), *ta = q_get_traits(tw->vec_dot_type);
        if (!tw->is_quantized) continue; /* F32/F16/BF16 accumulate in double */
        const int64_t n = 4096, bs = tw->blck_size;
        tu_rng rng = {.s = 11 + k};
        fill(&rng, r->w, n, 1.5f);
        fill(&rng, r->a, n, -0.5f);
        tw->from_float(r->w, r->wq, n);
        ta->from_float(r->a, r->aq, n);
        float s;
        tw->vec_dot(n, &s, r->wq, r->aq);
        float acc = 0.0f;
        const size_t wb = q_row_size(weight_types[k], bs), ab = q_row_size(tw->vec_dot_type, bs);
        for (int64_t b = 0; b < n / bs; b++) {
            float sb;
            tw->vec_dot(bs, &sb, r->wq + (size_t)b * wb, r->aq + (size_t)b * ab);
            acc += sb;
        }
        if (memcmp(&acc, &s, sizeof s) != 0)
            fail_msg("%s: vec_dot %.9g is not the block-order fold %.9g", tw->name, (double)s, (double)acc);
    }
    free(r);
}

/* ---------------------------- fp16 / bf16 ---------------------------- */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static bool f16_is_nan(q_f16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff); }

static void test_f16_known_patterns(void **state) {
    (void)state;
    static const struct {
        q_f16_t h;
        uint32_t f;
    } exact[] = {
        {0x0000, 0x00000000}, {0x8000, 0x80000000}, /* +-0 */
        {0x0001, 0x33800000}, {0x8001, 0xb3800000}, /* smallest subnormal 2^-24 */
        {0x0002, 0x34000000}, {0x0003, 0x34400000}, {0x0200, 0x38000000},
        {0x03ff, 0x387fc000}, /* largest subnormal */
        {0x0400, 0x38800000}, /* smallest normal 2^-14 */
        {0x3c00, 0x3f800000}, {0xc000, 0xc0000000}, {0x3555, 0x3eaaa000},
        {0x7bff, 0x477fe000}, /* 65504 */
        {0x7c00, 0x7f800000}, {0xfc00, 0xff800000}, /* inf */
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        assert_int_equal(f2u(q_f16_to_f32(exact[i].h)), exact[i].f);
        assert_int_equal(q_f32_to_f16(u2f(exact[i].f)), exact[i].h);
    }
    /* nan in, nan out (quiet), sign kept */
    assert_true(isnan(q_f16_to_f32(0x7e00)));
    assert_true(isnan(q_f16_to_f32(0x7c01)));
    assert_true(isnan(q_f16_to_f32(0xfe00)) && signbit(q_f16_to_f32(0xfe00)));
    assert_true(f16_is_nan(q_f32_to_f16(NAN)));
    assert_true(f16_is_nan(q_f32_to_f16(u2f(0x7f800001)))); /* signalling: payload only in low bits */
    assert_true(f16_is_nan(q_f32_to_f16(u2f(0xffc00000))) && (q_f32_to_f16(u2f(0xffc00000)) & 0x8000));

    static const struct {
        uint32_t f;
        q_f16_t h;
        const char *why;
    } rounding[] = {
        {0x3f801000, 0x3c00, "1 + 2^-11: tie, to even (down)"},
        {0x3f803000, 0x3c02, "1 + 3*2^-11: tie, to even (up)"},
        {0x3f801001, 0x3c01, "just above a tie"},
        {0x3f800fff, 0x3c00, "just below a tie"},
        {0x477fefff, 0x7bff, "just below 65520"},
        {0x477ff000, 0x7c00, "65520: tie between 65504 and 2^16, to even = inf"},
        {0x501502f9, 0x7c00, "1e10 overflows"},
        {0xc77ff000, 0xfc00, "-65520 -> -inf"},
        {0x33000000, 0x0000, "2^-25: tie between 0 and 2^-24, to even = 0"},
        {0x33000001, 0x0001, "just above 2^-25"},
        {0x33c00000, 0x0002, "1.5 * 2^-24: tie, to even = 2"},
        {0x34200000, 0x0002, "2.5 * 2^-24: tie, to even = 2"},
        {0x387fe000, 0x0400, "between the largest subnormal and 2^-14: tie, to even"},
        {0x387fdfff, 0x03ff, "just below that tie"},
        {0x32ffffff, 0x0000, "below 2^-25 -> 0"},
        {0x00000001, 0x0000, "f32 subnormal -> 0"},
        {0x80000001, 0x8000, "negative f32 subnormal -> -0"},
        {0xb2800000, 0x8000, "-2^-26 -> -0"},
    };
    for (size_t i = 0; i < sizeof rounding / sizeof rounding[0]; i++) {
        q_f16_t h = q_f32_to_f16(u2f(rounding[i].f));
        if (h != rounding[i].h)
            fail_msg("f32 %08x -> f16 %04x, want %04x (%s)", rounding[i].f, h, rounding[i].h, rounding[i].why);
    }
}

static void test_f16_exhaustive_roundtrip(void **state) {
    (void)state;
    float prev = -INFINITY;
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = q_f16_to_f32((q_f16_t)h);
        if (f16_is_nan((q_f16_t)h)) {
            assert_true(isnan(f));
            assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
            assert_true(f16_is_nan(q_f32_to_f16(f)));
            continue;
        }
        if (q_f32_to_f16(f) != h) fail_msg("f16 %04x -> %g -> %04x", h, (double)f, q_f32_to_f16(f));
        /* positive values increase with their bits */
        if (h <= 0x7c00) {
            if (h > 0) assert_true(f > prev);
            prev = f;
        }
    }
}

/* Independent RNE reference: the nearest non-negative finite f16 by binary
 * search over the (monotone) bit patterns, ties to the even pattern,
 * overflow past 65520 to inf. */
static q_f16_t f16_reference(float x) {
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double ax = fabs((double)x);
    if (ax >= 65520.0) return sign | 0x7c00;
    uint32_t lo = 0, hi = 0x7bff; /* largest pattern with value <= ax */
    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) / 2;
        if ((double)q_f16_to_f32((q_f16_t)mid) <= ax)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == 0x7bff) return sign | 0x7bff;
    const double below = q_f16_to_f32((q_f16_t)lo), above = q_f16_to_f32((q_f16_t)(lo + 1));
    const double dl = ax - below, du = above - ax;
    uint32_t pick = dl < du ? lo : du < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return (q_f16_t)(sign | pick);
}

static q_bf16_t bf16_reference(float x) {
    const uint32_t lo = f2u(x) >> 16, hi = lo + 1; /* truncation and the next pattern away from 0 */
    const double below = q_bf16_to_f32((q_bf16_t)lo);
    double above = u2f(hi << 16);
    if (isinf(above)) above = copysign(ldexp(1.0, 128), (double)x); /* where RNE overflows */
    const double dl = fabs((double)x - below), du = fabs(above - (double)x);
    return (q_bf16_t)(dl < du ? lo : du < dl ? hi : ((lo & 1) ? hi : lo));
}

#ifdef HAVE_X86
__attribute__((target("f16c"))) static q_f16_t f16_hw(float x) {
    return (q_f16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0);
}
#endif

static void test_f32_to_f16_sampled(void **state) {
    (void)state;
#ifdef HAVE_X86
    kn_cpu_features feat;
    kn_cpu_features_detect(&feat);
    const bool hw = feat.f16c;
#else
    const bool hw = false;
#endif
    uint64_t n = 0;
    /* every f32 in steps of 4093 bits, plus every pattern near the f16 range edges */
    for (uint64_t u = 0; u <= 0xffffffffu; u += 4093) {
        const float x = u2f((uint32_t)u);
        if (isnan(x)) continue;
        const q_f16_t got = q_f32_to_f16(x);
        const q_f16_t want = f16_reference(x);
        if (got != want) fail_msg("f32 %08x (%g): f16 %04x, reference %04x", (uint32_t)u, (double)x, got, want);
#ifdef HAVE_X86
        if (hw && got != f16_hw(x)) fail_msg("f32 %08x: f16 %04x, F16C %04x", (uint32_t)u, got, f16_hw(x));
#endif
        n++;
    }
    static const uint32_t edges[] = {0x33000000, 0x38800000, 0x387fe000, 0x3f800000, 0x477ff000};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++) {
        for (uint32_t d = 0; d < 4096; d++) {
            for (int s = 0; s < 2; s++) {
                const uint32_t u = (edges[e] - 2048 + d) | (s ? 0x80000000u : 0);
                const float x = u2f(u);
                if (q_f32_to_f16(x) != f16_reference(x))
                    fail_msg("f32 %08x: f16 %04x, reference %04x", u, q_f32_to_f16(x), f16_reference(x));
                n++;
            }
        }
    }
    print_message("  %llu conversions checked%s\n", (unsigned long long)n, hw ? " (also against F16C)" : "");
}

static void test_bf16(void **state) {
    (void)state;
    /* bf16 -> f32 is exact: the top half of the bits */
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = q_bf16_to_f32((q_bf16_t)h);
        assert_int_equal(f2u(f), h << 16);
        if (!isnan(f)) assert_int_equal(q_f32_to_bf16(f), h);
    }
    static const struct {
        uint32_t f;
        q_bf16_t h;
        const char *why;
    } known[] = {
        {0x3f800000, 0x3f80, "1"},
        {0x3f808000, 0x3f80, "tie, to even (down)"},
        {0x3f818000, 0x3f82, "tie, to even (up)"},
        {0x3f808001, 0x3f81, "just above a tie"},
        {0x3f807fff, 0x3f80, "just below a tie"},
        {0x7f7fffff, 0x7f80, "FLT_MAX rounds to inf"},
        {0x7f7f7fff, 0x7f7f, "below the overflow tie"},
        {0x7f800000, 0x7f80, "inf"},
        {0xff800000, 0xff80, "-inf"},
        {0x00000001, 0x0000, "smallest subnormal"},
        {0x00008000, 0x0000, "subnormal tie, to even (down)"},
        {0x00018000, 0x0002, "subnormal tie, to even (up)"},
        {0x80000000, 0x8000, "-0"},
        {0x7fc00000, 0x7fc0, "quiet nan"},
        {0xffc00000, 0xffc0, "negative quiet nan"},
        {0x7f800001, 0x7fc0, "signalling nan stays nan (quieted)"},
        {0x7fffffff, 0x7fff, "nan payload truncated, not rounded into inf"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        q_bf16_t h = q_f32_to_bf16(u2f(known[i].f));
        if (h != known[i].h) fail_msg("f32 %08x -> bf16 %04x, want %04x (%s)", known[i].f, h, known[i].h, known[i].why);
    }
    for (uint64_t u = 0; u <= 0xffffffffu; u += 4093) {
        const float x = u2f((uint32_t)u);
        if (isnan(x)) {
            assert_true(isnan(q_bf16_to_f32(q_f32_to_bf16(x))));
            continue;
        }
        if (q_f32_to_bf16(x) != bf16_reference(x))
            fail_msg("f32 %08x: bf16 %04x, reference %04x", (uint32_t)u, q_f32_to_bf16(x), bf16_reference(x));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vec_dot_matches_dequantized_dot),
        cmocka_unit_test(test_vec_dot_zeros),
        cmocka_unit_test(test_vec_dot_block_order),
        cmocka_unit_test(test_f16_known_patterns),
        cmocka_unit_test(test_f16_exhaustive_roundtrip),
        cmocka_unit_test(test_f32_to_f16_sampled),
        cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
