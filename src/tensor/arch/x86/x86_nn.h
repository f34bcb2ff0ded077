/*
 * x86_nn.h — internal to src/tensor: the x86 attention tile and SwiGLU
 * kernels (q_attn_tile_fn, q_swiglu_fn in tensor.h). tensor_ops_init
 * installs them per set.
 */
#ifndef KILN_TENSOR_ARCH_X86_NN_H
#define KILN_TENSOR_ARCH_X86_NN_H

#include "kiln/tensor.h"

void tensor_x86_avx2_attn_tile_f16(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k, const q_f16_t *v,
                                   float scale, float *m, float *l, float *acc, float *s);
void tensor_x86_avx512_attn_tile_f16(int64_t hd, int G, int64_t n, const float *q, const q_f16_t *k,
                                     const q_f16_t *v, float scale, float *m, float *l, float *acc, float *s);

void tensor_x86_avx2_swiglu(int64_t n, float *out, const float *gate, const float *up);
void tensor_x86_avx512_swiglu(int64_t n, float *out, const float *gate, const float *up);

#endif
