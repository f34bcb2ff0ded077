/*
 * model_load.c — reads hyper-parameters from GGUF metadata and binds every
 * tensor the architecture needs, checking name, shape and type.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct arch_desc {
    const char *name;
    model_arch arch;
    model_rope_type rope;
    bool qkv_bias;
} arch_desc;

static const arch_desc ARCHES[] = {
    {"llama", MODEL_ARCH_LLAMA, MODEL_ROPE_NORM, false},
    {"qwen2", MODEL_ARCH_QWEN2, MODEL_ROPE_NEOX, true},
    {"bert", MODEL_ARCH_BERT, MODEL_ROPE_NORM, true}, /* no RoPE: learned positions */
};

static kn_status get_u32_key(const gguf_ctx *g, const char *arch, const char *suffix, bool required,
                             int32_t *out, kn_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    kn_status st = gguf_get_u32(g, key, &v);
    if (st == KN_ENOTFOUND && !required) return KN_OK;
    if (st != KN_OK) return kn_fail(err, KN_EFORMAT, "metadata %s: %s", key, kn_status_str(st));
    if (v > (1u << 30)) return kn_fail(err, KN_ERANGE, "metadata %s = %u is out of range", key, v);
    *out = (int32_t)v;
    return KN_OK;
}

static kn_status get_f32_key(const gguf_ctx *g, const char *arch, const char *suffix, float *out, kn_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    kn_status st = gguf_get_f32(g, key, &v);
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st != KN_OK) return kn_fail(err, KN_EFORMAT, "metadata %s: %s", key, kn_status_str(st));
    *out = v;
    return KN_OK;
}

/* Binds a tensor and checks its shape: ne0 x ne1 (ne1 = 1 for vectors). */
static kn_status bind(const gguf_ctx *g, model_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                      bool required, bool *present, kn_err *err) {
    const gguf_tensor_info *ti = gguf_find_tensor(g, name);
    if (present) *present = ti != NULL;
    if (!ti) {
        if (!required) return KN_OK;
        return kn_fail(err, KN_EFORMAT, "missing tensor '%s'", name);
    }
    uint64_t e1 = ti->n_dims >= 2 ? ti->ne[1] : 1;
    bool ok = ti->ne[0] == (uint64_t)ne0 && e1 == (uint64_t)ne1 && ti->ne[2] == 1 && ti->ne[3] == 1;
    if (!ok)
        return kn_fail(err, KN_EFORMAT, "tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld]",
                       name, (unsigned long long)ti->ne[0], (unsigned long long)ti->ne[1],
                       (unsigned long long)ti->ne[2], (unsigned long long)ti->ne[3], (long long)ne0,
                       (long long)ne1);
    if (!q_type_supported(ti->type))
        return kn_fail(err, KN_EUNSUPPORTED, "tensor '%s' has type %s (%u), which kiln cannot compute with", name,
                       q_type_name(ti->type), ti->type);
    if (ne1 == 1 && ti->type != Q_TYPE_F32)
        return kn_fail(err, KN_EUNSUPPORTED, "tensor '%s' is a vector of type %s; expected F32", name,
                       q_type_name(ti->type));
    t->data = ti->data;
    t->type = (q_type)ti->type;
    t->ne0 = ne0;
    t->ne1 = ne1;
    return KN_OK;
}

static void retarget(model_tensor *t, const uint8_t *old, uint8_t *nw, uint64_t span) {
    if (t->data && (const uint8_t *)t->data >= old && (const uint8_t *)t->data < old + span)
        t->data = nw + ((const uint8_t *)t->data - old);
}

/* Copies the data section into anonymous memory backed by transparent huge
 * pages and points every weight at the copy. Decode streams all weights per
 * token; with 4 KiB pages of a file mapping, TLB misses cost ~30% of it on
 * a 1B model. */
