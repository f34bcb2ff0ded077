/*
 * api.c — what the dialects share (see api.h): errors, JSON bodies, field
 * readers, sampling fields, chat messages, embedding inputs.
 */
#include "api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool srv_err(srv_error *e, int status, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    const char *type = "invalid_request_error";
    switch (status) {
    case 401: type = "authentication_error"; break;
    case 404: type = "not_found_error"; break;
    case 405: type = "invalid_request_error"; break;
    case 413: type = "invalid_request_error"; break;
    case 500: type = "server_error"; break;
    case 503: type = "unavailable_error"; break;
    default: break;
    }
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

bool srv_err_engine(srv_error *e, const eng_error *ee) {
    int status = 500;
    switch (ee->kind) {
    case ENG_ERR_REQUEST: status = 400; break;
    case ENG_ERR_NOT_FOUND: status = 404; break;
    case ENG_ERR_BUSY: status = 503; break;
    case ENG_ERR_GONE: status = 499; break;
    default: break;
    }
    return srv_err(e, status, ee->param[0] ? ee->param : NULL, ee->code[0] ? ee->code : NULL, "%s", ee->msg);
}

srv_limits srv_limits_default(void) {
    return (srv_limits){.json_depth = 64, .messages = 1024, .max_tokens = 32768, .embed_inputs = ENG_MAX_EMBED_INPUTS,
                        .stops = ENG_STOP_MAX, .logit_bias = 1024};
}

/* The deepest nesting of arrays and objects, counting brackets outside
 * strings; stops counting once past limit. Not a validator: jansson parses. */
static int json_depth(const char *p, size_t n, int limit) {
    int d = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++d > max && (max = d) > limit) return max;
        } else if ((c == ']' || c == '}') && d > 0) {
            d--;
        }
    }
    return max;
}

