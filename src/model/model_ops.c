/*
 * model_ops.c — the operations families compose their blocks from: the
 * common ctx and the decoder scratch, matmuls and per-token work on the
 * pool, norms, RoPE, KV writes and the attention over the paged KV, the
 * FFN variants, the final norm and logits (model_ops.h).
 */
#include "model_ops.h"

#include <math.h>
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

void model_rope_table(const model_hparams *hp, const int32_t *pos, int n, float *tab) {
    const int half = hp->n_rot / 2;
    const float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    float corr0 = 0.0f, corr1 = 0.0f, mscale = hp->yarn_attn_factor > 0 ? hp->yarn_attn_factor : 1.0f;
    const float ext = hp->yarn_ext_factor;
    if (ext != 0.0f) {
        corr0 = floorf(yarn_corr_dim(hp->n_rot, hp->n_ctx_orig, hp->yarn_beta_fast, hp->rope_freq_base));
        corr1 = ceilf(yarn_corr_dim(hp->n_rot, hp->n_ctx_orig, hp->yarn_beta_slow, hp->rope_freq_base));
        if (corr0 < 0) corr0 = 0;
        if (corr1 > hp->n_rot - 1) corr1 = (float)(hp->n_rot - 1);
        mscale *= 1.0f + 0.1f * logf(1.0f / hp->rope_freq_scale);
    }
    for (int t = 0; t < n; t++) {
        float theta_extrap = (float)pos[t];
        float *r = tab + (size_t)t * hp->n_rot;
        for (int i = 0; i < half; i++) {
            const float theta_interp = hp->rope_freq_scale * theta_extrap;
            float th = theta_interp;
            if (ext != 0.0f) {
                float y = ((float)i - corr0) / fmaxf(0.001f, corr1 - corr0); /* i = i0 / 2 */
                float ramp = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext;
                th = theta_interp * (1.0f - ramp) + theta_extrap * ramp;
            }
            r[2 * i] = cosf(th) * mscale;
            r[2 * i + 1] = sinf(th) * mscale;
            theta_extrap *= theta_scale;
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
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = model_ctx_alloc(c, (size_t)bufs[i].n * sizeof(float));
        if (!*bufs[i].p) goto nomem;
    }
    c->act_bytes = act_bytes;
    c->act = model_ctx_alloc(c, c->act_bytes);
    if (!c->act) goto nomem;
    return KN_OK;
nomem:
    return kn_fail(err, KN_ENOMEM, "cannot allocate scratch buffers for a batch of %d", c->max_batch);
}

void model_dec_free(model_dec *d) {
    float *bufs[] = {d->x, d->xn, d->q, d->k, d->v, d->att, d->gate, d->up, d->rope, d->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kn_free_aligned(bufs[i]);
    kn_free_aligned(d->base.act);
}

double model_kv_bytes_decoder(const model_shape *s, model_kv_type t) {
    double elem = t == MODEL_KV_Q8_0 ? 38.0 / 32.0 : 2.0; /* Q8P rows */
    return 2.0 * (double)s->n_layer * (double)s->n_head_kv * (double)s->head_dim * elem;
}

/* The shared decoder scratch for B = max(max_batch, n_slots) tokens (its
 * buffers plus the activations, counted at 4 bytes an element), the KV
 * pool as the engine sizes it, the engine's logits (a row per slot and per
 * draft token), hidden states and per-token tables, and 64 bytes a
 * vocabulary entry for the tokenizer. */
uint64_t model_estimate_decoder(const model_shape *s, const model_mem_opts *o) {
    double B = o->max_batch > o->n_slots ? o->max_batch : o->n_slots;
    double E = (double)s->n_embd, F = (double)s->n_ff, Hq = (double)s->n_head * (double)s->head_dim;
    double Hkv = (double)s->n_head_kv * (double)s->head_dim, W = E > Hq ? E : Hq;
    if (F > W) W = F;
    double scratch = 4.0 * B * (E + W + 2 * Hq + 2 * Hkv + 2 * F + 64) + 4.0 * B * (E > F ? E : F);
    double engine = 4.0 * (double)o->n_slots * (double)s->n_vocab + 4.0 * B * E + 64.0 * (double)s->n_vocab;
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

static void attn_fn(void *arg, int ith, int nth) {
    attn_job *j = arg;
    model_dec *d = j->d;
    const model_ctx *c = &d->base;
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, G = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
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
        for (int g = 0; g < G; g++)
            mx[g] = -INFINITY, lsum[g] = 0.0f;
        memset(acc, 0, (size_t)G * hd * sizeof *acc);
        for (int t0 = 0; t0 <= pos; t0 += MODEL_ATTN_TILE) {
            const int len = pos - t0 + 1 < MODEL_ATTN_TILE ? pos - t0 + 1 : MODEL_ATTN_TILE;
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
        float *o = d->att + (size_t)t * nh * hd + (size_t)kvh * G * hd;
        for (int g = 0; g < G; g++) {
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
    for (int t = 0; t < b->n_tokens; t++)
        macs += (int64_t)(b->pos[t] + 1) * Hq * 2;
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

void model_ffn_swiglu(model_dec *d, const model_tensor *w_gate, const model_tensor *w_up,
                      const model_tensor *w_down, int n) {
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
    swiglu_job j = {.d = d, .w_down = w_down};
    model_for_tokens(c, n, (int64_t)n * F * 16, swiglu_token, &j);
    model_matmul_q(c, w_down, n, d->xn, E);
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
}
