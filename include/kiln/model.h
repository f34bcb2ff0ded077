/*
 * kiln/model.h — transformer architectures as a table of families, and a
 * batched forward pass over tokens from several sequences.
 *
 * Owns:
 *  - model: a loaded GGUF (mmap'd, weights used in place or copied into
 *    huge pages), its hyper-parameters and per-layer tensor views.
 *  - the architecture table (model_arch.c): one row per `general.architecture`
 *    name, each naming its family's hyper-parameter reader, tensor
 *    bindings, memory estimate, scratch (model_ctx) and forward or encode.
 *    Families, one file each:
 *     - model_llama.c: `llama` (Llama 2/3, TinyLlama, SmolLM, Mistral
 *       without sliding window) and `qwen2` (the same block plus q/k/v
 *       biases): RMSNorm, RoPE (normal or neox, linear or YaRN scaling),
 *       grouped-query attention with any head ratio, SwiGLU; tied
 *       embeddings (no output.weight) are supported.
 *     - model_bert.c: the encoder `bert`: learned absolute positions and
 *       token types, post-norm LayerNorm blocks, non-causal attention, GELU,
 *       pooled embeddings through model_encode (model_forward refuses it).
 *     - model_qwen3.c: `qwen3` (per-head Q/K RMSNorm before neox RoPE, a
 *       head dimension of its own) and `qwen3moe` (the same attention, a
 *       mixture-of-experts FFN: softmax router, top k, renormalized).
 *     - model_gemma3.c: `gemma3` (scaled embeddings, four norms a layer,
 *       GELU gate, sliding-window layers with their own RoPE base, logit
 *       soft-capping).
 *     - model_phi3.c: `phi3` (fused QKV and gate+up split at load into
 *       views, LongRoPE long/short factors by the context per sequence).
 *     - model_gptoss.c: `gpt-oss` (biases, attention sinks, alternating
 *       sliding window, YaRN, top-k-then-softmax router over clamped
 *       SwiGLU experts, usually MXFP4).
 *    Llama 3.1+ files' rope_freqs factors are applied by model_llama.c.
 *    Every tensor of a file must be bound by its family and every
 *    `<arch>.rope.*` key known, or the load fails (nothing that changes
 *    the output is ignored).
 *    The operations families share (norms, RoPE, attention over the paged
 *    KV, FFN variants, matmuls on the pool, activation quantization, the
 *    decoder scratch) are in model_ops.c; the loader's helpers (metadata
 *    keys, tensor binding with validation) in model_load.c.
 *  - the KV row formats (F16 or Q8_0) kept in a paged kv_cache (src/kv):
 *    model_kv_geom describes them, model_kv_create makes a plain cache
 *    (every sequence its full context, no prefix sharing) for tools.
 *  - model_ctx: scratch buffers for a maximum batch, sized at creation; the
 *    forward pass allocates nothing.
 *  - the memory a load will take, from metadata alone (model_read_shape,
 *    model_estimate_bytes), for the runtime's budget.
 *
 * Invariants:
 *  - Every tensor was checked at load: present, of the shape the
 *    architecture needs, and of a type kiln computes with. A failure names
 *    the tensor.
 *  - Attention walks each token's keys in tiles of MODEL_ATTN_TILE aligned
 *    to absolute positions with an online softmax, and matmuls are
 *    batch-invariant (tensor.h), so a sequence's logits do not depend on
 *    what else shares the batch.
 *  - No mutable globals: the table is const; two models live side by side.
 *
 * Adding an architecture: write src/model/model_<family>.c, including only
 * the private headers model_arch.h and model_ops.h (never another family's
 * file). It defines `const model_arch_row model_arch_<name>` (model_arch.h
 * documents every field): an optional reader of the family's own metadata
 * keys (the common ones, sizes, RoPE and its scaling, are read before it),
 * a binder that declares each tensor with model_bind / model_bind_layer
 * (shape and type are checked, the failure names the tensor, and the
 * weights are retargeted when they are copied into memory), the memory
 * estimate (model_estimate_decoder when the family uses the shared decoder
 * scratch as is), the ctx (a struct that starts with model_dec, or
 * model_ctx for an encoder) and the block as a function composed of the
 * shared ops. New per-layer tensors go into model_layer (families may
 * extend it; unused fields stay zero); an operation two families need goes
 * into model_ops.c, not into a family file. Then add a MODEL_ARCH_ value
 * below and the row to the table in model_arch.c. Kernels (tensor/) stay
 * unaware of the architecture.
 */
