/*
 * chat_template_filters.c — the named built-ins of the template language,
 * each kind a table of name -> function:
 *   FILTERS  `value | name(args)`  (tmpl_apply_filter)
 *   TESTS    `value is name(args)` (tmpl_run_test; select/reject use them)
 *   GLOBALS  functions callable by name: raise_exception, strftime_now,
 *            range, namespace, dict (tmpl_global_find)
 * Adding one is a function and a row. A filter gets the value, the
 * evaluated arguments (positional and keyword, read with arg()) and the
 * render context; it returns a value or fails with RFAIL. Names are looked
 * up when reached, so an unknown filter or test fails only if it runs
 * (Jinja 3 behaviour). Work per item is charged with step() like
 * everywhere else.
 */
#include "chat_template_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* ======================================================================
 * tests
 * ====================================================================== */

/* v is the tested value, a the first argument (NULL if none; never NULL
 * for a test whose row says it needs one) */
typedef struct test_def {
    const char *name;
    bool (*fn)(rctx *R, jv *v, jv *a);
    bool needs_arg;
} test_def;

static bool is_iterable(const jv *v) {
    return v->t == V_STR || v->t == V_LIST || v->t == V_TUPLE || v->t == V_DICT || v->t == V_UNDEF;
}

static bool t_defined(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t != V_UNDEF; }
static bool t_undefined(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_UNDEF; }
static bool t_none(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_NONE; }
static bool t_string(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_STR; }
static bool t_number(rctx *R, jv *v, jv *a) { (void)R; (void)a; return is_num(v); }
static bool t_integer(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_INT; }
static bool t_float(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_FLOAT; }
static bool t_boolean(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_BOOL; }
static bool t_true(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_BOOL && v->u.b; }
static bool t_false(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_BOOL && !v->u.b; }
static bool t_mapping(rctx *R, jv *v, jv *a) { (void)R; (void)a; return v->t == V_DICT; }
static bool t_iterable(rctx *R, jv *v, jv *a) { (void)R; (void)a; return is_iterable(v); }
static bool t_callable(rctx *R, jv *v, jv *a) {
    (void)R;
    (void)a;
    return v->t == V_MACRO || v->t == V_FUNC || v->t == V_METHOD;
}
static bool t_escaped(rctx *R, jv *v, jv *a) { (void)R; (void)v; (void)a; return false; }

/* a string that case mapping `mode` ('l', 'u') leaves unchanged */
static bool case_test(rctx *R, jv *v, char mode) {
    if (v->t != V_STR) return false;
    jv *c = tmpl_str_case(R, v, mode);
    return str_eq(c, v->u.s.p, v->u.s.n);
}
static bool t_lower(rctx *R, jv *v, jv *a) { (void)a; return case_test(R, v, 'l'); }
static bool t_upper(rctx *R, jv *v, jv *a) { (void)a; return case_test(R, v, 'u'); }

static bool parity_test(rctx *R, jv *v, const char *name, bool odd) {
    if (v->t == V_UNDEF) tmpl_undef_fail(R, v);
    if (!is_intlike(v)) RFAIL(R, "test '%s' needs an integer, got %s", name, tmpl_type_name(v));
    int64_t r = num_i(v) % 2;
    return odd ? r != 0 : r == 0;
}
static bool t_odd(rctx *R, jv *v, jv *a) { (void)a; return parity_test(R, v, "odd", true); }
static bool t_even(rctx *R, jv *v, jv *a) { (void)a; return parity_test(R, v, "even", false); }

static bool t_divisibleby(rctx *R, jv *v, jv *a) {
    if (!is_intlike(v) || !is_intlike(a)) RFAIL(R, "divisibleby needs integers");
    if (num_i(a) == 0) RFAIL(R, "integer division or modulo by zero");
    if (num_i(a) == -1) return true;
    return num_i(v) % num_i(a) == 0;
}
static bool t_eq(rctx *R, jv *v, jv *a) { return tmpl_val_eq(R, v, a); }
static bool t_sameas(rctx *R, jv *v, jv *a) { return tmpl_val_eq(R, v, a) && v->t == a->t; }
static bool t_ne(rctx *R, jv *v, jv *a) { return !tmpl_val_eq(R, v, a); }
static bool t_in(rctx *R, jv *v, jv *a) { return tmpl_contains(R, a, v); }

