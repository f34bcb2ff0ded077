/*
 * server.c — libmicrohttpd glue: connections, routing, auth, body limits,
 * JSON responses, simple endpoints and shutdown (see server.h). The
 * generation and embedding endpoints live in gen.c.
 */
#include "server_internal.h"

#include <math.h>

#include <arpa/inet.h>
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

enum MHD_Result srv_send_error(struct MHD_Connection *c, const srv_error *e, bool ollama) {
    json_t *j = srv_error_json(e, ollama);
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

bool srv_client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

void srv_iso_time(time_t t, char *buf, size_t cap) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- simple endpoints -------------------------------------------------------- */

typedef struct health_acc {
    json_t *models;
    int running, waiting;
} health_acc;

static void health_one(void *arg, const rt_loaded_info *li) {
    health_acc *a = arg;
    rt_model *m = li->m;
    eng_sched_stats st;
    eng_sched_stats_get(m->sched, &st);
    a->running += st.running;
    a->waiting += st.waiting;
    if (a->models) /* NULL: only count */
        json_array_append_new(
            a->models, json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:{s:i, s:i, s:i, s:i, s:I}}", "name", m->id,
                                 "slots_total", st.slots_total, "slots_busy", st.slots_busy, "running", st.running,
                                 "waiting", st.waiting, "n_ctx", st.n_ctx, "kv", "blocks_total", st.kv.blocks_total,
                                 "blocks_used", st.kv.blocks_used, "blocks_cached", st.kv.blocks_cached,
                                 "block_tokens", st.block_tokens,
                                 "block_bytes", (json_int_t)st.block_bytes));
}

static enum MHD_Result h_health(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    int state = atomic_load(&s->state);
    health_acc a = {.models = json_array()};
    rt_foreach_loaded(s->reg, health_one, &a);
    const char *status = state == SRV_DRAINING ? "draining" : state == SRV_LOADING ? "loading" : "ok";
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:o}", "status", status, "requests_running", a.running,
                          "requests_waiting", a.waiting, "requests_in_flight", atomic_load(&s->in_flight), "models",
                          a.models);
    /* rolling percentiles and the SLA verdict */
    static const double qs[3] = {0.5, 0.95, 0.99};
    double now = kn_now_s(), tq[3], eq[3];
    size_t tn = met_window_quantiles(s->obs.rt.ttft_window, now, qs, 3, tq);
    size_t en = met_window_quantiles(s->obs.e2e_window, now, qs, 3, eq);
#define QJ(v, n) ((n) ? json_real(v) : json_null())
    json_object_set_new(j, "latency",
                        json_pack("{s:f, s:{s:I, s:o, s:o, s:o}, s:{s:I, s:o, s:o, s:o}}", "window_s",
                                  s->obs.window_s, "ttft_s", "count", (json_int_t)tn, "p50", QJ(tq[0], tn), "p95",
                                  QJ(tq[1], tn), "p99", QJ(tq[2], tn), "e2e_s", "count", (json_int_t)en, "p50",
                                  QJ(eq[0], en), "p95", QJ(eq[1], en), "p99", QJ(eq[2], en)));
    json_object_set_new(j, "sla",
                        json_pack("{s:f, s:o, s:o}", "p95_target_s", s->obs.sla_p95_s, "p95_s", QJ(eq[1], en), "pass",
                                  en ? json_boolean(eq[1] < s->obs.sla_p95_s) : json_null()));
#undef QJ
    return srv_send_json(c, state == SRV_READY ? 200 : 503, j);
}

