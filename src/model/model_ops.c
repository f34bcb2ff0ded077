/*
 * model_ops.c — the operations families compose their blocks from: the
 * common ctx and the decoder scratch, matmuls and per-token work on the
 * pool, norms, RoPE, KV writes and the attention over the paged KV, the
 * FFN variants, the final norm and logits (model_ops.h).
 */
#include "model_ops.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- ctx ---- */

void model_ctx_init(model_ctx *c, const model_arch_row *a, const model *m, const tensor_ops *ops,
                    kn_pool *pool, int max_batch) {
    c->m = m;
    c->arch = a;
    c->ops = ops;
    c->pool = pool;
    c->max_batch = max_batch;
    c->n_threads = kn_pool_size(pool);
}

void model_ctx_set_attn_numerics(model_ctx *c, model_attn_numerics a) {
    c->attn_numerics = a;
}

void *model_ctx_alloc(model_ctx *c, size_t n) {
    c->bytes += n;
    return kn_alloc_aligned(n ? n : 64);
}

size_t model_act_need(const model_ctx *c, const model_tensor *const *ts, size_t n) {
    size_t act = 0;
    for (size_t i = 0; i < n; i++) {
        size_t need = tensor_act_bytes(ts[i]->type, ts[i]->ne0, c->max_batch);
        if (need > act) act = need;
    }
    return act;
}

/* ---- work on the pool ---- */

typedef struct tokens_job {
    int n;
    model_token_fn fn;
    void *arg;
} tokens_job;

static void tokens_fn(void *arg, int ith, int nth) {
    const tokens_job *j = arg;
    int64_t lo, hi;
    kn_split_range(j->n, 1, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++)
        j->fn(j->arg, (int)t);
}

void model_for_tokens(const model_ctx *c, int n, int64_t work, model_token_fn fn, void *arg) {
    tokens_job j = {.n = n, .fn = fn, .arg = arg};
    kn_pool_run(model_pool_for(c, work), tokens_fn, &j);
}

/* ---- matmuls ---- */

void model_matmul_q(model_ctx *c, const model_tensor *w, int64_t n, float *y, int64_t ldy) {
    tensor_matmul(c->ops, model_pool_for(c, w->ne0 * w->ne1 * n), w->type, w->data, w->ne0, w->ne1, c->act, n,
                  y, ldy);
}

typedef struct multi_mm {
    const tensor_ops *ops;
    const void *act;
    int64_t n;
    int count;
    const model_tensor *w[3];
    float *y[3];
    int64_t ldy[3];
} multi_mm;

static void multi_mm_fn(void *arg, int ith, int nth) {
    const multi_mm *j = arg;
    int64_t total = 0;
    for (int i = 0; i < j->count; i++)
        total += j->w[i]->ne1;
    int64_t lo, hi;
    kn_split_range(total, 16, ith, nth, &lo, &hi);
    int64_t base = 0;
    for (int i = 0; i < j->count && lo < hi; i++) {
        const model_tensor *w = j->w[i];
        const int64_t a = lo > base ? lo - base : 0, b = hi - base < w->ne1 ? hi - base : w->ne1;
        if (a < b)
            tensor_matmul_rows(j->ops, w->type, w->data, w->ne0, a, b, j->act, j->n, j->y[i], j->ldy[i]);
        base += w->ne1;
    }
}

void model_matmul_multi(model_ctx *c, int count, const model_tensor *const *w, float *const *y,
                        const int64_t *ldy, int64_t n) {
    KN_ASSERT(count >= 1 && count <= 3);
    multi_mm j = {.ops = c->ops, .act = c->act, .n = n, .count = count};
    int64_t macs = 0;
    for (int i = 0; i < count; i++) {
        j.w[i] = w[i], j.y[i] = y[i], j.ldy[i] = ldy[i];
        macs += w[i]->ne0 * w[i]->ne1 * n;
    }
    kn_pool_run(model_pool_for(c, macs), multi_mm_fn, &j);
}

void model_matmul(model_ctx *c, const model_tensor *w, const float *x, int64_t ldx, int64_t n, float *y,
                  int64_t ldy) {
    tensor_act_quantize(c->ops, w->type, x, ldx, w->ne0, n, c->act);
    model_matmul_q(c, w, n, y, ldy);
}

void model_act_quantize_row(model_ctx *c, const model_tensor *w, const float *row, int t) {
    const size_t col = tensor_act_bytes(w->type, w->ne0, 1);
    tensor_act_quantize(c->ops, w->type, row, w->ne0, w->ne0, 1, (uint8_t *)c->act + (size_t)t * col);
}

/* ---- norms and small per-row operations ---- */

void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

void model_layernorm(float *x, const float *w, const float *bias, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    const float mean = (float)(sum / (double)n);
    double var = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float d = x[i] - mean;
        x[i] = d;
        var += (double)d * d;
    }
    const float scale = 1.0f / sqrtf((float)(var / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * scale * w[i] + bias[i];
}

void model_add_bias(float *y, const model_tensor *b, int64_t n, int64_t ld) {
    if (!b->data) return;
    const float *bv = b->data;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < b->ne0; i++)
            y[t * ld + i] += bv[i];
}

static inline float gelu(float x) {
    const float c = 0.79788456080286535588f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * x * (1.0f + 0.044715f * x * x)));
}

void model_gelu_table_init(float *tab) {
    for (uint32_t i = 0; i < MODEL_GELU_TABLE; i++)
        tab[i] = q_f16_to_f32(q_f32_to_f16(gelu(q_f16_to_f32((q_f16_t)i))));
}

/* ---- RoPE ---- */

static float yarn_corr_dim(int n_rot, int n_ctx_orig, float n_turns, float base) {
    return (float)n_rot * logf((float)n_ctx_orig / (n_turns * 2.0f * 3.14159265358979f)) /
           (2.0f * logf(base));
}

void model_rope_init(model_rope *r, const model_hparams *hp, bool swa, const float *factors) {
    const bool plain = swa && hp->swa_rope_plain;
    *r = (model_rope){.n_rot = hp->n_rot,
                      .base = swa ? hp->rope_freq_base_swa : hp->rope_freq_base,
                      .scale = swa ? hp->rope_freq_scale_swa : hp->rope_freq_scale,
                      .ext = plain ? 0.0f : hp->yarn_ext_factor,
                      .attn_factor = hp->yarn_attn_factor > 0 ? hp->yarn_attn_factor : 1.0f,
                      .beta_fast = hp->yarn_beta_fast,
                      .beta_slow = hp->yarn_beta_slow,
                      .n_ctx_orig = hp->n_ctx_orig,
                      .factors = plain ? NULL : factors};
}