static int cmp_test(rctx *R, jv *v, jv *a, const char *op) {
    if (v->t == V_UNDEF) tmpl_undef_fail(R, v);
    return tmpl_val_cmp(R, v, a, op);
}
static bool t_lt(rctx *R, jv *v, jv *a) { return cmp_test(R, v, a, "<") < 0; }
static bool t_le(rctx *R, jv *v, jv *a) { return cmp_test(R, v, a, "<=") <= 0; }
static bool t_gt(rctx *R, jv *v, jv *a) { return cmp_test(R, v, a, ">") > 0; }
static bool t_ge(rctx *R, jv *v, jv *a) { return cmp_test(R, v, a, ">=") >= 0; }

static const test_def TESTS[] = {
    {"defined", t_defined, false},     {"undefined", t_undefined, false}, {"none", t_none, false},
    {"string", t_string, false},       {"number", t_number, false},       {"integer", t_integer, false},
    {"float", t_float, false},         {"mapping", t_mapping, false},     {"iterable", t_iterable, false},
    {"sequence", t_iterable, false},   {"boolean", t_boolean, false},     {"true", t_true, false},
    {"false", t_false, false},         {"odd", t_odd, false},             {"even", t_even, false},
    {"callable", t_callable, false},   {"lower", t_lower, false},         {"upper", t_upper, false},
    {"escaped", t_escaped, false},     {"divisibleby", t_divisibleby, true},
    {"equalto", t_eq, true},           {"eq", t_eq, true},                {"==", t_eq, true},
    {"sameas", t_sameas, true},        {"ne", t_ne, true},                {"!=", t_ne, true},
    {"in", t_in, true},                {"lt", t_lt, true},                {"<", t_lt, true},
    {"le", t_le, true},                {"<=", t_le, true},                {"gt", t_gt, true},
    {">", t_gt, true},                 {"ge", t_ge, true},                {">=", t_ge, true},
};

static const test_def *test_find(const char *name) {
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++)
        if (!strcmp(TESTS[i].name, name)) return &TESTS[i];
    return NULL;
}

bool tmpl_run_test(rctx *R, const char *name, jv *v, const args *A) {
    const test_def *t = test_find(name);
    if (!t) RFAIL(R, "no test named '%s'", name);
    jv *a0 = arg(A, 0, NULL);
    if (t->needs_arg && !a0) RFAIL(R, "test '%s' needs an argument", name);
    return t->fn(R, v, a0);
}

/* ======================================================================
 * filter helpers
 * ====================================================================== */

/* an attribute path argument ("a.b.0") as a C string, NULL when absent or
 * not a string */
static const char *attr_path(rctx *R, jv *at) {
    return at && at->t == V_STR ? tmpl_strdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
}

static int64_t vlen(rctx *R, jv *v) {
    switch (v->t) {
    case V_STR: work(R, v->u.s.n); return (int64_t)cp_count(v->u.s.p, v->u.s.n);
    case V_LIST: case V_TUPLE: return (int64_t)v->u.l->n;
    case V_DICT: case V_NS: return (int64_t)v->u.d->n;
    case V_UNDEF: return 0;
    default: RFAIL(R, "object of type '%s' has no len()", tmpl_type_name(v));
    }
}

static jv *lower_key(rctx *R, jv *v, bool case_sensitive) {
    if (!case_sensitive && v->t == V_STR) return tmpl_str_case(R, v, 'l');
    return v;
}

/* stable merge sort of l by key (attribute path, case-insensitive strings) */
static jv *sort_list(rctx *R, jlist *src, bool reverse, bool cs, const char *attribute, bool by_first) {
    size_t n = src->n;
    jv **a = ralloc(R, (n + 1) * sizeof(jv *)), **k = ralloc(R, (n + 1) * sizeof(jv *));
    jv **ta = ralloc(R, (n + 1) * sizeof(jv *)), **tk = ralloc(R, (n + 1) * sizeof(jv *));
    for (size_t i = 0; i < n; i++) {
        a[i] = src->v[i];
        jv *key = a[i];
        if (attribute) key = tmpl_get_attr_path(R, key, attribute);
        if (by_first) key = tmpl_get_item(R, key, mk_int(R, 0));
        k[i] = lower_key(R, key, cs);
    }
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, o = lo;
            while (i < mid || j < hi) {
                step(R);
                bool take_left;
                if (i >= mid) take_left = false;
                else if (j >= hi) take_left = true;
                else {
                    int c = tmpl_val_cmp(R, k[i], k[j], "<");
                    take_left = reverse ? c >= 0 : c <= 0;
                }
                if (take_left) { ta[o] = a[i]; tk[o++] = k[i++]; }
                else { ta[o] = a[j]; tk[o++] = k[j++]; }
            }
        }
        jv **t1 = a; a = ta; ta = t1;
        jv **t2 = k; k = tk; tk = t2;
    }
    jv *l = mk_list(R, V_LIST, n);
    for (size_t i = 0; i < n; i++) list_push(R, l, a[i]);
    return l;
}

