/*
 * model_load.c — loads a model: finds the architecture's row, reads the
 * hyper-parameters every family shares (sizes, head dimension, RoPE and its
 * scaling), lets the row read its own and bind its tensors through a
 * model_loader (model_arch.h), then places the weights (copied into huge
 * pages, or faulted in from the mapping).
 *
 * Invariant: every tensor view a binder set (model_bind, model_bind_alias)
 * is recorded in the loader, so the copy into memory retargets all of them
 * whatever fields the family uses.
 */
#include "kiln/gguf.h"
#include "model_arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct model_loader {
    const gguf_ctx *g;
    model *m;
    kn_err *err;
    model_tensor **views; /* [n_views] every view bound so far (into m or m->layers) */
    size_t n_views, cap_views;
    bool *used; /* [gguf_n_tensors] bound by the family (every tensor must be) */
};

/* ---- metadata keys ---- */

kn_status model_get_u32(const gguf_ctx *g, const char *arch, const char *suffix, bool required, int32_t *out,
                        kn_err *err) {
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

kn_status model_get_f32(const gguf_ctx *g, const char *arch, const char *suffix, float *out, kn_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    kn_status st = gguf_get_f32(g, key, &v);
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st != KN_OK) return kn_fail(err, KN_EFORMAT, "metadata %s: %s", key, kn_status_str(st));
    *out = v;
    return KN_OK;
}

kn_status model_read_experts(const gguf_ctx *g, const char *arch, model_hparams *hp, kn_err *err) {
    kn_status st;
    if ((st = model_get_u32(g, arch, "expert_count", true, &hp->n_expert, err)) ||
        (st = model_get_u32(g, arch, "expert_used_count", true, &hp->n_expert_used, err)))
        return st;
    if (hp->n_expert < 1 || hp->n_expert > 512 || hp->n_expert_used < 1 || hp->n_expert_used > hp->n_expert)
        return kn_fail(err, KN_EFORMAT, "expert_count %d / expert_used_count %d are inconsistent (at most 512)",
                       hp->n_expert, hp->n_expert_used);
    hp->n_ff_exp = hp->n_ff / hp->n_expert_used; /* llama.cpp's default */
    if ((st = model_get_u32(g, arch, "expert_feed_forward_length", false, &hp->n_ff_exp, err))) return st;
    if (hp->n_ff_exp <= 0) return kn_fail(err, KN_EFORMAT, "expert_feed_forward_length is 0");
    return KN_OK;
}

kn_status model_read_swa_pattern(const gguf_ctx *g, const char *arch, model *m, uint32_t period, kn_err *err) {
    const int nl = m->hp.n_layer;
    if (m->hp.n_swa <= 0) return KN_OK; /* no window: every layer global */
    char key[128];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
    gguf_type et;
    uint64_t n;
    const void *data;
    int64_t ki = gguf_find_key(g, key);
    if (ki >= 0 && gguf_kv_get_arr(g, ki, &et, &n, &data) == KN_OK) {
        if (et != GGUF_TYPE_BOOL || n != (uint64_t)nl || !data)
            return kn_fail(err, KN_EFORMAT, "metadata %s: expected %d booleans", key, nl);
        for (int l = 0; l < nl; l++)
            m->layers[l].swa = ((const uint8_t *)data)[l] != 0;
        return KN_OK;
    }
    uint32_t p = period;
    kn_status st = gguf_get_u32(g, key, &p);
    if (st != KN_OK && st != KN_ENOTFOUND) return kn_fail(err, KN_EFORMAT, "metadata %s: %s", key, kn_status_str(st));
    for (int l = 0; l < nl; l++) /* llama.cpp: every p-th layer (the last of each period) is global */
        m->layers[l].swa = p == 0 || (uint32_t)l % p < p - 1;
    return KN_OK;
}

const gguf_ctx *model_loader_gguf(const model_loader *ld) {
    return ld->g;
}

/* ---- tensors ---- */

kn_err *model_loader_err(model_loader *ld) {
    return ld->err;
}

/* Records a view for retargeting (load time only). */
static kn_status record_view(model_loader *ld, model_tensor *t) {
    if (ld->n_views == ld->cap_views) {
        size_t cap = ld->cap_views ? 2 * ld->cap_views : 64;
        model_tensor **v = realloc(ld->views, cap * sizeof *v);
        if (!v) return kn_fail(ld->err, KN_ENOMEM, "out of memory");
        ld->views = v;
        ld->cap_views = cap;
    }
    ld->views[ld->n_views++] = t;
    return KN_OK;
}

