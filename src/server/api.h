/*
 * api.h — the request layer shared by the dialects: JSON bodies, field
 * readers with strict validation, the request limits, and the HTTP error.
 * Each API dialect (OpenAI, Ollama, ...) is a table of callbacks in its own
 * file (dialect.h); this header is what they have in common.
 *
 * Owns: nothing global. A parsed request borrows strings from the JSON
 * document it came from (keep the root alive while using it) and owns the
 * arrays it built (free with srv_gen_req_free / srv_embed_req_free).
 *
 * Validation is strict: a field of the wrong type is an error naming the
 * field (param), an unsupported value is an error saying what is supported,
 * and nothing is silently dropped or truncated. Unknown fields are ignored,
 * as the OpenAI and Ollama servers do.
 */
#ifndef KILN_SERVER_API_H
#define KILN_SERVER_API_H

#include "kiln/engine.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
/* An engine error as an HTTP one: request 400, not found 404, busy 503,
 * internal 500, gone 499. Returns false. */
bool srv_err_engine(srv_error *e, const eng_error *ee);

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

/* A generation request as a dialect parsed it: the canonical request and
 * what the dialect itself needs to answer. */
typedef struct srv_gen_req {
    eng_gen_request q;         /* its arrays point into the fields below or the JSON */
    const char *stops[ENG_STOP_MAX];
    json_t *messages;          /* chat: a new array of {role, content} with content as text (owned) */
    int32_t *prompt_tokens;    /* a prompt given as token ids (owned) */
    eng_logit_bias *bias;      /* owned */
    json_t *tools;             /* tools a dialect built (owned; q.tools points here or into the body) */
    json_t *schema;            /* a JSON schema a dialect built (owned; q.json_schema points here or into the body) */
    bool stream;
    bool include_usage;        /* OpenAI stream_options.include_usage */
    bool echo;                 /* OpenAI completions: prompt text first */
    bool load_only;            /* Ollama: an empty generate prompt only loads the model */
} srv_gen_req;

/* OpenAI chat's tool_choice: "auto" | "none" | "required" |
 * {"type": "function", "function": {"name": N}} into r->q.tool_choice and
 * tool_name (borrowed from root). */
bool srv_get_tool_choice(json_t *root, srv_gen_req *r, srv_error *e);

/* Defaults of every dialect (sampler defaults, no limit, cache on, ...). */
void srv_gen_req_init(srv_gen_req *r);
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
void srv_embed_req_free(srv_embed_req *r);

/* Parses a JSON body that must be an object; a syntax error becomes a 400
 * naming line and column, nesting deeper than max_depth a 400 (checked by a
 * bracket count before jansson sees the bytes). */
json_t *srv_parse_json(const char *body, size_t len, int max_depth, srv_error *e);

/* A JSON string of bytes that may not be valid UTF-8 (invalid bytes become
 * U+FFFD). NULL on OOM. */
json_t *srv_json_text(const char *s, size_t n);

/* ---- field readers for the dialects ----------------------------------------
 * Each returns false with e set on a type or range error; absent fields (or
 * JSON null) leave the destination unchanged. param names the field in
 * messages. */
bool srv_get_num(json_t *o, const char *key, const char *param, double lo, double hi, double *out, bool *set,
                 srv_error *e);
bool srv_get_int(json_t *o, const char *key, const char *param, long long lo, long long hi, long long *out, bool *set,
                 srv_error *e);
bool srv_get_bool(json_t *o, const char *key, const char *param, bool *out, srv_error *e);
bool srv_get_str(json_t *o, const char *key, const char *param, const char **out, size_t *len, srv_error *e);
/* The sampler fields every dialect shares (temperature, top_p, min_p,
 * typical_p, penalties, top_k, repeat_last_n, seed, stop); o is the body or
 * an options object, prefix names it in messages ("" or "options."). */
bool srv_get_sampler_fields(json_t *o, const char *prefix, const srv_limits *lim, srv_gen_req *r, srv_error *e);
/* ignore_eos and speculative decoding ("speculative", "speculative.n_max"). */
bool srv_get_engine_fields(json_t *o, const char *prefix, srv_gen_req *r, srv_error *e);
/* OpenAI's logit_bias object. */
bool srv_get_logit_bias(json_t *root, int limit, srv_gen_req *r, srv_error *e);
/* How a dialect's chat messages may look. */
typedef struct srv_msg_rules {
    bool text_parts;      /* content may be an array of {"type": "text", "text": ...} parts */
    bool empty_assistant; /* an assistant message may have no content */
    bool no_images;       /* a per-message "images" field is refused (text models) */
} srv_msg_rules;
/* Chat messages normalized into r->messages, a new array of {role,
 * content[, tool_calls, name, tool_call_id]} with text content, and
 * "tools" into r->q.tools. */
bool srv_get_messages(json_t *root, const srv_msg_rules *rules, int limit, srv_gen_req *r, srv_error *e);
/* An embedding request's "input": a string, a list of strings, or (with
 * token_ids) a list of token ids or of such lists. */
bool srv_get_embed_input(json_t *root, const srv_limits *lim, bool token_ids, srv_embed_req *r, srv_error *e);
/* Ollama's keep_alive: a duration string ("5m", "300s", "1h30m", "-1") or a
 * number of seconds; negative means forever. NAN when absent or null. */
bool srv_parse_keep_alive(json_t *root, double *out, srv_error *e);

#endif
