/*
 * model_llama.c — the llama family: `llama` (with Llama 3.1's RoPE frequency
 * factors, rope_freqs, when the file has them) and `qwen2` (the same block
 * with q/k/v biases and neox RoPE). Pre-norm blocks
 *   x += Wo attn(RoPE(Wq n + bq), RoPE(Wk n + bk), Wv n + bv),  n = RMSNorm(x)   [attn_norm]
 *   x += Wd (silu(Wg n) * Wu n),                                n = RMSNorm(x)   [ffn_norm]
 * with grouped-query causal attention over the paged KV, then RMSNorm
 * [output_norm] and the output matrix (or the tied token embedding).
 */
#include "model_arch.h"
#include "model_ops.h"

#include <stdlib.h>

#define LLAMA_QKV_BIAS 1u /* variant: attn_q/k/v.bias are required (qwen2) */

/* ---- tensors ---- */

static kn_status llama_bind(const model_arch_row *a, model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    const bool bias = (a->variant & LLAMA_QKV_BIAS) != 0;
    kn_status st;
    if ((st = model_bind_decoder_ends(ld, m))) return st;
    /* Llama 3.1+: per-pair frequency factors, applied at every context length */
    if ((st = model_bind(ld, &m->rope_freqs, "rope_freqs.weight", hp->n_rot / 2, 1, false, NULL))) return st;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        const struct {
            model_tensor *t;
            const char *name;
            int64_t ne0, ne1;
            bool required;
        } tab[] = {
            {&L->attn_norm, "attn_norm.weight", E, 1, true}, {&L->wq, "attn_q.weight", E, Hq, true},
            {&L->wk, "attn_k.weight", E, Hkv, true},         {&L->wv, "attn_v.weight", E, Hkv, true},
            {&L->wo, "attn_output.weight", Hq, E, true},     {&L->ffn_norm, "ffn_norm.weight", E, 1, true},
            {&L->w_gate, "ffn_gate.weight", E, F, true},     {&L->w_up, "ffn_up.weight", E, F, true},
            {&L->w_down, "ffn_down.weight", F, E, true},     {&L->bq, "attn_q.bias", Hq, 1, bias},
            {&L->bk, "attn_k.bias", Hkv, 1, bias},           {&L->bv, "attn_v.bias", Hkv, 1, bias},
        };
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if ((st =
                     model_bind_layer(ld, tab[i].t, l, tab[i].name, tab[i].ne0, tab[i].ne1, tab[i].required)))
                return st;
    }
    return KN_OK;
}

/* ---- scratch: the shared decoder scratch as is ---- */

/* ---- the block ---- */

static kn_status llama_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    model_dec *d = (model_dec *)c;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
    kn_status st = model_dec_begin(d, kv, b, err);
    if (st != KN_OK) return st;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim;
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        /* x (+= previous block's output) -> attn_norm -> quantized for Q/K/V */
        model_dec_resid_norm(d, n, l == 0 ? NULL : d->xn, &L->attn_norm, hp->rms_eps, &L->wq);
        model_dec_qkv(d, L, n);
        model_dec_qk_rope_kv(d, kv, b, l);
        model_attn_paged(d, kv, b, l);
        model_dec_quant(d, n, d->att, Hq, &L->wo);
        model_matmul_q(c, &L->wo, n, d->xn, E);
        /* x += attention -> ffn_norm -> quantized for gate/up */
        model_dec_resid_norm(d, n, d->xn, &L->ffn_norm, hp->rms_eps, &L->w_gate);
        model_ffn_swiglu(d, &L->w_gate, &L->w_up, &L->w_down, n);
    }
    model_dec_end(d, kv, b, d->xn, out);
    return KN_OK;
}

/* ---- the rows ---- */

const model_arch_row model_arch_llama = {
    .name = "llama",
    .id = MODEL_ARCH_LLAMA,
    .rope = MODEL_ROPE_NORM,
    .bind = llama_bind,
    .estimate = model_estimate_decoder,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = llama_forward,
};

const model_arch_row model_arch_qwen2 = {
    .name = "qwen2",
    .id = MODEL_ARCH_QWEN2,
    .rope = MODEL_ROPE_NEOX,
    .variant = LLAMA_QKV_BIAS,
    .bind = llama_bind,
    .estimate = model_estimate_decoder,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = llama_forward,
};
