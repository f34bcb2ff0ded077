/*
 * kiln/engine.h — the engine (prefix eng_), seen from outside: the
 * generation session, kiln's one path from a parsed, dialect-free request
 * to the events of its answer; the parameters of a generation and the
 * response-cache key derived from them; sampling parameters and limits.
 * The HTTP server only parses a dialect into an eng_gen_request and formats
 * what eng_gen_read gives; `kiln run` uses the same path, so there is one
 * token loop. Inside (src/engine, private): the scheduler of each loaded
 * model (continuous batching, paged KV, speculation; scheduler.h), the
 * samplers, stop strings, and the cached values (record.h).
 *
 * A generation (eng_gen_start):
 *   1. resolves the model to its front (vocabulary, chat format, digest;
 *      kiln/runtime.h) without loading the weights;
 *   2. renders the messages with the model's chat template (or takes the
 *      prompt text or token ids) and tokenizes;
 *   3. builds the engine parameters and derives the response-cache key
 *      from them (eng_gen_key, below) and looks it up: a hit is answered
 *      from the cache without loading the model, and so without a 503 when
 *      memory is short;
 *   4. on a miss, acquires the model (loading it under the memory budget),
 *      checks the context and submits to the model's scheduler.
 * Reading is push, not poll: eng_gen_fd becomes readable when the engine
 * has produced output (or finished), so a reader waits on it together
 * with its client's socket and notices either at once.
 *
 * A hit replays the recorded chunks exactly as the first answer produced
 * them. A miss that finishes (stop or length) is stored once its last
 * piece was read. A record that ended at the context limit is only served to a
 * request with that same context; one that did not is served to any
 * context that holds all of its tokens (the answer does not depend on the
 * context otherwise), which for a model that is not loaded is checked
 * against the smallest context a new instance would get.
 *
 * Owns: eng_service owns the model registry (with the engine attached to
 * every instance through rt_hooks), the engine's metric families and the
 * TTFT window; it borrows the response cache and the kernel set. An
 * eng_gen owns everything of one request (freed by eng_gen_close in one
 * call) and holds the model (front or instance) until closed.
 *
 * Errors never speak HTTP: eng_error has a kind (the request is wrong, not
 * found, busy, internal), the field it is about and a machine-readable
 * code, which the server maps to a status and its dialect's error body.
 *
 * Thread safety: the service may be used from any thread; one eng_gen or
 * eng_embed by one thread at a time.
 */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include "kiln/cache.h"
#include "kiln/core.h"
#include "kiln/metrics.h"
#include "kiln/runtime.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tensor_ops; /* tensor.h: the kernel set */

/* ==== limits ==== */
#define ENG_MAX_LOGPROBS 20 /* top alternatives per token (OpenAI's limit) */
#define ENG_MAX_EMBED_INPUTS 2048
#define ENG_MAX_SLOTS 1024
#define ENG_SPEC_MAX 16 /* draft tokens per step at most */
#define ENG_STOP_MAX 16         /* stop strings per request */
#define ENG_STOP_MAX_LEN 256    /* bytes per stop string */

/* ==== sampling ==== */
typedef struct eng_logit_bias {
    int32_t token;
    float bias; /* -INFINITY bans the token */
} eng_logit_bias;

typedef struct eng_sampler_params {
    float temp;              /* <= 0: greedy */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float typical_p;         /* >= 1: off */
    float repeat_penalty;    /* 1: off */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    int32_t penalty_last_n;  /* tokens of history the penalties look at */
    uint64_t seed;
    const eng_logit_bias *bias; /* borrowed until destroy; may be NULL */
    int32_t n_bias;
} eng_sampler_params;

/* llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05,
 * repeat penalty 1 (off), last 64 tokens. */
eng_sampler_params eng_sampler_defaults(void);

/* ==== the parameters of a generation, and its cache key ====
 * what a generation asks of the engine (eng_gen_params) and the
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
 * test_key.c fail (it reads the struct definitions in this header), and every row is checked to change the key exactly when its
 * policy says so. The key also covers the model file (name, quantization,
 * sha256), the KV row type, the kernel set, the draft model (for sampled
 * requests) and the prompt tokens, and is XXH3-128 over a canonical byte
 * string in which every field is length-prefixed.
 */
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
    const char *grammar;         /* GBNF text (NUL-terminated, compiled and kept by the request) constraining
                                    the output (docs/grammar.md); NULL or "": none */
    bool markup;                 /* render the control tokens of the tool-call and reasoning syntaxes
                                    (chat_syntax_markers, kiln/chat.h) as their text, for the chat parser */
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
    ENG_KT_STR,     /* a const char * (NULL keys as "") */
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

