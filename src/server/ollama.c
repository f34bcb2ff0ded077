/*
 * ollama.c — the Ollama dialect: /api/generate, /api/chat and /api/embed,
 * and Ollama's model routes /api/tags, /api/ps, /api/show (metadata read
 * without loading the model) and /api/version.
 * Requests carry their sampling in "options" and their keep_alive beside
 * it, stream by default (NDJSON, one object per line, the last with
 * "done": true, the done_reason and Ollama's durations in nanoseconds),
 * and errors are {"error": "..."}.
 */
#include "dialect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *srv_ollama_error_json(const srv_error *e) {
    return json_pack("{s:o}", "error", srv_json_text(e->msg, strnlen(e->msg, sizeof e->msg)));
}

/* ---- requests -------------------------------------------------------------------------- */

/* options: the shared sampling fields, num_predict and num_ctx. */
static bool parse_options(json_t *opts, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!srv_get_sampler_fields(opts, "options.", lim, r, e)) return false;
    long long x = -1;
    bool set = false;
    if (!srv_get_int(opts, "num_predict", "options.num_predict", -2, 1 << 24, &x, &set, e)) return false;
    if (set && x > lim->max_tokens)
        return srv_err(e, 400, "options.num_predict", "limit_exceeded",
                       "'%s' is %lld; this server allows at most %d (--limit-max-tokens)", "options.num_predict", x,
                       lim->max_tokens);
    if (set) {
        r->q.n_predict = x < 0 ? -1 : (int32_t)x;
        r->q.n_predict_set = true;
    }
    x = 0;
    if (!srv_get_int(opts, "num_ctx", "options.num_ctx", 0, 1 << 24, &x, NULL, e)) return false;
    r->q.num_ctx = (int)x;
    return srv_get_engine_fields(opts, "options.", r, e);
}

/* What generate and chat share: model, stream, cache, options,
 * keep_alive, format. */
static bool parse_common(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    r->stream = true; /* Ollama streams by default */
    if (!srv_get_str(root, "model", "model", &r->q.model, NULL, e)) return false;
    if (!srv_get_bool(root, "stream", "stream", &r->stream, e)) return false;
    if (!srv_get_bool(root, "cache", "cache", &r->q.cache, e)) return false;
    json_t *opts = json_object_get(root, "options");
    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts)) return srv_err(e, 400, "options", "invalid_type", "'options' must be an object");
        if (!parse_options(opts, lim, r, e)) return false;
    }
    if (!srv_parse_keep_alive(root, &r->q.keep_alive_s, e)) return false;
    json_t *fmt = json_object_get(root, "format");
    if (fmt && !json_is_null(fmt) && !(json_is_string(fmt) && json_string_length(fmt) == 0)) {
        if (json_is_string(fmt)) {
            if (strcmp(json_string_value(fmt), "json"))
                return srv_err(e, 400, "format", "invalid_value",
                               "'format' must be \"json\" or a JSON schema, got '%.40s'", json_string_value(fmt));
            if (!(r->schema = json_pack("{s:s}", "type", "object"))) return srv_err(e, 500, NULL, NULL, "out of memory");
            r->q.json_schema = r->schema;
        } else if (json_is_object(fmt)) {
            r->q.json_schema = fmt;
        } else {
            return srv_err(e, 400, "format", "invalid_type", "'format' must be \"json\" or a JSON schema object");
        }
        r->q.json_schema_param = "format";
    }
    json_t *think = json_object_get(root, "think");
    if (think && !json_is_null(think)) {
        if (!json_is_boolean(think))
            return srv_err(e, 400, "think", "unsupported_value",
                           "'think' must be true or false (reasoning effort levels are not supported)");
        r->q.think = json_is_true(think) ? ENG_THINK_ON : ENG_THINK_OFF;
    }
    return true;
}

