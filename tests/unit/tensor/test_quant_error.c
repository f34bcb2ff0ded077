/* test_quant_error.c — the reference quantizers (from_float).
 *
 *  - quantize->dequantize error on seeded Gaussian rows stays within a
 *    per-type bound (measured, plus modest slack), and the types order as
 *    their bit widths say;
 *  - byte compatibility with llama.cpp: quantizing the F16 rows of
 *    quant-zoo.gguf (the first 16 rows of tiny-llama's token_embd) gives
 *    exactly the bytes llama.cpp wrote for the same rows in the zoo and in
 *    tiny-llama-{Q6_K,Q8_0}.gguf;
 *  - re-quantizing the zoo's dequantized rows reproduces their bytes for the
 *    types whose ggml reference quantizer is idempotent (Q3_K, Q5_K and Q6_K
 *    re-run a scale search that can land elsewhere, so they are not);
 *    quant-zoo-iq's MXFP4 rows likewise;
 *  - edge rows (zeros, constants, spikes, tiny values), the exact Q8_K /
 *    Q8_1 activation rules and MXFP4's rules (ties, scale edge cases). */
#include "testutil.h"
#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW 4096
#define NROWS 32

typedef struct bound {
    q_type t;
    double max_rel_rms; /* per row and overall: sqrt(sum err^2 / sum x^2) */
} bound;

/* Measured on these rows (seed 1007): F16 .00021, BF16 .0017, Q8_0 .0055,
 * Q8_1 .0055, Q8_K .0073, Q6_K .0183, Q5_K .0373, Q5_1 .0391, Q5_0 .0441,
 * Q4_K .0734, Q4_1 .0814, Q4_0 .0883, MXFP4 .1177, Q3_K .1551, Q2_K .3066
 * (worst row). */
static const bound bounds[] = {
    {Q_TYPE_F16, 0.00025}, {Q_TYPE_BF16, 0.0019}, {Q_TYPE_Q8_0, 0.0062}, {Q_TYPE_Q8_1, 0.0062},
    {Q_TYPE_Q8_K, 0.0082}, {Q_TYPE_Q6_K, 0.020},  {Q_TYPE_Q5_K, 0.041},  {Q_TYPE_Q5_1, 0.043},
    {Q_TYPE_Q5_0, 0.049},  {Q_TYPE_Q4_K, 0.080},  {Q_TYPE_Q4_1, 0.089},  {Q_TYPE_Q4_0, 0.098},
    {Q_TYPE_Q3_K, 0.170},  {Q_TYPE_Q2_K, 0.335},  {Q_TYPE_MXFP4, 0.130},
};
#define N_BOUNDS (sizeof bounds / sizeof bounds[0])

static double gaussian_error(q_type t, const float *x, float *y, void *q, double *worst_row) {
    const q_traits *tr = q_get_traits(t);
    assert_non_null(tr);
    double e = 0, s = 0;
    *worst_row = 0;
    for (int r = 0; r < NROWS; r++) {
        const float *xr = x + (size_t)r * ROW;
        memset(q, 0xa5, q_row_size(t, ROW)); /* no byte may be left unwritten */
        tr->from_float(xr, q, ROW);
        tr->to_float(q, y, ROW);
        double er = 0, sr = 0;
        for (int i = 0; i < ROW; i++) {
            double d = (double)y[i] - (double)xr[i];
            er += d * d;
            sr += (double)xr[i] * xr[i];
        }
        if (sqrt(er / sr) > *worst_row) *worst_row = sqrt(er / sr);
        e += er;
        s += sr;
    }
    return sqrt(e / s);
}

