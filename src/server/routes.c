/*
 * routes.c — the simple routes that are kiln's or OpenAI's: /health (with
 * the rolling percentiles and the SLA verdict), /v1/models, /tokenize,
 * /detokenize and /metrics. They use the model registry's listings and the
 * generation service, never a model's internals or its file. Ollama's own
 * listing routes are in ollama.c.
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
    /* what is loaded now sets its gauges; a model unloaded since the last
     * scrape reads 0, not the values it had then */
    met_family *const per_model[] = {s->obs.running, s->obs.waiting, s->obs.kv_used, s->obs.kv_cached,
                                     s->obs.kv_total, s->obs.kv_used_bytes, s->obs.kv_logical_bytes,
                                     s->obs.model_bytes};
    for (size_t i = 0; i < sizeof per_model / sizeof *per_model; i++) met_gauge_set_all(per_model[i], 0.0);
    eng_service_foreach_loaded(s->svc, gauges_one, s);
    rc_metrics_refresh(s->cache);
    size_t len = 0;
    char *text = met_render(s->obs.reg, &len);
    if (!text) return MHD_NO;
    return srv_send_body(c, 200, MET_CONTENT_TYPE, text, len);
}