static jv *do_select(rctx *R, jv *v, const args *A, bool attr_mode, bool keep) {
    jlist *l = tmpl_iter_list(R, v);
    size_t first = 0;
    const char *attribute = NULL;
    if (attr_mode) {
        jv *an = arg(A, 0, NULL);
        if (!an || an->t != V_STR) RFAIL(R, "selectattr/rejectattr need an attribute name");
        attribute = tmpl_strdup(&R->e, an->u.s.p, an->u.s.n);
        first = 1;
    }
    jv *tn = A->np > first ? A->pos[first] : NULL;
    if (tn && tn->t != V_STR) RFAIL(R, "the test name must be a string");
    const char *test = tn ? tmpl_strdup(&R->e, tn->u.s.p, tn->u.s.n) : NULL;
    if (test && !test_find(test)) RFAIL(R, "no test named '%s'", test);
    args TA = {0};
    if (A->np > first + 1) {
        TA.pos = A->pos + first + 1;
        TA.np = A->np - first - 1;
    }
    jv *out = mk_list(R, V_LIST, 0);
    for (size_t i = 0; i < l->n; i++) {
        step(R);
        jv *it = attribute ? tmpl_get_attr_path(R, l->v[i], attribute) : l->v[i];
        bool ok = test ? tmpl_run_test(R, test, it, &TA) : truthy(it);
        if (ok == keep) list_push(R, out, l->v[i]);
    }
    return out;
}

static jv *do_escape(rctx *R, jv *v) {
    v = tmpl_as_str(R, v);
    sbuf sb = {0};
    sb_reserve(R, &sb, 0);
    for (size_t i = 0; i < v->u.s.n; i++) {
        char c = v->u.s.p[i];
        switch (c) {
        case '&': sb_puts(R, &sb, "&amp;"); break;
        case '<': sb_puts(R, &sb, "&lt;"); break;
        case '>': sb_puts(R, &sb, "&gt;"); break;
        case '"': sb_puts(R, &sb, "&#34;"); break;
        case '\'': sb_puts(R, &sb, "&#39;"); break;
        default: sb_putc(R, &sb, c);
        }
    }
    return mk_sb(R, &sb);
}

static jv *to_int(rctx *R, jv *v, jv *def) {
    switch (v->t) {
    case V_INT: return v;
    case V_BOOL: return mk_int(R, v->u.b);
    case V_FLOAT:
        if (!(v->u.f > -9.2e18 && v->u.f < 9.2e18)) return def;
        return mk_int(R, (int64_t)v->u.f);
    case V_STR: {
        char buf[64];
        jv *s = tmpl_str_strip(R, v, NULL, true, true);
        if (!s->u.s.n || s->u.s.n >= sizeof buf) return def;
        size_t bn = 0;
        for (size_t i = 0; i < s->u.s.n; i++)
            if (s->u.s.p[i] != '_') buf[bn++] = s->u.s.p[i];
        buf[bn] = 0;
        char *end;
        errno = 0;
        long long x = strtoll(buf, &end, 10);
        if (!*end && !errno) return mk_int(R, x);
        double d = strtod(buf, &end);
        if (!*end && d > -9.2e18 && d < 9.2e18) return mk_int(R, (int64_t)d);
        return def;
    }
    default: return def;
    }
}

static jv *to_float(rctx *R, jv *v, jv *def) {
    switch (v->t) {
    case V_FLOAT: return v;
    case V_INT: case V_BOOL: return mk_float(R, num_f(v));
    case V_STR: {
        char buf[64];
        jv *s = tmpl_str_strip(R, v, NULL, true, true);
        if (!s->u.s.n || s->u.s.n >= sizeof buf) return def;
        memcpy(buf, s->u.s.p, s->u.s.n);
        buf[s->u.s.n] = 0;
        char *end;
        double d = strtod(buf, &end);
        return *end ? def : mk_float(R, d);
    }
    default: return def;
    }
}

