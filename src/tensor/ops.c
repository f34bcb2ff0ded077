/*
 * ops.c — kernel-set selection (tensor_ops_init), activation quantization
 * and the thread-pooled, batched matmul driver; plus the read-bandwidth
 * probe used by the benchmarks.
 *
 * Invariants:
 *  - the generic set is the scalar reference (from the traits table); the
 *    avx2 and avx512 sets overwrite the entries they have kernels for, so a
 *    type without a SIMD kernel falls back to the lower set, then to the
 *    reference;
 *  - tensor_matmul splits rows in contiguous ranges aligned to
 *    TENSOR_ROW_ALIGN; every output element is computed by the same
 *    per-element sequence whatever the split or the column count (the
 *    kernels guarantee this, see arch/x86/x86.h), so results are
 *    batch-invariant and independent of the thread count;
 *  - nothing is allocated per matmul call.
 */
#include "kiln/tensor.h"

#include "arch/x86/x86.h"
#include "arch/x86/x86_nn.h"

#include <stdlib.h>

/* Row ranges per thread are multiples of this (a multiple of every tile height). */
#define TENSOR_ROW_ALIGN 16

void tensor_ops_init(tensor_ops *ops, kn_cpu_level lvl) {
    memset(ops, 0, sizeof *ops);
    ops->level = lvl;
    for (uint32_t t = 0; t < Q_TYPE_COUNT; t++) {
        const q_traits *tr = q_get_traits(t);
        if (!tr || !tr->name) continue;
        if (tr->vec_dot && tr->to_float) ops->vec_dot[t] = tr->vec_dot;
        if (tr->from_float) ops->quantize[t] = tr->from_float;
    }
    ops->attn_tile_f16 = tensor_attn_tile_f16_ref;
    ops->swiglu = tensor_swiglu_ref;
    if (lvl >= KN_CPU_AVX2) {
        ops->attn_tile_f16 = tensor_x86_avx2_attn_tile_f16;
        ops->swiglu = tensor_x86_avx2_swiglu;
    }
    if (lvl >= KN_CPU_AVX512) {
        ops->attn_tile_f16 = tensor_x86_avx512_attn_tile_f16;
        ops->swiglu = tensor_x86_avx512_swiglu;
    }
    if (lvl >= KN_CPU_AVX2) tensor_x86_avx2_init(ops);
    if (lvl >= KN_CPU_AVX512) {
        kn_cpu_features f;
        kn_cpu_features_detect(&f);
        ops->vnni = f.avx512vnni;
        tensor_x86_avx512_init(ops, ops->vnni);
    }
}

/* The activation type of a weight type (asserts it is computable). */
static q_type act_type(q_type wtype) {
    const q_traits *tr = q_get_traits(wtype);
    KN_ASSERT(tr && tr->vec_dot);
    return tr->vec_dot_type;
}

size_t tensor_act_bytes(q_type wtype, int64_t K, int64_t n_cols) {
    const size_t row = q_row_size(act_type(wtype), K);
    KN_ASSERT(row > 0 && n_cols >= 0);
    return row * (size_t)n_cols;
}

void tensor_act_quantize(const tensor_ops *ops, q_type wtype, const float *x, int64_t ldx, int64_t K,
                         int64_t n_cols, void *act) {
    const q_type at = act_type(wtype);
    const size_t row = q_row_size(at, K);
    q_from_float_fn fn = ops->quantize[at];
    KN_ASSERT(fn && row > 0);
    for (int64_t c = 0; c < n_cols; c++) fn(x + c * ldx, (uint8_t *)act + (size_t)c * row, K);
}

void tensor_matmul_rows(const tensor_ops *ops, q_type wtype, const void *w, int64_t K, int64_t row_lo,
                        int64_t row_hi, const void *act, int64_t n_cols, float *y, int64_t ldy) {
    if (row_hi <= row_lo || n_cols <= 0) return;
    const size_t wrow = q_row_size(wtype, K);
    const size_t arow = q_row_size(act_type(wtype), K);
    KN_ASSERT(wrow > 0 && arow > 0);
    const uint8_t *wl = (const uint8_t *)w + (size_t)row_lo * wrow;
    q_gemm_fn gemm = ops->gemm[wtype];
    if (gemm) {
        /* Tiles take int counts: feed them bounded chunks. */
        const int64_t RCH = 1 << 20, CCH = 1 << 20;
        for (int64_t r = row_lo; r < row_hi; r += RCH) {
            const int64_t nr = row_hi - r < RCH ? row_hi - r : RCH;
            for (int64_t c = 0; c < n_cols; c += CCH) {
                const int64_t nc = n_cols - c < CCH ? n_cols - c : CCH;
                gemm(K, (const uint8_t *)w + (size_t)r * wrow, wrow, (int)nr, (const uint8_t *)act + (size_t)c * arow,
                     arow, (int)nc, y + c * ldy + r, ldy);
            }
        }
        return;
    }
    q_vec_dot_fn dot = ops->vec_dot[wtype];
    KN_ASSERT(dot);
    for (int64_t r = row_lo; r < row_hi; r++) {
        const uint8_t *wr = wl + (size_t)(r - row_lo) * wrow;
        for (int64_t c = 0; c < n_cols; c++) dot(K, &y[c * ldy + r], wr, (const uint8_t *)act + (size_t)c * arow);
    }
}

