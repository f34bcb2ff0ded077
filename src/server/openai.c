/*
 * openai.c — the OpenAI dialect: /v1/chat/completions, /v1/completions
 * and /v1/embeddings. Requests are parsed into the session's canonical
 * request; answers are chat.completion(.chunk) / text_completion objects,
 * streamed as SSE ending with "data: [DONE]", with logprobs in the chat
 * shape (content entries with bytes and top_logprobs) or the legacy
 * completions shape (tokens, token_logprobs, top_logprobs, text_offset).
 */
#include "dialect.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *srv_openai_error_json(const srv_error *e) {
    /* messages quote the client's bytes (a field name, jansson's excerpt of
     * bad JSON, a truncated value): invalid UTF-8 becomes U+FFFD, so that an
     * error always has a body */
    json_t *msg = srv_json_text(e->msg, strnlen(e->msg, sizeof e->msg));
    json_t *err = json_pack("{s:o, s:s}", "message", msg, "type", e->type);
    if (!err) return NULL;
    json_object_set_new(err, "param",
                        e->param[0] ? srv_json_text(e->param, strnlen(e->param, sizeof e->param)) : json_null());
    json_object_set_new(err, "code", e->code[0] ? json_string(e->code) : json_null());
    return json_pack("{s:o}", "error", err);
}

/* ---- requests ----------------------------------------------------------------------- */

/* What chat and completions share: model, stream, cache, sampling, bias, grammar,
 * n, max_tokens, stream_options, response_format. */
static bool parse_common(json_t *root, const srv_limits *lim, bool chat, srv_gen_req *r, srv_error *e) {
    if (!srv_get_str(root, "model", "model", &r->q.model, NULL, e)) return false;
    if (!srv_get_bool(root, "stream", "stream", &r->stream, e)) return false;
    if (!srv_get_bool(root, "cache", "cache", &r->q.cache, e)) return false;
    if (!srv_get_sampler_fields(root, "", lim, r, e) || !srv_get_engine_fields(root, "", r, e)) return false;
    if (!srv_get_logit_bias(root, lim->logit_bias, r, e)) return false;
    /* llama-server's GBNF grammar (the engine compiles it: a malformed one is a 400 with line:column) */
    size_t glen = 0;
    if (!srv_get_str(root, "grammar", "grammar", &r->q.grammar, &glen, e)) return false;
    if (r->q.grammar && strlen(r->q.grammar) != glen)
        return srv_err(e, 400, "grammar", "invalid_value", "'grammar' must not contain NUL characters");
    long long x = 1;
    if (!srv_get_int(root, "n", "n", 1, 1 << 20, &x, NULL, e)) return false;
    if (x != 1) return srv_err(e, 400, "n", "unsupported_value", "only n = 1 is supported, got %lld", x);
    bool set = false;
    x = -1;
    if (!srv_get_int(root, "max_tokens", "max_tokens", 0, 1 << 24, &x, &set, e)) return false;
    if (chat && !srv_get_int(root, "max_completion_tokens", "max_completion_tokens", 0, 1 << 24, &x, &set, e))
        return false;
    if (set && x > lim->max_tokens)
        return srv_err(e, 400, "max_tokens", "limit_exceeded",
                       "'max_tokens' is %lld; this server allows at most %d (--limit-max-tokens)", x, lim->max_tokens);
    if (set) {
        r->q.n_predict = (int32_t)x;
        r->q.n_predict_set = true;
    }
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return srv_err(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object");
        if (!srv_get_bool(so, "include_usage", "stream_options.include_usage", &r->include_usage, e)) return false;
    }
    json_t *rf = json_object_get(root, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *t = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(t))
            return srv_err(e, 400, "response_format", "invalid_type",
                           "'response_format' must be an object with a string 'type'");
        const char *ts = json_string_value(t);
        if (!strcmp(ts, "json_object")) {
            if (!(r->schema = json_pack("{s:s}", "type", "object"))) return srv_err(e, 500, NULL, NULL, "out of memory");
            r->q.json_schema = r->schema;
            r->q.json_schema_param = "response_format";
        } else if (!strcmp(ts, "json_schema")) {
            json_t *js = json_object_get(rf, "json_schema");
            json_t *sc = json_object_get(js, "schema");
            if (!json_is_object(js))
                return srv_err(e, 400, "response_format.json_schema", "missing_field",
                               "'response_format.json_schema' must be an object with 'name' and 'schema'");
            if (!sc || json_is_null(sc)) {
                /* OpenAI: a json_schema without a schema is any JSON object */
                if (!(r->schema = json_pack("{s:s}", "type", "object")))
                    return srv_err(e, 500, NULL, NULL, "out of memory");
                sc = r->schema;
            } else if (!json_is_object(sc) && !json_is_boolean(sc)) {
                return srv_err(e, 400, "response_format.json_schema.schema", "invalid_type",
                               "'response_format.json_schema.schema' must be a JSON Schema (an object)");
            }
            json_t *strict = json_object_get(js, "strict");
            if (strict && !json_is_null(strict) && !json_is_boolean(strict))
                return srv_err(e, 400, "response_format.json_schema.strict", "invalid_type",
                               "'response_format.json_schema.strict' must be a boolean");
            r->q.json_schema = sc;
            r->q.json_schema_param = "response_format.json_schema.schema";
        } else if (strcmp(ts, "text")) {
            return srv_err(e, 400, "response_format.type", "unsupported_value",
                           "response_format type '%.40s' is not supported; use 'text', 'json_object' or 'json_schema'",
                           ts);
        }
    }
    return true;
}

