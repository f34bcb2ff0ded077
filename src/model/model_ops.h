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
    model_attn_numerics attn_numerics;
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

/* The rotation of one kind of layer: base, scale, YaRN, frequency factors. */
typedef struct model_rope {
    int n_rot;
    float base, scale;     /* theta base; linear scale (1 / factor) */
    float ext;             /* YaRN extrapolation mix (0: none) */
    float attn_factor;     /* magnitude scale of cos/sin */
    float beta_fast, beta_slow;
    int n_ctx_orig;
    const float *factors;  /* [n_rot/2] dividing each pair's frequency, or NULL */
} model_rope;

/* The rope of hp's global layers (swa false) or of its windowed layers,
 * with frequency factors (or NULL). */
void model_rope_init(model_rope *r, const model_hparams *hp, bool swa, const float *factors);
/* cos/sin of every rotated pair for n positions, following ggml's rope:
 * theta_i = p base^(-2i/n_rot) / factor_i, scaled linearly, or with YaRN
 * (ext > 0) a ramp between interpolation and extrapolation and a magnitude
 * scale. tab: [n][n_rot/2][2]. */
void model_rope_table(const model_rope *r, const int32_t *pos, int n, float *tab);
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
    float *rope_swa; /* the same for windowed layers (hp.n_swa > 0), else NULL */
    float *scratch; /* [n_threads][scratch_per_thread] attention: scores [G][TILE], m [G], l [G], acc [G][hd],
                       two F16 tiles [TILE][hd] */
    size_t scratch_per_thread;
    float *gelu;    /* [MODEL_GELU_TABLE] when the family gates with GELU (set before model_dec_init) */
    bool want_gelu;
    struct model_moe_scratch *moe; /* model_moe_init */
} model_dec;

/* Allocates d's buffers for d->base.max_batch tokens (base already
 * initialised) and act_bytes of activations (model_act_need over the
 * family's matmul weights). On failure the caller frees with model_dec_free. */
kn_status model_dec_init(model_dec *d, size_t act_bytes, kn_err *err);
/* Frees d's buffers (not d). */
void model_dec_free(model_dec *d);
/* A family's ctx when it is the shared decoder scratch as is: a model_dec
 * with activations for every matmul weight of m's layers, the GELU table
 * when gelu, and the expert scratch when m has experts. */
kn_status model_dec_ctx_create(const model_arch_row *a, const model *m, const tensor_ops *ops, kn_pool *pool,
                               int max_batch, bool gelu, model_ctx **out, kn_err *err);
void model_dec_ctx_destroy(model_ctx *c);
/* model_dec_ctx_create without the GELU table, in the row's signature. */
kn_status model_dec_ctx_create_plain(const model_arch_row *a, const model *m, const tensor_ops *ops,
                                     kn_pool *pool, int max_batch, model_ctx **out, kn_err *err);
/* model_estimate_decoder plus the expert scratch (model_shape's n_expert*). */
uint64_t model_estimate_moe(const model_shape *s, const model_mem_opts *o);
/* A decoder row's estimate with the shared scratch: weights, the KV pool,
 * model_dec, the engine's buffers. */
uint64_t model_estimate_decoder(const model_shape *s, const model_mem_opts *o);
/* K and V over every layer and kv head of one position. */
double model_kv_bytes_decoder(const model_shape *s, model_kv_type t);

/* Checks a decoder batch (size, KV shape, token ids) before anything runs. */
kn_status model_dec_check(const model_dec *d, const model_kv *kv, const model_batch *b, kn_err *err);
/* x[t] = the embedding row of each token. */
void model_dec_embed(model_dec *d, const model_tensor *tok_embd, const model_batch *b);
/* The start of a decoder forward: the batch checked, its KV blocks
 * allocated (kv_batch_begin), x = the tokens' embeddings, the RoPE tables.
 * Nothing is computed on failure. */
kn_status model_dec_begin(model_dec *d, model_kv *kv, const model_batch *b, kn_err *err);
/* Its end: x += add (the last block's output; NULL: already added),
 * kv_batch_end, then the final norm and logits (model_dec_output). */
