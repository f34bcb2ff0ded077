/*
 * x86_quant.h — internal kernel template for the block-quant types, shared by
 * kernels_avx2.c and kernels_avx512.c. Not a public header: each including
 * file first defines its integer dot primitives and tile shape:
 *
 *   static inline __m256i x_dot(__m256i acc, __m256i u, __m256i s);
 *       acc + per int32 lane the sum of its 4 products u8 * s8 (exact:
 *       callers keep |u * s| pairs within int16 for the maddubs path);
 *   static inline __m256i x_dot_sc(__m256i acc, __m256i u, __m256i s, __m256i sc16);
 *       acc + madd(maddubs(u, s), sc16): pairs of u8*s8 products times the
 *       int16 scale of their lane (exact for K-quant ranges);
 *   x_q8_u(q) (per weight row), x_q8_bias(a) (per activation column) and
 *   x_q8_dot(u, q, a, bias): the exact int32 lanes of the s8 x s8 dot of q, a;
 *   X_MV_R            rows of a matvec tile (columns = 1);
 *   X_MM_R, X_MM_C    rows x columns of a gemm tile; X_MM_R * X_MM_C <= 16;
 *   X_CB              columns per cache block in gemm (a multiple of X_MM_C).
 *
 * Numerics: per block, each (row, column) gets an exact int32 sum whose lanes
 * are reduced with integer adds (order-free), then the float update of the
 * scalar reference (quants_ref.h) in the same order with separately rounded
 * mul/sub/add — so every output equals the reference bit for bit, whatever
 * the tile shape, column count or row split. Tiles hold up to 16
 * (row, column) pairs; the float updates run on 8 of them per vector lane.
 *
 * Edge tiles clamp row/column pointers to the last valid one (computing
 * duplicates that are never stored), so one instantiation serves all sizes.
 */
#ifndef KILN_TENSOR_ARCH_X86_QUANT_H
#define KILN_TENSOR_ARCH_X86_QUANT_H

#include "quants_ref.h"

#include <immintrin.h>

#define XAI X_INLINE
#define XUNROLL _Pragma("GCC unroll 16")

/* ---- helpers ---- */

