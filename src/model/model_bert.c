/*
 * model_bert.c — the bert encoder: embeddings (token + token type 0 +
 * learned position, then LayerNorm), post-norm blocks
 *   x = LN(x + Wo attn(x) + bo)            [attn_output_norm]
 *   x = LN(x + Wd GELU(Wu x + bu) + bd)    [layer_output_norm]
 * with non-causal attention inside each sequence, then pooling per
 * sequence (model.h, model_encode). GELU is the tanh approximation, looked
 * up as llama.cpp does (input rounded to F16, a table of F16 results), since
 * the references were made that way. Attention runs the kernel set's F16
 * attention tile (K and V rounded to F16 once per layer, head-major).
 *
 * Several sequences share one pass without padding: every matmul runs over
 * all the batch's tokens (batch-invariant, tensor.h), attention walks only
 * the tokens of the query's own sequence, in a fixed order.
 */
#include "kiln/gguf.h"
#include "model_arch.h"
#include "model_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Queries of one sequence and head that walk its keys together (they share
 * every K/V row the attention tile loads). */
#define BERT_QBLOCK 8

/* ---- hyper-parameters and tensors ---- */

/* Pooling, LayerNorm eps, the context (from position_embd when the metadata
 * has none) and the token types. */
static kn_status bert_hparams(const model_arch_row *ar, const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    const char *a = ar->name;
    kn_status st;
    hp->encoder = true;
    hp->norm_eps = 1e-12f;
    int32_t pool = 0;
    if ((st = model_get_u32(g, a, "pooling_type", false, &pool, err)) ||
        (st = model_get_f32(g, a, "attention.layer_norm_epsilon", &hp->norm_eps, err)))
        return st;
    if (pool > MODEL_POOL_LAST)
        return kn_fail(err, KN_EUNSUPPORTED,
                       "%s.pooling_type %d is not supported (0 none, 1 mean, 2 cls, 3 last)", a, pool);
    hp->pooling = (model_pooling)pool;
    if (!(hp->norm_eps >= 0.0f && hp->norm_eps < 1.0f))
        return kn_fail(err, KN_EFORMAT, "%s.attention.layer_norm_epsilon %g is out of range", a,
                       (double)hp->norm_eps);
    if (hp->n_head_kv != hp->n_head || (int64_t)hp->n_head * hp->head_dim != hp->n_embd)
        return kn_fail(err, KN_EUNSUPPORTED,
                       "bert with %d heads of %d over n_embd %d (kv heads %d) is not supported", hp->n_head,
                       hp->head_dim, hp->n_embd, hp->n_head_kv);
    const gguf_tensor_info *pe = gguf_find_tensor(g, "position_embd.weight");
    const gguf_tensor_info *tt = gguf_find_tensor(g, "token_types.weight");
    if (!pe) return kn_fail(err, KN_EFORMAT, "missing tensor 'position_embd.weight'");
    if (!tt) return kn_fail(err, KN_EFORMAT, "missing tensor 'token_types.weight'");
    const uint64_t pe1 = pe->n_dims >= 2 ? pe->ne[1] : 1, tt1 = tt->n_dims >= 2 ? tt->ne[1] : 1;
    if (hp->n_ctx_train <= 0) hp->n_ctx_train = pe1 > (1u << 20) ? 0 : (int32_t)pe1;
    if (hp->n_ctx_train <= 0 || hp->n_ctx_train > (1 << 20))
        return kn_fail(err, KN_EFORMAT, "unusable context length %d", hp->n_ctx_train);
    if (tt1 < 1 || tt1 > 64)
        return kn_fail(err, KN_EFORMAT, "tensor 'token_types.weight' has %llu rows", (unsigned long long)tt1);
    hp->n_token_types = (int32_t)tt1;
    hp->n_ctx_orig = hp->n_ctx_train;
    return KN_OK;
}

