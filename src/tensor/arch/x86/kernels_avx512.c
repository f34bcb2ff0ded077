/*
 * kernels_avx512.c — the AVX-512 kernel set (F/BW/VL/DQ + VNNI; compiled
 * with those flags only, reached through tensor_x86_avx512_init).
 *
 * Integer dots use VNNI: vpdpbusd (u8 x s8 -> int32, no int16 saturation)
 * and vpdpwssd for scaled int16 pairs, on 512-bit vectors for every block
 * type (Q4_K/Q5_K/Q6_K/Q8_0/Q4_0 tiles below; the 256-bit template only
 * supplies the shared reductions, the float update and the activation
 * quantizers). 32 registers allow 4x4 (row x column) gemm tiles. Float
 * kernels use 16-wide FMA with masked tails. See x86.h for the numerics
 * contract.
 */
#include "x86.h"

#include <immintrin.h>
#include <string.h>

X_INLINE __m256i x_dot(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

X_INLINE __m256i x_dot_sc(__m256i acc, __m256i u, __m256i s, __m256i sc16) {
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc16);
}

/* s8 x s8 as (w + 128) x a - 128 * sum(a): the bias is per activation column. */
X_INLINE __m256i x_q8_u(__m256i q) {
    return _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
}
X_INLINE __m256i x_q8_bias(__m256i a) {
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), a));
}
X_INLINE __m256i x_q8_dot(__m256i u, __m256i q, __m256i a, __m256i bias) {
    (void)q;
    return _mm256_dpbusd_epi32(bias, u, a);
}

/* 32 registers: 16 pairs per gemm tile. */
#define X_MV_R 8
#define X_MM_R 4
#define X_MM_C 4
#define X_CB 64

#include "x86_quant.h"


/* ---- 512-bit Q4_K / Q5_K tiles ----
 * One 64-byte load of qs holds two 32-byte chunks; regrouping their low and
 * high nibbles (shuffle_i64x2) gives zmm W[k] = sub-blocks 2k, 2k+1, i.e. the
 * 64 contiguous activation bytes 64k..64k+63. Scales come from one vpermw
 * each. The exact per-(row, column) int32 lanes are folded to 256 bits and
 * then go through the template's reduction and float update, so the results
 * equal the reference (and the 256-bit kernels) bit for bit. */
