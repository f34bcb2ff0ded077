/*
 * prep.c — see prep.h. The grammar of a forced tool call is the family's
 * own markup (kiln/chat.h, docs/chat.md) around each function's arguments
 * schema, so that the answer parses as the template would have written it.
 */
#include "prep.h"

#include "kiln/chat.h"
#include "kiln/grammar.h"
#include "kiln/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_NAME_MAX 64
#define TOOLS_MAX 128

void eng_prep_free(eng_prep *p) {
    if (!p) return;
    free(p->ids);
    free(p->gbnf);
    memset(p, 0, sizeof *p);
}

static bool oom(eng_error *e) {
    return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
}

/* ---- tools ------------------------------------------------------------------------------ */

/* OpenAI's rule for function names, which also keeps them literal in the
 * markup and the grammar. */
static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > TOOL_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* tools[i].function.name, checked; NULL with e on a malformed tool. */
static const char *tool_name(const json_t *tool, size_t i, const json_t **params, eng_error *e) {
    char p[64];
    snprintf(p, sizeof p, "tools[%zu]", i);
    const json_t *type = json_object_get(tool, "type");
    if (!json_is_object(tool) ||
        (type && (!json_is_string(type) || strcmp(json_string_value(type), "function")))) {
        eng_fail(e, ENG_ERR_REQUEST, p, "invalid_tool",
                 "'%s' must be {\"type\": \"function\", \"function\": {...}}", p);
        return NULL;
    }
    const json_t *fn = json_object_get(tool, "function");
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_object(fn) || !json_is_string(name) || !name_ok(json_string_value(name))) {
        eng_fail(e, ENG_ERR_REQUEST, p, "invalid_tool",
                 "'%s.function.name' must be 1 to %d letters, digits, '_', '-' or '.'", p, TOOL_NAME_MAX);
        return NULL;
    }
    const json_t *pa = json_object_get(fn, "parameters");
    if (pa && !json_is_null(pa) && !json_is_object(pa)) {
        eng_fail(e, ENG_ERR_REQUEST, p, "invalid_tool",
                 "'%s.function.parameters' must be a JSON Schema object", p);
        return NULL;
    }
    *params = pa && !json_is_null(pa) ? pa : NULL;
    return json_string_value(name);
}

static bool check_tools(const eng_gen_request *q, eng_error *e) {
    const json_t *tools = q->tools;
    size_t n = json_is_array(tools) ? json_array_size(tools) : 0;
    if (n > TOOLS_MAX)
        return eng_fail(e, ENG_ERR_REQUEST, "tools", "limit_exceeded", "%zu tools; at most %d", n, TOOLS_MAX);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        const json_t *pa;
        const char *name = tool_name(json_array_get(tools, i), i, &pa, e);
        if (!name) return false;
        for (size_t k = 0; k < i; k++) {
            const json_t *pk;
            if (!strcmp(tool_name(json_array_get(tools, k), k, &pk, e), name))
                return eng_fail(e, ENG_ERR_REQUEST, "tools", "invalid_tool", "two tools are named '%s'",
                                name);
        }
        if (q->tool_choice == ENG_TOOLS_NAMED && q->tool_name && !strcmp(q->tool_name, name)) found = true;
    }
    if ((q->tool_choice == ENG_TOOLS_REQUIRED || q->tool_choice == ENG_TOOLS_NAMED) && n == 0)
        return eng_fail(e, ENG_ERR_REQUEST, "tool_choice", "invalid_value",
                        "tool_choice '%s' needs tools, and the request has none",
                        q->tool_choice == ENG_TOOLS_REQUIRED ? "required"
                        : q->tool_name                       ? q->tool_name
                                                             : "");
    if (q->tool_choice == ENG_TOOLS_NAMED && !found)
        return eng_fail(e, ENG_ERR_REQUEST, "tool_choice", "invalid_value",
                        "tool_choice names '%.64s', which is not one of the request's tools",
                        q->tool_name ? q->tool_name : "");
    return true;
}

/* Appends a GBNF string literal of s. */
static void lit(kn_buf *b, const char *s) {
    kn_buf_add(b, "\"", 1, 0);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') kn_buf_add(b, "\\", 1, 0);
        if (*s == '\n') {
            kn_buf_add(b, "\\n", 2, 0);
            continue;
        }
        kn_buf_add(b, s, 1, 0);
    }
    kn_buf_add(b, "\"", 1, 0);
}

