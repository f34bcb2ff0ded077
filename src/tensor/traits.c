/*
 * traits.c — the q_traits table: one designated-initializer entry per GGUF
 * type id. Types kiln computes with carry the scalar reference kernels of
 * quants_ref*.c; types it can only size (IQ*, I8..I64, F64, TQ*) carry
 * their ggml block size and bytes so the GGUF reader can validate files that
 * hold them. Removed ids (4, 5, 31..33, 36..38) have no entry (NULL).
 */
#include "kiln/tensor.h"
#include "quants_ref.h"

#include <strings.h>

/* Block sizes of the types kiln does not compute, as ggml lays them out
 * (ggml-common.h). Pinned here since there is no struct to sizeof. */
#define Q_BYTES_IQ2_XXS (2 + Q_QK_K / 8 * 2)                         /* 66 */
#define Q_BYTES_IQ2_XS (2 + Q_QK_K / 8 * 2 + Q_QK_K / 32)            /* 74 */
#define Q_BYTES_IQ3_XXS (2 + 3 * (Q_QK_K / 8))                       /* 98 */
#define Q_BYTES_IQ1_S (2 + Q_QK_K / 8 + Q_QK_K / 16)                 /* 50 */
#define Q_BYTES_IQ4_NL (2 + 32 / 2)                                  /* 18 */
#define Q_BYTES_IQ3_S (2 + 13 * (Q_QK_K / 32) + Q_QK_K / 64)         /* 110 */
#define Q_BYTES_IQ2_S (2 + Q_QK_K / 4 + Q_QK_K / 16)                 /* 82 */
#define Q_BYTES_IQ4_XS (2 + 2 + Q_QK_K / 64 + Q_QK_K / 2)            /* 136 */
#define Q_BYTES_IQ1_M (Q_QK_K / 8 + Q_QK_K / 16 + Q_QK_K / 32)       /* 56 */
#define Q_BYTES_TQ1_0 (2 + Q_QK_K / 64 + (Q_QK_K - 4 * Q_QK_K / 64) / 5) /* 54 */
#define Q_BYTES_TQ2_0 (2 + Q_QK_K / 4)                               /* 66 */

static_assert(Q_BYTES_IQ2_XXS == 66, "iq2_xxs size");
static_assert(Q_BYTES_IQ2_XS == 74, "iq2_xs size");
static_assert(Q_BYTES_IQ3_XXS == 98, "iq3_xxs size");
static_assert(Q_BYTES_IQ1_S == 50, "iq1_s size");
static_assert(Q_BYTES_IQ4_NL == 18, "iq4_nl size");
static_assert(Q_BYTES_IQ3_S == 110, "iq3_s size");
static_assert(Q_BYTES_IQ2_S == 82, "iq2_s size");
static_assert(Q_BYTES_IQ4_XS == 136, "iq4_xs size");
static_assert(Q_BYTES_IQ1_M == 56, "iq1_m size");
static_assert(Q_BYTES_TQ1_0 == 54, "tq1_0 size");
static_assert(Q_BYTES_TQ2_0 == 66, "tq2_0 size");
static_assert(sizeof(q_f16_t) == 2 && sizeof(q_bf16_t) == 2, "half sizes");

#define Q_SIZED(nm, bs, sz, quant) \
    { .name = nm, .blck_size = bs, .type_size = sz, .is_quantized = quant }