/* Marks the file's tensor ti as used by the family. */
static void mark_used(model_loader *ld, const gguf_tensor_info *ti) {
    const int64_t n = gguf_n_tensors(ld->g);
    if (n > 0 && ti >= gguf_tensor(ld->g, 0) && ti - gguf_tensor(ld->g, 0) < n && ld->used)
        ld->used[ti - gguf_tensor(ld->g, 0)] = true;
}

kn_status model_bind3(model_loader *ld, model_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                      int64_t ne2, bool required, bool *present) {
    kn_err *err = ld->err;
    const gguf_tensor_info *ti = gguf_find_tensor(ld->g, name);
    if (present) *present = ti != NULL;
    if (!ti) {
        if (!required) return KN_OK;
        return kn_fail(err, KN_EFORMAT, "missing tensor '%s'", name);
    }
    mark_used(ld, ti);
    uint64_t e1 = ti->n_dims >= 2 ? ti->ne[1] : 1;
    bool ok = ti->ne[0] == (uint64_t)ne0 && e1 == (uint64_t)ne1 && ti->ne[2] == (uint64_t)ne2 && ti->ne[3] == 1;
    if (!ok) {
        if (ne2 == 1)
            return kn_fail(err, KN_EFORMAT, "tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld]",
                           name, (unsigned long long)ti->ne[0], (unsigned long long)ti->ne[1],
                           (unsigned long long)ti->ne[2], (unsigned long long)ti->ne[3], (long long)ne0,
                           (long long)ne1);
        return kn_fail(err, KN_EFORMAT,
                       "tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld, %lld]", name,
                       (unsigned long long)ti->ne[0], (unsigned long long)ti->ne[1],
                       (unsigned long long)ti->ne[2], (unsigned long long)ti->ne[3], (long long)ne0,
                       (long long)ne1, (long long)ne2);
    }
    if (!q_type_supported(ti->type))
        return kn_fail(err, KN_EUNSUPPORTED, "tensor '%s' has type %s (%u), which kiln cannot compute with",
                       name, q_type_name(ti->type), ti->type);
    if (ne1 == 1 && ti->type != Q_TYPE_F32)
        return kn_fail(err, KN_EUNSUPPORTED, "tensor '%s' is a vector of type %s; expected F32", name,
                       q_type_name(ti->type));
    if (ne1 > 1 && ne0 % q_get_traits((q_type)ti->type)->blck_size)
        return kn_fail(err, KN_EFORMAT, "tensor '%s': rows of %lld do not fill %s blocks", name, (long long)ne0,
                       q_type_name(ti->type));
    t->data = ti->data;
    t->type = (q_type)ti->type;
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->ne2 = ne2;
    t->nb2 = q_row_size(t->type, ne0) * (size_t)ne1;
    return record_view(ld, t);
}

kn_status model_bind(model_loader *ld, model_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                     bool required, bool *present) {
    return model_bind3(ld, t, name, ne0, ne1, 1, required, present);
}

kn_status model_bind_rows(model_loader *ld, model_tensor *dst, const model_tensor *whole, int64_t row0,
                          int64_t rows) {
    KN_ASSERT(row0 >= 0 && rows > 0 && row0 + rows <= whole->ne1 && whole->ne2 <= 1);
    *dst = *whole;
    dst->data = (const uint8_t *)whole->data + (size_t)row0 * q_row_size(whole->type, whole->ne0);
    dst->ne1 = rows;
    dst->nb2 = q_row_size(whole->type, whole->ne0) * (size_t)rows;
    return record_view(ld, dst);
}

kn_status model_bind_layer(model_loader *ld, model_tensor *t, int layer, const char *suffix, int64_t ne0,
                           int64_t ne1, bool required) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    return model_bind(ld, t, name, ne0, ne1, required, NULL);
}

kn_status model_bind_layer3(model_loader *ld, model_tensor *t, int layer, const char *suffix, int64_t ne0,
                            int64_t ne1, int64_t ne2, bool required) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    return model_bind3(ld, t, name, ne0, ne1, ne2, required, NULL);
}

/* Every tensor of the file must mean something to the family: a tensor kiln
 * does not know could change the output (Llama 3.1's rope_freqs did). */
static kn_status check_all_used(const model_loader *ld, const char *arch) {
    for (int64_t i = 0; i < gguf_n_tensors(ld->g); i++) {
        if (ld->used[i]) continue;
        const gguf_tensor_info *ti = gguf_tensor(ld->g, i);
        return kn_fail(ld->err, KN_EUNSUPPORTED,
                       "tensor '%.*s' is not part of kiln's %s architecture; refusing to run without it",
                       (int)(ti->name.len > 96 ? 96 : ti->name.len), ti->name.data, arch);
    }
    return KN_OK;
}