static void test_gaussian_error_bounds(void **state) {
    (void)state;
    float *x = malloc(sizeof(float) * ROW * NROWS), *y = malloc(sizeof(float) * ROW);
    void *q = malloc(q_row_size(Q_TYPE_F32, ROW));
    assert_true(x && y && q);
    tu_rng rng = {.s = 1007};
    for (int i = 0; i < ROW * NROWS; i++) x[i] = tu_rng_normal(&rng);

    double err[Q_TYPE_COUNT] = {0};
    for (size_t k = 0; k < N_BOUNDS; k++) {
        double worst;
        err[bounds[k].t] = gaussian_error(bounds[k].t, x, y, q, &worst);
        print_message("  %-5s rel rms %.5f (worst row %.5f, bound %.5f)\n", q_type_name(bounds[k].t),
                      err[bounds[k].t], worst, bounds[k].max_rel_rms);
        if (!(worst <= bounds[k].max_rel_rms))
            fail_msg("%s: relative RMS error %.5f over bound %.5f", q_type_name(bounds[k].t), worst,
                     bounds[k].max_rel_rms);
        assert_true(err[bounds[k].t] > 0.0); /* lossy types really are lossy */
    }
    double worst;
    assert_true(gaussian_error(Q_TYPE_F32, x, y, q, &worst) == 0.0); /* F32 is exact */

    /* more bits, less error */
    static const q_type order[] = {Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_Q8_0, Q_TYPE_Q6_K,
                                   Q_TYPE_Q5_K, Q_TYPE_Q4_K, Q_TYPE_Q3_K, Q_TYPE_Q2_K};
    for (size_t i = 0; i + 1 < sizeof order / sizeof order[0]; i++)
        if (!(err[order[i]] < err[order[i + 1]]))
            fail_msg("%s (%.5f) should beat %s (%.5f)", q_type_name(order[i]), err[order[i]],
                     q_type_name(order[i + 1]), err[order[i + 1]]);
    assert_true(err[Q_TYPE_Q5_0] < err[Q_TYPE_Q4_0]);
    assert_true(err[Q_TYPE_Q5_1] < err[Q_TYPE_Q4_1]);
    assert_true(err[Q_TYPE_Q4_1] < err[Q_TYPE_Q4_0]); /* a min helps */
    assert_true(err[Q_TYPE_Q5_1] < err[Q_TYPE_Q5_0]);
    assert_true(err[Q_TYPE_Q8_0] < err[Q_TYPE_Q8_K]); /* 32-blocks beat 256-blocks */
    /* MXFP4's power-of-two scale and 8 magnitudes cost more than Q4_0's fp16 scale */
    assert_true(err[Q_TYPE_Q4_0] < err[Q_TYPE_MXFP4]);
    assert_true(err[Q_TYPE_MXFP4] < err[Q_TYPE_Q3_K]);
    free(x);
    free(y);
    free(q);
}

/* ---------------- byte compatibility with llama.cpp ---------------- */

/* The tensor part of a zoo "source" ("model:tensor"). */
static const char *source_tensor(json_t *ref, const char *type) {
    const char *src = json_string_value(json_object_get(json_object_get(ref, type), "source"));
    assert_non_null(src);
    const char *colon = strchr(src, ':');
    assert_non_null(colon);
    return colon + 1;
}

/* Quantizes the zoo's F16 rows (nrows x ne0) to type t and compares with
 * `want` (llama.cpp's bytes for the same rows), row by row. */
static void expect_same_bytes(const gguf_tensor_info *f16, q_type t, const uint8_t *want, const char *what) {
    const int64_t ne0 = (int64_t)f16->ne[0], nrows = (int64_t)f16->ne[1];
    const size_t rs = q_row_size(t, ne0), rs16 = q_row_size(Q_TYPE_F16, ne0);
    float *x = malloc(sizeof(float) * (size_t)ne0);
    uint8_t *q = malloc(rs);
    assert_true(x && q);
    for (int64_t r = 0; r < nrows; r++) {
        q_get_traits(Q_TYPE_F16)->to_float((const uint8_t *)f16->data + (size_t)r * rs16, x, ne0);
        q_get_traits(t)->from_float(x, q, ne0);
        if (memcmp(q, want + (size_t)r * rs, rs) != 0) {
            size_t b = 0;
            while (q[b] == want[(size_t)r * rs + b]) b++;
            fail_msg("%s %s row %lld: byte %zu is %02x, llama.cpp wrote %02x", what, q_type_name(t), (long long)r,
                     b, q[b], want[(size_t)r * rs + b]);
        }
    }
    print_message("  %-5s %lld rows byte-identical to %s\n", q_type_name(t), (long long)nrows, what);
    free(x);
    free(q);
}