static void add(kn_buf *b, const char *s) {
    kn_buf_add(b, s, strlen(s), 0);
}

/* The markup of one call per syntax: before the arguments (with the
 * function's name for %s) and after them. Mistral, Granite and the generic
 * format put these objects in a list (the list is the root's). */
static const struct call_markup {
    int syntax;
    const char *pre, *post;
} CALL_MARKUP[] = {
    {CHAT_SYNTAX_HERMES, "<tool_call>\n{\"name\": \"%s\", \"arguments\": ", "}\n</tool_call>"},
    {CHAT_SYNTAX_LLAMA3, "{\"name\": \"%s\", \"parameters\": ", "}"},
    {CHAT_SYNTAX_DEEPSEEK, "<｜tool▁call▁begin｜>function<｜tool▁sep｜>%s\n```json\n",
     "\n```<｜tool▁call▁end｜>"},
    {CHAT_SYNTAX_HARMONY, "<|channel|>commentary to=functions.%s <|constrain|>json<|message|>", ""},
    {-1, "{\"name\": \"%s\", \"arguments\": ", "}"}, /* the rest */
};

/* The markup of one call of tool `name` around the rule args. */
static void call_rule(kn_buf *b, int syntax, const char *name, const char *args) {
    const struct call_markup *m = CALL_MARKUP;
    while (m->syntax >= 0 && m->syntax != syntax)
        m++;
    char t[256];
    snprintf(t, sizeof t, m->pre, name);
    lit(b, t);
    add(b, " ");
    add(b, args);
    if (m->post[0]) {
        add(b, " ");
        lit(b, m->post);
    }
}

/* The grammar of the answer when a call is forced (required, named) or,
 * for the generic syntax, always (a call or a response). */
static bool tool_grammar(const eng_gen_request *q, int syntax, const char *close, char **out, eng_error *e) {
    kn_buf b = {0};
    const json_t *tools = q->tools;
    size_t n = json_array_size(tools);
    kn_err err = {0};
    add(&b, "call ::= ");
    int alts = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *pa;
        const char *name = tool_name(json_array_get(tools, i), i, &pa, e);
        if (q->tool_choice == ENG_TOOLS_NAMED && strcmp(name, q->tool_name)) continue;
        char r[32];
        snprintf(r, sizeof r, "t%zu-root", i);
        if (alts++) add(&b, " | ");
        add(&b, "(");
        call_rule(&b, syntax, name, r);
        add(&b, ")");
    }
    add(&b, "\n");
    for (size_t i = 0; i < n; i++) {
        const json_t *pa;
        const char *name = tool_name(json_array_get(tools, i), i, &pa, e);
        if (q->tool_choice == ENG_TOOLS_NAMED && strcmp(name, q->tool_name)) continue;
        char pre[32];
        snprintf(pre, sizeof pre, "t%zu-", i);
        json_t *any = pa ? NULL : json_pack("{s:s}", "type", "object");
        kn_status st = gram_schema_rules(pa ? pa : any, pre, &b, &err);
        json_decref(any);
        if (st != KN_OK) {
            kn_buf_free(&b);
            char p[64];
            snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
            if (st == KN_ENOMEM) return oom(e);
            return eng_fail(e, ENG_ERR_REQUEST, p, "invalid_schema", "tool '%s': %s", name, err.msg);
        }
        add(&b, "\n");
    }
    bool many = q->parallel_tool_calls && q->tool_choice != ENG_TOOLS_NAMED;
    add(&b, "root ::= ");
    if (close) {
        lit(&b, close);
        add(&b, " ");
    }
    switch (syntax) {
    case CHAT_SYNTAX_HERMES: add(&b, many ? "call (\"\\n\" call)*" : "call"); break;
    case CHAT_SYNTAX_LLAMA3:
    case CHAT_SYNTAX_HARMONY: add(&b, "call"); break;
    case CHAT_SYNTAX_MISTRAL:
        add(&b, many ? "\"[TOOL_CALLS][\" call (\", \" call)* \"]\"" : "\"[TOOL_CALLS][\" call \"]\"");
        break;
    case CHAT_SYNTAX_GRANITE:
        add(&b, many ? "\"<|tool_call|>[\" call (\", \" call)* \"]\"" : "\"<|tool_call|>[\" call \"]\"");
        break;
    case CHAT_SYNTAX_DEEPSEEK:
        add(&b, "\"<｜tool▁calls▁begin｜>\" ");
        add(&b, many ? "call+" : "call");
        add(&b, " \"<｜tool▁calls▁end｜>\"");
        break;
    default: /* generic */
        add(&b, "\"{\\\"tool_calls\\\": [\" ");
        add(&b, many ? "call (\", \" call)*" : "call");
        add(&b, " \"]}\"");
        if (q->tool_choice == ENG_TOOLS_AUTO) {
            add(&b, " | \"{\\\"response\\\": \" resp-root \"}\"\n");
            json_t *str = json_pack("{s:s}", "type", "string");
            kn_status st = gram_schema_rules(str, "resp-", &b, &err);
            json_decref(str);
            if (st != KN_OK) {
                kn_buf_free(&b);
                return oom(e);
            }
        }
        break;
    }
    add(&b, "\n");
    if (!b.p) return oom(e);
    *out = b.p;
    return true;
}