/* lane i = sum of the 8 int32 lanes of v[i] (integer adds: exact). */
XAI __m256i x_hsum8_epi32(const __m256i v[8]) {
    const __m256i h0 = _mm256_hadd_epi32(v[0], v[1]);
    const __m256i h1 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h2 = _mm256_hadd_epi32(v[4], v[5]);
    const __m256i h3 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i g0 = _mm256_hadd_epi32(h0, h1);
    const __m256i g1 = _mm256_hadd_epi32(h2, h3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
}

XAI float x_h2f(q_f16_t h) { return _cvtsh_ss(h); }

/* Fixed float horizontal sum (the one reduction order of the set's float kernels). */
XAI float x_hsum_ps256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

XAI void x_prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

/* Prefetches the next 8-row tile's share for block step b: a matvec walks
 * its rows in 8 strided streams (one per row), too short for the hardware
 * prefetcher to learn when K is small, while the tiles of one thread follow
 * each other in memory; so each block step pulls 1/nb of the next tile
 * (8 blocks' bytes, in order) and the next tile starts warm. Addresses past
 * the matrix are harmless (a prefetch never faults). */
XAI void x_prefetch_next_tile(const uint8_t *w, size_t ws, size_t bs, int64_t b) {
    const uintptr_t p = (uintptr_t)w + 8 * ws + (uintptr_t)b * 8 * bs;
    for (size_t l = 0; l < 8 * bs; l += 64) _mm_prefetch((const char *)(p + l), _MM_HINT_T0);
}

/* Pointers of a tile: row r -> w + min(r, nr-1) * ws; column likewise. */
XAI void x_tile_ptrs(const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, int R, int C,
                     const uint8_t *wp[16], const uint8_t *ap[16]) {
    XUNROLL for (int r = 0; r < R; r++) wp[r] = w + (size_t)(r < nr ? r : nr - 1) * ws;
    XUNROLL for (int c = 0; c < C; c++) ap[c] = a + (size_t)(c < nc ? c : nc - 1) * as;
}

/* Builds DW (lane l -> dw[l / C + 8g / C ...]) for lane group g of a R x C tile:
 * lane l of group g is pair p = 8g + l, row p / C, column p % C. */
XAI __m256 x_lane_rows(const float *v, int R, int C, int g) {
    float t[8];
    XUNROLL for (int l = 0; l < 8; l++) {
        const int p = 8 * g + l;
        t[l] = p < R * C ? v[p / C] : 0.0f;
    }
    return _mm256_setr_ps(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
}
XAI __m256 x_lane_cols(const float *v, int R, int C, int g) {
    float t[8];
    XUNROLL for (int l = 0; l < 8; l++) {
        const int p = 8 * g + l;
        t[l] = p < R * C ? v[p % C] : 0.0f;
    }
    return _mm256_setr_ps(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
}

/* Reduces iv[0..R*C) (per-pair int32 vectors) group g -> 8 exact sums. */
XAI __m256i x_group_sums(const __m256i *iv, int L, int g) {
    __m256i v[8];
    XUNROLL for (int l = 0; l < 8; l++) v[l] = 8 * g + l < L ? iv[8 * g + l] : _mm256_setzero_si256();
    return x_hsum8_epi32(v);
}

XAI void x_store_tile(const __m256 *acc, int R, int C, int nr, int nc, float *y, int64_t ldy) {
    float t[16];
    XUNROLL for (int g = 0; g < (R * C + 7) / 8; g++) _mm256_storeu_ps(t + 8 * g, acc[g]);
    for (int p = 0; p < R * C; p++) {
        const int r = p / C, c = p % C;
        if (r < nr && c < nc) y[(int64_t)c * ldy + r] = t[p];
    }
}

/* ---- Q4_0 x Q8_0: isum = dot(nibbles, a) - 8 * sum(a) ---- */
XAI void q4_0_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m256i m4 = _mm256_set1_epi8(0x0F), k8 = _mm256_set1_epi8(8);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        if (C == 1 && R == 8) x_prefetch_next_tile(w, ws, sizeof(block_q4_0), b);
        __m256i av[16], as8[16], iv[16];
        float dw[16], da[16];
        XUNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *yb = (const block_q8_0 *)ap[c] + b;
            av[c] = _mm256_loadu_si256((const __m256i *)yb->qs);
            as8[c] = x_dot(_mm256_setzero_si256(), k8, av[c]);
            da[c] = x_h2f(yb->d);
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q4_0 *xb = (const block_q4_0 *)wp[r] + b;
            if (C > 1 || R != 8) x_prefetch(xb + 16);
            dw[r] = x_h2f(xb->d);
            const __m128i q = _mm_loadu_si128((const __m128i *)xb->qs);
            const __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
            XUNROLL for (int c = 0; c < C; c++)
                iv[r * C + c] = _mm256_sub_epi32(x_dot(_mm256_setzero_si256(), u, av[c]), as8[c]);
        }
        XUNROLL for (int g = 0; g < NG; g++) {
            const __m256 is = _mm256_cvtepi32_ps(x_group_sums(iv, L, g));
            const __m256 dd = _mm256_mul_ps(x_lane_rows(dw, R, C, g), x_lane_cols(da, R, C, g));
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(dd, is));
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

/* ---- MXFP4 x Q8_0: isum = dot(u, a) - 12 * sum(a), u = kvalues_mxfp4[code] + 12 ----
 * One vpshufb maps the 4-bit codes to u in 0..24 (unsigned, so the u8 x s8
 * dot applies; maddubs pairs stay within 2 * 24 * 127). Same shape as Q4_0:
 * the offset times the activation block's sum is subtracted per column.
 * The block scales of a tile's rows become floats in one vector
 * (x_e8m0_half_v), bit-identical to q_e8m0_to_f32_half. */
#define X_MXFP4_OFF 12
XAI __m128i x_mxfp4_lut_u(void) {
    return _mm_add_epi8(_mm_loadu_si128((const __m128i *)q_kvalues_mxfp4), _mm_set1_epi8(X_MXFP4_OFF));
}

/* 2^(e - 128) per int32 lane e in 0..255 (q_e8m0_to_f32_half, vectorized):
 * (e - 1) << 23, or the subnormal 0x00200000 << e for e < 2. */
XAI __m256 x_e8m0_half_v(__m256i e) {
    const __m256i big = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i small = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(big, small, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e)));
}

