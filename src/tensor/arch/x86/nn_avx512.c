/*
 * nn_avx512.c — attention tile and SwiGLU kernels for AVX-512 (see kiln/tensor.h,
 * q_attn_tile_fn and q_swiglu_fn). F16 keys/values are widened with vcvtph2ps; the head
 * dimension is covered in 16-lane chunks with a masked tail, so any hd
 * works. Each key row is widened once and reused by the G query heads of
 * its group. exp() is a vectorized polynomial (Cephes' expf, ~1 ulp).
 */
#include "arch/x86/x86_nn.h"

#include <immintrin.h>
#include <math.h>

static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-88.3762626647949f));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(5.0000001201E-1f));
    __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, fx);
}

enum { MAXC = 16 }; /* chunks of 16: hd up to 256 keeps a row in registers */

static inline __m512 load_f16(const q_f16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

void tensor_x86_avx512_attn_tile_f16(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k,
                                     const q_f16_t *v, float scale, float *m, float *l, float *acc, float *s) {
    const int nc = (int)((hd + 15) / 16);
    if (nc > MAXC) {
        tensor_attn_tile_f16_ref(hd, G, n, q, k, v, scale, m, l, acc, s);
        return;
    }
    const __mmask16 tail = (hd % 16) ? (__mmask16)((1u << (hd % 16)) - 1) : (__mmask16)0xffff;
    __m512 kr[MAXC];
    /* scores: s[g][i] = dot(q[g], k[i]) * scale */
    for (int64_t i = 0; i < n; i++) {
        const q_f16_t *ki = k + (size_t)i * hd;
        for (int c = 0; c < nc; c++) kr[c] = load_f16(ki + c * 16, c == nc - 1 ? tail : 0xffff);
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            __m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(nc == 1 ? tail : 0xffff, qg), kr[0]);
            for (int c = 1; c < nc; c++)
                a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(c == nc - 1 ? tail : 0xffff, qg + c * 16), kr[c], a);
            s[(size_t)g * n + i] = _mm512_reduce_add_ps(a) * scale;
        }
    }
    /* online softmax update per head; s becomes the weights */
    for (int g = 0; g < G; g++) {
        float *sg = s + (size_t)g * n;
        float tmax = -INFINITY;
        for (int64_t i = 0; i < n; i++) tmax = sg[i] > tmax ? sg[i] : tmax;
        const float mn = tmax > m[g] ? tmax : m[g];
        const float corr = m[g] == -INFINITY ? 0.0f : expf(m[g] - mn);
        const __m512 vm = _mm512_set1_ps(mn);
        __m512 sum = _mm512_setzero_ps();
        for (int64_t i = 0; i < n; i += 16) {
            __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sg + i), vm));
            e = _mm512_maskz_mov_ps(mk, e);
            _mm512_mask_storeu_ps(sg + i, mk, e);
            sum = _mm512_add_ps(sum, e);
        }
        l[g] = l[g] * corr + _mm512_reduce_add_ps(sum);
        m[g] = mn;
        float *ag = acc + (size_t)g * hd;
        const __m512 vc = _mm512_set1_ps(corr);
        for (int c = 0; c < nc; c++) {
            __mmask16 mk = c == nc - 1 ? tail : 0xffff;
            _mm512_mask_storeu_ps(ag + c * 16, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, ag + c * 16), vc));
        }
    }
    /* values: acc[g] += sum_i w[g][i] * v[i] */
    for (int64_t i = 0; i < n; i++) {
        const q_f16_t *vi = v + (size_t)i * hd;
        for (int c = 0; c < nc; c++) kr[c] = load_f16(vi + c * 16, c == nc - 1 ? tail : 0xffff);
        for (int g = 0; g < G; g++) {
            const __m512 w = _mm512_set1_ps(s[(size_t)g * n + i]);
            float *ag = acc + (size_t)g * hd;
            for (int c = 0; c < nc; c++) {
                __mmask16 mk = c == nc - 1 ? tail : 0xffff;
                _mm512_mask_storeu_ps(ag + c * 16, mk,
                                      _mm512_fmadd_ps(w, kr[c], _mm512_maskz_loadu_ps(mk, ag + c * 16)));
            }
        }
    }
}

void tensor_x86_avx512_swiglu(int64_t n, float *out, const float *gate, const float *up) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(mk, gate + i);
        __m512 sg = _mm512_div_ps(g, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_mask_storeu_ps(out + i, mk, _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(mk, up + i)));
    }
}
