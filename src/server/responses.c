/*
 * responses.c — the OpenAI Responses dialect: POST /v1/responses, and GET
 * and DELETE /v1/responses/{id} over the server's store of responses.
 *
 * A request's input items (messages, function calls and their outputs)
 * become kiln's OpenAI-shaped chat messages, its function tools the chat
 * tools array, text.format the JSON schema the answer is constrained to.
 * The answer is a response object whose output items are a reasoning item
 * (when the model reasoned), a message with one output_text part, and a
 * function_call per tool call; a stream is named SSE events (event: NAME)
 * each carrying its type and a sequence_number, from response.created to
 * response.completed (or response.incomplete, response.failed).
 *
 * The store (srv_resp_store) keeps what `previous_response_id` and GET
 * need: each stored response's conversation (the messages it was given,
 * its instructions left out as in OpenAI's API, then its answer as an
 * assistant message) and its response object, both as compact JSON text,
 * in an age-ordered list with a hash index, bounded by count, bytes and
 * age. Evicting goes from the oldest. A mutex guards it (connections run
 * on their own threads); texts are copied out under it and parsed outside.
 */
#include "dialect.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== the store ============================================================= */

typedef struct rs_entry rs_entry;
struct rs_entry {
    rs_entry *older, *newer; /* the age list */
    rs_entry *next;          /* the hash chain */
    double t;                /* stored at (kn_now_s) */
    size_t bytes;            /* what it counts against the bound */
    char *conv, *resp;       /* compact JSON: the conversation's messages, the response object */
    char id[];
};

struct srv_resp_store {
    pthread_mutex_t mu;
    rs_entry *oldest, *newest;
    rs_entry **bucket;
    size_t nbucket; /* a power of two */
    size_t n, bytes, max_n, max_bytes;
    double ttl_s;
};

srv_resp_store *srv_resp_store_create(int max_n, int64_t max_bytes, int ttl_s) {
    srv_resp_store *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->max_n = max_n > 0 ? (size_t)max_n : 0;
    st->max_bytes = max_bytes > 0 ? (size_t)max_bytes : 0;
    st->ttl_s = ttl_s;
    st->nbucket = 16;
    while (st->nbucket < st->max_n && st->nbucket < (1u << 20))
        st->nbucket <<= 1;
    if (!(st->bucket = calloc(st->nbucket, sizeof *st->bucket)) || pthread_mutex_init(&st->mu, NULL)) {
        free(st->bucket);
        free(st);
        return NULL;
    }
    return st;
}

static void entry_free(rs_entry *e) {
    free(e->conv);
    free(e->resp);
    free(e);
}

void srv_resp_store_destroy(srv_resp_store *st) {
    if (!st) return;
    for (rs_entry *e = st->oldest, *n; e; e = n) {
        n = e->newer;
        entry_free(e);
    }
    pthread_mutex_destroy(&st->mu);
    free(st->bucket);
    free(st);
}

static size_t id_hash(const char *id) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return (size_t)h;
}

static rs_entry **chain_of(srv_resp_store *st, const char *id) {
    rs_entry **p = &st->bucket[id_hash(id) & (st->nbucket - 1)];
    while (*p && strcmp((*p)->id, id))
        p = &(*p)->next;
    return p;
}

/* Unlinks and frees e (the lock is held). */
static void drop(srv_resp_store *st, rs_entry *e) {
    rs_entry **p = chain_of(st, e->id);
    *p = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        st->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        st->newest = e->older;
    st->n--;
    st->bytes -= e->bytes;
    entry_free(e);
}

/* Drops what outlived the TTL: the oldest first (the lock is held). */
static void expire(srv_resp_store *st, double now) {
    while (st->oldest && now - st->oldest->t > st->ttl_s)
        drop(st, st->oldest);
}

/* Stores conv and resp (taken) under id; false when the store keeps
 * nothing or the entry alone is over the byte bound. */
static bool store_put(srv_resp_store *st, const char *id, char *conv, char *resp) {
    size_t idn = strlen(id), bytes = sizeof(rs_entry) + idn + 1 + strlen(conv) + strlen(resp);
    rs_entry *e = NULL;
    if (st->max_n == 0 || bytes > st->max_bytes || !(e = calloc(1, sizeof *e + idn + 1))) {
        free(conv);
        free(resp);
        return false;
    }
    memcpy(e->id, id, idn + 1);
    e->conv = conv;
    e->resp = resp;
    e->bytes = bytes;
    pthread_mutex_lock(&st->mu);
    e->t = kn_now_s();
    expire(st, e->t);
    rs_entry **p = chain_of(st, id);
    if (*p) drop(st, *p); /* ids are unique per run: only a replay of one could collide */
    while (st->oldest && (st->n + 1 > st->max_n || st->bytes + bytes > st->max_bytes))
        drop(st, st->oldest);
    p = chain_of(st, id);
    *p = e;
    e->older = st->newest;
    if (st->newest)
        st->newest->newer = e;
    else
        st->oldest = e;
    st->newest = e;
    st->n++;
    st->bytes += bytes;
    pthread_mutex_unlock(&st->mu);
    return true;
}

/* A copy of the stored conversation (conv) or response of id; NULL when
 * absent or expired (or on OOM). */
static char *store_get(srv_resp_store *st, const char *id, bool conv) {
    pthread_mutex_lock(&st->mu);
    expire(st, kn_now_s());
    rs_entry *e = *chain_of(st, id);
    char *out = e ? strdup(conv ? e->conv : e->resp) : NULL;
    pthread_mutex_unlock(&st->mu);
    return out;
}