/* x_lane_rows for byte values: lane l of group g = v[row of pair 8g + l] (0 past the tile). */
XAI __m256i x_lane_rows_u8(const uint8_t *v, int R, int C, int g) {
    uint8_t t[8];
    XUNROLL for (int l = 0; l < 8; l++) {
        const int p = 8 * g + l;
        t[l] = p < R * C ? v[p / C] : 0;
    }
    return _mm256_cvtepu8_epi32(_mm_setr_epi8((char)t[0], (char)t[1], (char)t[2], (char)t[3], (char)t[4],
                                              (char)t[5], (char)t[6], (char)t[7], 0, 0, 0, 0, 0, 0, 0, 0));
}

XAI void mxfp4_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                    float *y, int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m256i lut = _mm256_broadcastsi128_si256(x_mxfp4_lut_u());
    const __m256i m4 = _mm256_set1_epi8(0x0F), koff = _mm256_set1_epi8(X_MXFP4_OFF);
    const __m256i sh = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        if (C == 1 && R == 8) x_prefetch_next_tile(w, ws, sizeof(block_mxfp4), b);
        __m256i av[16], aso[16], iv[16];
        float da[16];
        uint8_t ew[16];
        XUNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *yb = (const block_q8_0 *)ap[c] + b;
            av[c] = _mm256_loadu_si256((const __m256i *)yb->qs);
            aso[c] = x_dot(_mm256_setzero_si256(), koff, av[c]);
            da[c] = x_h2f(yb->d);
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const block_mxfp4 *xb = (const block_mxfp4 *)wp[r] + b;
            if (C > 1 || R != 8) x_prefetch(xb + 16);
            ew[r] = xb->e;
            /* [codes 0-15 | codes 16-31]: the 16 bytes in both halves; the upper half's dwords
             * shifted right by 4 bring each byte's high nibble down (the mask drops the rest) */
            const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)xb->qs));
            const __m256i u = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srlv_epi32(q, sh), m4));
            XUNROLL for (int c = 0; c < C; c++)
                iv[r * C + c] = _mm256_sub_epi32(x_dot(_mm256_setzero_si256(), u, av[c]), aso[c]);
        }
        XUNROLL for (int g = 0; g < NG; g++) {
            const __m256 is = _mm256_cvtepi32_ps(x_group_sums(iv, L, g));
            const __m256 dw = x_e8m0_half_v(x_lane_rows_u8(ew, R, C, g));
            const __m256 dd = _mm256_mul_ps(dw, x_lane_cols(da, R, C, g));
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(dd, is));
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

/* ---- Q8_0 x Q8_0: through the includer's x_q8_u / x_q8_bias / x_q8_dot ---- */
XAI void q8_0_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        if (C == 1 && R == 8) x_prefetch_next_tile(w, ws, sizeof(block_q8_0), b);
        __m256i av[16], bias[16], iv[16];
        float dw[16], da[16];
        XUNROLL for (int c = 0; c < C; c++) {
            const block_q8_0 *yb = (const block_q8_0 *)ap[c] + b;
            av[c] = _mm256_loadu_si256((const __m256i *)yb->qs);
            bias[c] = x_q8_bias(av[c]);
            da[c] = x_h2f(yb->d);
        }
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q8_0 *xb = (const block_q8_0 *)wp[r] + b;
            if (C > 1 || R != 8) x_prefetch(xb + 16);
            dw[r] = x_h2f(xb->d);
            const __m256i q = _mm256_loadu_si256((const __m256i *)xb->qs);
            const __m256i u = x_q8_u(q);
            XUNROLL for (int c = 0; c < C; c++) iv[r * C + c] = x_q8_dot(u, q, av[c], bias[c]);
        }
        XUNROLL for (int g = 0; g < NG; g++) {
            const __m256 is = _mm256_cvtepi32_ps(x_group_sums(iv, L, g));
            const __m256 dd = _mm256_mul_ps(x_lane_rows(dw, R, C, g), x_lane_cols(da, R, C, g));
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(dd, is));
        }
    }
    x_store_tile(acc, R, C, nr, nc, y, ldy);
}

/* ---- K-quant helpers ---- */

/* Q4_K/Q5_K 6-bit scales and mins: bytes 0..7 scales, 8..15 mins. */
XAI void x_k4_scales(const uint8_t *scales, uint32_t ut[4]) {
    const uint32_t km1 = 0x3f3f3f3f, km2 = 0x0f0f0f0f, km3 = 0x03030303;
    memcpy(ut, scales, 12);
    ut[3] = ((ut[2] >> 4) & km2) | (((ut[1] >> 6) & km3) << 4);
    const uint32_t aux = ut[1] & km1;
    ut[1] = (ut[2] & km2) | (((ut[0] >> 6) & km3) << 4);
    ut[2] = aux;
    ut[0] &= km1;
}

