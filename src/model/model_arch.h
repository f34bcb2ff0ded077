/*
 * model_arch.h — internal to src/model: the row of the architecture table
 * and the loader's helpers a family's row uses.
 *
 * Owns:
 *  - model_arch_row: what one `general.architecture` name means to kiln
 *    (model.h, "Adding an architecture"). Rows are const objects defined in
 *    their family's file; model_arch.c lists them in a table indexed by
 *    model_arch and dispatches every public entry point through them.
 *  - model_loader: the state of one load, through which a family's binder
 *    declares its tensors (model_bind, model_bind_layer, model_bind_alias).
 *
 * Invariants: a row's function pointers are set for its kind (forward for
 * a decoder, encode for an encoder; the other is NULL); hparams may be
 * NULL. A family file includes this header and model_ops.h, never another
 * family's file.
 */
#ifndef KILN_MODEL_ARCH_H
#define KILN_MODEL_ARCH_H

#include "kiln/model.h"

typedef struct model_loader model_loader;
typedef struct model_arch_row model_arch_row;

struct model_arch_row {
    const char *name;     /* general.architecture */
    model_arch id;        /* its index in the table; becomes hp.arch */
    bool encoder;         /* model_encode, not model_forward; no KV */
    model_rope_type rope; /* hp.rope_type */
    unsigned variant;     /* the family's own switches (e.g. llama's q/k/v biases), read by its file only */

    /* Reads the family's own metadata keys into hp and checks them; the
     * common ones (model_load.c: sizes, head dimension, RoPE and its
     * scaling, RMS eps) are read first, n_vocab after. NULL: none. */
    kn_status (*hparams)(const model_arch_row *a, const gguf_ctx *g, model_hparams *hp, kn_err *err);
    /* Binds every tensor of m (m->hp is complete) through ld; allocates
     * m->layers (freed by model_destroy). */
    kn_status (*bind)(const model_arch_row *a, model_loader *ld, model *m);
    /* Optional: reads keys the estimate needs beyond model_shape's common
     * fields (after model_read_shape filled those). NULL: none. */
    kn_status (*shape)(const model_arch_row *a, const gguf_ctx *g, model_shape *s, kn_err *err);
    /* model_estimate_bytes for a shape of this row. */
    uint64_t (*estimate)(const model_shape *s, const model_mem_opts *o);
    /* model_kv_bytes_per_token; NULL: no KV (0). */
    double (*kv_bytes_per_token)(const model_shape *s, model_kv_type t);

    /* Allocates the family's ctx: a struct whose first member is a
     * model_ctx (or a model_dec), initialised with model_ctx_init;
     * max_batch is already checked. ctx_destroy frees it (never NULL). */
    kn_status (*ctx_create)(const model_arch_row *a, const model *m, const tensor_ops *ops, kn_pool *pool,
                            int max_batch, model_ctx **out, kn_err *err);
    void (*ctx_destroy)(model_ctx *c);
    /* Decoders: model_forward (the row checks its batch, e.g. with model_dec_check). */
    kn_status (*forward)(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err);
    /* Encoders: model_encode (the row checks its inputs). */
    kn_status (*encode)(model_ctx *c, const int32_t *const *toks, const size_t *lens, size_t n,
                        bool normalize, float *out, kn_err *err);
};

/* The rows, one per name; each is defined in its family's file. */
extern const model_arch_row model_arch_llama; /* model_llama.c */
extern const model_arch_row model_arch_qwen2; /* model_llama.c */
extern const model_arch_row model_arch_bert;  /* model_bert.c */
extern const model_arch_row model_arch_qwen3;    /* model_qwen3.c */
extern const model_arch_row model_arch_qwen3moe; /* model_qwen3.c */
extern const model_arch_row model_arch_gemma3;   /* model_gemma3.c */
extern const model_arch_row model_arch_phi3;     /* model_phi3.c */
extern const model_arch_row model_arch_gptoss;   /* model_gptoss.c */

/* The row of an architecture name (len bytes at name), NULL if none. */
const model_arch_row *model_arch_find(const char *name, size_t len);
/* The row of id (a valid model_arch). */
const model_arch_row *model_arch_get(model_arch id);
/* "llama, qwen2, bert": every name in table order, for error messages. */
void model_arch_names(char *buf, size_t cap);

/* ---- the loader's helpers (model_load.c) ---- */

/* <arch>.<suffix> as an unsigned 32-bit value <= 2^30 into *out; absent
 * leaves *out unchanged unless required. */
kn_status model_get_u32(const gguf_ctx *g, const char *arch, const char *suffix, bool required, int32_t *out,
                        kn_err *err);
/* <arch>.<suffix> as a float into *out; absent leaves *out unchanged. */
kn_status model_get_f32(const gguf_ctx *g, const char *arch, const char *suffix, float *out, kn_err *err);

/* expert_count, expert_used_count (required, consistent) and
 * expert_feed_forward_length (default n_ff / used) of a MoE family. */
kn_status model_read_experts(const gguf_ctx *g, const char *arch, model_hparams *hp, kn_err *err);

/* Marks m's windowed layers (m->layers allocated, hp.n_swa read): from
 * <arch>.attention.sliding_window_pattern, one bool per layer or a period p
 * (layer l windowed iff l % p < p - 1; 0: all), else the family's period.
 * Nothing is windowed when hp.n_swa is 0. */
kn_status model_read_swa_pattern(const gguf_ctx *g, const char *arch, model *m, uint32_t period, kn_err *err);
/* The file being loaded (a binder reading per-layer metadata). */
const gguf_ctx *model_loader_gguf(const model_loader *ld);

/* Binds tensor `name` into *t after checking its shape, ne0 x ne1 (ne1 = 1:
 * a vector, which must be F32), and that kiln computes with its type. A
 * missing tensor fails when required ("missing tensor 'name'"); *present
 * (optional) says whether it exists. The failure is in ld's err. */
kn_status model_bind(model_loader *ld, model_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                     bool required, bool *present);
/* The same for a stack of ne2 matrices (experts): t->ne2 and t->nb2 are set. */
kn_status model_bind3(model_loader *ld, model_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                      int64_t ne2, bool required, bool *present);
/* *dst becomes rows [row0, row0 + rows) of the bound matrix *whole (a fused
 * tensor split at load: phi3's attn_qkv and gate+up). */
kn_status model_bind_rows(model_loader *ld, model_tensor *dst, const model_tensor *whole, int64_t row0,
                          int64_t rows);
/* "blk.<layer>.<suffix>" as a stack of ne2 matrices. */
kn_status model_bind_layer3(model_loader *ld, model_tensor *t, int layer, const char *suffix, int64_t ne0,
                            int64_t ne1, int64_t ne2, bool required);
/* The same for "blk.<layer>.<suffix>". */
kn_status model_bind_layer(model_loader *ld, model_tensor *t, int layer, const char *suffix, int64_t ne0,
                           int64_t ne1, bool required);
/* A decoder's ends: token_embd, output_norm and output (or the tied
 * embedding), and m->layers allocated for the binder to fill. */
kn_status model_bind_decoder_ends(model_loader *ld, model *m);
/* *dst becomes a view of the tensor already bound at *src (a tied output). */
kn_status model_bind_alias(model_loader *ld, model_tensor *dst, const model_tensor *src);
/* The load's error (for a binder's own messages). */
kn_err *model_loader_err(model_loader *ld);

#endif