/* ==== what a generation gives back ==== */
typedef enum eng_finish {
    ENG_FINISH_NONE = 0, /* still running */
    ENG_FINISH_STOP,     /* end-of-generation token or a stop string */
    ENG_FINISH_LENGTH,   /* n_predict reached, or the context is full */
    ENG_FINISH_CANCELLED,
    ENG_FINISH_ERROR,    /* see eng_req_result.err */
} eng_finish;
const char *eng_finish_name(eng_finish f); /* "stop", "length", "cancelled", "error" */

/* One generated token, for logprobs. */
typedef struct eng_tok_event {
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_id[ENG_MAX_LOGPROBS];
    float top_lp[ENG_MAX_LOGPROBS];
} eng_tok_event;

typedef struct eng_req_result {
    eng_finish finish;
    int stop_index;   /* ENG_FINISH_STOP: the stop string that ended it (index into stops), -1: an
                         end-of-generation token */
    kn_status status; /* for ENG_FINISH_ERROR */
    char err[256];
    size_t n_prompt, n_gen;
    double t_submit, t_start, t_first, t_end; /* kn_now_s() clock; 0 when not reached */
} eng_req_result;

/* ==== the session ==== */
typedef struct eng_service eng_service;

typedef struct eng_service_opts {
    const char *models_dir;       /* scan this directory, or */
    const char *model_file;       /* serve this one file */
    rt_opts rt;                   /* the registry (its hooks and metrics are the service's) */
    const struct tensor_ops *ops; /* the kernel set (borrowed) */
    rc_cache *cache;              /* the response and embedding cache (borrowed; NULL: off) */
    met_registry *metrics;        /* registers the engine's and the registry's families (NULL: none) */
    double ttft_window_s;         /* rolling TTFT window for percentiles (0: 300) */
    const char *default_model;    /* the model of a request that names none (NULL: the only file, with
                                     model_file) */
    int32_t default_max_tokens;   /* a request that sets no limit generates this many (< 0: until the context
                                     is full) */
    int32_t limit_max_tokens;     /* and never more than this (0: no cap) */
    double stall_timeout_s;       /* a reader that takes nothing for this long is cancelled (0: default) */
} eng_service_opts;

kn_status eng_service_create(const eng_service_opts *o, eng_service **out, kn_err *err);
/* Cancels what runs, unloads every model. Accepts NULL. */
void eng_service_destroy(eng_service *s);
rt_registry *eng_service_registry(eng_service *s);
/* The model a request without one gets (may be NULL). */
const char *eng_service_default_model(const eng_service *s);
/* Rolling TTFT samples (arrival to first token) of every model. */
met_window *eng_service_ttft_window(eng_service *s);

typedef enum eng_err_kind {
    ENG_ERR_REQUEST = 1, /* the request is wrong (a client error) */
    ENG_ERR_NOT_FOUND,   /* no such model */
    ENG_ERR_BUSY,        /* no memory, a full queue, shutting down: retry later */
    ENG_ERR_INTERNAL,    /* a file that cannot be read, out of memory, a failed step */
    ENG_ERR_GONE,        /* the reader cancelled (its client left) */
} eng_err_kind;

typedef struct eng_error {
    eng_err_kind kind;
    char param[96]; /* the request field it is about ("" when none) */
    char code[48];  /* a machine-readable slug ("" when none) */
    char msg[640];
} eng_error;

