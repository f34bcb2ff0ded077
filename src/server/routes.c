/*
 * routes.c — the simple routes: /health (with the rolling percentiles and
 * the SLA verdict), /v1/models, /api/tags, /api/ps, /api/show,
 * /api/version, /tokenize, /detokenize and /metrics. They use the model
 * registry's listings and the generation service, never a model's
 * internals or its file.
 */
#include "server_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- health ------------------------------------------------------------------------ */

typedef struct health_acc {
    json_t *models;
    int running, waiting;
} health_acc;

static void health_one(void *arg, const eng_model_status *st) {
    health_acc *a = arg;
    a->running += st->running;
    a->waiting += st->waiting;
    if (a->models) /* NULL: only count */
        json_array_append_new(
            a->models, json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:{s:I, s:I, s:I, s:i, s:I}}", "name", st->li->m->id,
                                 "slots_total", st->slots_total, "slots_busy", st->slots_busy, "running", st->running,
                                 "waiting", st->waiting, "n_ctx", st->n_ctx, "kv", "blocks_total",
                                 (json_int_t)st->kv_blocks_total, "blocks_used", (json_int_t)st->kv_blocks_used,
                                 "blocks_cached", (json_int_t)st->kv_blocks_cached, "block_tokens", st->block_tokens,
                                 "block_bytes", (json_int_t)st->block_bytes));
}

void srv_count_requests(srv_server *s, int *running, int *waiting) {
    health_acc a = {0};
    eng_service_foreach_loaded(s->svc, health_one, &a);
    *running = a.running;
    *waiting = a.waiting;
}

enum MHD_Result srv_h_health(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    int state = atomic_load(&s->state);
    health_acc a = {.models = json_array()};
    eng_service_foreach_loaded(s->svc, health_one, &a);
    const char *status = state == SRV_DRAINING ? "draining" : state == SRV_LOADING ? "loading" : "ok";
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:o}", "status", status, "requests_running", a.running,
                          "requests_waiting", a.waiting, "requests_in_flight", atomic_load(&s->in_flight), "models",
                          a.models);
    /* rolling percentiles and the SLA verdict */
    static const double qs[3] = {0.5, 0.95, 0.99};
    double now = kn_now_s(), tq[3], eq[3];
    size_t tn = met_window_quantiles(eng_service_ttft_window(s->svc), now, qs, 3, tq);
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

/* ---- model listings ------------------------------------------------------------------ */

enum MHD_Result srv_h_v1_models(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
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

enum MHD_Result srv_h_api_tags(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
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

static void ps_one(void *arg, const eng_model_status *st) {
    const rt_loaded_info *li = st->li;
    const rt_model *m = li->m;
    char ts[32], exp[32], full[300];
    srv_iso_time(m->loaded_at, ts, sizeof ts);
    /* Ollama writes a far-future time for models that never expire */
    srv_iso_time(li->expires_at ? li->expires_at : (time_t)253402300799, exp, sizeof exp);
    snprintf(full, sizeof full, "%s:%s", m->name, m->quant);
    json_array_append_new((json_t *)arg,
                          json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:o, s:s, s:i, s:b, s:i, s:b, s:f}", "name",
                                    full, "model", full, "id", m->id, "size",
                                    (json_int_t)(m->weight_bytes + st->kv_bytes), "size_vram", 0, "digest", m->sha256,
                                    "loaded_at", ts, "expires_at", exp, "details", ollama_details(m->arch, m->quant),
                                    "quantization", m->quant, "context_length", st->n_ctx, "context_reduced",
                                    m->ctx_reduced, "in_flight", li->in_flight, "pinned", li->pinned, "expires_in_s",
                                    li->expires_in_s));
}

enum MHD_Result srv_h_api_ps(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *models = json_array();
    eng_service_foreach_loaded(s->svc, ps_one, models);
    return srv_send_json(c, 200, json_pack("{s:o}", "models", models));
}

enum MHD_Result srv_h_api_version(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)s, (void)cx;
    return srv_send_json(c, 200, json_pack("{s:s}", "version", KILN_VERSION));
}

/* ---- /api/show: metadata, read without loading the model ------------------------------ */

static json_t *meta_json(const rt_meta *m) {
    switch (m->kind) {
    case RT_META_ARRAY: return json_pack("{s:s, s:I}", "array_of", m->elem, "length", (json_int_t)m->len);
    case RT_META_STRING: return srv_json_text(m->str, m->len);
    case RT_META_FLOAT: return json_real(m->f);
    case RT_META_BOOL: return json_boolean(m->i);
    case RT_META_UINT: return m->u > INT64_MAX ? json_real((double)m->u) : json_integer((json_int_t)m->u);
    default: return json_integer((json_int_t)m->i);
    }
}

