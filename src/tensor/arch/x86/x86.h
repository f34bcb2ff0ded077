/*
 * x86.h — internal to src/tensor: the x86 kernel sets.
 *
 * kernels_avx2.c (AVX2+FMA+F16C) and kernels_avx512.c (AVX-512 F/BW/VL/DQ,
 * VNNI) each export one function that overwrites the entries of a tensor_ops
 * for which it has a kernel; tensor_ops_init (ops.c) calls them in order
 * generic -> avx2 -> avx512, so a set inherits the lower set's kernels.
 *
 * Numerics (what holds now; tensor.h requires batch invariance within a set
 * and closeness to the scalar reference, see quants_ref.h):
 *  - block types, reference order (AVX2: all; AVX-512: Q4_0, Q8_0, MXFP4,
 *    and every type without VNNI): per block, an exact int32 sum (any lane
 *    layout: integer addition is associative), then the reference's float
 *    update, computed with separately rounded mul/add intrinsics in the
 *    reference's order. The results are bit-identical to the scalar
 *    reference and to every set doing the same, under any tiling.
 *  - AVX-512 VNNI Q4_K, Q5_K and Q6_K, per-lane order: per (row, column) one zmm
 *    of 16 float partial sums lives across all super-blocks; each
 *    super-block adds, with one FMA per lane, an exact int32 lane sum
 *    (scaled sub-block dots, and for Q4_K/Q5_K the mins in lanes 8-15) converted
 *    to float, times (d or -dmin of the row) * d of the column; one fixed
 *    horizontal sum gives the output. vec_dot, matvec and gemm tiles run the
 *    same per-pair code (kernels_avx512.c), so within the set each output
 *    has one reduction order (batch-invariant, bit for bit); against the
 *    reference and other sets only closeness holds (float summation order;
 *    tested to 1e-5 of sum |w_i * a_i|).
 *  - float types (F32/F16/BF16): per (row, column) one vector accumulator
 *    updated with FMA over K in steps of the vector width, a zero-padded
 *    tail step, then one fixed horizontal reduction. The gemm tiles and
 *    vec_dot use the same per-element helper, so within one set every
 *    output element has one reduction order (batch-invariant); across sets
 *    only closeness holds.
 */
#ifndef KILN_TENSOR_ARCH_X86_H
#define KILN_TENSOR_ARCH_X86_H

#include "kiln/tensor.h"

/* Kernel functions are excluded from sanitizer instrumentation: clang's
 * ASan/UBSan passes take many CPU-minutes on these heavily inlined tiles.
 * The tests check every kernel's output against the scalar reference. */
#define X_NOSAN __attribute__((no_sanitize("address", "undefined")))
#define X_INLINE static inline __attribute__((always_inline)) X_NOSAN

/* Installs the AVX2 kernels (vec_dot, gemm, activation quantizers). */
void tensor_x86_avx2_init(tensor_ops *ops);
/* Installs the AVX-512 kernels. Integer kernels need VNNI: without it the
 * AVX2 integer kernels stay in place and only the float kernels change. */
void tensor_x86_avx512_init(tensor_ops *ops, bool vnni);

/* Compute-peak probes: run `iters` rounds of 12 independent dot/FMA chains
 * and return the operations done (a multiply-add counts 2). */
uint64_t tensor_x86_avx2_peak_int8(int64_t iters);
uint64_t tensor_x86_avx2_peak_fma(int64_t iters);
uint64_t tensor_x86_avx512_peak_int8(int64_t iters); /* needs VNNI */
uint64_t tensor_x86_avx512_peak_fma(int64_t iters);

#endif
