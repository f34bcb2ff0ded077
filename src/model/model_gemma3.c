/*
 * model_gemma3.c — the gemma3 family. Embeddings scaled by sqrt(n_embd);
 * every norm an RMSNorm with the stored weight (the file holds Gemma's 1+w).
 * Per layer:
 *   a = Wo attn(RoPE(qn(Wq n)), RoPE(kn(Wk n)), Wv n),  n = RMSNorm(x) [attn_norm]
 *   x += RMSNorm(a) [post_attention_norm]
 *   f = down(gelu_tanh(gate n) * up n),                 n = RMSNorm(x) [ffn_norm]
 *   x += RMSNorm(f) [post_ffw_norm]
 * Sliding-window attention on most layers (attention.sliding_window; the
 * pattern from attention.sliding_window_pattern, a period or a bool per
 * layer, else every 6th layer global), whose RoPE uses rope.freq_base_swa
 * (10000 when absent) and no scaling; global layers use rope.freq_base and
 * the file's scaling. Queries scaled by 1/sqrt(head_dim) (1/sqrt(n_embd /
 * n_head) for the 62-layer 27B), final logits soft-capped when
 * final_logit_softcapping is set.
 */
#include "kiln/gguf.h"
#include "model_arch.h"
#include "model_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static kn_status gemma3_hparams(const model_arch_row *a, const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    kn_status st;
    hp->n_swa = 0;
    if ((st = model_get_u32(g, a->name, "attention.sliding_window", false, &hp->n_swa, err)) ||
        (st = model_get_f32(g, a->name, "final_logit_softcapping", &hp->logit_softcap, err)))
        return st;
    if (hp->logit_softcap < 0) return kn_fail(err, KN_EFORMAT, "final_logit_softcapping is negative");
    hp->rope_freq_base_swa = 10000.0f;
    hp->rope_freq_scale_swa = 1.0f;
    hp->swa_rope_plain = true;
    if (hp->n_swa > 0 && (st = model_get_f32(g, a->name, "rope.freq_base_swa", &hp->rope_freq_base_swa, err)))
        return st;
    hp->scale_q = true;
    hp->attn_scale = hp->n_layer == 62 ? 1.0f / sqrtf((float)(hp->n_embd / hp->n_head))
                                       : 1.0f / sqrtf((float)hp->head_dim);
    return KN_OK;
}

static kn_status gemma3_bind(const model_arch_row *a, model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, Hq = (int64_t)hp->n_head * hd,
                  Hkv = (int64_t)hp->n_head_kv * hd, F = hp->n_ff;
    kn_status st;
    if ((st = model_bind_decoder_ends(ld, m))) return st;
    if ((st = model_read_swa_pattern(model_loader_gguf(ld), a->name, m, 6, model_loader_err(ld)))) return st;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        const struct {
            model_tensor *t;
            const char *name;
            int64_t ne0, ne1;
        } tab[] = {
            {&L->attn_norm, "attn_norm.weight", E, 1},
            {&L->wq, "attn_q.weight", E, Hq},
            {&L->wk, "attn_k.weight", E, Hkv},
            {&L->wv, "attn_v.weight", E, Hkv},
            {&L->wo, "attn_output.weight", Hq, E},
            {&L->attn_q_norm, "attn_q_norm.weight", hd, 1},
            {&L->attn_k_norm, "attn_k_norm.weight", hd, 1},
            {&L->attn_post_norm, "post_attention_norm.weight", E, 1},
            {&L->ffn_norm, "ffn_norm.weight", E, 1},
            {&L->w_gate, "ffn_gate.weight", E, F},
            {&L->w_up, "ffn_up.weight", E, F},
            {&L->w_down, "ffn_down.weight", F, E},
            {&L->ffn_post_norm, "post_ffw_norm.weight", E, 1},
        };
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if ((st = model_bind_layer(ld, tab[i].t, l, tab[i].name, tab[i].ne0, tab[i].ne1, true))) return st;
    }
    return KN_OK;
}

static kn_status gemma3_ctx_create(const model_arch_row *a, const model *m, const tensor_ops *ops,
                                   kn_pool *pool, int max_batch, model_ctx **out, kn_err *err) {
    return model_dec_ctx_create(a, m, ops, pool, max_batch, true, out, err);
}

static void scale_rows(float *x, int n, int64_t E, float s) {
    for (size_t i = 0; i < (size_t)n * (size_t)E; i++)
        x[i] *= s;
}

static kn_status gemma3_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    model_dec *d = (model_dec *)c;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
    kn_status st = model_dec_begin(d, kv, b, err);
    if (st != KN_OK) return st;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim;
    scale_rows(d->x, n, E, sqrtf((float)E));
    model_dec_resid_norm(d, n, NULL, &m->layers[0].attn_norm, hp->rms_eps, &m->layers[0].wq);
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        model_dec_qkv(d, L, n);
        model_dec_qk_rope_kv(d, kv, b, l);
        model_attn_paged(d, kv, b, l);
        model_dec_quant(d, n, d->att, Hq, &L->wo);
        model_matmul_q(c, &L->wo, n, d->xn, E);
        model_dec_resid_postnorm(d, n, d->xn, &L->attn_post_norm, hp->rms_eps, &L->ffn_norm, &L->w_gate);
        model_ffn_geglu(d, &L->w_gate, &L->w_up, &L->w_down, n);
        const model_layer *next = l + 1 < hp->n_layer ? &m->layers[l + 1] : NULL;
        model_dec_resid_postnorm(d, n, d->xn, &L->ffn_post_norm, hp->rms_eps, next ? &next->attn_norm : NULL,
                                 next ? &next->wq : NULL);
    }
    model_dec_end(d, kv, b, NULL, out);
    return KN_OK;
}

const model_arch_row model_arch_gemma3 = {
    .name = "gemma3",
    .id = MODEL_ARCH_GEMMA3,
    .rope = MODEL_ROPE_NEOX,
    .hparams = gemma3_hparams,
    .bind = gemma3_bind,
    .estimate = model_estimate_decoder,
    .kv_bytes_per_token = model_kv_bytes_decoder,
    .ctx_create = gemma3_ctx_create,
    .ctx_destroy = model_dec_ctx_destroy,
    .forward = gemma3_forward,
};