static bool parse_generate(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!parse_common(root, lim, r, e)) return false;
    const char *prompt = NULL, *system = NULL;
    size_t prompt_len = 0;
    bool raw = false;
    if (!srv_get_str(root, "prompt", "prompt", &prompt, &prompt_len, e)) return false;
    if (!prompt) prompt = "", prompt_len = 0;
    if (!srv_get_str(root, "system", "system", &system, NULL, e)) return false;
    if (!srv_get_bool(root, "raw", "raw", &raw, e)) return false;
    json_t *img = json_object_get(root, "images");
    if (img && json_is_array(img) && json_array_size(img) > 0)
        return srv_err(e, 400, "images", "unsupported", "images are not supported by kiln's text models");
    json_t *tmpl = json_object_get(root, "template");
    if (tmpl && json_is_string(tmpl) && json_string_length(tmpl) > 0)
        return srv_err(e, 400, "template", "unsupported",
                       "'template' overrides (Go templates) are not supported; kiln uses the model's Jinja chat "
                       "template");
    /* an empty prompt only loads the model */
    r->load_only = prompt_len == 0 && !(system && *system);
    r->q.prompt = prompt;
    r->q.prompt_len = prompt_len;
    if (raw) return true; /* the prompt as it is, no template */
    /* through the chat template: the system prompt and the prompt as messages */
    if (!(r->messages = json_array())) return srv_err(e, 500, NULL, NULL, "out of memory");
    if (system && *system)
        json_array_append_new(r->messages, json_pack("{s:s, s:s}", "role", "system", "content", system));
    json_array_append_new(r->messages, json_pack("{s:s, s:s%}", "role", "user", "content", prompt, prompt_len));
    r->q.messages = r->messages;
    return true;
}

static bool parse_chat(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!parse_common(root, lim, r, e)) return false;
    static const srv_msg_rules rules = {.empty_assistant = true, .no_images = true};
    if (!srv_get_messages(root, &rules, lim->messages, r, e)) return false;
    r->q.messages = r->messages;
    r->q.prompt_param = "messages";
    return true;
}

/* ---- answers ----------------------------------------------------------------------------- */

static bool is_chat(const srv_job *j) { return j->d == &srv_ollama_chat; }

static json_t *obj(srv_job *j, const char *model, const char *text, size_t n, bool done) {
    char ts[32];
    srv_iso_time(time(NULL), ts, sizeof ts);
    json_t *o = json_pack("{s:s, s:s}", "model", model, "created_at", ts);
    if (is_chat(j))
        json_object_set_new(o, "message", json_pack("{s:s, s:o}", "role", "assistant", "content", srv_json_text(text, n)));
    else
        json_object_set_new(o, "response", srv_json_text(text, n));
    json_object_set_new(o, "done", json_boolean(done));
    return o;
}

static void durations(const srv_job *j, json_t *o) {
    const eng_req_result *r = &j->res;
    double now = kn_now_s();
    double pe = r->t_first > 0 && r->t_start > 0 ? r->t_first - r->t_start : 0;
    double ev = r->t_end > 0 && r->t_first > 0 ? r->t_end - r->t_first : 0;
    json_object_set_new(o, "total_duration", json_integer((json_int_t)((now - j->t0) * 1e9)));
    json_object_set_new(o, "load_duration", json_integer((json_int_t)(j->info->load_s * 1e9)));
    json_object_set_new(o, "prompt_eval_count", json_integer((json_int_t)r->n_prompt));
    json_object_set_new(o, "prompt_eval_duration", json_integer((json_int_t)(pe * 1e9)));
    json_object_set_new(o, "eval_count", json_integer((json_int_t)r->n_gen));
    json_object_set_new(o, "eval_duration", json_integer((json_int_t)(ev * 1e9)));
}

static json_t *final_obj(srv_job *j, const char *text, size_t n) {
    json_t *o = obj(j, srv_job_model(j), text, n, true);
    json_object_set_new(o, "done_reason", json_string(eng_finish_name(j->res.finish)));
    durations(j, o);
    return o;
}

/* Ollama's tool calls: [{"function": {"name", "arguments": {...}}}]. */
static json_t *tool_call_json(const char *name, const char *args, size_t args_len) {
    json_t *a = json_loadb(args, args_len, 0, NULL);
    if (!a) a = json_object();
    return json_pack("{s:{s:s, s:o}}", "function", "name", name, "arguments", a);
}

/* A parsed stream event: content, thinking or a tool call. */
static void event_out(srv_job *j, const chat_event *ev) {
    if (ev->kind == CHAT_EV_CONTENT && ev->len == 0) return;
    json_t *o = obj(j, srv_job_model(j), "", 0, false);
    json_t *msg = is_chat(j) ? json_object_get(o, "message") : o;
    if (ev->kind == CHAT_EV_CONTENT)
        json_object_set_new(msg, is_chat(j) ? "content" : "response", srv_json_text(ev->text, ev->len));
    else if (ev->kind == CHAT_EV_REASONING)
        json_object_set_new(msg, "thinking", srv_json_text(ev->text, ev->len));
    else if (is_chat(j))
        json_object_set_new(msg, "tool_calls", json_pack("[o]", tool_call_json(ev->name, ev->args, ev->args_len)));
    srv_job_emit(j, o);
}

