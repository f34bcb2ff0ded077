/*
 * chat_template_value.c — the foundations every stage of the template
 * engine stands on: the arena (one per template, one per render; freed in
 * one go), the error channel (tmpl_fail longjmps to the entry point), and
 * the runtime's values: dicts, conversion from JSON input, printing as
 * Python's str()/repr() and json.dumps, equality and ordering, iteration.
 * See chat_template_internal.h for the invariants.
 */
#include "chat_template_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- arena ---- */

void tmpl_arena_free(arena *a) {
    ar_chunk *c = a->head;
    while (c) {
        ar_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->total = 0;
}

void *tmpl_arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    ar_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->cap || cap > a->cap) return NULL;
        c = malloc(sizeof(ar_chunk) + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        a->total += cap;
        /* big one-off blocks go behind the current chunk so its tail stays usable */
        if (a->head && n > 65536) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

/* ---- error channel ---- */

_Noreturn void tmpl_fail(ectx *e, int line, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (e->err) {
        if (line > 0)
            kn_fail(e->err, KN_EINVAL, "template line %d: %s", line, buf);
        else
            kn_fail(e->err, KN_EINVAL, "template: %s", buf);
    }
    longjmp(e->jb, 1);
}

void *tmpl_alloc(ectx *e, size_t n) {
    void *p = tmpl_arena_alloc(e->ar, n);
    if (!p) tmpl_fail(e, 0, "out of memory (template memory limit reached)");
    memset(p, 0, n);
    return p;
}

char *tmpl_strdup(ectx *e, const char *s, size_t n) {
    char *p = tmpl_arena_alloc(e->ar, n + 1);
    if (!p) tmpl_fail(e, 0, "out of memory (template memory limit reached)");
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void *tmpl_regrow(ectx *e, const void *old, size_t n, size_t cap, size_t size) {
    void *p = tmpl_alloc(e, cap * size);
    if (n) memcpy(p, old, n * size);
    return p;
}

/* ---- buffers ---- */

void tmpl_sb_grow(rctx *R, sbuf *b, size_t extra) {
    if (extra > R->max_output || b->n + extra > R->max_output)
        RFAIL(R, "rendered output too large (limit %zu bytes)", R->max_output);
    if (b->n + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = ralloc(R, cap);
    if (b->n) memcpy(p, b->p, b->n);
    b->p = p;
    b->cap = cap;
}

/* ---- dicts ---- */

jv **tmpl_dict_slot(rctx *R, jdict *d, const jv *key) {
    if (d->n > 16) work(R, d->n * 16);
    for (size_t i = 0; i < d->n; i++)
        if (tmpl_val_eq(R, d->k[i], key)) return &d->v[i];
    return NULL;
}

jv *tmpl_dict_get(const jdict *d, const char *p, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], p, n)) return d->v[i];
    return NULL;
}

/* Appends without looking for an existing key (keys known unique). */
void tmpl_dict_append(rctx *R, jv *dv, jv *key, jv *val) {
    jdict *d = dv->u.d;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        d->k = tmpl_regrow(&R->e, d->k, d->n, cap, sizeof(jv *));
        d->v = tmpl_regrow(&R->e, d->v, d->n, cap, sizeof(jv *));
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

void tmpl_dict_set(rctx *R, jv *dv, jv *key, jv *val) {
    jv **slot = tmpl_dict_slot(R, dv->u.d, key);
    if (slot) *slot = val;
    else tmpl_dict_append(R, dv, key, val);
}

/* ---- JSON input ---- */

jv *tmpl_from_json(rctx *R, const json_t *j, int depth) {
    if (depth > 512) RFAIL(R, "input JSON nested too deeply");
    step(R);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv *d = mk_dict(R, V_DICT);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            tmpl_dict_append(R, d, mk_strcopy(R, k, strlen(k)),
                             tmpl_from_json(R, v, depth + 1)); /* JSON keys are unique */
        }
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        jv *l = mk_list(R, V_LIST, n);
        for (size_t i = 0; i < n; i++) list_push(R, l, tmpl_from_json(R, json_array_get(j, i), depth + 1));
        return l;
    }
    case JSON_STRING: return mk_strcopy(R, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return mk_int(R, (int64_t)json_integer_value(j));
    case JSON_REAL: return mk_float(R, json_real_value(j));
    case JSON_TRUE: return R->vtrue;
    case JSON_FALSE: return R->vfalse;
    default: return R->none;
    }
}

/* ---- UTF-8 ---- */