static enum MHD_Result h_v1_models(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *data = json_array();
    for (size_t i = 0; i < rt_registry_count(s->reg); i++) {
        rt_entry_info in;
        rt_registry_entry(s->reg, i, &in);
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", in.id, "object", "model", "created",
                                              (json_int_t)in.mtime, "owned_by", "kiln"));
    }
    return srv_send_json(c, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static json_t *ollama_details(const char *family, const char *quant) {
    return json_pack("{s:s, s:s, s:[s], s:s, s:s}", "format", "gguf", "family", family, "families", family,
                     "parameter_size", "", "quantization_level", quant);
}

static enum MHD_Result h_api_tags(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *models = json_array();
    for (size_t i = 0; i < rt_registry_count(s->reg); i++) {
        rt_entry_info in;
        rt_registry_entry(s->reg, i, &in);
        char ts[32];
        srv_iso_time(in.mtime, ts, sizeof ts);
        char full[300];
        snprintf(full, sizeof full, "%s:%s", in.name, in.quant);
        json_array_append_new(models, json_pack("{s:s, s:s, s:s, s:I, s:s, s:o, s:s}", "name", full, "model", full,
                                                "modified_at", ts, "size", (json_int_t)in.size, "digest", "",
                                                "details", ollama_details("", in.quant), "id", in.id));
    }
    return srv_send_json(c, 200, json_pack("{s:o}", "models", models));
}

static void ps_one(void *arg, const rt_loaded_info *li) {
    rt_model *m = li->m;
    eng_sched_stats st;
    eng_sched_stats_get(m->sched, &st);
    char ts[32], exp[32], full[300];
    srv_iso_time(m->loaded_at, ts, sizeof ts);
    /* Ollama writes a far-future time for models that never expire */
    srv_iso_time(li->expires_at ? li->expires_at : (time_t)253402300799, exp, sizeof exp);
    snprintf(full, sizeof full, "%s:%s", m->name, m->quant);
    json_array_append_new((json_t *)arg,
                          json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:o, s:s, s:i, s:b, s:i, s:b, s:f}", "name",
                                    full, "model", full, "id", m->id, "size",
                                    (json_int_t)(m->m->weight_bytes + st.kv_bytes), "size_vram", 0, "digest", m->sha256,
                                    "loaded_at", ts, "expires_at", exp,
                                    "details", ollama_details(m->m->hp.arch_name, m->quant), "quantization", m->quant,
                                    "context_length", st.n_ctx, "context_reduced", m->ctx_reduced, "in_flight",
                                    li->in_flight, "pinned", li->pinned, "expires_in_s", li->expires_in_s));
}

static enum MHD_Result h_api_ps(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *models = json_array();
    rt_foreach_loaded(s->reg, ps_one, models);
    return srv_send_json(c, 200, json_pack("{s:o}", "models", models));
}

static enum MHD_Result h_api_version(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)s, (void)cx;
    return srv_send_json(c, 200, json_pack("{s:s}", "version", KILN_VERSION));
}

/* Resolves a request's model name (or the default) and pins it. */
bool srv_acquire_model(srv_server *s, const char *name, const rt_acquire_opts *ao, rt_model **out, srv_error *e) {
    if (!name || !*name) name = s->default_model;
    if (!name) {
        char names[400];
        rt_registry_names(s->reg, names, sizeof names);
        return srv_err(e, 400, "model", "missing_field", "'model' is required; available: %s", names);
    }
    kn_err err = {0};
    kn_status st = rt_acquire(s->reg, name, ao, out, &err);
    if (st == KN_ENOTFOUND) return srv_err(e, 404, "model", "model_not_found", "%s", err.msg);
    if (st == KN_EBUSY) return srv_err(e, 503, "model", "insufficient_memory", "%s", err.msg);
    if (st == KN_ERANGE) return srv_err(e, 400, "model", "context_too_large", "%s", err.msg);
    if (st == KN_EUNSUPPORTED)
        return srv_err(e, 400, "model", "model_unsupported", "cannot serve model '%.128s': %s", name, err.msg);
    if (st != KN_OK) return srv_err(e, 500, "model", "model_load_failed", "cannot load model '%.128s': %s", name, err.msg);
    return true;
}

static json_t *gguf_value_json(const gguf_ctx *g, int64_t i) {
    gguf_type t = gguf_kv_type(g, i);
    if (t == GGUF_TYPE_ARRAY) {
        gguf_type et;
        uint64_t n;
        const void *data;
        if (gguf_kv_get_arr(g, i, &et, &n, &data) != KN_OK) return NULL;
        return json_pack("{s:s, s:I}", "array_of", gguf_type_name(et), "length", (json_int_t)n);
    }
    int64_t iv = 0;
    uint64_t uv = 0;
    double fv = 0;
    gguf_str sv = {0};
    if (gguf_kv_scalar(g, i, &iv, &uv, &fv, &sv) != KN_OK) return NULL;
    switch (t) {
    case GGUF_TYPE_STRING: return srv_json_text(sv.data, (size_t)sv.len);
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: return json_real(fv);
    case GGUF_TYPE_BOOL: return json_boolean(iv);
    case GGUF_TYPE_UINT64: return uv > INT64_MAX ? json_real((double)uv) : json_integer((json_int_t)uv);
    default: return json_integer((json_int_t)iv);
    }
}