void model_rope_table(const model_rope *rp, const int32_t *pos, int n, float *tab) {
    const int half = rp->n_rot / 2;
    const float theta_scale = powf(rp->base, -2.0f / (float)rp->n_rot);
    float corr0 = 0.0f, corr1 = 0.0f, mscale = rp->attn_factor;
    const float ext = rp->ext;
    if (ext != 0.0f) {
        corr0 = floorf(yarn_corr_dim(rp->n_rot, rp->n_ctx_orig, rp->beta_fast, rp->base));
        corr1 = ceilf(yarn_corr_dim(rp->n_rot, rp->n_ctx_orig, rp->beta_slow, rp->base));
        if (corr0 < 0) corr0 = 0;
        if (corr1 > rp->n_rot - 1) corr1 = (float)(rp->n_rot - 1);
        mscale *= 1.0f + 0.1f * logf(1.0f / rp->scale);
    }
    for (int t = 0; t < n; t++) {
        float theta_base = (float)pos[t];
        float *r = tab + (size_t)t * rp->n_rot;
        for (int i = 0; i < half; i++) {
            /* frequency factors divide the pair's angle (ggml: theta / ff) */
            const float theta_extrap = rp->factors ? theta_base / rp->factors[i] : theta_base;
            const float theta_interp = rp->scale * theta_extrap;
            float th = theta_interp;
            if (ext != 0.0f) {
                float y = ((float)i - corr0) / fmaxf(0.001f, corr1 - corr0); /* i = i0 / 2 */
                float ramp = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext;
                th = theta_interp * (1.0f - ramp) + theta_extrap * ramp;
            }
            r[2 * i] = cosf(th) * mscale;
            r[2 * i + 1] = sinf(th) * mscale;
            theta_base *= theta_scale;
        }
    }
}

void model_rope_apply(const model_hparams *hp, float *vec, int n_heads, const float *r) {
    const int half = hp->n_rot / 2, hd = hp->head_dim;
    for (int h = 0; h < n_heads; h++) {
        float *x = vec + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            const float cs = r[2 * i], sn = r[2 * i + 1];
            const int i0 = hp->rope_type == MODEL_ROPE_NEOX ? i : 2 * i;
            const int i1 = hp->rope_type == MODEL_ROPE_NEOX ? i + half : 2 * i + 1;
            const float a = x[i0], bb = x[i1];
            x[i0] = a * cs - bb * sn;
            x[i1] = a * sn + bb * cs;
        }
    }
}

/* ---- the decoder scratch ---- */

kn_status model_dec_init(model_dec *d, size_t act_bytes, kn_err *err) {
    model_ctx *c = &d->base;
    const model_hparams *hp = &c->m->hp;
    const int64_t B = c->max_batch, E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    int64_t W = E > Hq ? E : Hq;
    if (F > W) W = F;
    const int64_t G = hp->n_head / hp->n_head_kv;
    /* per thread: scores [G][TILE], m [G], l [G], acc [G][hd], then for a
     * Q8_0 KV or a tile spanning KV blocks two F16 tiles [TILE][hd] (= TILE*hd
     * floats), and a row [hd] to spare */
    d->scratch_per_thread = (size_t)(((G * (MODEL_ATTN_TILE + 2 + hp->head_dim) +
                                       (int64_t)MODEL_ATTN_TILE * hp->head_dim + hp->head_dim) +
                                      15) &
                                     ~(int64_t)15);
    struct {
        float **p;
        int64_t n;
    } bufs[] = {
        {&d->x, B * E},
        {&d->xn, B * W},
        {&d->q, B * Hq},
        {&d->k, B * Hkv},
        {&d->v, B * Hkv},
        {&d->att, B * Hq},
        {&d->gate, B * F},
        {&d->up, B * F},
        {&d->rope, B * hp->n_rot},
        {&d->scratch, (int64_t)c->n_threads * (int64_t)d->scratch_per_thread},
        {&d->rope_swa, hp->n_swa > 0 ? B * hp->n_rot : -1},
        {&d->gelu, d->want_gelu ? MODEL_GELU_TABLE : -1},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (bufs[i].n < 0) continue;
        *bufs[i].p = model_ctx_alloc(c, (size_t)bufs[i].n * sizeof(float));
        if (!*bufs[i].p) goto nomem;
    }
    if (d->gelu) model_gelu_table_init(d->gelu);
    c->act_bytes = act_bytes;
    c->act = model_ctx_alloc(c, c->act_bytes);
    if (!c->act) goto nomem;
    return KN_OK;
nomem:
    return kn_fail(err, KN_ENOMEM, "cannot allocate scratch buffers for a batch of %d", c->max_batch);
}

static void moe_free(struct model_moe_scratch *s);

kn_status model_dec_ctx_create(const model_arch_row *a, const model *m, const tensor_ops *ops, kn_pool *pool,
                               int max_batch, bool gelu, model_ctx **out, kn_err *err) {
    model_dec *d = calloc(1, sizeof *d);
    if (!d) return kn_fail(err, KN_ENOMEM, "out of memory");
    model_ctx_init(&d->base, a, m, ops, pool, max_batch);
    d->want_gelu = gelu;
    const model_tensor *out_w = &m->output;
    size_t act = model_act_need(&d->base, &out_w, 1);
    for (int l = 0; l < m->hp.n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const model_tensor *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &L->router};
        const model_tensor *ts[8];
        size_t nt = 0;
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i]->data) ts[nt++] = all[i];
        size_t need = model_act_need(&d->base, ts, nt);
        if (need > act) act = need;
    }
    kn_status st = model_dec_init(d, act, err);
    if (st == KN_OK && m->hp.n_expert > 0) st = model_moe_init(d, err);
    if (st != KN_OK) {
        model_dec_free(d);
        free(d);
        return st;
    }
    *out = &d->base;
    return KN_OK;
}

kn_status model_dec_ctx_create_plain(const model_arch_row *a, const model *m, const tensor_ops *ops,
                                     kn_pool *pool, int max_batch, model_ctx **out, kn_err *err) {
    return model_dec_ctx_create(a, m, ops, pool, max_batch, false, out, err);
}

void model_dec_ctx_destroy(model_ctx *c) {
    model_dec *d = (model_dec *)c;
    model_dec_free(d);
    free(d);
}

uint64_t model_estimate_moe(const model_shape *s, const model_mem_opts *o) {
    double B = o->max_batch > o->n_slots ? o->max_batch : o->n_slots;
    return model_estimate_decoder(s, o) + (uint64_t)model_moe_scratch_bytes(s, B);
}

void model_dec_free(model_dec *d) {
    float *bufs[] = {d->x, d->xn, d->q, d->k, d->v, d->att, d->gate, d->up, d->rope, d->scratch, d->rope_swa, d->gelu};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kn_free_aligned(bufs[i]);
    kn_free_aligned(d->base.act);
    moe_free(d->moe);
    d->moe = NULL;
}

double model_kv_bytes_decoder(const model_shape *s, model_kv_type t) {
    double elem = t == MODEL_KV_Q8_0 ? 38.0 / 32.0 : 2.0; /* Q8P rows */
    return 2.0 * (double)s->n_layer * (double)s->n_head_kv * (double)s->head_dim * elem;
}