static bool store_del(srv_resp_store *st, const char *id) {
    pthread_mutex_lock(&st->mu);
    expire(st, kn_now_s());
    rs_entry *e = *chain_of(st, id);
    if (e) drop(st, e);
    pthread_mutex_unlock(&st->mu);
    return e != NULL;
}

/* ==== requests ================================================================ */

/* The text of a content field: a string, or an array of input_text /
 * output_text parts, concatenated. New reference, or NULL with e. */
static json_t *content_text(json_t *c, const char *p, srv_error *e) {
    if (json_is_string(c)) return json_incref(c);
    if (!json_is_array(c)) {
        srv_err(e, 400, p, "invalid_type", "'%s' must be a string or an array of input_text parts", p);
        return NULL;
    }
    kn_buf b = {0};
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
        const char *ts = json_is_string(type) ? json_string_value(type) : "";
        if (!json_is_object(part) || (strcmp(ts, "input_text") && strcmp(ts, "output_text")) ||
            !json_is_string(t)) {
            kn_buf_free(&b);
            srv_err(e, 400, p, "unsupported_content",
                    "'%s[%zu]' is not a text part (type '%.40s'): only input_text and output_text parts are "
                    "supported by kiln's text models",
                    p, k, ts);
            return NULL;
        }
        if (!kn_buf_add(&b, json_string_value(t), json_string_length(t), 0)) {
            kn_buf_free(&b);
            srv_err(e, 500, NULL, NULL, "out of memory");
            return NULL;
        }
    }
    json_t *s = json_stringn(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    if (!s) srv_err(e, 400, p, "invalid_value", "'%s' is not valid UTF-8", p);
    return s;
}

/* A string field the item must have. */
static const char *need_str(json_t *it, const char *key, size_t i, srv_error *e) {
    json_t *v = json_object_get(it, key);
    if (json_is_string(v)) return json_string_value(v);
    char p[64];
    snprintf(p, sizeof p, "input[%zu].%s", i, key);
    srv_err(e, 400, p, v ? "invalid_type" : "missing_field", "'%s' must be a string", p);
    return NULL;
}

/* One input item appended to msgs as OpenAI chat messages: a message; a
 * function_call, which joins the assistant message before it (or starts
 * one) as a tool call; a function_call_output, a tool message. Reasoning
 * items (earlier answers' reasoning, sent back) add nothing: chat templates
 * drop past turns' reasoning. */
static bool add_item(json_t *msgs, json_t *it, size_t i, srv_error *e) {
    char p[64];
    snprintf(p, sizeof p, "input[%zu]", i);
    if (!json_is_object(it)) return srv_err(e, 400, p, "invalid_type", "'%s' must be an object", p);
    json_t *type = json_object_get(it, "type");
    const char *ts = json_is_string(type) ? json_string_value(type) : "message";
    if (type && !json_is_null(type) && !json_is_string(type)) {
        snprintf(p, sizeof p, "input[%zu].type", i);
        return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
    }
    if (!strcmp(ts, "message")) {
        json_t *role = json_object_get(it, "role");
        snprintf(p, sizeof p, "input[%zu].role", i);
        if (!json_is_string(role)) return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return srv_err(e, 400, p, "invalid_value",
                           "unknown role '%.40s' in %s; expected user, assistant, system or developer", rs,
                           p);
        snprintf(p, sizeof p, "input[%zu].content", i);
        json_t *c = json_object_get(it, "content");
        if (!c || json_is_null(c)) return srv_err(e, 400, p, "missing_field", "'%s' is required", p);
        json_t *text = content_text(c, p, e);
        if (!text) return false;
        return json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", rs, "content", text)) == 0 ||
               srv_err(e, 500, NULL, NULL, "out of memory");
    }
    if (!strcmp(ts, "function_call")) {
        const char *call_id = need_str(it, "call_id", i, e), *name, *args;
        if (!call_id || !(name = need_str(it, "name", i, e)) || !(args = need_str(it, "arguments", i, e)))
            return false;
        json_t *call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", call_id, "type", "function", "function",
                                 "name", name, "arguments", args);
        if (!call) return srv_err(e, 500, NULL, NULL, "out of memory");
        size_t n = json_array_size(msgs);
        json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
        json_t *lr = json_object_get(last, "role");
        if (!last || !json_is_string(lr) || strcmp(json_string_value(lr), "assistant")) {
            last = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
            if (!last || json_array_append_new(msgs, last)) {
                json_decref(call);
                return srv_err(e, 500, NULL, NULL, "out of memory");
            }
        }
        json_t *calls = json_object_get(last, "tool_calls");
        if (!calls) json_object_set_new(last, "tool_calls", calls = json_array());
        return json_array_append_new(calls, call) == 0 || srv_err(e, 500, NULL, NULL, "out of memory");
    }
    if (!strcmp(ts, "function_call_output")) {
        const char *call_id = need_str(it, "call_id", i, e);
        if (!call_id) return false;
        snprintf(p, sizeof p, "input[%zu].output", i);
        json_t *o = json_object_get(it, "output");
        if (!o || json_is_null(o)) return srv_err(e, 400, p, "missing_field", "'%s' is required", p);
        json_t *text = content_text(o, p, e);
        if (!text) return false;
        return json_array_append_new(msgs, json_pack("{s:s, s:s, s:o}", "role", "tool", "tool_call_id",
                                                     call_id, "content", text)) == 0 ||
               srv_err(e, 500, NULL, NULL, "out of memory");
    }
    if (!strcmp(ts, "reasoning")) return true;
    snprintf(p, sizeof p, "input[%zu].type", i);
    return srv_err(e, 400, p, "unsupported_value",
                   "input item type '%.60s' is not supported; kiln takes message, function_call, "
                   "function_call_output and reasoning items",
                   ts);
}