static jv *do_indent(rctx *R, jv *v, const args *A) {
    v = tmpl_as_str(R, v);
    jv *w = arg(A, 0, "width"), *first = arg(A, 1, "first"), *blank = arg(A, 2, "blank");
    sbuf ind = {0};
    sb_reserve(R, &ind, 0);
    if (!w) w = mk_int(R, 4);
    if (w->t == V_STR) sb_put(R, &ind, w->u.s.p, w->u.s.n);
    else if (is_intlike(w)) {
        int64_t k = num_i(w);
        if (k > 4096) RFAIL(R, "indent width too large");
        for (int64_t i = 0; i < k; i++) sb_putc(R, &ind, ' ');
    } else RFAIL(R, "indent width must be an int or a string");
    sbuf s2 = {0};
    sb_put(R, &s2, v->u.s.p, v->u.s.n);
    sb_putc(R, &s2, '\n');
    jv *lines = tmpl_splitlines(R, mk_sb(R, &s2));
    jlist *L = lines->u.l;
    sbuf o = {0};
    sb_reserve(R, &o, 0);
    if (first && truthy(first)) sb_put(R, &o, ind.p, ind.n);
    for (size_t i = 0; i < L->n; i++) {
        jv *ln = L->v[i];
        if (i) {
            sb_putc(R, &o, '\n');
            if (ln->u.s.n || (blank && truthy(blank))) sb_put(R, &o, ind.p, ind.n);
        }
        sb_put(R, &o, ln->u.s.p, ln->u.s.n);
    }
    return mk_sb(R, &o);
}

/* ======================================================================
 * filters
 * ====================================================================== */

/* v | name(A): the result, or RFAIL */
typedef struct filter_def {
    const char *name;
    jv *(*fn)(rctx *R, jv *v, const args *A);
} filter_def;

static jv *f_safe(rctx *R, jv *v, const args *A) {
    (void)R;
    (void)A;
    return v;
}

static jv *f_default(rctx *R, jv *v, const args *A) {
    jv *def = arg(A, 0, "default_value"), *boolean = arg(A, 1, "boolean");
    if (!def) def = mk_strn(R, "", 0);
    if (v->t == V_UNDEF || (boolean && truthy(boolean) && !truthy(v))) return def;
    return v;
}

static jv *f_length(rctx *R, jv *v, const args *A) { (void)A; return mk_int(R, vlen(R, v)); }

static jv *f_string(rctx *R, jv *v, const args *A) { (void)A; return tmpl_as_str(R, v); }

