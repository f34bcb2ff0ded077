/*
 * quants_ref_k.c — scalar reference kernels for the 256-element K-quants
 * (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and their activation type Q8_K.
 *
 * The quantizers reproduce ggml's quantize_row_*_ref (no importance matrix)
 * operation for operation, including the scale search helpers (a least-
 * squares fit with a min for Q2_K/Q4_K/Q5_K, a weighted scale search for
 * Q6_K, an iterative refinement for Q3_K), so their bytes match llama.cpp's.
 * Keep every float expression in the order written: changing the evaluation
 * order changes the bytes.
 *
 * Element e of a super-block belongs to sub-block e/16 (Q2_K, Q3_K, Q6_K,
 * Q8_K bsums) or e/32 (Q4_K, Q5_K scales and mins). The unpack_* helpers
 * give each element's integer quant in element order; dequantization and the
 * dot products both go through them.
 */
#include "quants_ref.h"

#include <math.h>

#define GROUP_MAX_EPS 1e-15f

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ======================= scale search helpers ======================= */

/* Symmetric quants in [-nmax, nmax-1] (stored + nmax) with weights x^2: the
 * scale that minimises the weighted error over 19 trial inverse scales. */
static float make_qx_quants_w2(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = clampi(q_ref_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = clampi(q_ref_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = (int8_t)(nmax + clampi(q_ref_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's sub-block quantizer: symmetric quants refined element by element
 * (weights x^2). Quants are stored + nmax. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = clampi(q_ref_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = clampi(q_ref_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Affine quants in [0, nmax]: x ~ scale * L - the_min, fitted by weighted
 * least squares over nstep+1 trial inverse scales. Returns scale; *the_min
 * gets the (non-negative) min. Laux is scratch of n bytes. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_ref_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)clampi(l, 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = clampi(q_ref_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Packs 256 2-bit values: byte l of 32-byte group g holds elements
 * 128g + l + 32k in bits 2k..2k+1. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < Q_QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* ============================== Q2_K ============================== */

void q_ref_quantize_q2_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q2_K *y = dst;
    uint8_t L[Q_QK_K], Laux[16];
    float weights[16], mins[Q_QK_K / 16], scales[Q_QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f,
                                         15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < Q_QK_K / 16; ++j) y[i].scales[j] = (uint8_t)q_ref_nearest_int(iscale * scales[j]);
            y[i].d = q_f32_to_f16(max_scale / q4scale);
        } else {
            for (int j = 0; j < Q_QK_K / 16; ++j) y[i].scales[j] = 0;
            y[i].d = q_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < Q_QK_K / 16; ++j) {
                int l = q_ref_nearest_int(iscale * mins[j]);
                y[i].scales[j] = (uint8_t)(y[i].scales[j] | (l << 4));
            }
            y[i].dmin = q_f32_to_f16(max_min / q4scale);
        } else {
            y[i].dmin = q_f32_to_f16(0.f);
        }
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            const float d = q_f16_to_f32(y[i].d) * (float)(y[i].scales[j] & 0xF);
            if (d == 0.0f) continue;
            const float dm = q_f16_to_f32(y[i].dmin) * (float)(y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (uint8_t)clampi(q_ref_nearest_int((x[16 * j + ii] + dm) / d), 0, 3);
        }
        pack_2bit(L, y[i].qs);
    }
}

static void unpack_q2_K(const block_q2_K *b, int8_t q[Q_QK_K]) {
    for (int e = 0; e < Q_QK_K; e++)
        q[e] = (int8_t)((b->qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3);
}

void q_ref_dequantize_q2_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q2_K *x = src;
    int8_t q[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float d = q_f16_to_f32(x[i].d), min = q_f16_to_f32(x[i].dmin);
        unpack_q2_K(&x[i], q);
        float *y = dst + i * Q_QK_K;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            const float dl = d * (float)(x[i].scales[k] & 0xF), ml = min * (float)(x[i].scales[k] >> 4);
            for (int l = 0; l < 16; l++) y[16 * k + l] = dl * (float)q[16 * k + l] - ml;
        }
    }
}

void q_ref_vec_dot_q2_K_q8_K(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q2_K *x = w;
    const block_q8_K *y = a;
    int8_t q[Q_QK_K];
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        unpack_q2_K(&x[i], q);
        int32_t isum = 0, msum = 0;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += q[16 * k + l] * y[i].qs[16 * k + l];
            isum += (x[i].scales[k] & 0xF) * sub;
            msum += (x[i].scales[k] >> 4) * y[i].bsums[k];
        }
        acc += (q_f16_to_f32(x[i].d) * y[i].d) * (float)isum - (q_f16_to_f32(x[i].dmin) * y[i].d) * (float)msum;
    }
    *s = acc;
}

/* ============================== Q3_K ============================== */

void q_ref_quantize_q3_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q3_K *y = dst;
    int8_t L[Q_QK_K];
    float scales[Q_QK_K / 16];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        float max_scale = 0, amax = 0;
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale != 0.0f) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < Q_QK_K / 16; ++j) {
                int l = clampi((int8_t)q_ref_nearest_int(iscale * scales[j]), -32, 31) + 32;
                if (j < 8)
                    y[i].scales[j] = (uint8_t)(l & 0xF);
                else
                    y[i].scales[j - 8] = (uint8_t)(y[i].scales[j - 8] | ((l & 0xF) << 4));
                l >>= 4;
                y[i].scales[j % 4 + 8] = (uint8_t)(y[i].scales[j % 4 + 8] | (l << (2 * (j / 4))));
            }
            y[i].d = q_f32_to_f16(1 / iscale);
        } else {
            y[i].d = q_f32_to_f16(0.f);
        }
        int8_t sc[16];
        q_ref_scales_q3_K(y[i].scales, sc);
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            float d = q_f16_to_f32(y[i].d) * (float)sc[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (int8_t)(clampi(q_ref_nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
        }
        memset(y[i].hmask, 0, Q_QK_K / 8);
        /* the high bit of element j goes to hmask[j % 32], bit j / 32 */
        for (int j = 0; j < Q_QK_K; ++j) {
            if (L[j] > 3) {
                y[i].hmask[j % 32] = (uint8_t)(y[i].hmask[j % 32] | (1u << (j / 32)));
                L[j] = (int8_t)(L[j] - 4);
            }
        }
        pack_2bit((const uint8_t *)L, y[i].qs);
    }
}

