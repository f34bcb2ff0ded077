/*
 * server.c — libmicrohttpd glue: connections, the route table, auth, body
 * limits, responses, lifecycle and shutdown (see kiln/server.h). The simple
 * routes are in routes.c, generation and embeddings in gen.c with a
 * dialect file per API (dialect.h).
 */
#include "dialect.h"

#include <math.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- responses ------------------------------------------------------------- */

/* The server a connection belongs to (set when MHD accepts it). */
static srv_server *conn_server(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The kernel send buffer of each connection: bounded (no autotuning up to
 * tcp_wmem's maximum), so that an answer a client does not read stalls the
 * sender soon and the send timeout applies. Linux doubles the value. */
#define SRV_SEND_BUFFER (256 * 1024)

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    if (toe != MHD_CONNECTION_NOTIFY_STARTED) return;
    *socket_context = cls;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int sz = SRV_SEND_BUFFER;
    if (ci) (void)setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

/* The allowed origin to echo for this request, or NULL (CORS off, no
 * Origin header, or an origin not in the list). */
static const char *cors_allowed(const srv_server *s, struct MHD_Connection *c) {
    if (!s || !s->cfg->cors_origin) return NULL;
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!o) return NULL;
    if (!strcmp(s->cfg->cors_origin, "*")) return "*";
    const char *cur = s->cfg->cors_origin, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len))
        if (strlen(o) == len && !strncasecmp(o, it, len)) return o;
    return NULL;
}

enum MHD_Result srv_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r) {
    srv_server *s = conn_server(c);
    const char *origin = cors_allowed(s, c);
    if (origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
        if (strcmp(origin, "*")) MHD_add_response_header(r, "Vary", "Origin");
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Cache, X-Cache-Hits, Server-Timing, Retry-After");
    }
    return MHD_queue_response(c, status, r);
}

void srv_sending(struct MHD_Connection *c) {
    srv_server *s = conn_server(c);
    /* from 0 to a timeout restarts MHD's timer: the answer has send-timeout
     * seconds to make progress from now */
    if (s) MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg->send_timeout_s);
}

void srv_working(struct MHD_Connection *c) { MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u); }

enum MHD_Result srv_send_body_h(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len,
                                const char *const *hdrs) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    for (size_t i = 0; hdrs && hdrs[i]; i += 2) MHD_add_response_header(r, hdrs[i], hdrs[i + 1]);
    enum MHD_Result ret = srv_queue(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_send_body(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len) {
    return srv_send_body_h(c, status, ctype, body, len, NULL);
}

enum MHD_Result srv_send_json_h(struct MHD_Connection *c, int status, json_t *j, const char *const *hdrs) {
    if (!j) return srv_send_body(c, 500, "application/json", strdup("{\"error\":\"out of memory\"}"), 25);
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!s) return MHD_NO;
    return srv_send_body_h(c, status, "application/json", s, strlen(s), hdrs);
}

enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j) {
    return srv_send_json_h(c, status, j, NULL);
}

