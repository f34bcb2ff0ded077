/*
 * model_qwen3.c — the qwen3 family: `qwen3` (qwen2's block without q/k/v
 * biases, plus one RMSNorm over head_dim shared by the heads of Q and of K,
 * applied after the projection and before neox RoPE; the head dimension is
 * attention.key_length, decoupled from n_embd / n_head) and `qwen3moe` (the
 * same attention with a mixture-of-experts FFN: a router over expert_count
 * experts, softmax, the top expert_used_count, their weights renormalized
 * to 1; each expert down(silu(gate x) * up x)).
 *   x += Wo attn(RoPE(qn(Wq n)), RoPE(kn(Wk n)), Wv n),  n = RMSNorm(x)   [attn_norm]
 *   x += FFN(n),                                          n = RMSNorm(x)   [ffn_norm]
 */
#include "model_arch.h"
#include "model_ops.h"

#include <stdlib.h>

#define QWEN3_MOE 1u /* variant: the FFN is a mixture of experts */

static kn_status qwen3_hparams(const model_arch_row *a, const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    return (a->variant & QWEN3_MOE) ? model_read_experts(g, a->name, hp, err) : KN_OK;
}

static kn_status qwen3_bind(const model_arch_row *a, model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, Hq = (int64_t)hp->n_head * hd,
                  Hkv = (int64_t)hp->n_head_kv * hd, F = hp->n_ff, X = hp->n_expert, FX = hp->n_ff_exp;
    const bool moe = (a->variant & QWEN3_MOE) != 0;
    kn_status st;
    if ((st = model_bind_decoder_ends(ld, m))) return st;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        const struct {
            model_tensor *t;
            const char *name;
            int64_t ne0, ne1, ne2;
            bool on;
        } tab[] = {
            {&L->attn_norm, "attn_norm.weight", E, 1, 1, true},
            {&L->wq, "attn_q.weight", E, Hq, 1, true},
            {&L->wk, "attn_k.weight", E, Hkv, 1, true},
            {&L->wv, "attn_v.weight", E, Hkv, 1, true},
            {&L->wo, "attn_output.weight", Hq, E, 1, true},
            {&L->attn_q_norm, "attn_q_norm.weight", hd, 1, 1, true},
            {&L->attn_k_norm, "attn_k_norm.weight", hd, 1, 1, true},
            {&L->ffn_norm, "ffn_norm.weight", E, 1, 1, true},
            {&L->w_gate, "ffn_gate.weight", E, F, 1, !moe},
            {&L->w_up, "ffn_up.weight", E, F, 1, !moe},
            {&L->w_down, "ffn_down.weight", F, E, 1, !moe},
            {&L->router, "ffn_gate_inp.weight", E, X, 1, moe},
            {&L->gate_exps, "ffn_gate_exps.weight", E, FX, X, moe},
            {&L->up_exps, "ffn_up_exps.weight", E, FX, X, moe},
            {&L->down_exps, "ffn_down_exps.weight", FX, E, X, moe},
        };
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if (tab[i].on &&
                (st = model_bind_layer3(ld, tab[i].t, l, tab[i].name, tab[i].ne0, tab[i].ne1, tab[i].ne2, true)))
                return st;
    }
    return KN_OK;
}

static kn_status qwen3_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    model_dec *d = (model_dec *)c;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
    const bool moe = hp->n_expert > 0;
    const model_moe cfg = {.gating = MODEL_MOE_SOFTMAX_TOPK, .act = MODEL_MOE_SWIGLU, .norm_weights = true};
    kn_status st = model_dec_begin(d, kv, b, err);
    if (st != KN_OK) return st;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim;
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        model_dec_resid_norm(d, n, l == 0 ? NULL : d->xn, &L->attn_norm, hp->rms_eps, &L->wq);
        model_dec_qkv(d, L, n);
        model_dec_qk_rope_kv(d, kv, b, l);
        model_attn_paged(d, kv, b, l);
        model_dec_quant(d, n, d->att, Hq, &L->wo);
        model_matmul_q(c, &L->wo, n, d->xn, E);
        if (moe) {
            model_dec_resid_norm(d, n, d->xn, &L->ffn_norm, hp->rms_eps, &L->router);
            model_ffn_moe(d, L, &cfg, n);
        } else {
            model_dec_resid_norm(d, n, d->xn, &L->ffn_norm, hp->rms_eps, &L->w_gate);
            model_ffn_swiglu(d, &L->w_gate, &L->w_up, &L->w_down, n);
        }
    }
    model_dec_end(d, kv, b, d->xn, out);
    return KN_OK;
}

const model_arch_row model_arch_qwen3 = {
    .name = "qwen3",
    .id = MODEL_ARCH_QWEN3,
    .rope = MODEL_ROPE_NEOX,
    .hparams = qwen3_hparams,
    .bind = qwen3_bind,
    .estimate = model_estimate_decoder,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = qwen3_forward,
};

const model_arch_row model_arch_qwen3moe = {
    .name = "qwen3moe",
    .id = MODEL_ARCH_QWEN3MOE,
    .rope = MODEL_ROPE_NEOX,
    .variant = QWEN3_MOE,
    .hparams = qwen3_hparams,
    .bind = qwen3_bind,
    .estimate = model_estimate_moe,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = qwen3_forward,
};
