/*
 * kernels_avx512.c — the AVX-512 kernel set (F/BW/VL/DQ + VNNI; compiled
 * with those flags only, reached through tensor_x86_avx512_init).
 *
 * Integer dots use VNNI: vpdpbusd (u8 x s8 -> int32, no int16 saturation)
 * and vpdpwssd for scaled int16 pairs, on 512-bit vectors for every block
 * type (Q4_K/Q5_K/Q6_K/Q8_0/Q4_0/MXFP4 tiles below; the 256-bit template only
 * supplies the shared reductions, the float update and the activation
 * quantizers). Q8_0/Q4_0/MXFP4 use 4x4 (row x column) gemm tiles and the
 * reference's float order; Q4_K/Q5_K/Q6_K keep per-lane float sums (not
 * bit-identical to the reference, see x86.h) in 2x8 gemm tiles. Float
 * kernels use 16-wide FMA with masked tails. See x86.h for the numerics
 * contract.
 */
#include "arch/x86/x86.h"

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

#include "arch/x86/x86_quant.h"




/* ---- 512-bit Q4_K / Q5_K / Q6_K tiles with per-lane float accumulators ----
 * Per (row, column) pair one zmm of 16 float partial sums lives across all
 * super-blocks; the output is its fixed horizontal sum (x_hsum_zmm). Per
 * super-block and 64-element chunk k (weights unpacked as in the tiles
 * above), vpdpbusd gives exact int32 lanes (|lane| <= 4 * 63 * 128 < 2^15,
 * so each fits int16); vpackssdw packs two chunks losslessly and one
 * vpdpwssd applies the scale of each lane's sub-block (x_sidx_* tables).
 * Q5_K adds 16 where its qh bit is set (lanes stay < 2^15: 4 * 31 * 128).
 * Q4_K/Q5_K then fold the 16 lanes to lanes 0-7 and put mins x bsums in lanes
 * 8-15; Q6_K subtracts 32 * scale x bsums. The lanes are converted to float
 * (exact: below 2^24 for K-quant ranges, except theoretical Q6_K extremes
 * where the conversion rounds, identically everywhere) and added with one
 * FMA whose per-lane factor is (row's d, or -dmin) * column's d. (vpmaddubsw
 * + vpdpwssd per chunk measured no faster: 4 more scale vectors per row.)
 * Every step is per pair and lane-wise, so a pair's result does not depend
 * on the tile: vec_dot (1x1), matvec (8x1) and gemm (2x8) tiles give the
 * same bits. Against the scalar reference only the float summation order
 * differs (closeness, not equality). */

/* Word w of the scale vector for packs(d0, d1) (d_k lanes 0-7 = sub-block
 * 2k, 8-15 = 2k+1): dword j = w / 2 of 128-bit lane L = j / 4 comes from
 * d0 (j % 4 < 2) or d1, so its sub-block is (j % 4 < 2 ? 0 : 2) + (L >= 2).
 * For packs(d2, d3) add 4. Q4_K scales are words 0..7, mins 8..15 of sm. */
static const int16_t x_sidx_k4[32] = {0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2,
                                      1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3};
/* Q6_K: 16-element sub-blocks, d_k's 128-bit lane L = scale 4k + L; the
 * dword j of packs(d0, d1) has scale (j % 4 < 2 ? 0 : 4) + L; packs(d2, d3) + 8. */
static const int16_t x_sidx_k6[32] = {0, 0, 0, 0, 4, 4, 4, 4, 1, 1, 1, 1, 5, 5, 5, 5,
                                      2, 2, 2, 2, 6, 6, 6, 6, 3, 3, 3, 3, 7, 7, 7, 7};

