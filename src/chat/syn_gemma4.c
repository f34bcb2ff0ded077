/*
 * syn_gemma4.c — Gemma 4's calls: <|tool_call>call:NAME{key:value,...}<tool_call|>
 * in its own argument notation, as its template's format_argument writes
 * it: strings between <|"|> delimiters (no escapes), bare or delimited
 * keys, true/false/null, numbers, {...} and [...]. The arguments become a
 * JSON object. Its reasoning (<|channel>thought ... <channel|>) is the
 * driver's, through the row's think markers.
 */
#include "internal.h"

#include <string.h>

#define G_OPEN "<|tool_call>"
#define G_CLOSE "<tool_call|>"
#define G_QUOTE "<|\"|>"
#define G_MAX_DEPTH 64

typedef struct gp {
    const char *s;
    size_t n, i;
} gp;

static void g_ws(gp *g) {
    g->i += chat_skip_ws(g->s + g->i, g->n - g->i);
}

static bool g_lit(gp *g, const char *lit) {
    if (!chat_starts(g->s + g->i, g->n - g->i, lit)) return false;
    g->i += strlen(lit);
    return true;
}

/* A <|"|>-delimited string (after the opening delimiter). */
static json_t *g_string(gp *g) {
    size_t e = chat_find(g->s, g->n, g->i, G_QUOTE, strlen(G_QUOTE));
    if (e == g->n) return NULL;
    json_t *v = json_stringn(g->s + g->i, e - g->i);
    g->i = e + strlen(G_QUOTE);
    return v;
}

static json_t *g_value(gp *g, int depth);

static json_t *g_object(gp *g, int depth) { /* after '{' */
    json_t *o = json_object();
    g_ws(g);
    if (g_lit(g, "}")) return o;
    while (o) {
        g_ws(g);
        char key[512];
        size_t kl;
        if (g_lit(g, G_QUOTE)) {
            size_t e = chat_find(g->s, g->n, g->i, G_QUOTE, strlen(G_QUOTE));
            if (e == g->n || e - g->i >= sizeof key) break;
            kl = e - g->i;
            memcpy(key, g->s + g->i, kl);
            g->i = e + strlen(G_QUOTE);
        } else {
            size_t b = g->i;
            while (g->i < g->n && g->s[g->i] != ':' && g->s[g->i] != ',' && g->s[g->i] != '{' &&
                   g->s[g->i] != '}' && !chat_is_ws(g->s[g->i]))
                g->i++;
            kl = g->i - b;
            if (kl == 0 || kl >= sizeof key) break;
            memcpy(key, g->s + b, kl);
        }
        key[kl] = 0;
        if (memchr(key, 0, kl)) break;
        g_ws(g);
        if (!g_lit(g, ":")) break;
        json_t *v = g_value(g, depth + 1);
        if (!v || json_object_set_new(o, key, v) != 0) break;
        g_ws(g);
        if (g_lit(g, "}")) return o;
        if (!g_lit(g, ",")) break;
    }
    json_decref(o);
    return NULL;
}

static json_t *g_array(gp *g, int depth) { /* after '[' */
    json_t *a = json_array();
    g_ws(g);
    if (g_lit(g, "]")) return a;
    while (a) {
        json_t *v = g_value(g, depth + 1);
        if (!v || json_array_append_new(a, v) != 0) break;
        g_ws(g);
        if (g_lit(g, "]")) return a;
        if (!g_lit(g, ",")) break;
    }
    json_decref(a);
    return NULL;
}

static json_t *g_value(gp *g, int depth) {
    if (depth > G_MAX_DEPTH) return NULL;
    g_ws(g);
    if (g_lit(g, G_QUOTE)) return g_string(g);
    if (g_lit(g, "{")) return g_object(g, depth);
    if (g_lit(g, "[")) return g_array(g, depth);
    if (g_lit(g, "true")) return json_true();
    if (g_lit(g, "false")) return json_false();
    if (g_lit(g, "null") || g_lit(g, "None")) return json_null();
    size_t b = g->i; /* a number */
    while (g->i < g->n && strchr("0123456789+-.eE", g->s[g->i]) && g->s[g->i])
        g->i++;
    if (g->i == b) return NULL;
    json_t *v = chat_json_load(g->s + b, g->i - b);
    if (!json_is_number(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

chat_try chat_try_gemma4(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used) {
    size_t tlen = strlen(G_OPEN), cl = strlen(G_CLOSE);
    size_t from = p->sub > tlen ? p->sub : tlen;
    size_t j = chat_find(s, n, from, G_CLOSE, cl);
    if (j == n) {
        p->sub = n >= cl ? n - cl + 1 : 0;
        *used = n;
        return final ? CHAT_TRY_TEXT : CHAT_TRY_MORE;
    }
    *used = j + cl;
    gp g = {s, j, tlen};
    g_ws(&g);
    if (!g_lit(&g, "call:")) return CHAT_TRY_TEXT;
    size_t nb = g.i;
    while (g.i < j && s[g.i] != '{' && !chat_is_ws(s[g.i]))
        g.i++;
    size_t ne = g.i;
    g_ws(&g);
    if (ne == nb || !g_lit(&g, "{")) return CHAT_TRY_TEXT;
    json_t *args = g_object(&g, 0);
    g_ws(&g);
    bool ok = args && g.i == j && chat_stage_call(p, s + nb, ne - nb, args, NULL);
    json_decref(args);
    return ok ? CHAT_TRY_CALLS : CHAT_TRY_TEXT;
}