static void test_quantizers_match_llama_cpp_bytes(void **state) {
    tu_zoo *z = *state;
    const gguf_tensor_info *f16 = gguf_find_tensor(z->g, "F16");
    assert_non_null(f16);
    assert_int_equal(f16->type, Q_TYPE_F16);
    const char *f16_src = source_tensor(z->ref, "F16");

    /* zoo tensors cut from the same rows of the same source tensor */
    static const q_type same_rows[] = {Q_TYPE_Q4_0, Q_TYPE_Q4_1, Q_TYPE_Q5_0, Q_TYPE_Q5_1,
                                       Q_TYPE_Q2_K, Q_TYPE_Q4_K, Q_TYPE_Q5_K};
    for (size_t i = 0; i < sizeof same_rows / sizeof same_rows[0]; i++) {
        const char *name = q_type_name(same_rows[i]);
        if (strcmp(source_tensor(z->ref, name), f16_src) != 0)
            fail_msg("zoo %s was not cut from %s; this test's premise changed", name, f16_src);
        const gguf_tensor_info *ti = gguf_find_tensor(z->g, name);
        assert_non_null(ti);
        assert_int_equal(ti->type, same_rows[i]);
        expect_same_bytes(f16, same_rows[i], ti->data, "quant-zoo.gguf");
    }

    /* Q6_K and Q8_0: the first rows of token_embd in the tiny-llama files */
    assert_string_equal(f16_src, "token_embd.weight");
    static const struct {
        const char *file;
        q_type t;
    } files[] = {{"models/tiny-llama-Q6_K.gguf", Q_TYPE_Q6_K}, {"models/tiny-llama-Q8_0.gguf", Q_TYPE_Q8_0}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[1024];
        gguf_ctx *g = NULL;
        kn_err err = {0};
        if (gguf_open(tu_shared_path(path, sizeof path, files[i].file), &g, &err) != KN_OK)
            fail_msg("%s: %s", path, err.msg);
        const gguf_tensor_info *te = gguf_find_tensor(g, "token_embd.weight");
        assert_non_null(te);
        assert_int_equal(te->type, files[i].t);
        assert_int_equal(te->ne[0], f16->ne[0]);
        assert_true(te->ne[1] >= f16->ne[1]);
        expect_same_bytes(f16, files[i].t, te->data, files[i].file);
        gguf_close(g);
    }
}

static void test_requantize_zoo_is_idempotent(void **state) {
    tu_zoo *z = *state;
    /* ggml's reference quantizers that map their own output back to itself */
    static const q_type idem[] = {Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_Q8_0, Q_TYPE_Q4_0, Q_TYPE_Q4_1,
                                  Q_TYPE_Q5_0, Q_TYPE_Q5_1, Q_TYPE_Q2_K, Q_TYPE_Q4_K};
    for (size_t i = 0; i < sizeof idem / sizeof idem[0]; i++) {
        const gguf_tensor_info *ti = gguf_find_tensor(z->g, q_type_name(idem[i]));
        assert_non_null(ti);
        const q_traits *tr = q_get_traits(ti->type);
        const int64_t ne0 = (int64_t)ti->ne[0], nrows = (int64_t)ti->ne[1];
        const size_t rs = q_row_size(ti->type, ne0);
        float *x = malloc(sizeof(float) * (size_t)ne0);
        uint8_t *q = malloc(rs);
        assert_true(x && q);
        for (int64_t r = 0; r < nrows; r++) {
            const uint8_t *orig = (const uint8_t *)ti->data + (size_t)r * rs;
            tr->to_float(orig, x, ne0);
            tr->from_float(x, q, ne0);
            if (memcmp(q, orig, rs) != 0) fail_msg("%s row %lld: requantized bytes differ", tr->name, (long long)r);
        }
        free(x);
        free(q);
    }
}

/* quant-zoo-iq's MXFP4 rows: llama.cpp's bytes come back from their own
 * dequantization (a block's largest value is 8d or 12d, so e is found again,
 * and every value is exactly a code's, the first of equal ones (+0, never -0)). */
