/*
 * model_forward.c — the KV store and the batched forward pass shared by
 * the llama and qwen2 architectures (see model.h).
 */
#include "model.h"
#include "model_bert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- KV rows ---- */

bool model_kv_type_parse(const char *s, model_kv_type *out) {
    if (!strcasecmp(s, "f16")) *out = MODEL_KV_F16;
    else if (!strcasecmp(s, "q8_0")) *out = MODEL_KV_Q8_0;
    else return false;
    return true;
}

const char *model_kv_type_name(model_kv_type t) { return t == MODEL_KV_Q8_0 ? "q8_0" : "f16"; }

kn_status model_kv_geom(const model *m, model_kv_type type, kv_geom *g, kn_err *err) {
    if (type == MODEL_KV_Q8_0 && m->hp.head_dim % Q_QK8_0)
        return kn_fail(err, KN_EUNSUPPORTED, "a Q8_0 KV cache needs a head dimension divisible by 32 (this model: %d)",
                       m->hp.head_dim);
    *g = (kv_geom){.n_layer = m->hp.n_layer,
                   .n_head_kv = m->hp.n_head_kv,
                   .row_bytes = type == MODEL_KV_Q8_0 ? tensor_kv8p_row_size(m->hp.head_dim)
                                                      : (size_t)m->hp.head_dim * 2,
                   .row_type = (int)type};
    return KN_OK;
}

kn_status model_kv_create(const model *m, int n_seq, int n_ctx, model_kv_type type, model_kv **out, kn_err *err) {
    *out = NULL;
    kv_geom g;
    kn_status st = model_kv_geom(m, type, &g, err);
    if (st != KN_OK) return st;
    kv_opts o = {.n_seq = n_seq, .n_ctx = n_ctx, .block_size = 32};
    return kv_cache_create(&g, &o, out, err);
}

/* ---- context ---- */
struct model_ctx {
    const model *m;
    const tensor_ops *ops;
    kn_pool *pool;
    int max_batch;
    int n_threads;
    float *x;       /* [B][E]   residual stream */
    float *xn;      /* [B][W]   normed input / gathered rows, W = max(E, Hq, n_ff) */
    float *q;       /* [B][Hq] */
    float *k;       /* [B][Hkv] */
    float *v;       /* [B][Hkv] */
    float *att;     /* [B][Hq]  attention output */
    float *gate;    /* [B][n_ff] */
    float *up;      /* [B][n_ff] */
    float *rope;    /* [B][n_rot/2][2] cos, sin */
    float *scratch; /* [n_threads][scratch_per_thread] attention: scores [G][TILE], m [G], l [G], acc [G][hd] */
    size_t scratch_per_thread;
    void *act;      /* quantized activations, act_bytes */
    size_t act_bytes;
    uint64_t bytes;
    bert_ctx *enc;  /* encoder models: their own scratch (model_bert.c); the rest is unused */
};

bert_ctx *model_ctx_encoder(model_ctx *c) { return c->enc; }

static size_t act_need(const model_tensor *t, int64_t B) { return tensor_act_bytes(t->type, t->ne0, B); }

