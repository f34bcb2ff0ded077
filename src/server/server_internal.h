/*
 * server_internal.h — what the server's files share (private to
 * src/server):
 *
 *   server.c     libmicrohttpd glue: connections, the route table, auth,
 *                body limits, responses, lifecycle and drain
 *   routes.c     the simple routes: health, models, tokenize, detokenize,
 *                metrics
 *   gen.c        the generation and embedding routes, for every dialect
 *   openai.c     the OpenAI dialect; ollama.c the Ollama dialect with its
 *                model routes (tags, ps, show, version); anthropic.c the
 *                Anthropic Messages dialect with count_tokens (dialect.h)
 *   responses.c  the OpenAI Responses dialect and its store (dialect.h)
 *   cache_routes.c  /cache/stats and /cache/clear
 *   api.c        request parsing shared by the dialects (api.h)
 *   config.c     the settings (kiln/server.h)
 */
#ifndef KILN_SERVER_INTERNAL_H
#define KILN_SERVER_INTERNAL_H

#include "kiln/cache.h"
#include "kiln/engine.h"
#include "kiln/metrics.h"
#include "api.h"
#include "kiln/server.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <time.h>

enum { SRV_LOADING = 0, SRV_READY, SRV_DRAINING };

/* The server's own metric families (see docs/server.md, Metrics); the
 * engine and the registry register theirs on the same registry. */
typedef struct srv_obs {
    met_registry *reg;
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
    eng_service *svc;      /* the generation service (owns the model registry) */
    rt_registry *reg;      /* the service's registry, for listings */
    srv_obs obs;
    struct MHD_Daemon *d;
    const char *api_key;
    int64_t max_body;
    atomic_int state;
    atomic_int in_flight;  /* requests dispatched and not yet answered */
    atomic_ullong seq;     /* request ids */
    rc_cache *cache;       /* the response and embedding cache (NULL: both off) */
    srv_limits lim;        /* the request limits of the config */
    struct srv_resp_store *responses; /* the Responses store (responses.c) */
};

/* An error body in a dialect's shape. */
typedef json_t *(*srv_error_fn)(const srv_error *e);
json_t *srv_openai_error_json(const srv_error *e); /* {"error": {"message", "type", "param", "code"}} */
json_t *srv_ollama_error_json(const srv_error *e); /* {"error": "..."} */
json_t *srv_anthropic_error_json(const srv_error *e); /* {"type": "error", "error": {"type", "message"}} */

struct route;
typedef struct conn_ctx {
    const struct route *route;
    double t0;            /* arrival */
    const char *model;    /* the model that served it (registry-owned name), for metrics */
    kn_buf body;  /* the request body (bounded by max_body) */
    bool too_large;
    bool done;    /* a response was queued */
    bool counted; /* in in_flight */
    uint64_t declared;  /* Content-Length when over the limit (0: not declared) */
    uint64_t discarded; /* body bytes read and dropped because the body is over the limit */
    char arg[128];      /* the last path segment of a route whose path ends with '/' (e.g. an id) */
} conn_ctx;

typedef enum MHD_Result (*srv_handler)(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

typedef struct route {
    const char *method;
    const char *path;   /* a path ending with '/' takes one more segment (conn_ctx.arg) */
    srv_handler fn;
    bool open;                      /* no API key needed */
    srv_error_fn error_json;        /* the error shape of the route */
    bool body;                      /* reads a JSON body: generation-type work */
    const void *dialect;            /* gen/embed routes: their dialect (dialect.h) */
} route;

/* Queues r on c with the server's CORS headers (when the request's Origin
 * is allowed). Every response goes through here. */
enum MHD_Result srv_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r);
/* The connection's idle timeout while the server writes an answer: the
 * send timeout (reset from now). Called when an answer is ready to go. */
void srv_sending(struct MHD_Connection *c);
/* No idle timeout while the server works on the answer (the client is
 * waiting, not idle). */
void srv_working(struct MHD_Connection *c);
/* The connection's socket (-1 when unknown). */
int srv_socket(struct MHD_Connection *c);
/* Waits until fd is readable (true) or the client closed its side of the
 * connection (false); no timer: both wake it. */
bool srv_wait(struct MHD_Connection *c, int fd);

/* Responses: body is malloc'd and taken over. hdrs: NULL, or name/value
 * pairs ending with a NULL name. */
enum MHD_Result srv_send_body(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len);
enum MHD_Result srv_send_body_h(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len,
                                const char *const *hdrs);
enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j); /* takes j */
enum MHD_Result srv_send_json_h(struct MHD_Connection *c, int status, json_t *j, const char *const *hdrs);
/* An error in the route's shape (cx may be NULL: the OpenAI shape). */
enum MHD_Result srv_send_error(struct MHD_Connection *c, const conn_ctx *cx, const srv_error *e);
enum MHD_Result srv_send_error_as(struct MHD_Connection *c, srv_error_fn shape, const srv_error *e);
void srv_iso_time(time_t t, char *buf, size_t cap);

/* The request's Cache-Control says no-cache or no-store. */
bool srv_cache_opt_out(struct MHD_Connection *c);

/* Route handlers. */
enum MHD_Result srv_h_generate(srv_server *s, struct MHD_Connection *c, conn_ctx *cx); /* gen.c */
enum MHD_Result srv_h_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);    /* gen.c */
enum MHD_Result srv_h_health(srv_server *s, struct MHD_Connection *c, conn_ctx *cx); /* routes.c */
enum MHD_Result srv_h_metrics(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_v1_models(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
/* ollama.c */
enum MHD_Result srv_h_api_tags(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_api_ps(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_api_show(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_api_version(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_anthropic_count_tokens(srv_server *s, struct MHD_Connection *c, conn_ctx *cx); /* anthropic.c */
/* routes.c */
enum MHD_Result srv_h_tokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_detokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_cache_stats(srv_server *s, struct MHD_Connection *c, conn_ctx *cx); /* cache_routes.c */
enum MHD_Result srv_h_cache_clear(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
/* responses.c: GET and DELETE /v1/responses/{id} */
enum MHD_Result srv_h_response_get(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_response_delete(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

/* Running and waiting requests of every loaded model (routes.c). */
void srv_count_requests(srv_server *s, int *running, int *waiting);

#endif