static kn_status bert_bind(const model_arch_row *a, model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    kn_status st;
    if ((st = model_bind(ld, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, true, NULL)) ||
        (st = model_bind(ld, &m->tok_types, "token_types.weight", E, hp->n_token_types, true, NULL)) ||
        (st = model_bind(ld, &m->pos_embd, "position_embd.weight", E, hp->n_ctx_train, true, NULL)) ||
        (st = model_bind(ld, &m->tok_norm, "token_embd_norm.weight", E, 1, true, NULL)) ||
        (st = model_bind(ld, &m->tok_norm_b, "token_embd_norm.bias", E, 1, true, NULL)))
        return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return kn_fail(model_loader_err(ld), KN_ENOMEM, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        const struct {
            model_tensor *t;
            const char *name;
            int64_t ne0, ne1;
        } tab[] = {
            {&L->wq, "attn_q.weight", E, E},
            {&L->bq, "attn_q.bias", E, 1},
            {&L->wk, "attn_k.weight", E, E},
            {&L->bk, "attn_k.bias", E, 1},
            {&L->wv, "attn_v.weight", E, E},
            {&L->bv, "attn_v.bias", E, 1},
            {&L->wo, "attn_output.weight", E, E},
            {&L->bo, "attn_output.bias", E, 1},
            {&L->attn_out_norm, "attn_output_norm.weight", E, 1},
            {&L->attn_out_norm_b, "attn_output_norm.bias", E, 1},
            {&L->w_up, "ffn_up.weight", E, F},
            {&L->b_up, "ffn_up.bias", F, 1},
            {&L->w_down, "ffn_down.weight", F, E},
            {&L->b_down, "ffn_down.bias", E, 1},
            {&L->layer_out_norm, "layer_output_norm.weight", E, 1},
            {&L->layer_out_norm_b, "layer_output_norm.bias", E, 1},
        };
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
            if ((st = model_bind_layer(ld, tab[i].t, l, tab[i].name, tab[i].ne0, tab[i].ne1, true)))
                return st;
    }
    return KN_OK;
}

/* ---- memory ----
 * No KV, logits or draft: the forward scratch for the token budget or one
 * whole input, whichever is larger (B), 4 n_head n_ctx^2 bytes for every
 * head's attention scores over an input (an allowance: the tiled attention
 * allocates only a tile per thread; kept so that the runtime's figures do
 * not change, though it grows with the square of a long context), and the
 * engine's pooled vectors and per-input tables. */
static uint64_t bert_estimate(const model_shape *s, const model_mem_opts *o) {
    const int n_ctx = o->n_ctx;
    double B = o->max_batch > n_ctx ? o->max_batch : n_ctx;
    double E = (double)s->n_embd, F = (double)s->n_ff, Hq = (double)s->n_head * (double)s->head_dim;
    double scratch = 4.0 * B * (4 * E + 3 * Hq + 2 * F + 64) + 4.0 * (double)s->n_head * n_ctx * n_ctx;
    double engine = 4.0 * B * E + 32.0 * B + (double)model_tokenizer_bytes(s);
    return (uint64_t)((double)s->weight_bytes + scratch + engine);
}

/* ---- scratch ---- */

typedef struct bert_ctx {
    model_ctx base;             /* the act holds the quantized rows of the next matmul */
    float *x;                   /* [B][E] residual stream */
    float *tmp;                 /* [B][E] matmul outputs before the residual add; embedding rows */
    float *q;                   /* [B][E] */
    float *k;                   /* [B][E] */
    float *v;                   /* [B][E] */
    float *att;                 /* [B][E] attention output */
    float *up;                  /* [B][F] */
    float *qh;                  /* [n_head][B][hd] queries, head-major */
    int32_t *blk_first, *blk_n; /* [B] query blocks: first batch index and size (<= BERT_QBLOCK) */
    q_f16_t *k16;               /* [n_head][B][hd] keys, head-major so a sequence's rows are contiguous */
    q_f16_t *v16;               /* [n_head][B][hd] */
    float *scratch; /* [n_threads][scratch_per_thread]: scores [QB][TILE], m, l [QB], acc [QB][hd] */
    size_t scratch_per_thread;
    float *gelu;    /* [65536] GELU of every F16 value, rounded to F16 (kept as floats: no decode per use) */
    int32_t *tok;   /* [B] the batch's tokens, sequences one after another */
    int32_t *first; /* [B] batch index of the first token of each token's sequence */
    int32_t *len;   /* [B] length of each token's sequence */
} bert_ctx;

static void bert_ctx_destroy(model_ctx *c) {
    bert_ctx *b = (bert_ctx *)c;
    void *bufs[] = {b->x,         b->tmp,   b->q,   b->k,       b->v,    b->att, b->up,    b->k16, b->qh,
                    b->blk_first, b->blk_n, b->v16, b->scratch, b->gelu, b->tok, b->first, b->len, c->act};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kn_free_aligned(bufs[i]);
    free(b);
}