/* Bit j of every byte of h moved to bit 4 (j is a compile-time constant). */
XAI __m256i x_bit_to_16(__m256i h, int j) {
    const __m256i m = _mm256_set1_epi8(0x10);
    if (j <= 4) return _mm256_and_si256(_mm256_slli_epi16(h, 4 - j), m);
    return _mm256_and_si256(_mm256_srli_epi16(h, j - 4), m);
}

/* ---- K-quant tiles: R x C <= 8 (row, column) pairs ----
 * One body for the matvec (8 x 1), the gemm tile (X_MM_R x X_MM_C) and
 * vec_dot (1 x 1). Shaped for 16 ymm registers: each pair's int32 lanes fold
 * into one vector as soon as its row's block is done (no spills in the inner
 * loop), sub-block scales come from one widened vector by vpshufb instead of
 * scalar broadcasts, and the pairs' f16 scales convert in one instruction.
 * Pair p = r * C + c is lane p of the float update, which is the scalar
 * reference's, so every output is the reference's bits. A matvec tile
 * prefetches the next tile in order (x_prefetch_next_tile); a gemm tile,
 * whose rows stay in L1 across its column block, each row ahead. */

/* pshufb masks: lanes of int16 j (both 128-bit halves) broadcast. */
#define X_W16(j) (char)(2 * (j)), (char)(2 * (j) + 1)
#define X_W16x8(j) X_W16(j), X_W16(j), X_W16(j), X_W16(j), X_W16(j), X_W16(j), X_W16(j), X_W16(j)
XAI __m256i x_bcast16(__m256i v, int j) { /* every int16 lane = lane j of each half (j compile-time) */
    switch (j) {
    case 0: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(0), X_W16x8(0)));
    case 1: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(1), X_W16x8(1)));
    case 2: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(2), X_W16x8(2)));
    case 3: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(3), X_W16x8(3)));
    case 4: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(4), X_W16x8(4)));
    case 5: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(5), X_W16x8(5)));
    case 6: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(6), X_W16x8(6)));
    default: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(7), X_W16x8(7)));
    }
}
/* low half: int16 lane j, high half: int16 lane j + 1 (j even, compile-time) */
XAI __m256i x_bcast16_pair(__m256i v, int j) {
    switch (j) {
    case 0: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(0), X_W16x8(1)));
    case 2: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(2), X_W16x8(3)));
    case 4: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(4), X_W16x8(5)));
    default: return _mm256_shuffle_epi8(v, _mm256_setr_epi8(X_W16x8(6), X_W16x8(7)));
    }
}

/* Rows 0..7's exact sums from t[r] = hadd(I lanes, M lanes in the low half):
 * *is = [I0..I7], *ms = [M0..M7]. */
XAI void x_rows8_im(const __m256i t[8], __m256i *is, __m256i *ms) {
    const __m256i u01 = _mm256_hadd_epi32(t[0], t[1]), u23 = _mm256_hadd_epi32(t[2], t[3]);
    const __m256i u45 = _mm256_hadd_epi32(t[4], t[5]), u67 = _mm256_hadd_epi32(t[6], t[7]);
    /* [I0 M0 I1 M1 | I2 M2 I3 M3] and [I4 M4 I5 M5 | I6 M6 I7 M7] */
    const __m256i x = _mm256_add_epi32(_mm256_permute2x128_si256(u01, u23, 0x20),
                                       _mm256_permute2x128_si256(u01, u23, 0x31));
    const __m256i y = _mm256_add_epi32(_mm256_permute2x128_si256(u45, u67, 0x20),
                                       _mm256_permute2x128_si256(u45, u67, 0x31));
    const __m256 xf = _mm256_castsi256_ps(x), yf = _mm256_castsi256_ps(y);
    *is = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(xf, yf, 0x88)), 0xD8);
    *ms = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(xf, yf, 0xDD)), 0xD8);
}

/* 8 (d, dmin) f16 pairs, one uint32 each (the leading 4 bytes of a Q4_K/Q5_K
 * block), as floats: *d = [d0..d7], *m = [dmin0..dmin7]. The pairs go through
 * memory because an insert needs a constant lane index. */
