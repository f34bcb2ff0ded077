/*
 * syn_json.c — the syntaxes whose calls are JSON objects after (or inside)
 * a marker: hermes, granite, mistral, deepseek, llama3 (both forms) and
 * generic. Each handler sees the text from its marker on (see internal.h
 * for the contract) and stages the calls it read.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const ARGS_KEYS[] = {"arguments", "parameters", NULL};

/* A call object's text s[0..n) -> staged call; false if it is not one. */
static bool stage_obj_text(chat_parser *p, const char *s, size_t n) {
    json_t *v = chat_json_load(s, n);
    bool ok = chat_stage_call_obj(p, v, ARGS_KEYS);
    json_decref(v);
    return ok;
}

/* A JSON array of call objects (or one object) -> staged calls. */
static bool stage_list_text(chat_parser *p, const char *s, size_t n) {
    json_t *v = chat_json_load(s, n);
    bool ok = false;
    if (json_is_array(v) && json_array_size(v) > 0) {
        ok = true;
        for (size_t i = 0; ok && i < json_array_size(v); i++)
            ok = chat_stage_call_obj(p, json_array_get(v, i), ARGS_KEYS);
    } else if (json_is_object(v))
        ok = chat_stage_call_obj(p, v, ARGS_KEYS);
    json_decref(v);
    if (!ok) chat_unstage(p);
    return ok;
}

/* The end of the JSON value that starts at s[0] ('{' or '['), scanned
 * from scratch; 0 if it does not close within n. */
static size_t json_end(const char *s, size_t n) {
    chat_jscan j = {0};
    size_t e = 0;
    return chat_jscan_run(&j, s, n, &e) ? e : 0;
}

/* A marker, whitespace, then one JSON value (a list of calls or a call),
 * scanned incrementally in p->js: granite, mistral's list form. */