/* The shared decoder scratch for B = max(max_batch, n_slots) tokens (its
 * buffers plus the activations, counted at 4 bytes an element), the KV
 * pool as the engine sizes it, the engine's logits (a row per slot and per
 * draft token), hidden states and per-token tables, and the tokenizer
 * (model_tokenizer_bytes). */
uint64_t model_estimate_decoder(const model_shape *s, const model_mem_opts *o) {
    double B = o->max_batch > o->n_slots ? o->max_batch : o->n_slots;
    double E = (double)s->n_embd, F = (double)s->n_ff, Hq = (double)s->n_head * (double)s->head_dim;
    double Hkv = (double)s->n_head_kv * (double)s->head_dim, W = E > Hq ? E : Hq;
    if (F > W) W = F;
    double scratch = 4.0 * B * (E + W + 2 * Hq + 2 * Hkv + 2 * F + 64) + 4.0 * B * (E > F ? E : F);
    double engine = 4.0 * (double)o->n_slots * (double)s->n_vocab + 4.0 * B * E + (double)model_tokenizer_bytes(s);
    int bs = o->block_size > 0 ? o->block_size : 32;
    double block = model_kv_bytes_decoder(s, o->kv_type) * bs;
    double kv = block * (double)(o->kv_blocks > 0 ? o->kv_blocks
                                                  : kv_pool_blocks(o->n_slots, o->n_ctx, bs, (uint64_t)block,
                                                                   o->cache_bytes));
    double logits = 4.0 * (double)o->n_slots * (double)o->spec_max * (double)s->n_vocab;
    return (uint64_t)((double)s->weight_bytes + kv + scratch + engine + logits);
}

kn_status model_dec_check(const model_dec *d, const model_kv *kv, const model_batch *b, kn_err *err) {
    const model_hparams *hp = &d->base.m->hp;
    const int n = b->n_tokens;
    if (n < 1 || n > d->base.max_batch)
        return kn_fail(err, KN_EINVAL, "batch of %d tokens (limit %d)", n, d->base.max_batch);
    const kv_geom *g = kv_geometry(kv);
    if (g->n_layer != hp->n_layer || g->n_head_kv != hp->n_head_kv)
        return kn_fail(err, KN_EINVAL, "KV store belongs to another model shape");
    for (int t = 0; t < n; t++)
        if (b->token[t] < 0 || b->token[t] >= hp->n_vocab)
            return kn_fail(err, KN_EINVAL, "token id %d out of range [0, %d)", b->token[t], hp->n_vocab);
    return KN_OK;
}

void model_dec_embed(model_dec *d, const model_tensor *tok_embd, const model_batch *b) {
    const int64_t E = d->base.m->hp.n_embd;
    const q_traits *et = q_get_traits(tok_embd->type);
    const size_t erow = q_row_size(tok_embd->type, E);
    for (int t = 0; t < b->n_tokens; t++)
        et->to_float((const uint8_t *)tok_embd->data + (size_t)b->token[t] * erow, d->x + (size_t)t * E, E);
}

kn_status model_dec_begin(model_dec *d, model_kv *kv, const model_batch *b, kn_err *err) {
    kn_status st = model_dec_check(d, kv, b, err);
    if (st != KN_OK) return st;
    if ((st = kv_batch_begin(kv, b->n_tokens, b->seq, b->pos, b->token, err)) != KN_OK) return st;
    model_dec_embed(d, &d->base.m->tok_embd, b);
    model_dec_rope(d, kv, b);
    return KN_OK;
}

void model_dec_end(model_dec *d, model_kv *kv, const model_batch *b, const float *add, float *out) {
    const model *m = d->base.m;
    if (add) model_dec_resid_norm(d, b->n_tokens, add, NULL, 0.0f, NULL);
    kv_batch_end(kv, b->n_tokens, b->seq, b->pos);
    model_dec_output(d, b, &m->output_norm, m->hp.rms_eps, &m->output, out);
}

const float *model_rope_factors(const model *m, const model_kv *kv) {
    if (m->rope_freqs.data) return m->rope_freqs.data;
    if (m->rope_long.data && kv_n_ctx(kv) > m->hp.n_ctx_orig) return m->rope_long.data;
    return m->rope_short.data;
}

void model_dec_rope(model_dec *d, const model_kv *kv, const model_batch *b) {
    const model *m = d->base.m;
    const float *f = model_rope_factors(m, kv);
    model_rope r;
    model_rope_init(&r, &m->hp, false, f);
    model_rope_table(&r, b->pos, b->n_tokens, d->rope);
    if (d->rope_swa) {
        model_rope_init(&r, &m->hp, true, f);
        model_rope_table(&r, b->pos, b->n_tokens, d->rope_swa);
    }
}

void model_dec_qkv(model_dec *d, const model_layer *L, int n) {
    model_ctx *c = &d->base;
    const model_hparams *hp = &c->m->hp;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim;
    if (L->wk.type == L->wq.type && L->wv.type == L->wq.type) {
        const model_tensor *ws[3] = {&L->wq, &L->wk, &L->wv};
        float *ys[3] = {d->q, d->k, d->v};
        const int64_t lds[3] = {Hq, Hkv, Hkv};
        model_matmul_multi(c, 3, ws, ys, lds, n);
    } else {
        model_matmul_q(c, &L->wq, n, d->q, Hq);
        if (L->wk.type != L->wq.type) tensor_act_quantize(c->ops, L->wk.type, d->xn, E, E, n, c->act);
        model_matmul_q(c, &L->wk, n, d->k, Hkv);
        if (L->wv.type != L->wk.type) tensor_act_quantize(c->ops, L->wv.type, d->xn, E, E, n, c->act);
        model_matmul_q(c, &L->wv, n, d->v, Hkv);
    }
}

typedef struct rope_kv_job {
    model_dec *d;
    model_kv *kv;
    const model_batch *b;
    int layer;
} rope_kv_job;

static void head_norms(float *x, int n_heads, const model_tensor *w, int hd, float eps) {
    if (!w->data) return;
    for (int h = 0; h < n_heads; h++)
        model_rmsnorm(x + (size_t)h * hd, x + (size_t)h * hd, w->data, hd, eps);
}