XAI void x_dmin8(const uint32_t p[8], __m256 *d, __m256 *m) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)p);
    const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), hi = _mm256_srli_epi32(v, 16);
    const __m256i dm = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8); /* [d0..d7 | m0..m7] */
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
    *m = _mm256_cvtph_ps(_mm256_extracti128_si256(dm, 1));
}

/* Q4_K (HB = 0) and Q5_K (HB = 1): isum = sum sc * dot(q, a), msum = sum m * bsum. */
XAI void qk45_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C, const int HB) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C;
    const bool mv = C == 1 && R == 8;
    const size_t bs = HB ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (mv) x_prefetch_next_tile(w, ws, bs, b);
        const block_q8_K *yb[8];
        __m128i bs8[8];
        float da[8];
        XUNROLL for (int c = 0; c < C; c++) {
            yb[c] = (const block_q8_K *)ap[c] + b;
            da[c] = yb[c]->d;
            /* the activation's sums per 32 values (pairs of its per-16 sums: within int16) */
            bs8[c] = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)yb[c]->bsums),
                                    _mm_loadu_si128((const __m128i *)(yb[c]->bsums + 8)));
        }
        __m256i t[8];
        uint32_t dm32[8]; /* (d, dmin) per pair, through memory: an insert needs a constant lane */
        XUNROLL for (int p = L; p < 8; p++) t[p] = _mm256_setzero_si256(), dm32[p] = 0;
        XUNROLL for (int r = 0; r < R; r++) {
            const uint8_t *xb = wp[r] + (size_t)b * bs;
            const uint8_t *qs = HB ? ((const block_q5_K *)xb)->qs : ((const block_q4_K *)xb)->qs;
            if (!mv) {
                x_prefetch(xb + 1024);
                x_prefetch(xb + 1024 + 64);
                x_prefetch(xb + 1024 + 128);
            }
            XUNROLL for (int c = 0; c < C; c++) memcpy(&dm32[r * C + c], xb, 4); /* d, dmin lead both layouts */
            uint32_t ut[4];
            x_k4_scales(xb + 4, ut);
            const __m256i sc = _mm256_broadcastsi128_si256(
                _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)(((uint64_t)ut[1] << 32) | ut[0]))));
            const __m128i mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)(((uint64_t)ut[3] << 32) | ut[2])));
            __m256i hb = _mm256_setzero_si256();
            if (HB) hb = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)xb)->qh);
            __m256i iv[8];
            XUNROLL for (int c = 0; c < C; c++) iv[c] = _mm256_setzero_si256();
            XUNROLL for (int jj = 0; jj < 4; jj++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * jj));
                __m256i lo = _mm256_and_si256(q, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if (HB) {
                    lo = _mm256_or_si256(lo, x_bit_to_16(hb, 2 * jj));
                    hi = _mm256_or_si256(hi, x_bit_to_16(hb, 2 * jj + 1));
                }
                const __m256i s0 = x_bcast16(sc, 2 * jj), s1 = x_bcast16(sc, 2 * jj + 1);
                XUNROLL for (int c = 0; c < C; c++) {
                    const int8_t *aq = yb[c]->qs + 64 * jj;
                    iv[c] = x_dot_sc(iv[c], lo, _mm256_loadu_si256((const __m256i *)aq), s0);
                    iv[c] = x_dot_sc(iv[c], hi, _mm256_loadu_si256((const __m256i *)(aq + 32)), s1);
                }
            }
            XUNROLL for (int c = 0; c < C; c++)
                t[r * C + c] = _mm256_hadd_epi32(iv[c], _mm256_zextsi128_si256(_mm_madd_epi16(mins, bs8[c])));
        }
        __m256i is, ms;
        x_rows8_im(t, &is, &ms);
        const __m256 va = x_lane_cols(da, R, C, 0);
        __m256 dw, dmw;
        x_dmin8(dm32, &dw, &dmw);
        const __m256 d1 = _mm256_mul_ps(dw, va);
        const __m256 d2 = _mm256_mul_ps(dmw, va);
        acc = _mm256_add_ps(acc, _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(is)),
                                               _mm256_mul_ps(d2, _mm256_cvtepi32_ps(ms))));
    }
    x_store_tile(&acc, R, C, nr, nc, y, ldy);
}

XAI void q4_K_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C) {
    qk45_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 0);
}
XAI void q5_K_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C) {
    qk45_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 1);
}