/* Fills e and returns false. */
bool eng_fail(eng_error *e, eng_err_kind kind, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- generation ---------------------------------------------------------- */

/* Reasoning, for templates that think (enable_thinking). */
typedef enum eng_think { ENG_THINK_DEFAULT = 0, ENG_THINK_OFF, ENG_THINK_ON } eng_think;

/* Tools: what the model may or must do with them (OpenAI's tool_choice). */
typedef enum eng_tool_choice {
    ENG_TOOLS_AUTO = 0, /* free; tool calls are parsed from the answer */
    ENG_TOOLS_NONE,     /* no tool calls (tools still reach the template; markup stays text) */
    ENG_TOOLS_REQUIRED, /* constrained to one or more calls in the family's syntax */
    ENG_TOOLS_NAMED,    /* constrained to a call of tool_name */
} eng_tool_choice;

/* A request in no dialect. Strings and arrays are borrowed until
 * eng_gen_start returns. */
typedef struct eng_gen_request {
    const char *model;           /* NULL or "": the service's default */
    const json_t *messages;      /* chat: [{role, content, ...}] for the model's template; NULL: a prompt */
    const json_t *tools;         /* for the template (may be NULL) */
    const char *prompt;          /* a prompt as text (no template), or */
    size_t prompt_len;
    const int32_t *prompt_tokens; /* a prompt as token ids */
    size_t n_prompt_tokens;
    bool add_special;            /* a text prompt: BOS per the model's rules */
    const char *prompt_param;    /* the field that errors about the prompt's length name ("messages", "prompt") */
    eng_sampler_params sp;
    bool seed_set;               /* false: a fresh seed per request */
    int32_t n_predict;           /* tokens to generate (< 0: until the context is full) when n_predict_set, */
    bool n_predict_set;          /* else the service's default */
    bool ignore_eos;
    const char *const *stops;
    size_t n_stops;
    int n_logprobs;              /* < 0: none */
    int num_ctx;                 /* a smaller context for this request (0: the instance's) */
    double keep_alive_s;         /* NAN: the default; < 0 forever; 0 unload after */
    eng_spec_mode spec;          /* ENG_SPEC_DEFAULT: the server's */
    int spec_max;                /* 0: the server's */
    bool cache;                  /* false: bypass the response cache */
    double t_origin;             /* kn_now_s() at arrival (TTFT counts from it) */
    bool echo;                   /* keep the prompt for eng_gen_prompt_text */
    const char *grammar;         /* GBNF text constraining the output (NULL or "": none); a malformed one
                                    fails eng_gen_start with ENG_ERR_REQUEST on param "grammar" */
    const json_t *json_schema;   /* constrain the output to JSON valid against this schema (docs/grammar.md,
                                    JSON Schema); {"type": "object"} is any object (JSON mode). NULL: none */
    const char *json_schema_param; /* the field errors about the schema name (NULL: "json_schema") */
    eng_tool_choice tool_choice; /* with tools; a chat request only */
    const char *tool_name;       /* ENG_TOOLS_NAMED: the function (must be one of tools) */
    bool parallel_tool_calls;    /* constrained calls: more than one allowed */
    eng_think think;             /* reasoning on or off (the template's enable_thinking), or its default */
} eng_gen_request;

typedef struct eng_gen eng_gen;

typedef enum eng_cache_use { ENG_CACHE_BYPASS = 0, ENG_CACHE_MISS, ENG_CACHE_HIT } eng_cache_use;
const char *eng_cache_use_name(eng_cache_use u); /* "bypass", "miss", "hit" */

/* False when the request cannot start (e says why). */
bool eng_gen_start(eng_service *s, const eng_gen_request *q, eng_gen **out, eng_error *e);

typedef struct eng_gen_info {
    const char *model_id;  /* the file's id (registry-owned, valid while the eng_gen lives) */
    /* a chat answer to parse (kiln/chat.h) into content, reasoning and tool calls: parse is false when
     * the raw text is the answer (no tools in play and no reasoning to split) */
    bool parse;
    int syntax;            /* a chat_syntax */
    bool tools;            /* parse tool calls */
    bool reasoning;        /* split reasoning out */
    bool in_reasoning;     /* the prompt opened a reasoning block */
    eng_cache_use cache;
    double load_s;         /* seconds from the start to the model being ready (0 on a hit) */
    size_t n_prompt;       /* prompt tokens */
} eng_gen_info;
const eng_gen_info *eng_gen_get_info(const eng_gen *g);

typedef enum eng_read_status { ENG_READ_NONE = 0, ENG_READ_DATA, ENG_READ_DONE } eng_read_status;
/* Takes what is ready, without waiting: DATA with a piece of the answer
 * (text whose UTF-8 characters are whole, and its tokens' events when
 * logprobs were asked for; both valid until the next call), NONE when
 * nothing is ready yet (wait on eng_gen_fd), DONE once everything was
 * taken (*res filled). */
eng_read_status eng_gen_read(eng_gen *g, const char **text, size_t *len, const eng_tok_event **ev, size_t *n_ev,
                             eng_req_result *res);
/* Readable when eng_gen_read has something or the request finished. */
int eng_gen_fd(const eng_gen *g);
/* Waits up to timeout_ms (< 0: forever) for eng_gen_fd. */
void eng_gen_wait(eng_gen *g, int timeout_ms);
/* Asks the engine to stop (the client left): nothing is stored. */
void eng_gen_cancel(eng_gen *g);
/* Frees the request (cancelling it if it runs; storing a finished miss).
 * Accepts NULL. */
void eng_gen_close(eng_gen *g);
/* A token's text with the request's vocabulary (borrowed). */
const char *eng_gen_token_piece(const eng_gen *g, int32_t id, size_t *len);
/* The request's prompt as text (echo): the text it was given, or its
 * token ids decoded. Malloc'd (the caller frees); *len 0 on failure. */
char *eng_gen_prompt_text(const eng_gen *g, size_t *len);

/* Renders and tokenizes a request exactly as eng_gen_start would (template,
 * tools, reasoning switch), without generating or loading the weights:
 * *n is its prompt's length in tokens. */
bool eng_service_count_tokens(eng_service *s, const eng_gen_request *q, size_t *n, eng_error *e);

/* Loads a model (and refreshes its keep-alive) without generating:
 * Ollama's empty generate request. *model_id is registry-owned. */
bool eng_service_load(eng_service *s, const char *model, double keep_alive_s, const char **model_id, eng_error *e);

/* ---- embeddings ----------------------------------------------------------- */

typedef struct eng_embed_request {
    const char *model;
    const char *const *texts;      /* n texts, or */
    const int32_t *const *tokens;  /* n token-id inputs */
    const size_t *lens;            /* [n] bytes or tokens */
    size_t n;
    bool truncate;                 /* cut inputs longer than the context (else an error) */
    bool cache;
    double keep_alive_s;           /* NAN: the default */
} eng_embed_request;

typedef struct eng_embed eng_embed;

/* Looks every input up in the embedding cache (before any load), then
 * tokenizes and submits the misses as one engine request. */
bool eng_embed_start(eng_service *s, const eng_embed_request *q, eng_embed **out, eng_error *e);
/* Readable when the vectors are ready. */
int eng_embed_fd(const eng_embed *h);
/* True once finished (without waiting). */
bool eng_embed_ready(eng_embed *h);
typedef struct eng_embed_result {
    const char *model_id;
    const float *vecs;     /* n x n_embd, in input order (owned by the eng_embed) */
    int n_embd;
    size_t n;
    size_t n_tokens;       /* tokens of every input (cached ones included) */
    size_t n_hit;          /* inputs served from the cache */
    eng_cache_use cache;   /* bypass, miss (some computed) or hit (all cached) */
    double load_s;
} eng_embed_result;
/* After eng_embed_ready: the vectors (stored in the cache), or e. */
bool eng_embed_result_get(eng_embed *h, eng_embed_result *res, eng_error *e);
void eng_embed_cancel(eng_embed *h);
void eng_embed_close(eng_embed *h); /* accepts NULL */

/* ---- tokens, models -------------------------------------------------------- */

/* Tokenizes with a model's vocabulary (its front: the weights are not
 * loaded). *ids malloc'd. */
bool eng_service_tokenize(eng_service *s, const char *model, const char *text, size_t len, bool add_special,
                          int32_t **ids, size_t *n, eng_error *e);
/* Detokenizes ids (each checked against the vocabulary: param names the
 * first bad one, as "<param>[i]"). *text malloc'd. */
bool eng_service_detokenize(eng_service *s, const char *model, const int64_t *ids, size_t n, const char *param,
                            char **text, size_t *len, eng_error *e);

/* A loaded model as /api/ps, /health and the gauges show it. */
typedef struct eng_model_status {
    const rt_loaded_info *li;  /* li->m: names, digest, context, load time */
    int slots_total, slots_busy, running, waiting, n_ctx;
    uint64_t kv_bytes;         /* the KV pool */
    int64_t kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_blocks_logical;
    uint64_t block_bytes;
    int block_tokens;
} eng_model_status;
void eng_service_foreach_loaded(eng_service *s, void (*fn)(void *arg, const eng_model_status *st), void *arg);

#endif