/* instructions and input into r->messages. */
static bool parse_input(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!(r->messages = json_array())) return srv_err(e, 500, NULL, NULL, "out of memory");
    const char *instr = NULL;
    if (!srv_get_str(root, "instructions", "instructions", &instr, NULL, e)) return false;
    if (instr)
        json_array_append_new(r->messages, json_pack("{s:s, s:o}", "role", "system", "content",
                                                     json_incref(json_object_get(root, "instructions"))));
    json_t *in = json_object_get(root, "input");
    if (!in || json_is_null(in)) return srv_err(e, 400, "input", "missing_field", "'input' is required");
    if (json_is_string(in)) {
        json_array_append_new(r->messages, json_pack("{s:s, s:O}", "role", "user", "content", in));
    } else if (json_is_array(in)) {
        if (json_array_size(in) > (size_t)lim->messages)
            return srv_err(e, 400, "input", "limit_exceeded",
                           "'input' has %zu items; this server allows at most %d (--limit-messages)",
                           json_array_size(in), lim->messages);
        size_t i;
        json_t *it;
        json_array_foreach(in, i, it) if (!add_item(r->messages, it, i, e)) return false;
    } else {
        return srv_err(e, 400, "input", "invalid_type",
                       "'input' must be a string or an array of input items");
    }
    if (json_array_size(r->messages) == (instr ? 1u : 0u))
        return srv_err(e, 400, "input", "invalid_value", "'input' has no message");
    r->q.messages = r->messages;
    r->q.prompt_param = "input";
    return true;
}

/* Function tools into r->tools (OpenAI chat's shape), tool_choice and
 * parallel_tool_calls. */
static bool parse_tools(json_t *root, srv_gen_req *r, srv_error *e) {
    char p[64];
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return srv_err(e, 400, "tools", "invalid_type", "'tools' must be an array");
        if (!(r->tools = json_array())) return srv_err(e, 500, NULL, NULL, "out of memory");
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            snprintf(p, sizeof p, "tools[%zu]", i);
            if (!json_is_object(t)) return srv_err(e, 400, p, "invalid_type", "'%s' must be an object", p);
            json_t *type = json_object_get(t, "type");
            snprintf(p, sizeof p, "tools[%zu].type", i);
            if (!json_is_string(type)) return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
            if (strcmp(json_string_value(type), "function"))
                return srv_err(e, 400, p, "unsupported_value",
                               "tool type '%.60s' is not supported; kiln runs function tools only",
                               json_string_value(type));
            json_t *name = json_object_get(t, "name"), *desc = json_object_get(t, "description"),
                   *params = json_object_get(t, "parameters"), *strict = json_object_get(t, "strict");
            snprintf(p, sizeof p, "tools[%zu].name", i);
            if (!json_is_string(name) || json_string_length(name) == 0)
                return srv_err(e, 400, p, name ? "invalid_type" : "missing_field",
                               "'%s' must be a non-empty string", p);
            snprintf(p, sizeof p, "tools[%zu].description", i);
            if (desc && !json_is_null(desc) && !json_is_string(desc))
                return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
            snprintf(p, sizeof p, "tools[%zu].parameters", i);
            if (params && !json_is_null(params) && !json_is_object(params))
                return srv_err(e, 400, p, "invalid_type", "'%s' must be a JSON schema object", p);
            snprintf(p, sizeof p, "tools[%zu].strict", i);
            if (strict && !json_is_null(strict) && !json_is_boolean(strict))
                return srv_err(e, 400, p, "invalid_type", "'%s' must be a boolean", p);
            json_t *fn = json_pack("{s:O}", "name", name);
            if (desc && json_is_string(desc)) json_object_set(fn, "description", desc);
            if (params && json_is_object(params)) json_object_set(fn, "parameters", params);
            if (json_array_append_new(r->tools, json_pack("{s:s, s:o}", "type", "function", "function", fn)))
                return srv_err(e, 500, NULL, NULL, "out of memory");
        }
        if (json_array_size(r->tools) > 0) r->q.tools = r->tools;
    }
    size_t nt = r->tools ? json_array_size(r->tools) : 0;
    json_t *tc = json_object_get(root, "tool_choice");
    if (json_is_string(tc)) {
        const char *v = json_string_value(tc);
        if (!strcmp(v, "auto"))
            r->q.tool_choice = ENG_TOOLS_AUTO;
        else if (!strcmp(v, "none"))
            r->q.tool_choice = ENG_TOOLS_NONE;
        else if (!strcmp(v, "required"))
            r->q.tool_choice = ENG_TOOLS_REQUIRED;
        else
            return srv_err(
                e, 400, "tool_choice", "invalid_value",
                "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": "
                "...}, got '%.40s'",
                v);
        if (r->q.tool_choice == ENG_TOOLS_REQUIRED && nt == 0)
            return srv_err(e, 400, "tool_choice", "invalid_value",
                           "'tool_choice' is 'required' but 'tools' is empty");
    } else if (json_is_object(tc)) {
        json_t *type = json_object_get(tc, "type"), *name = json_object_get(tc, "name");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function"))
            return srv_err(
                e, 400, "tool_choice.type", "unsupported_value",
                "a 'tool_choice' object must be {\"type\": \"function\", \"name\": ...}; kiln runs "
                "function tools only");
        if (!json_is_string(name))
            return srv_err(e, 400, "tool_choice.name", "missing_field",
                           "'tool_choice.name' must be a string");
        const char *want = json_string_value(name);
        bool found = false;
        for (size_t i = 0; i < nt && !found; i++)
            found = !strcmp(json_string_value(json_object_get(
                                json_object_get(json_array_get(r->tools, i), "function"), "name")),
                            want);
        if (!found)
            return srv_err(e, 400, "tool_choice", "invalid_value",
                           "'tool_choice' names the function '%.64s', which is not in 'tools'", want);
        r->q.tool_choice = ENG_TOOLS_NAMED;
        r->q.tool_name = want;
    } else if (tc && !json_is_null(tc)) {
        return srv_err(e, 400, "tool_choice", "invalid_type", "'tool_choice' must be a string or an object");
    }
    return srv_get_bool(root, "parallel_tool_calls", "parallel_tool_calls", &r->q.parallel_tool_calls, e);
}