static enum MHD_Result h_api_show(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, &e, true);
    json_t *name = json_object_get(root, "model");
    if (!name) name = json_object_get(root, "name");
    if (name && !json_is_string(name)) {
        json_decref(root);
        srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
        return srv_send_error(c, &e, true);
    }
    /* metadata only: read the file's header, do not load the model */
    const char *req = name ? json_string_value(name) : s->default_model;
    rt_entry_info ei;
    kn_err kerr = {0};
    gguf_ctx *g = NULL;
    if (!req || rt_lookup(s->reg, req, &ei, &kerr) != KN_OK) {
        json_decref(root);
        srv_err(&e, req ? 404 : 400, "model", req ? "model_not_found" : "missing_field", "%s",
                req ? kerr.msg : "'model' is required");
        return srv_send_error(c, &e, true);
    }
    if (gguf_open(ei.path, &g, &kerr) != KN_OK) {
        json_decref(root);
        srv_err(&e, 500, "model", "bad_model_file", "cannot read %s: %s", ei.id, kerr.msg);
        return srv_send_error(c, &e, true);
    }
    json_t *info = json_object();
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_str k = gguf_kv_key(g, i);
        if (gguf_str_eq(k, "tokenizer.chat_template")) continue;
        json_t *v = gguf_value_json(g, i);
        if (!v) continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 255 ? k.len : 255), k.data);
        json_object_set_new(info, key, v);
    }
    gguf_str tmpl = {0};
    json_t *template = gguf_get_str(g, "tokenizer.chat_template", &tmpl) == KN_OK
                           ? srv_json_text(tmpl.data, (size_t)tmpl.len)
                           : json_string("");
    gguf_str arch = {0};
    char family[64] = "";
    if (gguf_get_str(g, "general.architecture", &arch) == KN_OK && arch.len < sizeof family)
        snprintf(family, sizeof family, "%.*s", (int)arch.len, arch.data);
    json_t *out = json_pack("{s:s, s:s, s:o, s:o, s:o, s:s}", "modelfile", "", "parameters", "", "template", template,
                            "details", ollama_details(family, ei.quant), "model_info", info, "quantization", ei.quant);
    gguf_close(g);
    json_decref(root);
    return srv_send_json(c, 200, out);
}

static enum MHD_Result h_tokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, &e, false);
    const char *model = NULL, *content = NULL;
    json_t *jm = json_object_get(root, "model"), *jc = json_object_get(root, "content");
    json_t *ja = json_object_get(root, "add_special");
    bool add_special = false;
    enum MHD_Result ret;
    if (jm && !json_is_null(jm) && !json_is_string(jm)) {
        srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
        goto err;
    }
    if (!json_is_string(jc)) {
        srv_err(&e, 400, "content", jc ? "invalid_type" : "missing_field", "'content' must be a string");
        goto err;
    }
    if (ja && !json_is_null(ja)) {
        if (!json_is_boolean(ja)) {
            srv_err(&e, 400, "add_special", "invalid_type", "'add_special' must be a boolean");
            goto err;
        }
        add_special = json_is_true(ja);
    }
    model = jm ? json_string_value(jm) : NULL;
    content = json_string_value(jc);
    rt_model *m;
    rt_acquire_opts ao = {.n_ctx = 0, .keep_alive_s = NAN, .touch = false};
    if (!srv_acquire_model(s, model, &ao, &m, &e)) goto err;
    int32_t *ids = NULL;
    size_t n = 0;
    kn_err err = {0};
    kn_status st = tok_encode_alloc(m->vocab, content, json_string_length(jc), add_special, true, &ids, &n, &err);
    rt_release(s->reg, m);
    if (st != KN_OK) {
        srv_err(&e, 400, "content", NULL, "cannot tokenize: %s", err.msg);
        goto err;
    }
    json_t *toks = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(toks, json_integer(ids[i]));
    free(ids);
    json_decref(root);
    return srv_send_json(c, 200, json_pack("{s:o}", "tokens", toks));
err:
    json_decref(root);
    ret = srv_send_error(c, &e, false);
    return ret;
}

