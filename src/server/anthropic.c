/*
 * anthropic.c — the Anthropic Messages dialect: POST /v1/messages and
 * POST /v1/messages/count_tokens.
 *
 * A request ({model, max_tokens, system, messages of text / tool_use /
 * tool_result / thinking blocks, tools with input_schema, tool_choice,
 * stop_sequences, thinking, ...}) becomes the session's canonical request:
 * OpenAI-shaped messages (the system prompt first; an assistant's tool_use
 * blocks as tool_calls, each tool_result as a "tool" message) and OpenAI
 * function tools. The answer is a message of content blocks (thinking,
 * text, tool_use) built from the chat parser's events, streamed as SSE with
 * named events (message_start, ping, content_block_start / _delta / _stop
 * per block, message_delta, message_stop; an `error` event when the
 * generation fails mid-stream). Every error of these routes has Anthropic's
 * shape {"type": "error", "error": {"type", "message"}}.
 *
 * Fields that would change the answer and that kiln lacks (server tools,
 * images and documents, MCP servers, containers, context management,
 * output_config.effort) are a 400 naming them; fields that do not change it
 * (metadata, cache_control, service_tier, ...) are accepted. docs/server.md
 * has the mapping.
 */
#include "dialect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *srv_anthropic_error_json(const srv_error *e) {
    const char *type;
    switch (e->status) {
    case 401: type = "authentication_error"; break;
    case 403: type = "permission_error"; break;
    case 404: type = "not_found_error"; break;
    case 413: type = "request_too_large"; break;
    case 429: type = "rate_limit_error"; break;
    case 503: type = "overloaded_error"; break;
    default: type = e->status >= 500 ? "api_error" : "invalid_request_error"; break;
    }
    json_t *msg = srv_json_text(e->msg, strnlen(e->msg, sizeof e->msg));
    return json_pack("{s:s, s:{s:s, s:o}}", "type", "error", "error", "type", type, "message", msg);
}

/* ---- requests ------------------------------------------------------------------------- */

/* Top-level fields that change the answer and that kiln does not have: a
 * 400 unless absent, null or empty. */
static const char *const UNSUPPORTED[] = {"container", "mcp_servers", "context_management"};

static bool oom(srv_error *e) {
    return srv_err(e, 500, NULL, NULL, "out of memory");
}

/* The type of a content block, or NULL (e set) when it is not an object
 * with a string "type". */
static const char *block_type(json_t *b, const char *param, srv_error *e) {
    json_t *t = json_object_get(b, "type");
    if (!json_is_object(b) || !json_is_string(t)) {
        srv_err(e, 400, param, "invalid_type", "'%s' must be a content block: an object with a string 'type'",
                param);
        return NULL;
    }
    return json_string_value(t);
}

/* The text of a text block (param names the block). */
static bool block_text(json_t *b, const char *param, kn_buf *out, srv_error *e) {
    json_t *t = json_object_get(b, "text");
    if (!json_is_string(t))
        return srv_err(e, 400, param, "invalid_type", "'%s.text' must be a string", param);
    if (!kn_buf_add(out, json_string_value(t), json_string_length(t), 0)) return oom(e);
    return true;
}

/* Content given as a string or an array of text blocks (system, a system
 * or tool_result content) as one text: the blocks' texts joined as they
 * are, as kiln joins OpenAI text parts. */