/* HF's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
static void tojson_opts(rctx *R, const args *A, jopts *o) {
    jv *ind = arg(A, 1, "indent"), *seps = arg(A, 2, "separators"), *sk = arg(A, 3, "sort_keys");
    jv *ea = arg(A, 0, "ensure_ascii");
    *o = (jopts){.indent = -1, .sort_keys = sk && truthy(sk), .ascii = ea && truthy(ea)};
    if (ind && ind->t != V_NONE) {
        if (!is_intlike(ind) || num_i(ind) < 0 || num_i(ind) > 64)
            RFAIL(R, "tojson indent must be an integer in 0..64");
        o->indent = (int)num_i(ind);
    }
    o->item_sep = o->indent >= 0 ? "," : ", ";
    o->key_sep = ": ";
    if (seps && seps->t != V_NONE) {
        if ((seps->t != V_LIST && seps->t != V_TUPLE) || seps->u.l->n != 2 || seps->u.l->v[0]->t != V_STR ||
            seps->u.l->v[1]->t != V_STR)
            RFAIL(R, "tojson separators must be a pair of strings");
        o->item_sep = seps->u.l->v[0]->u.s.p;
        o->item_n = seps->u.l->v[0]->u.s.n;
        o->key_sep = seps->u.l->v[1]->u.s.p;
        o->key_n = seps->u.l->v[1]->u.s.n;
    } else {
        o->item_n = strlen(o->item_sep);
        o->key_n = strlen(o->key_sep);
    }
}

static jv *f_tojson(rctx *R, jv *v, const args *A) {
    jopts o;
    tojson_opts(R, A, &o);
    sbuf sb = {0};
    sb_reserve(R, &sb, 0);
    tmpl_to_json(R, v, &o, 0, &sb);
    return mk_sb(R, &sb);
}

static jv *f_list(rctx *R, jv *v, const args *A) {
    (void)A;
    jlist *l = tmpl_iter_list(R, v);
    jv *o = mk_list(R, V_LIST, l->n);
    for (size_t i = 0; i < l->n; i++) list_push(R, o, l->v[i]);
    return o;
}

static jv *first_last(rctx *R, jv *v, bool first) {
    if (v->t == V_UNDEF) return v;
    jlist *l = tmpl_iter_list(R, v);
    if (!l->n) return mk_undef(R, NULL);
    return first ? l->v[0] : l->v[l->n - 1];
}
static jv *f_first(rctx *R, jv *v, const args *A) { (void)A; return first_last(R, v, true); }
static jv *f_last(rctx *R, jv *v, const args *A) { (void)A; return first_last(R, v, false); }

static jv *f_join(rctx *R, jv *v, const args *A) {
    jv *sep = arg(A, 0, "d"), *at = arg(A, 1, "attribute");
    if (at && at->t != V_STR) RFAIL(R, "join attribute must be a string");
    return tmpl_join(R, v, sep, at ? tmpl_strdup(&R->e, at->u.s.p, at->u.s.n) : NULL);
}

static jv *f_items(rctx *R, jv *v, const args *A) {
    (void)A;
    if (v->t == V_UNDEF) return mk_list(R, V_LIST, 0);
    if (v->t != V_DICT) RFAIL(R, "items filter needs a mapping, got %s", tmpl_type_name(v));
    return tmpl_items(R, v);
}

static jv *f_dictsort(rctx *R, jv *v, const args *A) {
    if (v->t != V_DICT) RFAIL(R, "dictsort needs a mapping, got %s", tmpl_type_name(v));
    jv *cs = arg(A, 0, "case_sensitive"), *rev = arg(A, 2, "reverse");
    return sort_list(R, tmpl_items(R, v)->u.l, rev && truthy(rev), cs && truthy(cs), NULL, true);
}

static jv *f_selectattr(rctx *R, jv *v, const args *A) { return do_select(R, v, A, true, true); }
static jv *f_rejectattr(rctx *R, jv *v, const args *A) { return do_select(R, v, A, true, false); }
static jv *f_select(rctx *R, jv *v, const args *A) { return do_select(R, v, A, false, true); }
static jv *f_reject(rctx *R, jv *v, const args *A) { return do_select(R, v, A, false, false); }

static const filter_def *filter_find(const char *name);

/* map(attribute='a.b', default=x) or map('filter', args...) */
static jv *f_map(rctx *R, jv *v, const args *A) {
    jlist *l = tmpl_iter_list(R, v);
    jv *out = mk_list(R, V_LIST, l->n);
    jv *at = arg(A, A->np ? (size_t)-1 : 0, "attribute");
    if (at) {
        if (at->t != V_STR && !is_intlike(at)) RFAIL(R, "map attribute must be a string");
        jv *def = arg(A, (size_t)-1, "default");
        const char *path = attr_path(R, at);
        for (size_t i = 0; i < l->n; i++) {
            step(R);
            jv *x = path ? tmpl_get_attr_path(R, l->v[i], path) : tmpl_get_item(R, l->v[i], at);
            list_push(R, out, x->t == V_UNDEF && def ? def : x);
        }
        return out;
    }
    jv *fn = arg(A, 0, NULL);
    if (!fn || fn->t != V_STR) RFAIL(R, "map needs a filter name or attribute=");
    const char *fname = tmpl_strdup(&R->e, fn->u.s.p, fn->u.s.n);
    if (!filter_find(fname)) RFAIL(R, "no filter named '%s'", fname);
    args FA = {0};
    FA.pos = A->pos + 1;
    FA.np = A->np - 1;
    FA.kn = A->kn;
    FA.kv = A->kv;
    FA.nk = A->nk;
    for (size_t i = 0; i < l->n; i++) list_push(R, out, tmpl_apply_filter(R, fname, l->v[i], &FA));
    return out;
}

