/*
 * model_phi3.c — the phi3 family (Phi-3, Phi-3.5, Phi-4-mini). llama's
 * pre-norm block with neox RoPE, fused projections split at load into views
 * (no copy): attn_qkv rows are Q, K, V; ffn_up rows are gate (the first
 * n_ff) then up. LongRoPE: rope_factors_long / rope_factors_short divide
 * each pair's frequency, the long ones when the context per sequence
 * exceeds rope.scaling.original_context_length; cos/sin are scaled by
 * rope.scaling.attn_factor (the converter's sqrt(1 + ln(ctx/orig)/ln(orig))).
 * Separate attn_q/k/v and ffn_gate tensors are accepted too. Like
 * llama.cpp, the sliding window some files declare is not applied.
 */
#include "model_arch.h"
#include "model_ops.h"

#include <stdio.h>
#include <stdlib.h>

static kn_status phi3_hparams(const model_arch_row *a, const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    (void)hp;
    hp->scale_q = true;
    int32_t swa = 0; /* read and checked, not applied (llama.cpp disables Phi's window) */
    return model_get_u32(g, a->name, "attention.sliding_window", false, &swa, err);
}

static kn_status phi3_bind(const model_arch_row *a, model_loader *ld, model *m) {
    (void)a;
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    kn_status st;
    bool fused_qkv, has_gate;
    if ((st = model_bind_decoder_ends(ld, m)) ||
        (st = model_bind(ld, &m->rope_long, "rope_factors_long.weight", hp->n_rot / 2, 1, false, NULL)) ||
        (st = model_bind(ld, &m->rope_short, "rope_factors_short.weight", hp->n_rot / 2, 1, false, NULL)))
        return st;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        char name[96];
        model_tensor whole = {0};
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        if ((st = model_bind(ld, &whole, name, E, Hq + 2 * Hkv, false, &fused_qkv))) return st;
        if (fused_qkv) {
            if ((st = model_bind_rows(ld, &L->wq, &whole, 0, Hq)) ||
                (st = model_bind_rows(ld, &L->wk, &whole, Hq, Hkv)) ||
                (st = model_bind_rows(ld, &L->wv, &whole, Hq + Hkv, Hkv)))
                return st;
        } else if ((st = model_bind_layer(ld, &L->wq, l, "attn_q.weight", E, Hq, true)) ||
                   (st = model_bind_layer(ld, &L->wk, l, "attn_k.weight", E, Hkv, true)) ||
                   (st = model_bind_layer(ld, &L->wv, l, "attn_v.weight", E, Hkv, true))) {
            return st;
        }
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        if ((st = model_bind(ld, &L->w_gate, name, E, F, false, &has_gate))) return st;
        if (has_gate) {
            if ((st = model_bind_layer(ld, &L->w_up, l, "ffn_up.weight", E, F, true))) return st;
        } else {
            if ((st = model_bind_layer(ld, &whole, l, "ffn_up.weight", E, 2 * F, true)) ||
                (st = model_bind_rows(ld, &L->w_gate, &whole, 0, F)) ||
                (st = model_bind_rows(ld, &L->w_up, &whole, F, F)))
                return st;
        }
        if ((st = model_bind_layer(ld, &L->attn_norm, l, "attn_norm.weight", E, 1, true)) ||
            (st = model_bind_layer(ld, &L->wo, l, "attn_output.weight", Hq, E, true)) ||
            (st = model_bind_layer(ld, &L->ffn_norm, l, "ffn_norm.weight", E, 1, true)) ||
            (st = model_bind_layer(ld, &L->w_down, l, "ffn_down.weight", F, E, true)))
            return st;
    }
    return KN_OK;
}

static kn_status phi3_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    model_dec *d = (model_dec *)c;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
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
        model_dec_resid_norm(d, n, d->xn, &L->ffn_norm, hp->rms_eps, &L->w_gate);
        model_ffn_swiglu(d, &L->w_gate, &L->w_up, &L->w_down, n);
    }
    model_dec_end(d, kv, b, d->xn, out);
    return KN_OK;
}

const model_arch_row model_arch_phi3 = {
    .name = "phi3",
    .id = MODEL_ARCH_PHI3,
    .rope = MODEL_ROPE_NEOX,
    .hparams = phi3_hparams,
    .bind = phi3_bind,
    .estimate = model_estimate_decoder,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = phi3_forward,
};