static enum MHD_Result h_detokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, &e, false);
    json_t *jm = json_object_get(root, "model"), *jt = json_object_get(root, "tokens");
    int32_t *ids = NULL;
    if (jm && !json_is_null(jm) && !json_is_string(jm)) {
        srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
        goto err;
    }
    if (!json_is_array(jt) || json_array_size(jt) > (1u << 24)) {
        srv_err(&e, 400, "tokens", jt ? "invalid_type" : "missing_field", "'tokens' must be an array of token ids");
        goto err;
    }
    rt_model *m;
    rt_acquire_opts ao = {.n_ctx = 0, .keep_alive_s = NAN, .touch = false};
    if (!srv_acquire_model(s, jm ? json_string_value(jm) : NULL, &ao, &m, &e)) goto err;
    size_t n = json_array_size(jt);
    ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < n; i++) {
        json_t *t = json_array_get(jt, i);
        if (!json_is_integer(t) || !tok_valid(m->vocab, (int32_t)json_integer_value(t)) ||
            json_integer_value(t) > INT32_MAX || json_integer_value(t) < 0) {
            rt_release(s->reg, m);
            srv_err(&e, 400, "tokens", "invalid_value", "'tokens[%zu]' is not a token id of this model", i);
            goto err;
        }
        ids[i] = (int32_t)json_integer_value(t);
    }
    char *text = NULL;
    size_t len = 0;
    kn_err err = {0};
    tok_decoder_opts o = {.special = false, .strip_space = true, .replace_invalid = false};
    kn_status st = ids ? tok_decode_all(m->vocab, ids, n, &o, &text, &len, &err) : KN_ENOMEM;
    rt_release(s->reg, m);
    free(ids);
    ids = NULL;
    if (st != KN_OK) {
        srv_err(&e, 400, "tokens", NULL, "cannot detokenize: %s", err.msg);
        goto err;
    }
    json_t *out = json_pack("{s:o}", "content", srv_json_text(text, len));
    free(text);
    json_decref(root);
    return srv_send_json(c, 200, out);
err:
    free(ids);
    json_decref(root);
    return srv_send_error(c, &e, false);
}

static void gauges_one(void *arg, const rt_loaded_info *li) {
    srv_server *s = arg;
    rt_model *m = li->m;
    eng_sched_stats st;
    eng_sched_stats_get(m->sched, &st);
    const char *lv[1] = {m->id};
    met_set(met_get(s->obs.running, lv), st.running);
    met_set(met_get(s->obs.waiting, lv), st.waiting);
    met_set(met_get(s->obs.kv_used, lv), st.kv.blocks_used);
    met_set(met_get(s->obs.kv_cached, lv), st.kv.blocks_cached);
    met_set(met_get(s->obs.kv_total, lv), st.kv.blocks_total);
    met_set(met_get(s->obs.kv_used_bytes, lv), (double)st.kv.blocks_used * (double)st.block_bytes);
    met_set(met_get(s->obs.kv_logical_bytes, lv), (double)st.kv.blocks_logical * (double)st.block_bytes);
    met_set(met_get(s->obs.model_bytes, lv), (double)(m->m->weight_bytes + st.kv_bytes));
}

static enum MHD_Result h_metrics(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    rt_foreach_loaded(s->reg, gauges_one, s);
    rc_metrics_refresh(s->cache);
    size_t len = 0;
    char *text = met_render(s->obs.reg, &len);
    if (!text) return MHD_NO;
    return srv_send_body(c, 200, MET_CONTENT_TYPE, text, len);
}

/* ---- routing ------------------------------------------------------------------ */

typedef struct route {
    const char *method;
    const char *path;
    srv_handler fn;
    bool open;   /* no API key needed */
    bool ollama; /* error shape */
    bool body;   /* reads a JSON body */
} route;

