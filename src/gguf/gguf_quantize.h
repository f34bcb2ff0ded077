/*
 * gguf_quantize.h — model quantization (`kiln quantize`): the per-tensor
 * type mixes of llama.cpp's file types and a streaming GGUF-to-GGUF
 * quantizer.
 *
 * Owns: nothing global. gguf_quantize_file() opens the input (mmap), writes
 * the output tensor by tensor through the streaming writer (at most a few MB
 * of buffers, never the whole model), and quantizes rows on a kn_pool.
 *
 * Mix rules (llama.cpp's llama_tensor_get_type for these file types):
 *  - Only tensors whose name ends in "weight", with 2+ dims, that are not
 *    norms, expert-gate inputs, position embeddings or token types are
 *    quantized; everything else (1-D norms and biases) is copied unchanged.
 *  - output.weight (or token_embd.weight when the embeddings are tied, i.e.
 *    there is no output.weight) becomes Q6_K, unless the mix type is Q8_0 or
 *    the row does not divide into the mix type's blocks (then Q8_0). This is
 *    also what llama.cpp does for the legacy Q4_0..Q5_1 mixes.
 *  - Q2_K:   attn_v -> Q4_K if n_head/n_head_kv >= 4 else Q3_K; ffn_down and
 *            attn_output -> Q3_K.
 *  - Q3_K_M: attn_v -> Q5_K for the first 2 layers, else Q4_K; ffn_down ->
 *            Q5_K for layers < n/16, else Q4_K; attn_output -> Q4_K.
 *  - Q4_K_S: attn_v -> Q5_K for the first 4 layers; ffn_down -> Q5_K for
 *            layers < n/8.
 *  - Q4_K_M, Q5_K_M: attn_v and ffn_down -> Q6_K where use_more_bits(i, n)
 *            (i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2).
 *  - attn_qkv (fused): Q3_K_M -> Q4_K, Q4_K_M -> Q5_K, Q5_K_M -> Q6_K.
 *  - 8-expert models: attn_v and attn_k -> Q8_0.
 *  - A row (ne0) that does not divide into the chosen type's blocks falls
 *    back: Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and
 *    anything still not divisible -> F16.
 *  The layer index comes from the tensor name ("blk.N."), so the result does
 *  not depend on tensor order in the file.
 */
#ifndef KILN_GGUF_QUANTIZE_H
#define KILN_GGUF_QUANTIZE_H

#include "gguf.h"

#include "../tensor/tensor.h"

/* llama.cpp's LLAMA_FTYPE numbers, stored as general.file_type. */
typedef enum gguf_ftype {
    GGUF_FTYPE_ALL_F32 = 0,
    GGUF_FTYPE_F16 = 1,
    GGUF_FTYPE_Q4_0 = 2,
    GGUF_FTYPE_Q4_1 = 3,
    GGUF_FTYPE_Q8_0 = 7,
    GGUF_FTYPE_Q5_0 = 8,
    GGUF_FTYPE_Q5_1 = 9,
    GGUF_FTYPE_Q2_K = 10,
    GGUF_FTYPE_Q3_K_S = 11,
    GGUF_FTYPE_Q3_K_M = 12,
    GGUF_FTYPE_Q3_K_L = 13,
    GGUF_FTYPE_Q4_K_S = 14,
    GGUF_FTYPE_Q4_K_M = 15,
    GGUF_FTYPE_Q5_K_S = 16,
    GGUF_FTYPE_Q5_K_M = 17,
    GGUF_FTYPE_Q6_K = 18,
    GGUF_FTYPE_BF16 = 32,
} gguf_ftype;

/* Parses a mix name accepted by `kiln quantize` (case-insensitive: F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_M, Q4_K_S, Q4_K_M, Q5_K_S,
 * Q5_K_M, Q6_K). */
bool gguf_ftype_parse(const char *name, gguf_ftype *out);
/* The accepted names, comma-separated (static string). */
const char *gguf_ftype_names(void);
/* "Q4_K_M" etc.; "?" for others. */
const char *gguf_ftype_name(gguf_ftype ft);
/* The base tensor type of a mix (Q4_K for Q4_K_M, ...). */
q_type gguf_ftype_base_type(gguf_ftype ft);

/* What the type chooser needs to know about the model. */
typedef struct gguf_quant_model {
    int n_layer;     /* <arch>.block_count (0 if unknown) */
    int n_head;      /* <arch>.attention.head_count */
    int n_head_kv;   /* <arch>.attention.head_count_kv (defaults to n_head) */
    int n_expert;    /* <arch>.expert_count (0 if none) */
    bool has_output; /* an output.weight tensor exists (untied) */
    bool is_falcon;
} gguf_quant_model;

/* Fills m from a reader's metadata and tensor list. */
void gguf_quant_model_init(gguf_quant_model *m, const gguf_ctx *in);

/* Whether the tensor should be quantized at all (see the rules above). */
bool gguf_quant_should_quantize(const char *name, uint32_t n_dims);

/* The output type of a tensor (name, shape) under mix ft. For tensors that
 * should not be quantized it returns in_type. *fallback (optional) is set
 * when the row did not fit the preferred type. */
q_type gguf_quant_choose_type(const gguf_quant_model *m, gguf_ftype ft, const char *name, uint32_t n_dims,
                              const uint64_t *ne, q_type in_type, bool *fallback);

typedef struct gguf_quantize_stats {
    uint64_t in_bytes, out_bytes;           /* file sizes */
    int64_t n_tensors, n_quantized, n_fallback, n_requantized;
    uint64_t type_counts[Q_TYPE_COUNT];     /* output tensors per type */
} gguf_quantize_stats;

/* Quantizes in_path to out_path with mix ft on n_threads threads (>= 1),
 * showing a kn_progress line when progress is true. All metadata is copied;
 * general.file_type and general.quantization_version are set. err names the
 * problem (input errors are prefixed with the input path). */
kn_status gguf_quantize_file(const char *in_path, const char *out_path, gguf_ftype ft, int n_threads, bool progress,
                             gguf_quantize_stats *stats, kn_err *err);

#endif