static void *scratch_alloc(bert_ctx *b, size_t n) {
    return model_ctx_alloc(&b->base, n);
}

/* Scratch for max_batch tokens in all and sequences up to n_ctx_train. */
static kn_status bert_ctx_create(const model_arch_row *a, const model *m, const tensor_ops *ops,
                                 kn_pool *pool, int max_batch, model_ctx **out, kn_err *err) {
    const model_hparams *hp = &m->hp;
    bert_ctx *b = calloc(1, sizeof *b);
    if (!b) return kn_fail(err, KN_ENOMEM, "out of memory");
    model_ctx_init(&b->base, a, m, ops, pool, max_batch);
    const int64_t B = max_batch, E = hp->n_embd, F = hp->n_ff;
    b->scratch_per_thread =
        ((size_t)BERT_QBLOCK * (MODEL_ATTN_TILE + 2 + (size_t)hp->head_dim) + 15) & ~(size_t)15;
    size_t act = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const model_tensor *ts[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_up, &L->w_down};
        size_t need = model_act_need(&b->base, ts, sizeof ts / sizeof ts[0]);
        if (need > act) act = need;
    }
    b->x = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->tmp = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->q = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->k = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->v = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->att = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->up = scratch_alloc(b, (size_t)(B * F) * sizeof(float));
    b->qh = scratch_alloc(b, (size_t)(B * E) * sizeof(float));
    b->blk_first = scratch_alloc(b, (size_t)B * sizeof(int32_t));
    b->blk_n = scratch_alloc(b, (size_t)B * sizeof(int32_t));
    b->k16 = scratch_alloc(b, (size_t)(B * E) * sizeof(q_f16_t));
    b->v16 = scratch_alloc(b, (size_t)(B * E) * sizeof(q_f16_t));
    b->scratch = scratch_alloc(b, (size_t)b->base.n_threads * b->scratch_per_thread * sizeof(float));
    b->gelu = scratch_alloc(b, (size_t)MODEL_GELU_TABLE * sizeof(float));
    b->tok = scratch_alloc(b, (size_t)B * sizeof(int32_t));
    b->first = scratch_alloc(b, (size_t)B * sizeof(int32_t));
    b->len = scratch_alloc(b, (size_t)B * sizeof(int32_t));
    b->base.act = scratch_alloc(b, act);
    if (!b->x || !b->tmp || !b->q || !b->k || !b->v || !b->att || !b->up || !b->qh || !b->blk_first ||
        !b->blk_n || !b->k16 || !b->v16 || !b->scratch || !b->gelu || !b->tok || !b->first || !b->len ||
        !b->base.act) {
        bert_ctx_destroy(&b->base);
        return kn_fail(err, KN_ENOMEM, "cannot allocate encoder scratch for a batch of %d", max_batch);
    }
    b->base.act_bytes = act;
    model_gelu_table_init(b->gelu);
    *out = &b->base;
    return KN_OK;
}

/* y[t][0..M) = w act[t] for n tokens already quantized for w's type. */
static void matmul_q(bert_ctx *c, const model_tensor *w, int64_t n, float *y, int64_t ldy) {
    model_matmul_q(&c->base, w, n, y, ldy);
}

/* ---- per-token row operations, split across threads by token ---- */
typedef enum brows_op {
    BROWS_EMBED,    /* x = LN(tok + type0 + pos) ; act = quant(x) for w */
    BROWS_QKV_BIAS, /* q, k, v += their biases */
    BROWS_QUANT,    /* act = quant(src) for w */
    BROWS_RESID_LN, /* x = LN(x + tmp + bias) ; act = quant(x) for w (if w) */
    BROWS_GELU,     /* up = GELU(up + b_up) ; act = quant(up) for w */
} brows_op;

typedef struct brows_job {
    bert_ctx *c;
    const int32_t *tok; /* BROWS_EMBED: the batch's tokens */
    int n;
    int layer;
    brows_op op;
    const model_tensor *w;              /* the weight the quantized rows feed (or NULL) */
    const model_tensor *bias, *nw, *nb; /* RESID_LN: bias of tmp, LayerNorm weight and bias */
    const float *src;                   /* QUANT: rows [n][ld] */
    int64_t ld;
} brows_job;

