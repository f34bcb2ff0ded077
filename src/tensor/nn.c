/*
 * nn.c — the reference (generic C) versions of the neural-network kernels
 * that are not matmuls: the attention tile and SwiGLU (see kiln/tensor.h). The
 * x86 versions live in arch/x86/nn_avx2.c and nn_avx512.c.
 */
#include "kiln/tensor.h"

#include <math.h>

void tensor_attn_tile_f16_ref(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k, const q_f16_t *v,
                              float scale, float *m, float *l, float *acc, float *s) {
    for (int g = 0; g < G; g++) {
        const float *qg = q + (size_t)g * hd;
        float *sg = s + (size_t)g * n;
        float tmax = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            const q_f16_t *kr = k + (size_t)i * hd;
            float d = 0.0f;
            for (int64_t j = 0; j < hd; j++) d += qg[j] * q_f16_to_f32(kr[j]);
            d *= scale;
            sg[i] = d;
            if (d > tmax) tmax = d;
        }
        const float mn = tmax > m[g] ? tmax : m[g];
        const float corr = expf(m[g] - mn);
        float *ag = acc + (size_t)g * hd;
        l[g] *= corr;
        for (int64_t j = 0; j < hd; j++) ag[j] *= corr;
        for (int64_t i = 0; i < n; i++) {
            const float e = expf(sg[i] - mn);
            l[g] += e;
            const q_f16_t *vr = v + (size_t)i * hd;
            for (int64_t j = 0; j < hd; j++) ag[j] += e * q_f16_to_f32(vr[j]);
        }
        m[g] = mn;
    }
}

void tensor_swiglu_ref(int64_t n, float *out, const float *gate, const float *up) {
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