static void test_requantize_zoo_iq_mxfp4(void **state) {
    tu_zoo *z = *state;
    const gguf_tensor_info *ti = gguf_find_tensor(z->g, "MXFP4");
    assert_non_null(ti);
    assert_int_equal(ti->type, Q_TYPE_MXFP4);
    const q_traits *tr = q_get_traits(ti->type);
    const int64_t ne0 = (int64_t)ti->ne[0], nrows = (int64_t)ti->ne[1];
    const size_t rs = q_row_size(ti->type, ne0);
    float *x = malloc(sizeof(float) * (size_t)ne0);
    uint8_t *q = malloc(rs);
    assert_true(x && q);
    int n_e[256] = {0};
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *orig = (const uint8_t *)ti->data + (size_t)r * rs;
        tr->to_float(orig, x, ne0);
        memset(q, 0xa5, rs);
        tr->from_float(x, q, ne0);
        if (memcmp(q, orig, rs) != 0) {
            size_t b = 0;
            while (q[b] == orig[b]) b++;
            fail_msg("MXFP4 row %lld: requantized byte %zu is %02x, llama.cpp wrote %02x", (long long)r, b,
                     q[b], orig[b]);
        }
        for (int64_t b = 0; b < ne0 / 32; b++) n_e[((const block_mxfp4 *)orig)[b].e]++;
    }
    int distinct = 0;
    for (int e = 0; e < 256; e++) distinct += n_e[e] > 0;
    assert_true(distinct >= 2); /* the rows exercise more than one scale (121 and 122) */
    print_message("  MXFP4 %lld rows byte-identical after a round trip (%d distinct scales)\n",
                  (long long)nrows, distinct);
    free(x);
    free(q);
}

/* ---------------- edge rows ---------------- */

static const q_type all_types[] = {Q_TYPE_F32,  Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_Q8_0, Q_TYPE_Q8_1,
                                   Q_TYPE_Q4_0, Q_TYPE_Q4_1, Q_TYPE_Q5_0, Q_TYPE_Q5_1, Q_TYPE_Q2_K,
                                   Q_TYPE_Q3_K, Q_TYPE_Q4_K, Q_TYPE_Q5_K, Q_TYPE_Q6_K, Q_TYPE_Q8_K,
                                   Q_TYPE_MXFP4};

static void roundtrip(q_type t, const float *x, float *y, int64_t n) {
    uint8_t q[2048];
    assert_true(q_row_size(t, n) <= sizeof q);
    memset(q, 0x5a, sizeof q);
    q_get_traits(t)->from_float(x, q, n);
    q_get_traits(t)->to_float(q, y, n);
}

static void test_edge_rows(void **state) {
    (void)state;
    enum { N = 512 };
    float x[N], y[N];
    for (size_t k = 0; k < sizeof all_types / sizeof all_types[0]; k++) {
        const q_type t = all_types[k];
        const char *nm = q_type_name(t);

        /* zeros stay zeros */
        memset(x, 0, sizeof x);
        roundtrip(t, x, y, N);
        for (int i = 0; i < N; i++)
            if (y[i] != 0.0f) fail_msg("%s: zero row gives %g at %d", nm, (double)y[i], i);

        /* a constant row comes back within the type's precision */
        for (int sign = -1; sign <= 1; sign += 2) {
            for (int i = 0; i < N; i++) x[i] = 0.75f * (float)sign;
            roundtrip(t, x, y, N);
            for (int i = 0; i < N; i++)
                if (!(fabsf(y[i] - x[i]) <= 0.01f)) fail_msg("%s: constant %g gives %g", nm, (double)x[i], (double)y[i]);
        }

        /* one spike per block: the spike survives (within 5%: Q3_K's 6-bit
         * scales reach only 31/32 of the largest scale of the other sign),
         * nothing explodes */
        tu_rng rng = {.s = 99 + k};
        for (int i = 0; i < N; i++) x[i] = 0.01f * tu_rng_normal(&rng);
        for (int i = 0; i < N; i += 32) x[i] = (i % 64 ? 50.0f : -50.0f);
        roundtrip(t, x, y, N);
        for (int i = 0; i < N; i++) {
            if (!isfinite(y[i])) fail_msg("%s: non-finite output at %d", nm, i);
            if (i % 32 == 0 && !(fabsf(y[i] - x[i]) <= 2.5f))
                fail_msg("%s: spike %g at %d gives %g", nm, (double)x[i], i, (double)y[i]);
            if (!(fabsf(y[i]) <= 51.0f)) fail_msg("%s: %g at %d exceeds the input range", nm, (double)y[i], i);
        }

        /* tiny values: no NaN/inf from scale arithmetic */
        for (int i = 0; i < N; i++) x[i] = 1e-30f * tu_rng_normal(&rng);
        roundtrip(t, x, y, N);
        for (int i = 0; i < N; i++)
            if (!isfinite(y[i]) || fabsf(y[i]) > 1e-20f) fail_msg("%s: tiny input gives %g at %d", nm, (double)y[i], i);
    }
}