static json_t *text_content(json_t *v, const char *param, srv_error *e) {
    if (json_is_string(v)) return json_incref(v);
    if (!json_is_array(v)) {
        srv_err(e, 400, param, "invalid_type", "'%s' must be a string or an array of text blocks", param);
        return NULL;
    }
    kn_buf b = {0};
    size_t k;
    json_t *blk;
    char p[128];
    json_array_foreach(v, k, blk) {
        snprintf(p, sizeof p, "%s[%zu]", param, k);
        const char *type = block_type(blk, p, e);
        if (!type) goto fail;
        if (strcmp(type, "text")) {
            srv_err(
                e, 400, p, "unsupported_content",
                "'%s' is a '%.40s' block; only text blocks are supported here (kiln's models read text only)",
                p, type);
            goto fail;
        }
        if (!block_text(blk, p, &b, e)) goto fail;
    }
    json_t *s = srv_json_text(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    if (!s) oom(e);
    return s;
fail:
    kn_buf_free(&b);
    return NULL;
}

static bool push(json_t *msgs, json_t *m, srv_error *e) {
    if (!m || json_array_append_new(msgs, m)) return oom(e);
    return true;
}

/* A user message's blocks: text blocks become a user message, each
 * tool_result a tool message, in their order. */
static bool user_blocks(json_t *content, size_t i, json_t *msgs, srv_error *e) {
    kn_buf text = {0};
    bool have_text = false;
    size_t k;
    json_t *blk;
    char p[96];
    json_array_foreach(content, k, blk) {
        snprintf(p, sizeof p, "messages[%zu].content[%zu]", i, k);
        const char *type = block_type(blk, p, e);
        if (!type) goto fail;
        if (!strcmp(type, "text")) {
            if (!block_text(blk, p, &text, e)) goto fail;
            have_text = true;
            continue;
        }
        if (strcmp(type, "tool_result")) {
            if (!strcmp(type, "tool_use") || !strcmp(type, "thinking"))
                srv_err(e, 400, p, "invalid_value",
                        "'%s' is a '%s' block, which only an assistant message can hold", p, type);
            else
                srv_err(
                    e, 400, p, "unsupported_content",
                    "'%s' is a '%.40s' block, which kiln does not support; a user message may hold text and "
                    "tool_result blocks (kiln's models read text only)",
                    p, type);
            goto fail;
        }
        /* the text before a tool result stays before it */
        if (have_text) {
            if (!push(msgs,
                      json_pack("{s:s, s:o}", "role", "user", "content",
                                srv_json_text(text.p ? text.p : "", text.n)),
                      e))
                goto fail;
            text.n = 0;
            have_text = false;
        }
        json_t *id = json_object_get(blk, "tool_use_id");
        if (!json_is_string(id)) {
            srv_err(e, 400, p, "invalid_type", "'%s.tool_use_id' must be a string", p);
            goto fail;
        }
        bool is_error = false;
        char pe[128];
        snprintf(pe, sizeof pe, "%s.is_error", p);
        if (!srv_get_bool(blk, "is_error", pe, &is_error, e)) goto fail;
        json_t *c = json_object_get(blk, "content"), *body;
        snprintf(pe, sizeof pe, "%s.content", p);
        if (!c || json_is_null(c))
            body = json_string("");
        else if (!(body = text_content(c, pe, e)))
            goto fail;
        if (is_error && body) {
            /* a chat template has no notion of a failed call: the model reads it */
            char *t = malloc(json_string_length(body) + 8);
            json_t *nb = NULL;
            if (t) {
                memcpy(t, "Error: ", 7);
                memcpy(t + 7, json_string_value(body), json_string_length(body));
                nb = json_stringn(t, json_string_length(body) + 7);
                free(t);
            }
            json_decref(body);
            body = nb;
        }
        if (!body) {
            oom(e);
            goto fail;
        }
        if (!push(msgs, json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", id, "content", body), e))
            goto fail;
    }
    if (have_text &&
        !push(msgs,
              json_pack("{s:s, s:o}", "role", "user", "content", srv_json_text(text.p ? text.p : "", text.n)),
              e))
        goto fail;
    kn_buf_free(&text);
    return true;
fail:
    kn_buf_free(&text);
    return false;
}

/* An assistant message's blocks: its text, its tool_use blocks as
 * tool_calls (arguments = the input object) and its thinking as
 * reasoning_content, in one message. */
static bool assistant_blocks(json_t *content, size_t i, json_t *msgs, srv_error *e) {
    kn_buf text = {0}, thinking = {0};
    json_t *calls = NULL;
    size_t k;
    json_t *blk;
    char p[96];
    json_array_foreach(content, k, blk) {
        snprintf(p, sizeof p, "messages[%zu].content[%zu]", i, k);
        const char *type = block_type(blk, p, e);
        if (!type) goto fail;
        if (!strcmp(type, "text")) {
            if (!block_text(blk, p, &text, e)) goto fail;
        } else if (!strcmp(type, "thinking")) {
            json_t *t = json_object_get(blk, "thinking");
            if (!json_is_string(t)) {
                srv_err(e, 400, p, "invalid_type", "'%s.thinking' must be a string", p);
                goto fail;
            }
            if (!kn_buf_add(&thinking, json_string_value(t), json_string_length(t), 0)) goto oom;
        } else if (!strcmp(type, "tool_use")) {
            json_t *id = json_object_get(blk, "id"), *name = json_object_get(blk, "name");
            json_t *input = json_object_get(blk, "input");
            if (!json_is_string(id) || !json_is_string(name) || !json_is_object(input)) {
                srv_err(e, 400, p, "invalid_type",
                        "'%s' must have a string 'id', a string 'name' and an object 'input'", p);
                goto fail;
            }
            if (!calls && !(calls = json_array())) goto oom;
            json_t *call = json_pack("{s:O, s:s, s:{s:O, s:O}}", "id", id, "type", "function", "function",
                                     "name", name, "arguments", input);
            if (!call || json_array_append_new(calls, call)) goto oom;
        } else {
            srv_err(e, 400, p, "unsupported_content",
                    "'%s' is a '%.40s' block, which kiln does not support in an assistant message; it may "
                    "hold text, "
                    "thinking and tool_use blocks",
                    p, type);
            goto fail;
        }
    }
    json_t *m =
        json_pack("{s:s, s:o}", "role", "assistant", "content", srv_json_text(text.p ? text.p : "", text.n));
    if (m && calls) json_object_set_new(m, "tool_calls", calls), calls = NULL;
    json_decref(calls); /* not taken when m failed */
    if (m && thinking.n) json_object_set_new(m, "reasoning_content", srv_json_text(thinking.p, thinking.n));
    kn_buf_free(&text);
    kn_buf_free(&thinking);
    return push(msgs, m, e);
oom:
    oom(e);
fail:
    json_decref(calls);
    kn_buf_free(&text);
    kn_buf_free(&thinking);
    return false;
}

/* system + messages -> r->messages. */
static bool parse_messages(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m || json_is_null(m)) return srv_err(e, 400, "messages", "missing_field", "'messages' is required");
    if (!json_is_array(m)) return srv_err(e, 400, "messages", "invalid_type", "'messages' must be an array");
    if (json_array_size(m) == 0)
        return srv_err(e, 400, "messages", "invalid_value", "'messages' must not be empty");
    if (json_array_size(m) > (size_t)lim->messages)
        return srv_err(e, 400, "messages", "limit_exceeded",
                       "'messages' has %zu entries; this server allows at most %d (--limit-messages)",
                       json_array_size(m), lim->messages);
    if (!(r->messages = json_array())) return oom(e);
    json_t *sys = json_object_get(root, "system");
    if (sys && !json_is_null(sys)) {
        json_t *text = text_content(sys, "system", e);
        if (!text) return false;
        if (json_string_length(text) == 0)
            json_decref(text);
        else if (!push(r->messages, json_pack("{s:s, s:o}", "role", "system", "content", text), e))
            return false;
    }
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        char p[64];
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(msg)) return srv_err(e, 400, p, "invalid_type", "'%s' must be an object", p);
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        snprintf(p, sizeof p, "messages[%zu].role", i);
        if (!json_is_string(role)) return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
        const char *rs = json_string_value(role);
        if (strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "system"))
            return srv_err(e, 400, p, "invalid_value",
                           "unknown role '%.40s' in %s; expected user or assistant", rs, p);
        snprintf(p, sizeof p, "messages[%zu].content", i);
        if (!content || json_is_null(content))
            return srv_err(e, 400, p, "missing_field", "'%s' is required", p);
        if (json_is_string(content) || !strcmp(rs, "system")) {
            json_t *text = text_content(content, p, e);
            if (!text || !push(r->messages, json_pack("{s:s, s:o}", "role", rs, "content", text), e))
                return false;
            continue;
        }
        if (!json_is_array(content))
            return srv_err(e, 400, p, "invalid_type", "'%s' must be a string or an array of content blocks",
                           p);
        if (!(strcmp(rs, "user") ? assistant_blocks(content, i, r->messages, e)
                                 : user_blocks(content, i, r->messages, e)))
            return false;
    }
    r->q.messages = r->messages;
    r->q.prompt_param = "messages";
    return true;
}