json_t *srv_parse_json(const char *body, size_t len, int max_depth, srv_error *e) {
    if (len == 0) {
        srv_err(e, 400, NULL, "invalid_json", "the request body is empty; expected a JSON object");
        return NULL;
    }
    if (max_depth > 0 && json_depth(body, len, max_depth) > max_depth) {
        srv_err(e, 400, NULL, "limit_exceeded",
                "the JSON body nests arrays and objects deeper than %d levels (the limit, --limit-json-depth)",
                max_depth);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        srv_err(e, 400, NULL, "invalid_json", "malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        srv_err(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* ---- UTF-8 -------------------------------------------------------------- */

static int utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

json_t *srv_json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    /* invalid UTF-8: rebuild with U+FFFD for every byte that does not start a valid sequence */
    char *buf = malloc(n * 3 + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int l = utf8_len(c);
        bool ok = l > 0 && i + (size_t)l <= n;
        for (int k = 1; ok && k < l; k++) ok = ((unsigned char)s[i + (size_t)k] & 0xC0) == 0x80;
        if (ok && l > 1) { /* reject overlongs, surrogates and > U+10FFFF by asking jansson */
            json_t *t = json_stringn(s + i, (size_t)l);
            ok = t != NULL;
            json_decref(t);
        }
        if (ok && l == 1 && c == 0) ok = true;
        if (ok) {
            memcpy(buf + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

/* ---- field readers ---------------------------------------------------------
 * Each returns false with e set on a type or range error; absent fields (or
 * JSON null) leave the destination unchanged. */

bool srv_get_num(json_t *o, const char *key, const char *param, double lo, double hi, double *out, bool *set,
                    srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return srv_err(e, 400, param, "invalid_type", "'%s' must be a number", param);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return srv_err(e, 400, param, "invalid_value", "'%s' must be between %g and %g, got %g", param, lo, hi, d);
    *out = d;
    if (set) *set = true;
    return true;
}

bool srv_get_int(json_t *o, const char *key, const char *param, long long lo, long long hi, long long *out,
                    bool *set, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    long long x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else return srv_err(e, 400, param, "invalid_type", "'%s' must be an integer", param);
    if (x < lo || x > hi)
        return srv_err(e, 400, param, "invalid_value", "'%s' must be between %lld and %lld, got %lld", param, lo, hi, x);
    *out = x;
    if (set) *set = true;
    return true;
}

bool srv_get_bool(json_t *o, const char *key, const char *param, bool *out, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return srv_err(e, 400, param, "invalid_type", "'%s' must be a boolean", param);
    *out = json_is_true(v);
    return true;
}

bool srv_get_str(json_t *o, const char *key, const char *param, const char **out, size_t *len, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return srv_err(e, 400, param, "invalid_type", "'%s' must be a string", param);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return true;
}

static bool get_stop(json_t *o, const char *key, const char *param, int limit, srv_gen_req *r, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    size_t n = json_is_array(v) ? json_array_size(v) : json_is_string(v) && json_string_length(v) > 0 ? 1 : 0;
    if (n > (size_t)limit)
        return srv_err(e, 400, param, "limit_exceeded",
                       "'%s' has %zu stop strings; this server allows at most %d (--limit-stops)", param, n, limit);
    if (json_is_string(v)) {
        if (json_string_length(v) > ENG_STOP_MAX_LEN)
            return srv_err(e, 400, param, "invalid_value", "a stop string is longer than %d bytes", ENG_STOP_MAX_LEN);
        if (json_string_length(v) > 0) r->stops[r->q.n_stops++] = json_string_value(v);
        return true;
    }
    if (!json_is_array(v))
        return srv_err(e, 400, param, "invalid_type", "'%s' must be a string or an array of strings", param);
    if (json_array_size(v) > ENG_STOP_MAX)
        return srv_err(e, 400, param, "invalid_value", "'%s' has %zu strings; at most %d", param, json_array_size(v),
                       ENG_STOP_MAX);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s))
            return srv_err(e, 400, param, "invalid_type", "'%s[%zu]' must be a string", param, i);
        if (json_string_length(s) > ENG_STOP_MAX_LEN)
            return srv_err(e, 400, param, "invalid_value", "'%s[%zu]' is longer than %d bytes", param, i,
                           ENG_STOP_MAX_LEN);
        if (json_string_length(s) > 0) r->stops[r->q.n_stops++] = json_string_value(s);
    }
    return true;
}

bool srv_get_sampler_fields(json_t *o, const char *prefix, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    char p[96];
#define P(name) (snprintf(p, sizeof p, "%s%s", prefix, name), p)
    eng_sampler_params *sp = &r->q.sp;
    double d;
    long long x;
    bool set = false;
    d = sp->temp;
    if (!srv_get_num(o, "temperature", P("temperature"), 0, 100, &d, NULL, e)) return false;
    sp->temp = (float)d;
    d = sp->top_p;
    if (!srv_get_num(o, "top_p", P("top_p"), 0, 1, &d, NULL, e)) return false;
    sp->top_p = (float)d;
    d = sp->min_p;
    if (!srv_get_num(o, "min_p", P("min_p"), 0, 1, &d, NULL, e)) return false;
    sp->min_p = (float)d;
    d = sp->typical_p;
    if (!srv_get_num(o, "typical_p", P("typical_p"), 0, 1, &d, NULL, e)) return false;
    sp->typical_p = (float)d;
    d = sp->repeat_penalty;
    if (!srv_get_num(o, "repeat_penalty", P("repeat_penalty"), 0, 10, &d, NULL, e)) return false;
    sp->repeat_penalty = (float)d;
    d = sp->presence_penalty;
    if (!srv_get_num(o, "presence_penalty", P("presence_penalty"), -2, 2, &d, NULL, e)) return false;
    sp->presence_penalty = (float)d;
    d = sp->frequency_penalty;
    if (!srv_get_num(o, "frequency_penalty", P("frequency_penalty"), -2, 2, &d, NULL, e)) return false;
    sp->frequency_penalty = (float)d;
    x = sp->top_k;
    if (!srv_get_int(o, "top_k", P("top_k"), 0, 1 << 24, &x, NULL, e)) return false;
    sp->top_k = (int32_t)x;
    x = sp->penalty_last_n;
    if (!srv_get_int(o, "repeat_last_n", P("repeat_last_n"), 0, 1 << 20, &x, NULL, e)) return false;
    sp->penalty_last_n = (int32_t)x;
    x = 0;
    if (!srv_get_int(o, "seed", P("seed"), INT64_MIN, INT64_MAX, &x, &set, e)) return false;
    if (set) {
        sp->seed = (uint64_t)x;
        r->q.seed_set = true;
    }
#undef P
    snprintf(p, sizeof p, "%sstop", prefix);
    return get_stop(o, "stop", p, lim->stops, r, e);
}

bool srv_get_engine_fields(json_t *o, const char *prefix, srv_gen_req *r, srv_error *e) {
    char p[96];
#define P(name) (snprintf(p, sizeof p, "%s%s", prefix, name), p)
    if (!srv_get_bool(o, "ignore_eos", P("ignore_eos"), &r->q.ignore_eos, e)) return false;
    /* speculative decoding: "speculative": "none" | "ngram" | "draft" (or a
     * boolean), and llama-server's "speculative.n_max" */
    json_t *sv = json_object_get(o, "speculative");
    if (sv && !json_is_null(sv)) {
        if (json_is_boolean(sv)) {
            r->q.spec = json_is_true(sv) ? ENG_SPEC_NGRAM : ENG_SPEC_NONE;
        } else if (!json_is_string(sv) || !eng_spec_parse(json_string_value(sv), &r->q.spec)) {
            return srv_err(e, 400, P("speculative"), "invalid_value",
                           "'%s' must be \"none\", \"ngram\", \"draft\" or a boolean", P("speculative"));
        }
    }
    long long nmax = 0;
    if (!srv_get_int(o, "speculative.n_max", P("speculative.n_max"), 0, ENG_SPEC_MAX, &nmax, NULL, e)) return false;
    r->q.spec_max = (int)nmax;
#undef P
    return true;
}

bool srv_get_logit_bias(json_t *root, int limit, srv_gen_req *r, srv_error *e) {
    json_t *v = json_object_get(root, "logit_bias");
    if (!v || json_is_null(v)) return true;
    if (!json_is_object(v))
        return srv_err(e, 400, "logit_bias", "invalid_type", "'logit_bias' must be an object of token id -> bias");
    size_t n = json_object_size(v);
    if (n == 0) return true;
    if (n > (size_t)limit)
        return srv_err(e, 400, "logit_bias", "limit_exceeded",
                       "'logit_bias' has %zu entries; this server allows at most %d (--limit-logit-bias)", n, limit);
    r->bias = calloc(n, sizeof *r->bias);
    if (!r->bias) return srv_err(e, 500, NULL, NULL, "out of memory");
    const char *k;
    json_t *b;
    int i = 0;
    json_object_foreach(v, k, b) {
        char *end;
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || id > INT32_MAX)
            return srv_err(e, 400, "logit_bias", "invalid_value", "'logit_bias' key '%.40s' is not a token id", k);
        if (!json_is_number(b))
            return srv_err(e, 400, "logit_bias", "invalid_type", "'logit_bias[%.40s]' must be a number", k);
        double d = json_number_value(b);
        if (!(d >= -100 && d <= 100))
            return srv_err(e, 400, "logit_bias", "invalid_value", "'logit_bias[%.40s]' must be between -100 and 100", k);
        r->bias[i].token = (int32_t)id;
        r->bias[i].bias = d <= -100 ? -INFINITY : (float)d;
        i++;
    }
    r->q.sp.bias = r->bias;
    r->q.sp.n_bias = i;
    return true;
}

bool srv_get_messages(json_t *root, const srv_msg_rules *rules, int limit, srv_gen_req *r, srv_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m || json_is_null(m)) return srv_err(e, 400, "messages", "missing_field", "'messages' is required");
    if (!json_is_array(m)) return srv_err(e, 400, "messages", "invalid_type", "'messages' must be an array");
    if (json_array_size(m) == 0) return srv_err(e, 400, "messages", "invalid_value", "'messages' must not be empty");
    if (json_array_size(m) > (size_t)limit)
        return srv_err(e, 400, "messages", "limit_exceeded",
                       "'messages' has %zu entries; this server allows at most %d (--limit-messages)",
                       json_array_size(m), limit);
    r->messages = json_array();
    if (!r->messages) return srv_err(e, 500, NULL, NULL, "out of memory");
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        char p[64];
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(msg)) return srv_err(e, 400, p, "invalid_type", "'%s' must be an object", p);
        json_t *role = json_object_get(msg, "role");
        snprintf(p, sizeof p, "messages[%zu].role", i);
        if (!json_is_string(role)) return srv_err(e, 400, p, "invalid_type", "'%s' must be a string", p);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return srv_err(e, 400, p, "invalid_value",
                           "unknown role '%.40s' in %s; expected system, developer, user, assistant or tool", rs, p);
        json_t *content = json_object_get(msg, "content");
        snprintf(p, sizeof p, "messages[%zu].content", i);
        json_t *text = NULL;
        if (!content || json_is_null(content)) {
            if (strcmp(rs, "assistant") || !json_object_get(msg, "tool_calls"))
                if (!rules->empty_assistant || strcmp(rs, "assistant"))
                    return srv_err(e, 400, p, "missing_field", "'%s' is required", p);
            text = json_string("");
        } else if (json_is_string(content)) {
            text = json_incref(content);
        } else if (json_is_array(content) && rules->text_parts) {
            /* content parts: only text parts are supported */
            size_t total = 0, k;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
                    !json_is_string(t))
                    return srv_err(e, 400, p, "unsupported_content",
                                   "'%s[%zu]' is not a text part; only {\"type\": \"text\", \"text\": ...} parts are "
                                   "supported",
                                   p, k);
                total += json_string_length(t);
            }
            char *buf = malloc(total + 1);
            if (!buf) return srv_err(e, 500, NULL, NULL, "out of memory");
            size_t off = 0;
            json_array_foreach(content, k, part) {
                json_t *t = json_object_get(part, "text");
                memcpy(buf + off, json_string_value(t), json_string_length(t));
                off += json_string_length(t);
            }
            text = json_stringn(buf, off);
            free(buf);
        } else {
            return srv_err(e, 400, p, "invalid_type", "'%s' must be a string%s", p,
                           rules->text_parts ? " or an array of text parts" : "");
        }
        if (rules->no_images && json_object_get(msg, "images") && !json_is_null(json_object_get(msg, "images")) &&
            json_array_size(json_object_get(msg, "images")) > 0) {
            json_decref(text);
            snprintf(p, sizeof p, "messages[%zu].images", i);
            return srv_err(e, 400, p, "unsupported", "images are not supported by kiln's text models");
        }
        json_t *nm = json_pack("{s:s, s:o}", "role", rs, "content", text);
        if (!nm) return srv_err(e, 500, NULL, NULL, "out of memory");
        const char *pass[] = {"tool_calls", "name", "tool_call_id"};
        for (size_t k = 0; k < sizeof pass / sizeof *pass; k++) {
            json_t *pv = json_object_get(msg, pass[k]);
            if (pv && !json_is_null(pv)) json_object_set(nm, pass[k], pv);
        }
        json_array_append_new(r->messages, nm);
    }
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) return srv_err(e, 400, "tools", "invalid_type", "'tools' must be an array");
        if (json_array_size(tools) > 0) r->q.tools = tools;
    }
    return true;
}