static chat_try marker_then_list(chat_parser *p, size_t tlen, const char *s, size_t n, bool final,
                                 size_t *used) {
    size_t k = tlen + chat_skip_ws(s + tlen, n - tlen);
    if (k == n) {
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    if (s[k] != '[' && s[k] != '{') {
        *used = tlen;
        return CHAT_TRY_TEXT;
    }
    size_t e;
    if (!chat_jscan_run(&p->js, s + k, n - k, &e)) {
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = k + e;
    return stage_list_text(p, s + k, e) ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
}

/* ---- hermes: <tool_call>{"name": N, "arguments": {...}}</tool_call> ------------------------ */

chat_try chat_try_hermes(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    static const char CLOSE[] = "</tool_call>";
    size_t tlen = strlen("<tool_call>"), cl = strlen(CLOSE);
    size_t from = p->sub > tlen ? p->sub : tlen;
    size_t j = chat_find(s, n, from, CLOSE, cl);
    if (j == n) {
        p->sub = n >= cl ? n - cl + 1 : 0; /* resume the search here */
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = j + cl;
    size_t b = tlen + chat_skip_ws(s + tlen, j - tlen);
    return stage_obj_text(p, s + b, j - b) ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
}

/* ---- granite: <|tool_call|>[{"name": N, "arguments": {...}}, ...] ------------------------------- */

chat_try chat_try_granite(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    return marker_then_list(p, strlen("<|tool_call|>"), s, n, final, used);
}

/* ---- mistral: [TOOL_CALLS][{...}, ...] or [TOOL_CALLS]N[CALL_ID]id[ARGS]{...} ---------------------- */

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

chat_try chat_try_mistral(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t tlen = strlen("[TOOL_CALLS]");
    size_t k = tlen + chat_skip_ws(s + tlen, n - tlen);
    if (k < n && (s[k] == '[' || s[k] == '{')) return marker_then_list(p, tlen, s, n, final, used);
    /* the newer form: a name, an optional [CALL_ID]id, [ARGS] and the arguments */
    *used = tlen;
    size_t nb = k, ne = k;
    while (ne < n && name_char(s[ne]) && ne - nb < 256)
        ne++;
    const char *id = NULL;
    size_t id_len = 0, a = ne;
    if (a == n) goto more;
    if (ne == nb || s[a] != '[') return CHAT_TRY_TEXT;
    if (chat_is_prefix_of(s + a, n - a, "[CALL_ID]") || chat_is_prefix_of(s + a, n - a, "[ARGS]")) goto more;
    if (chat_starts(s + a, n - a, "[CALL_ID]")) {
        a += strlen("[CALL_ID]");
        id = s + a;
        while (a < n && name_char(s[a]) && a - (size_t)(id - s) < 256)
            a++;
        id_len = (size_t)(s + a - id);
        if (a == n) goto more;
        if (chat_is_prefix_of(s + a, n - a, "[ARGS]")) goto more;
    }
    if (!chat_starts(s + a, n - a, "[ARGS]")) return CHAT_TRY_TEXT;
    a += strlen("[ARGS]");
    a += chat_skip_ws(s + a, n - a);
    if (a == n) goto more;
    if (s[a] != '{') return CHAT_TRY_TEXT;
    size_t e;
    if (!chat_jscan_run(&p->js, s + a, n - a, &e)) goto more;
    *used = a + e;
    json_t *args = chat_json_load(s + a, e);
    char idbuf[257];
    if (id) {
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = 0;
    }
    bool ok = chat_stage_call(p, s + nb, ne - nb, args, id && id_len ? idbuf : NULL);
    json_decref(args);
    return ok ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
more:
    *used = n;
    return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
}

/* ---- deepseek ----------------------------------------------------------------------------------
 * <｜tool▁calls▁begin｜>
 * (<｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>)+
 * <｜tool▁calls▁end｜>; V3.1 writes <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>. */

#define DS_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define DS_CALLS_END "<｜tool▁calls▁end｜>"
#define DS_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define DS_CALL_END "<｜tool▁call▁end｜>"
#define DS_SEP "<｜tool▁sep｜>"

/* The calls of the block s[0..n) (between the begin and end markers). */
static bool deepseek_block(chat_parser *p, const char *s, size_t n) {
    size_t k = 0, calls = 0;
    for (;;) {
        k += chat_skip_ws(s + k, n - k);
        if (k == n) return calls > 0;
        if (!chat_starts(s + k, n - k, DS_CALL_BEGIN)) return false;
        k += strlen(DS_CALL_BEGIN);
        size_t sep = chat_find(s, n, k, DS_SEP, strlen(DS_SEP));
        if (sep == n) return false;
        const char *name = s + k;
        size_t name_len = sep - k;
        k = sep + strlen(DS_SEP);
        if (name_len == strlen("function") && memcmp(name, "function", name_len) == 0) {
            size_t nl = k;
            while (nl < n && s[nl] != '\n' && s[nl] != '`' && s[nl] != '{')
                nl++;
            name = s + k;
            name_len = nl - k;
            while (name_len > 0 && chat_is_ws(name[name_len - 1]))
                name_len--;
            k = nl;
        }
        k += chat_skip_ws(s + k, n - k);
        bool fence = chat_starts(s + k, n - k, "```");
        if (fence) {
            k += 3;
            while (k < n && s[k] != '\n' && s[k] != '{')
                k++;
            k += chat_skip_ws(s + k, n - k);
        }
        if (k == n || s[k] != '{') return false;
        size_t e = json_end(s + k, n - k);
        if (!e) return false;
        json_t *args = chat_json_load(s + k, e);
        bool ok = chat_stage_call(p, name, name_len, args, NULL);
        json_decref(args);
        if (!ok) return false;
        calls++;
        k += e;
        k += chat_skip_ws(s + k, n - k);
        if (fence) {
            if (!chat_starts(s + k, n - k, "```")) return false;
            k += 3;
            k += chat_skip_ws(s + k, n - k);
        }
        if (!chat_starts(s + k, n - k, DS_CALL_END)) return false;
        k += strlen(DS_CALL_END);
    }
}

chat_try chat_try_deepseek(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t tlen = strlen(DS_CALLS_BEGIN), cl = strlen(DS_CALLS_END);
    size_t from = p->sub > tlen ? p->sub : tlen;
    size_t j = chat_find(s, n, from, DS_CALLS_END, cl);
    if (j == n) {
        p->sub = n >= cl ? n - cl + 1 : 0;
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = j + cl;
    if (deepseek_block(p, s + tlen, j - tlen)) return CHAT_TRY_CALLS;
    chat_unstage(p);
    return CHAT_TRY_TEXT;
}

/* ---- llama3 -------------------------------------------------------------------------------------
 * The whole answer {"name": N, "parameters": {...}} (several: ';' between), or after <|python_tag|>
 * a JSON call or a built-in tool's N.call(k=v, ...). */

chat_try chat_try_llama3_whole(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t e;
    if (!chat_jscan_run(&p->js, s, n, &e)) {
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = e;
    return stage_obj_text(p, s, e) ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
}

/* One Python literal argument value s[0..n) -> JSON (strings in either
 * quotes, numbers, True/False/None, or JSON). */
static json_t *py_value(const char *s, size_t n) {
    while (n > 0 && chat_is_ws(s[n - 1]))
        n--;
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
        if (s[0] == '"') return chat_json_load(s, n);
        char buf[4096]; /* '...': re-quote as JSON (escapes kept) */
        size_t k = 0;
        buf[k++] = '"';
        for (size_t i = 1; i + 1 < n; i++) {
            if (k + 3 >= sizeof buf) return NULL;
            if (s[i] == '"') buf[k++] = '\\';
            if (s[i] == '\\' && i + 2 < n && s[i + 1] == '\'') i++;
            buf[k++] = s[i];
        }
        buf[k++] = '"';
        return chat_json_load(buf, k);
    }
    if (n == 4 && memcmp(s, "True", 4) == 0) return json_true();
    if (n == 5 && memcmp(s, "False", 5) == 0) return json_false();
    if (n == 4 && memcmp(s, "None", 4) == 0) return json_null();
    return chat_json_load(s, n);
}

/* N.call(k=v, ...) at s[0..n); *end past the ')' (0: not closed yet); false if it is not that. */
static bool py_call(chat_parser *p, const char *s, size_t n, size_t *end) {
    *end = 0;
    size_t k = 0;
    while (k < n && name_char(s[k]) && s[k] != '.')
        k++;
    size_t name_len = k;
    if (name_len == 0 || name_len > 255) return false;
    if (k == n) return true;
    if (!chat_starts(s + k, n - k, ".call(")) return chat_is_prefix_of(s + k, n - k, ".call(");
    k += strlen(".call(");
    size_t a = k; /* find the closing ')' outside quotes and brackets */
    int depth = 0;
    char q = 0;
    for (; k < n; k++) {
        char c = s[k];
        if (q) {
            if (c == '\\')
                k++;
            else if (c == q)
                q = 0;
        } else if (c == '"' || c == '\'')
            q = c;
        else if (c == '(' || c == '[' || c == '{')
            depth++;
        else if (c == ']' || c == '}')
            depth--;
        else if (c == ')' && depth-- == 0)
            break;
    }
    if (k >= n) return true; /* not closed yet */
    *end = k + 1;
    /* k=v pairs split at top-level commas */
    json_t *args = json_object();
    size_t i = a;
    bool ok = args != NULL;
    while (ok && i < k) {
        i += chat_skip_ws(s + i, k - i);
        if (i == k) break;
        size_t kb = i;
        while (i < k && name_char(s[i]) && s[i] != '.')
            i++;
        size_t ke = i;
        i += chat_skip_ws(s + i, k - i);
        if (ke == kb || i == k || s[i] != '=') {
            ok = false;
            break;
        }
        i++;
        size_t vb = i + chat_skip_ws(s + i, k - i);
        int d = 0;
        q = 0;
        for (i = vb; i < k; i++) {
            char c = s[i];
            if (q) {
                if (c == '\\')
                    i++;
                else if (c == q)
                    q = 0;
            } else if (c == '"' || c == '\'')
                q = c;
            else if (c == '(' || c == '[' || c == '{')
                d++;
            else if (c == ')' || c == ']' || c == '}')
                d--;
            else if (c == ',' && d == 0)
                break;
        }
        size_t ve = i < k ? i : k;
        json_t *v = py_value(s + vb, ve - vb);
        char key[256];
        if (!v || ke - kb >= sizeof key) {
            json_decref(v);
            ok = false;
            break;
        }
        memcpy(key, s + kb, ke - kb);
        key[ke - kb] = 0;
        json_object_set_new(args, key, v);
        if (i < k) i++; /* the comma */
    }
    ok = ok && chat_stage_call(p, s, name_len, args, NULL);
    json_decref(args);
    if (!ok) *end = 0;
    return ok;
}

chat_try chat_try_llama3_tag(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t tlen = strlen("<|python_tag|>");
    size_t k = tlen + chat_skip_ws(s + tlen, n - tlen);
    *used = tlen;
    if (k == n) goto more;
    if (s[k] == '{') {
        size_t e;
        if (!chat_jscan_run(&p->js, s + k, n - k, &e)) goto more;
        *used = k + e;
        return stage_obj_text(p, s + k, e) ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
    }
    size_t end;
    if (!py_call(p, s + k, n - k, &end)) return CHAT_TRY_TEXT;
    if (end == 0) goto more;
    *used = k + end;
    return CHAT_TRY_CALLS;
more:
    *used = n;
    return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
}

/* ---- generic: the whole answer {"tool_calls": [...]} | {"tool_call": {...}} | {"response": ...} ---- */

chat_try chat_try_generic(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t e;
    if (!chat_jscan_run(&p->js, s, n, &e)) {
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = e;
    json_t *v = chat_json_load(s, e);
    bool ok = false;
    json_t *calls = json_object_get(v, "tool_calls"), *call = json_object_get(v, "tool_call"),
           *resp = json_object_get(v, "response");
    if (json_is_array(calls) && json_array_size(calls) > 0) {
        ok = true;
        for (size_t i = 0; ok && i < json_array_size(calls); i++)
            ok = chat_stage_call_obj(p, json_array_get(calls, i), ARGS_KEYS);
    } else if (json_is_object(call))
        ok = chat_stage_call_obj(p, call, ARGS_KEYS);
    else if (json_is_string(resp))
        ok = chat_stage_content(p, json_string_value(resp), json_string_length(resp));
    json_decref(v);
    if (!ok) chat_unstage(p);
    return ok ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
}