X_INLINE void qk45z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr,
                                                              const uint8_t *a, size_t as, int nc, float *y,
                                                              int64_t ldy, const int R, const int C, const int HB) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m512i m4 = _mm512_set1_epi8(0x0F), k16 = _mm512_set1_epi8(16);
    /* int16 lanes 0..15 <- scale 2k, 16..31 <- scale 2k+1; mins: [m0 m0 m1 m1 ...] */
    __m512i sidx[4];
    XUNROLL for (int k = 0; k < 4; k++)
        sidx[k] = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * k)), _mm256_set1_epi16((short)(2 * k + 1)), 1);
    const __m512i midx =
        _mm512_zextsi256_si512(_mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m512i iv[16];
        __m256i mins16[16];
        float dw[16], dm[16], da[16];
        const block_q8_K *yb[16];
        XUNROLL for (int c = 0; c < C; c++) {
            yb[c] = (const block_q8_K *)ap[c] + b;
            da[c] = yb[c]->d;
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const uint8_t *xb = wp[r] + (size_t)b * (HB ? sizeof(block_q5_K) : sizeof(block_q4_K));
            const q_f16_t *dd = (const q_f16_t *)xb;
            const uint8_t *qs = HB ? ((const block_q5_K *)xb)->qs : ((const block_q4_K *)xb)->qs;
            x_prefetch(xb + 1024);
            x_prefetch(xb + 1024 + 64);
            x_prefetch(xb + 1024 + 128);
            dw[r] = x_h2f(dd[0]);
            dm[r] = x_h2f(dd[1]);
            uint32_t ut[4];
            x_k4_scales(xb + 4, ut);
            const __m512i sm = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)ut)));
            mins16[r] = _mm512_castsi512_si256(_mm512_permutexvar_epi16(midx, sm));
            __m512i hb = _mm512_setzero_si512();
            if (HB) hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const block_q5_K *)xb)->qh));
            XUNROLL for (int c = 0; c < C; c++) iv[r * C + c] = _mm512_setzero_si512();
            XUNROLL for (int p = 0; p < 2; p++) {
                const __m512i q = _mm512_loadu_si512((const void *)(qs + 64 * p));
                const __m512i lo = _mm512_and_si512(q, m4);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                __m512i wk[2] = {_mm512_shuffle_i64x2(lo, hi, 0x44), _mm512_shuffle_i64x2(lo, hi, 0xEE)};
                XUNROLL for (int h = 0; h < 2; h++) {
                    const int k = 2 * p + h;
                    if (HB) {
                        const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * k))),
                                                                _mm256_set1_epi8((char)(1 << (2 * k + 1))), 1);
                        wk[h] = _mm512_mask_add_epi8(wk[h], _mm512_test_epi8_mask(hb, bits), wk[h], k16);
                    }
                    const __m512i sc = _mm512_permutexvar_epi16(sidx[k], sm);
                    XUNROLL for (int c = 0; c < C; c++) {
                        const __m512i av = _mm512_loadu_si512((const void *)(yb[c]->qs + 64 * k));
                        iv[r * C + c] = _mm512_dpwssd_epi32(iv[r * C + c], _mm512_maddubs_epi16(wk[h], av), sc);
                    }
                }
            }
        }
        __m256i iv8[16], mv[16];
        XUNROLL for (int i = 0; i < L; i++)
            iv8[i] = _mm256_add_epi32(_mm512_castsi512_si256(iv[i]), _mm512_extracti64x4_epi64(iv[i], 1));
        XUNROLL for (int r = 0; r < R; r++) XUNROLL for (int c = 0; c < C; c++) mv[r * C + c] =
            _mm256_madd_epi16(mins16[r], _mm256_loadu_si256((const __m256i *)yb[c]->bsums));
        XUNROLL for (int g = 0; g < NG; g++) {
            const __m256 is = _mm256_cvtepi32_ps(x_group_sums(iv8, L, g));
            const __m256 ms = _mm256_cvtepi32_ps(x_group_sums(mv, L, g));
            const __m256 va = x_lane_cols(da, R, C, g);
            const __m256 d1 = _mm256_mul_ps(x_lane_rows(dw, R, C, g), va);
            const __m256 d2 = _mm256_mul_ps(x_lane_rows(dm, R, C, g), va);
            acc[g] = _mm256_add_ps(acc[g], _mm256_sub_ps(_mm256_mul_ps(d1, is), _mm256_mul_ps(d2, ms)));
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

XAI void q4_Kz_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    qk45z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 0);
}
XAI void q5_Kz_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    qk45z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 1);
}
X_QUANT_KERNELS(q4_Kz, Q_QK_K)
X_QUANT_KERNELS(q5_Kz, Q_QK_K)

/* ---- 512-bit Q6_K tile ----
 * Per 128-element half: one zmm load of ql gives chunks (A | B); the 2-bit
 * high parts come from qh broadcast to both halves and shifted per half
 * (vpsrlvw), so W01 = elements 0..63 and W23 = 64..127 of the half, matching
 * contiguous activation bytes. isum = sum sc * dot(q, a) - 32 * sum sc * bsum,
 * exact, then the template's reduction and float update. */