kn_status model_bind_decoder_ends(model_loader *ld, model *m) {
    const model_hparams *hp = &m->hp;
    kn_status st;
    bool has_out;
    if ((st = model_bind(ld, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true, NULL)) ||
        (st = model_bind(ld, &m->output_norm, "output_norm.weight", hp->n_embd, 1, true, NULL)) ||
        (st = model_bind(ld, &m->output, "output.weight", hp->n_embd, hp->n_vocab, false, &has_out)))
        return st;
    if (!has_out && (st = model_bind_alias(ld, &m->output, &m->tok_embd))) return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return kn_fail(ld->err, KN_ENOMEM, "out of memory");
    return KN_OK;
}

kn_status model_bind_alias(model_loader *ld, model_tensor *dst, const model_tensor *src) {
    *dst = *src;
    return record_view(ld, dst);
}

/* ---- weights ---- */

static void retarget(model_tensor *t, const uint8_t *old, uint8_t *nw, uint64_t span) {
    if (t->data && (const uint8_t *)t->data >= old && (const uint8_t *)t->data < old + span)
        t->data = nw + ((const uint8_t *)t->data - old);
}

/* Copies the data section into anonymous memory backed by transparent huge
 * pages and points every bound view at the copy. Decode streams all weights
 * per token; with 4 KiB pages of a file mapping, TLB misses cost ~30% of it
 * on a 1B model. */
static kn_status weights_to_memory(model *m, model_tensor *const *views, size_t n_views, kn_err *err) {
    const gguf_ctx *g = m->gguf;
    if (gguf_n_tensors(g) == 0) return KN_OK;
    const gguf_tensor_info *t0 = gguf_tensor(g, 0);
    const uint8_t *base = (const uint8_t *)t0->data - t0->offset;
    const uint64_t span = gguf_file_size(g) - gguf_data_offset(g);
    const size_t huge = (size_t)2 << 20;
    const size_t len = ((size_t)span + huge - 1) & ~(huge - 1);
    uint8_t *mem = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return kn_fail(err, KN_ENOMEM, "cannot allocate %.1f MiB for the weights (try --mmap)",
                       (double)len / 1048576.0);
    uint8_t *al = (uint8_t *)(((uintptr_t)mem + huge - 1) & ~(uintptr_t)(huge - 1));
    m->huge_pages = madvise(al, len, MADV_HUGEPAGE) == 0;
    memcpy(al, base, span);
    mprotect(al, len, PROT_READ);
    /* The copy is what computes from now on: drop the file's pages that the
     * copy faulted into this process (they stay in the page cache, shared),
     * or the weights count twice in RSS and in the memory budget. Only the
     * data section: metadata (vocabulary strings) is still read in place. */
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)base + pg - 1) & ~(pg - 1), hi = ((uintptr_t)base + span) & ~(pg - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    m->weights_mem = mem;
    m->weights_len = len + huge;
    for (size_t i = 0; i < n_views; i++)
        retarget(views[i], base, al, span);
    return KN_OK;
}

/* Fault every weight page in now (read-only, shared with the page cache):
 * the first tokens would otherwise pay for it, unevenly. */
static void weights_fault_in(const gguf_ctx *g) {
    volatile uint8_t sink = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *ti = gguf_tensor(g, i);
        const volatile uint8_t *p = ti->data;
        for (uint64_t off = 0; off < ti->nbytes; off += 4096)
            sink ^= p[off];
    }
    (void)sink;
}

/* ---- hyper-parameters every family shares ---- */

/* The row named by general.architecture. */
static kn_status find_arch(const gguf_ctx *g, const model_arch_row **out, kn_err *err) {
    gguf_str an;
    kn_status st = gguf_get_str(g, "general.architecture", &an);
    if (st != KN_OK) return kn_fail(err, KN_EFORMAT, "metadata general.architecture: %s", kn_status_str(st));
    *out = model_arch_find(an.data, an.len);
    if (!*out) {
        char names[256];
        model_arch_names(names, sizeof names);
        return kn_fail(err, KN_EUNSUPPORTED, "architecture '%.*s' is not supported (supported: %s)",
                       (int)(an.len > 64 ? 64 : an.len), an.data, names);
    }
    return KN_OK;
}