enum MHD_Result srv_send_error_as(struct MHD_Connection *c, srv_error_fn shape, const srv_error *e) {
    json_t *j = (shape ? shape : srv_openai_error_json)(e);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (e->status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (e->status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = srv_queue(c, (unsigned)e->status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_send_error(struct MHD_Connection *c, const conn_ctx *cx, const srv_error *e) {
    return srv_send_error_as(c, cx && cx->route ? cx->route->error_json : NULL, e);
}

int srv_socket(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

bool srv_wait(struct MHD_Connection *c, int fd) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = srv_socket(c), .events = POLLRDHUP}};
    for (;;) {
        int n = poll(p, p[1].fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (p[1].fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) return false;
        if (p[0].revents) return true;
    }
}

void srv_iso_time(time_t t, char *buf, size_t cap) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- routing ------------------------------------------------------------------ */

static const route ROUTES[] = {
    {"GET", "/health", srv_h_health, true, NULL, false, NULL},
    {"GET", "/metrics", srv_h_metrics, false, NULL, false, NULL},
    {"GET", "/v1/models", srv_h_v1_models, false, NULL, false, NULL},
    {"POST", "/v1/chat/completions", srv_h_generate, false, srv_openai_error_json, true, &srv_openai_chat},
    {"POST", "/v1/completions", srv_h_generate, false, srv_openai_error_json, true, &srv_openai_completions},
    {"POST", "/completion", srv_h_generate, false, srv_openai_error_json, true, &srv_llama_completion},
    {"POST", "/v1/responses", srv_h_generate, false, srv_openai_error_json, true, &srv_openai_responses},
    {"GET", "/v1/responses/", srv_h_response_get, false, srv_openai_error_json, false, NULL},
    {"DELETE", "/v1/responses/", srv_h_response_delete, false, srv_openai_error_json, false, NULL},
    {"POST", "/v1/embeddings", srv_h_embed, false, srv_openai_error_json, true, &srv_openai_embeddings},
    {"POST", "/v1/messages", srv_h_generate, false, srv_anthropic_error_json, true, &srv_anthropic_messages},
    {"POST", "/v1/messages/count_tokens", srv_h_anthropic_count_tokens, false, srv_anthropic_error_json, true, NULL},
    {"POST", "/api/generate", srv_h_generate, false, srv_ollama_error_json, true, &srv_ollama_generate},
    {"POST", "/api/chat", srv_h_generate, false, srv_ollama_error_json, true, &srv_ollama_chat},
    {"POST", "/api/embed", srv_h_embed, false, srv_ollama_error_json, true, &srv_ollama_embed},
    {"GET", "/api/tags", srv_h_api_tags, false, srv_ollama_error_json, false, NULL},
    {"GET", "/api/ps", srv_h_api_ps, false, srv_ollama_error_json, false, NULL},
    {"POST", "/api/show", srv_h_api_show, false, srv_ollama_error_json, true, NULL},
    {"GET", "/api/version", srv_h_api_version, false, srv_ollama_error_json, false, NULL},
    {"POST", "/tokenize", srv_h_tokenize, false, NULL, true, NULL},
    {"POST", "/detokenize", srv_h_detokenize, false, NULL, true, NULL},
    {"GET", "/cache/stats", srv_h_cache_stats, false, NULL, false, NULL},
    {"POST", "/cache/clear", srv_h_cache_clear, false, NULL, true, NULL},
};
#define N_ROUTES (sizeof ROUTES / sizeof *ROUTES)

/* A route's path matches the URL exactly, or, when it ends with '/', as a
 * prefix followed by one non-empty segment of at most 127 bytes (an id). */
static bool path_matches(const char *path, const char *url) {
    size_t n = strlen(path);
    if (path[n - 1] != '/') return !strcmp(path, url);
    if (strncmp(path, url, n)) return false;
    size_t rest = strlen(url + n);
    return rest > 0 && rest < sizeof ((conn_ctx *)0)->arg && !strchr(url + n, '/');
}

/* h equals the key, in time that does not depend on where they differ. */
static bool key_eq(const char *h, const char *key) {
    size_t a = strlen(h), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(i < a ? h[i] : 0) ^ (unsigned char)key[i];
    return diff == 0;
}

/* The key as "Authorization: Bearer KEY" (OpenAI, Ollama) or "x-api-key:
 * KEY" (Anthropic). */
static bool key_ok(const srv_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h && !strncasecmp(h, "Bearer ", 7)) return key_eq(h + 7, s->api_key);
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    return x && key_eq(x, s->api_key);
}

/* A body over --max-body is read and dropped up to this many bytes, so
 * that its sender reads the 413 (see on_request). */
static uint64_t discard_cap(const srv_server *s) {
    uint64_t cap = 4 * (uint64_t)s->max_body;
    return cap < (64u << 20) ? (64u << 20) : cap > (1ull << 30) ? (1ull << 30) : cap;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    conn_ctx *cx = *con_cls;
    srv_error e;
    if (!cx) {
        cx = calloc(1, sizeof *cx);
        if (!cx) return MHD_NO;
        *con_cls = cx;
        cx->t0 = kn_now_s();
        const route *match = NULL;
        bool path_known = false;
        for (size_t i = 0; i < N_ROUTES; i++) {
            if (!path_matches(ROUTES[i].path, url)) continue;
            path_known = true;
            if (!strcmp(ROUTES[i].method, method)) match = &ROUTES[i];
        }
        /* an unknown path answers in the error shape of its API's prefix */
        srv_error_fn shape = !strncmp(url, "/api/", 5)           ? srv_ollama_error_json
                             : !strncmp(url, "/v1/messages", 12) ? srv_anthropic_error_json
                                                                  : srv_openai_error_json;
        if (!match && path_known && !strcmp(method, "OPTIONS") && cors_allowed(s, c)) {
            /* a CORS preflight: what this path takes */
            cx->done = true;
            char methods[64] = "OPTIONS";
            for (size_t i = 0; i < N_ROUTES; i++)
                if (path_matches(ROUTES[i].path, url) && strlen(methods) + strlen(ROUTES[i].method) + 3 < sizeof methods)
                    strcat(strcat(methods, ", "), ROUTES[i].method);
            struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, "Access-Control-Allow-Methods", methods);
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, Cache-Control, X-Api-Key, Anthropic-Version, Anthropic-Beta");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
            enum MHD_Result ret = srv_queue(c, 204, r);
            MHD_destroy_response(r);
            return ret;
        }
        if (!match) {
            cx->done = true;
            if (path_known) {
                srv_err(&e, 405, NULL, "method_not_allowed", "method %.16s is not allowed on %.128s", method, url);
                struct MHD_Response *r = NULL;
                json_t *j = shape(&e);
                char *b = j ? json_dumps(j, JSON_COMPACT) : NULL;
                json_decref(j);
                if (b && (r = MHD_create_response_from_buffer(strlen(b), b, MHD_RESPMEM_MUST_FREE))) {
                    for (size_t i = 0; i < N_ROUTES; i++)
                        if (path_matches(ROUTES[i].path, url))
                            MHD_add_response_header(r, "Allow", ROUTES[i].method);
                    MHD_add_response_header(r, "Content-Type", "application/json");
                    enum MHD_Result ret = srv_queue(c, 405, r);
                    MHD_destroy_response(r);
                    return ret;
                }
                free(b);
                return MHD_NO;
            }
            srv_err(&e, 404, NULL, "not_found", "no route %.16s %.200s", method, url);
            return srv_send_error_as(c, shape, &e);
        }
        cx->route = match;
        size_t pl = strlen(match->path);
        if (match->path[pl - 1] == '/') snprintf(cx->arg, sizeof cx->arg, "%s", url + pl);
        if (!match->open && !key_ok(s, c)) {
            cx->done = true;
            srv_err(&e, 401, NULL, "invalid_api_key",
                    "a valid API key is required: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'");
            return srv_send_error(c, cx, &e);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long v = strtoull(cl, &end, 10);
            if (*end == 0 && v > (unsigned long long)s->max_body) {
                /* A client that waits for "100 Continue" gets the 413 now and
                 * sends nothing. Most clients send the whole body first: one
                 * answered and closed mid-upload sees a reset, never the 413,
                 * so the body is read and dropped (bounded in bytes here and in
                 * time by --read-timeout) and the 413 answers its end. */
                const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
                cx->declared = v;
                if ((expect && strcasestr(expect, "100-continue")) || v > discard_cap(s)) {
                    cx->done = true;
                    srv_err(&e, 413, NULL, "body_too_large", "the request body has %llu bytes; the limit is %lld", v,
                            (long long)s->max_body);
                    return srv_send_error(c, cx, &e);
                }
                cx->too_large = true;
            }
        }
        return MHD_YES;
    }
    if (cx->done) { /* an early answer was queued: discard the body */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (kn_now_s() - cx->t0 > s->cfg->read_timeout_s) {
            /* a body trickled in slowly: MHD cannot answer mid-body, so close */
            KN_INFO("%s %s: the request body did not arrive within %d s (--read-timeout); closing the connection",
                    method, url, s->cfg->read_timeout_s);
            cx->done = true;
            return MHD_NO;
        }
        if (!cx->too_large && cx->body.n + n > (size_t)s->max_body) cx->too_large = true;
        if (cx->too_large) {
            cx->discarded += n;
            if (cx->discarded <= discard_cap(s)) return MHD_YES;
            KN_INFO("%s %s: the request body is over %llu bytes, far over the limit of %lld; closing the connection",
                    method, url, (unsigned long long)discard_cap(s), (long long)s->max_body);
            cx->done = true;
            return MHD_NO;
        }
        return kn_buf_add(&cx->body, upload, n, (size_t)s->max_body) ? MHD_YES : MHD_NO;
    }
    /* the whole request is here */
    cx->done = true;
    const route *rt = cx->route;
    if (cx->too_large) {
        if (cx->declared)
            srv_err(&e, 413, NULL, "body_too_large", "the request body has %llu bytes; the limit is %lld",
                    (unsigned long long)cx->declared, (long long)s->max_body);
        else
            srv_err(&e, 413, NULL, "body_too_large", "the request body is over the limit of %lld bytes",
                    (long long)s->max_body);
        return srv_send_error(c, cx, &e);
    }
    if (kn_now_s() - cx->t0 > s->cfg->read_timeout_s) {
        srv_err(&e, 408, NULL, "request_timeout", "the request body did not arrive within %d s",
                s->cfg->read_timeout_s);
        return srv_send_error(c, cx, &e);
    }
    if (atomic_load(&s->state) == SRV_DRAINING && rt->fn != srv_h_health) {
        srv_err(&e, 503, NULL, "shutting_down", "the server is shutting down");
        return srv_send_error(c, cx, &e);
    }
    if (rt->body) { /* generation-type work: what shutdown waits for */
        atomic_fetch_add(&s->in_flight, 1);
        cx->counted = true;
        /* the idle timeout is for idle connections: one waiting for its
         * first token (queued, or behind a long prefill) is not idle, and
         * a client that leaves is noticed by the handlers anyway. Once the
         * answer is queued, the send timeout bounds a client that does not
         * read it (streams switch back and forth, see gen.c). */
        srv_working(c);
        enum MHD_Result ret = rt->fn(s, c, cx);
        srv_sending(c);
        return ret;
    }
    return rt->fn(s, c, cx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    srv_server *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
    unsigned status = ci ? ci->http_status : 0;
    if (status == 0 || (status == 200 && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK))
        status = 499; /* the client closed the connection before the answer was complete */
    char st[12];
    snprintf(st, sizeof st, "%u", status % 1000u);
    const char *endpoint = cx->route ? cx->route->path : "other";
    met_inc(met_get(s->obs.requests, (const char *const[]){endpoint, st}));
    if (cx->route && cx->route->body) {
        double now = kn_now_s();
        met_observe(met_get(s->obs.duration, (const char *const[]){cx->model ? cx->model : "", endpoint}),
                    now - cx->t0);
        if (status == 200 && cx->model) met_window_add(s->obs.e2e_window, now, now - cx->t0);
    }
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && cx->counted)
        KN_WARN("%s: the client read nothing of its answer for %d s (--send-timeout); connection closed and the "
                "request cancelled",
                cx->route ? cx->route->path : "?", s->cfg->send_timeout_s);
    if (cx->counted) {
        atomic_fetch_sub(&s->in_flight, 1);
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg->conn_timeout_s);
    }
    kn_buf_free(&cx->body);
    free(cx);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (!kn_log_enabled(KN_LOG_DEBUG)) return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    KN_DEBUG("http: %s", buf);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static bool obs_create(srv_obs *o, const srv_config *cfg) {
    memset(o, 0, sizeof *o);
    if (!(o->reg = met_registry_create())) return false;
    met_registry_add_process_metrics(o->reg);
    met_registry *r = o->reg;
    const char *model[] = {"model"}, *ep_st[] = {"endpoint", "status"}, *model_ep[] = {"model", "endpoint"};
    o->requests = met_counter(r, "kiln_requests_total", "HTTP requests answered, by route and status", 2, ep_st);
    o->duration = met_histogram(r, "kiln_request_duration_seconds",
                                "Generation and embedding requests end to end, arrival to last byte", 2, model_ep,
                                MET_BUCKETS_LATENCY_S, MET_COUNT(MET_BUCKETS_LATENCY_S));
    o->running = met_gauge(r, "kiln_requests_running", "Requests holding a slot", 1, model);
    o->waiting = met_gauge(r, "kiln_requests_waiting", "Requests queued for a slot", 1, model);
    o->kv_used = met_gauge(r, "kiln_kv_blocks_used", "KV blocks referenced by running sequences", 1, model);
    o->kv_cached = met_gauge(r, "kiln_kv_blocks_cached",
                             "KV blocks held only by the prefix cache (evicted least recently used)", 1, model);
    o->kv_used_bytes = met_gauge(r, "kiln_kv_used_bytes", "Bytes of the KV blocks in use (shared blocks once)", 1,
                                 model);
    o->kv_logical_bytes = met_gauge(r, "kiln_kv_logical_bytes",
                                    "Bytes the running sequences' KV would take with no block shared", 1, model);
    o->kv_total = met_gauge(r, "kiln_kv_blocks_capacity",
                            "KV blocks in all (named so because promtool reserves _total for counters)", 1, model);
    o->model_bytes = met_gauge(r, "kiln_model_bytes", "Memory of a loaded model: weights and KV", 1, model);
    o->window_s = cfg->sla_window_s > 0 ? cfg->sla_window_s : 300;
    o->sla_p95_s = (cfg->sla_p95_ms > 0 ? cfg->sla_p95_ms : 2000) / 1000.0;
    o->e2e_window = met_window_create(o->window_s, 1 << 16);
    return o->requests && o->duration && o->running && o->waiting && o->kv_used && o->kv_total && o->model_bytes &&
           o->kv_cached && o->kv_used_bytes && o->kv_logical_bytes && o->e2e_window;
}

static void obs_destroy(srv_obs *o) {
    met_window_destroy(o->e2e_window);
    met_registry_destroy(o->reg);
}

/* The real path of p, or of its nearest existing parent with the rest
 * appended (a directory that does not exist yet). */
static bool real_path_of(const char *p, char *out, size_t cap) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", p) >= (int)sizeof tmp) return false;
    char rest[PATH_MAX] = "";
    for (;;) {
        char r[PATH_MAX];
        if (realpath(tmp, r)) return snprintf(out, cap, "%s%s", r, rest) < (int)cap;
        char *sl = strrchr(tmp, '/');
        if (!sl || sl == tmp) return false;
        char nr[PATH_MAX];
        if (snprintf(nr, sizeof nr, "%s%s", sl, rest) >= (int)sizeof nr) return false;
        memcpy(rest, nr, strlen(nr) + 1);
        *sl = 0;
    }
}