X_INLINE void q6_Kz_tile_(int64_t nb, const uint8_t *w, size_t ws, int nr,
                                                               const uint8_t *a, size_t as, int nc, float *y,
                                                               int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m512i sidx[4]; /* int16 lane j of W_k -> scale 4k + j / 8 */
    XUNROLL for (int k = 0; k < 4; k++)
        sidx[k] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16((short)(4 * k + 1)), _mm_set1_epi16((short)(4 * k)))),
            _mm256_set_m128i(_mm_set1_epi16((short)(4 * k + 3)), _mm_set1_epi16((short)(4 * k + 2))), 1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m512i iv[16];
        __m256i s32[16];
        float dw[16], da[16];
        const block_q8_K *yb[16];
        XUNROLL for (int c = 0; c < C; c++) {
            yb[c] = (const block_q8_K *)ap[c] + b;
            da[c] = yb[c]->d;
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q6_K *xb = (const block_q6_K *)wp[r] + b;
            x_prefetch((const uint8_t *)xb + 1024);
            x_prefetch((const uint8_t *)xb + 1024 + 64);
            x_prefetch((const uint8_t *)xb + 1024 + 128);
            x_prefetch((const uint8_t *)xb + 1024 + 192);
            dw[r] = x_h2f(xb->d);
            const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xb->scales));
            s32[r] = _mm256_slli_epi16(s16, 5);
            const __m512i sz = _mm512_castsi256_si512(s16);
            XUNROLL for (int c = 0; c < C; c++) iv[r * C + c] = _mm512_setzero_si512();
            XUNROLL for (int h = 0; h < 2; h++) {
                const __m512i ab = _mm512_loadu_si512((const void *)(xb->ql + 64 * h));
                const __m512i hq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xb->qh + 32 * h)));
                const __m512i h01 = _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(hq, sh01), 4), m30);
                const __m512i h23 = _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(hq, sh23), 4), m30);
                const __m512i wk[2] = {_mm512_or_si512(_mm512_and_si512(ab, m4), h01),
                                       _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ab, 4), m4), h23)};
                XUNROLL for (int e = 0; e < 2; e++) {
                    const int k = 2 * h + e;
                    const __m512i sc = _mm512_permutexvar_epi16(sidx[k], sz);
                    XUNROLL for (int c = 0; c < C; c++) {
                        const __m512i av = _mm512_loadu_si512((const void *)(yb[c]->qs + 64 * k));
                        iv[r * C + c] = _mm512_dpwssd_epi32(iv[r * C + c], _mm512_maddubs_epi16(wk[e], av), sc);
                    }
                }
            }
        }
        __m256i iv8[16];
        XUNROLL for (int r = 0; r < R; r++) XUNROLL for (int c = 0; c < C; c++) {
            const int i = r * C + c;
            const __m256i off = _mm256_madd_epi16(s32[r], _mm256_loadu_si256((const __m256i *)yb[c]->bsums));
            iv8[i] = _mm256_sub_epi32(
                _mm256_add_epi32(_mm512_castsi512_si256(iv[i]), _mm512_extracti64x4_epi64(iv[i], 1)), off);
        }
        XUNROLL for (int g = 0; g < NG; g++) {
            const __m256 is = _mm256_cvtepi32_ps(x_group_sums(iv8, L, g));
            const __m256 dd = _mm256_mul_ps(x_lane_rows(dw, R, C, g), x_lane_cols(da, R, C, g));
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(dd, is));
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

XAI void q6_Kz_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    q6_Kz_tile_(nb, w, ws, nr, a, as, nc, y, ldy, R, C);
}
X_QUANT_KERNELS(q6_Kz, Q_QK_K)

/* ---- 512-bit Q8_0 / Q4_0 tiles: two 32-element blocks per zmm ----
 * u8 x s8 with vpdpbusd: Q8_0 weights offset by 128, Q4_0 nibbles (= w + 8),
 * corrected by a per-column bias -K * sum(a) that seeds the accumulator.
 * 8 (row, column) pairs x 2 blocks are reduced together; the float update
 * then runs block by block in the reference's order. */

/* Lane-local sums of 8 zmm (pairs p) -> ymm is0 (block 0 of pair p) and is1. */
XAI void x_reduce8x2(const __m512i v[8], __m256i *is0, __m256i *is1) {
    __m512i a[4], b[2];
    XUNROLL for (int i = 0; i < 4; i++)
        a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    XUNROLL for (int j = 0; j < 2; j++)
        b[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * j], a[2 * j + 1]),
                                _mm512_unpackhi_epi64(a[2 * j], a[2 * j + 1]));
    /* b[j] 128-bit lane L: lane-L sums of pairs 4j..4j+3; lanes 0,1 = block 0, 2,3 = block 1 */
    const __m512i x = _mm512_shuffle_i64x2(b[0], b[1], 0x88); /* b0.L0 b0.L2 b1.L0 b1.L2 */
    const __m512i y = _mm512_shuffle_i64x2(b[0], b[1], 0xDD); /* b0.L1 b0.L3 b1.L1 b1.L3 */
    const __m512i s = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), _mm512_add_epi32(x, y));
    *is0 = _mm512_castsi512_si256(s);
    *is1 = _mm512_extracti64x4_epi64(s, 1);
}

