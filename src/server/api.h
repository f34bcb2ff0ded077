/*
 * api.h — the request layer: JSON bodies of the OpenAI and Ollama routes
 * turned into validated requests, and the error shape of each API.
 *
 * Owns: nothing global. A parsed request borrows strings from the JSON
 * document it came from (keep the root alive while using it) and owns the
 * arrays it built (free with srv_*_req_free).
 *
 * Validation is strict: a field of the wrong type is an error naming the
 * field (param), an unsupported value is an error saying what is supported,
 * and nothing is silently dropped or truncated. Unknown fields are ignored,
 * as the OpenAI and Ollama servers do.
 */
#ifndef KILN_SERVER_API_H
#define KILN_SERVER_API_H

#include "../engine/sampler.h"
#include "../engine/sched.h"
#include "../engine/stop.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum srv_api {
    SRV_API_OPENAI_CHAT = 0,
    SRV_API_OPENAI_COMPLETION,
    SRV_API_OLLAMA_GENERATE,
    SRV_API_OLLAMA_CHAT,
} srv_api;

/* An HTTP error: status plus the OpenAI error fields. */
typedef struct srv_error {
    int status;      /* 400, 401, 404, 405, 413, 500, 503 */
    char type[40];   /* invalid_request_error, authentication_error, not_found_error, ... */
    char param[96];  /* the offending field, "" when none */
    char code[48];   /* a machine-readable slug, "" when none */
    char msg[640];
} srv_error;

/* Fills e and returns false (so that `return srv_err(...)` reads well). */
bool srv_err(srv_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* What one request may ask for. Every breach is a 400 (code
 * "limit_exceeded") naming the field, the count, the limit and the kiln
 * serve flag that sets it. */
typedef struct srv_limits {
    int json_depth;   /* nesting of arrays and objects in the body (--limit-json-depth) */
    int messages;     /* chat messages (--limit-messages) */
    int max_tokens;   /* max_tokens / max_completion_tokens / options.num_predict (--limit-max-tokens) */
    int embed_inputs; /* embedding inputs (--limit-embed-inputs; at most ENG_MAX_EMBED_INPUTS) */
    int stops;        /* stop strings (--limit-stops; at most ENG_STOP_MAX) */
    int logit_bias;   /* logit_bias entries (--limit-logit-bias) */
} srv_limits;

/* The defaults of kiln serve: depth 64, 1024 messages, 32768 tokens, 2048
 * inputs, 16 stops, 1024 logit_bias entries. */
srv_limits srv_limits_default(void);

typedef struct srv_gen_req {
    srv_api api;
    const char *model;          /* NULL when absent */
    json_t *messages;           /* chat: a new array of {role, content} with content as text (owned) */
    json_t *tools;              /* chat: borrowed, may be NULL */
    const char *prompt;         /* completion/generate text, NULL when prompt_tokens is used */
    size_t prompt_len;
    int32_t *prompt_tokens;     /* completion prompt given as token ids (owned) */
    size_t n_prompt_tokens;
    const char *system;         /* ollama generate: system prompt */
    bool raw;                   /* ollama generate: no template */
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    bool echo;                  /* completions: prompt text first */
    eng_sampler_params sp;
    bool seed_set;
    eng_logit_bias *bias;       /* owned */
    int32_t n_predict;          /* -1: until the context is full (or the server's default) */
    bool n_predict_set;
    bool ignore_eos;
    eng_spec_mode spec;         /* "speculative"; ENG_SPEC_DEFAULT when absent */
    int spec_max;               /* "speculative.n_max"; 0 when absent */
    const char *stops[ENG_STOP_MAX];
    size_t n_stops;
    int n_logprobs;             /* -1: none */
    int num_ctx;                /* ollama options.num_ctx, 0 when absent */
    double keep_alive_s;        /* ollama keep_alive: NAN when absent, < 0 forever, 0 unload after */
    bool add_special;           /* completions: add BOS (default true) */
    bool cache;                 /* "cache": false opts out of the response cache (default true) */
} srv_gen_req;

/* Parses and validates a generation body within lim. On failure e says why
 * (status 400). */
bool srv_parse_gen(srv_api api, json_t *root, const srv_limits *lim, srv_gen_req *out, srv_error *e);
void srv_gen_req_free(srv_gen_req *r);

typedef struct srv_embed_req {
    const char *model;
    const char **texts;   /* owned array of borrowed strings */
    size_t *lens;
    size_t n;
    int32_t **token_inputs; /* OpenAI input given as token id lists (owned), NULL otherwise */
    bool base64;          /* encoding_format base64 */
    double keep_alive_s;  /* ollama keep_alive (NAN when absent) */
    bool truncate;
    bool cache;           /* "cache": false opts out of the embedding cache (default true) */
} srv_embed_req;

/* ollama: /api/embed ("input"), else /v1/embeddings ("input"). */
bool srv_parse_embed(bool ollama, json_t *root, const srv_limits *lim, srv_embed_req *out, srv_error *e);
void srv_embed_req_free(srv_embed_req *r);

/* Ollama's keep_alive: a duration string ("5m", "300s", "1h30m", "-1") or a
 * number of seconds; negative means forever. NAN when absent or null. */
bool srv_parse_keep_alive(json_t *root, double *out, srv_error *e);

/* Parses a JSON body that must be an object; a syntax error becomes a 400
 * naming line and column, nesting deeper than max_depth a 400 (checked by a
 * bracket count before jansson sees the bytes). */
json_t *srv_parse_json(const char *body, size_t len, int max_depth, srv_error *e);

/* Error bodies: OpenAI's {"error": {...}} or Ollama's {"error": "..."}. */
json_t *srv_error_json(const srv_error *e, bool ollama_shape);

/* Length of the longest prefix of s[0..n) that does not end inside an
 * incomplete UTF-8 sequence (the tail is held back for the next piece). */
size_t srv_utf8_complete(const char *s, size_t n);
/* A JSON string of bytes that may not be valid UTF-8 (invalid bytes become
 * U+FFFD). NULL on OOM. */
json_t *srv_json_text(const char *s, size_t n);

#endif
