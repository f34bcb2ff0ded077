/*
 * json.c — helpers the syntaxes share: text search, the end of a JSON
 * value, decoding call objects with jansson and staging their events.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

size_t chat_skip_ws(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && chat_is_ws(s[i]))
        i++;
    return i;
}

size_t chat_find(const char *s, size_t n, size_t from, const char *needle, size_t nlen) {
    if (from >= n || nlen == 0) return n;
    const char *hit = memmem(s + from, n - from, needle, nlen);
    return hit ? (size_t)(hit - s) : n;
}

bool chat_starts(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(s, lit, l) == 0;
}

bool chat_is_prefix_of(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n < l && memcmp(s, lit, n) == 0;
}

bool chat_jscan_run(chat_jscan *j, const char *s, size_t n, size_t *end) {
    for (size_t i = j->off; i < n; i++) {
        char c = s[i];
        if (j->str) {
            if (j->esc)
                j->esc = false;
            else if (c == '\\')
                j->esc = true;
            else if (c == '"')
                j->str = false;
            continue;
        }
        if (c == '"')
            j->str = true;
        else if (c == '{' || c == '[')
            j->depth++;
        else if (c == '}' || c == ']') {
            if (--j->depth <= 0) {
                j->off = i + 1;
                *end = i + 1;
                return true;
            }
        }
    }
    j->off = n;
    return false;
}

json_t *chat_json_load(const char *s, size_t n) {
    json_error_t e;
    return json_loadb(s, n, JSON_DECODE_ANY, &e);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static chat_staged *stage_slot(chat_parser *p) {
    if (p->nstaged == p->staged_cap) {
        size_t cap = p->staged_cap ? p->staged_cap * 2 : 4;
        chat_staged *ns = realloc(p->staged, cap * sizeof *ns);
        if (!ns) return NULL;
        p->staged = ns;
        p->staged_cap = cap;
    }
    chat_staged *s = &p->staged[p->nstaged];
    memset(s, 0, sizeof *s);
    return s;
}

static size_t staged_calls(const chat_parser *p) {
    size_t k = 0;
    for (size_t i = 0; i < p->nstaged; i++)
        k += p->staged[i].kind == CHAT_EV_TOOL_CALL;
    return k;
}

bool chat_stage_call(chat_parser *p, const char *name, size_t name_len, json_t *args, const char *id) {
    if (name_len == 0 || memchr(name, 0, name_len)) return false;
    if ((size_t)p->ncalls + staged_calls(p) >= CHAT_MAX_CALLS) return false;
    json_t *obj = NULL;
    if (json_is_string(args)) { /* some models write the arguments as a string of JSON */
        obj = chat_json_load(json_string_value(args), json_string_length(args));
        if (!json_is_object(obj)) {
            json_decref(obj);
            return false;
        }
    } else if (json_is_object(args))
        obj = json_incref(args);
    else
        return false;
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!text) return false;
    /* a converted notation (gemma4) may carry bytes that are not UTF-8 into a
     * key or string: such arguments are not JSON a client can read, so the
     * markup stays content */
    json_t *check = json_loads(text, 0, NULL);
    bool valid = json_is_object(check);
    json_decref(check);
    if (!valid) {
        free(text);
        return false;
    }
    chat_staged *s = stage_slot(p);
    char *nm = dup_n(name, name_len);
    char *idc = id ? dup_n(id, strlen(id)) : NULL;
    if (!s || !nm || (id && !idc)) {
        free(text), free(nm), free(idc);
        return false;
    }
    s->kind = CHAT_EV_TOOL_CALL;
    s->text = nm;
    s->len = name_len;
    s->args = text;
    s->args_len = strlen(text);
    s->id = idc;
    p->nstaged++;
    return true;
}

bool chat_stage_call_obj(chat_parser *p, json_t *obj, const char *const *args_keys) {
    if (!json_is_object(obj)) return false;
    json_t *name = json_object_get(obj, "name");
    if (!json_is_string(name)) return false;
    json_t *args = NULL;
    for (; *args_keys && !args; args_keys++)
        args = json_object_get(obj, *args_keys);
    if (!args) return false;
    json_t *id = json_object_get(obj, "id");
    return chat_stage_call(p, json_string_value(name), json_string_length(name), args,
                           json_is_string(id) ? json_string_value(id) : NULL);
}

bool chat_stage_content(chat_parser *p, const char *s, size_t n) {
    chat_staged *st = stage_slot(p);
    char *t = st ? dup_n(s, n) : NULL;
    if (!t) return false;
    st->kind = CHAT_EV_CONTENT;
    st->text = t;
    st->len = n;
    p->nstaged++;
    return true;
}

void chat_unstage(chat_parser *p) {
    for (size_t i = 0; i < p->nstaged; i++) {
        free(p->staged[i].text);
        free(p->staged[i].args);
        free(p->staged[i].id);
    }
    p->nstaged = 0;
}