/* A tool name as the API allows it: [a-zA-Z0-9_-]{1,128}. */
static bool tool_name_ok(const char *s, size_t n) {
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* tools -> r->tools (OpenAI function tools), tool_choice. */
static bool parse_tools(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *tools = json_object_get(root, "tools"), *names = NULL;
    size_t n = 0;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return srv_err(e, 400, "tools", "invalid_type", "'tools' must be an array");
        n = json_array_size(tools);
    }
    if (n) {
        if (!(r->tools = json_array()) || !(names = json_object())) return oom(e);
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            char p[64];
            snprintf(p, sizeof p, "tools[%zu]", i);
            if (!json_is_object(t)) {
                srv_err(e, 400, p, "invalid_type", "'%s' must be an object", p);
                goto fail;
            }
            json_t *type = json_object_get(t, "type");
            if (type && !json_is_null(type) &&
                !(json_is_string(type) && !strcmp(json_string_value(type), "custom"))) {
                snprintf(p, sizeof p, "tools[%zu].type", i);
                srv_err(e, 400, p, "unsupported",
                        "'%s' is %.60s: server tools (web search, code execution, bash, ...) are not "
                        "supported; only "
                        "custom tools {name, description, input_schema}",
                        p, json_is_string(type) ? json_string_value(type) : "not a string");
                goto fail;
            }
            json_t *name = json_object_get(t, "name"), *desc = json_object_get(t, "description");
            json_t *schema = json_object_get(t, "input_schema");
            snprintf(p, sizeof p, "tools[%zu].name", i);
            if (!json_is_string(name) || !tool_name_ok(json_string_value(name), json_string_length(name))) {
                srv_err(e, 400, p, "invalid_value",
                        "'%s' must be a string of 1 to 128 characters a-z A-Z 0-9 _ -", p);
                goto fail;
            }
            if (json_object_get(names, json_string_value(name))) {
                srv_err(e, 400, p, "invalid_value", "tool names must be unique: '%s' is given twice",
                        json_string_value(name));
                goto fail;
            }
            json_object_set_new(names, json_string_value(name), json_true());
            snprintf(p, sizeof p, "tools[%zu].description", i);
            if (desc && !json_is_null(desc) && !json_is_string(desc)) {
                srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
                goto fail;
            }
            snprintf(p, sizeof p, "tools[%zu].input_schema", i);
            if (!json_is_object(schema)) {
                srv_err(e, 400, p, "invalid_type", "'%s' must be a JSON Schema object", p);
                goto fail;
            }
            /* OpenAI's key order (name, description, parameters): templates render tools as JSON */
            json_t *fn = json_pack("{s:O}", "name", name);
            if (fn && json_is_string(desc)) json_object_set(fn, "description", desc);
            if (fn) json_object_set(fn, "parameters", schema);
            json_t *ot = fn ? json_pack("{s:s, s:o}", "type", "function", "function", fn) : NULL;
            if (!ot || json_array_append_new(r->tools, ot)) {
                oom(e);
                goto fail;
            }
        }
        r->q.tools = r->tools;
    }
    json_t *tc = json_object_get(root, "tool_choice");
    if (tc && !json_is_null(tc)) {
        json_t *type = json_object_get(tc, "type");
        if (!json_is_object(tc) || !json_is_string(type)) {
            srv_err(e, 400, "tool_choice", "invalid_type",
                    "'tool_choice' must be an object with a string 'type'");
            goto fail;
        }
        const char *ts = json_string_value(type);
        if (!strcmp(ts, "auto"))
            r->q.tool_choice = ENG_TOOLS_AUTO;
        else if (!strcmp(ts, "any"))
            r->q.tool_choice = ENG_TOOLS_REQUIRED;
        else if (!strcmp(ts, "tool"))
            r->q.tool_choice = ENG_TOOLS_NAMED;
        else if (!strcmp(ts, "none"))
            r->q.tool_choice = ENG_TOOLS_NONE;
        else {
            srv_err(e, 400, "tool_choice.type", "invalid_value",
                    "'tool_choice.type' is '%.40s'; expected auto, any, tool or none", ts);
            goto fail;
        }
        if ((r->q.tool_choice == ENG_TOOLS_REQUIRED || r->q.tool_choice == ENG_TOOLS_NAMED) && !n) {
            srv_err(e, 400, "tool_choice", "invalid_value", "'tool_choice' of type '%s' needs 'tools'", ts);
            goto fail;
        }
        if (r->q.tool_choice == ENG_TOOLS_NAMED) {
            json_t *name = json_object_get(tc, "name");
            if (!json_is_string(name)) {
                srv_err(e, 400, "tool_choice.name", "missing_field",
                        "'tool_choice.name' (a string) is required with type 'tool'");
                goto fail;
            }
            if (!json_object_get(names, json_string_value(name))) {
                srv_err(e, 400, "tool_choice.name", "invalid_value",
                        "'tool_choice.name' is '%.128s', which is not in 'tools'", json_string_value(name));
                goto fail;
            }
            r->q.tool_name = json_string_value(name);
        }
        bool no_parallel = false;
        if (!srv_get_bool(tc, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use",
                          &no_parallel, e))
            goto fail;
        r->q.parallel_tool_calls = !no_parallel;
    }
    json_decref(names);
    return true;