static bool parse_chat(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!parse_common(root, lim, true, r, e)) return false;
    bool lp = false;
    if (!srv_get_bool(root, "logprobs", "logprobs", &lp, e)) return false;
    long long x = 0;
    bool set = false;
    if (!srv_get_int(root, "top_logprobs", "top_logprobs", 0, ENG_MAX_LOGPROBS, &x, &set, e)) return false;
    if (set && !lp) return srv_err(e, 400, "top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs': true");
    if (lp) r->q.n_logprobs = (int)x;
    static const srv_msg_rules rules = {.text_parts = true};
    if (!srv_get_messages(root, &rules, lim->messages, r, e)) return false;
    r->q.messages = r->messages;
    r->q.prompt_param = "messages";
    if (!srv_get_tool_choice(root, r, e)) return false;
    if (!srv_get_bool(root, "parallel_tool_calls", "parallel_tool_calls", &r->q.parallel_tool_calls, e)) return false;
    /* vLLM's and llama-server's template switches */
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    if (kw && !json_is_null(kw)) {
        if (!json_is_object(kw))
            return srv_err(e, 400, "chat_template_kwargs", "invalid_type", "'chat_template_kwargs' must be an object");
        const char *k;
        json_t *v;
        json_object_foreach(kw, k, v) {
            if (strcmp(k, "enable_thinking"))
                return srv_err(e, 400, "chat_template_kwargs", "unsupported",
                               "chat_template_kwargs '%.40s' is not supported; only 'enable_thinking'", k);
            if (!json_is_boolean(v))
                return srv_err(e, 400, "chat_template_kwargs.enable_thinking", "invalid_type",
                               "'chat_template_kwargs.enable_thinking' must be a boolean");
            r->q.think = json_is_true(v) ? ENG_THINK_ON : ENG_THINK_OFF;
        }
    }
    return true;
}

/* A completion prompt: a string (or a one-string array), or token ids (or
 * a one-list array). */
static bool parse_prompt(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p || json_is_null(p)) return srv_err(e, 400, "prompt", "missing_field", "'prompt' is required");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->q.prompt = json_string_value(p);
        r->q.prompt_len = json_string_length(p);
        return true;
    }
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_array(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (!json_is_array(p) || json_array_size(p) == 0)
        return srv_err(e, 400, "prompt", "invalid_type",
                       "'prompt' must be a string or a non-empty array of token ids (one prompt; n = 1)");
    size_t n = json_array_size(p);
    if (n > (1u << 24)) return srv_err(e, 400, "prompt", "invalid_value", "the prompt has too many tokens");
    if (!(r->prompt_tokens = malloc(n * sizeof *r->prompt_tokens))) return srv_err(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(p, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
            return srv_err(e, 400, "prompt", "invalid_type",
                           "'prompt[%zu]' must be a token id (a non-negative integer); one prompt per request", i);
        r->prompt_tokens[i] = (int32_t)json_integer_value(t);
    }
    r->q.prompt_tokens = r->prompt_tokens;
    r->q.n_prompt_tokens = n;
    return true;
}

static bool parse_completion(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!parse_common(root, lim, false, r, e)) return false;
    long long x = -1;
    bool set = false;
    if (!srv_get_int(root, "logprobs", "logprobs", 0, ENG_MAX_LOGPROBS, &x, &set, e)) return false;
    if (set) r->q.n_logprobs = (int)x;
    if (!srv_get_bool(root, "echo", "echo", &r->echo, e)) return false;
    if (!srv_get_bool(root, "add_special", "add_special", &r->q.add_special, e)) return false;
    json_t *suffix = json_object_get(root, "suffix");
    if (suffix && json_is_string(suffix) && json_string_length(suffix) > 0)
        return srv_err(e, 400, "suffix", "unsupported", "'suffix' (fill-in-the-middle) is not supported");
    return parse_prompt(root, r, e);
}