static jv *f_unique(rctx *R, jv *v, const args *A) {
    jlist *l = tmpl_iter_list(R, v);
    jv *cs = arg(A, 0, "case_sensitive"), *at = arg(A, 1, "attribute");
    const char *path = attr_path(R, at);
    jv *out = mk_list(R, V_LIST, 0), *keys = mk_list(R, V_LIST, 0);
    for (size_t i = 0; i < l->n; i++) {
        jv *k = lower_key(R, path ? tmpl_get_attr_path(R, l->v[i], path) : l->v[i], cs && truthy(cs));
        if (tmpl_contains(R, keys, k)) continue;
        list_push(R, keys, k);
        list_push(R, out, l->v[i]);
    }
    return out;
}

static jv *f_sort(rctx *R, jv *v, const args *A) {
    jv *rev = arg(A, 0, "reverse"), *cs = arg(A, 1, "case_sensitive"), *at = arg(A, 2, "attribute");
    const char *path = attr_path(R, at);
    return sort_list(R, tmpl_iter_list(R, v), rev && truthy(rev), cs && truthy(cs), path, false);
}

static jv *f_reverse(rctx *R, jv *v, const args *A) {
    (void)A;
    if (v->t == V_STR) return tmpl_slice(R, v, NULL, NULL, mk_int(R, -1));
    jlist *l = tmpl_iter_list(R, v);
    jv *o = mk_list(R, V_LIST, l->n);
    for (size_t i = l->n; i > 0; i--) list_push(R, o, l->v[i - 1]);
    return o;
}

static jv *f_sum(rctx *R, jv *v, const args *A) {
    jv *at = arg(A, 0, "attribute"), *acc = arg(A, 1, "start");
    const char *path = attr_path(R, at);
    if (!acc) acc = mk_int(R, 0);
    jlist *l = tmpl_iter_list(R, v);
    for (size_t i = 0; i < l->n; i++)
        acc = tmpl_binop(R, '+', acc, path ? tmpl_get_attr_path(R, l->v[i], path) : l->v[i]);
    return acc;
}

static jv *min_max(rctx *R, jv *v, const args *A, bool min) {
    jv *cs = arg(A, 0, "case_sensitive"), *at = arg(A, 1, "attribute");
    const char *path = attr_path(R, at);
    jlist *l = tmpl_iter_list(R, v);
    if (!l->n) return mk_undef(R, NULL);
    jv *best = l->v[0], *bk = lower_key(R, path ? tmpl_get_attr_path(R, best, path) : best, cs && truthy(cs));
    for (size_t i = 1; i < l->n; i++) {
        step(R);
        jv *k = lower_key(R, path ? tmpl_get_attr_path(R, l->v[i], path) : l->v[i], cs && truthy(cs));
        int c = tmpl_val_cmp(R, k, bk, "<");
        if (min ? c < 0 : c > 0) { best = l->v[i]; bk = k; }
    }
    return best;
}
static jv *f_min(rctx *R, jv *v, const args *A) { return min_max(R, v, A, true); }
static jv *f_max(rctx *R, jv *v, const args *A) { return min_max(R, v, A, false); }

static jv *f_attr(rctx *R, jv *v, const args *A) {
    jv *n = arg_str(R, A, 0, "name", "attr");
    if (!n) RFAIL(R, "attr needs a name");
    return tmpl_get_attr(R, v, n->u.s.p, n->u.s.n);
}

static jv *f_int(rctx *R, jv *v, const args *A) {
    jv *def = arg(A, 0, "default");
    return to_int(R, v, def ? def : mk_int(R, 0));
}

static jv *f_float(rctx *R, jv *v, const args *A) {
    jv *def = arg(A, 0, "default");
    return to_float(R, v, def ? def : mk_float(R, 0));
}

static jv *f_abs(rctx *R, jv *v, const args *A) {
    (void)A;
    if (v->t == V_INT) {
        if (v->u.i == INT64_MIN) RFAIL(R, "integer overflow");
        return mk_int(R, v->u.i < 0 ? -v->u.i : v->u.i);
    }
    if (v->t == V_BOOL) return mk_int(R, v->u.b);
    if (v->t == V_FLOAT) return mk_float(R, fabs(v->u.f));
    RFAIL(R, "bad operand type for abs(): '%s'", tmpl_type_name(v));
}