bool srv_get_tool_choice(json_t *root, srv_gen_req *r, srv_error *e) {
    json_t *tc = json_object_get(root, "tool_choice");
    if (!tc || json_is_null(tc)) return true;
    if (json_is_string(tc)) {
        const char *v = json_string_value(tc);
        if (!strcmp(v, "auto")) r->q.tool_choice = ENG_TOOLS_AUTO;
        else if (!strcmp(v, "none")) r->q.tool_choice = ENG_TOOLS_NONE;
        else if (!strcmp(v, "required")) r->q.tool_choice = ENG_TOOLS_REQUIRED;
        else
            return srv_err(e, 400, "tool_choice", "invalid_value",
                           "'tool_choice' must be 'auto', 'none', 'required' or a function, got '%.40s'", v);
        return true;
    }
    json_t *fn = json_object_get(tc, "function");
    json_t *name = json_object_get(fn, "name");
    json_t *type = json_object_get(tc, "type");
    if (!json_is_object(tc) || !json_is_string(type) || strcmp(json_string_value(type), "function") ||
        !json_is_string(name))
        return srv_err(e, 400, "tool_choice", "invalid_type",
                       "'tool_choice' must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    r->q.tool_choice = ENG_TOOLS_NAMED;
    r->q.tool_name = json_string_value(name);
    return true;
}

bool srv_parse_keep_alive(json_t *root, double *out, srv_error *e) {
    *out = NAN;
    json_t *ka = json_object_get(root, "keep_alive");
    if (!ka || json_is_null(ka)) return true;
    if (json_is_number(ka)) {
        double v = json_number_value(ka);
        if (!isfinite(v)) return srv_err(e, 400, "keep_alive", "invalid_value", "'keep_alive' must be finite");
        *out = v < 0 ? -1 : v;
        return true;
    }
    if (!json_is_string(ka))
        return srv_err(e, 400, "keep_alive", "invalid_type", "'keep_alive' must be a duration string or a number");
    const char *p = json_string_value(ka);
    char *end;
    double total = 0;
    bool neg = *p == '-';
    if (!*p) return srv_err(e, 400, "keep_alive", "invalid_value", "'keep_alive' is empty");
    while (*p) {
        double v = strtod(p, &end);
        if (end == p || !isfinite(v)) goto bad;
        double unit = 1;
        if (*end == 'h') unit = 3600, end++;
        else if (*end == 'm' && end[1] == 's') unit = 0.001, end += 2;
        else if (*end == 'm') unit = 60, end++;
        else if (*end == 's') unit = 1, end++;
        else if (*end) goto bad;
        total += (v < 0 ? -v : v) * unit;
        p = end;
    }
    *out = neg ? -1 : total;
    return true;
bad:
    return srv_err(e, 400, "keep_alive", "invalid_value",
                   "'keep_alive' must be a duration such as \"5m\", \"300s\", \"1h\", 0 or -1, got '%.40s'",
                   json_string_value(ka));
}

void srv_gen_req_init(srv_gen_req *r) {
    memset(r, 0, sizeof *r);
    r->q.keep_alive_s = NAN;
    r->q.sp = eng_sampler_defaults();
    r->q.n_predict = -1;
    r->q.n_logprobs = -1;
    r->q.add_special = true;
    r->q.cache = true;
    r->q.prompt_param = "prompt";
    r->q.stops = r->stops;
    r->q.parallel_tool_calls = true;
}

void srv_gen_req_free(srv_gen_req *r) {
    if (!r) return;
    json_decref(r->messages);
    json_decref(r->tools);
    json_decref(r->schema);
    free(r->prompt_tokens);
    free(r->bias);
    memset(r, 0, sizeof *r);
}

bool srv_get_embed_input(json_t *root, const srv_limits *lim, bool token_ids, srv_embed_req *r, srv_error *e) {
    json_t *in = json_object_get(root, "input");
    if (!in || json_is_null(in)) return srv_err(e, 400, "input", "missing_field", "'input' is required");
    size_t n = json_is_array(in) ? json_array_size(in) : 1;
    if (json_is_array(in) && n == 0) return srv_err(e, 400, "input", "invalid_value", "'input' must not be empty");
    int max_in = lim->embed_inputs < ENG_MAX_EMBED_INPUTS ? lim->embed_inputs : ENG_MAX_EMBED_INPUTS;
    if (n > (size_t)max_in)
        return srv_err(e, 400, "input", "limit_exceeded",
                       "'input' has %zu items; this server allows at most %d (--limit-embed-inputs)", n, max_in);
    /* OpenAI also takes token ids: one list, or a list of lists */
    bool tokens = token_ids && json_is_array(in) && (json_is_integer(json_array_get(in, 0)) ||
                                                   json_is_array(json_array_get(in, 0)));
    if (tokens) {
        bool flat = json_is_integer(json_array_get(in, 0));
        size_t count = flat ? 1 : n;
        r->token_inputs = calloc(count, sizeof *r->token_inputs);
        r->lens = calloc(count, sizeof *r->lens);
        if (!r->token_inputs || !r->lens) return srv_err(e, 500, NULL, NULL, "out of memory");
        r->n = count;
        for (size_t i = 0; i < count; i++) {
            json_t *list = flat ? in : json_array_get(in, i);
            if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > (1u << 24))
                return srv_err(e, 400, "input", "invalid_type", "'input[%zu]' must be a non-empty list of token ids", i);
            size_t m = json_array_size(list);
            if (!(r->token_inputs[i] = malloc(m * sizeof **r->token_inputs)))
                return srv_err(e, 500, NULL, NULL, "out of memory");
            for (size_t k = 0; k < m; k++) {
                json_t *t = json_array_get(list, k);
                if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
                    return srv_err(e, 400, "input", "invalid_type", "'input' token %zu of item %zu is not a token id",
                                   k, i);
                r->token_inputs[i][k] = (int32_t)json_integer_value(t);
            }
            r->lens[i] = m;
        }
        return true;
    }
    r->texts = calloc(n, sizeof *r->texts);
    r->lens = calloc(n, sizeof *r->lens);
    if (!r->texts || !r->lens) return srv_err(e, 500, NULL, NULL, "out of memory");
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_array(in) ? json_array_get(in, i) : in;
        if (!json_is_string(t))
            return srv_err(e, 400, "input", "invalid_type",
                           json_is_array(in) ? "'input[%zu]' must be a string" : "'input' must be a string or a list "
                                                                                 "of strings",
                           i);
        r->texts[i] = json_string_value(t);
        r->lens[i] = json_string_length(t);
    }
    return true;
}


void srv_embed_req_free(srv_embed_req *r) {
    if (!r) return;
    if (r->token_inputs)
        for (size_t i = 0; i < r->n; i++) free(r->token_inputs[i]);
    free(r->token_inputs);
    free(r->texts);
    free(r->lens);
    memset(r, 0, sizeof *r);
}