/* The response and embedding cache from the settings: L1 halves of
 * --cache-mib, L2 in --cache-dir (refused inside the models directory). */
static kn_status cache_create(srv_server *s, const srv_config *cfg, kn_err *err) {
    if (!cfg->response_cache && !cfg->embedding_cache) {
        KN_INFO("cache: response and embedding caches off");
        return KN_OK;
    }
    rc_opts co = {.enabled = {cfg->response_cache, cfg->embedding_cache},
                  .compress = cfg->cache_compress,
                  .ttl_s = {cfg->cache_ttl_response_s, cfg->cache_ttl_embedding_s},
                  .metrics = s->obs.reg};
    int n_on = (int)cfg->response_cache + (int)cfg->embedding_cache;
    co.l1_bytes = ((uint64_t)cfg->cache_mib << 20) / (uint64_t)n_on;
    if (!rc_policy_parse(cfg->cache_policy, &co.policy)) co.policy = RC_LRU;
    if (cfg->cache_dir && cfg->cache_disk_size > 0) {
        char cd[PATH_MAX], md[PATH_MAX];
        const char *models = cfg->model_file ? NULL : cfg->models_dir;
        if (models && real_path_of(cfg->cache_dir, cd, sizeof cd) && real_path_of(models, md, sizeof md)) {
            size_t n = strlen(md);
            if (!strncmp(cd, md, n) && (cd[n] == 0 || cd[n] == '/'))
                return kn_fail(err, KN_EINVAL,
                               "cache-dir %s is inside the models directory %s; put the disk cache elsewhere",
                               cfg->cache_dir, models);
        }
        co.dir = cfg->cache_dir;
        co.l2_bytes = (uint64_t)cfg->cache_disk_size;
    }
    kn_status st = rc_cache_create(&co, &s->cache, err);
    if (st != KN_OK) {
        kn_err_prefix(err, "cache");
        return st;
    }
    KN_INFO("cache: response %s, embedding %s; memory %d MiB (%s), disk %s (limit %.1f GiB)",
            cfg->response_cache ? "on" : "off", cfg->embedding_cache ? "on" : "off", cfg->cache_mib,
            rc_policy_name(co.policy), co.dir ? co.dir : "off", (double)co.l2_bytes / (double)(1ull << 30));
    return KN_OK;
}

