/*
 * kiln/tensor.h — quant types, their traits table, reference kernels, the
 * runtime-selected kernel set and the (batched, thread-pooled) matmul.
 *
 * Owns:
 *  - q_type: one append-only enum with the GGUF/ggml numeric type ids.
 *  - the block layouts (static_assert-pinned, byte-compatible with ggml);
 *  - q_traits: a designated-initializer table (traits.c) giving, per type,
 *    block size, block bytes, to_float, from_float and the scalar reference
 *    vec_dot with its activation type. Types kiln can only size (IQ*, TQ*,
 *    I8..) have sizes but NULL functions;
 *  - tensor_ops: the kernel set (generic, AVX2, AVX-512) picked once at
 *    startup, passed around by pointer (no globals).
 *
 * Kernel contract:
 *  - vec_dot(n, &s, w_row, a_row): s = dot(dequant(w_row), dequant(a_row))
 *    over n elements; w_row is in the weight type, a_row in the weight
 *    type's vec_dot_type (its activation type). n is a multiple of both
 *    block sizes.
 *  - Batch invariance: every output element of tensor_matmul is computed with
 *    one fixed reduction order, whatever the number of columns in the call
 *    and however rows are split among threads. A column of a many-column
 *    matmul is bit-identical to the same column computed alone.
 *
 * Activation types (llama.cpp's choice, which the references follow):
 *  Q2_K..Q6_K -> Q8_K; Q4_0, Q5_0, Q8_0, MXFP4 -> Q8_0; Q4_1, Q5_1 -> Q8_1;
 *  F16 -> F16; BF16 -> BF16; F32 -> F32.
 *
 * MXFP4 (OCP microscaling FP4, gpt-oss's expert weights): blocks of 32 as
 * one E8M0 scale byte e and 16 bytes of E2M1 codes (byte j: element j in
 * the low nibble, j + 16 in the high one); element = kvalues_mxfp4[code] *
 * 2^(e - 128), with ggml's doubled E2M1 codebook (quants_ref.c) and so half
 * the OCP scale 2^(e - 127) (q_e8m0_to_f32_half).
 */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include "kiln/core.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum q_type {
    Q_TYPE_F32 = 0,
    Q_TYPE_F16 = 1,
    Q_TYPE_Q4_0 = 2,
    Q_TYPE_Q4_1 = 3,
    /* 4, 5: removed Q4_2, Q4_3 */
    Q_TYPE_Q5_0 = 6,
    Q_TYPE_Q5_1 = 7,
    Q_TYPE_Q8_0 = 8,
    Q_TYPE_Q8_1 = 9,
    Q_TYPE_Q2_K = 10,
    Q_TYPE_Q3_K = 11,
    Q_TYPE_Q4_K = 12,
    Q_TYPE_Q5_K = 13,
    Q_TYPE_Q6_K = 14,
    Q_TYPE_Q8_K = 15,
    Q_TYPE_IQ2_XXS = 16,
    Q_TYPE_IQ2_XS = 17,
    Q_TYPE_IQ3_XXS = 18,
    Q_TYPE_IQ1_S = 19,
    Q_TYPE_IQ4_NL = 20,
    Q_TYPE_IQ3_S = 21,
    Q_TYPE_IQ2_S = 22,
    Q_TYPE_IQ4_XS = 23,
    Q_TYPE_I8 = 24,
    Q_TYPE_I16 = 25,
    Q_TYPE_I32 = 26,
    Q_TYPE_I64 = 27,
    Q_TYPE_F64 = 28,
    Q_TYPE_IQ1_M = 29,
    Q_TYPE_BF16 = 30,
    /* 31..33: removed Q4_0_4_4, Q4_0_4_8, Q4_0_8_8 */
    Q_TYPE_TQ1_0 = 34,
    Q_TYPE_TQ2_0 = 35,
    /* 36..38: removed IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8 */
    Q_TYPE_MXFP4 = 39,
    Q_TYPE_COUNT = 40
} q_type;

