/*
 * model_ops.h — internal to src/model: the operations the families
 * compose their blocks from (model_ops.c), and the scratch they run in.
 *
 * Owns:
 *  - struct model_ctx, the part of every family's scratch the shared ops
 *    use: the model, the kernel set, the pool, the quantized activations.
 *    A family's ctx is a struct whose first member is a model_ctx.
 *  - model_dec: the scratch of a decoder block (residual stream, Q/K/V,
 *    attention output, FFN, RoPE table, per-thread attention scratch),
 *    sized from the hyper-parameters for max_batch tokens, and its share of
 *    the memory estimate (model_estimate_decoder).
 *  - norms (RMSNorm, LayerNorm), RoPE (table per token: normal or neox,
 *    linear or YaRN scaling; application), KV row writes, the tiled
 *    online-softmax attention over the paged KV, the FFN variants (SwiGLU
 *    block, GELU lookup), matmuls on the pool, activation quantization,
 *    per-token work split across the pool.
 *
 * Invariants: nothing here allocates except model_ctx_alloc (at ctx
 * creation); every result is independent of the thread split and of the
 * other tokens of the batch (batch invariance, model.h). These functions
 * know no family: what differs between families is passed in (tensors,
 * eps, which rows).
 */
#ifndef KILN_MODEL_OPS_H
#define KILN_MODEL_OPS_H

#include "model_arch.h"

struct model_ctx {
    const model *m;
    const model_arch_row *arch;
    const tensor_ops *ops; /* borrowed */
    kn_pool *pool;         /* borrowed */
    int max_batch;
    int n_threads;
    void *act; /* quantized activations: act_bytes (the widest matmul input x max_batch) */
    size_t act_bytes;
    uint64_t bytes; /* scratch allocated (model_ctx_bytes) */
};

/* Fills the common part of a family's freshly zeroed ctx. */
void model_ctx_init(model_ctx *c, const model_arch_row *a, const model *m, const tensor_ops *ops,
                    kn_pool *pool, int max_batch);
/* A 64-byte aligned scratch buffer of n bytes counted in c->bytes (n 0: a
 * minimal one); NULL when out of memory. Free with kn_free_aligned. */
void *model_ctx_alloc(model_ctx *c, size_t n);
/* The activation bytes for ts[0..n) with c->max_batch columns: the most any one needs. */
size_t model_act_need(const model_ctx *c, const model_tensor *const *ts, size_t n);

/* ---- work on the pool ---- */

/* Work below this many multiply-adds runs on the calling thread: waking
 * workers costs more than it saves (and far more on a loaded machine). */
#define MODEL_INLINE_MACS (1 << 20)

/* c's pool when `macs` is worth it, else NULL (the calling thread). */
static inline kn_pool *model_pool_for(const model_ctx *c, int64_t macs) {
    return macs < MODEL_INLINE_MACS ? NULL : c->pool;
}

/* Runs fn(arg, t) for t in [0, n), split across the pool by token when
 * `work` (an estimate in multiply-adds) is worth it. */
typedef void (*model_token_fn)(void *arg, int t);
void model_for_tokens(const model_ctx *c, int n, int64_t work, model_token_fn fn, void *arg);

/* ---- matmuls ---- */

/* y[t][0..M) = w act[t] for n columns already quantized in c->act for w's type. */
void model_matmul_q(model_ctx *c, const model_tensor *w, int64_t n, float *y, int64_t ldy);
/* Up to three matmuls over the same quantized input (same weight type and
 * K: Q, K and V; gate and up) in one pool run over their concatenated rows:
 * one synchronisation instead of three, a balanced split, and the bits of
 * separate calls (tensor.h: any row split gives the same bits). */
void model_matmul_multi(model_ctx *c, int count, const model_tensor *const *w, float *const *y,
                        const int64_t *ldy, int64_t n);
/* Quantizes n rows of x (stride ldx) for w's type into c->act, then model_matmul_q. */
void model_matmul(model_ctx *c, const model_tensor *w, const float *x, int64_t ldx, int64_t n, float *y,
                  int64_t ldy);
/* Quantizes one token's row (w->ne0 floats) into column t of c->act for w's type. */
void model_act_quantize_row(model_ctx *c, const model_tensor *w, const float *row, int t);

/* ---- norms and small per-row operations ---- */

/* out = x / rms(x) * w (sums in double). */
void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
/* In place: (x - mean) / sqrt(var + eps) * w + bias (sums in double). */
void model_layernorm(float *x, const float *w, const float *bias, int64_t n, float eps);
/* y[t][i] += b[i] for n rows of stride ld (nothing when b is unbound). */
void model_add_bias(float *y, const model_tensor *b, int64_t n, int64_t ld);