static void quant_row(const brows_job *j, const float *row, int t) {
    if (j->w) model_act_quantize_row(&j->c->base, j->w, row, t);
}

static void to_float_row(const model_tensor *t, int64_t row, float *dst) {
    const size_t rb = q_row_size(t->type, t->ne0);
    q_get_traits(t->type)->to_float((const uint8_t *)t->data + (size_t)row * rb, dst, t->ne0);
}

static void brows_token(void *arg, int t) {
    const brows_job *j = arg;
    bert_ctx *c = j->c;
    const model *m = c->base.m;
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    float *x = c->x + (size_t)t * E;
    switch (j->op) {
    case BROWS_EMBED: {
        float *r = c->tmp + (size_t)t * E;
        to_float_row(&m->tok_embd, j->tok[t], x);
        to_float_row(&m->tok_types, 0, r);
        for (int64_t i = 0; i < E; i++)
            x[i] += r[i];
        to_float_row(&m->pos_embd, t - c->first[t], r);
        for (int64_t i = 0; i < E; i++)
            x[i] += r[i];
        model_layernorm(x, m->tok_norm.data, m->tok_norm_b.data, E, hp->norm_eps);
        quant_row(j, x, t);
        return;
    }
    case BROWS_QKV_BIAS: {
        const model_layer *L = &m->layers[j->layer];
        float *q = c->q + (size_t)t * E, *k = c->k + (size_t)t * E, *v = c->v + (size_t)t * E;
        const float *bq = L->bq.data, *bk = L->bk.data, *bv = L->bv.data;
        for (int64_t i = 0; i < E; i++)
            q[i] += bq[i], k[i] += bk[i], v[i] += bv[i];
        const int64_t hd = hp->head_dim;
        for (int64_t h = 0; h < hp->n_head; h++) {
            const size_t r = ((size_t)h * c->base.max_batch + t) * hd;
            q_f16_t *k16 = c->k16 + r, *v16 = c->v16 + r;
            for (int64_t i = 0; i < hd; i++)
                k16[i] = q_f32_to_f16(k[h * hd + i]), v16[i] = q_f32_to_f16(v[h * hd + i]);
            memcpy(c->qh + r, q + h * hd, (size_t)hd * sizeof(float));
        }
        return;
    }
    case BROWS_QUANT: quant_row(j, j->src + (size_t)t * j->ld, t); return;
    case BROWS_RESID_LN: {
        const float *y = c->tmp + (size_t)t * E, *bias = j->bias->data;
        for (int64_t i = 0; i < E; i++)
            x[i] += y[i] + bias[i];
        model_layernorm(x, j->nw->data, j->nb->data, E, hp->norm_eps);
        quant_row(j, x, t);
        return;
    }
    case BROWS_GELU: {
        float *u = c->up + (size_t)t * F;
        const float *bias = j->bias->data;
        for (int64_t i = 0; i < F; i++) {
            u[i] = model_gelu_lookup(c->gelu, u[i] + bias[i]);
        }
        quant_row(j, u, t);
        return;
    }
    }
}

static void brows(brows_job *j, brows_op op, const model_tensor *w, int64_t work_per_token) {
    j->op = op;
    j->w = w;
    model_for_tokens(&j->c->base, j->n, (int64_t)j->n * work_per_token, brows_token, j);
}

/* ---- attention: (query block, head) pairs split across threads; each
 * block of up to BERT_QBLOCK queries of one sequence walks that sequence's
 * keys in tiles from its start. A query's result does not depend on the
 * other queries of its block (the tile kernel treats them independently),
 * and blocks and tiles are aligned to the sequence's start, so a sequence
 * computes the same alone or in any batch. ---- */
typedef struct battn_job {
    bert_ctx *c;
    int n_blocks;
} battn_job;

