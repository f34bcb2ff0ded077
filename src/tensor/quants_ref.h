/*
 * quants_ref.h — internal to src/tensor: the scalar reference kernels
 * (quants_ref.c: F32/F16/BF16 and the 32-element block types, MXFP4 included;
 * quants_ref_k.c: the 256-element K-quants and Q8_K).
 *
 * These are the generic kernel set and the test oracle of the SIMD kernels.
 * They are reached through the traits table (q_get_traits) and may also be
 * called directly by the other sources of src/tensor.
 *
 * Conventions, for every function below:
 *  - n counts elements and is a multiple of the type's block size (asserted);
 *  - buffers are borrowed, never freed, and must not overlap;
 *  - nothing allocates; everything is thread-safe (no state).
 *
 * MXFP4's quantizer is ggml's quantize_row_mxfp4_ref: e from the block's
 * largest magnitude, e = floor(log2(amax)) - 2 + 127 (0 for an all-zero
 * block), then per element the first code of least |kvalues[i] * d - x|.
 *
 * Quantizers (q_ref_quantize_*) are byte-compatible with ggml's reference
 * quantizers quantize_row_*_ref (no importance matrix): a file written with
 * them holds what llama.cpp's quantizer writes from the same floats.
 * Q8_K activations follow ggml exactly: per 256 block, iscale = -127/max
 * (max = the element of largest magnitude, sign kept), q = min(127,
 * nearest_int(iscale*x)), d = 1/iscale, bsums = sums of 16 quants.
 *
 * Dot products (q_ref_vec_dot_<w>_<a>) compute, in this fixed order:
 *  - F32/F16/BF16: sum over i in increasing order of (double)w[i]*(double)a[i]
 *    in double, rounded to float once at the end;
 *  - block types: per block b in increasing order, an exact int32 sum
 *    isum of (weight quant * activation quant) (K-quants: of sub-block scale *
 *    the sub-block's int sum), then one float update
 *      Q4_0/Q5_0/Q8_0 x Q8_0:  acc += (dw * da) * (float)isum
 *      MXFP4 x Q8_0:           acc += (dw * da) * (float)isum, dw = 2^(e - 128)
 *                              and isum over the doubled codebook values
 *      Q4_1/Q5_1 x Q8_1:       acc += (dw * da) * (float)isum + mw * sa
 *      Q3_K/Q6_K x Q8_K:       acc += (dw * da) * (float)isum
 *      Q2_K/Q4_K/Q5_K x Q8_K:  acc += (dw * da) * (float)isum - (dminw * da) * (float)msum
 *    where dw/mw/dminw are the fp16 fields as float, da/sa those of the
 *    activation block (Q8_K: its float d), msum = sum over sub-blocks of
 *    min scale * bsum of the sub-block's elements, and acc starts at 0.0f.
 *    A SIMD kernel that keeps exact integer sums and this float order
 *    reproduces these results bit for bit.
 */
#ifndef KILN_TENSOR_QUANTS_REF_H
#define KILN_TENSOR_QUANTS_REF_H

#include "kiln/tensor.h"

/* ggml's nearest_int: round half to even via the 1.5*2^23 trick, valid for
 * |x| <= 4194303. */
static inline int q_ref_nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

/* ggml's kvalues_mxfp4 (ggml-common.h, kvalues_fp4): the E2M1 values
 * {0, 0.5, 1, 1.5, 2, 3, 4, 6} and their negatives, doubled to integers;
 * index = the 4-bit code (bit 3 the sign). Defined in quants_ref.c. */
extern const int8_t q_kvalues_mxfp4[16];

/* ---- dequantize (to_float) ---- */
void q_ref_dequantize_f32(const void *src, float *dst, int64_t n);
void q_ref_dequantize_f16(const void *src, float *dst, int64_t n);
void q_ref_dequantize_bf16(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q4_0(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q4_1(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q5_0(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q5_1(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q8_0(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q8_1(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q2_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q3_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q4_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q5_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q6_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_q8_K(const void *src, float *dst, int64_t n);
void q_ref_dequantize_mxfp4(const void *src, float *dst, int64_t n);

/* ---- quantize (from_float) ---- */
void q_ref_quantize_f32(const float *src, void *dst, int64_t n);
void q_ref_quantize_f16(const float *src, void *dst, int64_t n);
void q_ref_quantize_bf16(const float *src, void *dst, int64_t n);
void q_ref_quantize_q4_0(const float *src, void *dst, int64_t n);
void q_ref_quantize_q4_1(const float *src, void *dst, int64_t n);
void q_ref_quantize_q5_0(const float *src, void *dst, int64_t n);
void q_ref_quantize_q5_1(const float *src, void *dst, int64_t n);
void q_ref_quantize_q8_0(const float *src, void *dst, int64_t n);
void q_ref_quantize_q8_1(const float *src, void *dst, int64_t n);
void q_ref_quantize_q2_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_q3_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_q4_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_q5_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_q6_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_q8_K(const float *src, void *dst, int64_t n);
void q_ref_quantize_mxfp4(const float *src, void *dst, int64_t n);

/* ---- dot products: weight row w (first type) x activation row a ---- */
void q_ref_vec_dot_f32(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_f16(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_bf16(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q2_K_q8_K(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q3_K_q8_K(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q4_K_q8_K(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q5_K_q8_K(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_q6_K_q8_K(int64_t n, float *s, const void *w, const void *a);
void q_ref_vec_dot_mxfp4_q8_0(int64_t n, float *s, const void *w, const void *a);

/* Unpacks the 6-bit scale j and min j (j < 8) of a Q4_K/Q5_K block. */
static inline void q_ref_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Unpacks the 16 signed 6-bit scales (already minus 32) of a Q3_K block. */
static inline void q_ref_scales_q3_K(const uint8_t *packed, int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (packed[j] & 0xF) : (packed[j - 8] >> 4);
        int hi = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

#endif