/* text.format: plain text, a JSON object, or JSON valid against a schema. */
static bool parse_text(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *text = json_object_get(root, "text");
    if (!text || json_is_null(text)) return true;
    if (!json_is_object(text)) return srv_err(e, 400, "text", "invalid_type", "'text' must be an object");
    json_t *verb = json_object_get(text, "verbosity");
    if (verb && !json_is_null(verb) && !(json_is_string(verb) && !strcmp(json_string_value(verb), "medium")))
        return srv_err(e, 400, "text.verbosity", "unsupported_value",
                       "'text.verbosity' other than 'medium' is not supported");
    json_t *f = json_object_get(text, "format");
    if (!f || json_is_null(f)) return true;
    json_t *type = json_object_get(f, "type");
    if (!json_is_object(f) || !json_is_string(type))
        return srv_err(e, 400, "text.format", "invalid_type",
                       "'text.format' must be an object with a string 'type'");
    const char *t = json_string_value(type);
    if (!strcmp(t, "text")) return true;
    if (!strcmp(t, "json_object")) {
        if (!(r->schema = json_pack("{s:s}", "type", "object")))
            return srv_err(e, 500, NULL, NULL, "out of memory");
        r->q.json_schema = r->schema;
        r->q.json_schema_param = "text.format";
        return true;
    }
    if (!strcmp(t, "json_schema")) {
        json_t *name = json_object_get(f, "name"), *schema = json_object_get(f, "schema"),
               *strict = json_object_get(f, "strict");
        if (!json_is_string(name) || json_string_length(name) == 0)
            return srv_err(e, 400, "text.format.name", name ? "invalid_type" : "missing_field",
                           "'text.format.name' must be a non-empty string");
        if (!json_is_object(schema))
            return srv_err(e, 400, "text.format.schema", schema ? "invalid_type" : "missing_field",
                           "'text.format.schema' must be a JSON schema object");
        if (strict && !json_is_null(strict) && !json_is_boolean(strict))
            return srv_err(e, 400, "text.format.strict", "invalid_type",
                           "'text.format.strict' must be a boolean");
        r->q.json_schema = schema;
        r->q.json_schema_param = "text.format.schema";
        return true;
    }
    return srv_err(e, 400, "text.format.type", "invalid_value",
                   "'text.format.type' must be 'text', 'json_object' or 'json_schema', got '%.40s'", t);
}

/* reasoning.effort turns the template's thinking off ("none", "minimal")
 * or on ("low", "medium", "high"); kiln has no degrees between. */
static bool parse_reasoning(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *rz = json_object_get(root, "reasoning");
    if (!rz || json_is_null(rz)) return true;
    if (!json_is_object(rz))
        return srv_err(e, 400, "reasoning", "invalid_type", "'reasoning' must be an object");
    const char *sum[] = {"summary", "generate_summary"};
    for (int i = 0; i < 2; i++) {
        json_t *s = json_object_get(rz, sum[i]);
        char p[40];
        snprintf(p, sizeof p, "reasoning.%s", sum[i]);
        if (s && !json_is_null(s))
            return srv_err(
                e, 400, p, "unsupported_value",
                "reasoning summaries are not produced: the reasoning item carries the model's whole "
                "reasoning text; leave '%s' unset",
                p);
    }
    const char *eff = NULL;
    if (!srv_get_str(rz, "effort", "reasoning.effort", &eff, NULL, e)) return false;
    if (!eff) return true;
    if (!strcmp(eff, "none") || !strcmp(eff, "minimal"))
        r->q.think = ENG_THINK_OFF;
    else if (!strcmp(eff, "low") || !strcmp(eff, "medium") || !strcmp(eff, "high"))
        r->q.think = ENG_THINK_ON;
    else
        return srv_err(e, 400, "reasoning.effort", "invalid_value",
                       "'reasoning.effort' must be none, minimal, low, medium or high, got '%.40s'", eff);
    return true;
}

/* Fields of OpenAI's API whose effect kiln does not have: refused rather
 * than ignored. */