/* ---- logprobs ------------------------------------------------------------------------- */

static json_t *bytes_json(const char *p, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

static json_t *tok_entry(const srv_job *j, int32_t id, float lp) {
    size_t n = 0;
    const char *p = eng_gen_token_piece(j->g, id, &n);
    json_t *o = json_pack("{s:o, s:f}", "token", srv_json_text(p, n), "logprob", (double)lp);
    json_object_set_new(o, "bytes", bytes_json(p, n));
    return o;
}

/* Chat: logprobs.content entries for these events. */
static json_t *chat_lp_entries(const srv_job *j, const eng_tok_event *ev, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = tok_entry(j, ev[i].token, ev[i].logprob);
        json_t *tops = json_array();
        for (int k = 0; k < ev[i].n_top; k++) json_array_append_new(tops, tok_entry(j, ev[i].top_id[k], ev[i].top_lp[k]));
        json_object_set_new(o, "top_logprobs", tops);
        json_array_append_new(a, o);
    }
    return a;
}

/* Completions: the legacy {tokens, token_logprobs, top_logprobs,
 * text_offset} arrays of lp, appended to. */
static void comp_lp_append(srv_job *j, const eng_tok_event *ev, size_t n, json_t *lp) {
    json_t *tokens = json_object_get(lp, "tokens"), *lps = json_object_get(lp, "token_logprobs");
    json_t *tops = json_object_get(lp, "top_logprobs"), *offs = json_object_get(lp, "text_offset");
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = eng_gen_token_piece(j->g, ev[i].token, &len);
        json_array_append_new(tokens, srv_json_text(p, len));
        json_array_append_new(lps, json_real(ev[i].logprob));
        json_t *t = json_object();
        for (int k = 0; k < ev[i].n_top; k++) {
            size_t tl = 0;
            const char *tp = eng_gen_token_piece(j->g, ev[i].top_id[k], &tl);
            json_t *key = srv_json_text(tp, tl);
            if (key) json_object_set_new(t, json_string_value(key), json_real(ev[i].top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, t);
        json_array_append_new(offs, json_integer((json_int_t)j->text_offset));
        j->text_offset += len;
    }
}

static json_t *comp_lp_new(void) {
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

/* ---- answers ---------------------------------------------------------------------------- */

static json_t *usage_json(const srv_job *j) {
    const eng_req_result *r = &j->res;
    json_t *u = json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)r->n_prompt, "completion_tokens",
                          (json_int_t)r->n_gen, "total_tokens", (json_int_t)(r->n_prompt + r->n_gen));
    if (j->info->cache == ENG_CACHE_HIT) json_object_set_new(u, "cached", json_true());
    return u;
}

static bool is_chat(const srv_job *j) { return j->d == &srv_openai_chat; }

static json_t *chunk(srv_job *j, json_t *choice) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o]}", "id", j->id, "object",
                          is_chat(j) ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)j->created,
                          "model", srv_job_model(j), "system_fingerprint", "kiln-" KILN_VERSION, "choices", choice);
    if (j->r.include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

static void chat_start(srv_job *j) {
    json_t *choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", 0, "delta", "role", "assistant", "content", "",
                               "logprobs", "finish_reason");
    srv_job_emit(j, chunk(j, choice));
}

static void chat_piece(srv_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    json_t *choice = json_pack("{s:i, s:{s:o}, s:n}", "index", 0, "delta", "content", srv_json_text(text, n),
                               "finish_reason");
    json_object_set_new(choice, "logprobs",
                        j->r.q.n_logprobs >= 0 ? json_pack("{s:o}", "content", chat_lp_entries(j, ev, nev))
                                               : json_null());
    srv_job_emit(j, chunk(j, choice));
}