size_t *tmpl_cp_offsets(rctx *R, const char *p, size_t n, size_t *cnt) {
    size_t c = cp_count(p, n);
    size_t *o = ralloc(R, (c + 1) * sizeof(size_t));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_cont((unsigned char)p[i])) o[k++] = i;
    /* a leading continuation byte: count it with the first code point */
    if (k == 0 && n) o[k++] = 0;
    o[k] = n;
    *cnt = k;
    return o;
}

/* ---- printing ---- */

/* Python's repr() of a float (the shortest digits that read back), or
 * JSON's spelling of it (NaN, Infinity) */
static void fmt_float(double d, char *out, size_t cap, bool json) {
    if (isnan(d)) { snprintf(out, cap, "%s", json ? "NaN" : "nan"); return; }
    if (isinf(d)) { snprintf(out, cap, "%s", d > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf")); return; }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    /* buf = [-]d.ddde[+-]XX */
    char digits[32];
    size_t nd = 0;
    bool neg = buf[0] == '-';
    const char *q = buf + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int ex = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char *o = out;
    size_t left = cap;
#define EMIT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
    if (neg) EMIT("-");
    if (ex >= -4 && ex < 16) {
        if (ex >= 0) {
            for (int i = 0; i <= ex; i++) EMIT("%c", (size_t)i < nd ? digits[i] : '0');
            EMIT(".");
            if ((size_t)ex + 1 < nd) EMIT("%s", digits + ex + 1);
            else EMIT("0");
        } else {
            EMIT("0.");
            for (int i = 0; i < -ex - 1; i++) EMIT("0");
            EMIT("%s", digits);
        }
    } else {
        EMIT("%c", digits[0]);
        if (nd > 1) EMIT(".%s", digits + 1);
        EMIT("e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
#undef EMIT
}

static void py_repr(rctx *R, const jv *v, sbuf *b);

static void py_repr_str(rctx *R, const char *p, size_t n, sbuf *b) {
    bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    sb_putc(R, b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char e[8];
        if (c == '\\') sb_puts(R, b, "\\\\");
        else if (c == (unsigned char)q) { sb_putc(R, b, '\\'); sb_putc(R, b, (char)c); }
        else if (c == '\n') sb_puts(R, b, "\\n");
        else if (c == '\r') sb_puts(R, b, "\\r");
        else if (c == '\t') sb_puts(R, b, "\\t");
        else if (c < 0x20 || c == 0x7f) { snprintf(e, sizeof e, "\\x%02x", c); sb_puts(R, b, e); }
        else sb_putc(R, b, (char)c);
    }
    sb_putc(R, b, q);
}

/* str(v) appended to b */
void tmpl_to_str(rctx *R, const jv *v, sbuf *b) {
    char buf[64];
    switch (v->t) {
    case V_UNDEF: return;
    case V_NONE: sb_puts(R, b, "None"); return;
    case V_BOOL: sb_puts(R, b, v->u.b ? "True" : "False"); return;
    case V_INT: snprintf(buf, sizeof buf, "%" PRId64, v->u.i); sb_puts(R, b, buf); return;
    case V_FLOAT: fmt_float(v->u.f, buf, sizeof buf, false); sb_puts(R, b, buf); return;
    case V_STR: sb_put(R, b, v->u.s.p, v->u.s.n); return;
    default: py_repr(R, v, b); return;
    }
}

static void py_repr(rctx *R, const jv *v, sbuf *b) {
    if (++R->depth > R->max_depth) RFAIL(R, "value nested too deeply to print");
    step(R);
    switch (v->t) {
    case V_STR: py_repr_str(R, v->u.s.p, v->u.s.n, b); break;
    case V_UNDEF: break;
    case V_LIST: case V_TUPLE:
        sb_putc(R, b, v->t == V_LIST ? '[' : '(');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i) sb_puts(R, b, ", ");
            py_repr(R, v->u.l->v[i], b);
        }
        if (v->t == V_TUPLE && v->u.l->n == 1) sb_putc(R, b, ',');
        sb_putc(R, b, v->t == V_LIST ? ']' : ')');
        break;
    case V_DICT:
        sb_putc(R, b, '{');
        for (size_t i = 0; i < v->u.d->n; i++) {
            if (i) sb_puts(R, b, ", ");
            py_repr(R, v->u.d->k[i], b);
            sb_puts(R, b, ": ");
            py_repr(R, v->u.d->v[i], b);
        }
        sb_putc(R, b, '}');
        break;
    case V_NS: sb_puts(R, b, "<Namespace>"); break;
    case V_LOOP: sb_puts(R, b, "<LoopContext>"); break;
    case V_MACRO: sb_puts(R, b, "<Macro>"); break;
    case V_FUNC: case V_METHOD: sb_puts(R, b, "<built-in function>"); break;
    default: tmpl_to_str(R, v, b); break;
    }
    R->depth--;
}

jv *tmpl_as_str(rctx *R, jv *v) {
    if (v->t == V_STR) return v;
    sbuf b = {0};
    tmpl_to_str(R, v, &b);
    return mk_sb(R, &b);
}

const char *tmpl_type_name(const jv *v) {
    switch (v->t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return "list";
    case V_TUPLE: return "tuple";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    case V_MACRO: return "Macro";
    default: return "builtin_function_or_method";
    }
}

/* ascii: escape non-ASCII as \uXXXX (surrogate pairs above the BMP) */
static void json_str(rctx *R, const char *p, size_t n, sbuf *b, bool ascii) {
    sb_reserve(R, b, n + 2);
    sb_putc(R, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || !ascii)) continue;
        sb_put(R, b, p + run, i - run);
        run = i + 1;
        char e[16];
        if (c >= 0x80) {
            size_t len;
            uint32_t cp = cp_at(p, n, i, &len);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                snprintf(e, sizeof e, "\\u%04x", cp);
            }
            sb_puts(R, b, e);
            i += len - 1;
            run = i + 1;
            continue;
        }
        switch (c) {
        case '"': sb_puts(R, b, "\\\""); break;
        case '\\': sb_puts(R, b, "\\\\"); break;
        case '\n': sb_puts(R, b, "\\n"); break;
        case '\r': sb_puts(R, b, "\\r"); break;
        case '\t': sb_puts(R, b, "\\t"); break;
        case '\b': sb_puts(R, b, "\\b"); break;
        case '\f': sb_puts(R, b, "\\f"); break;
        default: snprintf(e, sizeof e, "\\u%04x", c); sb_puts(R, b, e);
        }
    }
    sb_put(R, b, p + run, n - run);
    sb_putc(R, b, '"');
}