static bool refuse_unsupported(json_t *root, srv_error *e) {
    json_t *v;
    bool b = false;
    if (!srv_get_bool(root, "background", "background", &b, e)) return false;
    if (b)
        return srv_err(e, 400, "background", "unsupported_value", "background responses are not supported");
    const char *objs[] = {"conversation", "prompt"};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(root, objs[i])) && !json_is_null(v))
            return srv_err(e, 400, objs[i], "unsupported", "'%s' is not supported", objs[i]);
    if ((v = json_object_get(root, "include")) && !json_is_null(v) &&
        !(json_is_array(v) && json_array_size(v) == 0))
        return srv_err(e, 400, "include", "unsupported_value",
                       "'include' is not supported (no extra output data)");
    if ((v = json_object_get(root, "truncation")) && !json_is_null(v) &&
        !(json_is_string(v) && !strcmp(json_string_value(v), "disabled")))
        return srv_err(e, 400, "truncation", "unsupported_value",
                       "only 'truncation': 'disabled' is supported (a prompt over the context is an error)");
    if ((v = json_object_get(root, "grammar")) && !json_is_null(v))
        return srv_err(e, 400, "grammar", "unsupported",
                       "'grammar' is not taken here; constrain with 'text.format'");
    long long x = 0;
    if (!srv_get_int(root, "top_logprobs", "top_logprobs", 0, 20, &x, NULL, e)) return false;
    if (x) return srv_err(e, 400, "top_logprobs", "unsupported_value", "'top_logprobs' is not supported");
    /* fields without an effect on the output, checked for their type */
    const char *str = NULL;
    if (!srv_get_str(root, "user", "user", &str, NULL, e)) return false;
    if (!srv_get_str(root, "previous_response_id", "previous_response_id", &str, NULL, e)) return false;
    if ((v = json_object_get(root, "metadata")) && !json_is_null(v) && !json_is_object(v))
        return srv_err(e, 400, "metadata", "invalid_type", "'metadata' must be an object");
    b = true;
    return srv_get_bool(root, "store", "store", &b, e);
}

static bool parse_responses(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!srv_get_str(root, "model", "model", &r->q.model, NULL, e)) return false;
    if (!srv_get_bool(root, "stream", "stream", &r->stream, e)) return false;
    if (!srv_get_bool(root, "cache", "cache", &r->q.cache, e)) return false;
    if (!srv_get_sampler_fields(root, "", lim, r, e) || !srv_get_engine_fields(root, "", r, e)) return false;
    bool set = false;
    long long x = -1;
    if (!srv_get_int(root, "max_output_tokens", "max_output_tokens", 1, 1 << 24, &x, &set, e)) return false;
    if (set && x > lim->max_tokens)
        return srv_err(e, 400, "max_output_tokens", "limit_exceeded",
                       "'max_output_tokens' is %lld; this server allows at most %d (--limit-max-tokens)", x,
                       lim->max_tokens);
    if (set) {
        r->q.n_predict = (int32_t)x;
        r->q.n_predict_set = true;
    }
    return refuse_unsupported(root, e) && parse_reasoning(root, r, e) && parse_input(root, lim, r, e) &&
           parse_tools(root, r, e) && parse_text(root, r, e);
}

/* ==== a job ================================================================== */

typedef enum { IT_NONE, IT_MESSAGE, IT_REASONING, IT_CALL } item_kind;

typedef struct rs_job {
    char id[48];    /* resp_... */
    size_t n_instr; /* 1 when r.messages[0] is the instructions (not part of the stored conversation) */
    bool store;
    /* a stream */
    json_t *output; /* the output items so far */
    long long seq;  /* the next event's sequence_number */
    item_kind kind; /* the open item */
    char item_id[48];
    kn_buf text; /* the open item's text or arguments */
} rs_job;

static void release(srv_job *j) {
    rs_job *x = j->dx;
    if (!x) return;
    json_decref(x->output);
    kn_buf_free(&x->text);
    free(x);
    j->dx = NULL;
}

/* The job's own state, and the previous response's conversation put
 * before this request's input (after its instructions). */
static bool prepare(srv_job *j, srv_error *e) {
    rs_job *x = calloc(1, sizeof *x);
    if (!x || !(x->output = json_array())) {
        free(x);
        return srv_err(e, 500, NULL, NULL, "out of memory");
    }
    j->dx = x;
    srv_new_id("resp_", x->id, sizeof x->id);
    x->store = true;
    srv_get_bool(j->root, "store", "store", &x->store, e); /* checked by parse */
    x->n_instr = json_is_string(json_object_get(j->root, "instructions")) ? 1 : 0;
    json_t *prev = json_object_get(j->root, "previous_response_id");
    if (!json_is_string(prev)) return true;
    const char *pid = json_string_value(prev);
    char *text = store_get(j->s->responses, pid, true);
    json_t *conv = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!json_is_array(conv)) {
        json_decref(conv);
        /* the issue asks for a clear 404 (OpenAI itself answers 400 with this code) */
        return srv_err(e, 404, "previous_response_id", "previous_response_not_found",
                       "Previous response with id '%.100s' not found: it is unknown, expired, evicted from the "
                       "server's store, or was created with store: false.",
                       pid);
    }
    srv_gen_req *r = &j->r;
    size_t total = json_array_size(conv) + json_array_size(r->messages);
    if (total > (size_t)j->s->lim.messages) {
        json_decref(conv);
        return srv_err(
            e, 400, "previous_response_id", "limit_exceeded",
            "the conversation would have %zu messages; this server allows at most %d (--limit-messages)",
            total, j->s->lim.messages);
    }
    json_t *m = json_array();
    if (!m) {
        json_decref(conv);
        return srv_err(e, 500, NULL, NULL, "out of memory");
    }
    for (size_t i = 0; i < x->n_instr; i++)
        json_array_append(m, json_array_get(r->messages, i));
    json_array_extend(m, conv);
    json_decref(conv);
    for (size_t i = x->n_instr; i < json_array_size(r->messages); i++)
        json_array_append(m, json_array_get(r->messages, i));
    json_decref(r->messages);
    r->messages = m;
    r->q.messages = m;
    return true;
}

/* ---- the response object ------------------------------------------------------ */

/* The request's value of key, or dflt (taken) when absent or null. */
static json_t *echo(const srv_job *j, const char *key, json_t *dflt) {
    json_t *v = json_object_get(j->root, key);
    if (!v || json_is_null(v)) return dflt;
    json_decref(dflt);
    return json_incref(v);
}