/* Sizes, heads and their dimension, RoPE dimensions, RMS eps and RoPE base. */
static kn_status read_sizes(const gguf_ctx *g, const char *a, model_hparams *hp, kn_err *err) {
    kn_status st;
    hp->rms_eps = 1e-5f;
    hp->rope_freq_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    if ((st = model_get_u32(g, a, "embedding_length", true, &hp->n_embd, err)) ||
        (st = model_get_u32(g, a, "block_count", true, &hp->n_layer, err)) ||
        (st = model_get_u32(g, a, "attention.head_count", true, &hp->n_head, err)) ||
        (st = model_get_u32(g, a, "feed_forward_length", true, &hp->n_ff, err)) ||
        (st = model_get_u32(g, a, "context_length", false, &hp->n_ctx_train, err)))
        return st;
    hp->n_head_kv = hp->n_head;
    if ((st = model_get_u32(g, a, "attention.head_count_kv", false, &hp->n_head_kv, err))) return st;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_ff <= 0 ||
        hp->n_head % hp->n_head_kv != 0 || hp->n_layer > 4096)
        return kn_fail(
            err, KN_EFORMAT,
            "inconsistent hyper-parameters: n_embd %d, n_layer %d, n_head %d, n_head_kv %d, n_ff %d",
            hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ff);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = model_get_u32(g, a, "attention.key_length", false, &hp->head_dim, err))) return st;
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->head_dim > 1024)
        return kn_fail(err, KN_EFORMAT, "unsupported head dimension %d", hp->head_dim);
    hp->n_rot = hp->head_dim;
    if ((st = model_get_u32(g, a, "rope.dimension_count", false, &hp->n_rot, err))) return st;
    if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return kn_fail(err, KN_EFORMAT, "rope.dimension_count %d does not fit head dimension %d", hp->n_rot,
                       hp->head_dim);
    if ((st = model_get_f32(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps, err)) ||
        (st = model_get_f32(g, a, "rope.freq_base", &hp->rope_freq_base, err)))
        return st;
    return KN_OK;
}

/* Every `<arch>.rope.*` key must be one kiln applies: an unknown one (LongRoPE
 * sections, YaRN log multipliers, M-RoPE) would silently change the angles. */
static kn_status check_rope_keys(const gguf_ctx *g, const char *a, kn_err *err) {
    static const char *const known[] = {
        "dimension_count",         "freq_base",     "freq_base_swa",
        "scaling.type",            "scaling.factor", "scale_linear",
        "scaling.original_context_length", "scaling.attn_factor", "scaling.yarn_beta_fast",
        "scaling.yarn_beta_slow",  "scaling.finetuned",
    };
    char prefix[96];
    int pl = snprintf(prefix, sizeof prefix, "%s.rope.", a);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_str k = gguf_kv_key(g, i);
        if (k.len <= (size_t)pl || memcmp(k.data, prefix, (size_t)pl)) continue;
        bool ok = false;
        for (size_t j = 0; j < sizeof known / sizeof known[0] && !ok; j++)
            ok = k.len - (size_t)pl == strlen(known[j]) && !memcmp(k.data + pl, known[j], strlen(known[j]));
        if (!ok)
            return kn_fail(err, KN_EUNSUPPORTED, "RoPE metadata '%.*s' is not supported by kiln",
                           (int)(k.len > 96 ? 96 : k.len), k.data);
    }
    return KN_OK;
}

/* RoPE scaling: none, linear (rope.scaling.factor or the older
 * rope.scale_linear) or YaRN with its parameters. */
static kn_status read_rope_scaling(const gguf_ctx *g, const char *a, model_hparams *hp, kn_err *err) {
    kn_status st;
    float factor = 0.0f;
    gguf_str stype = {0};
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    bool has_type = gguf_get_str(g, key, &stype) == KN_OK;
    if ((st = model_get_f32(g, a, "rope.scaling.factor", &factor, err))) return st;
    if (factor == 0.0f) { /* older key */
        float lin = 0.0f;
        if ((st = model_get_f32(g, a, "rope.scale_linear", &lin, err))) return st;
        factor = lin;
    }
    bool yarn = has_type && gguf_str_eq(stype, "yarn");
    if (has_type && !yarn && !gguf_str_eq(stype, "linear") && !gguf_str_eq(stype, "none"))
        return kn_fail(err, KN_EUNSUPPORTED, "rope scaling type '%.*s' is not supported (none, linear, yarn)",
                       (int)(stype.len > 32 ? 32 : stype.len), stype.data);
    if (has_type && gguf_str_eq(stype, "none")) factor = 0.0f;
    if (factor > 0.0f) hp->rope_freq_scale = 1.0f / factor;
    hp->yarn_attn_factor = 1.0f;
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    hp->n_ctx_orig = hp->n_ctx_train;
    if ((st = model_get_u32(g, a, "rope.scaling.original_context_length", false, &hp->n_ctx_orig, err)) ||
        (st = model_get_f32(g, a, "rope.scaling.attn_factor", &hp->yarn_attn_factor, err)) ||
        (st = model_get_f32(g, a, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, err)) ||
        (st = model_get_f32(g, a, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, err)))
        return st;
    if (yarn && factor > 0.0f) {
        if (hp->n_ctx_orig <= 0)
            return kn_fail(err, KN_EFORMAT, "YaRN scaling needs rope.scaling.original_context_length");
        hp->yarn_ext_factor = 1.0f; /* llama.cpp's default for YaRN models */
    }
    return KN_OK;
}