static void rope_kv_token(void *arg, int t) {
    const rope_kv_job *j = arg;
    model_dec *d = j->d;
    const model_hparams *hp = &d->base.m->hp;
    const model_layer *L = &d->base.m->layers[j->layer];
    const int64_t hd = hp->head_dim, Hq = (int64_t)hp->n_head * hd, Hkv = (int64_t)hp->n_head_kv * hd;
    float *q = d->q + (size_t)t * Hq, *k = d->k + (size_t)t * Hkv, *v = d->v + (size_t)t * Hkv;
    model_add_bias(q, &L->bq, 1, Hq);
    model_add_bias(k, &L->bk, 1, Hkv);
    model_add_bias(v, &L->bv, 1, Hkv);
    head_norms(q, hp->n_head, &L->attn_q_norm, (int)hd, hp->rms_eps);
    head_norms(k, hp->n_head_kv, &L->attn_k_norm, (int)hd, hp->rms_eps);
    const float *r = (L->swa && d->rope_swa ? d->rope_swa : d->rope) + (size_t)t * hp->n_rot;
    model_rope_apply(hp, q, hp->n_head, r);
    model_rope_apply(hp, k, hp->n_head_kv, r);
    if (hp->scale_q) {
        const float sc = hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)hd);
        for (int64_t i = 0; i < Hq; i++)
            q[i] *= sc;
    }
    model_kv_write(j->kv, hp->head_dim, hp->n_head_kv, j->b->seq[t], j->layer, j->b->pos[t], k, v);
}

void model_dec_qk_rope_kv(model_dec *d, model_kv *kv, const model_batch *b, int layer) {
    const model_hparams *hp = &d->base.m->hp;
    rope_kv_job rj = {.d = d, .kv = kv, .b = b, .layer = layer};
    model_for_tokens(&d->base, b->n_tokens, (int64_t)b->n_tokens * hp->n_head * hp->head_dim * 8, rope_kv_token,
                     &rj);
}

typedef struct postnorm_job {
    model_dec *d;
    const float *add;
    const model_tensor *post, *next, *w;
    float eps;
} postnorm_job;

static void postnorm_token(void *arg, int t) {
    const postnorm_job *j = arg;
    model_dec *d = j->d;
    const int64_t E = d->base.m->hp.n_embd;
    float *x = d->x + (size_t)t * E, *a = (float *)j->add + (size_t)t * E;
    model_rmsnorm(a, a, j->post->data, E, j->eps);
    for (int64_t i = 0; i < E; i++)
        x[i] += a[i];
    if (!j->next) return;
    float *xn = d->xn + (size_t)t * E;
    model_rmsnorm(xn, x, j->next->data, E, j->eps);
    model_act_quantize_row(&d->base, j->w, xn, t);
}

void model_dec_resid_postnorm(model_dec *d, int n, const float *add, const model_tensor *post, float eps,
                              const model_tensor *next, const model_tensor *w) {
    const int64_t E = d->base.m->hp.n_embd;
    postnorm_job j = {.d = d, .add = add, .post = post, .next = next, .w = w, .eps = eps};
    model_for_tokens(&d->base, n, (int64_t)n * E * 16, postnorm_token, &j);
}

typedef struct rows_job {
    model_dec *d;
    const float *src; /* rows [n][ld] to add or to quantize */
    int64_t ld;
    const model_tensor *norm; /* RMSNorm weight (or NULL) */
    float eps;
    const model_tensor *w; /* the weight the quantized rows feed */
} rows_job;

static void resid_norm_token(void *arg, int t) {
    const rows_job *j = arg;
    model_dec *d = j->d;
    const int64_t E = d->base.m->hp.n_embd;
    float *x = d->x + (size_t)t * E;
    if (j->src) {
        const float *a = j->src + (size_t)t * j->ld;
        for (int64_t i = 0; i < E; i++)
            x[i] += a[i];
    }
    if (!j->norm) return;
    float *xn = d->xn + (size_t)t * E;
    model_rmsnorm(xn, x, j->norm->data, E, j->eps);
    model_act_quantize_row(&d->base, j->w, xn, t);
}

void model_dec_resid_norm(model_dec *d, int n, const float *add, const model_tensor *norm, float eps,
                          const model_tensor *w) {
    const int64_t E = d->base.m->hp.n_embd;
    rows_job j = {.d = d, .src = add, .ld = E, .norm = norm, .eps = eps, .w = w};
    model_for_tokens(&d->base, n, (int64_t)n * E * 8, resid_norm_token, &j);
}

static void quant_token(void *arg, int t) {
    const rows_job *j = arg;
    model_act_quantize_row(&j->d->base, j->w, j->src + (size_t)t * j->ld, t);
}

void model_dec_quant(model_dec *d, int n, const float *src, int64_t ld, const model_tensor *w) {
    rows_job j = {.d = d, .src = src, .ld = ld, .w = w};
    model_for_tokens(&d->base, n, (int64_t)n * ld * 8, quant_token, &j);
}

/* ---- attention over the paged KV ---- */

static void kv_store(bool q8, uint8_t *dst, const float *src, int hd) {
    if (q8) {
        tensor_kv8p_quantize(src, dst, hd); /* the "q8_0" KV rows are Q8P (tensor.h): finer levels */
    } else {
        q_f16_t *d = (q_f16_t *)dst;
        for (int i = 0; i < hd; i++)
            d[i] = q_f32_to_f16(src[i]);
    }
}

void model_kv_write(const model_kv *kv, int head_dim, int n_head_kv, int seq, int layer, int pos,
                    const float *k, const float *v) {
    const bool q8 = kv_geometry(kv)->row_type == MODEL_KV_Q8_0;
    for (int h = 0; h < n_head_kv; h++) {
        kv_store(q8, kv_row(kv, seq, layer, h, pos, false, NULL), k + (size_t)h * head_dim, head_dim);
        kv_store(q8, kv_row(kv, seq, layer, h, pos, true, NULL), v + (size_t)h * head_dim, head_dim);
    }
}

/* (token, kv head) pairs split across threads; the query heads of one
 * group share each widened K/V row */
typedef struct attn_job {
    model_dec *d;
    model_kv *kv;
    const model_batch *b;
    int layer;
} attn_job;

/* ---- llama.cpp's flash-attention numerics for small batches ----
 * ggml's CPU flash attention, for a ubatch of fewer than 64 query rows (and
 * so for every decode step), rounds Q to F16, takes each K·Q dot with AVX2's
 * lane order and accumulates softmax(QK)·V in F16, one key at a time.
 * model_ctx_set_attn_numerics(MODEL_ATTN_GGML_F16) reproduces it (scalar,
 * slow) so that tests can compare against references computed that way;
 * the default keeps F32 accumulators in tiles. */

/* ggml_vec_dot_f16 on AVX2 with FMA: 4 accumulators of 8 lanes over steps of
 * 32, then the pairwise reduction of GGML_F32x8_REDUCE; tail in double. */
