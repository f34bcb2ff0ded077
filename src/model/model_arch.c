/*
 * model_arch.c — the architecture table and the public entry points that
 * dispatch through it: the ctx, the forward pass, the encoder, and the
 * memory a model will take, read from metadata alone (model.h).
 *
 * Invariant: ROWS[id]->id == id for every model_arch value, and names are
 * unique; the table is const (no mutable globals).
 */
#include "kiln/gguf.h"
#include "model_arch.h"
#include "model_ops.h"

#include <stdio.h>
#include <string.h>

/* The table: one row per general.architecture name, indexed by model_arch. */
static const model_arch_row *const ROWS[MODEL_ARCH_COUNT] = {
    [MODEL_ARCH_LLAMA] = &model_arch_llama,
    [MODEL_ARCH_QWEN2] = &model_arch_qwen2,
    [MODEL_ARCH_BERT] = &model_arch_bert,
    [MODEL_ARCH_QWEN3] = &model_arch_qwen3,
    [MODEL_ARCH_QWEN3MOE] = &model_arch_qwen3moe,
    [MODEL_ARCH_GEMMA3] = &model_arch_gemma3,
    [MODEL_ARCH_PHI3] = &model_arch_phi3,
    [MODEL_ARCH_GPTOSS] = &model_arch_gptoss,
};

const model_arch_row *model_arch_find(const char *name, size_t len) {
    for (int i = 0; i < MODEL_ARCH_COUNT; i++)
        if (strlen(ROWS[i]->name) == len && !memcmp(ROWS[i]->name, name, len)) return ROWS[i];
    return NULL;
}

const model_arch_row *model_arch_get(model_arch id) {
    KN_ASSERT((int)id >= 0 && id < MODEL_ARCH_COUNT && ROWS[id]->id == id);
    return ROWS[id];
}

void model_arch_names(char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < MODEL_ARCH_COUNT && o < cap; i++) {
        int w = snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", ROWS[i]->name);
        if (w < 0) break;
        o += (size_t)w;
    }
}

/* ---- the ctx and the passes ---- */

kn_status model_ctx_create(const model *m, const tensor_ops *ops, kn_pool *pool, int max_batch,
                           model_ctx **out, kn_err *err) {
    *out = NULL;
    if (max_batch < 1 || max_batch > 65536)
        return kn_fail(err, KN_EINVAL, "batch size %d out of range", max_batch);
    const model_arch_row *a = model_arch_get(m->hp.arch);
    return a->ctx_create(a, m, ops, pool, max_batch, out, err);
}

void model_ctx_destroy(model_ctx *c) {
    if (c) c->arch->ctx_destroy(c);
}

uint64_t model_ctx_bytes(const model_ctx *c) {
    return c->bytes;
}

kn_status model_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err) {
    if (!c->arch->forward)
        return kn_fail(err, KN_EUNSUPPORTED,
                       "%s is an encoder (embedding) model: it has no logits to generate with",
                       c->m->hp.arch_name);
    return c->arch->forward(c, kv, b, out, err);
}

bool model_is_encoder(const model *m) {
    return m && m->hp.encoder;
}

kn_status model_encode(model_ctx *c, const int32_t *const *toks, const size_t *lens, size_t n, bool normalize,
                       float *out, kn_err *err) {
    if (!c->arch->encode)
        return kn_fail(err, KN_EUNSUPPORTED,
                       "model_encode needs an encoder model (bert); this one is a decoder");
    return c->arch->encode(c, toks, lens, n, normalize, out, err);
}

/* ---- memory from metadata ---- */

/* <arch>.<suffix> as any integer type, or dflt. */
static int64_t meta_int(const gguf_ctx *g, const char *arch, const char *suffix, int64_t dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    return gguf_get_i64(g, key, &v) == KN_OK ? v : dflt;
}