static const route ROUTES[] = {
    {"GET", "/health", h_health, true, false, false},
    {"GET", "/metrics", h_metrics, false, false, false},
    {"GET", "/v1/models", h_v1_models, false, false, false},
    {"POST", "/v1/chat/completions", srv_h_chat, false, false, true},
    {"POST", "/v1/completions", srv_h_completions, false, false, true},
    {"POST", "/v1/embeddings", srv_h_embeddings, false, false, true},
    {"POST", "/api/generate", srv_h_ollama_generate, false, true, true},
    {"POST", "/api/chat", srv_h_ollama_chat, false, true, true},
    {"POST", "/api/embed", srv_h_ollama_embed, false, true, true},
    {"GET", "/api/tags", h_api_tags, false, true, false},
    {"GET", "/api/ps", h_api_ps, false, true, false},
    {"POST", "/api/show", h_api_show, false, true, true},
    {"GET", "/api/version", h_api_version, false, true, false},
    {"POST", "/tokenize", h_tokenize, false, false, true},
    {"POST", "/detokenize", h_detokenize, false, false, true},
    {"GET", "/cache/stats", srv_h_cache_stats, false, false, false},
    {"POST", "/cache/clear", srv_h_cache_clear, false, false, true},
};
#define N_ROUTES (sizeof ROUTES / sizeof *ROUTES)