static float ggml_dot_f16(int n, const q_f16_t *x, const q_f16_t *y) {
    float acc[4][8] = {{0}};
    const int np = n & ~31;
    for (int i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(q_f16_to_f32(x[i + 8 * j + l]), q_f16_to_f32(y[i + 8 * j + l]), acc[j][l]);
    for (int l = 0; l < 8; l++) {
        acc[0][l] += acc[2][l];
        acc[1][l] += acc[3][l];
    }
    for (int l = 0; l < 8; l++)
        acc[0][l] += acc[1][l];
    float t0[4];
    for (int l = 0; l < 4; l++)
        t0[l] = acc[0][l] + acc[0][l + 4];
    const float h0 = t0[0] + t0[1], h1 = t0[2] + t0[3];
    double sum = (double)(h0 + h1);
    for (int i = np; i < n; i++)
        sum += (double)(q_f16_to_f32(x[i]) * q_f16_to_f32(y[i]));
    return (float)sum;
}

/* One query head over keys [t0, pos] of a kv head: M, S and VKQ16 as ggml's
 * one-chunk kernel keeps them. */
static void attn_ggml_f16_head(const model_kv *kv, int seq, int layer, int kvh, int first, int pos, int hd,
                               const q_f16_t *q16, float scale, float *M, float *S, q_f16_t *vkq) {
    for (int ic = first; ic <= pos; ic++) {
        const q_f16_t *k = (const q_f16_t *)kv_row(kv, seq, layer, kvh, ic, false, NULL);
        const q_f16_t *v = (const q_f16_t *)kv_row(kv, seq, layer, kvh, ic, true, NULL);
        float s = ggml_dot_f16(hd, k, q16) * scale;
        float ms = 1.0f, vs = 1.0f;
        if (s > *M) {
            const float mold = *M;
            *M = s;
            ms = expf(mold - s);
            for (int e = 0; e < hd; e++)
                vkq[e] = q_f32_to_f16(q_f16_to_f32(vkq[e]) * ms);
        } else {
            vs = expf(s - *M);
        }
        for (int e = 0; e < hd; e++)
            vkq[e] = q_f32_to_f16(fmaf(q_f16_to_f32(v[e]), vs, q_f16_to_f32(vkq[e])));
        *S = *S * ms + vs;
    }
}

static void attn_fn(void *arg, int ith, int nth) {
    attn_job *j = arg;
    model_dec *d = j->d;
    const model_ctx *c = &d->base;
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, G = nh / nkv;
    const float scale = hp->scale_q ? 1.0f : hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)hd);
    const model_layer *L = &c->m->layers[j->layer];
    const int window = L->swa ? hp->n_swa : 0;
    const float *sinks = L->attn_sinks.data;
    float *sc = d->scratch + (size_t)ith * d->scratch_per_thread;
    float *mx = sc + (size_t)G * MODEL_ATTN_TILE, *lsum = mx + G, *acc = lsum + G;
    /* q8_0 KV (Q8P rows): each tile's rows are widened to F16 here first
     * (the 8-bit rounding dominates the F16 one by far) */
    q_f16_t *k16 = (q_f16_t *)(acc + (size_t)G * hd), *v16 = k16 + (size_t)MODEL_ATTN_TILE * hd;
    const bool is_q8 = kv_geometry(j->kv)->row_type == MODEL_KV_Q8_0;
    const size_t rb = kv_geometry(j->kv)->row_bytes;
    int64_t lo, hi;
    kn_split_range((int64_t)j->b->n_tokens * nkv, 1, ith, nth, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        const int t = (int)(p / nkv), kvh = (int)(p % nkv);
        const int seq = j->b->seq[t], pos = j->b->pos[t];
        const float *q = d->q + (size_t)t * nh * hd + (size_t)kvh * G * hd;
        const int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        float *o = d->att + (size_t)t * nh * hd + (size_t)kvh * G * hd;
        if (c->attn_numerics == MODEL_ATTN_GGML_F16 && !is_q8) {
            for (int g = 0; g < G; g++) {
                float M = -INFINITY, S = 0.0f;
                for (int e = 0; e < hd; e++)
                    k16[e] = q_f32_to_f16(q[(size_t)g * hd + e]), v16[e] = 0;
                attn_ggml_f16_head(j->kv, seq, j->layer, kvh, first, pos, hd, k16, scale, &M, &S, v16);
                float *og = o + (size_t)g * hd;
                for (int e = 0; e < hd; e++)
                    og[e] = q_f16_to_f32(v16[e]);
                if (sinks) {
                    const float sk = sinks[kvh * G + g];
                    float ms = 1.0f, vs = 1.0f;
                    if (sk > M) {
                        ms = expf(M - sk);
                        for (int e = 0; e < hd; e++)
                            og[e] *= ms;
                    } else {
                        vs = expf(sk - M);
                    }
                    S = fmaf(S, ms, vs);
                }
                const float inv = S == 0.0f ? 0.0f : 1.0f / S;
                for (int e = 0; e < hd; e++)
                    og[e] *= inv;
            }
            continue;
        }
        for (int g = 0; g < G; g++)
            mx[g] = -INFINITY, lsum[g] = 0.0f;
        memset(acc, 0, (size_t)G * hd * sizeof *acc);
        /* a window starts at pos - window + 1: its first tile runs to the next
         * aligned boundary, the others stay aligned (the split depends on pos only) */
        for (int t0 = first, len; t0 <= pos; t0 += len) {
            const int end = (t0 / MODEL_ATTN_TILE + 1) * MODEL_ATTN_TILE;
            len = (end < pos + 1 ? end : pos + 1) - t0;
            /* a tile's rows are contiguous within a KV block; a tile spanning
             * blocks (blocks shorter than a tile) is gathered */
            int run;
            const uint8_t *K = kv_row(j->kv, seq, j->layer, kvh, t0, false, &run);
            const uint8_t *V = kv_row(j->kv, seq, j->layer, kvh, t0, true, NULL);
            const q_f16_t *kt = (const q_f16_t *)K, *vt = (const q_f16_t *)V;
            if (is_q8) {
                for (int i = 0; i < len; i++) {
                    if (i == run) {
                        int more;
                        K = kv_row(j->kv, seq, j->layer, kvh, t0 + i, false, &more) - (size_t)i * rb;
                        V = kv_row(j->kv, seq, j->layer, kvh, t0 + i, true, NULL) - (size_t)i * rb;
                        run += more;
                    }
                    tensor_kv8p_dequantize_f16(K + (size_t)i * rb, k16 + (size_t)i * hd, hd);
                    tensor_kv8p_dequantize_f16(V + (size_t)i * rb, v16 + (size_t)i * hd, hd);
                }
                kt = k16, vt = v16;
            } else if (run < len) {
                for (int i = 0; i < len; i += run) {
                    K = kv_row(j->kv, seq, j->layer, kvh, t0 + i, false, &run);
                    V = kv_row(j->kv, seq, j->layer, kvh, t0 + i, true, NULL);
                    if (run > len - i) run = len - i;
                    memcpy(k16 + (size_t)i * hd, K, (size_t)run * rb);
                    memcpy(v16 + (size_t)i * hd, V, (size_t)run * rb);
                }
                kt = k16, vt = v16;
            }
            c->ops->attn_tile_f16(hd, G, len, q, kt, vt, scale, mx, lsum, acc, sc);
        }
        for (int g = 0; g < G; g++) {
            if (sinks) { /* exp(sink) joins the denominator, max-subtracted with it */
                const float s = sinks[kvh * G + g], mn = s > mx[g] ? s : mx[g], corr = expf(mx[g] - mn);
                lsum[g] = lsum[g] * corr + expf(s - mn);
                for (int e = 0; e < hd; e++)
                    acc[(size_t)g * hd + e] *= corr;
            }
            const float inv = 1.0f / lsum[g];
            for (int e = 0; e < hd; e++)
                o[(size_t)g * hd + e] = acc[(size_t)g * hd + e] * inv;
        }
    }
}

