/*
 * server_internal.h — what server.c (HTTP glue, simple routes) and gen.c
 * (generation and embedding routes) share. Not part of the module's API.
 */
#ifndef KILN_SERVER_INTERNAL_H
#define KILN_SERVER_INTERNAL_H

#include "../cache/cache.h"
#include "../metrics/metrics.h"
#include "api.h"
#include "server.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <time.h>

enum { SRV_LOADING = 0, SRV_READY, SRV_DRAINING };

/* The server's metric families (see docs/server.md, Metrics). */
typedef struct srv_obs {
    met_registry *reg;
    rt_metrics rt;                 /* per-model families the registry and engine fill */
    met_family *requests;          /* kiln_requests_total{endpoint,status} */
    met_family *duration;          /* kiln_request_duration_seconds{model,endpoint} */
    met_family *running, *waiting; /* gauges {model} */
    met_family *kv_used, *kv_total, *model_bytes;
    met_family *kv_cached, *kv_used_bytes, *kv_logical_bytes;
    met_window *e2e_window;        /* successful generation requests, end to end */
    double window_s, sla_p95_s;
} srv_obs;

struct srv_server {
    const srv_config *cfg; /* borrowed from the caller for the server's life */
    rt_registry *reg;
    srv_obs obs;
    struct MHD_Daemon *d;
    const char *api_key;
    int64_t max_body;
    const char *default_model;
    atomic_int state;
    atomic_int in_flight;  /* requests dispatched and not yet answered */
    atomic_ullong seq;     /* request ids and default seeds */
    rc_cache *cache;       /* the response and embedding cache (NULL: both off) */
    int ops_level;         /* the kernel set (kn_cpu_level) and VNNI: part of the cache keys */
    bool ops_vnni;
    eng_spec_mode spec_default; /* --spec, parsed */
    srv_limits lim;        /* the request limits of the config */
};

struct route;
typedef struct conn_ctx {
    const struct route *route;
    double t0;            /* arrival */
    const char *model;    /* the model that served it (registry-owned name), for metrics */
    kn_buf body;  /* the request body (bounded by max_body) */
    bool too_large;
    bool done;    /* a response was queued */
    bool counted; /* in in_flight */
} conn_ctx;

/* Queues r on c with the server's CORS headers (when the request's Origin
 * is allowed). Every response goes through here. */
enum MHD_Result srv_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r);
/* The connection's idle timeout while the server writes an answer: the
 * send timeout (reset from now). Called when an answer is ready to go. */
void srv_sending(struct MHD_Connection *c);
/* No idle timeout while the server works on the answer (the client is
 * waiting, not idle). */
void srv_working(struct MHD_Connection *c);

typedef enum MHD_Result (*srv_handler)(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

enum MHD_Result srv_h_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_completions(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_embeddings(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_generate(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

/* Responses: body is malloc'd and taken over. hdrs: NULL, or name/value
 * pairs ending with a NULL name. */
enum MHD_Result srv_send_body(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len);
enum MHD_Result srv_send_body_h(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len,
                                const char *const *hdrs);
enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j); /* takes j */
enum MHD_Result srv_send_json_h(struct MHD_Connection *c, int status, json_t *j, const char *const *hdrs);
enum MHD_Result srv_send_error(struct MHD_Connection *c, const srv_error *e, bool ollama);
/* The peer closed its side (checked without blocking). */
bool srv_client_gone(struct MHD_Connection *c);
void srv_iso_time(time_t t, char *buf, size_t cap);
bool srv_acquire_model(srv_server *s, const char *name, const rt_acquire_opts *ao, rt_model **out, srv_error *e);

/* ---- the response and embedding cache (respcache.c) ---- */

/* X-Cache values. */
#define SRV_XC_BYPASS "bypass"
#define SRV_XC_MISS "miss"
#define SRV_XC_HIT "hit"

/* The request's Cache-Control says no-cache or no-store. */
bool srv_cache_opt_out(struct MHD_Connection *c);
/* Whether a generation may be served from and stored in the cache:
 * the cache is on, the request did not opt out, and it is deterministic
 * (greedy, or sampled with a seed). */
bool srv_gen_cacheable(const srv_server *s, const rt_model *m, const srv_gen_req *q, struct MHD_Connection *c);
/* The key of a generation (see respcache.c for what it covers). */
rc_key srv_gen_key(const srv_server *s, const rt_model *m, const srv_gen_req *q, const int32_t *ids, size_t n_ids,
                   const eng_gen_params *gp, int ctx);
bool srv_embed_cacheable(const srv_server *s, const rt_model *m, const srv_embed_req *q, struct MHD_Connection *c);
rc_key srv_embed_key(const srv_server *s, const rt_model *m, const srv_embed_req *q, size_t i, bool normalize);

/* A generation's answer as it is produced: the chunks of text (and token
 * events when with_events) in the order the client got them. */
typedef struct srv_rec {
    kn_buf text, chunks, events;
    uint32_t n_chunks;
    bool with_events;
    bool failed; /* out of memory: not stored */
} srv_rec;
void srv_rec_chunk(srv_rec *r, const char *text, size_t n, const eng_tok_event *ev, size_t nev);
/* The serialized record (malloc'd, *len bytes), or NULL. */
void *srv_rec_finish(srv_rec *r, const eng_req_result *res, size_t *len);
void srv_rec_free(srv_rec *r);

/* A parsed record (pointers into the value) and a cursor over its chunks. */
typedef struct srv_rec_view {
    uint8_t finish;
    bool with_events;
    uint32_t n_prompt, n_gen, n_chunks;
    const uint8_t *chunks, *events;
    size_t chunks_len, events_len;
    const char *text;
    size_t text_len;
    uint32_t i;
    size_t chunk_off, text_off, ev_off;
} srv_rec_view;
/* False when the value is not a well-formed record with at most max_ev
 * events per chunk. */
bool srv_rec_parse(const void *val, size_t len, size_t max_ev, srv_rec_view *v);
/* The next chunk's text and events (ev holds max_ev); false at the end or
 * on damaged events. */
bool srv_rec_next(srv_rec_view *v, const char **text, size_t *n, eng_tok_event *ev, size_t *nev);

/* An embedding's cached value (malloc'd) and its parse. */
void *srv_emb_value(const float *v, int n_embd, size_t n_tok, size_t *len);
bool srv_emb_parse(const void *val, size_t len, int n_embd, const float **v, size_t *n_tok);

enum MHD_Result srv_h_cache_stats(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_cache_clear(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

#endif