fail:
    json_decref(names);
    return false;
}

/* thinking: enabled -> reasoning on, disabled -> off, adaptive (or absent)
 * -> the template's default. */
static bool parse_thinking(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *th = json_object_get(root, "thinking");
    if (!th || json_is_null(th)) return true;
    json_t *type = json_object_get(th, "type");
    if (!json_is_object(th) || !json_is_string(type))
        return srv_err(e, 400, "thinking", "invalid_type",
                       "'thinking' must be an object with a string 'type'");
    const char *ts = json_string_value(type);
    if (!strcmp(ts, "enabled")) {
        /* a budget is a target in the API too (the model may exceed it); max_tokens bounds the whole answer
         */
        long long budget = 0;
        if (!srv_get_int(th, "budget_tokens", "thinking.budget_tokens", 1, 1 << 24, &budget, NULL, e))
            return false;
        r->q.think = ENG_THINK_ON;
    } else if (!strcmp(ts, "disabled")) {
        r->q.think = ENG_THINK_OFF;
    } else if (!strcmp(ts, "adaptive")) {
        r->q.think = ENG_THINK_DEFAULT;
    } else {
        return srv_err(e, 400, "thinking.type", "invalid_value",
                       "'thinking.type' is '%.40s'; expected enabled, disabled or adaptive", ts);
    }
    return true;
}