void model_attn_paged(model_dec *d, model_kv *kv, const model_batch *b, int layer) {
    const model_hparams *hp = &d->base.m->hp;
    const int64_t Hq = (int64_t)hp->n_head * hp->head_dim;
    attn_job j = {.d = d, .kv = kv, .b = b, .layer = layer};
    int64_t macs = 0;
    const int window = d->base.m->layers[layer].swa ? hp->n_swa : 0;
    for (int t = 0; t < b->n_tokens; t++)
        macs += (int64_t)(window > 0 && b->pos[t] + 1 > window ? window : b->pos[t] + 1) * Hq * 2;
    kn_pool_run(model_pool_for(&d->base, macs), attn_fn, &j);
}

/* ---- FFN ---- */

typedef struct swiglu_job {
    model_dec *d;
    const model_tensor *w_down;
} swiglu_job;

/* gate = silu(gate) * up ; act = quant(gate) for w_down */
static void swiglu_token(void *arg, int t) {
    const swiglu_job *j = arg;
    model_dec *d = j->d;
    const int64_t F = d->base.m->hp.n_ff;
    float *g = d->gate + (size_t)t * F;
    d->base.ops->swiglu(F, g, g, d->up + (size_t)t * F);
    model_act_quantize_row(&d->base, j->w_down, g, t);
}

/* gate x and up x of n tokens whose normed rows (d->xn) are already
 * quantized in the act for w_gate: one pool run when the types agree. */
static void ffn_gate_up(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up, int n) {
    model_ctx *c = &d->base;
    const int64_t E = c->m->hp.n_embd, F = c->m->hp.n_ff;
    if (w_up->type == w_gate->type) {
        const model_tensor *ws[2] = {w_gate, w_up};
        float *ys[2] = {d->gate, d->up};
        const int64_t lds[2] = {F, F};
        model_matmul_multi(c, 2, ws, ys, lds, n);
    } else {
        model_matmul_q(c, w_gate, n, d->gate, F);
        tensor_act_quantize(c->ops, w_up->type, d->xn, E, E, n, c->act);
        model_matmul_q(c, w_up, n, d->up, F);
    }
}

void model_ffn_swiglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                      const model_tensor *w_down, int n) {
    model_ctx *c = &d->base;
    const int64_t E = c->m->hp.n_embd, F = c->m->hp.n_ff;
    ffn_gate_up(d, w_gate, w_up, n);
    swiglu_job j = {.d = d, .w_down = w_down};
    model_for_tokens(c, n, (int64_t)n * F * 16, swiglu_token, &j);
    model_matmul_q(c, w_down, n, d->xn, E);
}

typedef struct geglu_job {
    model_dec *d;
    const model_tensor *w_down;
} geglu_job;

/* gate = gelu_tanh(gate) * up (F16 table, as ggml's CPU GLU); act = quant(gate) for w_down */
static void geglu_token(void *arg, int t) {
    const geglu_job *j = arg;
    model_dec *d = j->d;
    const int64_t F = d->base.m->hp.n_ff;
    float *g = d->gate + (size_t)t * F;
    const float *u = d->up + (size_t)t * F;
    for (int64_t i = 0; i < F; i++)
        g[i] = model_gelu_lookup(d->gelu, g[i]) * u[i];
    model_act_quantize_row(&d->base, j->w_down, g, t);
}

void model_ffn_geglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                     const model_tensor *w_down, int n) {
    model_ctx *c = &d->base;
    const int64_t E = c->m->hp.n_embd, F = c->m->hp.n_ff;
    KN_ASSERT(d->gelu);
    ffn_gate_up(d, w_gate, w_up, n);
    geglu_job j = {.d = d, .w_down = w_down};
    model_for_tokens(c, n, (int64_t)n * F * 16, geglu_token, &j);
    model_matmul_q(c, w_down, n, d->xn, E);
}

/* ---- mixture of experts ---- */

struct model_moe_scratch {
    int k, n_exp;
    int64_t F;
    size_t arow_in, arow_down; /* act bytes of one column for the widest gate/up and down types */
    float *logits;  /* [B][n_exp] */
    int32_t *sel;   /* [B][k] experts in rank order */
    float *wsel;    /* [B][k] their weights */
    int32_t *start; /* [n_exp + 1] first column of each expert */
    int32_t *fill;  /* [n_exp] */
    int32_t *col;   /* [B][k] the column of each (token, rank) */
    int32_t *tok;   /* [B * k] the token of each column */
    uint8_t *xq;    /* [B] the tokens' rows quantized for gate */
    uint8_t *xq_up; /* the same for up when its act type differs (else NULL) */
    uint8_t *a_in, *a_up, *a_down; /* [B * k] columns grouped by expert */
    float *g, *u;   /* [B * k][F] */
    float *out;     /* [B * k][E] */
};

static void moe_free(struct model_moe_scratch *s) {
    if (!s) return;
    void *bufs[] = {s->logits, s->sel, s->wsel, s->start, s->fill, s->col, s->tok, s->xq,
                    s->xq_up, s->a_in, s->a_up, s->a_down, s->g, s->u, s->out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kn_free_aligned(bufs[i]);
    free(s);
}

/* The widest act column over the layers' tensors t (offset into model_layer). */
static size_t moe_arow(const model *m, size_t off, int64_t K) {
    size_t w = 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const model_tensor *t = (const model_tensor *)((const uint8_t *)&m->layers[l] + off);
        if (!t->data) continue;
        size_t r = tensor_act_bytes(t->type, K, 1);
        if (r > w) w = r;
    }
    return w;
}