/* The one horizontal order of a pair's 16 float partial sums. */
XAI float x_hsum_zmm(__m512 v) {
    return x_hsum_ps256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

XAI void x_store_zmm_tile(const __m512 *acc, int R, int C, int nr, int nc, float *y, int64_t ldy) {
    XUNROLL for (int r = 0; r < R; r++) XUNROLL for (int c = 0; c < C; c++) if (r < nr && c < nc)
        y[(int64_t)c * ldy + r] = x_hsum_zmm(acc[r * C + c]);
}

/* Exact int32 lanes sum_k scale(lane) * dot_k(lane) for the 4 chunks W[k] x a[64k..64k+63]. */
XAI __m512i x_k_dots(const __m512i W[4], const int8_t *aq, __m512i S01, __m512i S23) {
    __m512i d[4];
    XUNROLL for (int k = 0; k < 4; k++)
        d[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[k], _mm512_loadu_si512((const void *)(aq + 64 * k)));
    const __m512i iv = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_packs_epi32(d[0], d[1]), S01);
    return _mm512_dpwssd_epi32(iv, _mm512_packs_epi32(d[2], d[3]), S23);
}

/* The 12 packed 6-bit Q4_K/Q5_K scale bytes -> bytes 0-7 scales, 8-15 mins
 * (x_k4_scales, vectorized). Byte j < 4: s[j] & 63 (mins: s[j+4] & 63);
 * j >= 4: s[j+4] & 15 | (s[j-4] >> 6) << 4 (mins: s[j+4] >> 4 | (s[j] >> 6) << 4).
 * Reads 16 bytes from `scales` (the block continues with qs). */