static void unpack_q3_K(const block_q3_K *b, int8_t q[Q_QK_K]) {
    for (int e = 0; e < Q_QK_K; e++) {
        int lo = (b->qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        int hi = (b->hmask[e % 32] >> (e / 32)) & 1;
        q[e] = (int8_t)(lo - (hi ? 0 : 4));
    }
}

void q_ref_dequantize_q3_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q3_K *x = src;
    int8_t q[Q_QK_K], sc[16];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float d_all = q_f16_to_f32(x[i].d);
        unpack_q3_K(&x[i], q);
        q_ref_scales_q3_K(x[i].scales, sc);
        float *y = dst + i * Q_QK_K;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            const float dl = d_all * (float)sc[k];
            for (int l = 0; l < 16; l++) y[16 * k + l] = dl * (float)q[16 * k + l];
        }
    }
}

void q_ref_vec_dot_q3_K_q8_K(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q3_K *x = w;
    const block_q8_K *y = a;
    int8_t q[Q_QK_K], sc[16];
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        unpack_q3_K(&x[i], q);
        q_ref_scales_q3_K(x[i].scales, sc);
        int32_t isum = 0;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += q[16 * k + l] * y[i].qs[16 * k + l];
            isum += sc[k] * sub;
        }
        acc += (q_f16_to_f32(x[i].d) * y[i].d) * (float)isum;
    }
    *s = acc;
}

/* ====================== Q4_K / Q5_K shared parts ====================== */

/* The first stage of Q4_K/Q5_K: per 32-element sub-block scale and min by
 * make_qkx2_quants, then 6-bit scales/mins against the super-block maxima,
 * then requantization of every element against the rounded scales. */