#ifndef KILN_MODEL_H
#define KILN_MODEL_H

#include "kiln/core.h"
#include "kiln/kv.h"
#include "kiln/tensor.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct gguf_ctx gguf_ctx; /* gguf.h: the model loads from it */

#define MODEL_ATTN_TILE 32

/* A row of the architecture table (model_arch.c); the value indexes it. */
typedef enum model_arch {
    MODEL_ARCH_LLAMA = 0,
    MODEL_ARCH_QWEN2,
    MODEL_ARCH_BERT,
    MODEL_ARCH_QWEN3,
    MODEL_ARCH_QWEN3MOE,
    MODEL_ARCH_GEMMA3,
    MODEL_ARCH_PHI3,
    MODEL_ARCH_GPTOSS,
    MODEL_ARCH_COUNT
} model_arch;
typedef enum model_rope_type { MODEL_ROPE_NORM = 0, MODEL_ROPE_NEOX } model_rope_type;
/* How an encoder turns a sequence's hidden states into one vector
 * (`<arch>.pooling_type`; 0 or absent = NONE). */
typedef enum model_pooling { MODEL_POOL_NONE = 0, MODEL_POOL_MEAN = 1, MODEL_POOL_CLS = 2, MODEL_POOL_LAST = 3 } model_pooling;

typedef struct model_hparams {
    model_arch arch;
    char arch_name[32];
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    int32_t n_rot;          /* rope.dimension_count (default head_dim) */
    float rope_freq_base;   /* default 10000 */
    float rope_freq_scale;  /* 1 / scaling factor (linear or YaRN) */
    float yarn_ext_factor;  /* 0 unless YaRN: extrapolation mix */
    float yarn_attn_factor; /* magnitude scale (rope.scaling.attn_factor, default 1) */
    float yarn_beta_fast, yarn_beta_slow;
    int32_t n_ctx_orig;     /* rope.scaling.original_context_length (default n_ctx_train) */
    float rms_eps;
    model_rope_type rope_type;
    /* sliding-window attention (gemma3, gpt-oss): layers with model_layer.swa
     * see the last n_swa positions (p1 - p0 < n_swa) and rotate with their
     * own base and scale (no YaRN ramp or factors when swa_rope_plain) */
    int32_t n_swa;               /* <arch>.attention.sliding_window; 0: none */
    float rope_freq_base_swa;    /* rope.freq_base_swa */
    float rope_freq_scale_swa;   /* 1: no scaling */
    bool swa_rope_plain;         /* windowed layers use no YaRN or rope factors (gemma3) */
    /* mixture of experts (qwen3moe, gpt-oss) */
    int32_t n_expert;            /* <arch>.expert_count; 0: a dense FFN */
    int32_t n_expert_used;       /* <arch>.expert_used_count */
    int32_t n_ff_exp;            /* <arch>.expert_feed_forward_length */
    float attn_scale;            /* query scale; 0: 1/sqrt(head_dim) */
    bool scale_q;                /* the scale multiplies Q after RoPE, not the scores (gemma3, phi3: as llama.cpp) */
    float logit_softcap;         /* final_logit_softcapping; 0: none */
    /* encoders (bert) */
    bool encoder;          /* non-causal, no logits: model_encode only */
    model_pooling pooling; /* <arch>.pooling_type */
    float norm_eps;        /* LayerNorm eps (<arch>.attention.layer_norm_epsilon, default 1e-12) */
    int32_t n_token_types; /* rows of token_types (0 for decoders) */
} model_hparams;

/* A weight: a view into the mapping. */
typedef struct model_tensor {
    const void *data;
    q_type type;
    int64_t ne0, ne1; /* ne0 = row length (input dim), ne1 = rows (output dim) */
    int64_t ne2;      /* matrices stacked (experts); 0 or 1: one */
    size_t nb2;       /* bytes from one stacked matrix to the next */
} model_tensor;