XAI __m128i x_k4_scales_v(const uint8_t *scales) {
    const __m128i s = _mm_loadu_si128((const __m128i *)scales);
    const __m128i a = _mm_shuffle_epi8(s, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i h = _mm_shuffle_epi8(s, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i m = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m128i lo = _mm_mask_blend_epi8((__mmask16)0xF000, _mm_and_si128(a, m),
                                           _mm_and_si128(_mm_srli_epi16(a, 4), _mm_set1_epi8(0x0F)));
    return _mm_or_si128(lo, _mm_and_si128(_mm_srli_epi16(h, 2), _mm_set1_epi8(0x30)));
}

/* Gemm driver for the per-lane tiles: like x_gemm_drive, with the tile
 * shape as parameters. Rows outer within a tile, so one row's unpacked
 * weights are live at a time: XV_MM_C columns amortize each unpack while the
 * XV_MM_R * XV_MM_C float accumulators stay in registers. */
#define XV_MM_R 2
#define XV_MM_C 8
X_NOSAN static void xv_gemm_drive(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,
                                  int nc, float *y, int64_t ldy, x_tile_fn mv, x_tile_fn mm, x_tile_fn mm4) {
    int full = nc - nc % XV_MM_C;
    for (int cb = 0; cb < full; cb += X_CB) {
        const int ce = cb + X_CB < full ? cb + X_CB : full;
        for (int r = 0; r < nr; r += XV_MM_R)
            for (int c = cb; c < ce; c += XV_MM_C)
                mm(nb, w + (size_t)r * ws, ws, nr - r < XV_MM_R ? nr - r : XV_MM_R, a + (size_t)c * as, as, XV_MM_C,
                   y + (int64_t)c * ldy + r, ldy);
    }
    if (nc - full >= 4) { /* 4 more columns share one unpack (batched decode of 4..7 sequences) */
        for (int r = 0; r < nr; r += XV_MM_R)
            mm4(nb, w + (size_t)r * ws, ws, nr - r < XV_MM_R ? nr - r : XV_MM_R, a + (size_t)full * as, as, 4,
                y + (int64_t)full * ldy + r, ldy);
        full += 4;
    }
    for (int c = full; c < nc; c++)
        for (int r = 0; r < nr; r += X_MV_R)
            mv(nb, w + (size_t)r * ws, ws, nr - r < X_MV_R ? nr - r : X_MV_R, a + (size_t)c * as, as, 1,
               y + (int64_t)c * ldy + r, ldy);
}

#define XV_QUANT_KERNELS(name)                                                                                       \
    X_NOSAN static void name##_mv(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,      \
                                  int nc, float *y, int64_t ldy) {                                                   \
        name##_tile(nb, w, ws, nr, a, as, nc, y, ldy, X_MV_R, 1);                                                    \
    }                                                                                                                \
    X_NOSAN static void name##_mm(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,      \
                                  int nc, float *y, int64_t ldy) {                                                   \
        name##_tile(nb, w, ws, nr, a, as, nc, y, ldy, XV_MM_R, XV_MM_C);                                             \
    }                                                                                                                \
    X_NOSAN static void name##_mm4(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,     \
                                   int nc, float *y, int64_t ldy) {                                                  \
        name##_tile(nb, w, ws, nr, a, as, nc, y, ldy, XV_MM_R, 4);                                                   \
    }                                                                                                                \
    X_NOSAN static void name##_vec_dot(int64_t n, float *s, const void *w, const void *a) {                         \
        name##_tile(n / Q_QK_K, w, 0, 1, a, 0, 1, s, 0, 1, 1);                                                       \
    }                                                                                                                \
    X_NOSAN static void name##_gemm(int64_t K, const void *w, size_t ws, int nr, const void *a, size_t as, int nc,   \
                                    float *y, int64_t ldy) {                                                         \
        xv_gemm_drive(K / Q_QK_K, w, ws, nr, a, as, nc, y, ldy, name##_mv, name##_mm, name##_mm4);                               \
    }

XAI void qk45v_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C, const int HB) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i i01 = _mm512_loadu_si512((const void *)x_sidx_k4);
    const __m512i i23 = _mm512_add_epi16(i01, _mm512_set1_epi16(4));
    const __m512i midx =
        _mm512_zextsi256_si512(_mm256_setr_epi16(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
    const __m512i dsel = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512 dneg = _mm512_castsi512_ps(_mm512_maskz_set1_epi32((__mmask16)0xFF00, (int)0x80000000u));
    __m512 acc[16];
    XUNROLL for (int i = 0; i < R * C; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q4_K *xb = (const block_q4_K *)(wp[r] + (size_t)b * (HB ? sizeof(block_q5_K) : sizeof(block_q4_K)));
            /* d, dmin and scales lead both layouts; qs differs */
            const uint8_t *qs = HB ? ((const block_q5_K *)xb)->qs : xb->qs;
            x_prefetch((const uint8_t *)xb + 1024);
            x_prefetch((const uint8_t *)xb + 1024 + 64);
            x_prefetch((const uint8_t *)xb + 1024 + 128);
            const __m512i sm = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(x_k4_scales_v(xb->scales)));
            const __m512i S01 = _mm512_permutexvar_epi16(i01, sm), S23 = _mm512_permutexvar_epi16(i23, sm);
            const __m256i mins16 = _mm512_castsi512_si256(_mm512_permutexvar_epi16(midx, sm));
            /* lanes 0-7 scale the scaled dots by d, lanes 8-15 the mins by -dmin */
            uint32_t ddm;
            memcpy(&ddm, &xb->d, sizeof ddm); /* d, dmin */
            const __m512 rowf = _mm512_xor_ps(
                _mm512_permutexvar_ps(dsel, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)ddm)))), dneg);
            __m512i W[4];
            XUNROLL for (int p = 0; p < 2; p++) {
                const __m512i q = _mm512_loadu_si512((const void *)(qs + 64 * p));
                const __m512i lo = _mm512_and_si512(q, m4);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                W[2 * p] = _mm512_shuffle_i64x2(lo, hi, 0x44);
                W[2 * p + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);
            }
            if (HB) { /* Q5_K: bit j of qh[l] is the 5th bit of element 32j + l */
                const __m512i hb =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const block_q5_K *)xb)->qh));
                XUNROLL for (int k = 0; k < 4; k++) {
                    const __m512i bits = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * k))),
                                                            _mm256_set1_epi8((char)(1 << (2 * k + 1))), 1);
                    W[k] = _mm512_mask_add_epi8(W[k], _mm512_test_epi8_mask(hb, bits), W[k], _mm512_set1_epi8(16));
                }
            }
            XUNROLL for (int c = 0; c < C; c++) {
                const block_q8_K *yb = (const block_q8_K *)ap[c] + b;
                const __m512i iv = x_k_dots(W, yb->qs, S01, S23);
                const __m256i mv = _mm256_madd_epi16(mins16, _mm256_loadu_si256((const __m256i *)yb->bsums));
                /* [iv lanes 8-15 | mv], then lanes 0-7 += iv lanes 0-7 */
                const __m512i s = _mm512_shuffle_i64x2(iv, _mm512_castsi256_si512(mv), 0x4E);
                const __m512i comb = _mm512_mask_add_epi32(s, (__mmask16)0x00FF, s, iv);
                const __m512 f = _mm512_mul_ps(rowf, _mm512_set1_ps(yb->d));
                acc[r * C + c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(comb), f, acc[r * C + c]);
            }
        }
    }
    x_store_zmm_tile(acc, R, C, nr, nc, y, ldy);
}
XAI void q4_Kv_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    qk45v_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 0);
}
XAI void q5_Kv_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    qk45v_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, 1);
}
XV_QUANT_KERNELS(q5_Kv)
XV_QUANT_KERNELS(q4_Kv)