/* The u8 weights of blocks b and b + 1 (Q8_0: w ^ 0x80; Q4_0: nibbles), b + 1 only when two. */
XAI __m512i x_blk2_w(const uint8_t *row, int64_t b, int two, int Q4) {
    if (Q4) {
        const block_q4_0 *x = (const block_q4_0 *)row + b;
        const __m128i m = _mm_set1_epi8(0x0F);
        const __m128i q0 = _mm_loadu_si128((const __m128i *)x[0].qs);
        const __m256i u0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q0, 4), m), _mm_and_si128(q0, m));
        __m256i u1 = _mm256_setzero_si256();
        if (two) {
            const __m128i q1 = _mm_loadu_si128((const __m128i *)x[1].qs);
            u1 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q1, 4), m), _mm_and_si128(q1, m));
        }
        return _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
    }
    const block_q8_0 *x = (const block_q8_0 *)row + b;
    const __m256i f = _mm256_set1_epi8((char)0x80);
    const __m256i u0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[0].qs), f);
    const __m256i u1 = two ? _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[1].qs), f) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
}

XAI void q32z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                   int64_t ldy, const int R, const int C, const int Q4) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m512i kb = _mm512_set1_epi8(Q4 ? 8 : (char)0x80);
    const size_t wbs = Q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m512i av[16], bias[16], iv[16];
        float dw[2][16], da[2][16];
        XUNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *yb = (const block_q8_0 *)ap[c] + b;
            const __m256i a1 = two ? _mm256_loadu_si256((const __m256i *)yb[1].qs) : _mm256_setzero_si256();
            av[c] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)yb[0].qs)), a1, 1);
            bias[c] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), kb, av[c]));
            da[0][c] = x_h2f(yb[0].d);
            da[1][c] = two ? x_h2f(yb[1].d) : 0.0f;
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const uint8_t *xb = wp[r] + (size_t)b * wbs;
            x_prefetch(xb + 1024);
            dw[0][r] = x_h2f(*(const q_f16_t *)xb);
            dw[1][r] = two ? x_h2f(*(const q_f16_t *)(xb + wbs)) : 0.0f;
            const __m512i u = x_blk2_w(wp[r], b, two, Q4);
            XUNROLL for (int c = 0; c < C; c++) iv[r * C + c] = _mm512_dpbusd_epi32(bias[c], u, av[c]);
        }
        XUNROLL for (int g = 0; g < NG; g++) {
            __m512i v[8];
            XUNROLL for (int l = 0; l < 8; l++) v[l] = 8 * g + l < L ? iv[8 * g + l] : _mm512_setzero_si512();
            __m256i s0, s1;
            x_reduce8x2(v, &s0, &s1);
            const __m256 d0 = _mm256_mul_ps(x_lane_rows(dw[0], R, C, g), x_lane_cols(da[0], R, C, g));
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(d0, _mm256_cvtepi32_ps(s0)));
            if (two) {
                const __m256 d1 = _mm256_mul_ps(x_lane_rows(dw[1], R, C, g), x_lane_cols(da[1], R, C, g));
                acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(d1, _mm256_cvtepi32_ps(s1)));
            }
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

XAI void q8_0z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    q32z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 0);
}
XAI void q4_0z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    q32z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 1);
}
X_QUANT_KERNELS(q8_0z, Q_QK8_0)
X_QUANT_KERNELS(q4_0z, Q_QK4_0)

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

X_NOSAN void tensor_x86_avx512_init(tensor_ops *ops, bool vnni) {
    if (vnni) {
        ops->vec_dot[Q_TYPE_Q4_0] = q4_0z_vec_dot;
        ops->gemm[Q_TYPE_Q4_0] = q4_0z_gemm;
        ops->vec_dot[Q_TYPE_Q8_0] = q8_0z_vec_dot;
        ops->gemm[Q_TYPE_Q8_0] = q8_0z_gemm;
        x_quantizers_install(ops);
        ops->vec_dot[Q_TYPE_Q4_K] = q4_Kz_vec_dot;
        ops->gemm[Q_TYPE_Q4_K] = q4_Kz_gemm;
        ops->vec_dot[Q_TYPE_Q5_K] = q5_Kz_vec_dot;
        ops->gemm[Q_TYPE_Q5_K] = q5_Kz_gemm;
        ops->vec_dot[Q_TYPE_Q6_K] = q6_Kz_vec_dot;
        ops->gemm[Q_TYPE_Q6_K] = q6_Kz_gemm;
    }
    xf_install(ops);
}

/* ---- peak probes ---- */
#define X_BARRIER(v) __asm__ volatile("" : "+v"(v))

X_NOSAN uint64_t tensor_x86_avx512_peak_int8(int64_t iters) {
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

X_NOSAN uint64_t tensor_x86_avx512_peak_fma(int64_t iters) {
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
