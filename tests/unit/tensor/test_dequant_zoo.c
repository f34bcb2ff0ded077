/* test_dequant_zoo.c — every type's reference to_float against llama.cpp.
 *
 * $KILN_SHARED/models/quant-zoo.gguf holds one 256x16 tensor per type, named
 * by the type; $KILN_SHARED/reference/quant-zoo.dequant.json holds each of
 * their rows dequantized by llama.cpp. Every value must match within 1e-6 of
 * the row's largest magnitude. quant-zoo-iq.gguf / quant-zoo-iq.dequant.json
 * do the same for the i-quants, TQ1_0/TQ2_0 and MXFP4: MXFP4 must match bit
 * for bit; the types kiln does not compute yet are skipped by name (a later
 * issue). Also checks the traits table itself and the E8M0 scale. */
#include "testutil.h"
#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The types the zoo must contain (issue 2). */
static const char *const zoo_types[] = {"F16",  "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0",
                                        "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
#define N_ZOO (sizeof zoo_types / sizeof zoo_types[0])

static void test_traits_table(void **state) {
    (void)state;
    /* ggml's block sizes and bytes, by GGUF id */
    static const struct {
        uint32_t id;
        const char *name;
        int64_t blck;
        size_t bytes;
    } want[] = {
        {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
        {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
        {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
        {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
        {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},   {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},
        {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
        {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},       {29, "IQ1_M", 256, 56},
        {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},  {39, "MXFP4", 32, 17},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const q_traits *t = q_get_traits(want[i].id);
        assert_non_null(t);
        assert_string_equal(t->name, want[i].name);
        assert_string_equal(q_type_name(want[i].id), want[i].name);
        assert_int_equal(t->blck_size, want[i].blck);
        assert_int_equal(t->type_size, want[i].bytes);
        q_type back;
        assert_true(q_type_from_name(want[i].name, &back));
        assert_int_equal(back, want[i].id);
    }
    /* removed and out-of-range ids */
    static const uint32_t gone[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 41, 1000, 0xffffffffu};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
        assert_null(q_get_traits(gone[i]));
        assert_string_equal(q_type_name(gone[i]), "?");
        assert_false(q_type_supported(gone[i]));
    }
    q_type t;
    assert_true(q_type_from_name("q4_k", &t));
    assert_int_equal(t, Q_TYPE_Q4_K);
    assert_true(q_type_from_name("bf16", &t));
    assert_int_equal(t, Q_TYPE_BF16);
    assert_false(q_type_from_name("Q4_K_M", &t));
    assert_false(q_type_from_name("", &t));
    assert_false(q_type_from_name(NULL, &t));

    /* what kiln computes with, and the activation type of each */
    static const struct {
        q_type w, act;
    } pairs[] = {
        {Q_TYPE_F32, Q_TYPE_F32},   {Q_TYPE_F16, Q_TYPE_F16},   {Q_TYPE_BF16, Q_TYPE_BF16},
        {Q_TYPE_Q4_0, Q_TYPE_Q8_0}, {Q_TYPE_Q4_1, Q_TYPE_Q8_1}, {Q_TYPE_Q5_0, Q_TYPE_Q8_0},
        {Q_TYPE_Q5_1, Q_TYPE_Q8_1}, {Q_TYPE_Q8_0, Q_TYPE_Q8_0}, {Q_TYPE_Q2_K, Q_TYPE_Q8_K},
        {Q_TYPE_Q3_K, Q_TYPE_Q8_K}, {Q_TYPE_Q4_K, Q_TYPE_Q8_K}, {Q_TYPE_Q5_K, Q_TYPE_Q8_K},
        {Q_TYPE_Q6_K, Q_TYPE_Q8_K}, {Q_TYPE_MXFP4, Q_TYPE_Q8_0},
    };
    int n_supported = 0;
    for (uint32_t id = 0; id < Q_TYPE_COUNT; id++) n_supported += q_type_supported(id);
    assert_int_equal(n_supported, (int)(sizeof pairs / sizeof pairs[0]));
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const q_traits *tw = q_get_traits(pairs[i].w);
        assert_true(q_type_supported(pairs[i].w));
        assert_non_null(tw->to_float);
        assert_non_null(tw->from_float);
        assert_non_null(tw->vec_dot);
        assert_int_equal(tw->vec_dot_type, pairs[i].act);
        const q_traits *ta = q_get_traits(pairs[i].act);
        assert_non_null(ta->from_float);
        assert_non_null(ta->to_float);
    }
    /* activation-only and size-only types cannot be computed with */
    assert_false(q_type_supported(Q_TYPE_Q8_K));
    assert_false(q_type_supported(Q_TYPE_Q8_1));
    assert_false(q_type_supported(Q_TYPE_IQ4_XS));
    assert_null(q_get_traits(Q_TYPE_IQ4_XS)->to_float);
    assert_true(q_get_traits(Q_TYPE_MXFP4)->is_quantized);
    assert_int_equal(q_row_size(Q_TYPE_MXFP4, 2880), 90 * 17); /* gpt-oss's width */

    /* row sizes */
    assert_int_equal(q_row_size(Q_TYPE_Q4_K, 4096), 16 * 144);
    assert_int_equal(q_row_size(Q_TYPE_Q8_0, 96), 3 * 34);
    assert_int_equal(q_row_size(Q_TYPE_F16, 7), 14);
    assert_int_equal(q_row_size(Q_TYPE_Q4_K, 0), 0);
    assert_int_equal(q_row_size(Q_TYPE_Q4_K, 100), 0); /* not whole blocks */
    assert_int_equal(q_row_size(Q_TYPE_Q8_0, -32), 0);
    assert_int_equal(q_row_size((q_type)4, 32), 0);
    assert_int_equal(q_row_size(Q_TYPE_F64, INT64_MAX), 0); /* overflow */
}

/* The zoo tensor's name (its type's name) into name[64]. */
static void zoo_name(const gguf_tensor_info *info, char name[64]) {
    assert_true(info->name.len < 64);
    memcpy(name, info->name.data, info->name.len);
    name[info->name.len] = 0;
    q_type by_name;
    if (!q_type_from_name(name, &by_name)) fail_msg("zoo tensor %s is not named by a type", name);
    assert_int_equal(info->type, by_name);
}

/* Every row of one zoo tensor through the type's to_float against the
 * reference rows: within 1e-6 of the row's largest magnitude, or (exact)
 * bit for bit. */
static void check_zoo_tensor(tu_zoo *z, const gguf_tensor_info *info, const char *name, bool exact) {
    const q_traits *tr = q_get_traits(info->type);
    assert_non_null(tr);
    if (!tr->to_float) fail_msg("%s: no to_float", name);

    json_t *ref = json_object_get(z->ref, name);
    if (!ref) fail_msg("no reference for %s", name);
    const int64_t ne0 = (int64_t)info->ne[0];
    assert_int_equal(json_integer_value(json_object_get(ref, "ne0")), ne0);
    json_t *rows = json_object_get(ref, "rows");
    assert_true(json_is_array(rows));
    const int64_t nrows = (int64_t)(info->nelements / (uint64_t)ne0);
    assert_int_equal((int64_t)json_array_size(rows), nrows);
    const size_t rs = q_row_size(info->type, ne0);
    assert_int_equal((uint64_t)rs * (uint64_t)nrows, info->nbytes);

    float *y = malloc((size_t)ne0 * sizeof *y);
    assert_non_null(y);
    double worst = 0.0;
    for (int64_t r = 0; r < nrows; r++) {
        json_t *row = json_array_get(rows, (size_t)r);
        assert_int_equal((int64_t)json_array_size(row), ne0);
        for (int64_t i = 0; i < ne0; i++) y[i] = NAN;
        tr->to_float((const uint8_t *)info->data + (size_t)r * rs, y, ne0);
        double amax = 0.0;
        for (int64_t i = 0; i < ne0; i++) {
            double v = json_number_value(json_array_get(row, (size_t)i));
            if (fabs(v) > amax) amax = fabs(v);
        }
        const double tol = 1e-6 * amax;
        for (int64_t i = 0; i < ne0; i++) {
            double v = json_number_value(json_array_get(row, (size_t)i));
            double d = fabs((double)y[i] - v);
            const float vf = (float)v; /* %.9g round-trips a float exactly */
            if (exact && memcmp(&vf, &y[i], sizeof vf) != 0)
                fail_msg("%s row %lld col %lld: kiln %.9g, llama.cpp %.9g (bit for bit)", name, (long long)r,
                         (long long)i, (double)y[i], v);
            if (!(d <= tol))
                fail_msg("%s row %lld col %lld: kiln %.9g, llama.cpp %.9g (tol %.3g)", name, (long long)r,
                         (long long)i, (double)y[i], v, tol);
            if (amax > 0 && d / amax > worst) worst = d / amax;
        }
    }
    free(y);
    print_message("  %-7s %lld rows, worst |diff|/rowmax = %.3g%s\n", name, (long long)nrows, worst,
                  exact ? " (bit for bit)" : "");
}

static void test_zoo_dequant_matches_llama_cpp(void **state) {
    tu_zoo *z = *state;
    /* every expected type is both in the file and in the reference */
    for (size_t i = 0; i < N_ZOO; i++) {
        if (!gguf_find_tensor(z->g, zoo_types[i])) fail_msg("quant-zoo.gguf lacks tensor %s", zoo_types[i]);
        if (!json_object_get(z->ref, zoo_types[i])) fail_msg("reference lacks %s", zoo_types[i]);
    }
    int n_checked = 0;
    for (int64_t ti = 0; ti < gguf_n_tensors(z->g); ti++) {
        const gguf_tensor_info *info = gguf_tensor(z->g, ti);
        char name[64];
        zoo_name(info, name);
        check_zoo_tensor(z, info, name, false);
        n_checked++;
    }
    assert_true(n_checked >= (int)N_ZOO);
}

/* quant-zoo-iq.gguf: the types kiln computes must match llama.cpp bit for
 * bit (MXFP4: a power-of-two scale times a small integer is exact); the
 * others are a later issue and are skipped by type. A skipped type that
 * gains a to_float fails here until it moves to iq_checked. */
static const q_type iq_checked[] = {Q_TYPE_MXFP4};
static const q_type iq_later[] = {Q_TYPE_IQ4_NL,  Q_TYPE_IQ4_XS, Q_TYPE_IQ3_XXS, Q_TYPE_IQ3_S,
                                  Q_TYPE_IQ2_XXS, Q_TYPE_IQ2_XS, Q_TYPE_IQ2_S,   Q_TYPE_IQ1_S,
                                  Q_TYPE_IQ1_M,   Q_TYPE_TQ1_0,  Q_TYPE_TQ2_0};
#define N_IQ_CHECKED (sizeof iq_checked / sizeof iq_checked[0])
#define N_IQ_LATER (sizeof iq_later / sizeof iq_later[0])

static bool in_list(const q_type *list, size_t n, uint32_t t) {
    for (size_t i = 0; i < n; i++)
        if (list[i] == t) return true;
    return false;
}

static void test_zoo_iq_dequant_matches_llama_cpp(void **state) {
    tu_zoo *z = *state;
    for (size_t i = 0; i < N_IQ_CHECKED; i++) {
        const char *nm = q_type_name(iq_checked[i]);
        if (!gguf_find_tensor(z->g, nm)) fail_msg("quant-zoo-iq.gguf lacks tensor %s", nm);
        if (!json_object_get(z->ref, nm)) fail_msg("quant-zoo-iq reference lacks %s", nm);
    }
    int n_checked = 0, n_skipped = 0;
    for (int64_t ti = 0; ti < gguf_n_tensors(z->g); ti++) {
        const gguf_tensor_info *info = gguf_tensor(z->g, ti);
        char name[64];
        zoo_name(info, name);
        if (in_list(iq_later, N_IQ_LATER, info->type)) {
            if (q_get_traits(info->type)->to_float)
                fail_msg("%s now has a to_float: move it from iq_later to iq_checked", name);
            print_message("  %-7s skipped (not computed by kiln yet)\n", name);
            n_skipped++;
            continue;
        }
        if (!in_list(iq_checked, N_IQ_CHECKED, info->type))
            fail_msg("quant-zoo-iq tensor %s is in neither iq_checked nor iq_later", name);
        check_zoo_tensor(z, info, name, true);
        n_checked++;
    }
    assert_int_equal(n_checked, (int)N_IQ_CHECKED);
    assert_int_equal(n_skipped, (int)N_IQ_LATER);
}

/* The E8M0 scale: 2^(e - 128) for all 256 bytes (ldexp in double, an
 * independent computation), subnormal at e = 0 and 1, no NaN at 255. */
static void test_e8m0_half(void **state) {
    (void)state;
    for (int e = 0; e < 256; e++) {
        const float got = q_e8m0_to_f32_half((uint8_t)e), want = (float)ldexp(1.0, e - 128);
        if (memcmp(&got, &want, sizeof got) != 0)
            fail_msg("e8m0 %d: %.9g, want 2^%d = %.9g", e, (double)got, e - 128, (double)want);
    }
    uint32_t bits;
    float f = q_e8m0_to_f32_half(0);
    memcpy(&bits, &f, 4);
    assert_int_equal(bits, 0x00200000u); /* 2^-128, subnormal */
    f = q_e8m0_to_f32_half(255);
    memcpy(&bits, &f, 4);
    assert_int_equal(bits, 0x7f000000u); /* 2^127 */
    assert_true(q_e8m0_to_f32_half(128) == 1.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits_table),
        cmocka_unit_test(test_e8m0_half),
        cmocka_unit_test_setup_teardown(test_zoo_dequant_matches_llama_cpp, tu_zoo_setup, tu_zoo_teardown),
        cmocka_unit_test_setup_teardown(test_zoo_iq_dequant_matches_llama_cpp, tu_zoo_iq_setup,
                                        tu_zoo_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