kn_status model_read_shape(const gguf_ctx *g, model_shape *s, kn_err *err) {
    gguf_str an = {0};
    char arch[64] = "llama";
    memset(s, 0, sizeof *s);
    if (gguf_get_str(g, "general.architecture", &an) == KN_OK && an.len < sizeof arch) {
        snprintf(arch, sizeof arch, "%.*s", (int)an.len, an.data);
        s->supported = model_arch_find(arch, strlen(arch)) != NULL;
    }
    const model_arch_row *row = s->supported ? model_arch_find(arch, strlen(arch)) : &model_arch_llama;
    s->arch = row->id;
    s->encoder = row->encoder;
    s->n_layer = meta_int(g, arch, "block_count", 0);
    s->n_embd = meta_int(g, arch, "embedding_length", 0);
    s->n_ff = meta_int(g, arch, "feed_forward_length", 4 * s->n_embd);
    s->n_head = meta_int(g, arch, "attention.head_count", 1);
    s->n_head_kv = meta_int(g, arch, "attention.head_count_kv", s->n_head);
    s->ctx_train = meta_int(g, arch, "context_length", 2048);
    s->head_dim = s->n_head > 0 ? meta_int(g, arch, "attention.key_length", s->n_embd / s->n_head) : 0;
    s->n_expert = meta_int(g, arch, "expert_count", 0);
    s->n_expert_used = meta_int(g, arch, "expert_used_count", 0);
    s->n_ff_exp = meta_int(g, arch, "expert_feed_forward_length",
                           s->n_expert_used > 0 ? s->n_ff / s->n_expert_used : 0);
    gguf_type et;
    uint64_t nv = 0;
    const void *data;
    int64_t ki = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (ki >= 0 && gguf_kv_get_arr(g, ki, &et, &nv, &data) == KN_OK) s->n_vocab = (int64_t)nv;
    ki = gguf_find_key(g, "tokenizer.ggml.merges");
    if (ki >= 0 && gguf_kv_get_arr(g, ki, &et, &nv, &data) == KN_OK) s->n_merges = (int64_t)nv;
    s->meta_bytes = gguf_data_offset(g);
    gguf_str tm;
    if (gguf_get_str(g, "tokenizer.ggml.model", &tm) == KN_OK && tm.len < sizeof s->tok_model)
        snprintf(s->tok_model, sizeof s->tok_model, "%.*s", (int)tm.len, tm.data);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        s->weight_bytes += gguf_tensor(g, i)->nbytes;
    if (s->n_layer <= 0 || s->n_embd <= 0 || s->n_head <= 0 || s->n_head_kv <= 0 || s->ctx_train <= 0)
        return kn_fail(err, KN_EFORMAT, "the model's hyper-parameters are missing or invalid");
    if (s->n_layer > 4096 || s->n_embd > (1 << 20) || s->n_ff > (1 << 22) || s->n_vocab > (1 << 24) ||
        s->n_expert < 0 || s->n_expert > 512 || s->n_expert_used < 0 || s->n_expert_used > s->n_expert ||
        s->n_ff_exp < 0 || s->n_ff_exp > (1 << 22))
        return kn_fail(err, KN_EFORMAT, "the model's hyper-parameters are out of range");
    return row->shape ? row->shape(row, g, s, err) : KN_OK;
}

uint64_t model_tokenizer_bytes(const model_shape *s) {
    double per_tok = 64.0, per_merge = 0.0;
    if (!strcmp(s->tok_model, "gpt2"))
        per_tok = 157.0, per_merge = 76.0;
    else if (!strcmp(s->tok_model, "gemma4"))
        per_tok = 144.0, per_merge = 23.0;
    return (uint64_t)(per_tok * (double)s->n_vocab + per_merge * (double)s->n_merges) + s->meta_bytes;
}

uint64_t model_estimate_bytes(const model_shape *s, const model_mem_opts *o) {
    return model_arch_get(s->arch)->estimate(s, o);
}

double model_kv_bytes_per_token(const model_shape *s, model_kv_type t) {
    const model_arch_row *a = model_arch_get(s->arch);
    return a->kv_bytes_per_token ? a->kv_bytes_per_token(s, t) : 0.0;
}