kn_status model_ctx_create(const model *m, const tensor_ops *ops, kn_pool *pool, int max_batch, model_ctx **out,
                           kn_err *err) {
    *out = NULL;
    if (max_batch < 1 || max_batch > 65536) return kn_fail(err, KN_EINVAL, "batch size %d out of range", max_batch);
    model_ctx *c = calloc(1, sizeof *c);
    if (!c) return kn_fail(err, KN_ENOMEM, "out of memory");
    const model_hparams *hp = &m->hp;
    c->m = m;
    c->ops = ops;
    c->pool = pool;
    c->max_batch = max_batch;
    c->n_threads = kn_pool_size(pool);
    if (hp->encoder) {
        kn_status st = bert_ctx_create(m, ops, pool, max_batch, &c->enc, err);
        if (st != KN_OK) {
            free(c);
            return st;
        }
        c->bytes = bert_ctx_bytes(c->enc);
        *out = c;
        return KN_OK;
    }
    const int64_t B = max_batch, E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    int64_t W = E > Hq ? E : Hq;
    const int64_t G = hp->n_head / hp->n_head_kv;
    /* per thread: scores [G][TILE], m [G], l [G], acc [G][hd], then for a
     * Q8_0 KV or a tile spanning KV blocks two F16 tiles [TILE][hd] (= TILE*hd
     * floats), and a row [hd] to spare */
    c->scratch_per_thread = (size_t)(((G * (MODEL_ATTN_TILE + 2 + hp->head_dim) +
                                       (int64_t)MODEL_ATTN_TILE * hp->head_dim + hp->head_dim) + 15) & ~(int64_t)15);
    if (F > W) W = F;
    size_t act = act_need(&m->output, B);
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const model_tensor *ts[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            size_t n = act_need(ts[i], B);
            if (n > act) act = n;
        }
    }
    c->act_bytes = act;
    struct {
        float **p;
        int64_t n;
    } bufs[] = {
        {&c->x, B * E},     {&c->xn, B * W},    {&c->q, B * Hq},    {&c->k, B * Hkv},
        {&c->v, B * Hkv},   {&c->att, B * Hq},  {&c->gate, B * F},  {&c->up, B * F},
        {&c->rope, B * hp->n_rot},
        {&c->scratch, (int64_t)c->n_threads * (int64_t)c->scratch_per_thread},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = kn_alloc_aligned((size_t)bufs[i].n * sizeof(float));
        if (!*bufs[i].p) goto nomem;
        c->bytes += (uint64_t)bufs[i].n * sizeof(float);
    }
    c->act = kn_alloc_aligned(act);
    if (!c->act) goto nomem;
    c->bytes += act;
    *out = c;
    return KN_OK;
nomem:
    model_ctx_destroy(c);
    return kn_fail(err, KN_ENOMEM, "cannot allocate scratch buffers for a batch of %d", max_batch);
}

void model_ctx_destroy(model_ctx *c) {
    if (!c) return;
    float *bufs[] = {c->x, c->xn, c->q, c->k, c->v, c->att, c->gate, c->up, c->rope, c->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kn_free_aligned(bufs[i]);
    kn_free_aligned(c->act);
    bert_ctx_destroy(c->enc);
    free(c);
}

uint64_t model_ctx_bytes(const model_ctx *c) { return c->bytes; }

/* ---- building blocks ---- */
static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Work below this many multiply-adds runs on the calling thread: waking
 * workers costs more than it saves (and far more on a loaded machine). */
#define MODEL_INLINE_MACS (1 << 20)

static kn_pool *pool_for(const model_ctx *c, int64_t macs) { return macs < MODEL_INLINE_MACS ? NULL : c->pool; }

/* y[c][0..M) = W act[c] for n columns already quantized for w's type. */
static void matmul_q(model_ctx *c, const model_tensor *w, int64_t n, float *y, int64_t ldy) {
    tensor_matmul(c->ops, pool_for(c, w->ne0 * w->ne1 * n), w->type, w->data, w->ne0, w->ne1, c->act, n, y, ldy);
}

/* Up to three matmuls over the same quantized input in one pool run (Q, K
 * and V; gate and up): the threads split the concatenated rows, so there is
 * one synchronisation instead of three and the split stays balanced. The
 * per-element results are those of separate calls (tensor.h: any row split
 * gives the same bits). */
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
    for (int i = 0; i < j->count; i++) total += j->w[i]->ne1;
    int64_t lo, hi;
    kn_split_range(total, 16, ith, nth, &lo, &hi);
    int64_t base = 0;
    for (int i = 0; i < j->count && lo < hi; i++) {
        const model_tensor *w = j->w[i];
        const int64_t a = lo > base ? lo - base : 0, b = hi - base < w->ne1 ? hi - base : w->ne1;
        if (a < b) tensor_matmul_rows(j->ops, w->type, w->data, w->ne0, a, b, j->act, j->n, j->y[i], j->ldy[i]);
        base += w->ne1;
    }
}

/* Runs the matmuls that share c->act (same weight type and K) together. */
static void matmul_multi(model_ctx *c, int count, const model_tensor *const *w, float *const *y,
                         const int64_t *ldy, int64_t n) {
    multi_mm j = {.ops = c->ops, .act = c->act, .n = n, .count = count};
    int64_t macs = 0;
    for (int i = 0; i < count; i++) {
        j.w[i] = w[i], j.y[i] = y[i], j.ldy[i] = ldy[i];
        macs += w[i]->ne0 * w[i]->ne1 * n;
    }
    kn_pool_run(pool_for(c, macs), multi_mm_fn, &j);
}

