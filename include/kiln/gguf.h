/*
 * kiln/gguf.h — the GGUF v2/v3 reader (over mmap) and writer, and the
 * quantizer of `kiln quantize` (its section below).
 *
 * File layout (all integers little-endian):
 *
 *   uint32 magic   = "GGUF" (0x46554747 read as LE u32)
 *   uint32 version = 2 or 3          (v1 used 32-bit counts; not supported)
 *   uint64 n_tensors
 *   uint64 n_kv
 *   n_kv times:      key (gguf string), uint32 value type, value
 *   n_tensors times: name (gguf string), uint32 n_dims (1..4),
 *                    uint64 ne[n_dims] (ne[0] is the contiguous row length),
 *                    uint32 tensor type (q_type numbering), uint64 offset
 *   padding to general.alignment (default 32, must be a power of two)
 *   tensor data; each tensor at data_start + offset, offset aligned
 *
 *   gguf string = uint64 length + bytes (no NUL)
 *   value types:  0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool,
 *                 8 string, 9 array (uint32 elem type + uint64 count + elems),
 *                 10 u64, 11 i64, 12 f64. Arrays of arrays are rejected.
 *
 * Invariants of an opened gguf_ctx:
 *  - Every count and string length was bounded by the bytes left in the file
 *    before anything was allocated for it.
 *  - Every tensor has a known type, 1..4 dims, a dim product that does not
 *    overflow, rows that divide into whole blocks, data that lies inside the
 *    file, is aligned, and overlaps no other tensor.
 *  - Key and tensor names are unique.
 *  - All pointers handed out (strings, array data, tensor data) point into the
 *    mapping and stay valid until gguf_close().
 */
#ifndef KILN_GGUF_H
#define KILN_GGUF_H

#include "kiln/core.h"
#include "kiln/tensor.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC 0x46554747u
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

const char *gguf_type_name(gguf_type t);
/* Bytes of one scalar value of type t; 0 for string, array or unknown. */
size_t gguf_type_size(gguf_type t);

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
    uint64_t len;
    const char *data;
} gguf_str;

/* Compare with a C string. */
bool gguf_str_eq(gguf_str s, const char *c);

typedef struct gguf_tensor_info {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t type;              /* q_type value */
    uint64_t offset;            /* relative to the data section */
    uint64_t nbytes;
    uint64_t nelements;
    const void *data; /* into the mapping */
} gguf_tensor_info;

typedef struct gguf_ctx gguf_ctx;

/* Opens and validates a file (mmap, read-only). On failure *out is NULL and
 * err names the problem (without the path; callers prefix it). */
kn_status gguf_open(const char *path, gguf_ctx **out, kn_err *err);
/* The same over a caller-owned buffer, which must outlive the ctx. Used by
 * tests and the fuzzer. */
kn_status gguf_open_mem(const void *data, size_t size, gguf_ctx **out, kn_err *err);
void gguf_close(gguf_ctx *ctx); /* accepts NULL */

uint32_t gguf_version(const gguf_ctx *ctx);
uint64_t gguf_file_size(const gguf_ctx *ctx);
uint32_t gguf_alignment(const gguf_ctx *ctx);
uint64_t gguf_data_offset(const gguf_ctx *ctx); /* start of the data section */

/* ---- metadata ---- */
int64_t gguf_n_kv(const gguf_ctx *ctx);
int64_t gguf_find_key(const gguf_ctx *ctx, const char *key); /* -1 if absent */
gguf_str gguf_kv_key(const gguf_ctx *ctx, int64_t i);
gguf_type gguf_kv_type(const gguf_ctx *ctx, int64_t i);

/* Typed getters. KN_ENOTFOUND when the key is absent, KN_ETYPE when its type
 * does not fit. Integer getters accept any integer type whose value fits the
 * output (e.g. a u32 key read as int64); they return KN_ERANGE otherwise.
 * Float getters accept f32 and f64. */
kn_status gguf_get_u64(const gguf_ctx *ctx, const char *key, uint64_t *out);
kn_status gguf_get_i64(const gguf_ctx *ctx, const char *key, int64_t *out);
kn_status gguf_get_u32(const gguf_ctx *ctx, const char *key, uint32_t *out);
kn_status gguf_get_f64(const gguf_ctx *ctx, const char *key, double *out);
kn_status gguf_get_f32(const gguf_ctx *ctx, const char *key, float *out);
kn_status gguf_get_bool(const gguf_ctx *ctx, const char *key, bool *out);
kn_status gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out);