kn_status srv_create(const srv_config *cfg, const rt_opts *ro, const struct tensor_ops *ops, srv_server **out,
                     kn_err *err) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    s->cfg = cfg;
    s->api_key = cfg->api_key;
    s->max_body = cfg->max_body;
    s->lim = (srv_limits){.json_depth = cfg->limit_json_depth, .messages = cfg->limit_messages,
                          .max_tokens = cfg->limit_max_tokens, .embed_inputs = cfg->limit_embed_inputs,
                          .stops = cfg->limit_stops, .logit_bias = cfg->limit_logit_bias};
    atomic_init(&s->state, SRV_LOADING);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->seq, 0);
    kn_status st = KN_ENOMEM;
    if (!obs_create(&s->obs, cfg)) {
        kn_fail(err, KN_ENOMEM, "cannot set up the metrics");
        goto fail;
    }
    if ((st = cache_create(s, cfg, err)) != KN_OK) goto fail;
    eng_service_opts so = {.models_dir = cfg->models_dir, .model_file = cfg->model_file, .rt = *ro, .ops = ops,
                           .cache = s->cache, .metrics = s->obs.reg, .ttft_window_s = s->obs.window_s,
                           .default_model = cfg->default_model, .default_max_tokens = cfg->max_tokens,
                           .limit_max_tokens = s->lim.max_tokens, .stall_timeout_s = cfg->send_timeout_s};
    so.rt.hash_files = cfg->response_cache || cfg->embedding_cache;
    if ((st = eng_service_create(&so, &s->svc, err)) != KN_OK) goto fail;
    s->reg = eng_service_registry(s->svc);
    if (!(s->responses = srv_resp_store_create(cfg->responses_max, (int64_t)cfg->responses_mib << 20,
                                               cfg->responses_ttl_s))) {
        st = kn_fail(err, KN_ENOMEM, "out of memory");
        eng_service_destroy(s->svc);
        goto fail;
    }
    *out = s;
    return KN_OK;
