/*
 * server.h — the HTTP server (libmicrohttpd): routes, auth, body limits,
 * SSE/NDJSON streaming and graceful shutdown, over the generation service
 * (engine/session.h), which owns the model registry.
 *
 * Owns: the MHD daemon, the generation service, the response and embedding
 * cache and the metrics (GET
 * /metrics, Prometheus text; rolling TTFT and end-to-end percentiles with an
 * SLA verdict in /health). Connections are served
 * one thread each (MHD thread-per-connection), so parsing, templating and
 * tokenizing on one connection never hold up another, and a streaming
 * response can wait for tokens without blocking anyone; generation itself
 * runs on each model's engine thread (engine/sched.h).
 *
 * Lifecycle: srv_create -> srv_start (listening; /health says "loading"
 * until srv_set_ready) -> srv_drain (stop accepting, let requests finish
 * within the grace period, then cancel the rest) -> srv_destroy.
 */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H

#include "../core/kn.h"
#include "../runtime/registry.h"
#include "config.h"

typedef struct srv_server srv_server;

/* Creates the metrics and the model registry (over cfg's model directory or
 * file, with ro's engine settings; ro->metrics is filled in by the server).
 * cfg and ops are borrowed for the server's life. */
kn_status srv_create(const srv_config *cfg, const rt_opts *ro, const struct tensor_ops *ops, srv_server **out,
                     kn_err *err);
/* The registry the server owns. */
rt_registry *srv_registry(srv_server *s);
/* Binds and starts serving. *port gets the bound port (useful with port 0). */
kn_status srv_start(srv_server *s, int *port, kn_err *err);
/* /health turns 200. */
void srv_set_ready(srv_server *s);
/* Graceful shutdown: stops accepting, waits up to grace_s for requests in
 * flight, cancels whatever is left, and stops the HTTP threads. Logs each
 * step. */
void srv_drain(srv_server *s, int grace_s);
void srv_destroy(srv_server *s); /* unloads the models; accepts NULL */

/* The model the server answers with when a request names none (may be NULL). */
const char *srv_default_model(const srv_server *s);

#endif