typedef struct model_layer {
    model_tensor attn_norm;                 /* [n_embd] F32 */
    model_tensor wq, wk, wv, wo;            /* [n_embd -> n_head*hd], [.. n_kv*hd], [.. n_kv*hd], [n_head*hd -> n_embd] */
    model_tensor bq, bk, bv;                /* qwen2 only: [n_head*hd], [n_kv*hd], [n_kv*hd] F32 */
    model_tensor ffn_norm;                  /* [n_embd] */
    model_tensor w_gate, w_up, w_down;      /* [n_embd -> n_ff], same, [n_ff -> n_embd] */
    /* bert only (F32 vectors): output and FFN biases, the two post-norm LayerNorms */
    model_tensor bo, b_up, b_down;          /* [n_embd], [n_ff], [n_embd] */
    model_tensor attn_out_norm, attn_out_norm_b;   /* [n_embd] weight, bias */
    model_tensor layer_out_norm, layer_out_norm_b; /* [n_embd] weight, bias */
    /* qwen3, gemma3: one RMSNorm weight over head_dim shared by the heads of Q, of K */
    model_tensor attn_q_norm, attn_k_norm;
    /* gemma3: norms of the attention and FFN outputs before their residual add */
    model_tensor attn_post_norm, ffn_post_norm;
    /* gpt-oss: a per-head logit that joins each softmax denominator [n_head] */
    model_tensor attn_sinks;
    /* mixture of experts: the router [n_embd -> n_expert] (+ bias), the experts
     * stacked along ne2 (gate/up [n_embd -> n_ff_exp], down [n_ff_exp -> n_embd])
     * and their biases [n_ff_exp | n_embd x n_expert] (gpt-oss) */
    model_tensor router, router_b;
    model_tensor gate_exps, up_exps, down_exps;
    model_tensor gate_exps_b, up_exps_b, down_exps_b;
    bool swa; /* a sliding-window layer (hp.n_swa) */
} model_layer;

typedef struct model {
    gguf_ctx *gguf; /* owned */
    model_hparams hp;
    model_tensor tok_embd;    /* [n_embd x n_vocab] */
    model_tensor output_norm; /* [n_embd] */
    model_tensor output;      /* [n_embd x n_vocab]; == tok_embd when tied */
    model_layer *layers;      /* [n_layer] owned */
    /* bert only (output_norm and output are unset) */
    model_tensor tok_types;   /* [n_embd x n_token_types] */
    model_tensor pos_embd;    /* [n_embd x n_ctx_train] */
    model_tensor tok_norm, tok_norm_b; /* [n_embd] LayerNorm weight, bias (F32) */
    /* RoPE frequency factors [n_rot/2] dividing each pair's frequency: Llama 3.1
     * rope_freqs (always), phi3 LongRoPE long/short (by the context per sequence) */
    model_tensor rope_freqs, rope_long, rope_short;
    uint64_t weight_bytes;
    void *weights_mem;        /* owned copy of the data section (NULL when mapped) */
    size_t weights_len;
    bool huge_pages;          /* the copy is advised to transparent huge pages */
} model;

typedef struct model_load_opts {
    /* false (default): copy the weights into anonymous memory backed by
     * transparent huge pages (faster decode: far fewer TLB misses);
     * true: compute straight from the file mapping (less memory, shared
     * page cache, faster load), like llama.cpp's default. */
    bool mmap_weights;
} model_load_opts;

/* Loads and validates a model file; opts may be NULL (defaults). err names
 * the problem (without the path). */
kn_status model_load(const char *path, const model_load_opts *opts, model **out, kn_err *err);
/* The same over an already opened GGUF; takes ownership of g on success. */
kn_status model_load_gguf(gguf_ctx *g, const model_load_opts *opts, model **out, kn_err *err);
void model_destroy(model *m); /* accepts NULL */
/* Weight bytes one decode step reads: every weight, but one row of an
 * untied token embedding, and of each layer's experts only the
 * expert_used_count a token is routed to (the decode roofline). */
uint64_t model_decode_bytes(const model *m);

/* ---- KV store ---- */
typedef kv_cache model_kv;

/* KV element types: F16 (default) or Q8_0 (8-bit rows, Q8P: 59% of the memory; needs a head
 * dimension that is a multiple of 32). */