/* Q8_K: iscale = -127/max with max the signed element of largest magnitude,
 * q = min(127, nearest_int(iscale*x)) (ties to even), d = 1/iscale, bsums. */
static void test_q8_K_rules(void **state) {
    (void)state;
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = (float)(i % 17) * 0.125f - 1.0f; /* -1 .. 1 */
    x[5] = -127.0f; /* the max, negative: iscale = 1 exactly */
    x[6] = -2.5f;   /* ties go to even, not away from zero as roundf would */
    x[7] = -3.5f;
    x[8] = 0.5f;
    x[9] = 1.5f;
    x[10] = 126.49f;
    block_q8_K b;
    memset(&b, 0x77, sizeof b);
    q_get_traits(Q_TYPE_Q8_K)->from_float(x, &b, 256);
    const float iscale = -127.f / -127.0f;
    assert_true(b.d == 1.0f);
    assert_int_equal(b.qs[5], -127);
    assert_int_equal(b.qs[6], -2);
    assert_int_equal(b.qs[7], -4);
    assert_int_equal(b.qs[8], 0);
    assert_int_equal(b.qs[9], 2);
    assert_int_equal(b.qs[10], 126);
    for (int i = 0; i < 256; i++) {
        float v = iscale * x[i];
        int want = (int)nearbyintf(v); /* default rounding: ties to even */
        if (want > 127) want = 127;
        assert_int_equal(b.qs[i], want);
    }
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += b.qs[16 * j + i];
        assert_int_equal(b.bsums[j], s);
    }
    /* a positive max maps to -127 */
    for (int i = 0; i < 256; i++) x[i] = -1.0f;
    x[0] = 1.0f;
    q_get_traits(Q_TYPE_Q8_K)->from_float(x, &b, 256);
    assert_int_equal(b.qs[0], -127);
    assert_int_equal(b.qs[1], 127);
    assert_true(b.d == -1.0f / 127.0f);
    /* all zero: d = 0, quants and sums zero */
    memset(x, 0, sizeof x);
    memset(&b, 0x77, sizeof b);
    q_get_traits(Q_TYPE_Q8_K)->from_float(x, &b, 256);
    assert_true(b.d == 0.0f);
    for (int i = 0; i < 256; i++) assert_int_equal(b.qs[i], 0);
    for (int j = 0; j < 16; j++) assert_int_equal(b.bsums[j], 0);
}

/* Q8_0/Q8_1: d = amax/127, q = roundf(x/d) (ties away from zero), Q8_1's
 * s = fp16(d * sum(q)). */
static void test_q8_0_q8_1_rules(void **state) {
    (void)state;
    float x[32];
    tu_rng rng = {.s = 5};
    for (int i = 0; i < 32; i++) x[i] = tu_rng_normal(&rng);
    x[3] = 3.0f; /* amax */
    block_q8_0 a;
    block_q8_1 b;
    q_get_traits(Q_TYPE_Q8_0)->from_float(x, &a, 32);
    q_get_traits(Q_TYPE_Q8_1)->from_float(x, &b, 32);
    const float d = 3.0f / 127.0f, id = 1.0f / d;
    assert_int_equal(a.d, q_f32_to_f16(d));
    assert_int_equal(b.d, q_f32_to_f16(d));
    int sum = 0;
    for (int i = 0; i < 32; i++) {
        assert_int_equal(a.qs[i], (int)roundf(x[i] * id));
        assert_int_equal(b.qs[i], a.qs[i]);
        sum += a.qs[i];
    }
    assert_int_equal(a.qs[3], 127);
    assert_int_equal(b.s, q_f32_to_f16((float)sum * d));
}

/* MXFP4 (ggml's quantize_row_mxfp4_ref): e = floor(log2(amax)) - 2 + 127
 * converted as x86 converts float to uint8_t, d = 2^(e - 128), per element
 * the first code of least |kvalues[i] * d - x|, element j in the low nibble
 * of byte j and element j + 16 in its high nibble. */