/* ---- block layouts (ggml-compatible) ---- */
typedef uint16_t q_f16_t;  /* IEEE half bits */
typedef uint16_t q_bf16_t; /* bfloat16 bits */

#define Q_QK4_0 32
#define Q_QK4_1 32
#define Q_QK5_0 32
#define Q_QK5_1 32
#define Q_QK8_0 32
#define Q_QK8_1 32
#define Q_QK_K 256
#define Q_K_SCALE_SIZE 12
#define Q_QK_MXFP4 32

typedef struct { q_f16_t d; uint8_t qs[Q_QK4_0 / 2]; } block_q4_0;
typedef struct { q_f16_t d, m; uint8_t qs[Q_QK4_1 / 2]; } block_q4_1;
typedef struct { q_f16_t d; uint8_t qh[4]; uint8_t qs[Q_QK5_0 / 2]; } block_q5_0;
typedef struct { q_f16_t d, m; uint8_t qh[4]; uint8_t qs[Q_QK5_1 / 2]; } block_q5_1;
typedef struct { q_f16_t d; int8_t qs[Q_QK8_0]; } block_q8_0;
typedef struct { q_f16_t d, s; int8_t qs[Q_QK8_1]; } block_q8_1; /* s = d * sum(qs) */
typedef struct { uint8_t scales[Q_QK_K / 16]; uint8_t qs[Q_QK_K / 4]; q_f16_t d, dmin; } block_q2_K;
typedef struct { uint8_t hmask[Q_QK_K / 8]; uint8_t qs[Q_QK_K / 4]; uint8_t scales[12]; q_f16_t d; } block_q3_K;
typedef struct { q_f16_t d, dmin; uint8_t scales[Q_K_SCALE_SIZE]; uint8_t qs[Q_QK_K / 2]; } block_q4_K;
typedef struct { q_f16_t d, dmin; uint8_t scales[Q_K_SCALE_SIZE]; uint8_t qh[Q_QK_K / 8]; uint8_t qs[Q_QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[Q_QK_K / 2]; uint8_t qh[Q_QK_K / 4]; int8_t scales[Q_QK_K / 16]; q_f16_t d; } block_q6_K;
typedef struct { float d; int8_t qs[Q_QK_K]; int16_t bsums[Q_QK_K / 16]; } block_q8_K;
typedef struct { uint8_t e; uint8_t qs[Q_QK_MXFP4 / 2]; } block_mxfp4; /* e: E8M0 scale; qs: E2M1 codes */

static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");
static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 layout");

/* ---- half / bfloat16 conversion (IEEE round-to-nearest-even) ---- */
static inline float q_f16_to_f32(q_f16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline q_f16_t q_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (q_f16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (q_f16_t)(sign | 0x7c00); /* overflow -> inf */
    if (absx < 0x38800000u) { /* subnormal or zero in half */
        if (absx < 0x33000000u) return (q_f16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 + (113 - e) */
        uint32_t hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1))) hm++;
        return (q_f16_t)(sign | hm);
    }
    uint32_t h = ((absx >> 13) - (112u << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (q_f16_t)(sign | h);
}

static inline float q_bf16_to_f32(q_bf16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline q_bf16_t q_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (q_bf16_t)((x >> 16) | 64); /* quiet nan */
    return (q_bf16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

/* ---- E8M0 (MXFP4 block scale) ----
 * 2^(e - 128) exactly, for every byte e: ggml's GGML_E8M0_TO_FP32_HALF,
 * half the OCP scale 2^(e - 127) because kvalues_mxfp4 holds the E2M1
 * values doubled. e = 0 and 1 give the float subnormals 2^-128 and 2^-127;
 * e = 255 gives 2^127 (like ggml, no NaN: OCP's NaN encoding is ignored). */
static inline float q_e8m0_to_f32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ---- KV cache rows: Q8P, 9.5 bits per value ----
 * The KV cache's compact row format (kiln's own, not a GGUF type). A block
 * holds 32 floats in 38 bytes (F16: 64, Q8_0: 34): an F32 scale
 * d = amax / 180 and the integers q_i = round(x_i / d), clamped to
 * [-180, 180] (361 levels: 1.4x finer than Q8_0's 255). The values i and
 * i + 16 (i < 16) share one 17-bit code c_i = (q_i + 180) * 361 +
 * (q_{i+16} + 180) < 361^2 = 130321 < 2^17, stored as its low 16 bits
 * lo[i] and bit i of hi. Decoding: a = c / 361, b = c % 361,
 * x_i = (a - 180) * d, x_{i+16} = (b - 180) * d (float products).
 * Round trip: |x_i - dequant(x)_i| <= d / 2 plus the product's rounding
 * (at most 180 d 2^-24); blocks whose scale would be
 * below FLT_MIN decode as zeros. Why an F32 scale: with an F16 one the
 * q8_0 KV cache missed the reference bounds (one max |d| of 0.61 > 0.6).
 * Non-finite inputs give finite but meaningless codes. Plain C, so every
 * kernel set gives the same bytes. */
#define Q_QKV8P 32
typedef struct { uint16_t d[2]; uint16_t hi; uint16_t lo[Q_QKV8P / 2]; } block_kv8p; /* d: float bits (memcpy) */
static_assert(sizeof(block_kv8p) == 38, "block_kv8p layout");

/* Bytes of a Q8P row of n values; 0 when n is not a multiple of 32. */
size_t tensor_kv8p_row_size(int64_t n);
/* Quantizes n floats (n % 32 == 0) into tensor_kv8p_row_size(n) bytes at dst. */
void tensor_kv8p_quantize(const float *src, void *dst, int64_t n);
/* Decodes a Q8P row of n values into floats (q * d in float). */
void tensor_kv8p_dequantize(const void *src, float *dst, int64_t n);
/* Decodes a Q8P row to F16, for
 * the F16 attention tile kernel: q_f32_to_f16 of the float decode. */
void tensor_kv8p_dequantize_f16(const void *src, q_f16_t *dst, int64_t n);
/* The scale of a block (its F32 d). */
static inline float tensor_kv8p_scale(const block_kv8p *b) {
    float d;
    memcpy(&d, b->d, sizeof d);
    return d;
}

/* ---- traits ---- */
typedef void (*q_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*q_from_float_fn)(const float *src, void *dst, int64_t n);
typedef void (*q_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);

typedef struct q_traits {
    const char *name;        /* "Q4_K", "F16", ... ; NULL for unused ids */
    int64_t blck_size;       /* elements per block */
    size_t type_size;        /* bytes per block */
    bool is_quantized;
    q_to_float_fn to_float;  /* NULL when kiln cannot dequantize it */
    q_from_float_fn from_float; /* reference quantizer; NULL if none */
    q_vec_dot_fn vec_dot;    /* scalar reference; NULL if none */
    q_type vec_dot_type;     /* activation type for vec_dot */
} q_traits;

/* NULL for ids outside the enum or unused (removed) ids. */
const q_traits *q_get_traits(uint32_t type);
const char *q_type_name(uint32_t type); /* "?" when unknown */
/* Case-insensitive name lookup ("q4_k" -> Q_TYPE_Q4_K). */
bool q_type_from_name(const char *name, q_type *out);
/* Bytes of a row of n elements; 0 when n is not a whole number of blocks. */
size_t q_row_size(q_type t, int64_t n);
/* Whether kiln can compute with this type (to_float + vec_dot present). */
bool q_type_supported(uint32_t type);

/* ---- kernel sets ---- */

/* A multi-row, multi-column tile kernel: for r < n_rows, c < n_cols:
 *   y[c * ldy + r] = vec_dot(K, w + r * w_stride, a + c * a_stride)
 * bit for bit (same reduction order as this set's vec_dot). */
typedef void (*q_gemm_fn)(int64_t K, const void *w, size_t w_stride, int n_rows, const void *a,
                          size_t a_stride, int n_cols, float *y, int64_t ldy);

/* One attention tile for G query heads that share a KV head, with an online
 * softmax: q is [G][hd] floats; k and v are n rows of hd F16 values (the
 * tile's keys and values, consecutive positions); the running state per
 * head g is m[g] (max score, -INFINITY at the start), l[g] (sum of
 * exponentials) and acc[g][hd] (weighted sum of values). s is scratch of
 * G * n floats. Scores are dot(q, k) * scale. Within one kernel set the
 * result depends only on the inputs (batch-invariant). */
typedef void (*q_attn_tile_fn)(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k, const q_f16_t *v,
                               float scale, float *m, float *l, float *acc, float *s);
void tensor_attn_tile_f16_ref(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k, const q_f16_t *v,
                              float scale, float *m, float *l, float *acc, float *s);

/* out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x). out may alias gate. */
typedef void (*q_swiglu_fn)(int64_t n, float *out, const float *gate, const float *up);
void tensor_swiglu_ref(int64_t n, float *out, const float *gate, const float *up);

typedef struct tensor_ops {
    q_attn_tile_fn attn_tile_f16;            /* attention over an F16 KV tile */
    q_swiglu_fn swiglu;
    kn_cpu_level level;
    bool vnni;                               /* AVX-512 VNNI in use */
    q_vec_dot_fn vec_dot[Q_TYPE_COUNT];      /* by weight type; NULL = unsupported */
    q_gemm_fn gemm[Q_TYPE_COUNT];            /* by weight type; NULL = loop over vec_dot */
    q_from_float_fn quantize[Q_TYPE_COUNT];  /* by activation type: fast quantize of activations */
} tensor_ops;

/* Fills ops for a kernel set the CPU supports (callers use kn_cpu_select()). */
void tensor_ops_init(tensor_ops *ops, kn_cpu_level lvl);

/* ---- matmul ----
 * Weights w: M rows of K elements of type wtype (row-major, rows contiguous).
 * Activations: n_cols columns (tokens) of K floats, quantized once with
 * tensor_act_quantize into the weight type's activation type, then reused by
 * every matmul that reads the same input (e.g. Q, K and V).
 * Output: y[c * ldy + m] for column c and row m. */
size_t tensor_act_bytes(q_type wtype, int64_t K, int64_t n_cols);
void tensor_act_quantize(const tensor_ops *ops, q_type wtype, const float *x, int64_t ldx, int64_t K,
                         int64_t n_cols, void *act);
/* Rows [row_lo, row_hi) only: for callers already running inside a pool job. */
void tensor_matmul_rows(const tensor_ops *ops, q_type wtype, const void *w, int64_t K, int64_t row_lo,
                        int64_t row_hi, const void *act, int64_t n_cols, float *y, int64_t ldy);
/* All M rows, split across the pool's threads in contiguous row ranges. */
void tensor_matmul(const tensor_ops *ops, kn_pool *pool, q_type wtype, const void *w, int64_t K, int64_t M,
                   const void *act, int64_t n_cols, float *y, int64_t ldy);

/* Measures read bandwidth (bytes/s) over a buffer of `bytes`, using every
 * thread of the pool. Used by the benchmarks to report roofline fractions. */
double tensor_measure_bandwidth(kn_pool *pool, size_t bytes);
/* Measures the compute peak (operations/s, a multiply-add counting 2) of
 * kernel set lvl on every thread of the pool: int8 dot products (int8 = true;
 * VNNI vpdpbusd when present) or fp32 FMA. 0 for the generic set. */
double tensor_measure_peak(kn_pool *pool, kn_cpu_level lvl, bool int8);

#endif