/* The same from float input rows of stride ldx. */
static void matmul(model_ctx *c, const model_tensor *w, const float *x, int64_t ldx, int64_t n, float *y,
                   int64_t ldy) {
    tensor_act_quantize(c->ops, w->type, x, ldx, w->ne0, n, c->act);
    matmul_q(c, w, n, y, ldy);
}

static void add_bias(float *y, const model_tensor *b, int64_t n, int64_t ld) {
    if (!b->data) return;
    const float *bv = b->data;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < b->ne0; i++) y[t * ld + i] += bv[i];
}

/* cos/sin table per token, following ggml's rope: theta_i = p * base^(-2i/n_rot),
 * scaled linearly by freq_scale, or with YaRN (ext_factor > 0) a ramp between
 * interpolation and extrapolation over the dimensions [corr0, corr1] and a
 * magnitude scale 1 + 0.1 ln(1/freq_scale). */
static float yarn_corr_dim(int n_rot, int n_ctx_orig, float n_turns, float base) {
    return (float)n_rot * logf((float)n_ctx_orig / (n_turns * 2.0f * 3.14159265358979f)) / (2.0f * logf(base));
}

static void rope_table(model_ctx *c, const model_batch *b) {
    const model_hparams *hp = &c->m->hp;
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
    for (int t = 0; t < b->n_tokens; t++) {
        float theta_extrap = (float)b->pos[t];
        float *r = c->rope + (size_t)t * hp->n_rot;
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

static void rope_apply(const model_ctx *c, float *vec, int n_heads, const float *r) {
    const model_hparams *hp = &c->m->hp;
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

/* Writes one head's float vector as a KV row. */
static void kv_store(const model_ctx *c, const model_kv *kv, uint8_t *dst, const float *src) {
    const int hd = c->m->hp.head_dim;
    if (kv_geometry(kv)->row_type == MODEL_KV_Q8_0) {
        tensor_kv8p_quantize(src, dst, hd); /* the "q8_0" KV rows are Q8P (tensor.h): finer levels */
    } else {
        q_f16_t *d = (q_f16_t *)dst;
        for (int i = 0; i < hd; i++) d[i] = q_f32_to_f16(src[i]);
    }
}

/* ---- attention job: (token, kv head) pairs split across threads; the
 * query heads of one group share each widened K/V row ---- */
typedef struct attn_job {
    model_ctx *c;
    model_kv *kv;
    const model_batch *b;
    int layer;
} attn_job;

static void attn_fn(void *arg, int ith, int nth) {
    attn_job *j = arg;
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, G = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->scratch + (size_t)ith * c->scratch_per_thread;
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
        const float *q = c->q + (size_t)t * nh * hd + (size_t)kvh * G * hd;
        for (int g = 0; g < G; g++) mx[g] = -INFINITY, lsum[g] = 0.0f;
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
        float *o = c->att + (size_t)t * nh * hd + (size_t)kvh * G * hd;
        for (int g = 0; g < G; g++) {
            const float inv = 1.0f / lsum[g];
            for (int d = 0; d < hd; d++) o[(size_t)g * hd + d] = acc[(size_t)g * hd + d] * inv;
        }
    }
}

/* ---- per-token row operations, split across threads by token ---- */
typedef enum rows_op {
    ROWS_NORM_QUANT,       /* src = rmsnorm(x) ; act = quant(src) */
    ROWS_RESID_NORM_QUANT, /* x += src ; src = rmsnorm(x) ; act = quant(src) */
    ROWS_RESID,            /* x += src */
    ROWS_QUANT,            /* act = quant(src) */
    ROWS_SWIGLU_QUANT,     /* src(gate) = swiglu(gate, up) ; act = quant(src) */
    ROWS_ROPE_KV,          /* q/k/v biases, RoPE on q and k, k/v into the KV store */
} rows_op;

typedef struct rows_job {
    model_ctx *c;
    model_kv *kv;
    const model_batch *b;
    int layer;
    rows_op op;
    const model_tensor *norm; /* norm weight, for the NORM ops */
    const model_tensor *w;    /* the weight the quantized rows feed */
    float *src;               /* [n][ld] */
    int64_t ld;
} rows_job;

static void rows_token(const rows_job *j, int t) {
    model_ctx *c = j->c;
    const model_hparams *hp = &c->m->hp;
    const int64_t E = hp->n_embd;
    float *x = c->x + (size_t)t * E, *src = j->src ? j->src + (size_t)t * j->ld : NULL;
    switch (j->op) {
    case ROWS_RESID:
        for (int64_t i = 0; i < E; i++) x[i] += src[i];
        return;
    case ROWS_RESID_NORM_QUANT:
        for (int64_t i = 0; i < E; i++) x[i] += src[i];
        /* fall through */
    case ROWS_NORM_QUANT:
        rmsnorm(src, x, j->norm->data, E, hp->rms_eps);
        break;
    case ROWS_SWIGLU_QUANT:
        c->ops->swiglu(hp->n_ff, src, src, c->up + (size_t)t * hp->n_ff);
        break;
    case ROWS_QUANT:
        break;
    case ROWS_ROPE_KV: {
        const model_layer *L = &c->m->layers[j->layer];
        const int64_t hd = hp->head_dim, Hq = (int64_t)hp->n_head * hd, Hkv = (int64_t)hp->n_head_kv * hd;
        float *q = c->q + (size_t)t * Hq, *k = c->k + (size_t)t * Hkv, *v = c->v + (size_t)t * Hkv;
        add_bias(q, &L->bq, 1, Hq);
        add_bias(k, &L->bk, 1, Hkv);
        add_bias(v, &L->bv, 1, Hkv);
        const float *r = c->rope + (size_t)t * hp->n_rot;
        rope_apply(c, q, hp->n_head, r);
        rope_apply(c, k, hp->n_head_kv, r);
        model_kv *kv = j->kv;
        for (int h = 0; h < hp->n_head_kv; h++) {
            kv_store(c, kv, kv_row(kv, j->b->seq[t], j->layer, h, j->b->pos[t], false, NULL), k + h * hd);
            kv_store(c, kv, kv_row(kv, j->b->seq[t], j->layer, h, j->b->pos[t], true, NULL), v + h * hd);
        }
        return;
    }
    }
    const size_t col = tensor_act_bytes(j->w->type, j->w->ne0, 1);
    tensor_act_quantize(c->ops, j->w->type, src, j->ld, j->w->ne0, 1, (uint8_t *)c->act + (size_t)t * col);
}

static void rows_fn(void *arg, int ith, int nth) {
    const rows_job *j = arg;
    int64_t lo, hi;
    kn_split_range(j->b->n_tokens, 1, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) rows_token(j, (int)t);
}

static void rows(rows_job *j, rows_op op, const model_tensor *norm, const model_tensor *w, float *src, int64_t ld) {
    j->op = op, j->norm = norm, j->w = w, j->src = src, j->ld = ld;
    const int64_t work = (int64_t)j->b->n_tokens * (op == ROWS_SWIGLU_QUANT ? j->c->m->hp.n_ff * 16 : ld * 8);
    kn_pool_run(pool_for(j->c, work), rows_fn, j);
}

kn_status model_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int n = b->n_tokens;
    if (c->enc)
        return kn_fail(err, KN_EUNSUPPORTED, "%s is an encoder (embedding) model: it has no logits to generate with",
                       hp->arch_name);
    if (n < 1 || n > c->max_batch)
        return kn_fail(err, KN_EINVAL, "batch of %d tokens (limit %d)", n, c->max_batch);
    const kv_geom *g = kv_geometry(kv);
    if (g->n_layer != hp->n_layer || g->n_head_kv != hp->n_head_kv)
        return kn_fail(err, KN_EINVAL, "KV store belongs to another model shape");
    for (int t = 0; t < n; t++)
        if (b->token[t] < 0 || b->token[t] >= hp->n_vocab)
            return kn_fail(err, KN_EINVAL, "token id %d out of range [0, %d)", b->token[t], hp->n_vocab);
    kn_status st = kv_batch_begin(kv, n, b->seq, b->pos, b->token, err);
    if (st != KN_OK) return st;
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    const q_traits *et = q_get_traits(m->tok_embd.type);
    const size_t erow = q_row_size(m->tok_embd.type, E);
    for (int t = 0; t < n; t++)
        et->to_float((const uint8_t *)m->tok_embd.data + (size_t)b->token[t] * erow, c->x + (size_t)t * E, E);
    rope_table(c, b);

    rows_job rj = {.c = c, .kv = kv, .b = b};
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        rj.layer = l;
        /* x (+= previous block's output) -> attn_norm -> quantized for Q/K/V */
        rows(&rj, l == 0 ? ROWS_NORM_QUANT : ROWS_RESID_NORM_QUANT, &L->attn_norm, &L->wq, c->xn, E);
        if (L->wk.type == L->wq.type && L->wv.type == L->wq.type) {
            const model_tensor *ws[3] = {&L->wq, &L->wk, &L->wv};
            float *ys[3] = {c->q, c->k, c->v};
            const int64_t lds[3] = {Hq, Hkv, Hkv};
            matmul_multi(c, 3, ws, ys, lds, n);
        } else {
            matmul_q(c, &L->wq, n, c->q, Hq);
            if (L->wk.type != L->wq.type) tensor_act_quantize(c->ops, L->wk.type, c->xn, E, E, n, c->act);
            matmul_q(c, &L->wk, n, c->k, Hkv);
            if (L->wv.type != L->wk.type) tensor_act_quantize(c->ops, L->wv.type, c->xn, E, E, n, c->act);
            matmul_q(c, &L->wv, n, c->v, Hkv);
        }
        rows(&rj, ROWS_ROPE_KV, NULL, NULL, NULL, Hq); /* ld only sizes the work estimate */
        attn_job aj = {.c = c, .kv = kv, .b = b, .layer = l};
        int64_t attn_macs = 0;
        for (int t = 0; t < n; t++) attn_macs += (int64_t)(b->pos[t] + 1) * Hq * 2;
        kn_pool_run(pool_for(c, attn_macs), attn_fn, &aj);
        rows(&rj, ROWS_QUANT, NULL, &L->wo, c->att, Hq);
        matmul_q(c, &L->wo, n, c->xn, E);
        /* x += attention -> ffn_norm -> quantized for gate/up */
        rows(&rj, ROWS_RESID_NORM_QUANT, &L->ffn_norm, &L->w_gate, c->xn, E);
        if (L->w_up.type == L->w_gate.type) {
            const model_tensor *ws[2] = {&L->w_gate, &L->w_up};
            float *ys[2] = {c->gate, c->up};
            const int64_t lds[2] = {F, F};
            matmul_multi(c, 2, ws, ys, lds, n);
        } else {
            matmul_q(c, &L->w_gate, n, c->gate, F);
            tensor_act_quantize(c->ops, L->w_up.type, c->xn, E, E, n, c->act);
            matmul_q(c, &L->w_up, n, c->up, F);
        }
        rows(&rj, ROWS_SWIGLU_QUANT, NULL, &L->w_down, c->gate, F);
        matmul_q(c, &L->w_down, n, c->xn, E);
    }
    rows(&rj, ROWS_RESID, NULL, NULL, c->xn, E);
    kv_batch_end(kv, n, b->seq, b->pos);

    /* final norm of the tokens that want their hidden state (embeddings),
     * then of those that want logits, each gathered contiguously */
    if (b->embd && b->logits) {
        int n_emb = 0;
        for (int t = 0; t < n; t++)
            if (b->logits[t] & MODEL_OUT_EMBD)
                rmsnorm(b->embd + (size_t)n_emb++ * E, c->x + (size_t)t * E, m->output_norm.data, E, hp->rms_eps);
    }
    int n_out = 0;
    for (int t = 0; t < n; t++) {
        bool want = b->logits ? (b->logits[t] & MODEL_OUT_LOGITS) != 0 : t == n - 1;
        if (!want) continue;
        rmsnorm(c->xn + (size_t)n_out * E, c->x + (size_t)t * E, m->output_norm.data, E, hp->rms_eps);
        n_out++;
    }
    if (n_out > 0) matmul(c, &m->output, c->xn, E, n_out, out, hp->n_vocab);
    return KN_OK;
}