/* Arrays. gguf_get_arr gives the element type and count; for non-string
 * arrays *data points at the packed little-endian elements in the mapping.
 * For string arrays *data is NULL; use gguf_get_arr_str. */
kn_status gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_type *elem_type, uint64_t *n,
                       const void **data);
kn_status gguf_get_arr_str(const gguf_ctx *ctx, const char *key, uint64_t i, gguf_str *out);

/* Note: array data in the mapping may be unaligned; read elements with
 * memcpy or with the element getters below, never by casting *data. */

/* Element j of the array at key index i, converted: integers/bool to *out
 * (KN_ERANGE if it does not fit an int64), f32/f64 to double. KN_ETYPE when
 * the element type does not fit, KN_ERANGE when j >= count. */
kn_status gguf_arr_get_i64(const gguf_ctx *ctx, int64_t i, uint64_t j, int64_t *out);
kn_status gguf_arr_get_f64(const gguf_ctx *ctx, int64_t i, uint64_t j, double *out);

/* Same getters by index (for dumping all metadata). */
kn_status gguf_kv_get_arr(const gguf_ctx *ctx, int64_t i, gguf_type *elem_type, uint64_t *n,
                          const void **data);
kn_status gguf_kv_arr_str(const gguf_ctx *ctx, int64_t i, uint64_t j, gguf_str *out);
/* Scalar value by index, converted: integers/bool to *iv and *uv (the same
 * bits: *uv for unsigned values above INT64_MAX, *iv for negative ones),
 * floats to *fv, strings to *sv. Unused outputs may be NULL. KN_ETYPE for
 * arrays. */
kn_status gguf_kv_scalar(const gguf_ctx *ctx, int64_t i, int64_t *iv, uint64_t *uv, double *fv, gguf_str *sv);

/* ---- tensors ---- */
int64_t gguf_n_tensors(const gguf_ctx *ctx);
const gguf_tensor_info *gguf_tensor(const gguf_ctx *ctx, int64_t i);
const gguf_tensor_info *gguf_find_tensor(const gguf_ctx *ctx, const char *name); /* NULL if absent */

/* ---- writer ----
 * Usage: create; set metadata (in order; setting an existing key replaces it);
 * add tensor infos (shape + type; sizes follow from them); then either
 * gguf_writer_write_file() when every tensor was given its data, or
 * gguf_writer_open() + gguf_writer_put_data() for each tensor in order +
 * gguf_writer_finish(), to stream large files without holding them.
 * The writer copies keys, names and metadata; tensor data passed to
 * add_tensor is borrowed until the file is written (it may be NULL when the
 * data will be streamed). put_data may be called several times per tensor
 * with consecutive chunks; zero-sized tensors need no call. The file is
 * written to PATH.part and renamed to PATH by a successful finish;
 * destroying an unfinished writer removes the .part file. Output is GGUF v3
 * with general.alignment (default 32) padding after the header and after
 * every tensor. */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(gguf_writer *w); /* accepts NULL; closes an open file */

kn_status gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v);
kn_status gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v);
kn_status gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v);
kn_status gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v);
kn_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
kn_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
kn_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
kn_status gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v);
kn_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
kn_status gguf_writer_set_f64(gguf_writer *w, const char *key, double v);
kn_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
kn_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
kn_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type, const void *data, uint64_t n);
kn_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* Copies key i of a reader (any type, arrays included). */
kn_status gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i);

/* Returns the tensor's index, or -1 (with err) on a bad shape/type/dup name. */
int64_t gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                               uint32_t type, const void *data, kn_err *err);

kn_status gguf_writer_write_file(gguf_writer *w, const char *path, kn_err *err);
kn_status gguf_writer_open(gguf_writer *w, const char *path, kn_err *err);
kn_status gguf_writer_put_data(gguf_writer *w, int64_t idx, const void *data, uint64_t nbytes, kn_err *err);
kn_status gguf_writer_finish(gguf_writer *w, kn_err *err);

/* ==== the quantizer (kiln quantize) ====
 * model quantization (`kiln quantize`): the per-tensor
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