/* output_config: format {type: json_schema, schema} constrains the answer;
 * effort is not supported. */
static bool parse_output_config(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *oc = json_object_get(root, "output_config");
    if (!oc || json_is_null(oc)) return true;
    if (!json_is_object(oc))
        return srv_err(e, 400, "output_config", "invalid_type", "'output_config' must be an object");
    json_t *effort = json_object_get(oc, "effort");
    if (effort && !json_is_null(effort))
        return srv_err(e, 400, "output_config.effort", "unsupported",
                       "'output_config.effort' is not supported by kiln");
    json_t *fmt = json_object_get(oc, "format");
    if (!fmt || json_is_null(fmt)) return true;
    json_t *type = json_object_get(fmt, "type"), *schema = json_object_get(fmt, "schema");
    if (!json_is_object(fmt) || !json_is_string(type) || strcmp(json_string_value(type), "json_schema"))
        return srv_err(e, 400, "output_config.format", "invalid_value",
                       "'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}");
    if (!json_is_object(schema))
        return srv_err(e, 400, "output_config.format.schema", "invalid_type",
                       "'output_config.format.schema' must be a JSON Schema object");
    r->q.json_schema = schema;
    r->q.json_schema_param = "output_config.format.schema";
    return true;
}

/* stop_sequences (with any "stop" already read, within the limits). */
static bool parse_stops(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    json_t *v = json_object_get(root, "stop_sequences");
    if (!v || json_is_null(v)) return true;
    if (!json_is_array(v))
        return srv_err(e, 400, "stop_sequences", "invalid_type",
                       "'stop_sequences' must be an array of strings");
    int limit = lim->stops < ENG_STOP_MAX ? lim->stops : ENG_STOP_MAX;
    if (r->q.n_stops + json_array_size(v) > (size_t)limit)
        return srv_err(e, 400, "stop_sequences", "limit_exceeded",
                       "'stop_sequences' has %zu strings; this server allows at most %d (--limit-stops)",
                       json_array_size(v), limit);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s))
            return srv_err(e, 400, "stop_sequences", "invalid_type", "'stop_sequences[%zu]' must be a string",
                           i);
        if (json_string_length(s) > ENG_STOP_MAX_LEN)
            return srv_err(e, 400, "stop_sequences", "invalid_value",
                           "'stop_sequences[%zu]' is longer than %d bytes", i, ENG_STOP_MAX_LEN);
        if (json_string_length(s) == 0)
            return srv_err(e, 400, "stop_sequences", "invalid_value", "'stop_sequences[%zu]' is empty", i);
        r->stops[r->q.n_stops++] = json_string_value(s);
    }
    return true;
}