static void json_nl(rctx *R, sbuf *b, int indent, int level) {
    sb_putc(R, b, '\n');
    for (int i = 0; i < indent * level; i++) sb_putc(R, b, ' ');
}

static int key_cmp(const jv *a, const jv *b) {
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = memcmp(a->u.s.p, b->u.s.p, n);
    return c ? c : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

/* Python json.dumps(v, ensure_ascii=False, indent=..., separators=...,
 * sort_keys=...) */
void tmpl_to_json(rctx *R, const jv *v, const jopts *o, int level, sbuf *b) {
    if (++R->depth > R->max_depth) RFAIL(R, "value nested too deeply for tojson");
    step(R);
    char buf[64];
    switch (v->t) {
    case V_NONE: sb_puts(R, b, "null"); break;
    case V_BOOL: sb_puts(R, b, v->u.b ? "true" : "false"); break;
    case V_INT: snprintf(buf, sizeof buf, "%" PRId64, v->u.i); sb_puts(R, b, buf); break;
    case V_FLOAT: fmt_float(v->u.f, buf, sizeof buf, true); sb_puts(R, b, buf); break;
    case V_STR: json_str(R, v->u.s.p, v->u.s.n, b, o->ascii); break;
    case V_LIST: case V_TUPLE: {
        const jlist *l = v->u.l;
        if (!l->n) { sb_puts(R, b, "[]"); break; }
        sb_putc(R, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) sb_put(R, b, o->item_sep, o->item_n);
            if (o->indent >= 0) json_nl(R, b, o->indent, level + 1);
            tmpl_to_json(R, l->v[i], o, level + 1, b);
        }
        if (o->indent >= 0) json_nl(R, b, o->indent, level);
        sb_putc(R, b, ']');
        break;
    }
    case V_DICT: {
        const jdict *d = v->u.d;
        if (!d->n) { sb_puts(R, b, "{}"); break; }
        size_t *ord = ralloc(R, d->n * sizeof(size_t));
        for (size_t i = 0; i < d->n; i++) {
            const jv *k = d->k[i];
            if (k->t != V_STR && k->t != V_INT && k->t != V_FLOAT && k->t != V_BOOL && k->t != V_NONE)
                RFAIL(R, "keys must be str, int, float, bool or None, not %s", tmpl_type_name(k));
            if (o->sort_keys && k->t != V_STR) RFAIL(R, "sort_keys needs string keys");
            ord[i] = i;
        }
        if (o->sort_keys) /* insertion sort: stable, dicts are small */
            for (size_t i = 1; i < d->n; i++) {
                step(R);
                size_t x = ord[i], j = i;
                while (j > 0 && key_cmp(d->k[ord[j - 1]], d->k[x]) > 0) { ord[j] = ord[j - 1]; j--; step(R); }
                ord[j] = x;
            }
        sb_putc(R, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) sb_put(R, b, o->item_sep, o->item_n);
            if (o->indent >= 0) json_nl(R, b, o->indent, level + 1);
            const jv *k = d->k[ord[i]];
            if (k->t == V_STR) {
                json_str(R, k->u.s.p, k->u.s.n, b, o->ascii);
            } else {
                jopts ko = {.indent = -1, .item_sep = ", ", .key_sep = ": ", .item_n = 2, .key_n = 2};
                sbuf kb = {0};
                tmpl_to_json(R, k, &ko, 0, &kb);
                json_str(R, kb.p, kb.n, b, false);
            }
            sb_put(R, b, o->key_sep, o->key_n);
            tmpl_to_json(R, d->v[ord[i]], o, level + 1, b);
        }
        if (o->indent >= 0) json_nl(R, b, o->indent, level);
        sb_putc(R, b, '}');
        break;
    }
    case V_UNDEF:
        if (v->uname) RFAIL(R, "'%s' is undefined", v->uname);
        RFAIL(R, "Object of type Undefined is not JSON serializable");
    default: RFAIL(R, "Object of type %s is not JSON serializable", tmpl_type_name(v));
    }
    R->depth--;
}