static bool key_ok(const srv_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(i < a ? h[i] : 0) ^ (unsigned char)s->api_key[i];
    return diff == 0;
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
            if (strcmp(ROUTES[i].path, url)) continue;
            path_known = true;
            if (!strcmp(ROUTES[i].method, method)) match = &ROUTES[i];
        }
        bool ollama = !strncmp(url, "/api/", 5);
        if (!match && path_known && !strcmp(method, "OPTIONS") && cors_allowed(s, c)) {
            /* a CORS preflight: what this path takes */
            cx->done = true;
            char methods[64] = "OPTIONS";
            for (size_t i = 0; i < N_ROUTES; i++)
                if (!strcmp(ROUTES[i].path, url) && strlen(methods) + strlen(ROUTES[i].method) + 3 < sizeof methods)
                    strcat(strcat(methods, ", "), ROUTES[i].method);
            struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, "Access-Control-Allow-Methods", methods);
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, Cache-Control");
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
                json_t *j = srv_error_json(&e, ollama);
                char *b = j ? json_dumps(j, JSON_COMPACT) : NULL;
                json_decref(j);
                if (b && (r = MHD_create_response_from_buffer(strlen(b), b, MHD_RESPMEM_MUST_FREE))) {
                    for (size_t i = 0; i < N_ROUTES; i++)
                        if (!strcmp(ROUTES[i].path, url)) MHD_add_response_header(r, "Allow", ROUTES[i].method);
                    MHD_add_response_header(r, "Content-Type", "application/json");
                    enum MHD_Result ret = srv_queue(c, 405, r);
                    MHD_destroy_response(r);
                    return ret;
                }
                free(b);
                return MHD_NO;
            }
            srv_err(&e, 404, NULL, "not_found", "no route %.16s %.200s", method, url);
            return srv_send_error(c, &e, ollama);
        }
        cx->route = match;
        if (!match->open && !key_ok(s, c)) {
            cx->done = true;
            srv_err(&e, 401, NULL, "invalid_api_key", "a valid API key is required: send 'Authorization: Bearer KEY'");
            return srv_send_error(c, &e, match->ollama);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long v = strtoull(cl, &end, 10);
            if (*end == 0 && v > (unsigned long long)s->max_body) {
                cx->done = true;
                srv_err(&e, 413, NULL, "body_too_large", "the request body has %llu bytes; the limit is %lld", v,
                        (long long)s->max_body);
                return srv_send_error(c, &e, match->ollama);
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
        if (cx->too_large) return MHD_YES;
        if (cx->body.n + n > (size_t)s->max_body) {
            cx->too_large = true;
            return MHD_YES;
        }
        return kn_buf_add(&cx->body, upload, n, (size_t)s->max_body) ? MHD_YES : MHD_NO;
    }
    /* the whole request is here */
    cx->done = true;
    const route *rt = cx->route;
    if (cx->too_large) {
        srv_err(&e, 413, NULL, "body_too_large", "the request body is over the limit of %lld bytes",
                (long long)s->max_body);
        return srv_send_error(c, &e, rt->ollama);
    }
    if (kn_now_s() - cx->t0 > s->cfg->read_timeout_s) {
        srv_err(&e, 408, NULL, "request_timeout", "the request body did not arrive within %d s",
                s->cfg->read_timeout_s);
        return srv_send_error(c, &e, rt->ollama);
    }
    if (atomic_load(&s->state) == SRV_DRAINING && rt->fn != h_health) {
        srv_err(&e, 503, NULL, "shutting_down", "the server is shutting down");
        return srv_send_error(c, &e, rt->ollama);
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
    const double *lat = MET_BUCKETS_LATENCY_S, *itl = MET_BUCKETS_ITL_S;
    int nlat = MET_COUNT(MET_BUCKETS_LATENCY_S), nitl = MET_COUNT(MET_BUCKETS_ITL_S);
    o->requests = met_counter(r, "kiln_requests_total", "HTTP requests answered, by route and status", 2, ep_st);
    o->duration = met_histogram(r, "kiln_request_duration_seconds",
                                "Generation and embedding requests end to end, arrival to last byte", 2, model_ep,
                                lat, nlat);
    o->rt.ttft = met_histogram(r, "kiln_time_to_first_token_seconds", "Request arrival to the first generated token",
                               1, model, lat, nlat);
    o->rt.itl = met_histogram(r, "kiln_inter_token_latency_seconds", "Time between consecutive tokens of a sequence",
                              1, model, itl, nitl);
    o->rt.queue_wait = met_histogram(r, "kiln_queue_wait_seconds", "Submission to a free slot", 1, model, lat, nlat);
    o->rt.prefill = met_histogram(r, "kiln_prefill_seconds", "A slot to the first token (prompt processing)", 1,
                                  model, lat, nlat);
    o->rt.batch_size = met_histogram(r, "kiln_batch_size", "Sequences per forward step", 1, model, MET_BUCKETS_BATCH,
                                     MET_COUNT(MET_BUCKETS_BATCH));
    o->rt.prompt_tokens = met_counter(r, "kiln_prompt_tokens_total", "Prompt tokens processed", 1, model);
    o->rt.gen_tokens = met_counter(r, "kiln_generated_tokens_total", "Tokens generated", 1, model);
    o->rt.prefix_queried = met_counter(r, "kiln_prefix_cache_queried_tokens_total",
                                       "Prompt tokens looked up in the KV cache", 1, model);
    o->rt.prefix_hit = met_counter(r, "kiln_prefix_cache_hit_tokens_total",
                                   "Prompt tokens whose KV was reused instead of computed", 1, model);
    o->rt.loads = met_counter(r, "kiln_model_loads_total", "Models loaded", 1, model);
    o->rt.unloads = met_counter(r, "kiln_model_unloads_total", "Models unloaded", 1, model);
    o->rt.load_failures = met_counter(r, "kiln_model_load_failures_total", "Model loads that failed", 1, model);
    o->rt.estimate_error = met_gauge(r, "kiln_model_memory_estimate_error_bytes",
                                     "RSS growth measured over a model's load minus its estimate", 1, model);
    o->running = met_gauge(r, "kiln_requests_running", "Requests holding a slot", 1, model);
    o->waiting = met_gauge(r, "kiln_requests_waiting", "Requests queued for a slot", 1, model);
    o->kv_used = met_gauge(r, "kiln_kv_blocks_used", "KV blocks referenced by running sequences", 1, model);
    o->kv_cached = met_gauge(r, "kiln_kv_blocks_cached",
                             "KV blocks held only by the prefix cache (evicted least recently used)", 1, model);
    o->kv_used_bytes = met_gauge(r, "kiln_kv_used_bytes", "Bytes of the KV blocks in use (shared blocks once)", 1,
                                 model);
    o->kv_logical_bytes = met_gauge(r, "kiln_kv_logical_bytes",
                                    "Bytes the running sequences' KV would take with no block shared", 1, model);
    o->rt.spec_draft = met_counter(r, "kiln_spec_draft_tokens_total", "Draft tokens proposed for verification", 1,
                                   model);
    o->rt.spec_accepted = met_counter(r, "kiln_spec_accepted_tokens_total", "Draft tokens accepted", 1, model);
    o->rt.preemptions = met_counter(r, "kiln_preemptions_total",
                                    "Sequences preempted when KV blocks ran out (recomputed later)", 1, model);
    static const double EMB_TOKENS[] = {16, 64, 256, 512, 1024, 2048, 4096, 8192};
    o->rt.embed_batch_requests = met_histogram(r, "kiln_embedding_batch_requests",
                                               "Embedding requests per encoder forward pass (micro-batching)", 1,
                                               model, MET_BUCKETS_BATCH, MET_COUNT(MET_BUCKETS_BATCH));
    o->rt.embed_batch_tokens = met_histogram(r, "kiln_embedding_batch_tokens", "Tokens per encoder forward pass", 1,
                                             model, EMB_TOKENS, MET_COUNT(EMB_TOKENS));
    o->kv_total = met_gauge(r, "kiln_kv_blocks_capacity", "KV blocks in all (named so because promtool reserves _total for counters)", 1, model);
    o->model_bytes = met_gauge(r, "kiln_model_bytes", "Memory of a loaded model: weights and KV", 1, model);
    o->window_s = cfg->sla_window_s > 0 ? cfg->sla_window_s : 300;
    o->sla_p95_s = (cfg->sla_p95_ms > 0 ? cfg->sla_p95_ms : 2000) / 1000.0;
    o->rt.ttft_window = met_window_create(o->window_s, 1 << 16);
    o->e2e_window = met_window_create(o->window_s, 1 << 16);
    return o->requests && o->duration && o->rt.ttft && o->rt.itl && o->rt.queue_wait && o->rt.prefill &&
           o->rt.batch_size && o->rt.prompt_tokens && o->rt.gen_tokens && o->rt.prefix_queried && o->rt.prefix_hit && o->rt.loads && o->rt.unloads &&
           o->rt.load_failures && o->running && o->waiting && o->kv_used && o->kv_total && o->model_bytes &&
           o->kv_cached && o->kv_used_bytes && o->kv_logical_bytes && o->rt.spec_draft && o->rt.spec_accepted &&
           o->rt.preemptions && o->rt.embed_batch_requests && o->rt.embed_batch_tokens &&
           o->rt.ttft_window && o->e2e_window;
}

static void obs_destroy(srv_obs *o) {
    met_window_destroy(o->rt.ttft_window);
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

kn_status srv_create(const srv_config *cfg, const rt_opts *ro, const tensor_ops *ops, srv_server **out, kn_err *err) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    if (!obs_create(&s->obs, cfg)) {
        obs_destroy(&s->obs);
        free(s);
        return kn_fail(err, KN_ENOMEM, "cannot set up the metrics");
    }
    rt_opts o = *ro;
    o.metrics = &s->obs.rt;
    o.hash_files = cfg->response_cache || cfg->embedding_cache;
    s->ops_level = (int)ops->level;
    s->ops_vnni = ops->vnni;
    if (!eng_spec_parse(cfg->spec, &s->spec_default)) s->spec_default = ENG_SPEC_NONE;
    kn_status st = cache_create(s, cfg, err);
    if (st != KN_OK) {
        obs_destroy(&s->obs);
        free(s);
        return st;
    }
    st = rt_registry_create(cfg->models_dir, cfg->model_file, &o, ops, &s->reg, err);
    if (st != KN_OK) {
        rc_cache_destroy(s->cache);
        obs_destroy(&s->obs);
        free(s);
        return st;
    }
    s->cfg = cfg;
    s->api_key = cfg->api_key;
    s->max_body = cfg->max_body;
    s->lim = (srv_limits){.json_depth = cfg->limit_json_depth, .messages = cfg->limit_messages,
                          .max_tokens = cfg->limit_max_tokens, .embed_inputs = cfg->limit_embed_inputs,
                          .stops = cfg->limit_stops, .logit_bias = cfg->limit_logit_bias};
    s->default_model = cfg->default_model;
    if (!s->default_model && cfg->model_file && rt_registry_count(s->reg) == 1) {
        rt_entry_info in;
        rt_registry_entry(s->reg, 0, &in);
        s->default_model = in.id;
    }
    atomic_init(&s->state, SRV_LOADING);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->seq, 0);
    *out = s;
    return KN_OK;
}

rt_registry *srv_registry(srv_server *s) { return s->reg; }

const char *srv_default_model(const srv_server *s) { return s->default_model; }

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
        health_acc a = {0};
        rt_foreach_loaded(s->reg, health_one, &a);
        KN_WARN("shutdown: grace period over; cancelling %d running and %d waiting requests", a.running, a.waiting);
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
    rc_cache_destroy(s->cache); /* writes what is still queued for the disk */
    rt_registry_destroy(s->reg);
    KN_INFO("shutdown: models unloaded");
    obs_destroy(&s->obs);
    free(s);
}
