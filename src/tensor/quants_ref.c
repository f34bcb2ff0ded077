/*
 * quants_ref.c — scalar reference kernels for the float types (F32, F16,
 * BF16) and the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4
 * and the activation type Q8_1). See quants_ref.h for the contract (ggml
 * byte-compatibility of the quantizers, fixed order of the dot products).
 */
#include "quants_ref.h"

#include <float.h>
#include <math.h>

/* ===================== float types ===================== */

void q_ref_dequantize_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void q_ref_quantize_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void q_ref_dequantize_f16(const void *src, float *dst, int64_t n) {
    const q_f16_t *x = src;
    for (int64_t i = 0; i < n; i++) dst[i] = q_f16_to_f32(x[i]);
}

void q_ref_quantize_f16(const float *src, void *dst, int64_t n) {
    q_f16_t *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = q_f32_to_f16(src[i]);
}

void q_ref_dequantize_bf16(const void *src, float *dst, int64_t n) {
    const q_bf16_t *x = src;
    for (int64_t i = 0; i < n; i++) dst[i] = q_bf16_to_f32(x[i]);
}

void q_ref_quantize_bf16(const float *src, void *dst, int64_t n) {
    q_bf16_t *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = q_f32_to_bf16(src[i]);
}

void q_ref_vec_dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * (double)y[i];
    *s = (float)sum;
}

void q_ref_vec_dot_f16(int64_t n, float *s, const void *w, const void *a) {
    const q_f16_t *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)q_f16_to_f32(x[i]) * (double)q_f16_to_f32(y[i]);
    *s = (float)sum;
}

void q_ref_vec_dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const q_bf16_t *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)q_bf16_to_f32(x[i]) * (double)q_bf16_to_f32(y[i]);
    *s = (float)sum;
}

/* ===================== Q4_0: d * (q - 8), q in 0..15 ===================== */

/* The element of largest magnitude, sign kept (the first one on ties). */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