static kn_status weights_to_memory(model *m, kn_err *err) {
    const gguf_ctx *g = m->gguf;
    if (gguf_n_tensors(g) == 0) return KN_OK;
    const gguf_tensor_info *t0 = gguf_tensor(g, 0);
    const uint8_t *base = (const uint8_t *)t0->data - t0->offset;
    const uint64_t span = gguf_file_size(g) - gguf_data_offset(g);
    const size_t huge = (size_t)2 << 20;
    const size_t len = ((size_t)span + huge - 1) & ~(huge - 1);
    uint8_t *mem = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return kn_fail(err, KN_ENOMEM, "cannot allocate %.1f MiB for the weights (try --mmap)", (double)len / 1048576.0);
    uint8_t *al = (uint8_t *)(((uintptr_t)mem + huge - 1) & ~(uintptr_t)(huge - 1));
    m->huge_pages = madvise(al, len, MADV_HUGEPAGE) == 0;
    memcpy(al, base, span);
    mprotect(al, len, PROT_READ);
    m->weights_mem = mem;
    m->weights_len = len + huge;
    retarget(&m->tok_embd, base, al, span);
    retarget(&m->output_norm, base, al, span);
    retarget(&m->output, base, al, span);
    for (int l = 0; l < m->hp.n_layer; l++) {
        model_layer *L = &m->layers[l];
        model_tensor *ts[] = {&L->attn_norm, &L->wq,       &L->wk,   &L->wv,     &L->wo,
                              &L->bq,        &L->bk,       &L->bv,   &L->ffn_norm, &L->w_gate,
                              &L->w_up,      &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) retarget(ts[i], base, al, span);
        model_tensor *bt[] = {&L->bo, &L->b_up, &L->b_down, &L->attn_out_norm, &L->attn_out_norm_b,
                              &L->layer_out_norm, &L->layer_out_norm_b};
        for (size_t i = 0; i < sizeof bt / sizeof bt[0]; i++) retarget(bt[i], base, al, span);
    }
    model_tensor *et[] = {&m->tok_types, &m->pos_embd, &m->tok_norm, &m->tok_norm_b};
    for (size_t i = 0; i < sizeof et / sizeof et[0]; i++) retarget(et[i], base, al, span);
    return KN_OK;
}

/* ---- bert: encoder hyper-parameters and its tensor table ---- */

/* Pooling, LayerNorm eps, the context (from position_embd when the metadata
 * has none) and the token types. */
static kn_status bert_hparams(const gguf_ctx *g, const char *a, model_hparams *hp, kn_err *err) {
    kn_status st;
    hp->encoder = true;
    hp->norm_eps = 1e-12f;
    int32_t pool = 0;
    if ((st = get_u32_key(g, a, "pooling_type", false, &pool, err)) ||
        (st = get_f32_key(g, a, "attention.layer_norm_epsilon", &hp->norm_eps, err)))
        return st;
    if (pool > MODEL_POOL_LAST)
        return kn_fail(err, KN_EUNSUPPORTED, "%s.pooling_type %d is not supported (0 none, 1 mean, 2 cls, 3 last)", a,
                       pool);
    hp->pooling = (model_pooling)pool;
    if (!(hp->norm_eps >= 0.0f && hp->norm_eps < 1.0f))
        return kn_fail(err, KN_EFORMAT, "%s.attention.layer_norm_epsilon %g is out of range", a, (double)hp->norm_eps);
    if (hp->n_head_kv != hp->n_head || (int64_t)hp->n_head * hp->head_dim != hp->n_embd)
        return kn_fail(err, KN_EUNSUPPORTED, "bert with %d heads of %d over n_embd %d (kv heads %d) is not supported",
                       hp->n_head, hp->head_dim, hp->n_embd, hp->n_head_kv);
    const gguf_tensor_info *pe = gguf_find_tensor(g, "position_embd.weight");
    const gguf_tensor_info *tt = gguf_find_tensor(g, "token_types.weight");
    if (!pe) return kn_fail(err, KN_EFORMAT, "missing tensor 'position_embd.weight'");
    if (!tt) return kn_fail(err, KN_EFORMAT, "missing tensor 'token_types.weight'");
    const uint64_t pe1 = pe->n_dims >= 2 ? pe->ne[1] : 1, tt1 = tt->n_dims >= 2 ? tt->ne[1] : 1;
    if (hp->n_ctx_train <= 0) hp->n_ctx_train = pe1 > (1u << 20) ? 0 : (int32_t)pe1;
    if (hp->n_ctx_train <= 0 || hp->n_ctx_train > (1 << 20))
        return kn_fail(err, KN_EFORMAT, "unusable context length %d", hp->n_ctx_train);
    if (tt1 < 1 || tt1 > 64) return kn_fail(err, KN_EFORMAT, "tensor 'token_types.weight' has %llu rows", (unsigned long long)tt1);
    hp->n_token_types = (int32_t)tt1;
    hp->n_ctx_orig = hp->n_ctx_train;
    return KN_OK;
}

static kn_status bert_bind(const gguf_ctx *g, model *m, kn_err *err) {
    const model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    kn_status st;
    if ((st = bind(g, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, true, NULL, err)) ||
        (st = bind(g, &m->tok_types, "token_types.weight", E, hp->n_token_types, true, NULL, err)) ||
        (st = bind(g, &m->pos_embd, "position_embd.weight", E, hp->n_ctx_train, true, NULL, err)) ||
        (st = bind(g, &m->tok_norm, "token_embd_norm.weight", E, 1, true, NULL, err)) ||
        (st = bind(g, &m->tok_norm_b, "token_embd_norm.bias", E, 1, true, NULL, err)))
        return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return kn_fail(err, KN_ENOMEM, "out of memory");
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
        for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
            char n[96];
            snprintf(n, sizeof n, "blk.%d.%s", l, tab[i].name);
            if ((st = bind(g, tab[i].t, n, tab[i].ne0, tab[i].ne1, true, NULL, err))) return st;
        }
    }
    return KN_OK;
}

