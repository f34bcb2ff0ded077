/*
 * kernels_avx2.c — the AVX2+FMA+F16C kernel set (compiled with those flags
 * only; reached through tensor_x86_avx2_init when the CPU has them).
 *
 * Integer dots use maddubs (u8 x s8 -> saturating int16 pairs) and madd;
 * every caller keeps the pair sums within int16, so they are exact. Float
 * kernels use 8-wide FMA. See x86.h for the numerics contract.
 */
#include "arch/x86/x86.h"

#include <immintrin.h>
#include <string.h>

X_INLINE __m256i x_dot(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

X_INLINE __m256i x_dot_sc(__m256i acc, __m256i u, __m256i s, __m256i sc16) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16));
}

/* s8 x s8 as |w| x sign(a, w): |a| <= 127 keeps maddubs pairs within int16. */
X_INLINE __m256i x_q8_u(__m256i q) { return _mm256_abs_epi8(q); }
X_INLINE __m256i x_q8_bias(__m256i a) {
    (void)a;
    return _mm256_setzero_si256();
}
X_INLINE __m256i x_q8_dot(__m256i u, __m256i q, __m256i a, __m256i bias) {
    return x_dot(bias, u, _mm256_sign_epi8(a, q));
}

/* 16 ymm registers: 8 pairs per tile (the K-quant tiles hold at most 8). */
#define X_MV_R 8
#define X_MM_R 4
#define X_MM_C 2
#define X_CB 64

#include "arch/x86/x86_quant.h"

X_QUANT_KERNELS(q4_0, Q_QK4_0)
X_QUANT_KERNELS(q8_0, Q_QK8_0)
X_QUANT_KERNELS(q4_K, Q_QK_K)
X_QUANT_KERNELS(q5_K, Q_QK_K)
X_QUANT_KERNELS(q6_K, Q_QK_K)
X_QUANT_KERNELS(mxfp4, Q_QK_MXFP4)

/* ---- float kernels: 8-wide ---- */
typedef __m256 xf_vec;
#define XF_W 8
#define XF_MV_R 4
#define XF_MM_R 4
#define XF_MM_C 2

XAI xf_vec xf_zero(void) { return _mm256_setzero_ps(); }
XAI xf_vec xf_fma(xf_vec a, xf_vec b, xf_vec c) { return _mm256_fmadd_ps(a, b, c); }
XAI float xf_hsum(xf_vec v) { return x_hsum_ps256(v); }

XAI xf_vec xf_load_full(int kind, const uint8_t *p) {
    if (kind == 0) return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (kind == 1) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

XAI xf_vec xf_load(int kind, const uint8_t *p, int n) {
    if (n < XF_W) { /* tail: zero-filled copy */
        uint8_t t[32] = {0};
        memcpy(t, p, (size_t)n * (kind == 0 ? 4 : 2));
        return xf_load_full(kind, t);
    }
    return xf_load_full(kind, p);
}

#include "arch/x86/x86_float.h"

X_NOSAN void tensor_x86_avx2_init(tensor_ops *ops) {
    ops->vec_dot[Q_TYPE_Q4_0] = q4_0_vec_dot;
    ops->gemm[Q_TYPE_Q4_0] = q4_0_gemm;
    ops->vec_dot[Q_TYPE_Q8_0] = q8_0_vec_dot;
    ops->gemm[Q_TYPE_Q8_0] = q8_0_gemm;
    ops->vec_dot[Q_TYPE_Q4_K] = q4_K_vec_dot;
    ops->gemm[Q_TYPE_Q4_K] = q4_K_gemm;
    ops->vec_dot[Q_TYPE_Q5_K] = q5_K_vec_dot;
    ops->gemm[Q_TYPE_Q5_K] = q5_K_gemm;
    ops->vec_dot[Q_TYPE_Q6_K] = q6_K_vec_dot;
    ops->gemm[Q_TYPE_Q6_K] = q6_K_gemm;
    ops->vec_dot[Q_TYPE_MXFP4] = mxfp4_vec_dot;
    ops->gemm[Q_TYPE_MXFP4] = mxfp4_gemm;
    x_quantizers_install(ops);
    xf_install(ops);
}

/* ---- peak probes ---- */
#define X_BARRIER(v) __asm__ volatile("" : "+x"(v))

X_NOSAN uint64_t tensor_x86_avx2_peak_int8(int64_t iters) {
    __m256i acc[12];
    __m256i u = _mm256_set1_epi8(1), s = _mm256_set1_epi8(2);
    const __m256i one = _mm256_set1_epi16(1);
    XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_epi32(i);
    for (int64_t it = 0; it < iters; it++) {
        X_BARRIER(u);
        X_BARRIER(s);
        XUNROLL for (int i = 0; i < 12; i++)
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), one));
    }
    __m256i t = acc[0];
    for (int i = 1; i < 12; i++) t = _mm256_add_epi32(t, acc[i]);
    X_BARRIER(t);
    return (uint64_t)iters * 12u * 32u * 2u;
}

X_NOSAN uint64_t tensor_x86_avx2_peak_fma(int64_t iters) {
    __m256 acc[12];
    __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++) {
        X_BARRIER(m);
        XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    }
    __m256 t = acc[0];
    for (int i = 1; i < 12; i++) t = _mm256_add_ps(t, acc[i]);
    X_BARRIER(t);
    return (uint64_t)iters * 12u * 8u * 2u;
}