static void test_mxfp4_rules(void **state) {
    (void)state;
    enum { NB = 7 };
    float x[32 * NB];
    memset(x, 0, sizeof x);
    /* block 0: amax 3 -> e = 126, d = 0.25: codes {0, .25, .5, .75, 1, 1.5, 2, 3} x sign */
    x[0] = 3.0f;    /* 12 d: code 7 */
    x[1] = 0.375f;  /* tie .25 | .5: the lower code, 1 */
    x[2] = -0.375f; /* tie -.25 | -.5: code 9 */
    x[3] = -0.0f;   /* +0 (code 0), not -0 (code 8) */
    x[4] = 2.5f;    /* tie 2 | 3: code 6 */
    x[5] = -2.6f;   /* -3: code 15 */
    x[6] = 1.25f;   /* tie 1 | 1.5: code 4 */
    x[16] = -1.0f;  /* -4 d: code 12, the high nibble of byte 0 */
    x[17] = 0.1f;   /* nearer 0 than .25: code 0 */
    /* block 1: zeros -> e = 0, all codes 0 */
    /* block 2: amax 2^-126 -> floor(log2) - 2 + 127 = -1 -> 255 on x86 (the scale 2^127 rounds all to 0) */
    x[64] = 0x1p-126f;
    /* block 3: a subnormal amax 1e-40 -> floor(log2) = -133 -> -8 -> 248 */
    x[96] = -1e-40f;
    /* block 4: amax 2^-125 -> e = 0, d = 2^-128: 8 d, code 6, exact */
    x[128] = 0x1p-125f;
    /* block 5: amax 1.5 * 2^127 -> e = 252, d = 2^124: 12 d, code 7 */
    x[160] = 0x1.8p127f;
    /* block 6: an infinite amax -> e = 0 (x86's integer-indefinite low byte); inf matches no code */
    x[192] = INFINITY;
    x[193] = 1.0f; /* every |kvalues[i] * 2^-128 - 1| rounds to 1: the first code, 0 */
    block_mxfp4 b[NB];
    memset(b, 0x77, sizeof b);
    q_get_traits(Q_TYPE_MXFP4)->from_float(x, b, 32 * NB);
    assert_int_equal(b[0].e, 126);
    static const uint8_t want0[16] = {0xC7, 0x01, 0x09, 0x00, 0x06, 0x0F, 0x04};
    assert_memory_equal(b[0].qs, want0, 16);
    assert_int_equal(b[1].e, 0);
    assert_int_equal(b[2].e, 255);
    assert_int_equal(b[3].e, 248);
    assert_int_equal(b[4].e, 0);
    assert_int_equal(b[4].qs[0], 0x06);
    assert_int_equal(b[5].e, 252);
    assert_int_equal(b[5].qs[0], 0x07);
    assert_int_equal(b[6].e, 0);
    assert_int_equal(b[6].qs[0], 0x00);
    assert_int_equal(b[6].qs[1], 0x00);
    for (int k = 1; k < 6; k++)
        for (int j = 0; j < 16; j++) {
            if ((k == 4 || k == 5) && j == 0) continue;
            assert_int_equal(b[k].qs[j], 0);
        }
    /* and back */
    float y[32 * NB];
    q_get_traits(Q_TYPE_MXFP4)->to_float(b, y, 32 * 6);
    static const float want_y0[7] = {3.0f, 0.25f, -0.25f, 0.0f, 2.0f, -3.0f, 1.0f};
    for (int j = 0; j < 7; j++) assert_true(y[j] == want_y0[j]);
    assert_true(y[16] == -1.0f && y[17] == 0.0f && !signbit(y[3]));
    assert_true(y[128] == 0x1p-125f);
    assert_true(y[160] == 0x1.8p127f);
    for (int j = 32; j < 128; j++) assert_true(y[j] == 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gaussian_error_bounds),
        cmocka_unit_test_setup_teardown(test_quantizers_match_llama_cpp_bytes, tu_zoo_setup, tu_zoo_teardown),
        cmocka_unit_test_setup_teardown(test_requantize_zoo_is_idempotent, tu_zoo_setup, tu_zoo_teardown),
        cmocka_unit_test(test_edge_rows),
        cmocka_unit_test(test_q8_K_rules),
        cmocka_unit_test(test_q8_0_q8_1_rules),
        cmocka_unit_test_setup_teardown(test_requantize_zoo_iq_mxfp4, tu_zoo_iq_setup, tu_zoo_teardown),
        cmocka_unit_test(test_mxfp4_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