/* The vocabulary size: the token embedding's rows. */
static kn_status read_vocab(const gguf_ctx *g, model_hparams *hp, kn_err *err) {
    const gguf_tensor_info *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) return kn_fail(err, KN_EFORMAT, "missing tensor 'token_embd.weight'");
    if (te->n_dims != 2 || te->ne[1] == 0 || te->ne[1] > (1u << 24))
        return kn_fail(err, KN_EFORMAT, "tensor 'token_embd.weight' has an unusable shape");
    hp->n_vocab = (int32_t)te->ne[1];
    return KN_OK;
}

/* Every hyper-parameter: the common ones, the row's own, the vocabulary. */
static kn_status read_hparams(const gguf_ctx *g, const model_arch_row *a, model_hparams *hp, kn_err *err) {
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", a->name);
    hp->arch = a->id;
    hp->rope_type = a->rope;
    kn_status st;
    if ((st = read_sizes(g, a->name, hp, err)) || (st = check_rope_keys(g, a->name, err)) ||
        (st = read_rope_scaling(g, a->name, hp, err)))
        return st;
    hp->rope_freq_base_swa = hp->rope_freq_base;
    hp->rope_freq_scale_swa = hp->rope_freq_scale;
    if (a->hparams && (st = a->hparams(a, g, hp, err))) return st;
    return read_vocab(g, hp, err);
}

/* ---- load ---- */

kn_status model_load_gguf(gguf_ctx *g, const model_load_opts *opts, model **out, kn_err *err) {
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) return kn_fail(err, KN_ENOMEM, "out of memory");
    model_loader ld = {.g = g, .m = m, .err = err};
    const model_arch_row *a = NULL;
    kn_status st;
    ld.used = calloc((size_t)gguf_n_tensors(g) + 1, sizeof *ld.used);
    if (!ld.used) {
        free(m);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    if ((st = find_arch(g, &a, err)) || (st = read_hparams(g, a, &m->hp, err)) || (st = a->bind(a, &ld, m)) ||
        (st = check_all_used(&ld, a->name)))
        goto fail;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        m->weight_bytes += gguf_tensor(g, i)->nbytes;
    m->gguf = g;
    if (opts && opts->mmap_weights) {
        weights_fault_in(g);
    } else if ((st = weights_to_memory(m, ld.views, ld.n_views, err)) != KN_OK) {
        m->gguf = NULL;
        goto fail;
    }
    free(ld.views);
    free(ld.used);
    *out = m;
    return KN_OK;
fail:
    free(ld.views);
    free(ld.used);
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

uint64_t model_decode_bytes(const model *m) {
    uint64_t b = m->weight_bytes;
    /* the token embedding gives one row a token, unless it is also the output */
    if (m->tok_embd.data && m->output.data != m->tok_embd.data)
        b -= q_row_size(m->tok_embd.type, m->tok_embd.ne0) * (uint64_t)(m->tok_embd.ne1 - 1);
    if (m->hp.n_expert <= 0 || !m->layers) return b;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const model_tensor *xs[] = {&m->layers[l].gate_exps, &m->layers[l].up_exps, &m->layers[l].down_exps};
        for (int i = 0; i < 3; i++) {
            if (!xs[i]->data) continue;
            const uint64_t all = (uint64_t)xs[i]->nb2 * (uint64_t)xs[i]->ne2;
            b -= all - (uint64_t)xs[i]->nb2 * (uint64_t)m->hp.n_expert_used;
        }
    }
    return b;
}

void model_destroy(model *m) {
    if (!m) return;
    if (m->weights_mem) munmap(m->weights_mem, m->weights_len);
    gguf_close(m->gguf);
    free(m->layers);
    free(m);
}