void q_ref_quantize_q4_0(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK4_0 == 0);
    block_q4_0 *y = dst;
    for (int64_t i = 0; i < n / Q_QK4_0; i++) {
        const float *x = src + i * Q_QK4_0;
        const float d = signed_absmax(x, Q_QK4_0) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        for (int j = 0; j < Q_QK4_0 / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + Q_QK4_0 / 2] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void q_ref_dequantize_q4_0(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK4_0 == 0);
    const block_q4_0 *x = src;
    for (int64_t i = 0; i < n / Q_QK4_0; i++) {
        const float d = q_f16_to_f32(x[i].d);
        float *y = dst + i * Q_QK4_0;
        for (int j = 0; j < Q_QK4_0 / 2; j++) {
            y[j] = (float)((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + Q_QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* ===================== Q4_1: d * q + m ===================== */

static void minmax(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

void q_ref_quantize_q4_1(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK4_1 == 0);
    block_q4_1 *y = dst;
    for (int64_t i = 0; i < n / Q_QK4_1; i++) {
        const float *x = src + i * Q_QK4_1;
        float mn, mx;
        minmax(x, Q_QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        y[i].m = q_f32_to_f16(mn);
        for (int j = 0; j < Q_QK4_1 / 2; j++) {
            int q0 = (int)((x[j] - mn) * id + 0.5f), q1 = (int)((x[j + Q_QK4_1 / 2] - mn) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void q_ref_dequantize_q4_1(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK4_1 == 0);
    const block_q4_1 *x = src;
    for (int64_t i = 0; i < n / Q_QK4_1; i++) {
        const float d = q_f16_to_f32(x[i].d), m = q_f16_to_f32(x[i].m);
        float *y = dst + i * Q_QK4_1;
        for (int j = 0; j < Q_QK4_1 / 2; j++) {
            y[j] = (float)(x[i].qs[j] & 0x0F) * d + m;
            y[j + Q_QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* ===================== Q5_0: d * (q - 16), q in 0..31 ===================== */

void q_ref_quantize_q5_0(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK5_0 == 0);
    block_q5_0 *y = dst;
    for (int64_t i = 0; i < n / Q_QK5_0; i++) {
        const float *x = src + i * Q_QK5_0;
        const float d = signed_absmax(x, Q_QK5_0) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < Q_QK5_0 / 2; j++) {
            int q0 = (int)(x[j] * id + 16.5f), q1 = (int)(x[j + Q_QK5_0 / 2] * id + 16.5f);
            if (q0 > 31) q0 = 31;
            if (q1 > 31) q1 = 31;
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((uint32_t)(q0 >> 4) & 1u) << j;
            qh |= ((uint32_t)(q1 >> 4) & 1u) << (j + Q_QK5_0 / 2);
        }
        for (int b = 0; b < 4; b++) y[i].qh[b] = (uint8_t)(qh >> (8 * b));
    }
}

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

void q_ref_dequantize_q5_0(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK5_0 == 0);
    const block_q5_0 *x = src;
    for (int64_t i = 0; i < n / Q_QK5_0; i++) {
        const float d = q_f16_to_f32(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        float *y = dst + i * Q_QK5_0;
        for (int j = 0; j < Q_QK5_0 / 2; j++) {
            int q0 = (x[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            y[j] = (float)(q0 - 16) * d;
            y[j + Q_QK5_0 / 2] = (float)(q1 - 16) * d;
        }
    }
}

/* ===================== Q5_1: d * q + m, q in 0..31 ===================== */

void q_ref_quantize_q5_1(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK5_1 == 0);
    block_q5_1 *y = dst;
    for (int64_t i = 0; i < n / Q_QK5_1; i++) {
        const float *x = src + i * Q_QK5_1;
        float mn, mx;
        minmax(x, Q_QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        y[i].m = q_f32_to_f16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < Q_QK5_1 / 2; j++) {
            /* ggml does not clamp here; the values are in 0..31 by construction */
            int q0 = (uint8_t)(int)((x[j] - mn) * id + 0.5f);
            int q1 = (uint8_t)(int)((x[j + Q_QK5_1 / 2] - mn) * id + 0.5f);
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((uint32_t)(q0 >> 4) & 1u) << j;
            qh |= ((uint32_t)(q1 >> 4) & 1u) << (j + Q_QK5_1 / 2);
        }
        for (int b = 0; b < 4; b++) y[i].qh[b] = (uint8_t)(qh >> (8 * b));
    }
}

void q_ref_dequantize_q5_1(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK5_1 == 0);
    const block_q5_1 *x = src;
    for (int64_t i = 0; i < n / Q_QK5_1; i++) {
        const float d = q_f16_to_f32(x[i].d), m = q_f16_to_f32(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        float *y = dst + i * Q_QK5_1;
        for (int j = 0; j < Q_QK5_1 / 2; j++) {
            int q0 = (x[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            y[j] = (float)q0 * d + m;
            y[j + Q_QK5_1 / 2] = (float)q1 * d + m;
        }
    }
}

/* ===================== Q8_0: d * q, q in -127..127 ===================== */

static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

void q_ref_quantize_q8_0(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        const float *x = src + i * Q_QK8_0;
        const float d = absmax(x, Q_QK8_0) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        for (int j = 0; j < Q_QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void q_ref_dequantize_q8_0(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        const float d = q_f16_to_f32(x[i].d);
        for (int j = 0; j < Q_QK8_0; j++) dst[i * Q_QK8_0 + j] = (float)x[i].qs[j] * d;
    }
}

/* ===================== Q8_1: Q8_0 plus s = d * sum(q) ===================== */

void q_ref_quantize_q8_1(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK8_1 == 0);
    block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / Q_QK8_1; i++) {
        const float *x = src + i * Q_QK8_1;
        const float d = absmax(x, Q_QK8_1) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < Q_QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = q_f32_to_f16((float)sum * d);
    }
}

void q_ref_dequantize_q8_1(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK8_1 == 0);
    const block_q8_1 *x = src;
    for (int64_t i = 0; i < n / Q_QK8_1; i++) {
        const float d = q_f16_to_f32(x[i].d);
        for (int j = 0; j < Q_QK8_1; j++) dst[i * Q_QK8_1 + j] = (float)x[i].qs[j] * d;
    }
}

/* ===================== MXFP4: kvalues[code] * 2^(e - 128) ===================== */

const int8_t q_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* ggml's e = (uint8_t)(floorf(log2f(amax)) - 2 + 127) for amax > 0, with
 * the float -> uint8_t conversion done as on x86 (gcc and clang: truncate
 * to int32 with cvttss2si, keep the low byte). C leaves that conversion
 * undefined outside 0..255, which happens for amax < 2^-125 (bytes 232..255)
 * and for an infinite amax (the integer-indefinite 0x80000000: byte 0). */
static uint8_t mxfp4_exponent(float amax) {
    if (!(amax > 0.0f)) return 0;
    const float v = floorf(log2f(amax)) - 2 + 127;
    if (!(v < 2147483648.0f)) return 0; /* +inf */
    return (uint8_t)(uint32_t)(int32_t)v;
}

/* The first code of least |kvalues[i] * d - x| (ggml's best_index_mxfp4):
 * a tie goes to the lower index, so -0 (code 8) is never chosen. */
static uint8_t mxfp4_best_code(float x, float d) {
    uint8_t best = 0;
    float best_err = fabsf((float)q_kvalues_mxfp4[0] * d - x);
    for (uint8_t i = 1; i < 16; i++) {
        const float err = fabsf((float)q_kvalues_mxfp4[i] * d - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return best;
}

void q_ref_quantize_mxfp4(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_MXFP4 == 0);
    block_mxfp4 *y = dst;
    for (int64_t i = 0; i < n / Q_QK_MXFP4; i++) {
        const float *x = src + i * Q_QK_MXFP4;
        float amax = 0.0f;
        for (int j = 0; j < Q_QK_MXFP4; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        const uint8_t e = mxfp4_exponent(amax);
        const float d = q_e8m0_to_f32_half(e);
        y[i].e = e;
        for (int j = 0; j < Q_QK_MXFP4 / 2; j++)
            y[i].qs[j] =
                (uint8_t)(mxfp4_best_code(x[j], d) | (mxfp4_best_code(x[j + Q_QK_MXFP4 / 2], d) << 4));
    }
}

void q_ref_dequantize_mxfp4(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_MXFP4 == 0);
    const block_mxfp4 *x = src;
    for (int64_t i = 0; i < n / Q_QK_MXFP4; i++) {
        const float d = q_e8m0_to_f32_half(x[i].e);
        float *y = dst + i * Q_QK_MXFP4;
        for (int j = 0; j < Q_QK_MXFP4 / 2; j++) {
            y[j] = (float)q_kvalues_mxfp4[x[i].qs[j] & 0x0F] * d;
            y[j + Q_QK_MXFP4 / 2] = (float)q_kvalues_mxfp4[x[i].qs[j] >> 4] * d;
        }
    }
}

/* ===================== dot products ===================== */

void q_ref_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_0 / 2; j++) {
            isum += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + Q_QK8_0 / 2];
        }
        acc += (q_f16_to_f32(x[i].d) * q_f16_to_f32(y[i].d)) * (float)isum;
    }
    *s = acc;
}

void q_ref_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_1 == 0);
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_1; i++) {
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_1 / 2; j++) {
            isum += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            isum += (x[i].qs[j] >> 4) * y[i].qs[j + Q_QK8_1 / 2];
        }
        acc += (q_f16_to_f32(x[i].d) * q_f16_to_f32(y[i].d)) * (float)isum +
               q_f16_to_f32(x[i].m) * q_f16_to_f32(y[i].s);
    }
    *s = acc;
}

void q_ref_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_0 / 2; j++) {
            int q0 = ((x[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4)) - 16;
            int q1 = ((x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4)) - 16;
            isum += q0 * y[i].qs[j] + q1 * y[i].qs[j + Q_QK8_0 / 2];
        }
        acc += (q_f16_to_f32(x[i].d) * q_f16_to_f32(y[i].d)) * (float)isum;
    }
    *s = acc;
}

void q_ref_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_1 == 0);
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_1; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_1 / 2; j++) {
            int q0 = (x[i].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            int q1 = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            isum += q0 * y[i].qs[j] + q1 * y[i].qs[j + Q_QK8_1 / 2];
        }
        acc += (q_f16_to_f32(x[i].d) * q_f16_to_f32(y[i].d)) * (float)isum +
               q_f16_to_f32(x[i].m) * q_f16_to_f32(y[i].s);
    }
    *s = acc;
}

void q_ref_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    const block_q8_0 *x = w;
    const block_q8_0 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_0; j++) isum += x[i].qs[j] * y[i].qs[j];
        acc += (q_f16_to_f32(x[i].d) * q_f16_to_f32(y[i].d)) * (float)isum;
    }
    *s = acc;
}

void q_ref_vec_dot_mxfp4_q8_0(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK8_0 == 0);
    static_assert(Q_QK_MXFP4 == Q_QK8_0, "MXFP4 and Q8_0 blocks pair one to one");
    const block_mxfp4 *x = w;
    const block_q8_0 *y = a;
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        int32_t isum = 0;
        for (int j = 0; j < Q_QK8_0 / 2; j++) {
            isum += q_kvalues_mxfp4[x[i].qs[j] & 0x0F] * y[i].qs[j];
            isum += q_kvalues_mxfp4[x[i].qs[j] >> 4] * y[i].qs[j + Q_QK8_0 / 2];
        }
        acc += (q_e8m0_to_f32_half(x[i].e) * q_f16_to_f32(y[i].d)) * (float)isum;
    }
    *s = acc;
}