void model_dec_end(model_dec *d, model_kv *kv, const model_batch *b, const float *add, float *out);
/* The frequency factors of m for a cache of kv's context per sequence:
 * rope_freqs, else LongRoPE's long factors past n_ctx_orig or its short
 * ones, else NULL. */
const float *model_rope_factors(const model *m, const model_kv *kv);
/* d->rope (and d->rope_swa) for b's positions. */
void model_dec_rope(model_dec *d, const model_kv *kv, const model_batch *b);
/* Q, K and V of the normed rows already quantized in the act for L->wq
 * (one pool run when the three share a type). */
void model_dec_qkv(model_dec *d, const model_layer *L, int n);
/* Per token: q/k/v biases, per-head Q/K RMSNorm (when L has them), RoPE
 * with the layer's table, and K, V into the KV store. */
void model_dec_qk_rope_kv(model_dec *d, model_kv *kv, const model_batch *b, int layer);
/* Per token: x += RMSNorm(add) (weight norm, eps): a post-norm residual
 * (gemma3); then, when next is set, xn = RMSNorm(x) (next) quantized for w. */
void model_dec_resid_postnorm(model_dec *d, int n, const float *add, const model_tensor *post, float eps,
                              const model_tensor *next, const model_tensor *w);

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
 * positions 0..pos of the token's sequence in layer (pos - n_swa + 1..pos
 * on a windowed layer), in tiles of MODEL_ATTN_TILE aligned to absolute
 * positions with an online softmax; scores scaled by hp.attn_scale (or
 * 1/sqrt(head_dim)); the layer's attn_sinks join each denominator. */
void model_attn_paged(model_dec *d, model_kv *kv, const model_batch *b, int layer);

/* ---- FFN ---- */

/* The SwiGLU FFN of n tokens whose normed input is d->xn (stride E) and is
 * already quantized in the act for w_gate: down(silu(gate x) * up x) into
 * d->xn (stride E). */
void model_ffn_swiglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                      const model_tensor *w_down, int n);

/* The GELU-gated FFN (gemma): down(gelu_tanh(gate x) * up x), gate x and
 * up x as for model_ffn_swiglu; GELU through the F16 table d->gelu. */
void model_ffn_geglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                     const model_tensor *w_down, int n);

/* ---- mixture of experts ---- */

typedef enum model_moe_gating {
    MODEL_MOE_SOFTMAX_TOPK = 0, /* softmax over all experts, top k, optionally renormalized (qwen3moe) */
    MODEL_MOE_TOPK_SOFTMAX,     /* top k of the raw logits, softmax over those k (gpt-oss) */
} model_moe_gating;
typedef enum model_moe_act {
    MODEL_MOE_SWIGLU = 0, /* silu(gate) * up */
    MODEL_MOE_SWIGLU_OAI, /* min(gate,7) sigmoid(1.702 min(gate,7)) (clamp(up,-7,7) + 1) (gpt-oss) */
} model_moe_act;
typedef struct model_moe {
    model_moe_gating gating;
    model_moe_act act;
    bool norm_weights; /* renormalize the chosen weights to sum 1 */
} model_moe;

/* The MoE scratch for max_batch tokens (model_moe_init before use; freed by
 * model_dec_free), and its bytes for the estimate. */
kn_status model_moe_init(model_dec *d, kn_err *err);
double model_moe_scratch_bytes(const model_shape *s, double B);
/* The mixture-of-experts FFN of layer L for n tokens whose normed input is
 * d->xn (stride E): route every token, then run each expert once over all
 * the tokens routed to it (its weights read once per step), and sum each
 * token's k outputs in its own rank order, so that a token's result does
 * not depend on the batch. Result into d->xn (stride E). */
void model_ffn_moe(model_dec *d, const model_layer *L, const model_moe *cfg, int n);

/* ---- output ---- */

/* The final norm (RMSNorm with w and eps) of the tokens that asked for
 * their hidden state (b->embd) and of those that asked for logits (then
 * the output matmul into out, soft-capped when hp.logit_softcap is set),
 * each gathered contiguously. */
void model_dec_output(model_dec *d, const model_batch *b, const model_tensor *norm, float eps,
                      const model_tensor *output, float *out);

#endif