/* ---- truth, equality, ordering ---- */

bool tmpl_val_eq(rctx *R, const jv *a, const jv *b) {
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) return num_i(a) == num_i(b);
        return num_f(a) == num_f(b);
    }
    if (a->t == V_STR && b->t == V_STR) {
        if (a->u.s.n != b->u.s.n) return false;
        if (a->u.s.n > 256) work(R, a->u.s.n);
        return !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    }
    if ((a->t == V_LIST || a->t == V_TUPLE) && a->t == b->t) {
        if (a->u.l->n != b->u.l->n) return false;
        for (size_t i = 0; i < a->u.l->n; i++) {
            step(R);
            if (!tmpl_val_eq(R, a->u.l->v[i], b->u.l->v[i])) return false;
        }
        return true;
    }
    if (a->t == V_DICT && b->t == V_DICT) {
        if (a->u.d->n != b->u.d->n) return false;
        for (size_t i = 0; i < a->u.d->n; i++) {
            step(R);
            jv **s = tmpl_dict_slot(R, b->u.d, a->u.d->k[i]);
            if (!s || !tmpl_val_eq(R, a->u.d->v[i], *s)) return false;
        }
        return true;
    }
    if (a->t == V_NONE && b->t == V_NONE) return true;
    if (a->t == V_UNDEF && b->t == V_UNDEF) return true;
    return a == b;
}

int tmpl_val_cmp(rctx *R, const jv *a, const jv *b, const char *op) {
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) return num_i(a) < num_i(b) ? -1 : num_i(a) > num_i(b);
        double x = num_f(a), y = num_f(b);
        return x < y ? -1 : x > y;
    }
    if (a->t == V_STR && b->t == V_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        if (n > 256) work(R, n);
        int c = memcmp(a->u.s.p, b->u.s.p, n);
        if (c) return c;
        return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
    }
    if ((a->t == V_LIST || a->t == V_TUPLE) && a->t == b->t) {
        size_t n = a->u.l->n < b->u.l->n ? a->u.l->n : b->u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (tmpl_val_eq(R, a->u.l->v[i], b->u.l->v[i])) continue;
            return tmpl_val_cmp(R, a->u.l->v[i], b->u.l->v[i], op);
        }
        return a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
    }
    RFAIL(R, "'%s' not supported between instances of '%s' and '%s'", op, tmpl_type_name(a),
          tmpl_type_name(b));
}

_Noreturn void tmpl_undef_fail(rctx *R, const jv *v) {
    if (v->uname) RFAIL(R, "'%s' is undefined", v->uname);
    RFAIL(R, "undefined value used in an operation");
}

/* ---- iteration ---- */

jlist *tmpl_iter_list(rctx *R, jv *v) {
    switch (v->t) {
    case V_LIST: case V_TUPLE: return v->u.l;
    case V_UNDEF: return mk_list(R, V_LIST, 0)->u.l;
    case V_DICT: {
        jv *l = mk_list(R, V_LIST, v->u.d->n);
        for (size_t i = 0; i < v->u.d->n; i++) list_push(R, l, v->u.d->k[i]);
        return l->u.l;
    }
    case V_STR: {
        size_t cnt, *o = tmpl_cp_offsets(R, v->u.s.p, v->u.s.n, &cnt);
        jv *l = mk_list(R, V_LIST, cnt);
        for (size_t i = 0; i < cnt; i++) {
            step(R);
            list_push(R, l, mk_strn(R, v->u.s.p + o[i], o[i + 1] - o[i]));
        }
        return l->u.l;
    }
    default: RFAIL(R, "'%s' object is not iterable", tmpl_type_name(v));
    }
}