kn_status model_moe_init(model_dec *d, kn_err *err) {
    model_ctx *c = &d->base;
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    struct model_moe_scratch *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    d->moe = s;
    const int64_t B = c->max_batch, E = hp->n_embd, K = hp->n_expert_used, P = B * K;
    s->k = hp->n_expert_used;
    s->n_exp = hp->n_expert;
    s->F = hp->n_ff_exp;
    size_t a_gate = moe_arow(m, offsetof(model_layer, gate_exps), E);
    size_t a_up = moe_arow(m, offsetof(model_layer, up_exps), E);
    s->arow_in = a_gate > a_up ? a_gate : a_up;
    s->arow_down = moe_arow(m, offsetof(model_layer, down_exps), s->F);
    struct {
        void **p;
        size_t n;
    } bufs[] = {
        {(void **)&s->logits, (size_t)B * s->n_exp * sizeof(float)},
        {(void **)&s->sel, (size_t)P * sizeof(int32_t)},
        {(void **)&s->wsel, (size_t)P * sizeof(float)},
        {(void **)&s->start, ((size_t)s->n_exp + 1) * sizeof(int32_t)},
        {(void **)&s->fill, (size_t)s->n_exp * sizeof(int32_t)},
        {(void **)&s->col, (size_t)P * sizeof(int32_t)},
        {(void **)&s->tok, (size_t)P * sizeof(int32_t)},
        {(void **)&s->xq, (size_t)B * s->arow_in},
        {(void **)&s->xq_up, (size_t)B * s->arow_in},
        {(void **)&s->a_in, (size_t)P * s->arow_in},
        {(void **)&s->a_up, (size_t)P * s->arow_in},
        {(void **)&s->a_down, (size_t)P * s->arow_down},
        {(void **)&s->g, (size_t)P * s->F * sizeof(float)},
        {(void **)&s->u, (size_t)P * s->F * sizeof(float)},
        {(void **)&s->out, (size_t)P * E * sizeof(float)},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = model_ctx_alloc(c, bufs[i].n);
        if (!*bufs[i].p)
            return kn_fail(err, KN_ENOMEM, "cannot allocate the expert scratch for a batch of %d", c->max_batch);
    }
    return KN_OK;
}

double model_moe_scratch_bytes(const model_shape *s, double B) {
    const double P = B * (double)s->n_expert_used, E = (double)s->n_embd, F = (double)s->n_ff_exp;
    /* act columns counted at 4 bytes an element (F32 at worst) */
    return B * (double)s->n_expert * 4 + P * 20 + 8.0 * (double)s->n_expert + B * 8 * E +
           P * (8 * E + 4 * F) + P * 8 * F + P * 4 * E;
}

/* Top k of v[0..n) into idx (descending; ties to the lower index). */
static void top_k(const float *v, int n, int k, int32_t *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n; e++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++)
                taken = idx[i] == e;
            if (!taken && (best < 0 || v[e] > v[best])) best = e;
        }
        idx[j] = best;
    }
}

/* One token's experts and weights from its router logits. */
static void moe_route(const model_moe *cfg, float *lg, int n_exp, int k, int32_t *sel, float *w) {
    if (cfg->gating == MODEL_MOE_SOFTMAX_TOPK) {
        float mx = -INFINITY;
        for (int e = 0; e < n_exp; e++)
            mx = lg[e] > mx ? lg[e] : mx;
        double sum = 0.0;
        for (int e = 0; e < n_exp; e++) {
            lg[e] = expf(lg[e] - mx);
            sum += lg[e];
        }
        const float inv = (float)(1.0 / sum);
        for (int e = 0; e < n_exp; e++)
            lg[e] *= inv;
        top_k(lg, n_exp, k, sel);
        for (int j = 0; j < k; j++)
            w[j] = lg[sel[j]];
    } else {
        top_k(lg, n_exp, k, sel);
        float mx = lg[sel[0]];
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            w[j] = expf(lg[sel[j]] - mx);
            sum += w[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < k; j++)
            w[j] *= inv;
    }
    if (cfg->norm_weights) {
        float sum = 0.0f;
        for (int j = 0; j < k; j++)
            sum += w[j];
        if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
        for (int j = 0; j < k; j++)
            w[j] /= sum;
    }
}

/* One pool run over the rows of every active expert's matrices: items are
 * (matrix, its columns, output), their rows concatenated and split. */
typedef struct moe_item {
    const void *w;
    q_type type;
    int64_t K, M;
    const void *act;
    int64_t n;
    float *y;
    int64_t ldy;
} moe_item;

typedef struct moe_mm {
    const tensor_ops *ops;
    const moe_item *it;
    int n_items;
    int64_t total;
} moe_mm;

static void moe_mm_fn(void *arg, int ith, int nth) {
    const moe_mm *j = arg;
    int64_t lo, hi, base = 0;
    kn_split_range(j->total, 16, ith, nth, &lo, &hi);
    for (int i = 0; i < j->n_items && lo < hi; i++) {
        const moe_item *it = &j->it[i];
        const int64_t a = lo > base ? lo - base : 0, b = hi - base < it->M ? hi - base : it->M;
        if (a < b) tensor_matmul_rows(j->ops, it->type, it->w, it->K, a, b, it->act, it->n, it->y, it->ldy);
        base += it->M;
    }
}

static void moe_run(model_ctx *c, const moe_item *it, int n_items) {
    moe_mm j = {.ops = c->ops, .it = it, .n_items = n_items};
    int64_t macs = 0;
    for (int i = 0; i < n_items; i++) {
        j.total += it[i].M;
        macs += it[i].K * it[i].M * it[i].n;
    }
    kn_pool_run(model_pool_for(c, macs), moe_mm_fn, &j);
}

typedef struct moe_job {
    model_dec *d;
    const model_layer *L;
    const model_moe *cfg;
} moe_job;