static jv *f_round(rctx *R, jv *v, const args *A) {
    jv *pr = arg(A, 0, "precision"), *me = arg(A, 1, "method");
    int64_t p = pr && is_intlike(pr) ? num_i(pr) : 0;
    if (p < -20 || p > 20) RFAIL(R, "round precision out of range");
    int method = 'r';
    if (me && me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "ceil")) method = 'c';
    else if (me && me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "floor")) method = 'f';
    else if (me && !(me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "common")))
        RFAIL(R, "method must be 'common', 'ceil' or 'floor'");
    if (!is_num(v)) RFAIL(R, "round needs a number, got %s", tmpl_type_name(v));
    if (is_intlike(v) && method == 'r' && p >= 0) return mk_int(R, num_i(v));
    double x = num_f(v), sc = pow(10.0, (double)p), y;
    if (method == 'c') y = ceil(x * sc) / sc;
    else if (method == 'f') y = floor(x * sc) / sc;
    else y = nearbyint(x * sc) / sc;
    return mk_float(R, y);
}

static jv *f_wordcount(rctx *R, jv *v, const args *A) {
    (void)A;
    v = tmpl_as_str(R, v);
    int64_t c = 0;
    bool in = false;
    for (size_t i = 0; i < v->u.s.n;) {
        size_t l;
        uint32_t cp = cp_at(v->u.s.p, v->u.s.n, i, &l);
        /* \w: ASCII alphanumerics and _, and non-ASCII except the
         * common punctuation/symbol/emoji blocks (approximation) */
        bool w = cp < 0x80
                     ? (is_alnum_ascii((char)cp) || cp == '_')
                     : !(py_space(cp) || (cp >= 0x80 && cp <= 0xBF) || (cp >= 0x2000 && cp <= 0x2BFF) ||
                         (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xE000 && cp <= 0xF8FF) ||
                         (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF0F) || cp >= 0x1F000);
        if (w && !in) c++;
        in = w;
        i += l;
    }
    return mk_int(R, c);
}

static jv *f_indent(rctx *R, jv *v, const args *A) { return do_indent(R, v, A); }
static jv *f_escape(rctx *R, jv *v, const args *A) { (void)A; return do_escape(R, v); }

/* the filters below work on the value's string form */

static jv *f_trim(rctx *R, jv *v, const args *A) {
    return tmpl_str_strip(R, tmpl_as_str(R, v), arg(A, 0, "chars"), true, true);
}
static jv *f_upper(rctx *R, jv *v, const args *A) {
    (void)A;
    return tmpl_str_case(R, tmpl_as_str(R, v), 'u');
}
static jv *f_lower(rctx *R, jv *v, const args *A) {
    (void)A;
    return tmpl_str_case(R, tmpl_as_str(R, v), 'l');
}
static jv *f_capitalize(rctx *R, jv *v, const args *A) {
    (void)A;
    return tmpl_str_case(R, tmpl_as_str(R, v), 'c');
}
static jv *f_title(rctx *R, jv *v, const args *A) {
    (void)A;
    return tmpl_str_case(R, tmpl_as_str(R, v), 'j');
}

static jv *f_replace(rctx *R, jv *v, const args *A) {
    jv *s = tmpl_as_str(R, v);
    jv *o = arg(A, 0, "old"), *nw = arg(A, 1, "new"), *c = arg(A, 2, "count");
    if (!o || !nw) RFAIL(R, "replace needs two arguments");
    return tmpl_str_replace(R, s, tmpl_as_str(R, o), tmpl_as_str(R, nw), c && is_intlike(c) ? num_i(c) : -1);
}

static jv *f_center(rctx *R, jv *v, const args *A) {
    jv *s = tmpl_as_str(R, v);
    jv *w = arg(A, 0, "width");
    int64_t width = w && is_intlike(w) ? num_i(w) : 80;
    int64_t len = (int64_t)cp_count(s->u.s.p, s->u.s.n);
    if (width <= len) return s;
    if (width > 1 << 20) RFAIL(R, "center width too large");
    int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
    sbuf sb = {0};
    for (int64_t i = 0; i < left; i++) sb_putc(R, &sb, ' ');
    sb_put(R, &sb, s->u.s.p, s->u.s.n);
    for (int64_t i = 0; i < pad - left; i++) sb_putc(R, &sb, ' ');
    return mk_sb(R, &sb);
}

static const filter_def FILTERS[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"center", f_center},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_escape},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