fail:
    rc_cache_destroy(s->cache);
    obs_destroy(&s->obs);
    free(s);
    return st;
}

rt_registry *srv_registry(srv_server *s) { return s->reg; }

const char *srv_default_model(const srv_server *s) { return eng_service_default_model(s->svc); }

static bool addr_is_loopback(const struct sockaddr *a) {
    if (a->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->sa_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)(const void *)a)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(x)) return true;
        if (IN6_IS_ADDR_V4MAPPED(x)) return x->s6_addr[12] == 127;
    }
    return false;
}

kn_status srv_start(srv_server *s, int *port, kn_err *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
                    *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", s->cfg->port);
    int gai = getaddrinfo(s->cfg->host, ps, &hints, &ai);
    if (gai != 0 || !ai) return kn_fail(err, KN_EINVAL, "cannot resolve host '%s': %s", s->cfg->host, gai_strerror(gai));
    if (!s->api_key && !addr_is_loopback(ai->ai_addr))
        KN_WARN("listening on %s, which is not a loopback address, without --api-key: anyone who can reach this "
                "port can use the models; set --api-key or bind 127.0.0.1",
                s->cfg->host);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg->conn_limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)s->cfg->conn_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)(2u << 20), MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d)
        return kn_fail(err, KN_EIO, "cannot listen on %s:%d (address in use, or not allowed?)", s->cfg->host,
                       s->cfg->port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? (int)di->port : s->cfg->port;
    return KN_OK;
}