static void battn_fn(void *arg, int ith, int nth) {
    const battn_job *j = arg;
    bert_ctx *c = j->c;
    const model_hparams *hp = &c->base.m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, nh = hp->n_head;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->scratch + (size_t)ith * c->scratch_per_thread;
    float *mx = sc + (size_t)BERT_QBLOCK * MODEL_ATTN_TILE, *lsum = mx + BERT_QBLOCK,
          *acc = lsum + BERT_QBLOCK;
    int64_t lo, hi;
    kn_split_range((int64_t)j->n_blocks * nh, 1, ith, nth, &lo, &hi);
    for (int64_t p = lo; p < hi; p++) {
        const int blk = (int)(p / nh);
        const int64_t h = p % nh;
        const int t = c->blk_first[blk], G = c->blk_n[blk];
        const int f = c->first[t], len = c->len[t];
        const size_t head = (size_t)h * c->base.max_batch;
        const float *q = c->qh + (head + t) * hd;
        const q_f16_t *K = c->k16 + (head + f) * hd, *V = c->v16 + (head + f) * hd;
        for (int g = 0; g < G; g++)
            mx[g] = -INFINITY, lsum[g] = 0.0f;
        memset(acc, 0, (size_t)G * hd * sizeof *acc);
        for (int t0 = 0; t0 < len; t0 += MODEL_ATTN_TILE) {
            const int n = len - t0 < MODEL_ATTN_TILE ? len - t0 : MODEL_ATTN_TILE;
            c->base.ops->attn_tile_f16(hd, G, n, q, K + (size_t)t0 * hd, V + (size_t)t0 * hd, scale, mx, lsum,
                                       acc, sc);
        }
        for (int g = 0; g < G; g++) {
            float *o = c->att + (size_t)(t + g) * E + h * hd;
            const float inv = 1.0f / lsum[g];
            for (int64_t e = 0; e < hd; e++)
                o[e] = acc[(size_t)g * hd + e] * inv;
        }
    }
}

/* Q, K and V from the quantized rows in act (one quantization when the three
 * weights share a type, which is the norm; otherwise x, unchanged until the
 * attention output is added, is quantized again). */
static void qkv(bert_ctx *c, const model_layer *L, int n) {
    const int64_t E = c->base.m->hp.n_embd;
    const tensor_ops *ops = c->base.ops;
    matmul_q(c, &L->wq, n, c->q, E);
    if (L->wk.type != L->wq.type) tensor_act_quantize(ops, L->wk.type, c->x, E, E, n, c->base.act);
    matmul_q(c, &L->wk, n, c->k, E);
    if (L->wv.type != L->wk.type) tensor_act_quantize(ops, L->wv.type, c->x, E, E, n, c->base.act);
    matmul_q(c, &L->wv, n, c->v, E);
}

/* The inputs fit the model and the ctx (model.h, model_encode). */
static kn_status bert_check(const bert_ctx *c, const int32_t *const *toks, const size_t *lens, size_t n,
                            kn_err *err) {
    const model_hparams *hp = &c->base.m->hp;
    if (n < 1) return kn_fail(err, KN_EINVAL, "no inputs to embed");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] < 1) return kn_fail(err, KN_EINVAL, "input %zu has no tokens", i);
        if (lens[i] > (size_t)hp->n_ctx_train)
            return kn_fail(err, KN_ERANGE,
                           "input %zu has %zu tokens, more than the model's context of %d tokens", i, lens[i],
                           hp->n_ctx_train);
        total += lens[i];
        if (total > (size_t)c->base.max_batch)
            return kn_fail(
                err, KN_ERANGE,
                "the inputs hold more tokens (at least %zu, input %zu of %zu tokens included) than the "
                "batch limit of %d tokens",
                total, i, lens[i], c->base.max_batch);
        for (size_t k = 0; k < lens[i]; k++)
            if (toks[i][k] < 0 || toks[i][k] >= hp->n_vocab)
                return kn_fail(err, KN_EINVAL, "input %zu: token id %d out of range [0, %d)", i, toks[i][k],
                               hp->n_vocab);
    }
    return KN_OK;
}

/* One post-norm block over the N tokens whose rows are quantized in the act
 * for wq; leaves the next layer's (or nothing, after the last) quantized. */