/* A float setting as the client wrote it (0.95, not 0.949999988). */
static double round6(float v) {
    return round((double)v * 1e6) / 1e6;
}

static json_t *usage_json(const srv_job *j) {
    const eng_req_result *r = &j->res;
    return json_pack("{s:I, s:{s:i}, s:I, s:{s:i}, s:I}", "input_tokens", (json_int_t)r->n_prompt,
                     "input_tokens_details", "cached_tokens", 0, "output_tokens", (json_int_t)r->n_gen,
                     "output_tokens_details", "reasoning_tokens", 0, "total_tokens",
                     (json_int_t)(r->n_prompt + r->n_gen));
}

/* The response object with status and output (taken); usage once the
 * answer ended. */
static json_t *resp_object(srv_job *j, const char *status, json_t *output, bool ended) {
    rs_job *x = j->dx;
    json_t *rz = json_object_get(j->root, "reasoning");
    json_t *eff = json_object_get(rz, "effort");
    json_t *text = json_object_get(j->root, "text");
    json_t *fmt = json_object_get(text, "format");
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:b, s:n, s:n}", "id", x->id, "object", "response",
                          "created_at", (json_int_t)j->created, "status", status, "background", false,
                          "error", "incomplete_details");
    if (!o) {
        json_decref(output);
        return NULL;
    }
    json_object_set_new(o, "instructions", echo(j, "instructions", json_null()));
    json_object_set_new(o, "max_output_tokens", echo(j, "max_output_tokens", json_null()));
    json_object_set_new(o, "model", json_string(srv_job_model(j)));
    json_object_set_new(o, "output", output);
    json_object_set_new(o, "parallel_tool_calls", json_boolean(j->r.q.parallel_tool_calls));
    json_object_set_new(o, "previous_response_id", echo(j, "previous_response_id", json_null()));
    json_object_set_new(o, "reasoning",
                        json_pack("{s:O, s:n}", "effort", eff ? eff : json_null(), "summary"));
    json_object_set_new(o, "store", json_boolean(x->store));
    json_object_set_new(o, "temperature", json_real(round6(j->r.q.sp.temp)));
    fmt = fmt && !json_is_null(fmt) ? json_incref(fmt) : json_pack("{s:s}", "type", "text");
    json_object_set_new(o, "text", json_pack("{s:o}", "format", fmt));
    json_object_set_new(o, "tool_choice", echo(j, "tool_choice", json_string("auto")));
    json_object_set_new(o, "tools", echo(j, "tools", json_array()));
    json_object_set_new(o, "top_p", json_real(round6(j->r.q.sp.top_p)));
    json_object_set_new(o, "truncation", json_string("disabled"));
    json_object_set_new(o, "usage", ended ? usage_json(j) : json_null());
    json_object_set_new(o, "user", echo(j, "user", json_null()));
    json_object_set_new(o, "metadata", echo(j, "metadata", json_object()));
    return o;
}

/* The output as one assistant chat message: its text and its tool calls. */
static json_t *output_message(json_t *output) {
    kn_buf b = {0};
    json_t *calls = json_array(), *it;
    size_t i;
    json_array_foreach(output, i, it) {
        const char *type = json_string_value(json_object_get(it, "type"));
        if (!type) continue;
        if (!strcmp(type, "message")) {
            json_t *t = json_object_get(json_array_get(json_object_get(it, "content"), 0), "text");
            if (json_is_string(t)) kn_buf_add(&b, json_string_value(t), json_string_length(t), 0);
        } else if (!strcmp(type, "function_call")) {
            json_array_append_new(calls, json_pack("{s:O, s:s, s:{s:O, s:O}}", "id",
                                                   json_object_get(it, "call_id"), "type", "function",
                                                   "function", "name", json_object_get(it, "name"),
                                                   "arguments", json_object_get(it, "arguments")));
        }
    }
    json_t *m = json_pack("{s:s, s:o}", "role", "assistant", "content", srv_json_text(b.p ? b.p : "", b.n));
    kn_buf_free(&b);
    if (m && json_array_size(calls)) json_object_set(m, "tool_calls", calls);
    json_decref(calls);
    return m;
}

/* Keeps the finished response (store: true) with its conversation: the
 * messages it was given after its instructions, then its answer. */
static void keep(srv_job *j, json_t *resp) {
    rs_job *x = j->dx;
    if (!x->store || !resp) return;
    json_t *conv = json_array();
    for (size_t i = x->n_instr; i < json_array_size(j->r.messages); i++)
        json_array_append(conv, json_array_get(j->r.messages, i));
    json_array_append_new(conv, output_message(json_object_get(resp, "output")));
    char *c = json_dumps(conv, JSON_COMPACT), *r = json_dumps(resp, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(conv);
    if (!c || !r || !store_put(j->s->responses, x->id, c, r))
        KN_DEBUG("%s: response %s not stored (store off, over --responses-mib, or out of memory)", j->id,
                 x->id);
}

/* status and incomplete_details of a finished answer. */
static const char *final_status(srv_job *j, json_t *resp) {
    if (j->res.finish != ENG_FINISH_LENGTH) return "completed";
    json_object_set_new(resp, "incomplete_details", json_pack("{s:s}", "reason", "max_output_tokens"));
    return "incomplete";
}

/* ---- output items ------------------------------------------------------------- */

static json_t *msg_item(const char *id, const char *status, json_t *text) {
    json_t *content = text ? json_pack("[{s:s, s:o, s:[], s:[]}]", "type", "output_text", "text", text,
                                       "annotations", "logprobs")
                           : json_array();
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", id, "type", "message", "status", status, "role",
                     "assistant", "content", content);
}