/* What /v1/messages and count_tokens share: model, system, messages, tools,
 * tool_choice, thinking. */
static bool parse_input(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; i++) {
        json_t *v = json_object_get(root, UNSUPPORTED[i]);
        if (!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0)) continue;
        return srv_err(e, 400, UNSUPPORTED[i], "unsupported", "'%s' is not supported by kiln",
                       UNSUPPORTED[i]);
    }
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model))
        return srv_err(e, 400, "model", "missing_field", "'model' is required");
    if (!srv_get_str(root, "model", "model", &r->q.model, NULL, e)) return false;
    json_t *md = json_object_get(root, "metadata"); /* user_id: does not change the answer */
    if (md && !json_is_null(md) && !json_is_object(md))
        return srv_err(e, 400, "metadata", "invalid_type", "'metadata' must be an object");
    return parse_messages(root, lim, r, e) && parse_tools(root, r, e) && parse_thinking(root, r, e);
}

static bool parse_messages_req(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    if (!parse_input(root, lim, r, e)) return false;
    json_t *mt = json_object_get(root, "max_tokens");
    if (!mt || json_is_null(mt))
        return srv_err(e, 400, "max_tokens", "missing_field", "'max_tokens' is required");
    long long x = 0;
    if (!srv_get_int(root, "max_tokens", "max_tokens", 1, 1 << 24, &x, NULL, e)) return false;
    if (x > lim->max_tokens)
        return srv_err(e, 400, "max_tokens", "limit_exceeded",
                       "'max_tokens' is %lld; this server allows at most %d (--limit-max-tokens)", x,
                       lim->max_tokens);
    r->q.n_predict = (int32_t)x;
    r->q.n_predict_set = true;
    if (!srv_get_bool(root, "stream", "stream", &r->stream, e)) return false;
    if (!srv_get_bool(root, "cache", "cache", &r->q.cache, e)) return false;
    /* temperature, top_p, top_k and kiln's extensions (min_p, seed, ...) */
    if (!srv_get_sampler_fields(root, "", lim, r, e) || !srv_get_engine_fields(root, "", r, e)) return false;
    size_t glen = 0; /* llama-server's GBNF grammar, as on /v1/chat/completions */
    if (!srv_get_str(root, "grammar", "grammar", &r->q.grammar, &glen, e)) return false;
    if (r->q.grammar && strlen(r->q.grammar) != glen)
        return srv_err(e, 400, "grammar", "invalid_value", "'grammar' must not contain NUL characters");
    return parse_stops(root, lim, r, e) && parse_output_config(root, r, e);
}