typedef enum model_kv_type { MODEL_KV_F16 = 0, MODEL_KV_Q8_0 = 1 } model_kv_type;
/* Parses "f16" / "q8_0" (case-insensitive). */
bool model_kv_type_parse(const char *s, model_kv_type *out);
const char *model_kv_type_name(model_kv_type t);

/* The KV geometry of m with rows of the given type. */
kn_status model_kv_geom(const model *m, model_kv_type type, kv_geom *g, kn_err *err);
/* A plain cache: n_seq sequences of up to n_ctx positions, each with room
 * for its full context, blocks of 32, no prefix sharing. Free with
 * kv_cache_destroy. */
kn_status model_kv_create(const model *m, int n_seq, int n_ctx, model_kv_type type, model_kv **out, kn_err *err);

/* ---- forward ---- */
typedef struct model_batch {
    int n_tokens;
    const int32_t *token;  /* [n_tokens] */
    const int32_t *pos;    /* [n_tokens] position within its sequence */
    const int32_t *seq;    /* [n_tokens] sequence index < n_seq */
    const uint8_t *logits; /* [n_tokens] MODEL_OUT_* bits per token; NULL = logits of the last token only */
    float *embd;           /* with MODEL_OUT_EMBD: receives the final-normed hidden state (n_embd floats)
                              of each token flagged so, in batch order (what embeddings pool) */
} model_batch;

#define MODEL_OUT_LOGITS 1 /* write this token's logits to out */
#define MODEL_OUT_EMBD 2   /* write this token's last hidden state to b->embd */

typedef struct model_ctx model_ctx;

/* Scratch for batches of up to max_batch tokens (for an encoder: also the
 * attention scores of sequences up to n_ctx_train). ops and pool are
 * borrowed and must outlive the ctx. */
kn_status model_ctx_create(const model *m, const tensor_ops *ops, kn_pool *pool, int max_batch,
                           model_ctx **out, kn_err *err);
void model_ctx_destroy(model_ctx *c); /* accepts NULL */

/* How attention accumulates. MODEL_ATTN_F32 (the default): F32 scores and
 * accumulators in tiles, batch-invariant. MODEL_ATTN_GGML_F16: llama.cpp's
 * CPU flash-attention numerics for ubatches of fewer than 64 query rows
 * (Q rounded to F16, V accumulated in F16 one key at a time), scalar and
 * slow, with an F16 KV only; for comparing against references llama.cpp
 * computed that way (tests), never for serving. */
typedef enum model_attn_numerics { MODEL_ATTN_F32 = 0, MODEL_ATTN_GGML_F16 } model_attn_numerics;
void model_ctx_set_attn_numerics(model_ctx *c, model_attn_numerics a);
uint64_t model_ctx_bytes(const model_ctx *c);

/* Runs the batch. Tokens of one sequence must come in increasing position
 * order, and the positions a token attends to (0..pos) must already be in
 * the KV store or earlier in this batch. Logits of the tokens that asked
 * for them are written to out, one row of n_vocab floats per such token, in
 * batch order. A sequence's tokens in the batch take consecutive positions
 * starting at most at its computed length (an earlier start recomputes
 * from there). KN_EBUSY when the KV pool cannot hold the batch (nothing
 * was computed); other errors (bad token id, position past n_ctx) change
 * nothing either. */
kn_status model_forward(model_ctx *c, model_kv *kv, const model_batch *b, float *out, kn_err *err);

/* ---- encoders ---- */
bool model_is_encoder(const model *m);

/* Encoder models: embeds n sequences in one forward pass. toks[i][0..lens[i])
 * are token ids (with [CLS]/[SEP] already added by the tokenizer); attention
 * stays within each sequence (non-causal), no padding to the longest.
 * out[n][n_embd] (caller-owned) gets each sequence's pooled vector (the
 * model's pooling; for NONE, the mean, documented as such), L2-normalized
 * when normalize. Sum of lens must be <= the ctx's max_batch and each
 * lens[i] <= n_ctx_train (KN_ERANGE naming the input and both lengths
 * otherwise); lens[i] >= 1. A sequence's vector does not depend on the
 * others in the call (batch-invariant matmuls, per-sequence attention).
 * KN_EUNSUPPORTED on a decoder model. Allocates nothing. Not thread-safe on
 * one ctx. */