static json_t *reasoning_item(const char *id, json_t *text) {
    json_t *content = text ? json_pack("[{s:s, s:o}]", "type", "reasoning_text", "text", text) : json_array();
    return json_pack("{s:s, s:s, s:[], s:o}", "id", id, "type", "reasoning", "summary", "content", content);
}

static json_t *call_item(const char *id, const char *status, const char *call_id, const char *name,
                         json_t *args) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "type", "function_call", "status", status,
                     "call_id", call_id, "name", name, "arguments", args);
}

/* ---- whole answers -------------------------------------------------------------- */

static json_t *whole(srv_job *j) {
    json_t *out = json_array();
    char id[48];
    if (j->reasoning.n) {
        srv_new_id("rs_", id, sizeof id);
        json_array_append_new(out, reasoning_item(id, srv_json_text(j->reasoning.p, j->reasoning.n)));
    }
    size_t nc = j->calls ? json_array_size(j->calls) : 0;
    if (j->content.n || nc == 0) {
        srv_new_id("msg_", id, sizeof id);
        json_array_append_new(
            out, msg_item(id, "completed", srv_json_text(j->content.p ? j->content.p : "", j->content.n)));
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *c = json_array_get(j->calls, i);
        srv_new_id("fc_", id, sizeof id);
        json_array_append_new(out, call_item(id, "completed", json_string_value(json_object_get(c, "id")),
                                             json_string_value(json_object_get(c, "name")),
                                             json_incref(json_object_get(c, "arguments"))));
    }
    json_t *o = resp_object(j, "completed", out, true);
    if (o) json_object_set_new(o, "status", json_string(final_status(j, o)));
    keep(j, o);
    return o;
}

/* ---- streams ---------------------------------------------------------------------- */

/* An event of this type: its fields are added, then emit() sends it. */
static json_t *ev_new(const char *type) {
    return json_pack("{s:s}", "type", type);
}

static void emit(srv_job *j, json_t *o) {
    rs_job *x = j->dx;
    if (!o) return;
    json_object_set_new(o, "sequence_number", json_integer(x->seq++));
    char type[64]; /* srv_job_emit_event takes o */
    snprintf(type, sizeof type, "%s", json_string_value(json_object_get(o, "type")));
    srv_job_emit_event(j, type, o);
}

static size_t cur_index(const rs_job *x) {
    return json_array_size(x->output) - 1;
}

/* An event about the open item at output_index (and content_index 0). */
static json_t *ev_item(rs_job *x, const char *type, bool content) {
    json_t *o = ev_new(type);
    json_object_set_new(o, "item_id", json_string(x->item_id));
    json_object_set_new(o, "output_index", json_integer((json_int_t)cur_index(x)));
    if (content) json_object_set_new(o, "content_index", json_integer(0));
    return o;
}

static void close_item(srv_job *j) {
    rs_job *x = j->dx;
    if (x->kind == IT_NONE) return;
    json_t *item = json_array_get(x->output, cur_index(x)), *o;
    json_t *text = srv_json_text(x->text.p ? x->text.p : "", x->text.n);
    if (x->kind == IT_MESSAGE) {
        o = ev_item(x, "response.output_text.done", true);
        json_object_set(o, "text", text);
        json_object_set_new(o, "logprobs", json_array());
        emit(j, o);
        json_t *part = json_pack("{s:s, s:O, s:[], s:[]}", "type", "output_text", "text", text, "annotations",
                                 "logprobs");
        o = ev_item(x, "response.content_part.done", true);
        json_object_set(o, "part", part);
        emit(j, o);
        json_array_append_new(json_object_get(item, "content"), part);
        json_object_set_new(item, "status", json_string("completed"));
    } else if (x->kind == IT_REASONING) {
        o = ev_item(x, "response.reasoning_text.done", true);
        json_object_set(o, "text", text);
        emit(j, o);
        json_t *part = json_pack("{s:s, s:O}", "type", "reasoning_text", "text", text);
        o = ev_item(x, "response.content_part.done", true);
        json_object_set(o, "part", part);
        emit(j, o);
        json_array_append_new(json_object_get(item, "content"), part);
    } else {
        o = ev_item(x, "response.function_call_arguments.done", false);
        json_object_set(o, "name", json_object_get(item, "name"));
        json_object_set(o, "arguments", text);
        emit(j, o);
        json_object_set(item, "arguments", text);
        json_object_set_new(item, "status", json_string("completed"));
    }
    json_decref(text);
    o = ev_new("response.output_item.done");
    json_object_set_new(o, "output_index", json_integer((json_int_t)cur_index(x)));
    json_object_set(o, "item", item);
    emit(j, o);
    x->kind = IT_NONE;
    x->text.n = 0;
}

/* Opens an item of this kind (closing the open one) with a fresh id
 * "<prefix>...": item (taken) is its in-progress form. */
static void open_item(srv_job *j, item_kind kind, const char *prefix, json_t *item) {
    rs_job *x = j->dx;
    close_item(j);
    srv_new_id(prefix, x->item_id, sizeof x->item_id);
    json_object_set_new(item, "id", json_string(x->item_id));
    json_array_append_new(x->output, item);
    x->kind = kind;
    json_t *o = ev_new("response.output_item.added");
    json_object_set_new(o, "output_index", json_integer((json_int_t)cur_index(x)));
    json_object_set(o, "item", item);
    emit(j, o);
    if (kind == IT_CALL) return;
    o = ev_item(x, "response.content_part.added", true);
    json_object_set_new(o, "part",
                        kind == IT_MESSAGE ? json_pack("{s:s, s:s, s:[], s:[]}", "type", "output_text",
                                                       "text", "", "annotations", "logprobs")
                                           : json_pack("{s:s, s:s}", "type", "reasoning_text", "text", ""));
    emit(j, o);
}