static void quantize_k4_scales(const float *x, int nmax, float rmin, int nstep, uint8_t scales_out[12],
                               q_f16_t *d_out, q_f16_t *dmin_out, uint8_t L[Q_QK_K]) {
    uint8_t Laux[32];
    float weights[32], mins[Q_QK_K / 32], scales[Q_QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < Q_QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep,
                                     false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < Q_QK_K / 32; ++j) {
        uint8_t ls = (uint8_t)q_ref_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)q_ref_nearest_int(inv_min * mins[j]);
        if (ls > 63) ls = 63;
        if (lm > 63) lm = 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] = (uint8_t)(scales_out[j - 4] | ((ls >> 4) << 6));
            scales_out[j - 0] = (uint8_t)(scales_out[j - 0] | ((lm >> 4) << 6));
        }
    }
    *d_out = q_f32_to_f16(max_scale / 63.f);
    *dmin_out = q_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < Q_QK_K / 32; ++j) {
        uint8_t sc, m;
        q_ref_scale_min_k4(j, scales_out, &sc, &m);
        const float d = q_f16_to_f32(*d_out) * (float)sc;
        if (d == 0.0f) continue;
        const float dm = q_f16_to_f32(*dmin_out) * (float)m;
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = (uint8_t)clampi(q_ref_nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
    }
}

/* ============================== Q4_K ============================== */

void q_ref_quantize_q4_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q4_K *y = dst;
    uint8_t L[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        quantize_k4_scales(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < Q_QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
            q += 32;
        }
    }
}

static void unpack_q4_K(const block_q4_K *b, int8_t q[Q_QK_K]) {
    for (int e = 0; e < Q_QK_K; e++) {
        uint8_t byte = b->qs[(e / 64) * 32 + e % 32];
        q[e] = (int8_t)(((e % 64) < 32) ? (byte & 0xF) : (byte >> 4));
    }
}

void q_ref_dequantize_q4_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q4_K *x = src;
    int8_t q[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float d = q_f16_to_f32(x[i].d), min = q_f16_to_f32(x[i].dmin);
        unpack_q4_K(&x[i], q);
        float *y = dst + i * Q_QK_K;
        for (int k = 0; k < Q_QK_K / 32; k++) {
            uint8_t sc, m;
            q_ref_scale_min_k4(k, x[i].scales, &sc, &m);
            const float dl = d * (float)sc, ml = min * (float)m;
            for (int l = 0; l < 32; l++) y[32 * k + l] = dl * (float)q[32 * k + l] - ml;
        }
    }
}

/* Shared by Q4_K and Q5_K once the quants are unpacked. */
static float dot_k4_block(const int8_t q[Q_QK_K], const uint8_t scales[12], q_f16_t d, q_f16_t dmin,
                          const block_q8_K *y) {
    int32_t isum = 0, msum = 0;
    for (int k = 0; k < Q_QK_K / 32; k++) {
        uint8_t sc, m;
        q_ref_scale_min_k4(k, scales, &sc, &m);
        int32_t sub = 0;
        for (int l = 0; l < 32; l++) sub += q[32 * k + l] * y->qs[32 * k + l];
        isum += sc * sub;
        msum += m * (y->bsums[2 * k] + y->bsums[2 * k + 1]);
    }
    return (q_f16_to_f32(d) * y->d) * (float)isum - (q_f16_to_f32(dmin) * y->d) * (float)msum;
}

void q_ref_vec_dot_q4_K_q8_K(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    int8_t q[Q_QK_K];
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        unpack_q4_K(&x[i], q);
        acc += dot_k4_block(q, x[i].scales, x[i].d, x[i].dmin, &y[i]);
    }
    *s = acc;
}

/* ============================== Q5_K ============================== */

void q_ref_quantize_q5_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q5_K *y = dst;
    uint8_t L[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        quantize_k4_scales(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, Q_QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int nn = 0; nn < Q_QK_K; nn += 64) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[nn + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                int l2 = L[nn + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
            ql += 32;
        }
    }
}

static void unpack_q5_K(const block_q5_K *b, int8_t q[Q_QK_K]) {
    for (int e = 0; e < Q_QK_K; e++) {
        uint8_t byte = b->qs[(e / 64) * 32 + e % 32];
        int lo = ((e % 64) < 32) ? (byte & 0xF) : (byte >> 4);
        int hi = (b->qh[e % 32] >> (e / 32)) & 1;
        q[e] = (int8_t)(lo + 16 * hi);
    }
}