XAI void q6_Kv_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    const __m512i i01 = _mm512_loadu_si512((const void *)x_sidx_k6);
    const __m512i i23 = _mm512_add_epi16(i01, _mm512_set1_epi16(8));
    __m512 acc[16];
    XUNROLL for (int i = 0; i < R * C; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        XUNROLL for (int r = 0; r < R; r++) {
            const block_q6_K *xb = (const block_q6_K *)wp[r] + b;
            x_prefetch((const uint8_t *)xb + 1024);
            x_prefetch((const uint8_t *)xb + 1024 + 64);
            x_prefetch((const uint8_t *)xb + 1024 + 128);
            x_prefetch((const uint8_t *)xb + 1024 + 192);
            const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xb->scales));
            const __m256i s32 = _mm256_slli_epi16(s16, 5); /* 32 * scale: the -32 offset of q */
            const __m512i sz = _mm512_castsi256_si512(s16);
            const __m512i S01 = _mm512_permutexvar_epi16(i01, sz), S23 = _mm512_permutexvar_epi16(i23, sz);
            const __m512 rowf = _mm512_set1_ps(x_h2f(xb->d));
            __m512i W[4];
            XUNROLL for (int h = 0; h < 2; h++) {
                const __m512i ab = _mm512_loadu_si512((const void *)(xb->ql + 64 * h));
                const __m512i hq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xb->qh + 32 * h)));
                const __m512i h01 = _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(hq, sh01), 4), m30);
                const __m512i h23 = _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(hq, sh23), 4), m30);
                W[2 * h] = _mm512_or_si512(_mm512_and_si512(ab, m4), h01);
                W[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ab, 4), m4), h23);
            }
            XUNROLL for (int c = 0; c < C; c++) {
                const block_q8_K *yb = (const block_q8_K *)ap[c] + b;
                const __m512i iv = x_k_dots(W, yb->qs, S01, S23);
                const __m256i off = _mm256_madd_epi16(s32, _mm256_loadu_si256((const __m256i *)yb->bsums));
                const __m512i is = _mm512_mask_sub_epi32(iv, (__mmask16)0x00FF, iv, _mm512_castsi256_si512(off));
                const __m512 f = _mm512_mul_ps(rowf, _mm512_set1_ps(yb->d));
                acc[r * C + c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), f, acc[r * C + c]);
            }
        }
    }
    x_store_zmm_tile(acc, R, C, nr, nc, y, ldy);
}
XV_QUANT_KERNELS(q6_Kv)

/* ---- 512-bit Q8_0 / Q4_0 / MXFP4 tiles: two 32-element blocks per zmm ----
 * u8 x s8 with vpdpbusd: Q8_0 weights offset by 128, Q4_0 nibbles (= w + 8),
 * MXFP4 codes mapped by one vpshufb to kvalues_mxfp4 + 12, corrected by a
 * per-column bias -K * sum(a) that seeds the accumulator. 8 (row, column)
 * pairs x 2 blocks are reduced together; the float update then runs block
 * by block in the reference's order (MXFP4's dw = 2^(e - 128)). */
enum { X_Z_Q8_0 = 0, X_Z_Q4_0 = 1, X_Z_MXFP4 = 2 };

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

/* The u8 weights of blocks b and b + 1 (Q8_0: w ^ 0x80; Q4_0: nibbles;
 * MXFP4: kvalues_mxfp4[code] + 12), b + 1 only when two. */