static void piece(srv_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    (void)ev, (void)nev;
    if (n) srv_job_emit(j, obj(j, srv_job_model(j), text, n, false));
}

static void stream_end(srv_job *j) {
    if (j->res.finish == ENG_FINISH_ERROR) {
        srv_error e;
        srv_job_error(j, &e);
        srv_job_emit(j, srv_ollama_error_json(&e));
        return;
    }
    srv_job_emit(j, final_obj(j, "", 0));
}

static json_t *whole(srv_job *j) {
    json_t *o = final_obj(j, j->content.p ? j->content.p : "", j->content.n);
    json_t *msg = is_chat(j) ? json_object_get(o, "message") : o;
    if (j->reasoning.n) json_object_set_new(msg, "thinking", srv_json_text(j->reasoning.p, j->reasoning.n));
    if (is_chat(j) && j->calls && json_array_size(j->calls)) {
        json_t *tc = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(j->calls, i, c) {
            json_t *a = json_object_get(c, "arguments");
            json_array_append_new(tc, tool_call_json(json_string_value(json_object_get(c, "name")),
                                                     json_string_value(a), json_string_length(a)));
        }
        json_object_set_new(msg, "tool_calls", tc);
    }
    return o;
}

static json_t *loaded(srv_job *j, const char *model_id) {
    (void)j;
    char ts[32];
    srv_iso_time(time(NULL), ts, sizeof ts);
    return json_pack("{s:s, s:s, s:s, s:b, s:s}", "model", model_id, "created_at", ts, "response", "", "done", 1,
                     "done_reason", "load");
}

const srv_gen_dialect srv_ollama_generate = {
    .name = "ollama.generate", .error_json = srv_ollama_error_json, .sse = false,
    .stream_type = "application/x-ndjson", .id_prefix = "cmpl", .parse = parse_generate, .stream_piece = piece,
    .stream_end = stream_end, .whole = whole, .loaded = loaded, .stream_event = event_out,
};

const srv_gen_dialect srv_ollama_chat = {
    .name = "ollama.chat", .error_json = srv_ollama_error_json, .sse = false, .stream_type = "application/x-ndjson",
    .id_prefix = "chatcmpl", .parse = parse_chat, .stream_piece = piece, .stream_end = stream_end, .whole = whole,
    .stream_event = event_out,
};

/* ---- embeddings ------------------------------------------------------------------------ */

static bool parse_embed(json_t *root, const srv_limits *lim, srv_embed_req *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->keep_alive_s = NAN;
    if (!srv_parse_keep_alive(root, &r->keep_alive_s, e)) return false;
    if (!srv_get_str(root, "model", "model", &r->model, NULL, e)) return false;
    if (!srv_get_bool(root, "truncate", "truncate", &r->truncate, e)) return false;
    r->cache = true;
    if (!srv_get_bool(root, "cache", "cache", &r->cache, e)) return false;
    return srv_get_embed_input(root, lim, false, r, e);
}

static json_t *embed_answer(const srv_embed_req *q, const eng_embed_result *res, double t0) {
    (void)q;
    json_t *vecs = json_array();
    for (size_t i = 0; i < res->n; i++) {
        json_t *a = json_array();
        const float *v = res->vecs + i * (size_t)res->n_embd;
        for (int k = 0; k < res->n_embd; k++) json_array_append_new(a, json_real(v[k]));
        json_array_append_new(vecs, a);
    }
    return json_pack("{s:s, s:o, s:I, s:I, s:I}", "model", res->model_id, "embeddings", vecs, "total_duration",
                     (json_int_t)((kn_now_s() - t0) * 1e9), "load_duration", (json_int_t)(res->load_s * 1e9),
                     "prompt_eval_count", (json_int_t)res->n_tokens);
}

const srv_embed_dialect srv_ollama_embed = {
    .name = "ollama.embed", .error_json = srv_ollama_error_json, .parse = parse_embed, .answer = embed_answer,
};

/* ---- model routes -------------------------------------------------------------------- */

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