static void text_delta(srv_job *j, item_kind kind, const char *text, size_t n) {
    rs_job *x = j->dx;
    if (x->kind != kind)
        open_item(j, kind, kind == IT_MESSAGE ? "msg_" : "rs_",
                  kind == IT_MESSAGE ? msg_item("", "in_progress", NULL) : reasoning_item("", NULL));
    if (!n) return;
    kn_buf_add(&x->text, text, n, 0);
    json_t *o =
        ev_item(x, kind == IT_MESSAGE ? "response.output_text.delta" : "response.reasoning_text.delta", true);
    json_object_set_new(o, "delta", srv_json_text(text, n));
    if (kind == IT_MESSAGE) json_object_set_new(o, "logprobs", json_array());
    emit(j, o);
}

static void stream_start(srv_job *j) {
    json_t *o = ev_new("response.created");
    json_object_set_new(o, "response", resp_object(j, "in_progress", json_array(), false));
    emit(j, o);
    o = ev_new("response.in_progress");
    json_object_set_new(o, "response", resp_object(j, "in_progress", json_array(), false));
    emit(j, o);
}

static void stream_event(srv_job *j, const chat_event *ev) {
    rs_job *x = j->dx;
    if (ev->kind == CHAT_EV_CONTENT) {
        text_delta(j, IT_MESSAGE, ev->text, ev->len);
    } else if (ev->kind == CHAT_EV_REASONING) {
        text_delta(j, IT_REASONING, ev->text, ev->len);
    } else if (ev->kind == CHAT_EV_TOOL_CALL) {
        char call_id[64];
        if (ev->id && ev->id[0])
            snprintf(call_id, sizeof call_id, "%s", ev->id);
        else
            srv_tool_call_id(j, "call_", ev->index, call_id, sizeof call_id);
        open_item(j, IT_CALL, "fc_",
                  call_item("", "in_progress", call_id, ev->name ? ev->name : "", json_string("")));
        if (ev->args_len) {
            kn_buf_add(&x->text, ev->args, ev->args_len, 0);
            json_t *o = ev_item(x, "response.function_call_arguments.delta", false);
            json_object_set_new(o, "delta", srv_json_text(ev->args, ev->args_len));
            emit(j, o);
        }
        close_item(j); /* the parser reports a call once, whole */
    }
}

static void stream_end(srv_job *j) {
    rs_job *x = j->dx;
    if (j->res.finish == ENG_FINISH_ERROR || j->res.finish == ENG_FINISH_CANCELLED) {
        close_item(j);
        json_t *resp = resp_object(j, "failed", json_incref(x->output), true);
        json_object_set_new(resp, "error",
                            json_pack("{s:s, s:s}", "code", "server_error", "message",
                                      j->res.err[0] ? j->res.err : "generation failed"));
        json_t *o = ev_new("response.failed");
        json_object_set_new(o, "response", resp);
        emit(j, o);
        return;
    }
    bool any_call = false;
    for (size_t i = 0; i < json_array_size(x->output); i++)
        any_call |= !strcmp(json_string_value(json_object_get(json_array_get(x->output, i), "type")),
                            "function_call");
    if (!any_call && x->kind != IT_MESSAGE) {
        bool has_msg = false;
        for (size_t i = 0; i < json_array_size(x->output); i++)
            has_msg |=
                !strcmp(json_string_value(json_object_get(json_array_get(x->output, i), "type")), "message");
        if (!has_msg) text_delta(j, IT_MESSAGE, "", 0); /* an empty answer is an empty message */
    }
    close_item(j);
    json_t *resp = resp_object(j, "completed", json_incref(x->output), true);
    const char *status = final_status(j, resp);
    json_object_set_new(resp, "status", json_string(status));
    keep(j, resp);
    json_t *o = ev_new(strcmp(status, "completed") ? "response.incomplete" : "response.completed");
    json_object_set_new(o, "response", resp);
    emit(j, o);
}

const srv_gen_dialect srv_openai_responses = {
    .name = "openai.responses",
    .error_json = srv_openai_error_json,
    .sse = true,
    .stream_type = "text/event-stream",
    .id_prefix = "resp",
    .parse = parse_responses,
    .stream_start = stream_start,
    .stream_event = stream_event,
    .stream_end = stream_end,
    .whole = whole,
    .prepare = prepare,
    .release = release,
};

/* ==== GET and DELETE /v1/responses/{id} ========================================== */

static enum MHD_Result not_found(struct MHD_Connection *c, const conn_ctx *cx) {
    srv_error e;
    srv_err(&e, 404, NULL, "not_found", "Response with id '%.100s' not found.", cx->arg);
    snprintf(e.type, sizeof e.type, "invalid_request_error");
    return srv_send_error(c, cx, &e);
}

enum MHD_Result srv_h_response_get(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    const char *stream = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "stream");
    if (stream && strcmp(stream, "false")) {
        srv_error e;
        srv_err(&e, 400, "stream", "unsupported_value", "streaming a stored response again is not supported");
        return srv_send_error(c, cx, &e);
    }
    char *t = store_get(s->responses, cx->arg, false);
    if (!t) return not_found(c, cx);
    return srv_send_body(c, 200, "application/json", t, strlen(t));
}

enum MHD_Result srv_h_response_delete(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    if (!store_del(s->responses, cx->arg)) return not_found(c, cx);
    return srv_send_json(c, 200,
                         json_pack("{s:s, s:s, s:b}", "id", cx->arg, "object", "response", "deleted", true));
}