/* A chat stream's event: content, reasoning_content or a tool_calls delta. */
static void chat_event_out(srv_job *j, const chat_event *ev) {
    json_t *delta;
    if (ev->kind == CHAT_EV_CONTENT) {
        delta = json_pack("{s:o}", "content", srv_json_text(ev->text, ev->len));
    } else if (ev->kind == CHAT_EV_REASONING) {
        delta = json_pack("{s:o}", "reasoning_content", srv_json_text(ev->text, ev->len));
    } else {
        char id[64];
        if (ev->id && ev->id[0]) snprintf(id, sizeof id, "%s", ev->id);
        else srv_tool_call_id(j, "call_", ev->index, id, sizeof id);
        delta = json_pack("{s:[{s:i, s:s, s:s, s:{s:o, s:o}}]}", "tool_calls", "index", ev->index, "id", id, "type",
                          "function", "function", "name", srv_json_text(ev->name, strlen(ev->name)), "arguments",
                          srv_json_text(ev->args, ev->args_len));
    }
    json_t *choice = json_pack("{s:i, s:o, s:n}", "index", 0, "delta", delta, "finish_reason");
    /* a piece's logprobs go with its first content */
    bool lp = j->r.q.n_logprobs >= 0 && ev->kind == CHAT_EV_CONTENT;
    json_object_set_new(choice, "logprobs", lp ? json_pack("{s:o}", "content", chat_lp_entries(j, j->ev, j->nev)) : json_null());
    if (lp) j->nev = 0;
    srv_job_emit(j, chunk(j, choice));
}

static void comp_start(srv_job *j) {
    if (j->echo_len) j->d->stream_piece(j, j->echo_text, j->echo_len, NULL, 0);
}

static void comp_piece(srv_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    json_t *choice = json_pack("{s:i, s:o, s:n}", "index", 0, "text", srv_json_text(text, n), "finish_reason");
    json_t *lp = json_null();
    if (j->r.q.n_logprobs >= 0) {
        json_decref(lp);
        lp = comp_lp_new();
        comp_lp_append(j, ev, nev, lp);
    }
    json_object_set_new(choice, "logprobs", lp);
    srv_job_emit(j, chunk(j, choice));
}

static void stream_end(srv_job *j) {
    if (j->res.finish == ENG_FINISH_ERROR) {
        srv_error e;
        srv_job_error(j, &e);
        srv_job_emit(j, srv_openai_error_json(&e));
    } else {
        const char *fin = j->n_calls && j->res.finish == ENG_FINISH_STOP ? "tool_calls" : eng_finish_name(j->res.finish);
        json_t *choice = is_chat(j)
                             ? json_pack("{s:i, s:{}, s:n, s:s}", "index", 0, "delta", "logprobs", "finish_reason", fin)
                             : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", "", "logprobs", "finish_reason", fin);
        srv_job_emit(j, chunk(j, choice));
        if (j->r.include_usage)
            srv_job_emit(j, json_pack("{s:s, s:s, s:I, s:s, s:s, s:[], s:o}", "id", j->id, "object",
                                      is_chat(j) ? "chat.completion.chunk" : "text_completion", "created",
                                      (json_int_t)j->created, "model", srv_job_model(j), "system_fingerprint",
                                      "kiln-" KILN_VERSION, "choices", "usage", usage_json(j)));
    }
    kn_buf_add(&j->out, "data: [DONE]\n\n", 14, 0);
}

static void chat_collect(srv_job *j, const eng_tok_event *ev, size_t nev) {
    if (!j->lp) j->lp = json_array();
    json_t *more = chat_lp_entries(j, ev, nev);
    json_array_extend(j->lp, more);
    json_decref(more);
}

static void comp_collect(srv_job *j, const eng_tok_event *ev, size_t nev) {
    if (!j->lp) j->lp = comp_lp_new();
    comp_lp_append(j, ev, nev, j->lp);
}

static json_t *whole(srv_job *j, json_t *choice) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o], s:o}", "id", j->id, "object",
                     is_chat(j) ? "chat.completion" : "text_completion", "created", (json_int_t)j->created, "model",
                     srv_job_model(j), "system_fingerprint", "kiln-" KILN_VERSION, "choices", choice, "usage",
                     usage_json(j));
}