XAI __m512i x_blk2_w(const uint8_t *row, int64_t b, int two, int KIND) {
    if (KIND == X_Z_MXFP4) {
        const block_mxfp4 *x = (const block_mxfp4 *)row + b;
        const __m128i m = _mm_set1_epi8(0x0F);
        const __m128i q0 = _mm_loadu_si128((const __m128i *)x[0].qs);
        const __m256i c0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q0, 4), m), _mm_and_si128(q0, m));
        __m256i c1 = _mm256_setzero_si256();
        if (two) {
            const __m128i q1 = _mm_loadu_si128((const __m128i *)x[1].qs);
            c1 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q1, 4), m), _mm_and_si128(q1, m));
        }
        const __m512i lut = _mm512_broadcast_i32x4(x_mxfp4_lut_u());
        return _mm512_shuffle_epi8(lut, _mm512_inserti64x4(_mm512_castsi256_si512(c0), c1, 1));
    }
    if (KIND == X_Z_Q4_0) {
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

/* The float scale of the weight block at xb. */
XAI float x_blk_dw(const uint8_t *xb, int KIND) {
    if (KIND == X_Z_MXFP4) return q_e8m0_to_f32_half(((const block_mxfp4 *)xb)->e);
    return x_h2f(*(const q_f16_t *)xb); /* d leads block_q8_0 and block_q4_0 */
}

XAI void q32z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                   float *y, int64_t ldy, const int R, const int C, const int KIND) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const int L = R * C, NG = (L + 7) / 8;
    const __m512i kb = _mm512_set1_epi8(KIND == X_Z_Q4_0 ? 8 : KIND == X_Z_MXFP4 ? X_MXFP4_OFF : (char)0x80);
    const size_t wbs = KIND == X_Z_Q4_0    ? sizeof(block_q4_0)
                       : KIND == X_Z_MXFP4 ? sizeof(block_mxfp4)
                                           : sizeof(block_q8_0);
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
            dw[0][r] = x_blk_dw(xb, KIND);
            dw[1][r] = two ? x_blk_dw(xb + wbs, KIND) : 0.0f;
            const __m512i u = x_blk2_w(wp[r], b, two, KIND);
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
    q32z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, X_Z_Q8_0);
}
XAI void q4_0z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                    int64_t ldy, const int R, const int C) {
    q32z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, X_Z_Q4_0);
}
XAI void mxfp4z_tile(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                     float *y, int64_t ldy, const int R, const int C) {
    q32z_tile(nb, w, ws, nr, a, as, nc, y, ldy, R, C, X_Z_MXFP4);
}
X_QUANT_KERNELS(q8_0z, Q_QK8_0)
X_QUANT_KERNELS(q4_0z, Q_QK4_0)
X_QUANT_KERNELS(mxfp4z, Q_QK_MXFP4)

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

#include "arch/x86/x86_float.h"

X_NOSAN void tensor_x86_avx512_init(tensor_ops *ops, bool vnni) {
    if (vnni) {
        ops->vec_dot[Q_TYPE_Q4_0] = q4_0z_vec_dot;
        ops->gemm[Q_TYPE_Q4_0] = q4_0z_gemm;
        ops->vec_dot[Q_TYPE_Q8_0] = q8_0z_vec_dot;
        ops->gemm[Q_TYPE_Q8_0] = q8_0z_gemm;
        ops->vec_dot[Q_TYPE_MXFP4] = mxfp4z_vec_dot;
        ops->gemm[Q_TYPE_MXFP4] = mxfp4z_gemm;
        x_quantizers_install(ops);
        ops->vec_dot[Q_TYPE_Q4_K] = q4_Kv_vec_dot;
        ops->gemm[Q_TYPE_Q4_K] = q4_Kv_gemm;
        ops->vec_dot[Q_TYPE_Q5_K] = q5_Kv_vec_dot;
        ops->gemm[Q_TYPE_Q5_K] = q5_Kv_gemm;
        ops->vec_dot[Q_TYPE_Q6_K] = q6_Kv_vec_dot;
        ops->gemm[Q_TYPE_Q6_K] = q6_Kv_gemm;
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