static const filter_def *filter_find(const char *name) {
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (!strcmp(FILTERS[i].name, name)) return &FILTERS[i];
    return NULL;
}

jv *tmpl_apply_filter(rctx *R, const char *name, jv *v, const args *A) {
    step(R);
    const filter_def *f = filter_find(name);
    if (!f) {
        /* the string form is taken first (as for the string filters), so
         * its errors (a value too deep or too large to print) win */
        tmpl_as_str(R, v);
        RFAIL(R, "no filter named '%s'", name);
    }
    return f->fn(R, v, A);
}

/* ======================================================================
 * global functions
 * ====================================================================== */

static jv *g_raise_exception(rctx *R, const args *A) {
    jv *m = arg(A, 0, "message");
    jv *s = tmpl_as_str(R, m ? m : mk_strn(R, "", 0));
    R->e.raised = true;
    kn_fail(R->e.err, KN_EINVAL, "%.*s", (int)(s->u.s.n > 500 ? 500 : s->u.s.n), s->u.s.p);
    longjmp(R->e.jb, 1);
}

static jv *g_strftime_now(rctx *R, const args *A) {
    jv *fmt = arg_str(R, A, 0, "format", "strftime_now");
    if (!fmt) RFAIL(R, "strftime_now needs a format string");
    if (fmt->u.s.n > 256 || memchr(fmt->u.s.p, 0, fmt->u.s.n)) RFAIL(R, "strftime_now format too long");
    char f[260], out[1024];
    memcpy(f, fmt->u.s.p, fmt->u.s.n);
    f[fmt->u.s.n] = 0;
    size_t n = strftime(out, sizeof out, f, &R->now);
    return mk_strcopy(R, out, n);
}

static jv *g_range(rctx *R, const args *A) {
    int64_t a = 0, b, st = 1;
    for (size_t i = 0; i < A->np; i++)
        if (!is_intlike(A->pos[i]))
            RFAIL(R, "range() arguments must be integers, got %s", tmpl_type_name(A->pos[i]));
    if (A->np == 1) b = num_i(A->pos[0]);
    else if (A->np == 2 || A->np == 3) {
        a = num_i(A->pos[0]);
        b = num_i(A->pos[1]);
        if (A->np == 3) st = num_i(A->pos[2]);
    } else RFAIL(R, "range expected 1 to 3 arguments");
    if (st == 0) RFAIL(R, "range() arg 3 must not be zero");
    double cnt = st > 0 ? ((double)b - (double)a) / (double)st : ((double)a - (double)b) / (double)-st;
    if (cnt > 100000) RFAIL(R, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    jv *l = mk_list(R, V_LIST, cnt > 0 ? (size_t)ceil(cnt) : 0);
    for (int64_t i = a; st > 0 ? i < b : i > b;) {
        step(R);
        list_push(R, l, mk_int(R, i));
        if (__builtin_add_overflow(i, st, &i)) break;
    }
    return l;
}

/* namespace(...) and dict(...): mappings merged in order, then keywords */
static jv *make_mapping(rctx *R, const args *A, int type, const char *fname) {
    jv *d = mk_dict(R, type);
    for (size_t i = 0; i < A->np; i++) {
        jv *p = A->pos[i];
        if (p->t == V_DICT || p->t == V_NS)
            for (size_t k = 0; k < p->u.d->n; k++) tmpl_dict_set(R, d, p->u.d->k[k], p->u.d->v[k]);
        else RFAIL(R, "%s() positional arguments must be mappings", fname);
    }
    for (size_t i = 0; i < A->nk; i++) tmpl_dict_set(R, d, mk_strn(R, A->kn[i], strlen(A->kn[i])), A->kv[i]);
    return d;
}
static jv *g_namespace(rctx *R, const args *A) { return make_mapping(R, A, V_NS, "namespace"); }
static jv *g_dict(rctx *R, const args *A) { return make_mapping(R, A, V_DICT, "dict"); }

static const struct {
    const char *name;
    tmpl_global_fn fn;
} GLOBALS[] = {
    {"raise_exception", g_raise_exception}, {"strftime_now", g_strftime_now}, {"range", g_range},
    {"namespace", g_namespace},             {"dict", g_dict},
};

tmpl_global_fn tmpl_global_find(const char *name) {
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++)
        if (!strcmp(GLOBALS[i].name, name)) return GLOBALS[i].fn;
    return NULL;
}