static json_t *chat_whole(srv_job *j) {
    json_t *lp = json_null();
    if (j->r.q.n_logprobs >= 0) {
        json_decref(lp);
        if (!j->lp) j->lp = json_array(); /* no token came: an empty list, owned by the job */
        lp = json_pack("{s:O}", "content", j->lp);
    }
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    bool calls = j->calls && json_array_size(j->calls) > 0;
    json_object_set_new(msg, "content",
                        calls && j->content.n == 0 ? json_null()
                                                   : srv_json_text(j->content.p ? j->content.p : "", j->content.n));
    if (j->reasoning.n) json_object_set_new(msg, "reasoning_content", srv_json_text(j->reasoning.p, j->reasoning.n));
    if (calls) {
        json_t *tc = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(j->calls, i, c)
            json_array_append_new(tc, json_pack("{s:O, s:s, s:{s:O, s:O}}", "id", json_object_get(c, "id"), "type",
                                                "function", "function", "name", json_object_get(c, "name"),
                                                "arguments", json_object_get(c, "arguments")));
        json_object_set_new(msg, "tool_calls", tc);
    }
    const char *fin = calls && j->res.finish == ENG_FINISH_STOP ? "tool_calls" : eng_finish_name(j->res.finish);
    json_t *choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "message", msg, "logprobs", lp, "finish_reason", fin);
    return whole(j, choice);
}

static json_t *comp_whole(srv_job *j) {
    json_t *lp = json_null();
    if (j->r.q.n_logprobs >= 0) {
        json_decref(lp);
        lp = j->lp ? json_incref(j->lp) : comp_lp_new();
    }
    const char *text = j->acc.p ? j->acc.p : "";
    json_t *choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", srv_json_text(text, j->acc.n), "logprobs",
                               lp, "finish_reason", eng_finish_name(j->res.finish));
    return whole(j, choice);
}

const srv_gen_dialect srv_openai_chat = {
    .name = "openai.chat", .error_json = srv_openai_error_json, .sse = true, .stream_type = "text/event-stream",
    .id_prefix = "chatcmpl", .parse = parse_chat, .stream_start = chat_start, .stream_piece = chat_piece,
    .stream_end = stream_end, .collect = chat_collect, .whole = chat_whole, .stream_event = chat_event_out,
};

const srv_gen_dialect srv_openai_completions = {
    .name = "openai.completions", .error_json = srv_openai_error_json, .sse = true,
    .stream_type = "text/event-stream", .id_prefix = "cmpl", .parse = parse_completion, .stream_start = comp_start,
    .stream_piece = comp_piece, .stream_end = stream_end, .collect = comp_collect, .whole = comp_whole,
};

/* ---- embeddings ---------------------------------------------------------------------- */

static bool parse_embed(json_t *root, const srv_limits *lim, srv_embed_req *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->keep_alive_s = NAN;
    if (!srv_get_str(root, "model", "model", &r->model, NULL, e)) return false;
    if (!srv_get_bool(root, "truncate", "truncate", &r->truncate, e)) return false;
    r->cache = true;
    if (!srv_get_bool(root, "cache", "cache", &r->cache, e)) return false;
    const char *fmt = NULL;
    if (!srv_get_str(root, "encoding_format", "encoding_format", &fmt, NULL, e)) return false;
    if (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64"))
        return srv_err(e, 400, "encoding_format", "invalid_value",
                       "'encoding_format' must be 'float' or 'base64', got '%.40s'", fmt);
    r->base64 = fmt && !strcmp(fmt, "base64");
    json_t *dim = json_object_get(root, "dimensions");
    if (dim && !json_is_null(dim))
        return srv_err(e, 400, "dimensions", "unsupported",
                       "'dimensions' is not supported: this model's embeddings cannot be shortened");
    return srv_get_embed_input(root, lim, true, r, e);
}

static json_t *vec_json(const float *v, int n, bool base64) {
    if (base64) {
        size_t bytes = (size_t)n * sizeof(float);
        unsigned char *enc = malloc(4 * ((bytes + 2) / 3) + 1);
        if (!enc) return NULL;
        EVP_EncodeBlock(enc, (const unsigned char *)v, (int)bytes); /* little-endian float32, as OpenAI's */
        json_t *s = json_string((const char *)enc);
        free(enc);
        return s;
    }
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *embed_answer(const srv_embed_req *q, const eng_embed_result *res, double t0) {
    (void)t0;
    json_t *data = json_array();
    for (size_t i = 0; i < res->n; i++)
        json_array_append_new(data, json_pack("{s:s, s:I, s:o}", "object", "embedding", "index", (json_int_t)i,
                                              "embedding",
                                              vec_json(res->vecs + i * (size_t)res->n_embd, res->n_embd, q->base64)));
    return json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model", res->model_id, "usage",
                     "prompt_tokens", (json_int_t)res->n_tokens, "total_tokens", (json_int_t)res->n_tokens);
}

const srv_embed_dialect srv_openai_embeddings = {
    .name = "openai.embeddings", .error_json = srv_openai_error_json, .parse = parse_embed, .answer = embed_answer,
};