/* The system message that describes tools to a template without a tool
 * syntax (llama-server's generic format). */
static json_t *generic_system(const eng_gen_request *q) {
    char *tj = json_dumps(q->tools, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!tj) return NULL;
    kn_buf b = {0};
    add(&b, "You can call these tools (JSON function definitions):\n");
    add(&b, tj);
    add(&b, "\n\nAnswer with JSON only: {\"tool_calls\": [{\"name\": NAME, \"arguments\": {...}}]} to call "
            "tools");
    if (q->tool_choice == ENG_TOOLS_AUTO) add(&b, ", or {\"response\": \"...\"} to answer directly");
    add(&b, ".");
    free(tj);
    json_t *m = json_pack("{s:s, s:s%}", "role", "system", "content", b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    return m;
}

/* A copy of the messages as the template needs them: tool-call arguments
 * given as JSON text become objects (Hugging Face templates expect
 * objects), and a generic tool description joins the system message. */
/* For a template without tool syntax: earlier calls become the assistant's
 * generic JSON, and tool results user turns (merged when consecutive, so
 * that templates which insist on alternating roles still render). */
static json_t *generic_history(json_t *ms) {
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        const char *text = json_is_string(content) ? json_string_value(content) : "";
        json_t *calls = json_object_get(m, "tool_calls");
        if (role && !strcmp(role, "assistant") && json_array_size(calls) > 0) {
            json_t *list = json_array();
            size_t k;
            json_t *c;
            json_array_foreach(calls, k, c) {
                json_t *fn = json_object_get(c, "function");
                json_array_append_new(list, json_pack("{s:O?, s:O?}", "name", json_object_get(fn, "name"),
                                                      "arguments", json_object_get(fn, "arguments")));
            }
            json_t *g = json_pack("{s:o}", "tool_calls", list);
            char *gj = json_dumps(g, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(g);
            if (!gj) goto fail;
            kn_buf b = {0};
            if (text[0]) {
                add(&b, text);
                add(&b, "\n");
            }
            add(&b, gj);
            free(gj);
            json_array_append_new(
                out, json_pack("{s:s, s:s%}", "role", "assistant", "content", b.p ? b.p : "", b.n));
            kn_buf_free(&b);
        } else if (role && !strcmp(role, "tool")) {
            json_t *id = json_object_get(m, "tool_call_id");
            kn_buf b = {0};
            add(&b, "Tool result");
            if (json_is_string(id)) {
                add(&b, " (");
                add(&b, json_string_value(id));
                add(&b, ")");
            }
            add(&b, ": ");
            add(&b, text);
            json_t *last = json_array_get(out, json_array_size(out) - 1);
            const char *lr = json_string_value(json_object_get(last, "role"));
            if (lr && !strcmp(lr, "user") && json_object_get(last, "kiln_tool")) {
                const char *prev = json_string_value(json_object_get(last, "content"));
                kn_buf m2 = {0};
                add(&m2, prev ? prev : "");
                add(&m2, "\n");
                add(&m2, b.p ? b.p : "");
                json_object_set_new(last, "content", json_stringn(m2.p ? m2.p : "", m2.n));
                kn_buf_free(&m2);
            } else {
                json_array_append_new(out, json_pack("{s:s, s:s%, s:b}", "role", "user", "content",
                                                     b.p ? b.p : "", b.n, "kiln_tool", 1));
            }
            kn_buf_free(&b);
        } else {
            json_array_append(out, m);
        }
    }
    json_array_foreach(out, i, m) json_object_del(m, "kiln_tool");
    json_decref(ms);
    return out;
fail:
    json_decref(out);
    json_decref(ms);
    return NULL;
}

static json_t *messages_for_template(const eng_gen_request *q, json_t *sys, bool generic) {
    json_t *ms = json_deep_copy(q->messages);
    if (!ms) return NULL;
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        json_t *calls = json_object_get(m, "tool_calls");
        size_t k;
        json_t *c;
        json_array_foreach(calls, k, c) {
            json_t *fn = json_object_get(c, "function");
            json_t *args = json_object_get(fn, "arguments");
            if (!json_is_string(args)) continue;
            json_t *obj =
                json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, NULL);
            if (json_is_object(obj))
                json_object_set_new(fn, "arguments", obj);
            else
                json_decref(obj);
        }
    }
    if (generic && !(ms = generic_history(ms))) return NULL;
    if (sys) {
        json_t *first = json_array_get(ms, 0);
        json_t *role = json_object_get(first, "role");
        if (json_is_string(role) && !strcmp(json_string_value(role), "system") &&
            json_is_string(json_object_get(first, "content"))) {
            /* the tools follow the user's system prompt */
            const char *a = json_string_value(json_object_get(first, "content"));
            const char *b = json_string_value(json_object_get(sys, "content"));
            size_t la = strlen(a), lb = strlen(b);
            char *t = malloc(la + lb + 3);
            if (!t) {
                json_decref(ms);
                return NULL;
            }
            memcpy(t, a, la);
            memcpy(t + la, "\n\n", 2);
            memcpy(t + la + 2, b, lb + 1);
            json_object_set_new(first, "content", json_stringn(t, la + lb + 2));
            free(t);
        } else {
            json_array_insert(ms, 0, sys);
        }
    }
    return ms;
}