/* ---- answers ---------------------------------------------------------------------------- */

enum { BLK_NONE = 0, BLK_TEXT, BLK_THINKING, BLK_TOOL };

static const char *stop_reason(const srv_job *j, bool calls) {
    if (j->res.finish == ENG_FINISH_LENGTH) return "max_tokens";
    if (calls) return "tool_use";
    if (j->res.stop_index >= 0 && (size_t)j->res.stop_index < j->r.q.n_stops) return "stop_sequence";
    return "end_turn";
}

static json_t *stop_sequence(const srv_job *j) {
    if (j->res.finish != ENG_FINISH_STOP || j->res.stop_index < 0 ||
        (size_t)j->res.stop_index >= j->r.q.n_stops)
        return json_null();
    return json_string(j->r.stops[j->res.stop_index]);
}

/* A tool call's input object from its arguments text (an object: {} when
 * it is not one, e.g. cut short by max_tokens). */
static json_t *call_input(const char *args, size_t n) {
    json_t *v = args ? json_loadb(args, n, 0, NULL) : NULL;
    if (json_is_object(v)) return v;
    json_decref(v);
    return json_object();
}

/* A tool_use block: the id the model wrote (mistral) or toolu_<random><index>. */
static json_t *tool_use_block(const srv_job *j, int index, const char *model_id, const char *name,
                              json_t *input) {
    char id[64];
    if (model_id && model_id[0])
        snprintf(id, sizeof id, "%s", model_id);
    else
        srv_tool_call_id(j, "toolu_", index, id, sizeof id);
    if (!name) name = "";
    return json_pack("{s:s, s:s, s:o, s:o}", "type", "tool_use", "id", id, "name",
                     srv_json_text(name, strlen(name)), "input", input);
}

static json_t *message(srv_job *j, json_t *content, json_t *stop_reason, json_t *stop_seq, json_t *usage) {
    char id[48];
    srv_new_id("msg_", id, sizeof id);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "id", id, "type", "message", "role",
                     "assistant", "model", srv_job_model(j), "content", content, "stop_reason", stop_reason,
                     "stop_sequence", stop_seq, "usage", usage);
}

static json_t *usage(size_t in, size_t out) {
    return json_pack("{s:I, s:I}", "input_tokens", (json_int_t)in, "output_tokens", (json_int_t)out);
}

static json_t *whole(srv_job *j) {
    json_t *content = json_array();
    if (j->reasoning.n)
        json_array_append_new(content,
                              json_pack("{s:s, s:o, s:s}", "type", "thinking", "thinking",
                                        srv_json_text(j->reasoning.p, j->reasoning.n), "signature", ""));
    if (j->content.n)
        json_array_append_new(content, json_pack("{s:s, s:o}", "type", "text", "text",
                                                 srv_json_text(j->content.p, j->content.n)));
    size_t i, n = json_array_size(j->calls);
    json_t *c;
    json_array_foreach(j->calls, i, c) {
        /* gen.c's own ids are "call_..."; an id the model wrote is kept */
        char own[64];
        const char *id = json_string_value(json_object_get(c, "id"));
        srv_tool_call_id(j, "call_", (int)i, own, sizeof own);
        json_t *args = json_object_get(c, "arguments");
        json_array_append_new(content,
                              tool_use_block(j, (int)i, id && strcmp(id, own) ? id : NULL,
                                             json_string_value(json_object_get(c, "name")),
                                             call_input(json_string_value(args), json_string_length(args))));
    }
    return message(j, content, json_string(stop_reason(j, n > 0)), stop_sequence(j),
                   usage(j->res.n_prompt, j->res.n_gen));
}

/* ---- stream -------------------------------------------------------------------------- */