/* Q6_K: isum = sum sc * dot(q, a) - 32 * sum sc * bsum. */
XAI void q6_K_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C;
    const bool mv = C == 1 && R == 8;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (mv) x_prefetch_next_tile(w, ws, sizeof(block_q6_K), b);
        const block_q8_K *yb[8];
        float da[8];
        XUNROLL for (int c = 0; c < C; c++) {
            yb[c] = (const block_q8_K *)ap[c] + b;
            da[c] = yb[c]->d;
        }
        __m256i t[8];
        uint16_t d16[8]; /* through memory: an insert needs a constant lane */
        XUNROLL for (int p = L; p < 8; p++) t[p] = _mm256_setzero_si256(), d16[p] = 0;
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q6_K *xb = (const block_q6_K *)wp[r] + b;
            if (!mv) {
                x_prefetch((const uint8_t *)xb + 1024);
                x_prefetch((const uint8_t *)xb + 1024 + 64);
                x_prefetch((const uint8_t *)xb + 1024 + 128);
                x_prefetch((const uint8_t *)xb + 1024 + 192);
            }
            XUNROLL for (int c = 0; c < C; c++) memcpy(&d16[r * C + c], &xb->d, 2);
            const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xb->scales));
            __m256i iv[8];
            XUNROLL for (int c = 0; c < C; c++) {
                const __m256i off = _mm256_madd_epi16(s16, _mm256_loadu_si256((const __m256i *)yb[c]->bsums));
                iv[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
            }
            /* scales 0..7, then 8..15, in both halves */
            const __m256i sh0 = _mm256_permute4x64_epi64(s16, 0x44), sh1 = _mm256_permute4x64_epi64(s16, 0xEE);
            XUNROLL for (int hh = 0; hh < 2; hh++) {
                const __m256i sh = hh ? sh1 : sh0;
                const __m256i qa = _mm256_loadu_si256((const __m256i *)(xb->ql + 64 * hh));
                const __m256i qb = _mm256_loadu_si256((const __m256i *)(xb->ql + 64 * hh + 32));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(xb->qh + 32 * hh));
                XUNROLL for (int k = 0; k < 4; k++) {
                    const __m256i base = k & 1 ? qb : qa;
                    const __m256i lo = k < 2 ? _mm256_and_si256(base, m4)
                                             : _mm256_and_si256(_mm256_srli_epi16(base, 4), m4);
                    __m256i hi;
                    if (k == 0) hi = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30);
                    else if (k == 1) hi = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30);
                    else if (k == 2) hi = _mm256_and_si256(qh, m30);
                    else hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30);
                    const __m256i u = _mm256_or_si256(lo, hi);
                    /* 32-element chunk 4hh + k: scale 2ch in the low half, 2ch + 1 in the high */
                    const __m256i scv = x_bcast16_pair(sh, 2 * k);
                    const int ch = 4 * hh + k;
                    XUNROLL for (int c = 0; c < C; c++)
                        iv[c] = x_dot_sc(iv[c], u, _mm256_loadu_si256((const __m256i *)(yb[c]->qs + 32 * ch)), scv);
                }
            }
            XUNROLL for (int c = 0; c < C; c++) t[r * C + c] = iv[c];
        }
        const __m256 is = _mm256_cvtepi32_ps(x_hsum8_epi32(t));
        const __m256 dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d16)), x_lane_cols(da, R, C, 0));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(dd, is));
    }
    x_store_tile(&acc, R, C, nr, nc, y, ldy);
}

/* ---- drivers ---- */

typedef void (*x_tile_fn)(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                          float *y, int64_t ldy);

/* Column blocks of X_CB (activations stay in L2), row tiles of X_MM_R (the
 * weight tile stays in L1 across the block), leftover columns by matvec. */
X_NOSAN static void x_gemm_drive(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                         float *y, int64_t ldy, x_tile_fn mv, x_tile_fn mm) {
    const int full = nc - nc % X_MM_C;
    for (int cb = 0; cb < full; cb += X_CB) {
        const int ce = cb + X_CB < full ? cb + X_CB : full;
        for (int r = 0; r < nr; r += X_MM_R)
            for (int c = cb; c < ce; c += X_MM_C)
                mm(nb, w + (size_t)r * ws, ws, nr - r < X_MM_R ? nr - r : X_MM_R, a + (size_t)c * as, as, X_MM_C,
                   y + (int64_t)c * ldy + r, ldy);
    }
    for (int c = full; c < nc; c++)
        for (int r = 0; r < nr; r += X_MV_R)
            mv(nb, w + (size_t)r * ws, ws, nr - r < X_MV_R ? nr - r : X_MV_R, a + (size_t)c * as, as, 1,
               y + (int64_t)c * ldy + r, ldy);
}