void q_ref_dequantize_q5_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q5_K *x = src;
    int8_t q[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float d = q_f16_to_f32(x[i].d), min = q_f16_to_f32(x[i].dmin);
        unpack_q5_K(&x[i], q);
        float *y = dst + i * Q_QK_K;
        for (int k = 0; k < Q_QK_K / 32; k++) {
            uint8_t sc, m;
            q_ref_scale_min_k4(k, x[i].scales, &sc, &m);
            const float dl = d * (float)sc, ml = min * (float)m;
            for (int l = 0; l < 32; l++) y[32 * k + l] = dl * (float)q[32 * k + l] - ml;
        }
    }
}

void q_ref_vec_dot_q5_K_q8_K(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    int8_t q[Q_QK_K];
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        unpack_q5_K(&x[i], q);
        acc += dot_k4_block(q, x[i].scales, x[i].d, x[i].dmin, &y[i]);
    }
    *s = acc;
}

/* ============================== Q6_K ============================== */

void q_ref_quantize_q6_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q6_K *y = dst;
    int8_t L[Q_QK_K];
    float scales[Q_QK_K / 16];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < Q_QK_K / 16; ++ib) {
            const float scale = make_qx_quants_w2(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(block_q6_K));
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = q_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < Q_QK_K / 16; ++ib) {
            int v = q_ref_nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            float d = q_f16_to_f32(y[i].d) * (float)y[i].scales[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ++ii)
                L[16 * j + ii] = (int8_t)(clampi(q_ref_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < Q_QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

static void unpack_q6_K(const block_q6_K *b, int8_t q[Q_QK_K]) {
    for (int e = 0; e < Q_QK_K; e++) {
        const int h = e / 128, quarter = (e % 128) / 32, l = e % 32;
        const uint8_t byte = b->ql[h * 64 + l + 32 * (quarter & 1)];
        const int lo = (quarter & 2) ? (byte >> 4) : (byte & 0xF);
        const int hi = (b->qh[h * 32 + l] >> (2 * quarter)) & 3;
        q[e] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

void q_ref_dequantize_q6_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q6_K *x = src;
    int8_t q[Q_QK_K];
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float d = q_f16_to_f32(x[i].d);
        unpack_q6_K(&x[i], q);
        float *y = dst + i * Q_QK_K;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            const float dl = d * (float)x[i].scales[k];
            for (int l = 0; l < 16; l++) y[16 * k + l] = dl * (float)q[16 * k + l];
        }
    }
}

void q_ref_vec_dot_q6_K_q8_K(int64_t n, float *s, const void *w, const void *a) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    int8_t q[Q_QK_K];
    float acc = 0.0f;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        unpack_q6_K(&x[i], q);
        int32_t isum = 0;
        for (int k = 0; k < Q_QK_K / 16; k++) {
            int32_t sub = 0;
            for (int l = 0; l < 16; l++) sub += q[16 * k + l] * y[i].qs[16 * k + l];
            isum += x[i].scales[k] * sub;
        }
        acc += (q_f16_to_f32(x[i].d) * y[i].d) * (float)isum;
    }
    *s = acc;
}

/* ============================== Q8_K ============================== */

void q_ref_quantize_q8_K(const float *src, void *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    block_q8_K *y = dst;
    for (int64_t i = 0; i < n / Q_QK_K; i++) {
        const float *x = src + i * Q_QK_K;
        float max = 0, amax = 0;
        for (int j = 0; j < Q_QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            y[i].d = 0;
            memset(y[i].qs, 0, sizeof y[i].qs);
            memset(y[i].bsums, 0, sizeof y[i].bsums); /* ggml leaves them unset */
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < Q_QK_K; ++j) {
            int v = q_ref_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < Q_QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void q_ref_dequantize_q8_K(const void *src, float *dst, int64_t n) {
    KN_ASSERT(n % Q_QK_K == 0);
    const block_q8_K *x = src;
    for (int64_t i = 0; i < n / Q_QK_K; i++)
        for (int j = 0; j < Q_QK_K; ++j) dst[i * Q_QK_K + j] = x[i].d * (float)x[i].qs[j];
}
