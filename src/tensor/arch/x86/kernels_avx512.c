/*
 * kernels_avx512.c — the AVX-512 kernel set (F/BW/VL/DQ + VNNI; compiled
 * with those flags only, reached through tensor_x86_avx512_init).
 *
 * Integer dots use VNNI: vpdpbusd (u8 x s8 -> int32, no int16 saturation)
 * and vpdpwssd for scaled int16 pairs, on 256-bit vectors, which gives 32
 * registers and 16-pair gemm tiles. Float kernels use 16-wide FMA with
 * masked tails. See x86.h for the numerics contract.
 */
#include "x86.h"

#include <immintrin.h>
#include <string.h>

static inline __attribute__((always_inline)) __m256i x_dot(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

static inline __attribute__((always_inline)) __m256i x_dot_sc(__m256i acc, __m256i u, __m256i s, __m256i sc16) {
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc16);
}

/* 32 registers: 16 pairs per gemm tile. */
#define X_MV_R 8
#define X_MM_R 4
#define X_MM_C 4
#define X_CB 64

#include "x86_quant.h"

/* ---- float kernels: 16-wide ---- */
typedef __m512 xf_vec;
#define XF_W 16
#define XF_MV_R 4
#define XF_MM_R 4
#define XF_MM_C 4

XAI xf_vec xf_zero(void) { return _mm512_setzero_ps(); }
XAI xf_vec xf_fma(xf_vec a, xf_vec b, xf_vec c) { return _mm512_fmadd_ps(a, b, c); }
XAI float xf_hsum(xf_vec v) {
    const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    return x_hsum_ps256(s);
}

XAI xf_vec xf_load(int kind, const uint8_t *p, int n) {
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    if (kind == 0) return _mm512_maskz_loadu_ps(m, (const float *)p);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (kind == 1) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#include "x86_float.h"

void tensor_x86_avx512_init(tensor_ops *ops, bool vnni) {
    if (vnni) x_quant_install(ops);
    xf_install(ops);
}

/* ---- peak probes ---- */
#define X_BARRIER(v) __asm__ volatile("" : "+v"(v))

uint64_t tensor_x86_avx512_peak_int8(int64_t iters) {
    __m512i acc[12];
    __m512i u = _mm512_set1_epi8(1), s = _mm512_set1_epi8(2);
    XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    for (int64_t it = 0; it < iters; it++) {
        X_BARRIER(u);
        X_BARRIER(s);
        XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], u, s);
    }
    __m512i t = acc[0];
    for (int i = 1; i < 12; i++) t = _mm512_add_epi32(t, acc[i]);
    X_BARRIER(t);
    return (uint64_t)iters * 12u * 64u * 2u;
}

uint64_t tensor_x86_avx512_peak_fma(int64_t iters) {
    __m512 acc[12];
    __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++) {
        X_BARRIER(m);
        XUNROLL for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    __m512 t = acc[0];
    for (int i = 1; i < 12; i++) t = _mm512_add_ps(t, acc[i]);
    X_BARRIER(t);
    return (uint64_t)iters * 12u * 16u * 2u;
}
