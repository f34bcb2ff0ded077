/*
 * nn_avx2.c — attention tile and SwiGLU kernels for AVX2+FMA+F16C (see
 * tensor.h, q_attn_tile_fn and q_swiglu_fn). Head dimensions that are not a multiple of 8 use the
 * reference kernel. exp() is a vectorized polynomial (Cephes' expf).
 */
#include "arch/x86/x86_nn.h"

#include <immintrin.h>
#include <math.h>

static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201E-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float hsum256(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

enum { MAXC = 16 };

void tensor_x86_avx2_attn_tile_f16(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k, const q_f16_t *v,
                                   float scale, float *m, float *l, float *acc, float *s) {
    const int nc = (int)(hd / 8);
    if (hd % 8 || nc > MAXC) {
        tensor_attn_tile_f16_ref(hd, G, n, q, k, v, scale, m, l, acc, s);
        return;
    }
    __m256 kr[MAXC];
    for (int64_t i = 0; i < n; i++) {
        const q_f16_t *ki = k + (size_t)i * hd;
        for (int c = 0; c < nc; c++) kr[c] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ki + c * 8)));
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qg), kr[0]);
            for (int c = 1; c < nc; c++) a = _mm256_fmadd_ps(_mm256_loadu_ps(qg + c * 8), kr[c], a);
            s[(size_t)g * n + i] = hsum256(a) * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        float *sg = s + (size_t)g * n;
        float tmax = -INFINITY;
        for (int64_t i = 0; i < n; i++) tmax = sg[i] > tmax ? sg[i] : tmax;
        const float mn = tmax > m[g] ? tmax : m[g];
        const float corr = m[g] == -INFINITY ? 0.0f : expf(m[g] - mn);
        const __m256 vm = _mm256_set1_ps(mn);
        __m256 sum = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sg + i), vm));
            _mm256_storeu_ps(sg + i, e);
            sum = _mm256_add_ps(sum, e);
        }
        float tsum = hsum256(sum);
        if (i < n) { /* tail through the same vector code, zero-padded */
            float buf[8] = {0};
            for (int64_t j = i; j < n; j++) buf[j - i] = sg[j] - mn;
            __m256 e = exp256(_mm256_loadu_ps(buf));
            _mm256_storeu_ps(buf, e);
            for (int64_t j = i; j < n; j++) {
                sg[j] = buf[j - i];
                tsum += buf[j - i];
            }
        }
        l[g] = l[g] * corr + tsum;
        m[g] = mn;
        float *ag = acc + (size_t)g * hd;
        const __m256 vc = _mm256_set1_ps(corr);
        for (int c = 0; c < nc; c++) _mm256_storeu_ps(ag + c * 8, _mm256_mul_ps(_mm256_loadu_ps(ag + c * 8), vc));
    }
    for (int64_t i = 0; i < n; i++) {
        const q_f16_t *vi = v + (size_t)i * hd;
        for (int c = 0; c < nc; c++) kr[c] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vi + c * 8)));
        for (int g = 0; g < G; g++) {
            const __m256 w = _mm256_set1_ps(s[(size_t)g * n + i]);
            float *ag = acc + (size_t)g * hd;
            for (int c = 0; c < nc; c++)
                _mm256_storeu_ps(ag + c * 8, _mm256_fmadd_ps(w, kr[c], _mm256_loadu_ps(ag + c * 8)));
        }
    }
}

void tensor_x86_avx2_swiglu(int64_t n, float *out, const float *gate, const float *up) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 sg = _mm256_div_ps(g, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(sg, _mm256_loadu_ps(up + i)));
    }
    if (i < n) { /* tail through the same vector code, zero-padded */
        float g8[8] = {0}, u8[8] = {0}, o8[8];
        for (int64_t j = i; j < n; j++) g8[j - i] = gate[j], u8[j - i] = up[j];
        tensor_x86_avx2_swiglu(8, o8, g8, u8);
        for (int64_t j = i; j < n; j++) out[j] = o8[j - i];
    }
}
