/*
 * params.h — what a generation asks of the engine (eng_gen_params) and the
 * response-cache key derived from it.
 *
 * The key is derived from the parameters themselves through ONE table
 * (eng_gen_key_fields, params.c) that names every field of eng_gen_params
 * and of its eng_sampler_params with how it enters the key:
 *   ALWAYS     it changes the output of any request;
 *   SAMPLED    only when tokens are sampled (temperature > 0), e.g. top-k
 *              or the seed: a greedy answer does not depend on them;
 *   PENALTIES  only when a repetition/presence/frequency penalty is on;
 *   NEVER      it does not change the output (with the reason).
 * A field added to the structs without a row makes tests/unit/engine/
 * test_key.c fail (it reads the struct definitions in this header and in
 * sampler.h), and every row is checked to change the key exactly when its
 * policy says so. The key also covers the model file (name, quantization,
 * sha256), the KV row type, the kernel set, the draft model (for sampled
 * requests) and the prompt tokens, and is XXH3-128 over a canonical byte
 * string in which every field is length-prefixed.
 */
#ifndef KILN_ENGINE_PARAMS_H
#define KILN_ENGINE_PARAMS_H

#include "../cache/cache.h"
#include "../core/kn.h"
#include "sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum eng_spec_mode {
    ENG_SPEC_DEFAULT = 0, /* in eng_gen_params: the scheduler's default */
    ENG_SPEC_NONE,
    ENG_SPEC_NGRAM, /* prompt lookup */
    ENG_SPEC_DRAFT, /* the draft model (prompt lookup when there is none) */
} eng_spec_mode;
/* "none", "ngram", "draft"; parse returns false on anything else. */
const char *eng_spec_name(eng_spec_mode m);
bool eng_spec_parse(const char *s, eng_spec_mode *out);

typedef struct eng_gen_params {
    eng_sampler_params sp;       /* the bias array is copied */
    int32_t n_predict;           /* tokens to generate; < 0: until the context is full */
    bool ignore_eos;
    const char *const *stops;    /* copied */
    size_t n_stops;
    int n_logprobs;              /* < 0: none; 0..ENG_MAX_LOGPROBS: the chosen token's logprob plus
                                    this many top alternatives, for every generated token */
    double t_origin;             /* kn_now_s() when the request arrived (TTFT counts from it); 0: submission */
    eng_spec_mode spec;          /* speculative decoding for this request */
    int spec_max;                /* draft tokens per step; 0: the scheduler's */
    double stall_timeout_s;      /* a consumer that reads nothing for this long while the output ring is
                                    full is cancelled; 0: ENG_STALL_TIMEOUT_S */
} eng_gen_params;

#define ENG_STALL_TIMEOUT_S 120.0

/* The model instance part of a key. */
typedef struct eng_key_ctx {
    const char *name, *quant, *sha256; /* the model file */
    const char *kv_type;               /* "f16" | "q8_0" */
    int ops_level;                     /* the kernel set (kn_cpu_level) */
    bool ops_vnni;
    const char *draft;                 /* the draft model file, "" when none */
} eng_key_ctx;

typedef enum eng_key_use { ENG_KEY_ALWAYS = 0, ENG_KEY_SAMPLED, ENG_KEY_PENALTIES, ENG_KEY_NEVER } eng_key_use;
typedef enum eng_key_type {
    ENG_KT_I32 = 0, ENG_KT_U64, ENG_KT_F32, ENG_KT_F64, ENG_KT_BOOL, ENG_KT_ENUM, /* an int-sized enum */
    ENG_KT_STOPS,   /* stops + n_stops */
    ENG_KT_BIAS,    /* sp.bias + sp.n_bias, sorted by token */
    ENG_KT_PART,    /* the count of the array row before it */
} eng_key_type;
typedef struct eng_key_field {
    const char *name;  /* as in the struct: "n_predict", "sp.top_k" */
    size_t offset;     /* in eng_gen_params */
    eng_key_type type;
    eng_key_use use;
    const char *why;   /* NEVER and PART: why it is not keyed on its own */
} eng_key_field;
/* The table (static storage). */
const eng_key_field *eng_gen_key_fields(size_t *n);

/* The key of a generation over ids[0..n_ids) with parameters p (spec and
 * spec_max already resolved to what the engine will use). */
rc_key eng_gen_key(const eng_key_ctx *k, const int32_t *ids, size_t n_ids, const eng_gen_params *p);
/* The key of one embedding input (text, or token ids when tokens),
 * truncated to trunc_ctx tokens when > 0. */
rc_key eng_embed_key(const eng_key_ctx *k, bool normalize, int trunc_ctx, bool tokens, const void *input,
                     size_t bytes);

#endif
