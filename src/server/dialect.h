/*
 * dialect.h — an API dialect as a table of callbacks (private to
 * src/server). A dialect parses its request body into the canonical
 * request of the generation session (kiln/engine.h) and formats the
 * session's events back: the pieces of a stream, its end, a whole answer
 * and its errors. gen.c runs every dialect the same way, so adding one
 * (Anthropic Messages, OpenAI Responses, ...) is one new file with its
 * tables plus its routes in server.c.
 *
 *   openai.c   /v1/chat/completions, /v1/completions, /v1/embeddings
 *   ollama.c   /api/generate, /api/chat, /api/embed
 *   llama.c    /completion (llama-server's native route)
 *   anthropic.c  /v1/messages, /v1/messages/count_tokens
 *   responses.c /v1/responses (OpenAI Responses), with its store
 *
 * Chat answers: when the session says an answer is to be parsed
 * (eng_gen_info.parse: tools in play, or a template that reasons), gen.c
 * runs the model's chat parser (kiln/chat.h) over the text and a chat
 * dialect gets content, reasoning and tool calls as events
 * (stream_event) and, for a whole answer, in j->content, j->reasoning and
 * j->calls. Without a parser, every piece is one content event.
 */
#ifndef KILN_SERVER_DIALECT_H
#define KILN_SERVER_DIALECT_H

#include "kiln/chat.h"
#include "server_internal.h"

typedef struct srv_job srv_job;

/* A generation dialect. */
typedef struct srv_gen_dialect {
    const char *name;
    srv_error_fn error_json;   /* the shape of its error bodies */
    bool sse;                  /* a stream is SSE ("data: ...\n\n"); else NDJSON (one JSON per line) */
    const char *stream_type;   /* the stream's Content-Type */
    const char *id_prefix;     /* answer ids: "<prefix>-<time><n>" */
    /* The body into r (srv_gen_req_init was called); false with e. */
    bool (*parse)(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e);
    /* Stream: before the first piece (may be NULL), each piece, the end
     * (j->res is set; an error is in j->res too). They add to j->out with
     * srv_job_emit. */
    void (*stream_start)(srv_job *j);
    void (*stream_piece)(srv_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev);
    void (*stream_end)(srv_job *j);
    /* Whole answer: each piece's token events (the text goes to j->acc),
     * then the answer. */
    void (*collect)(srv_job *j, const eng_tok_event *ev, size_t nev);
    json_t *(*whole)(srv_job *j);
    /* The answer to a load-only request (NULL: the dialect has none). */
    json_t *(*loaded)(srv_job *j, const char *model_id);
    /* After parse, once the job has its id and before the session starts:
     * what needs the server (the Responses store). May set j->dx. NULL:
     * nothing. False with e. */
    bool (*prepare)(srv_job *j, srv_error *e);
    /* Frees j->dx (NULL: the dialect keeps none). */
    void (*release)(srv_job *j);
    /* A chat dialect: the stream as events (content, reasoning, tool calls),
     * called instead of stream_piece; j->ev / j->nev are the token events
     * of the piece being parsed (logprobs). Whole answers get j->content,
     * j->reasoning and j->calls. NULL: a text dialect (stream_piece, j->acc). */
    void (*stream_event)(srv_job *j, const chat_event *ev);
} srv_gen_dialect;

/* An embedding dialect. */
typedef struct srv_embed_dialect {
    const char *name;
    srv_error_fn error_json;
    bool (*parse)(json_t *root, const srv_limits *lim, srv_embed_req *r, srv_error *e);
    json_t *(*answer)(const srv_embed_req *r, const eng_embed_result *res, double t0);
} srv_embed_dialect;

extern const srv_gen_dialect srv_openai_chat, srv_openai_completions, srv_ollama_generate, srv_ollama_chat,
    srv_llama_completion, srv_anthropic_messages, srv_openai_responses;
extern const srv_embed_dialect srv_openai_embeddings, srv_ollama_embed;

/* One generation being answered (gen.c). */
struct srv_job {
    srv_server *s;
    const srv_gen_dialect *d;
    struct MHD_Connection *c;
    json_t *root;           /* the body, which r borrows from */
    srv_gen_req r;
    eng_gen *g;
    const eng_gen_info *info;
    char id[48];
    time_t created;
    double t0;              /* arrival */
    eng_req_result res;     /* set when the answer ended */
    /* a stream's formatted output not yet sent */
    kn_buf out;
    size_t out_off;
    bool started, sent_final;
    /* a whole answer */
    kn_buf acc;             /* its text */
    json_t *lp;             /* the dialect's logprobs so far (owned) */
    size_t text_offset;     /* bytes of text so far (completions logprobs) */
    char *echo_text;        /* the prompt, when echoed */
    size_t echo_len;
    /* --log-prompts */
    bool log_text;
    kn_buf logged;
    /* chat dialects (stream_event) */
    chat_parser *cp;        /* the answer's parser (NULL: its text is its content) */
    const eng_tok_event *ev; /* the token events of the piece being parsed */
    size_t nev;
    kn_buf content, reasoning; /* a whole answer's parts */
    json_t *calls;          /* its tool calls [{"id", "name", "arguments": JSON text}] (NULL: none) */
    int n_calls;            /* tool calls seen (stream and whole) */
    char call_base[32];     /* tool call ids: "<prefix><call_base><index>" */
    /* a stream's content blocks (Anthropic) */
    int blocks;             /* started so far */
    int block_open;         /* the open one's kind (the dialect's own values; 0: none) */
    void *dx;               /* the dialect's own state (d->prepare, d->release) */
};

/* The HTTP error of an answer that ended in an error or was cancelled:
 * 503 when cancelled (code "cancelled") or the engine was busy, else 500. */
void srv_job_error(const srv_job *j, srv_error *e);
/* SSE with an event name ("event: NAME\ndata: JSON\n\n"; Anthropic,
 * Responses). Takes o. */
void srv_job_emit_event(srv_job *j, const char *event, json_t *o);
/* The id of tool call `index` of this answer: prefix + a per-answer random
 * part + index ("call_...", "toolu_..."). */
void srv_tool_call_id(const srv_job *j, const char *prefix, int index, char *out, size_t cap);
/* A fresh random id: prefix + 24 hex characters. */
void srv_new_id(const char *prefix, char *out, size_t cap);

/* The OpenAI Responses store (responses.c): each stored response's
 * conversation and answer by id, bounded in count, bytes and age (the
 * oldest go first), behind a mutex. Created and destroyed with the server. */
typedef struct srv_resp_store srv_resp_store;
/* max_n 0: stores nothing. NULL on OOM. */
srv_resp_store *srv_resp_store_create(int max_n, int64_t max_bytes, int ttl_s);
void srv_resp_store_destroy(srv_resp_store *st);

/* Appends one JSON object (taken) to j->out in the dialect's framing. */
void srv_job_emit(srv_job *j, json_t *o);
/* The request's model id (registry-owned). */
const char *srv_job_model(const srv_job *j);

#endif