kn_status model_load_gguf(gguf_ctx *g, const model_load_opts *opts, model **out, kn_err *err) {
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) return kn_fail(err, KN_ENOMEM, "out of memory");
    kn_status st;
    model_hparams *hp = &m->hp;

    gguf_str an;
    st = gguf_get_str(g, "general.architecture", &an);
    if (st != KN_OK) {
        st = kn_fail(err, KN_EFORMAT, "metadata general.architecture: %s", kn_status_str(st));
        goto fail;
    }
    const arch_desc *ad = NULL;
    for (size_t i = 0; i < sizeof ARCHES / sizeof ARCHES[0]; i++)
        if (gguf_str_eq(an, ARCHES[i].name)) ad = &ARCHES[i];
    if (!ad) {
        st = kn_fail(err, KN_EUNSUPPORTED, "architecture '%.*s' is not supported (supported: llama, qwen2, bert)",
                     (int)(an.len > 64 ? 64 : an.len), an.data);
        goto fail;
    }
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", ad->name);
    hp->arch = ad->arch;
    hp->rope_type = ad->rope;
    const char *a = ad->name;

    hp->rms_eps = 1e-5f;
    hp->rope_freq_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    if ((st = get_u32_key(g, a, "embedding_length", true, &hp->n_embd, err)) ||
        (st = get_u32_key(g, a, "block_count", true, &hp->n_layer, err)) ||
        (st = get_u32_key(g, a, "attention.head_count", true, &hp->n_head, err)) ||
        (st = get_u32_key(g, a, "feed_forward_length", true, &hp->n_ff, err)) ||
        (st = get_u32_key(g, a, "context_length", false, &hp->n_ctx_train, err)))
        goto fail;
    hp->n_head_kv = hp->n_head;
    if ((st = get_u32_key(g, a, "attention.head_count_kv", false, &hp->n_head_kv, err))) goto fail;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_ff <= 0 ||
        hp->n_head % hp->n_head_kv != 0 || hp->n_layer > 4096) {
        st = kn_fail(err, KN_EFORMAT,
                     "inconsistent hyper-parameters: n_embd %d, n_layer %d, n_head %d, n_head_kv %d, n_ff %d",
                     hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ff);
        goto fail;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = get_u32_key(g, a, "attention.key_length", false, &hp->head_dim, err))) goto fail;
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->head_dim > 1024) {
        st = kn_fail(err, KN_EFORMAT, "unsupported head dimension %d", hp->head_dim);
        goto fail;
    }
    hp->n_rot = hp->head_dim;
    if ((st = get_u32_key(g, a, "rope.dimension_count", false, &hp->n_rot, err))) goto fail;
    if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        st = kn_fail(err, KN_EFORMAT, "rope.dimension_count %d does not fit head dimension %d", hp->n_rot,
                     hp->head_dim);
        goto fail;
    }
    if ((st = get_f32_key(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps, err)) ||
        (st = get_f32_key(g, a, "rope.freq_base", &hp->rope_freq_base, err)))
        goto fail;
    {
        float factor = 0.0f;
        gguf_str stype = {0};
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        bool has_type = gguf_get_str(g, key, &stype) == KN_OK;
        if ((st = get_f32_key(g, a, "rope.scaling.factor", &factor, err))) goto fail;
        if (factor == 0.0f) { /* older key */
            float lin = 0.0f;
            if ((st = get_f32_key(g, a, "rope.scale_linear", &lin, err))) goto fail;
            factor = lin;
        }
        bool yarn = has_type && gguf_str_eq(stype, "yarn");
        if (has_type && !yarn && !gguf_str_eq(stype, "linear") && !gguf_str_eq(stype, "none")) {
            st = kn_fail(err, KN_EUNSUPPORTED, "rope scaling type '%.*s' is not supported (none, linear, yarn)",
                         (int)(stype.len > 32 ? 32 : stype.len), stype.data);
            goto fail;
        }
        if (has_type && gguf_str_eq(stype, "none")) factor = 0.0f;
        if (factor > 0.0f) hp->rope_freq_scale = 1.0f / factor;
        hp->yarn_attn_factor = 1.0f;
        hp->yarn_beta_fast = 32.0f;
        hp->yarn_beta_slow = 1.0f;
        hp->n_ctx_orig = hp->n_ctx_train;
        if ((st = get_u32_key(g, a, "rope.scaling.original_context_length", false, &hp->n_ctx_orig, err)) ||
            (st = get_f32_key(g, a, "rope.scaling.attn_factor", &hp->yarn_attn_factor, err)) ||
            (st = get_f32_key(g, a, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, err)) ||
            (st = get_f32_key(g, a, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, err)))
            goto fail;
        if (yarn && factor > 0.0f) {
            if (hp->n_ctx_orig <= 0) {
                st = kn_fail(err, KN_EFORMAT, "YaRN scaling needs rope.scaling.original_context_length");
                goto fail;
            }
            hp->yarn_ext_factor = 1.0f; /* llama.cpp's default for YaRN models */
        }
    }

    if (hp->arch == MODEL_ARCH_BERT && (st = bert_hparams(g, a, hp, err)) != KN_OK) goto fail;

    /* vocab size: from the token embedding */
    const gguf_tensor_info *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        st = kn_fail(err, KN_EFORMAT, "missing tensor 'token_embd.weight'");
        goto fail;
    }
    if (te->n_dims != 2 || te->ne[1] == 0 || te->ne[1] > (1u << 24)) {
        st = kn_fail(err, KN_EFORMAT, "tensor 'token_embd.weight' has an unusable shape");
        goto fail;
    }
    hp->n_vocab = (int32_t)te->ne[1];
    const int64_t E = hp->n_embd, Hq = (int64_t)hp->n_head * hp->head_dim,
                  Hkv = (int64_t)hp->n_head_kv * hp->head_dim;

    if (hp->arch == MODEL_ARCH_BERT) {
        if ((st = bert_bind(g, m, err)) != KN_OK) goto fail;
        goto bound;
    }
    if ((st = bind(g, &m->tok_embd, "token_embd.weight", E, hp->n_vocab, true, NULL, err)) ||
        (st = bind(g, &m->output_norm, "output_norm.weight", E, 1, true, NULL, err)))
        goto fail;
    bool has_out;
    if ((st = bind(g, &m->output, "output.weight", E, hp->n_vocab, false, &has_out, err))) goto fail;
    if (!has_out) m->output = m->tok_embd;

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = kn_fail(err, KN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        char n[96];
#define BIND(field, suffix, e0, e1, req)                                                                      \
    do {                                                                                                      \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                                                        \
        if ((st = bind(g, &L->field, n, e0, e1, req, NULL, err))) goto fail;                                  \
    } while (0)
        BIND(attn_norm, "attn_norm.weight", E, 1, true);
        BIND(wq, "attn_q.weight", E, Hq, true);
        BIND(wk, "attn_k.weight", E, Hkv, true);
        BIND(wv, "attn_v.weight", E, Hkv, true);
        BIND(wo, "attn_output.weight", Hq, E, true);
        BIND(ffn_norm, "ffn_norm.weight", E, 1, true);
        BIND(w_gate, "ffn_gate.weight", E, hp->n_ff, true);
        BIND(w_up, "ffn_up.weight", E, hp->n_ff, true);
        BIND(w_down, "ffn_down.weight", hp->n_ff, E, true);
        BIND(bq, "attn_q.bias", Hq, 1, ad->qkv_bias);
        BIND(bk, "attn_k.bias", Hkv, 1, ad->qkv_bias);
        BIND(bv, "attn_v.bias", Hkv, 1, ad->qkv_bias);
#undef BIND
    }