enum MHD_Result srv_h_api_show(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, cx, &e);
    json_t *name = json_object_get(root, "model");
    if (!name) name = json_object_get(root, "name");
    if (name && !json_is_string(name)) {
        json_decref(root);
        srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
        return srv_send_error(c, cx, &e);
    }
    const char *req = name ? json_string_value(name) : eng_service_default_model(s->svc);
    rt_description d;
    kn_err kerr = {0};
    kn_status st = req ? rt_describe(s->reg, req, &d, &kerr) : KN_ENOTFOUND;
    json_decref(root);
    if (st != KN_OK) {
        if (!req) srv_err(&e, 400, "model", "missing_field", "'model' is required");
        else if (st == KN_ENOTFOUND) srv_err(&e, 404, "model", "model_not_found", "%s", kerr.msg);
        else srv_err(&e, 500, "model", "bad_model_file", "cannot read %s: %s", d.info.id ? d.info.id : req, kerr.msg);
        return srv_send_error(c, cx, &e);
    }
    json_t *info = json_object();
    for (size_t i = 0; i < d.n_keys; i++) {
        json_t *v = meta_json(&d.keys[i]);
        if (!v) continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(d.keys[i].key_len < 255 ? d.keys[i].key_len : 255), d.keys[i].key);
        json_object_set_new(info, key, v);
    }
    json_t *template = d.tmpl ? srv_json_text(d.tmpl, d.tmpl_len) : json_string("");
    json_t *out = json_pack("{s:s, s:s, s:o, s:o, s:o, s:s}", "modelfile", "", "parameters", "", "template", template,
                            "details", ollama_details(d.arch, d.info.quant), "model_info", info, "quantization",
                            d.info.quant);
    rt_description_free(&d);
    return srv_send_json(c, 200, out);
}

/* ---- tokens ------------------------------------------------------------------------------ */

enum MHD_Result srv_h_tokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    eng_error ee;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, cx, &e);
    json_t *jm = json_object_get(root, "model"), *jc = json_object_get(root, "content");
    json_t *ja = json_object_get(root, "add_special");
    bool add_special = false;
    int32_t *ids = NULL;
    size_t n = 0;
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
    if (!eng_service_tokenize(s->svc, jm ? json_string_value(jm) : NULL, json_string_value(jc),
                              json_string_length(jc), add_special, &ids, &n, &ee)) {
        srv_err_engine(&e, &ee);
        goto err;
    }
    json_t *toks = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(toks, json_integer(ids[i]));
    free(ids);
    json_decref(root);
    return srv_send_json(c, 200, json_pack("{s:o}", "tokens", toks));
err:
    json_decref(root);
    return srv_send_error(c, cx, &e);
}

enum MHD_Result srv_h_detokenize(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    eng_error ee;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, cx, &e);
    json_t *jm = json_object_get(root, "model"), *jt = json_object_get(root, "tokens");
    int64_t *ids = NULL;
    char *text = NULL;
    size_t len = 0;
    if (jm && !json_is_null(jm) && !json_is_string(jm)) {
        srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
        goto err;
    }
    if (!json_is_array(jt) || json_array_size(jt) > (1u << 24)) {
        srv_err(&e, 400, "tokens", jt ? "invalid_type" : "missing_field", "'tokens' must be an array of token ids");
        goto err;
    }
    size_t n = json_array_size(jt);
    if (!(ids = malloc((n ? n : 1) * sizeof *ids))) {
        srv_err(&e, 500, NULL, NULL, "out of memory");
        goto err;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(jt, i);
        ids[i] = json_is_integer(t) ? (int64_t)json_integer_value(t) : -1; /* not an id: refused below */
    }
    if (!eng_service_detokenize(s->svc, jm ? json_string_value(jm) : NULL, ids, n, "tokens", &text, &len, &ee)) {
        srv_err_engine(&e, &ee);
        goto err;
    }
    free(ids);
    json_t *out = json_pack("{s:o}", "content", srv_json_text(text, len));
    free(text);
    json_decref(root);
    return srv_send_json(c, 200, out);
err:
    free(ids);
    json_decref(root);
    return srv_send_error(c, cx, &e);
}

/* ---- /metrics ------------------------------------------------------------------------------ */

static void gauges_one(void *arg, const eng_model_status *st) {
    srv_server *s = arg;
    const rt_model *m = st->li->m;
    const char *lv[1] = {m->id};
    met_set(met_get(s->obs.running, lv), st->running);
    met_set(met_get(s->obs.waiting, lv), st->waiting);
    met_set(met_get(s->obs.kv_used, lv), (double)st->kv_blocks_used);
    met_set(met_get(s->obs.kv_cached, lv), (double)st->kv_blocks_cached);
    met_set(met_get(s->obs.kv_total, lv), (double)st->kv_blocks_total);
    met_set(met_get(s->obs.kv_used_bytes, lv), (double)st->kv_blocks_used * (double)st->block_bytes);
    met_set(met_get(s->obs.kv_logical_bytes, lv), (double)st->kv_blocks_logical * (double)st->block_bytes);
    met_set(met_get(s->obs.model_bytes, lv), (double)(m->weight_bytes + st->kv_bytes));
}

enum MHD_Result srv_h_metrics(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    eng_service_foreach_loaded(s->svc, gauges_one, s);
    rc_metrics_refresh(s->cache);
    size_t len = 0;
    char *text = met_render(s->obs.reg, &len);
    if (!text) return MHD_NO;
    return srv_send_body(c, 200, MET_CONTENT_TYPE, text, len);
}
