/*
 * model_gptoss.c — the gpt-oss family (OpenAI's open-weight MoE). Biases on
 * Q, K, V and the attention output; a per-head attention sink (exp(sink)
 * joins each softmax denominator); a sliding window on alternating layers
 * (attention.sliding_window; layer l windowed iff l is even unless
 * sliding_window_pattern says otherwise) with rope.freq_base_swa (default
 * the global base) and the same YaRN scaling; neox RoPE; queries scaled by
 * 1/sqrt(head_dim). The FFN, after post_attention_norm, is a mixture of
 * experts: router W x + b, the top expert_used_count raw logits, softmax
 * over those; each expert (biased) down(swiglu_oai(gate x + bg, up x + bu))
 * + bd, where swiglu_oai clamps gate at 7 and up to [-7, 7] and computes
 * g sigmoid(1.702 g) (u + 1). The experts are usually MXFP4.
 *   x += Wo attn(RoPE(Wq n + bq), RoPE(Wk n + bk), Wv n + bv) + bo,  n = RMSNorm(x) [attn_norm]
 *   x += MoE(n),                                                   n = RMSNorm(x) [post_attention_norm]
 */
#include "model_arch.h"
#include "model_ops.h"

#include <stdlib.h>

static kn_status gptoss_hparams(const model_arch_row *a, const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    kn_status st;
    if ((st = model_read_experts(g, a->name, hp, err)) ||
        (st = model_get_u32(g, a->name, "attention.sliding_window", true, &hp->n_swa, err)) ||
        (st = model_get_f32(g, a->name, "rope.freq_base_swa", &hp->rope_freq_base_swa, err)))
        return st;
    return KN_OK;
}

static kn_status gptoss_bind(const model_arch_row *a, model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, Hq = (int64_t)hp->n_head * hd,
                  Hkv = (int64_t)hp->n_head_kv * hd, X = hp->n_expert, FX = hp->n_ff_exp;
    kn_status st;
    if ((st = model_bind_decoder_ends(ld, m))) return st;
    if ((st = model_read_swa_pattern(model_loader_gguf(ld), a->name, m, 2, model_loader_err(ld)))) return st;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        const struct {
            model_tensor *t;
            const char *name;
            int64_t ne0, ne1, ne2;
        } tab[] = {
            {&L->attn_norm, "attn_norm.weight", E, 1, 1},
            {&L->wq, "attn_q.weight", E, Hq, 1},
            {&L->wk, "attn_k.weight", E, Hkv, 1},
            {&L->wv, "attn_v.weight", E, Hkv, 1},
            {&L->bq, "attn_q.bias", Hq, 1, 1},
            {&L->bk, "attn_k.bias", Hkv, 1, 1},
            {&L->bv, "attn_v.bias", Hkv, 1, 1},
            {&L->wo, "attn_output.weight", Hq, E, 1},
            {&L->bo, "attn_output.bias", E, 1, 1},
            {&L->attn_sinks, "attn_sinks.weight", hp->n_head, 1, 1},
            {&L->ffn_norm, "post_attention_norm.weight", E, 1, 1},
            {&L->router, "ffn_gate_inp.weight", E, X, 1},
            {&L->router_b, "ffn_gate_inp.bias", X, 1, 1},
            {&L->gate_exps, "ffn_gate_exps.weight", E, FX, X},
            {&L->up_exps, "ffn_up_exps.weight", E, FX, X},
            {&L->down_exps, "ffn_down_exps.weight", FX, E, X},
            {&L->gate_exps_b, "ffn_gate_exps.bias", FX, X, 1},
            {&L->up_exps_b, "ffn_up_exps.bias", FX, X, 1},
            {&L->down_exps_b, "ffn_down_exps.bias", E, X, 1},
        };
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if ((st = model_bind_layer3(ld, tab[i].t, l, tab[i].name, tab[i].ne0, tab[i].ne1, tab[i].ne2, true)))
                return st;
        /* the bias tables are read as F32 rows (a 1-expert file would make them vectors, also F32) */
        const model_tensor *bs[] = {&L->gate_exps_b, &L->up_exps_b, &L->down_exps_b};
        for (size_t i = 0; i < 3; i++)
            if (bs[i]->type != Q_TYPE_F32)
                return kn_fail(model_loader_err(ld), KN_EUNSUPPORTED, "blk.%d: expert biases must be F32", l);
    }
    return KN_OK;
}

static kn_status gptoss_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    model_dec *d = (model_dec *)c;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
    const model_moe cfg = {.gating = MODEL_MOE_TOPK_SOFTMAX, .act = MODEL_MOE_SWIGLU_OAI};
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
        model_add_bias(d->xn, &L->bo, n, E);
        model_dec_resid_norm(d, n, d->xn, &L->ffn_norm, hp->rms_eps, &L->router);
        model_ffn_moe(d, L, &cfg, n);
    }
    model_dec_end(d, kv, b, d->xn, out);
    return KN_OK;
}

const model_arch_row model_arch_gptoss = {
    .name = "gpt-oss",
    .id = MODEL_ARCH_GPTOSS,
    .rope = MODEL_ROPE_NEOX,
    .hparams = gptoss_hparams,
    .bind = gptoss_bind,
    .estimate = model_estimate_moe,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = model_dec_ctx_create_plain,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = gptoss_forward,
};