bound:
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) m->weight_bytes += gguf_tensor(g, i)->nbytes;
    m->gguf = g;
    if (opts && opts->mmap_weights) {
        /* Fault every weight page in now (read-only, shared with the page
         * cache): the first tokens would otherwise pay for it, unevenly. */
        volatile uint8_t sink = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor_info *ti = gguf_tensor(g, i);
            const volatile uint8_t *p = ti->data;
            for (uint64_t off = 0; off < ti->nbytes; off += 4096) sink ^= p[off];
        }
        (void)sink;
    } else if ((st = weights_to_memory(m, err)) != KN_OK) {
        m->gguf = NULL;
        goto fail;
    }
    *out = m;
    return KN_OK;
fail:
    free(m->layers);
    free(m);
    return st;
}

kn_status model_load(const char *path, const model_load_opts *opts, model **out, kn_err *err) {
    gguf_ctx *g = NULL;
    kn_status st = gguf_open(path, &g, err);
    if (st != KN_OK) return st;
    st = model_load_gguf(g, opts, out, err);
    if (st != KN_OK) gguf_close(g);
    return st;
}

void model_destroy(model *m) {
    if (!m) return;
    if (m->weights_mem) munmap(m->weights_mem, m->weights_len);
    gguf_close(m->gguf);
    free(m->layers);
    free(m);
}