void srv_set_ready(srv_server *s) { atomic_store(&s->state, SRV_READY); }

void srv_drain(srv_server *s, int grace_s) {
    if (!s->d) return;
    atomic_store(&s->state, SRV_DRAINING);
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    KN_INFO("shutdown: stopped accepting connections; %d requests in flight, grace period %d s",
            atomic_load(&s->in_flight), grace_s);
    double t0 = kn_now_s();
    while (atomic_load(&s->in_flight) > 0 && kn_now_s() - t0 < grace_s) kn_sleep_ms(50);
    int left = atomic_load(&s->in_flight);
    if (left > 0) {
        int running = 0, waiting = 0;
        srv_count_requests(s, &running, &waiting);
        KN_WARN("shutdown: grace period over; cancelling %d running and %d waiting requests", running, waiting);
        rt_cancel_all(s->reg);
        double t1 = kn_now_s();
        while (atomic_load(&s->in_flight) > 0 && kn_now_s() - t1 < 5.0) kn_sleep_ms(20);
    } else {
        KN_INFO("shutdown: all requests finished");
    }
    MHD_stop_daemon(s->d);
    s->d = NULL;
    KN_INFO("shutdown: HTTP server stopped");
}

void srv_destroy(srv_server *s) {
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    eng_service_destroy(s->svc);
    srv_resp_store_destroy(s->responses);
    rc_cache_destroy(s->cache); /* writes what is still queued for the disk */
    KN_INFO("shutdown: models unloaded");
    obs_destroy(&s->obs);
    free(s);
}