typedef struct matmul_job {
    const tensor_ops *ops;
    q_type wtype;
    const void *w;
    int64_t K, M;
    const void *act;
    int64_t n_cols;
    float *y;
    int64_t ldy;
} matmul_job;

static void matmul_worker(void *ctx, int ith, int nth) {
    const matmul_job *j = ctx;
    int64_t lo, hi;
    kn_split_range(j->M, TENSOR_ROW_ALIGN, ith, nth, &lo, &hi);
    tensor_matmul_rows(j->ops, j->wtype, j->w, j->K, lo, hi, j->act, j->n_cols, j->y, j->ldy);
}

void tensor_matmul(const tensor_ops *ops, kn_pool *pool, q_type wtype, const void *w, int64_t K, int64_t M,
                   const void *act, int64_t n_cols, float *y, int64_t ldy) {
    matmul_job j = {ops, wtype, w, K, M, act, n_cols, y, ldy};
    if (!pool || kn_pool_size(pool) == 1 || M <= TENSOR_ROW_ALIGN) {
        matmul_worker(&j, 0, 1);
        return;
    }
    kn_pool_run(pool, matmul_worker, &j);
}

/* ---- read bandwidth ---- */

typedef struct bw_job {
    const uint64_t *buf;
    size_t n; /* uint64 words */
    uint64_t sink[64];
} bw_job;

static void bw_worker(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    int64_t lo, hi;
    kn_split_range((int64_t)j->n, 64, ith, nth, &lo, &hi);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (int64_t i = lo; i + 8 <= hi; i += 8) {
        a0 += j->buf[i];
        a1 += j->buf[i + 1];
        a2 += j->buf[i + 2];
        a3 += j->buf[i + 3];
        a4 += j->buf[i + 4];
        a5 += j->buf[i + 5];
        a6 += j->buf[i + 6];
        a7 += j->buf[i + 7];
    }
    j->sink[ith % 64] = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

double tensor_measure_bandwidth(kn_pool *pool, size_t bytes) {
    size_t n = bytes / sizeof(uint64_t);
    if (n < 4096) n = 4096;
    uint64_t *buf = kn_alloc_aligned(n * sizeof(uint64_t));
    if (!buf) return 0.0;
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
    bw_job j = {.buf = buf, .n = n};
    double best = 0.0;
    kn_pool_run(pool, bw_worker, &j); /* warm-up: page faults, thread wake-up */
    for (int rep = 0; rep < 5; rep++) {
        const double t0 = kn_now_s();
        kn_pool_run(pool, bw_worker, &j);
        const double dt = kn_now_s() - t0;
        if (dt > 0 && (double)(n * sizeof(uint64_t)) / dt > best) best = (double)(n * sizeof(uint64_t)) / dt;
    }
    kn_free_aligned(buf);
    return best;
}

/* ---- compute peak ---- */

typedef struct peak_job {
    uint64_t (*fn)(int64_t iters);
    int64_t iters;
    uint64_t ops[64];
} peak_job;

static void peak_worker(void *ctx, int ith, int nth) {
    peak_job *j = ctx;
    (void)nth;
    j->ops[ith % 64] = j->fn(j->iters);
}

double tensor_measure_peak(kn_pool *pool, kn_cpu_level lvl, bool int8) {
    peak_job j = {.fn = NULL, .iters = 1 << 20};
    if (lvl == KN_CPU_AVX512) {
        kn_cpu_features f;
        kn_cpu_features_detect(&f);
        j.fn = int8 ? (f.avx512vnni ? tensor_x86_avx512_peak_int8 : tensor_x86_avx2_peak_int8)
                    : tensor_x86_avx512_peak_fma;
    } else if (lvl == KN_CPU_AVX2) {
        j.fn = int8 ? tensor_x86_avx2_peak_int8 : tensor_x86_avx2_peak_fma;
    }
    if (!j.fn) return 0.0;
    kn_pool_run(pool, peak_worker, &j); /* warm-up (clocks, wake-up) */
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = kn_now_s();
        kn_pool_run(pool, peak_worker, &j);
        const double dt = kn_now_s() - t0;
        uint64_t ops = 0;
        for (int i = 0; i < kn_pool_size(pool) && i < 64; i++) ops += j.ops[i];
        if (dt > 0 && (double)ops / dt > best) best = (double)ops / dt;
    }
    return best;
}