/* GELU (tanh approximation) of every F16 value, rounded to F16, as llama.cpp
 * computes it: a table of 65536 floats, filled by model_gelu_table_init. */
#define MODEL_GELU_TABLE 65536
void model_gelu_table_init(float *tab);
static inline float model_gelu_lookup(const float *tab, float z) {
    return z <= -10.0f ? 0.0f : z >= 10.0f ? z : tab[q_f32_to_f16(z)];
}

/* ---- RoPE ---- */

/* cos/sin of every rotated pair for n positions, following ggml's rope:
 * theta_i = p base^(-2i/n_rot), scaled linearly by freq_scale, or with YaRN
 * (ext_factor > 0) a ramp between interpolation and extrapolation and a
 * magnitude scale. tab: [n][n_rot/2][2]. */
void model_rope_table(const model_hparams *hp, const int32_t *pos, int n, float *tab);
/* Rotates n_heads vectors of head_dim (the first n_rot dimensions; pairs
 * adjacent, or split in halves for neox) by one token's table row r. */
void model_rope_apply(const model_hparams *hp, float *vec, int n_heads, const float *r);

/* ---- the decoder scratch ---- */

typedef struct model_dec {
    model_ctx base;
    float *x;       /* [B][E]   residual stream */
    float *xn;      /* [B][W]   normed input / gathered rows, W = max(E, Hq, n_ff) */
    float *q;       /* [B][Hq] */
    float *k;       /* [B][Hkv] */
    float *v;       /* [B][Hkv] */
    float *att;     /* [B][Hq]  attention output */
    float *gate;    /* [B][n_ff] */
    float *up;      /* [B][n_ff] */
    float *rope;    /* [B][n_rot/2][2] cos, sin */
    float *scratch; /* [n_threads][scratch_per_thread] attention: scores [G][TILE], m [G], l [G], acc [G][hd],
                       two F16 tiles [TILE][hd] */
    size_t scratch_per_thread;
} model_dec;

/* Allocates d's buffers for d->base.max_batch tokens (base already
 * initialised) and act_bytes of activations (model_act_need over the
 * family's matmul weights). On failure the caller frees with model_dec_free. */
kn_status model_dec_init(model_dec *d, size_t act_bytes, kn_err *err);
/* Frees d's buffers (not d). */
void model_dec_free(model_dec *d);
/* A decoder row's estimate with the shared scratch: weights, the KV pool,
 * model_dec, the engine's buffers. */
uint64_t model_estimate_decoder(const model_shape *s, const model_mem_opts *o);
/* K and V over every layer and kv head of one position. */
double model_kv_bytes_decoder(const model_shape *s, model_kv_type t);

/* Checks a decoder batch (size, KV shape, token ids) before anything runs. */
kn_status model_dec_check(const model_dec *d, const model_kv *kv, const model_batch *b, kn_err *err);
/* x[t] = the embedding row of each token. */
void model_dec_embed(model_dec *d, const model_tensor *tok_embd, const model_batch *b);

/* Per token, split across the pool: x += add (rows of stride n_embd; none
 * when add is NULL), then when norm is set xn = RMSNorm(x) (weight norm,
 * eps) quantized into the act for w. The pre-norm residual step. */
void model_dec_resid_norm(model_dec *d, int n, const float *add, const model_tensor *norm, float eps,
                          const model_tensor *w);
/* Per token: src's row (stride ld) quantized into the act for w. */
void model_dec_quant(model_dec *d, int n, const float *src, int64_t ld, const model_tensor *w);

/* ---- attention over the paged KV ---- */

/* Writes one token's K and V (n_head_kv vectors of head_dim each) at pos of
 * seq in layer, in the cache's row format. */
void model_kv_write(const model_kv *kv, int head_dim, int n_head_kv, int seq, int layer, int pos,
                    const float *k, const float *v);
/* Causal attention of every (token, kv head) pair: d->q -> d->att, over
 * positions 0..pos of the token's sequence in layer, in tiles of
 * MODEL_ATTN_TILE aligned to absolute positions with an online softmax. */
void model_attn_paged(model_dec *d, model_kv *kv, const model_batch *b, int layer);

/* ---- FFN ---- */

/* The SwiGLU FFN of n tokens whose normed input is d->xn (stride E) and is
 * already quantized in the act for w_gate: down(silu(gate x) * up x) into
 * d->xn (stride E). */
void model_ffn_swiglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                      const model_tensor *w_down, int n);

/* ---- output ---- */

/* The final norm (RMSNorm with w and eps) of the tokens that asked for
 * their hidden state (b->embd) and of those that asked for logits (then
 * the output matmul into out), each gathered contiguously. */
void model_dec_output(model_dec *d, const model_batch *b, const model_tensor *norm, float eps,
                      const model_tensor *output, float *out);

#endif