/* Column i: biases, the gated activation, quantized for down. */
static void moe_act_col(void *arg, int i) {
    const moe_job *j = arg;
    struct model_moe_scratch *s = j->d->moe;
    const model_layer *L = j->L;
    const int64_t F = s->F;
    float *g = s->g + (size_t)i * F, *u = s->u + (size_t)i * F;
    /* the expert of column i: the one whose column range holds i */
    int lo = 0, hi = s->n_exp - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->start[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    const int ex = lo;
    if (L->gate_exps_b.data) {
        const float *b = (const float *)L->gate_exps_b.data + (size_t)ex * F;
        for (int64_t f = 0; f < F; f++)
            g[f] += b[f];
    }
    if (L->up_exps_b.data) {
        const float *b = (const float *)L->up_exps_b.data + (size_t)ex * F;
        for (int64_t f = 0; f < F; f++)
            u[f] += b[f];
    }
    if (j->cfg->act == MODEL_MOE_SWIGLU) {
        j->d->base.ops->swiglu(F, g, g, u);
    } else {
        for (int64_t f = 0; f < F; f++) {
            const float x = g[f] < 7.0f ? g[f] : 7.0f;
            const float y = u[f] < -7.0f ? -7.0f : u[f] > 7.0f ? 7.0f : u[f];
            g[f] = x / (1.0f + expf(1.702f * -x)) * (y + 1.0f);
        }
    }
    tensor_act_quantize(j->d->base.ops, L->down_exps.type, g, F, F, 1, s->a_down + (size_t)i * s->arow_down);
}

/* Token t: the weighted sum of its k expert outputs in rank order. */
static void moe_sum_token(void *arg, int t) {
    const moe_job *j = arg;
    struct model_moe_scratch *s = j->d->moe;
    const model_layer *L = j->L;
    const int64_t E = j->d->base.m->hp.n_embd;
    float *y = j->d->xn + (size_t)t * E;
    for (int r = 0; r < s->k; r++) {
        const int ex = s->sel[t * s->k + r];
        const float w = s->wsel[t * s->k + r];
        const float *o = s->out + (size_t)s->col[t * s->k + r] * E;
        const float *b = L->down_exps_b.data ? (const float *)L->down_exps_b.data + (size_t)ex * E : NULL;
        for (int64_t i = 0; i < E; i++) {
            const float v = (b ? o[i] + b[i] : o[i]) * w;
            y[i] = r == 0 ? v : y[i] + v;
        }
    }
}

static void moe_quant_token(void *arg, int t) {
    const moe_job *j = arg;
    struct model_moe_scratch *s = j->d->moe;
    const int64_t E = j->d->base.m->hp.n_embd;
    const float *x = j->d->xn + (size_t)t * E;
    tensor_act_quantize(j->d->base.ops, j->L->gate_exps.type, x, E, E, 1, s->xq + (size_t)t * s->arow_in);
    if (j->L->up_exps.type != j->L->gate_exps.type)
        tensor_act_quantize(j->d->base.ops, j->L->up_exps.type, x, E, E, 1, s->xq_up + (size_t)t * s->arow_in);
}

void model_ffn_moe(model_dec *d, const model_layer *L, const model_moe *cfg, int n) {
    model_ctx *c = &d->base;
    struct model_moe_scratch *s = d->moe;
    const int64_t E = c->m->hp.n_embd, F = s->F;
    const int k = s->k, nx = s->n_exp;
    /* route */
    model_matmul(c, &L->router, d->xn, E, n, s->logits, nx);
    for (int t = 0; t < n; t++) {
        float *lg = s->logits + (size_t)t * nx;
        if (L->router_b.data)
            for (int e = 0; e < nx; e++)
                lg[e] += ((const float *)L->router_b.data)[e];
        moe_route(cfg, lg, nx, k, s->sel + (size_t)t * k, s->wsel + (size_t)t * k);
    }
    /* group the (token, rank) pairs by expert, tokens in batch order */
    memset(s->fill, 0, (size_t)nx * sizeof *s->fill);
    for (int p = 0; p < n * k; p++)
        s->fill[s->sel[p]]++;
    s->start[0] = 0;
    for (int e = 0; e < nx; e++)
        s->start[e + 1] = s->start[e] + s->fill[e], s->fill[e] = 0;
    for (int p = 0; p < n * k; p++) {
        const int e = s->sel[p], ci = s->start[e] + s->fill[e]++;
        s->col[p] = ci;
        s->tok[ci] = p / k;
    }
    moe_job mj = {.d = d, .L = L, .cfg = cfg};
    model_for_tokens(c, n, (int64_t)n * E * 8, moe_quant_token, &mj);
    const bool sep_up = L->up_exps.type != L->gate_exps.type;
    for (int ci = 0; ci < n * k; ci++) {
        memcpy(s->a_in + (size_t)ci * s->arow_in, s->xq + (size_t)s->tok[ci] * s->arow_in, s->arow_in);
        if (sep_up)
            memcpy(s->a_up + (size_t)ci * s->arow_in, s->xq_up + (size_t)s->tok[ci] * s->arow_in, s->arow_in);
    }
    /* gate and up of every active expert in one run, then down */
    moe_item it[2 * 256];
    int ni = 0;
    for (int e0 = 0; e0 < nx; e0 += 256) {
        ni = 0;
        for (int e = e0; e < nx && e < e0 + 256; e++) {
            const int cnt = s->start[e + 1] - s->start[e];
            if (!cnt) continue;
            const size_t c0 = (size_t)s->start[e];
            it[ni++] = (moe_item){.w = (const uint8_t *)L->gate_exps.data + (size_t)e * L->gate_exps.nb2,
                                  .type = L->gate_exps.type, .K = E, .M = F, .act = s->a_in + c0 * s->arow_in,
                                  .n = cnt, .y = s->g + c0 * F, .ldy = F};
            it[ni++] = (moe_item){.w = (const uint8_t *)L->up_exps.data + (size_t)e * L->up_exps.nb2,
                                  .type = L->up_exps.type, .K = E, .M = F,
                                  .act = (sep_up ? s->a_up : s->a_in) + c0 * s->arow_in, .n = cnt,
                                  .y = s->u + c0 * F, .ldy = F};
        }
        if (ni) moe_run(c, it, ni);
    }
    model_for_tokens(c, n * k, (int64_t)n * k * F * 16, moe_act_col, &mj);
    for (int e0 = 0; e0 < nx; e0 += 256) {
        ni = 0;
        for (int e = e0; e < nx && e < e0 + 256; e++) {
            const int cnt = s->start[e + 1] - s->start[e];
            if (!cnt) continue;
            const size_t c0 = (size_t)s->start[e];
            it[ni++] = (moe_item){.w = (const uint8_t *)L->down_exps.data + (size_t)e * L->down_exps.nb2,
                                  .type = L->down_exps.type, .K = F, .M = E, .act = s->a_down + c0 * s->arow_down,
                                  .n = cnt, .y = s->out + c0 * E, .ldy = E};
        }
        if (ni) moe_run(c, it, ni);
    }
    model_for_tokens(c, n, (int64_t)n * k * E * 2, moe_sum_token, &mj);
}

static void logit_softcap(const model_ctx *c, float *out, int n_rows, float cap) {
    const size_t nv = (size_t)n_rows * (size_t)c->m->hp.n_vocab;
    const float inv = 1.0f / cap;
    for (size_t i = 0; i < nv; i++)
        out[i] = tanhf(out[i] * inv) * cap;
}

/* ---- output ---- */

void model_dec_output(model_dec *d, const model_batch *b, const model_tensor *norm, float eps,
                      const model_tensor *output, float *out) {
    const model_hparams *hp = &d->base.m->hp;
    const int n = b->n_tokens;
    const int64_t E = hp->n_embd;
    if (b->embd && b->logits) {
        int n_emb = 0;
        for (int t = 0; t < n; t++)
            if (b->logits[t] & MODEL_OUT_EMBD)
                model_rmsnorm(b->embd + (size_t)n_emb++ * E, d->x + (size_t)t * E, norm->data, E, eps);
    }
    int n_out = 0;
    for (int t = 0; t < n; t++) {
        bool want = b->logits ? (b->logits[t] & MODEL_OUT_LOGITS) != 0 : t == n - 1;
        if (!want) continue;
        model_rmsnorm(d->xn + (size_t)n_out * E, d->x + (size_t)t * E, norm->data, E, eps);
        n_out++;
    }
    if (n_out > 0) model_matmul(&d->base, output, d->xn, E, n_out, out, hp->n_vocab);
    if (n_out > 0 && hp->logit_softcap > 0) logit_softcap(&d->base, out, n_out, hp->logit_softcap);
}