static const q_traits q_table[Q_TYPE_COUNT] = {
    [Q_TYPE_F32] = {.name = "F32", .blck_size = 1, .type_size = sizeof(float), .is_quantized = false,
                    .to_float = q_ref_dequantize_f32, .from_float = q_ref_quantize_f32,
                    .vec_dot = q_ref_vec_dot_f32, .vec_dot_type = Q_TYPE_F32},
    [Q_TYPE_F16] = {.name = "F16", .blck_size = 1, .type_size = sizeof(q_f16_t), .is_quantized = false,
                    .to_float = q_ref_dequantize_f16, .from_float = q_ref_quantize_f16,
                    .vec_dot = q_ref_vec_dot_f16, .vec_dot_type = Q_TYPE_F16},
    [Q_TYPE_BF16] = {.name = "BF16", .blck_size = 1, .type_size = sizeof(q_bf16_t), .is_quantized = false,
                     .to_float = q_ref_dequantize_bf16, .from_float = q_ref_quantize_bf16,
                     .vec_dot = q_ref_vec_dot_bf16, .vec_dot_type = Q_TYPE_BF16},
    [Q_TYPE_Q4_0] = {.name = "Q4_0", .blck_size = Q_QK4_0, .type_size = sizeof(block_q4_0),
                     .is_quantized = true, .to_float = q_ref_dequantize_q4_0,
                     .from_float = q_ref_quantize_q4_0, .vec_dot = q_ref_vec_dot_q4_0_q8_0,
                     .vec_dot_type = Q_TYPE_Q8_0},
    [Q_TYPE_Q4_1] = {.name = "Q4_1", .blck_size = Q_QK4_1, .type_size = sizeof(block_q4_1),
                     .is_quantized = true, .to_float = q_ref_dequantize_q4_1,
                     .from_float = q_ref_quantize_q4_1, .vec_dot = q_ref_vec_dot_q4_1_q8_1,
                     .vec_dot_type = Q_TYPE_Q8_1},
    [Q_TYPE_Q5_0] = {.name = "Q5_0", .blck_size = Q_QK5_0, .type_size = sizeof(block_q5_0),
                     .is_quantized = true, .to_float = q_ref_dequantize_q5_0,
                     .from_float = q_ref_quantize_q5_0, .vec_dot = q_ref_vec_dot_q5_0_q8_0,
                     .vec_dot_type = Q_TYPE_Q8_0},
    [Q_TYPE_Q5_1] = {.name = "Q5_1", .blck_size = Q_QK5_1, .type_size = sizeof(block_q5_1),
                     .is_quantized = true, .to_float = q_ref_dequantize_q5_1,
                     .from_float = q_ref_quantize_q5_1, .vec_dot = q_ref_vec_dot_q5_1_q8_1,
                     .vec_dot_type = Q_TYPE_Q8_1},
    [Q_TYPE_Q8_0] = {.name = "Q8_0", .blck_size = Q_QK8_0, .type_size = sizeof(block_q8_0),
                     .is_quantized = true, .to_float = q_ref_dequantize_q8_0,
                     .from_float = q_ref_quantize_q8_0, .vec_dot = q_ref_vec_dot_q8_0_q8_0,
                     .vec_dot_type = Q_TYPE_Q8_0},
    /* activation type only: no weight dot product */
    [Q_TYPE_Q8_1] = {.name = "Q8_1", .blck_size = Q_QK8_1, .type_size = sizeof(block_q8_1),
                     .is_quantized = true, .to_float = q_ref_dequantize_q8_1,
                     .from_float = q_ref_quantize_q8_1, .vec_dot = NULL, .vec_dot_type = Q_TYPE_Q8_1},
    [Q_TYPE_Q2_K] = {.name = "Q2_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q2_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q2_K,
                     .from_float = q_ref_quantize_q2_K, .vec_dot = q_ref_vec_dot_q2_K_q8_K,
                     .vec_dot_type = Q_TYPE_Q8_K},
    [Q_TYPE_Q3_K] = {.name = "Q3_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q3_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q3_K,
                     .from_float = q_ref_quantize_q3_K, .vec_dot = q_ref_vec_dot_q3_K_q8_K,
                     .vec_dot_type = Q_TYPE_Q8_K},
    [Q_TYPE_Q4_K] = {.name = "Q4_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q4_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q4_K,
                     .from_float = q_ref_quantize_q4_K, .vec_dot = q_ref_vec_dot_q4_K_q8_K,
                     .vec_dot_type = Q_TYPE_Q8_K},
    [Q_TYPE_Q5_K] = {.name = "Q5_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q5_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q5_K,
                     .from_float = q_ref_quantize_q5_K, .vec_dot = q_ref_vec_dot_q5_K_q8_K,
                     .vec_dot_type = Q_TYPE_Q8_K},
    [Q_TYPE_Q6_K] = {.name = "Q6_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q6_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q6_K,
                     .from_float = q_ref_quantize_q6_K, .vec_dot = q_ref_vec_dot_q6_K_q8_K,
                     .vec_dot_type = Q_TYPE_Q8_K},
    /* activation type only: no weight dot product */
    [Q_TYPE_Q8_K] = {.name = "Q8_K", .blck_size = Q_QK_K, .type_size = sizeof(block_q8_K),
                     .is_quantized = true, .to_float = q_ref_dequantize_q8_K,
                     .from_float = q_ref_quantize_q8_K, .vec_dot = NULL, .vec_dot_type = Q_TYPE_Q8_K},
    /* gpt-oss's expert weights; activations in Q8_0 as in llama.cpp's CPU backend */
    [Q_TYPE_MXFP4] = {.name = "MXFP4", .blck_size = Q_QK_MXFP4, .type_size = sizeof(block_mxfp4),
                      .is_quantized = true, .to_float = q_ref_dequantize_mxfp4,
                      .from_float = q_ref_quantize_mxfp4, .vec_dot = q_ref_vec_dot_mxfp4_q8_0,
                      .vec_dot_type = Q_TYPE_Q8_0},

    /* sized only */
    [Q_TYPE_IQ2_XXS] = Q_SIZED("IQ2_XXS", Q_QK_K, Q_BYTES_IQ2_XXS, true),
    [Q_TYPE_IQ2_XS] = Q_SIZED("IQ2_XS", Q_QK_K, Q_BYTES_IQ2_XS, true),
    [Q_TYPE_IQ3_XXS] = Q_SIZED("IQ3_XXS", Q_QK_K, Q_BYTES_IQ3_XXS, true),
    [Q_TYPE_IQ1_S] = Q_SIZED("IQ1_S", Q_QK_K, Q_BYTES_IQ1_S, true),
    [Q_TYPE_IQ4_NL] = Q_SIZED("IQ4_NL", 32, Q_BYTES_IQ4_NL, true),
    [Q_TYPE_IQ3_S] = Q_SIZED("IQ3_S", Q_QK_K, Q_BYTES_IQ3_S, true),
    [Q_TYPE_IQ2_S] = Q_SIZED("IQ2_S", Q_QK_K, Q_BYTES_IQ2_S, true),
    [Q_TYPE_IQ4_XS] = Q_SIZED("IQ4_XS", Q_QK_K, Q_BYTES_IQ4_XS, true),
    [Q_TYPE_I8] = Q_SIZED("I8", 1, 1, false),
    [Q_TYPE_I16] = Q_SIZED("I16", 1, 2, false),
    [Q_TYPE_I32] = Q_SIZED("I32", 1, 4, false),
    [Q_TYPE_I64] = Q_SIZED("I64", 1, 8, false),
    [Q_TYPE_F64] = Q_SIZED("F64", 1, 8, false),
    [Q_TYPE_IQ1_M] = Q_SIZED("IQ1_M", Q_QK_K, Q_BYTES_IQ1_M, true),
    [Q_TYPE_TQ1_0] = Q_SIZED("TQ1_0", Q_QK_K, Q_BYTES_TQ1_0, true),
    [Q_TYPE_TQ2_0] = Q_SIZED("TQ2_0", Q_QK_K, Q_BYTES_TQ2_0, true),
};

const q_traits *q_get_traits(uint32_t type) {
    if (type >= Q_TYPE_COUNT) return NULL;
    const q_traits *t = &q_table[type];
    return t->name ? t : NULL;
}

const char *q_type_name(uint32_t type) {
    const q_traits *t = q_get_traits(type);
    return t ? t->name : "?";
}

bool q_type_from_name(const char *name, q_type *out) {
    if (!name) return false;
    for (uint32_t i = 0; i < Q_TYPE_COUNT; i++) {
        if (q_table[i].name && strcasecmp(q_table[i].name, name) == 0) {
            if (out) *out = (q_type)i;
            return true;
        }
    }
    return false;
}

size_t q_row_size(q_type type, int64_t n) {
    const q_traits *t = q_get_traits((uint32_t)type);
    if (!t || n < 0 || n % t->blck_size != 0) return 0;
    uint64_t bytes;
    if (!kn_mul_u64((uint64_t)(n / t->blck_size), (uint64_t)t->type_size, &bytes)) return 0;
    if (bytes > (uint64_t)SIZE_MAX) return 0;
    return (size_t)bytes;
}

bool q_type_supported(uint32_t type) {
    const q_traits *t = q_get_traits(type);
    return t && t->to_float && t->vec_dot;
}