/* Instantiates name_mv / name_mm / name_vec_dot / name_gemm for a tile (the
 * including file chooses which tiles it instantiates). */
#define X_QUANT_KERNELS(name, BLK)                                                                           \
    X_NOSAN static void name##_mv(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, \
                          float *y, int64_t ldy) {                                                           \
        name##_tile(nb, w, ws, nr, a, as, nc, y, ldy, X_MV_R, 1);                                            \
    }                                                                                                        \
    X_NOSAN static void name##_mm(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, \
                          float *y, int64_t ldy) {                                                           \
        name##_tile(nb, w, ws, nr, a, as, nc, y, ldy, X_MM_R, X_MM_C);                                       \
    }                                                                                                        \
    X_NOSAN static void name##_vec_dot(int64_t n, float *s, const void *w, const void *a) {                         \
        name##_tile(n / (BLK), w, 0, 1, a, 0, 1, s, 0, 1, 1);                                                \
    }                                                                                                        \
    X_NOSAN static void name##_gemm(int64_t K, const void *w, size_t ws, int nr, const void *a, size_t as, int nc,  \
                            float *y, int64_t ldy) {                                                         \
        x_gemm_drive(K / (BLK), w, ws, nr, a, as, nc, y, ldy, name##_mv, name##_mm);                         \
    }


/* ---- activation quantizers (byte-identical to the reference) ---- */

XAI __m256 x_abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* 32 int32 (4 vectors) -> 32 int8 in order (values already in int8 range). */
XAI __m256i x_pack_32(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i p01 = _mm256_packs_epi32(v0, v1), p23 = _mm256_packs_epi32(v2, v3);
    const __m256i p = _mm256_packs_epi16(p01, p23);
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

X_NOSAN static void x_quantize_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *y = dst;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < Q_QK_K; j += 8) vmax = _mm256_max_ps(x_abs_ps(_mm256_loadu_ps(x + j)), vmax);
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        if (amax == 0.0f) {
            y[i].d = 0;
            memset(y[i].qs, 0, sizeof y[i].qs);
            memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        float max = 0.0f; /* the first element of largest magnitude, sign kept */
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < Q_QK_K; j += 8) {
            const int mk = _mm256_movemask_ps(_mm256_cmp_ps(x_abs_ps(_mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
            if (mk) {
                max = x[j + __builtin_ctz((unsigned)mk)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i k127 = _mm256_set1_epi32(127);
        __m256i s16[16];
        for (int j = 0; j < Q_QK_K; j += 32) {
            __m256i v[4];
            for (int k = 0; k < 4; k++)
                v[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vs)), k127);
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), x_pack_32(v[0], v[1], v[2], v[3]));
            s16[j / 16] = _mm256_add_epi32(v[0], v[1]);
            s16[j / 16 + 1] = _mm256_add_epi32(v[2], v[3]);
        }
        const __m256i b0 = x_hsum8_epi32(s16), b1 = x_hsum8_epi32(s16 + 8);
        const __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi32(b0, b1), 0xD8);
        _mm256_storeu_si256((__m256i *)y[i].bsums, b);
        y[i].d = 1 / iscale;
    }
}

/* roundf (half away from zero) for |v| < 2^23. */
XAI __m256 x_roundf_ps(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 f = x_abs_ps(_mm256_sub_ps(v, t));
    const __m256 one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
}

X_NOSAN static void x_quantize_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / Q_QK8_0; i++) {
        const float *x = src + i * Q_QK8_0;
        __m256 v[4];
        __m256 vmax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            vmax = _mm256_max_ps(x_abs_ps(v[k]), vmax);
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float d = _mm_cvtss_f32(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = q_f32_to_f16(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvttps_epi32(x_roundf_ps(_mm256_mul_ps(v[k], vid)));
        _mm256_storeu_si256((__m256i *)y[i].qs, x_pack_32(q[0], q[1], q[2], q[3]));
    }
}

/* Installs the activation quantizers of this template into ops. */
X_NOSAN static void x_quantizers_install(tensor_ops *ops) {
    ops->quantize[Q_TYPE_Q8_K] = x_quantize_q8_K;
    ops->quantize[Q_TYPE_Q8_0] = x_quantize_q8_0;
}

#endif