kn_status model_encode(model_ctx *c, const int32_t *const *toks, const size_t *lens, size_t n, bool normalize,
                       float *out, kn_err *err);

/* ---- memory, from metadata alone ----
 * The runtime sizes a load against its budget before loading it: it opens
 * the file (gguf_open), reads the shape, then asks for the bytes of any
 * context it considers:
 *
 *     model_shape sh;
 *     if (model_read_shape(g, &sh, err) == KN_OK) {
 *         model_mem_opts mo = {.n_ctx = ctx, .n_slots = slots, .max_batch = batch, .kv_type = kv,
 *                              .block_size = bs, .kv_blocks = blocks, .cache_bytes = cache, .spec_max = spec};
 *         uint64_t bytes = model_estimate_bytes(&sh, &mo); // + a draft model's own bytes
 *     }
 */
typedef struct model_shape {
    model_arch arch;       /* the row that estimates; MODEL_ARCH_LLAMA (a plain decoder) when !supported */
    bool supported;        /* general.architecture names a row of the table (model_load accepts the name) */
    bool encoder;          /* the row is an encoder (no KV, no logits) */
    int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim;
    int64_t n_vocab;       /* entries of tokenizer.ggml.tokens (0 without a tokenizer) */
    int64_t ctx_train;     /* <arch>.context_length */
    uint64_t weight_bytes; /* every tensor's data */
    int64_t n_expert, n_expert_used, n_ff_exp; /* mixture of experts (0: dense) */
    int64_t n_merges;      /* entries of tokenizer.ggml.merges (0 without) */
    char tok_model[16];    /* tokenizer.ggml.model ("llama", "gpt2", "gemma4", "bert"; "" without) */
    uint64_t meta_bytes;   /* the metadata section (read in place: the vocabulary's strings) */
} model_shape;

/* The tokenizer's share of an instance (its front: vocabulary, merges, chat
 * template), from its kind, vocabulary and merges, as measured in kiln serve
 * (test_server_families): SentencePiece and WordPiece ~64 B a token; BPE
 * ~157 B a token and ~76 B a merge; Gemma 4 ~144 B a token and ~23 B a
 * merge; plus the metadata pages it reads in place. */
uint64_t model_tokenizer_bytes(const model_shape *s);

/* Reads the shape from g's metadata and tensor table (no weight data is
 * touched). Absent keys take the defaults a loader would (n_ff 4 n_embd,
 * one head, n_head_kv = n_head, head_dim = n_embd / n_head, context 2048);
 * a missing or overlong general.architecture reads the llama keys. Does not
 * check what model_load checks: a shape can be read from a file that will
 * not load. Fails with KN_EFORMAT "the model's hyper-parameters are missing
 * or invalid" (no layers, width, heads or context) or "... are out of
 * range" (over 4096 layers, 2^20 width, 2^22 FFN width or 2^24 tokens). */
kn_status model_read_shape(const gguf_ctx *g, model_shape *s, kn_err *err);

/* What a model instance is sized by: plain numbers, no registry. */
typedef struct model_mem_opts {
    int n_ctx;              /* positions per slot (an encoder: tokens per input) */
    int n_slots;            /* sequences decoded together */
    int max_batch;          /* tokens per forward pass */
    model_kv_type kv_type;
    int block_size;         /* KV positions per block; 0 = 32 */
    int64_t kv_blocks;      /* KV pool in blocks; 0 = every slot its context plus cache_bytes (kv_pool_blocks) */
    uint64_t cache_bytes;   /* KV room for cached prefixes beyond the slots' own (with kv_blocks 0) */
    int spec_max;           /* draft tokens per slot and step (their logit rows) */
} model_mem_opts;

/* Bytes one instance takes: the weights, the KV pool, the forward scratch
 * (model_ctx), and the engine's per-token buffers (logits, hidden states,
 * batch tables). Not included: a draft model. */
uint64_t model_estimate_bytes(const model_shape *s, const model_mem_opts *o);

/* KV bytes one position takes over all layers (K and V); 0 for encoders. */
double model_kv_bytes_per_token(const model_shape *s, model_kv_type t);

#endif