/* The text that closes the reasoning block a prompt opened (a grammar that
 * forces an answer writes it first), or NULL when none is open. */
static const char *open_block_close(const char *t, size_t n) {
    if (!chat_prompt_in_reasoning(t, n)) return NULL;
    while (n && (t[n - 1] == '\n' || t[n - 1] == ' '))
        n--;
    return n >= 7 && !memcmp(t + n - 7, "<think>", 7) ? "</think>\n\n" : "<channel|>";
}

static bool prep_chat(const eng_gen_request *q, const rt_front *f, eng_prep *p, eng_error *e) {
    if (!f->chat)
        return eng_fail(e, ENG_ERR_REQUEST, "messages", "no_chat_template",
                        "model '%s' has no usable chat template: %s", f->name, f->chat_err);
    if (!check_tools(q, e)) return false;
    size_t slen = 0;
    const char *src = tok_chat_source(f->chat, &slen);
    int syntax = (int)chat_syntax_detect(src, slen);
    bool thinks = chat_template_thinks(src, slen);
    bool has_tools = json_array_size(q->tools) > 0;
    bool tools_on = has_tools && q->tool_choice != ENG_TOOLS_NONE;
    json_t *sys = NULL;
    bool want_call = tools_on && (q->tool_choice == ENG_TOOLS_REQUIRED || q->tool_choice == ENG_TOOLS_NAMED);
    /* a template without a tool syntax, or one whose calls kiln cannot force
     * (gemma4's own argument notation), gets the generic JSON format */
    if (tools_on && (syntax == CHAT_SYNTAX_PLAIN || (want_call && syntax == CHAT_SYNTAX_GEMMA4))) {
        syntax = CHAT_SYNTAX_GENERIC;
        if (!(sys = generic_system(q))) return oom(e);
    }
    json_t *ms = messages_for_template(q, sys, syntax == CHAT_SYNTAX_GENERIC);
    json_decref(sys);
    if (!ms) return oom(e);
    json_t *extra = q->think != ENG_THINK_DEFAULT
                        ? json_pack("{s:b}", "enable_thinking", q->think == ENG_THINK_ON)
                        : NULL;
    char *text = NULL;
    size_t len = 0;
    kn_err err = {0};
    kn_status st = tok_chat_render_ex(f->chat, ms, syntax == CHAT_SYNTAX_GENERIC ? NULL : q->tools, extra,
                                      true, &text, &len, &err);
    json_decref(ms);
    json_decref(extra);
    if (st != KN_OK)
        return st == KN_ENOMEM ? oom(e)
                               : eng_fail(e, ENG_ERR_REQUEST, "messages", "template_error",
                                          "the chat template failed: %s", err.msg);
    p->syntax = syntax;
    p->tools = tools_on;
    p->reasoning = thinks;
    p->close = thinks && syntax != CHAT_SYNTAX_HARMONY ? open_block_close(text, len) : NULL;
    p->in_reasoning = p->close != NULL;
    p->parse = tools_on || thinks;
    st = tok_chat_encode(f->chat, text, len, &p->ids, &p->n_ids, &err);
    free(text);
    if (st != KN_OK)
        return st == KN_ENOMEM ? oom(e)
                               : eng_fail(e, ENG_ERR_REQUEST, "messages", NULL,
                                          "cannot tokenize the prompt: %s", err.msg);
    bool forced = want_call || (tools_on && syntax == CHAT_SYNTAX_GENERIC);
    if (forced) {
        if ((q->grammar && q->grammar[0]) || q->json_schema)
            return eng_fail(e, ENG_ERR_REQUEST, "tool_choice", "invalid_value",
                            "a forced tool call cannot be combined with a grammar or a JSON response format");
        /* the grammar closes an open reasoning block first; the parser still
         * starts in it, so that the closing marker is read as markup */
        if (!tool_grammar(q, syntax, p->close, &p->gbnf, e)) return false;
        p->calls_only = want_call;
    }
    return true;
}