/* One SSE event: "event: TYPE" with data {"type": TYPE, ...o}. Takes o. */
static void emit(srv_job *j, const char *type, json_t *o) {
    if (!o) return;
    json_object_set_new(o, "type", json_string(type));
    srv_job_emit_event(j, type, o);
}

static void block_stop(srv_job *j) {
    if (j->block_open == BLK_NONE) return;
    emit(j, "content_block_stop", json_pack("{s:i}", "index", j->blocks - 1));
    j->block_open = BLK_NONE;
}

static void block_start(srv_job *j, int kind, json_t *block) {
    block_stop(j);
    emit(j, "content_block_start", json_pack("{s:i, s:o}", "index", j->blocks, "content_block", block));
    j->blocks++;
    j->block_open = kind;
}

static void stream_start(srv_job *j) {
    json_t *msg = message(j, json_array(), json_null(), json_null(), usage(j->info->n_prompt, 0));
    emit(j, "message_start", json_pack("{s:o}", "message", msg));
    emit(j, "ping", json_object());
}

static void stream_event(srv_job *j, const chat_event *ev) {
    if (ev->kind == CHAT_EV_TOOL_CALL) {
        /* a call arrives whole: its block opens, takes its arguments in one delta and closes */
        block_start(j, BLK_TOOL, tool_use_block(j, ev->index, ev->id, ev->name, json_object()));
        emit(j, "content_block_delta",
             json_pack("{s:i, s:{s:s, s:o}}", "index", j->blocks - 1, "delta", "type", "input_json_delta",
                       "partial_json", srv_json_text(ev->args ? ev->args : "", ev->args ? ev->args_len : 0)));
        block_stop(j);
        return;
    }
    if (ev->len == 0) return;
    bool thinking = ev->kind == CHAT_EV_REASONING;
    int kind = thinking ? BLK_THINKING : BLK_TEXT;
    if (j->block_open != kind)
        block_start(j, kind,
                    thinking
                        ? json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", "")
                        : json_pack("{s:s, s:s}", "type", "text", "text", ""));
    emit(j, "content_block_delta",
         json_pack("{s:i, s:{s:s, s:o}}", "index", j->blocks - 1, "delta", "type",
                   thinking ? "thinking_delta" : "text_delta", thinking ? "thinking" : "text",
                   srv_json_text(ev->text, ev->len)));
}

static void stream_end(srv_job *j) {
    if (j->res.finish == ENG_FINISH_ERROR || j->res.finish == ENG_FINISH_CANCELLED) {
        srv_error e;
        srv_job_error(j, &e);
        srv_job_emit_event(j, "error", srv_anthropic_error_json(&e));
        return;
    }
    block_stop(j);
    bool calls = j->n_calls > 0;
    emit(j, "message_delta",
         json_pack("{s:{s:s, s:o}, s:{s:I}}", "delta", "stop_reason", stop_reason(j, calls), "stop_sequence",
                   stop_sequence(j), "usage", "output_tokens", (json_int_t)j->res.n_gen));
    emit(j, "message_stop", json_object());
}

const srv_gen_dialect srv_anthropic_messages = {
    .name = "anthropic.messages",
    .error_json = srv_anthropic_error_json,
    .sse = true,
    .stream_type = "text/event-stream",
    .id_prefix = "msg",
    .parse = parse_messages_req,
    .stream_start = stream_start,
    .stream_event = stream_event,
    .stream_end = stream_end,
    .whole = whole,
};

/* ---- count_tokens ------------------------------------------------------------------- */

enum MHD_Result srv_h_anthropic_count_tokens(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    eng_error ee;
    srv_gen_req r;
    srv_gen_req_init(&r);
    size_t n = 0;
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    bool ok = root && parse_input(root, &s->lim, &r, &e);
    if (ok && !(ok = eng_service_count_tokens(s->svc, &r.q, &n, &ee))) srv_err_engine(&e, &ee);
    srv_gen_req_free(&r);
    json_decref(root);
    if (!ok) return srv_send_error(c, cx, &e);
    return srv_send_json(c, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n));
}
