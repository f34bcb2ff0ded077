/*
 * x86_float.h — internal kernel template for F32 x F32, F16 x F16 and
 * BF16 x BF16, shared by kernels_avx2.c and kernels_avx512.c. The includer
 * defines the vector type of its float accumulators and:
 *
 *   XF_W                     floats per vector;
 *   xf_vec                   the vector type (__m256 / __m512);
 *   xf_zero(), xf_fma(a,b,c), xf_hsum(v) (the one fixed reduction);
 *   xf_load(kind, p, n)      n <= XF_W elements of type kind (0 F32,
 *                            1 F16, 2 BF16) from p as floats, zero-filled;
 *   XF_MV_R, XF_MM_R, XF_MM_C tile shapes (XF_MM_R * XF_MM_C <= 16).
 *
 * Every (row, column) pair owns one accumulator vector, updated by FMA over
 * K in steps of XF_W with the tail as a final zero-filled step, then reduced
 * by xf_hsum: the same sequence for every tile shape, so outputs are
 * batch-invariant within the set.
 */
#ifndef KILN_TENSOR_ARCH_X86_FLOAT_H
#define KILN_TENSOR_ARCH_X86_FLOAT_H

XAI void xf_tile(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, float *y,
                 int64_t ldy, const int R, const int C, const int kind) {
    const uint8_t *wp[16], *ap[16];
    x_tile_ptrs(w, ws, nr, a, as, nc, R, C, wp, ap);
    const size_t es = kind == 0 ? 4 : 2;
    xf_vec acc[16];
    XUNROLL for (int p = 0; p < R * C; p++) acc[p] = xf_zero();
    int64_t k = 0;
    for (; k + XF_W <= K; k += XF_W) {
        xf_vec av[16];
        XUNROLL for (int c = 0; c < C; c++) av[c] = xf_load(kind, ap[c] + (size_t)k * es, XF_W);
        XUNROLL for (int r = 0; r < R; r++) {
            x_prefetch(wp[r] + (size_t)k * es + 1024);
            const xf_vec wv = xf_load(kind, wp[r] + (size_t)k * es, XF_W);
            XUNROLL for (int c = 0; c < C; c++) acc[r * C + c] = xf_fma(wv, av[c], acc[r * C + c]);
        }
    }
    if (k < K) {
        const int rem = (int)(K - k);
        xf_vec av[16];
        XUNROLL for (int c = 0; c < C; c++) av[c] = xf_load(kind, ap[c] + (size_t)k * es, rem);
        XUNROLL for (int r = 0; r < R; r++) {
            const xf_vec wv = xf_load(kind, wp[r] + (size_t)k * es, rem);
            XUNROLL for (int c = 0; c < C; c++) acc[r * C + c] = xf_fma(wv, av[c], acc[r * C + c]);
        }
    }
    for (int p = 0; p < R * C; p++) {
        const int r = p / C, c = p % C;
        if (r < nr && c < nc) y[(int64_t)c * ldy + r] = xf_hsum(acc[p]);
    }
}

X_NOSAN static void xf_gemm_drive(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                          float *y, int64_t ldy, x_tile_fn mv, x_tile_fn mm) {
    const int full = nc - nc % XF_MM_C;
    for (int cb = 0; cb < full; cb += X_CB) {
        const int ce = cb + X_CB < full ? cb + X_CB : full;
        for (int r = 0; r < nr; r += XF_MM_R)
            for (int c = cb; c < ce; c += XF_MM_C)
                mm(K, w + (size_t)r * ws, ws, nr - r < XF_MM_R ? nr - r : XF_MM_R, a + (size_t)c * as, as, XF_MM_C,
                   y + (int64_t)c * ldy + r, ldy);
    }
    for (int c = full; c < nc; c++)
        for (int r = 0; r < nr; r += XF_MV_R)
            mv(K, w + (size_t)r * ws, ws, nr - r < XF_MV_R ? nr - r : XF_MV_R, a + (size_t)c * as, as, 1,
               y + (int64_t)c * ldy + r, ldy);
}

#define XF_KERNELS(name, KIND)                                                                               \
    X_NOSAN static void name##_mv(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, \
                          float *y, int64_t ldy) {                                                           \
        xf_tile(K, w, ws, nr, a, as, nc, y, ldy, XF_MV_R, 1, KIND);                                          \
    }                                                                                                        \
    X_NOSAN static void name##_mm(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc, \
                          float *y, int64_t ldy) {                                                           \
        xf_tile(K, w, ws, nr, a, as, nc, y, ldy, XF_MM_R, XF_MM_C, KIND);                                    \
    }                                                                                                        \
    X_NOSAN static void name##_vec_dot(int64_t n, float *s, const void *w, const void *a) {                         \
        xf_tile(n, w, 0, 1, a, 0, 1, s, 0, 1, 1, KIND);                                                      \
    }                                                                                                        \
    X_NOSAN static void name##_gemm(int64_t K, const void *w, size_t ws, int nr, const void *a, size_t as, int nc,  \
                            float *y, int64_t ldy) {                                                         \
        xf_gemm_drive(K, w, ws, nr, a, as, nc, y, ldy, name##_mv, name##_mm);                                \
    }

XF_KERNELS(f32, 0)
XF_KERNELS(f16, 1)
XF_KERNELS(bf16, 2)

X_NOSAN static void xf_install(tensor_ops *ops) {
    ops->vec_dot[Q_TYPE_F32] = f32_vec_dot;
    ops->gemm[Q_TYPE_F32] = f32_gemm;
    ops->vec_dot[Q_TYPE_F16] = f16_vec_dot;
    ops->gemm[Q_TYPE_F16] = f16_gemm;
    ops->vec_dot[Q_TYPE_BF16] = bf16_vec_dot;
    ops->gemm[Q_TYPE_BF16] = bf16_gemm;
}

#endif