bool eng_prep_request(const eng_gen_request *q, const rt_front *f, eng_prep *p, eng_error *e) {
    memset(p, 0, sizeof *p);
    kn_err err = {0};
    if (q->json_schema && q->grammar && q->grammar[0])
        return eng_fail(e, ENG_ERR_REQUEST, "grammar", "invalid_value",
                        "give a grammar or a JSON response format, not both");
    if (!q->messages && (json_array_size(q->tools) > 0 || q->tool_choice != ENG_TOOLS_AUTO))
        return eng_fail(e, ENG_ERR_REQUEST, "tools", "unsupported", "tools need a chat request (messages)");
    if (q->messages) {
        if (!prep_chat(q, f, p, e)) goto fail;
    } else if (q->prompt_tokens) {
        if (!(p->ids = malloc((q->n_prompt_tokens ? q->n_prompt_tokens : 1) * sizeof *p->ids))) goto nomem;
        memcpy(p->ids, q->prompt_tokens, q->n_prompt_tokens * sizeof *p->ids);
        p->n_ids = q->n_prompt_tokens;
    } else if (tok_encode_alloc(f->vocab, q->prompt ? q->prompt : "", q->prompt_len, q->add_special, true,
                                &p->ids, &p->n_ids, &err) != KN_OK) {
        eng_fail(e, ENG_ERR_REQUEST, "prompt", NULL, "cannot tokenize the prompt: %s", err.msg);
        goto fail;
    }
    if (p->n_ids == 0) {
        eng_fail(e, ENG_ERR_REQUEST, q->prompt_param, "empty_prompt", "the prompt is empty");
        goto fail;
    }
    if (q->json_schema && !p->gbnf) {
        kn_buf b = {0};
        /* the schema's value, after an open reasoning block closes */
        add(&b, "root ::= ");
        if (p->close) {
            lit(&b, p->close);
            add(&b, " ");
        }
        add(&b, "s-root\n");
        kn_status st = gram_schema_rules(q->json_schema, "s-", &b, &err);
        if (st != KN_OK || !b.p) {
            kn_buf_free(&b);
            if (st == KN_ENOMEM || st == KN_OK) goto nomem;
            eng_fail(e, ENG_ERR_REQUEST, q->json_schema_param ? q->json_schema_param : "json_schema",
                     "invalid_schema", "%s", err.msg);
            goto fail;
        }
        p->gbnf = b.p;
    }
    return true;
nomem:
    oom(e);
fail:
    eng_prep_free(p);
    return false;
}
