/*
 * kvquant.c — the KV cache's Q8P row format (see kiln/tensor.h): 32 values in
 * 38 bytes, 361 levels per value, two values per 17-bit code.
 */
#include "kiln/tensor.h"

#include <float.h>
#include <math.h>

#define KV8P_L 180                /* |q| <= 180 */
#define KV8P_N (2 * KV8P_L + 1)   /* 361 levels */
#define KV8P_HALF (Q_QKV8P / 2)

size_t tensor_kv8p_row_size(int64_t n) {
    if (n < 0 || n % Q_QKV8P) return 0;
    return (size_t)(n / Q_QKV8P) * sizeof(block_kv8p);
}

/* round(x * id) clamped to [-L, L], as the offset 0..2L; NaN maps to 0. */
static inline uint32_t kv8p_level(float x, float id) {
    float v = roundf(x * id);
    if (!(v >= -(float)KV8P_L)) v = -(float)KV8P_L;
    if (v > (float)KV8P_L) v = (float)KV8P_L;
    return (uint32_t)((int32_t)v + KV8P_L);
}

void tensor_kv8p_quantize(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QKV8P == 0);
    block_kv8p *y = dst;
    for (int64_t b = 0; b < n / Q_QKV8P; b++) {
        const float *x = src + b * Q_QKV8P;
        float amax = 0.0f;
        for (int i = 0; i < Q_QKV8P; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / (float)KV8P_L;
        const float id = d >= FLT_MIN && isfinite(d) ? 1.0f / d : 0.0f;
        uint16_t hi = 0;
        for (int i = 0; i < KV8P_HALF; i++) {
            const uint32_t c = kv8p_level(x[i], id) * KV8P_N + kv8p_level(x[i + KV8P_HALF], id);
            y[b].lo[i] = (uint16_t)(c & 0xffffu);
            hi |= (uint16_t)((c >> 16) << i);
        }
        const float ds = id != 0.0f ? d : 0.0f;
        memcpy(y[b].d, &ds, sizeof ds);
        y[b].hi = hi;
    }
}

void tensor_kv8p_dequantize(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QKV8P == 0);
    const block_kv8p *x = src;
    for (int64_t b = 0; b < n / Q_QKV8P; b++) {
        const float d = tensor_kv8p_scale(&x[b]);
        float *y = dst + b * Q_QKV8P;
        for (int i = 0; i < KV8P_HALF; i++) {
            const uint32_t c = x[b].lo[i] | (uint32_t)((x[b].hi >> i) & 1u) << 16;
            const uint32_t a = c / KV8P_N, r = c - a * KV8P_N;
            y[i] = (float)((int32_t)a - KV8P_L) * d;
            y[i + KV8P_HALF] = (float)((int32_t)r - KV8P_L) * d;
        }
    }
}

void tensor_kv8p_dequantize_f16(const void *src, q_f16_t *dst, int64_t n) {
    KN_ASSERT(n % Q_QKV8P == 0);
    float tmp[Q_QKV8P];
    for (int64_t b = 0; b < n / Q_QKV8P; b++) {
        /* decode a block to floats (exact), then convert: two simple loops */
        tensor_kv8p_dequantize((const block_kv8p *)src + b, tmp, Q_QKV8P);
        for (int i = 0; i < Q_QKV8P; i++) dst[b * Q_QKV8P + i] = q_f32_to_f16(tmp[i]);
    }
}
