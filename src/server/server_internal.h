/*
 * server_internal.h — what server.c (HTTP glue, simple routes) and gen.c
 * (generation and embedding routes) share. Not part of the module's API.
 */
#ifndef KILN_SERVER_INTERNAL_H
#define KILN_SERVER_INTERNAL_H

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

typedef enum MHD_Result (*srv_handler)(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

enum MHD_Result srv_h_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_completions(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_embeddings(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_generate(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);
enum MHD_Result srv_h_ollama_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx);

/* Responses: body is malloc'd and taken over. */
enum MHD_Result srv_send_body(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len);
enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j); /* takes j */
enum MHD_Result srv_send_error(struct MHD_Connection *c, const srv_error *e, bool ollama);
/* The peer closed its side (checked without blocking). */
bool srv_client_gone(struct MHD_Connection *c);
void srv_iso_time(time_t t, char *buf, size_t cap);
bool srv_acquire_model(srv_server *s, const char *name, const rt_acquire_opts *ao, rt_model **out, srv_error *e);

#endif