static void bert_layer(bert_ctx *c, brows_job *rj, int l, const size_t *lens, size_t n, int n_blocks) {
    const model *m = c->base.m;
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->layers[l];
    const int N = rj->n;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    rj->layer = l;
    qkv(c, L, N);
    brows(rj, BROWS_QKV_BIAS, NULL, E * 3);
    battn_job aj = {.c = c, .n_blocks = n_blocks};
    int64_t attn_macs = 0;
    for (size_t i = 0; i < n; i++)
        attn_macs += (int64_t)lens[i] * (int64_t)lens[i] * E * 2;
    kn_pool_run(model_pool_for(&c->base, attn_macs), battn_fn, &aj);
    rj->src = c->att, rj->ld = E;
    brows(rj, BROWS_QUANT, &L->wo, E * 4);
    matmul_q(c, &L->wo, N, c->tmp, E);
    rj->bias = &L->bo, rj->nw = &L->attn_out_norm, rj->nb = &L->attn_out_norm_b;
    brows(rj, BROWS_RESID_LN, &L->w_up, E * 8);
    matmul_q(c, &L->w_up, N, c->up, F);
    rj->bias = &L->b_up;
    brows(rj, BROWS_GELU, &L->w_down, F * 16);
    matmul_q(c, &L->w_down, N, c->tmp, E);
    rj->bias = &L->b_down, rj->nw = &L->layer_out_norm, rj->nb = &L->layer_out_norm_b;
    brows(rj, BROWS_RESID_LN, l + 1 < hp->n_layer ? &m->layers[l + 1].wq : NULL, E * 8);
}

/* Each sequence's vector from its rows xs[len][E] into o[E]. */
static void bert_pool(model_pooling pooling, const float *xs, size_t len, int64_t E, bool normalize,
                      float *o) {
    switch (pooling) {
    case MODEL_POOL_CLS: memcpy(o, xs, (size_t)E * sizeof *o); break;
    case MODEL_POOL_LAST: memcpy(o, xs + (len - 1) * (size_t)E, (size_t)E * sizeof *o); break;
    case MODEL_POOL_MEAN:
    case MODEL_POOL_NONE: /* documented: the mean */
    default:
        for (int64_t e = 0; e < E; e++) {
            double s = 0.0;
            for (size_t k = 0; k < len; k++)
                s += xs[k * (size_t)E + e];
            o[e] = (float)(s / (double)len);
        }
        break;
    }
    if (normalize) {
        double ss = 0.0;
        for (int64_t e = 0; e < E; e++)
            ss += (double)o[e] * o[e];
        if (ss > 0.0) {
            const float inv = (float)(1.0 / sqrt(ss));
            for (int64_t e = 0; e < E; e++)
                o[e] *= inv;
        }
    }
}

static kn_status bert_encode(model_ctx *mc, const int32_t *const *toks, const size_t *lens, size_t n,
                             bool normalize, float *out, kn_err *err) {
    bert_ctx *c = (bert_ctx *)mc;
    const model *m = c->base.m;
    const model_hparams *hp = &m->hp;
    kn_status st = bert_check(c, toks, lens, n, err);
    if (st != KN_OK) return st;
    const int64_t E = hp->n_embd;
    /* the batch's tokens, each with its sequence's start and length */
    int32_t *tok = c->tok;
    int n_blocks = 0, N = 0;
    for (size_t i = 0; i < n; i++)
        N += (int)lens[i];
    for (size_t i = 0, t = 0; i < n; i++)
        for (size_t k = 0; k < lens[i]; k++, t++) {
            tok[t] = toks[i][k];
            c->first[t] = (int32_t)(t - k);
            c->len[t] = (int32_t)lens[i];
            if (k % BERT_QBLOCK == 0) {
                c->blk_first[n_blocks] = (int32_t)t;
                c->blk_n[n_blocks++] = (int32_t)(lens[i] - k < BERT_QBLOCK ? lens[i] - k : BERT_QBLOCK);
            }
        }

    brows_job rj = {.c = c, .tok = tok, .n = N};
    brows(&rj, BROWS_EMBED, &m->layers[0].wq, E * 8);
    for (int l = 0; l < hp->n_layer; l++)
        bert_layer(c, &rj, l, lens, n, n_blocks);
    for (size_t i = 0, f = 0; i < n; f += lens[i], i++)
        bert_pool(hp->pooling, c->x + f * (size_t)E, lens[i], E, normalize, out + i * (size_t)E);
    return KN_OK;
}

const model_arch_row model_arch_bert = {
    .name = "bert",
    .id = MODEL_ARCH_BERT,
    .encoder = true,
    .rope = MODEL_ROPE_NORM, /* no RoPE: learned positions */
    .hparams = bert_hparams,
    .bind = bert_bind,
    .estimate = bert_estimate,
    .ctx_create = bert_ctx_create,
    .ctx_destroy = bert_ctx_destroy,
    .encode = bert_encode,
};
