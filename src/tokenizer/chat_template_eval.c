/*
 * chat_template_eval.c — the renderer: walks the AST with the render
 * context (rctx) and writes the output. Owns scopes (frames: a for loop or
 * a macro call opens one; lookups go outward, then to the global
 * functions), attribute/item access with Jinja's fallbacks, slicing, the
 * operators with Python's semantics, calls (macros, globals, methods),
 * statements, and tok_tmpl_render, whose render_guarded is the one setjmp
 * that every render error longjmps to. Filters, tests and globals live in
 * chat_template_filters.c, methods in chat_template_methods.c.
 */
#include "chat_template_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- scopes ---- */

static frame *frame_new(rctx *R, frame *parent) {
    frame *f = ralloc(R, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(rctx *R, frame *f, const char *name, jv *v) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->k[i], name)) { f->v[i] = v; return; }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        f->k = tmpl_regrow(&R->e, f->k, f->n, cap, sizeof(char *));
        f->v = tmpl_regrow(&R->e, f->v, f->n, cap, sizeof(jv *));
        f->cap = cap;
    }
    f->k[f->n] = name;
    f->v[f->n++] = v;
}

/* A name: the innermost scope that has it, else a global function, else
 * undefined. */
static jv *lookup(rctx *R, const char *name) {
    for (frame *f = R->cur; f; f = f->parent)
        for (size_t i = 0; i < f->n; i++)
            if (!strcmp(f->k[i], name)) return f->v[i];
    tmpl_global_fn fn = tmpl_global_find(name);
    if (fn) {
        jv *v = mk(R, V_FUNC);
        v->u.fn = fn;
        return v;
    }
    return mk_undef(R, name);
}

/* ---- attributes, items, slices ---- */

static jv *eval(rctx *R, node *x);
static void render_body(rctx *R, const nlist *body);

static const char *attr_path_part(const char **p, size_t *n) {
    const char *s = *p, *dot = strchr(s, '.');
    *n = dot ? (size_t)(dot - s) : strlen(s);
    *p = dot ? dot + 1 : NULL;
    return s;
}

static jv *bound(rctx *R, jv *self, const tmpl_method *def) {
    jv *m = mk(R, V_METHOD);
    m->u.m.self = self;
    m->u.m.def = def;
    return m;
}

/* obj.name (Jinja: attribute first, then item) */
jv *tmpl_get_attr(rctx *R, jv *obj, const char *name, size_t nlen) {
    switch (obj->t) {
    case V_UNDEF: return mk_undef(R, obj->uname);
    case V_DICT: {
        const tmpl_method *m = tmpl_method_find(V_DICT, name, nlen);
        if (m) return bound(R, obj, m);
    }
        /* fallthrough */
    case V_NS: {
        jv *v = tmpl_dict_get(obj->u.d, name, nlen);
        return v ? v : mk_undef(R, NULL);
    }
    case V_STR: {
        const tmpl_method *m = tmpl_method_find(V_STR, name, nlen);
        return m ? bound(R, obj, m) : mk_undef(R, NULL);
    }
    case V_LOOP: {
        loopinfo *L = obj->u.loop;
        size_t n = L->items->n, i = L->i;
        char nm[16];
        snprintf(nm, sizeof nm, "%.*s", (int)(nlen < 15 ? nlen : 15), name);
        if (!strcmp(nm, "index")) return mk_int(R, (int64_t)i + 1);
        if (!strcmp(nm, "index0")) return mk_int(R, (int64_t)i);
        if (!strcmp(nm, "revindex")) return mk_int(R, (int64_t)(n - i));
        if (!strcmp(nm, "revindex0")) return mk_int(R, (int64_t)(n - i - 1));
        if (!strcmp(nm, "first")) return mk_bool(R, i == 0);
        if (!strcmp(nm, "last")) return mk_bool(R, i + 1 == n);
        if (!strcmp(nm, "length")) return mk_int(R, (int64_t)n);
        if (!strcmp(nm, "depth")) return mk_int(R, 1);
        if (!strcmp(nm, "depth0")) return mk_int(R, 0);
        if (!strcmp(nm, "previtem")) return i > 0 ? L->items->v[i - 1] : mk_undef(R, NULL);
        if (!strcmp(nm, "nextitem")) return i + 1 < n ? L->items->v[i + 1] : mk_undef(R, NULL);
        if (!strcmp(nm, "cycle")) return bound(R, obj, tmpl_method_find(V_LOOP, "cycle", 5));
        return mk_undef(R, NULL);
    }
    default: return mk_undef(R, NULL);
    }
}

jv *tmpl_get_attr_path(rctx *R, jv *obj, const char *path) {
    const char *p = path;
    while (p) {
        size_t n;
        const char *part = attr_path_part(&p, &n);
        bool digits = n > 0 && n < 18;
        for (size_t i = 0; i < n && digits; i++) digits = is_digit(part[i]);
        if (digits && (obj->t == V_LIST || obj->t == V_TUPLE))
            obj = tmpl_get_item(R, obj, mk_int(R, strtoll(part, NULL, 10)));
        else obj = tmpl_get_attr(R, obj, part, n);
    }
    return obj;
}

/* obj[key] (Jinja: item first, then attribute) */
jv *tmpl_get_item(rctx *R, jv *obj, jv *key) {
    switch (obj->t) {
    case V_UNDEF: return mk_undef(R, obj->uname);
    case V_LIST: case V_TUPLE: {
        if (!is_intlike(key)) {
            if (key->t == V_STR) return mk_undef(R, NULL);
            RFAIL(R, "list indices must be integers, not %s", tmpl_type_name(key));
        }
        int64_t i = num_i(key), n = (int64_t)obj->u.l->n;
        if (i < 0) i += n;
        if (i < 0 || i >= n) return mk_undef(R, NULL);
        return obj->u.l->v[i];
    }
    case V_DICT: case V_NS: {
        jv **s = tmpl_dict_slot(R, obj->u.d, key);
        if (s) return *s;
        if (key->t == V_STR && obj->t == V_DICT) return tmpl_get_attr(R, obj, key->u.s.p, key->u.s.n);
        return mk_undef(R, NULL);
    }
    case V_STR: {
        if (key->t == V_STR) return tmpl_get_attr(R, obj, key->u.s.p, key->u.s.n);
        if (!is_intlike(key)) RFAIL(R, "string indices must be integers");
        size_t cnt, *o = tmpl_cp_offsets(R, obj->u.s.p, obj->u.s.n, &cnt);
        int64_t i = num_i(key);
        if (i < 0) i += (int64_t)cnt;
        if (i < 0 || i >= (int64_t)cnt) return mk_undef(R, NULL);
        return mk_strn(R, obj->u.s.p + o[i], o[i + 1] - o[i]);
    }
    case V_LOOP:
        if (key->t == V_STR) return tmpl_get_attr(R, obj, key->u.s.p, key->u.s.n);
        return mk_undef(R, NULL);
    default: return mk_undef(R, NULL);
    }
}

static int64_t slice_arg(rctx *R, jv *v, bool *given) {
    *given = false;
    if (!v || v->t == V_NONE) return 0;
    if (!is_intlike(v)) RFAIL(R, "slice indices must be integers or None");
    *given = true;
    return num_i(v);
}

jv *tmpl_slice(rctx *R, jv *obj, jv *a, jv *b, jv *c) {
    bool ga, gb, gc;
    int64_t start = slice_arg(R, a, &ga), stop = slice_arg(R, b, &gb), st = slice_arg(R, c, &gc);
    if (!gc) st = 1;
    if (st == 0) RFAIL(R, "slice step cannot be zero");
    if (obj->t == V_UNDEF) return mk_undef(R, obj->uname);
    size_t cnt = 0, *o = NULL;
    if (obj->t == V_STR) o = tmpl_cp_offsets(R, obj->u.s.p, obj->u.s.n, &cnt);
    else if (obj->t == V_LIST || obj->t == V_TUPLE) cnt = obj->u.l->n;
    else RFAIL(R, "'%s' object is not subscriptable", tmpl_type_name(obj));
    int64_t L = (int64_t)cnt;
    int64_t lower = st > 0 ? 0 : -1, upper = st > 0 ? L : L - 1;
    if (!ga) start = st > 0 ? lower : upper;
    else {
        if (start < 0) start += L;
        if (start < lower) start = lower;
        if (start > upper) start = upper;
    }
    if (!gb) stop = st > 0 ? upper : lower;
    else {
        if (stop < 0) stop += L;
        if (stop < lower) stop = lower;
        if (stop > upper) stop = upper;
    }
    if (obj->t == V_STR) {
        if (st == 1) {
            if (stop <= start) return mk_strn(R, "", 0);
            return mk_strn(R, obj->u.s.p + o[start], o[stop] - o[start]);
        }
        sbuf sb = {0};
        for (int64_t i = start; st > 0 ? i < stop : i > stop;) {
            step(R);
            sb_put(R, &sb, obj->u.s.p + o[i], o[i + 1] - o[i]);
            if (__builtin_add_overflow(i, st, &i)) break;
        }
        return mk_sb(R, &sb);
    }
    jv *l = mk_list(R, obj->t, 0);
    for (int64_t i = start; st > 0 ? i < stop : i > stop;) {
        step(R);
        list_push(R, l, obj->u.l->v[i]);
        if (__builtin_add_overflow(i, st, &i)) break;
    }
    return l;
}

bool tmpl_contains(rctx *R, jv *hay, jv *needle) {
    switch (hay->t) {
    case V_STR:
        if (needle->t != V_STR)
            RFAIL(R, "'in <string>' requires string as left operand, not %s", tmpl_type_name(needle));
        if (!needle->u.s.n) return true;
        work(R, hay->u.s.n);
        return memmem(hay->u.s.p, hay->u.s.n, needle->u.s.p, needle->u.s.n) != NULL;
    case V_LIST: case V_TUPLE:
        for (size_t i = 0; i < hay->u.l->n; i++) {
            step(R);
            if (tmpl_val_eq(R, hay->u.l->v[i], needle)) return true;
        }
        return false;
    case V_DICT: case V_NS: return tmpl_dict_slot(R, hay->u.d, needle) != NULL;
    case V_UNDEF: return false;
    default: RFAIL(R, "argument of type '%s' is not iterable", tmpl_type_name(hay));
    }
}

static int64_t floordiv_i(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* a op b on numbers (bools count as ints; ints stay exact and fail on
 * overflow); NULL for an op that is not arithmetic */
static jv *arith(rctx *R, int op, jv *a, jv *b) {
    bool ints = is_intlike(a) && is_intlike(b);
    int64_t x = num_i(a), y = num_i(b), r;
    double fx = num_f(a), fy = num_f(b);
    switch (op) {
    case '+':
        if (ints) { if (__builtin_add_overflow(x, y, &r)) RFAIL(R, "integer overflow"); return mk_int(R, r); }
        return mk_float(R, fx + fy);
    case '-':
        if (ints) { if (__builtin_sub_overflow(x, y, &r)) RFAIL(R, "integer overflow"); return mk_int(R, r); }
        return mk_float(R, fx - fy);
    case '*':
        if (ints) { if (__builtin_mul_overflow(x, y, &r)) RFAIL(R, "integer overflow"); return mk_int(R, r); }
        return mk_float(R, fx * fy);
    case '/':
        if (fy == 0) RFAIL(R, "division by zero");
        return mk_float(R, fx / fy);
    case 'F':
        if (ints) {
            if (y == 0) RFAIL(R, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) RFAIL(R, "integer overflow");
            return mk_int(R, floordiv_i(x, y));
        }
        if (fy == 0) RFAIL(R, "float floor division by zero");
        return mk_float(R, floor(fx / fy));
    case '%':
        if (ints) {
            if (y == 0) RFAIL(R, "integer division or modulo by zero");
            if (y == -1) return mk_int(R, 0);
            int64_t m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return mk_int(R, m);
        }
        if (fy == 0) RFAIL(R, "float modulo");
        {
            double m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            return mk_float(R, m);
        }
    case 'P':
        if (ints && y >= 0) {
            int64_t acc = 1;
            for (int64_t i = 0; i < y; i++) {
                if (__builtin_mul_overflow(acc, x, &acc)) RFAIL(R, "integer overflow");
                if (acc == 0 || acc == 1) break;
                step(R);
            }
            if (acc == 1 && x == -1 && (y & 1)) acc = -1;
            return mk_int(R, acc);
        }
        return mk_float(R, pow(fx, fy));
    default: return NULL;
    }
}

/* + and * on strings and sequences (concatenation, repetition); NULL when
 * the operands do not fit */
static jv *seq_op(rctx *R, int op, jv *a, jv *b) {
    if (op == '+' && a->t == V_STR && b->t == V_STR) {
        sbuf sb = {0};
        sb_reserve(R, &sb, a->u.s.n + b->u.s.n);
        sb_put(R, &sb, a->u.s.p, a->u.s.n);
        sb_put(R, &sb, b->u.s.p, b->u.s.n);
        return mk_sb(R, &sb);
    }
    if (op == '+' && (a->t == V_LIST || a->t == V_TUPLE) && a->t == b->t) {
        jv *l = mk_list(R, a->t, a->u.l->n + b->u.l->n);
        for (size_t i = 0; i < a->u.l->n; i++) list_push(R, l, a->u.l->v[i]);
        for (size_t i = 0; i < b->u.l->n; i++) list_push(R, l, b->u.l->v[i]);
        return l;
    }
    if (op == '*' && ((a->t == V_STR && is_intlike(b)) || (is_intlike(a) && b->t == V_STR))) {
        jv *s = a->t == V_STR ? a : b;
        int64_t k = a->t == V_STR ? num_i(b) : num_i(a);
        sbuf sb = {0};
        for (int64_t i = 0; i < k; i++) {
            step(R);
            sb_put(R, &sb, s->u.s.p, s->u.s.n);
        }
        return mk_sb(R, &sb);
    }
    if (op == '*' && (a->t == V_LIST && is_intlike(b))) {
        jv *l = mk_list(R, V_LIST, 0);
        for (int64_t i = 0; i < num_i(b); i++)
            for (size_t j = 0; j < a->u.l->n; j++) {
                step(R);
                list_push(R, l, a->u.l->v[j]);
            }
        return l;
    }
    return NULL;
}

/* a op b for N_BIN ops: ~ e(==) n(!=) i(in) I(not in) < l(<=) > g(>=)
 * + - * / F(//) % P(**) */
jv *tmpl_binop(rctx *R, int op, jv *a, jv *b) {
    if (op == '~') {
        sbuf sb = {0};
        tmpl_to_str(R, a, &sb);
        tmpl_to_str(R, b, &sb);
        return mk_sb(R, &sb);
    }
    if (op == 'e') return mk_bool(R, tmpl_val_eq(R, a, b));
    if (op == 'n') return mk_bool(R, !tmpl_val_eq(R, a, b));
    if (op == 'i') return mk_bool(R, tmpl_contains(R, b, a));
    if (op == 'I') return mk_bool(R, !tmpl_contains(R, b, a));
    if (a->t == V_UNDEF) tmpl_undef_fail(R, a);
    if (b->t == V_UNDEF) tmpl_undef_fail(R, b);
    switch (op) {
    case '<': return mk_bool(R, tmpl_val_cmp(R, a, b, "<") < 0);
    case 'l': return mk_bool(R, tmpl_val_cmp(R, a, b, "<=") <= 0);
    case '>': return mk_bool(R, tmpl_val_cmp(R, a, b, ">") > 0);
    case 'g': return mk_bool(R, tmpl_val_cmp(R, a, b, ">=") >= 0);
    default: break;
    }
    jv *r = is_num(a) && is_num(b) ? arith(R, op, a, b) : NULL;
    if (!r) r = seq_op(R, op, a, b);
    if (r) return r;
    static const char *const opname[128] = {['+'] = "+", ['-'] = "-", ['*'] = "*", ['/'] = "/", ['F'] = "//", ['%'] = "%", ['P'] = "**"};
    RFAIL(R, "unsupported operand type(s) for %s: '%s' and '%s'", opname[op & 127] ? opname[op & 127] : "?",
          tmpl_type_name(a), tmpl_type_name(b));
}

/* ---- calls ---- */

static void eval_args(rctx *R, node *x, args *A) {
    memset(A, 0, sizeof *A);
    A->np = x->l1.n;
    A->nk = x->l2.n;
    if (A->np) A->pos = ralloc(R, A->np * sizeof(jv *));
    if (A->nk) A->kv = ralloc(R, A->nk * sizeof(jv *));
    A->kn = x->names;
    for (size_t i = 0; i < A->np; i++) A->pos[i] = eval(R, x->l1.v[i]);
    for (size_t i = 0; i < A->nk; i++) A->kv[i] = eval(R, x->l2.v[i]);
}

static jv *call_macro(rctx *R, jv *mac, const args *A, jv *caller) {
    node *m = mac->u.mac.n;
    frame *f = frame_new(R, mac->u.mac.fr);
    frame *saved = R->cur;
    sbuf *saved_out = R->out;
    int saved_line = R->line;
    R->cur = f;
    for (size_t i = 0; i < m->nnames; i++) {
        jv *v = arg(A, i, m->names[i]);
        if (!v) v = m->l2.v[i] ? eval(R, m->l2.v[i]) : mk_undef(R, m->names[i]);
        frame_set(R, f, m->names[i], v);
    }
    if (A->np > m->nnames) {
        jv *va = mk_list(R, V_TUPLE, A->np - m->nnames);
        for (size_t i = m->nnames; i < A->np; i++) list_push(R, va, A->pos[i]);
        frame_set(R, f, "varargs", va);
    }
    if (caller) frame_set(R, f, "caller", caller);
    sbuf b = {0};
    sb_reserve(R, &b, 0);
    R->out = &b;
    render_body(R, &m->l1);
    R->brk = 0;
    R->out = saved_out;
    R->cur = saved;
    R->line = saved_line;
    return mk_sb(R, &b);
}

static jv *call_value(rctx *R, jv *fn, const args *A, jv *caller) {
    switch (fn->t) {
    case V_MACRO: return call_macro(R, fn, A, caller);
    case V_FUNC: return fn->u.fn(R, A);
    case V_METHOD: return fn->u.m.def->fn(R, fn->u.m.self, A);
    case V_UNDEF:
        if (fn->uname) RFAIL(R, "'%s' is undefined", fn->uname);
        RFAIL(R, "undefined value is not callable");
    default: RFAIL(R, "'%s' object is not callable", tmpl_type_name(fn));
    }
}

/* ---- expression evaluation ---- */

static jv *eval(rctx *R, node *x) {
    if (++R->depth > R->max_depth) RFAIL(R, "template recursion too deep (limit %d)", R->max_depth);
    R->line = x->line;
    jv *r;
    switch (x->k) {
    case N_LIT: r = x->lit; break;
    case N_NAME: r = lookup(R, x->s); break;
    case N_ATTR: r = tmpl_get_attr(R, eval(R, x->a), x->s, strlen(x->s)); break;
    case N_ITEM: {
        jv *o = eval(R, x->a);
        r = tmpl_get_item(R, o, eval(R, x->b));
        break;
    }
    case N_SLICE: {
        jv *o = eval(R, x->a);
        jv *a = x->b ? eval(R, x->b) : NULL, *b = x->c ? eval(R, x->c) : NULL, *c = x->d ? eval(R, x->d) : NULL;
        r = tmpl_slice(R, o, a, b, c);
        break;
    }
    case N_CALL: {
        jv *fn = eval(R, x->a);
        args A;
        eval_args(R, x, &A);
        R->line = x->line;
        r = call_value(R, fn, &A, NULL);
        break;
    }
    case N_FILTER: {
        jv *v = x->a ? eval(R, x->a) : R->hole;
        args A;
        eval_args(R, x, &A);
        R->line = x->line;
        r = tmpl_apply_filter(R, x->s, v, &A);
        break;
    }
    case N_TEST: {
        jv *v = eval(R, x->a);
        args A;
        eval_args(R, x, &A);
        R->line = x->line;
        bool t = tmpl_run_test(R, x->s, v, &A);
        r = mk_bool(R, x->op ? !t : t);
        break;
    }
    case N_BIN: {
        jv *a = eval(R, x->a);
        jv *b = eval(R, x->b);
        R->line = x->line;
        r = tmpl_binop(R, x->op, a, b);
        break;
    }
    case N_NEG: case N_POS: {
        jv *a = eval(R, x->a);
        if (a->t == V_UNDEF) tmpl_undef_fail(R, a);
        if (!is_num(a))
            RFAIL(R, "bad operand type for unary %c: '%s'", x->k == N_NEG ? '-' : '+', tmpl_type_name(a));
        if (x->k == N_POS) r = a->t == V_BOOL ? mk_int(R, a->u.b) : a;
        else if (a->t == V_FLOAT) r = mk_float(R, -a->u.f);
        else {
            if (num_i(a) == INT64_MIN) RFAIL(R, "integer overflow");
            r = mk_int(R, -num_i(a));
        }
        break;
    }
    case N_NOT: r = mk_bool(R, !truthy(eval(R, x->a))); break;
    case N_AND: r = eval(R, x->a); if (truthy(r)) r = eval(R, x->b); break;
    case N_OR: r = eval(R, x->a); if (!truthy(r)) r = eval(R, x->b); break;
    case N_COND:
        if (truthy(eval(R, x->a))) r = eval(R, x->b);
        else r = x->c ? eval(R, x->c) : mk_undef(R, NULL);
        break;
    case N_LIST: case N_TUPLE:
        r = mk_list(R, x->k == N_LIST ? V_LIST : V_TUPLE, x->l1.n);
        for (size_t i = 0; i < x->l1.n; i++) list_push(R, r, eval(R, x->l1.v[i]));
        break;
    case N_DICT:
        r = mk_dict(R, V_DICT);
        for (size_t i = 0; i < x->l1.n; i++) {
            jv *k = eval(R, x->l1.v[i]);
            if (k->t != V_STR && k->t != V_INT && k->t != V_BOOL && k->t != V_NONE && k->t != V_FLOAT && k->t != V_TUPLE)
                RFAIL(R, "unhashable type: '%s'", tmpl_type_name(k));
            tmpl_dict_set(R, r, k, eval(R, x->l2.v[i]));
        }
        break;
    default: RFAIL(R, "internal error: bad expression node");
    }
    R->depth--;
    return r;
}

/* ---- statements ---- */

static void bind_targets(rctx *R, frame *f, node *x, jv *v) {
    if (x->nnames == 1) {
        frame_set(R, f, x->names[0], v);
        return;
    }
    if (v->t != V_LIST && v->t != V_TUPLE) RFAIL(R, "cannot unpack non-sequence %s", tmpl_type_name(v));
    if (v->u.l->n != x->nnames)
        RFAIL(R, "cannot unpack %zu values into %zu names", v->u.l->n, x->nnames);
    for (size_t i = 0; i < x->nnames; i++) frame_set(R, f, x->names[i], v->u.l->v[i]);
}

static jv *render_to_string(rctx *R, const nlist *body) {
    sbuf b = {0};
    sb_reserve(R, &b, 0);
    sbuf *saved = R->out;
    R->out = &b;
    render_body(R, body);
    R->out = saved;
    return mk_sb(R, &b);
}

static jv *eval_with_hole(rctx *R, node *chain, jv *hole) {
    jv *saved = R->hole;
    R->hole = hole;
    jv *r = eval(R, chain);
    R->hole = saved;
    return r;
}

static void render_for(rctx *R, node *x) {
    jv *seq = eval(R, x->a);
    jlist *src = tmpl_iter_list(R, seq);
    frame *saved = R->cur;
    frame *f = frame_new(R, saved);
    R->cur = f;
    jlist *items = src;
    if (x->b) {
        jv *kept = mk_list(R, V_LIST, 0);
        for (size_t i = 0; i < src->n; i++) {
            step(R);
            bind_targets(R, f, x, src->v[i]);
            if (truthy(eval(R, x->b))) list_push(R, kept, src->v[i]);
        }
        items = kept->u.l;
    }
    jv *lv = mk(R, V_LOOP);
    lv->u.loop = ralloc(R, sizeof(loopinfo));
    lv->u.loop->items = items;
    for (size_t i = 0; i < items->n; i++) {
        step(R);
        lv->u.loop->i = i;
        /* each iteration gets a fresh scope: assignments in the body do not
         * carry over to the next iteration (as in Jinja) */
        f = frame_new(R, saved);
        R->cur = f;
        frame_set(R, f, "loop", lv);
        bind_targets(R, f, x, items->v[i]);
        render_body(R, &x->l1);
        if (R->brk == 1) { R->brk = 0; break; }
        R->brk = 0;
    }
    if (!items->n && x->l2.n) render_body(R, &x->l2);
    R->cur = saved;
}

static void render_node(rctx *R, node *x) {
    if (++R->depth > R->max_depth) RFAIL(R, "template recursion too deep (limit %d)", R->max_depth);
    step(R);
    R->line = x->line;
    switch (x->k) {
    case N_TEXT: sb_put(R, R->out, x->s, x->sn); break;
    case N_OUT: tmpl_to_str(R, eval(R, x->a), R->out); break;
    case N_IF:
        if (truthy(eval(R, x->a))) render_body(R, &x->l1);
        else render_body(R, &x->l2);
        break;
    case N_FOR: render_for(R, x); break;
    case N_SET: {
        jv *v;
        if (x->op == 1) {
            v = render_to_string(R, &x->l1);
            if (x->c) v = eval_with_hole(R, x->c, v);
        } else {
            v = eval(R, x->b);
        }
        R->line = x->line;
        if (x->a) {
            jv *ns = eval(R, x->a->a);
            if (ns->t != V_NS) RFAIL(R, "cannot assign attribute on non-namespace object");
            tmpl_dict_set(R, ns, mk_strn(R, x->a->s, strlen(x->a->s)), v);
        } else {
            bind_targets(R, R->cur, x, v);
        }
        break;
    }
    case N_MACRO: {
        jv *m = mk(R, V_MACRO);
        m->u.mac.n = x;
        m->u.mac.fr = R->cur;
        frame_set(R, R->cur, x->s, m);
        break;
    }
    case N_CALLBLOCK: {
        node *call = x->a;
        jv *fn = eval(R, call->a);
        args A;
        eval_args(R, call, &A);
        jv *caller = mk(R, V_MACRO);
        caller->u.mac.n = x->b;
        caller->u.mac.fr = R->cur;
        R->line = x->line;
        if (fn->t != V_MACRO) RFAIL(R, "call block needs a macro");
        tmpl_to_str(R, call_value(R, fn, &A, caller), R->out);
        break;
    }
    case N_FILTERBLOCK: {
        jv *body = render_to_string(R, &x->l1);
        tmpl_to_str(R, eval_with_hole(R, x->a, body), R->out);
        break;
    }
    case N_BREAK: R->brk = 1; break;
    case N_CONTINUE: R->brk = 2; break;
    default: RFAIL(R, "internal error: bad statement node");
    }
    R->depth--;
}

static void render_body(rctx *R, const nlist *body) {
    for (size_t i = 0; i < body->n; i++) {
        render_node(R, body->v[i]);
        if (R->brk) return;
    }
}

/* ---- entry ---- */

static void render_all(rctx *R) {
    const tok_tmpl_inputs *in = R->in;
    R->none = mk(R, V_NONE);
    R->vtrue = mk(R, V_BOOL);
    R->vtrue->u.b = true;
    R->vfalse = mk(R, V_BOOL);
    R->undef = mk(R, V_UNDEF);
    R->hole = R->undef;
    if (in->now) {
        R->now = *in->now;
    } else {
        time_t now = time(NULL);
        localtime_r(&now, &R->now);
    }
    R->root = frame_new(R, NULL);
    R->cur = R->root;
    if (in->extra) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)in->extra, k, v) {
            frame_set(R, R->root, tmpl_strdup(&R->e, k, strlen(k)), tmpl_from_json(R, v, 0));
        }
    }
    if (in->messages) frame_set(R, R->root, "messages", tmpl_from_json(R, in->messages, 0));
    frame_set(R, R->root, "add_generation_prompt", mk_bool(R, in->add_generation_prompt));
    if (in->bos_token) frame_set(R, R->root, "bos_token", mk_strcopy(R, in->bos_token, strlen(in->bos_token)));
    if (in->eos_token) frame_set(R, R->root, "eos_token", mk_strcopy(R, in->eos_token, strlen(in->eos_token)));
    if (in->tools) frame_set(R, R->root, "tools", tmpl_from_json(R, in->tools, 0));
    R->out = &R->result;
    sb_reserve(R, R->out, 0);
    render_body(R, &R->tmpl->body);
}

/* The only function that calls setjmp: all state lives in *R. */
static bool render_guarded(rctx *R) {
    if (setjmp(R->e.jb)) return false;
    render_all(R);
    return true;
}

kn_status tok_tmpl_render(const tok_tmpl *t, const tok_tmpl_inputs *in, char **out, size_t *len,
                          bool *raised, kn_err *err_in) {
    kn_err tmp;
    kn_err *err = err_in ? err_in : &tmp;
    if (out) *out = NULL;
    if (len) *len = 0;
    if (raised) *raised = false;
    if (!t || !in || !out) return kn_fail(err, KN_EINVAL, "template: missing argument");
    if (in->messages && !json_is_array(in->messages)) return kn_fail(err, KN_EINVAL, "template: messages must be a JSON array");
    if (in->tools && !json_is_array(in->tools) && !json_is_null(in->tools))
        return kn_fail(err, KN_EINVAL, "template: tools must be a JSON array");
    if (in->extra && !json_is_object(in->extra)) return kn_fail(err, KN_EINVAL, "template: extra variables must be a JSON object");
    rctx *R = calloc(1, sizeof *R);
    if (!R) return kn_fail(err, KN_ENOMEM, "template: out of memory");
    R->max_output = in->limits.max_output ? in->limits.max_output : (size_t)16 << 20;
    R->max_steps = in->limits.max_steps ? in->limits.max_steps : (size_t)10000000;
    R->max_depth = in->limits.max_depth > 0 ? in->limits.max_depth : 500;
    R->ar.cap = in->limits.max_memory ? in->limits.max_memory : (size_t)256 << 20;
    R->e.err = err;
    R->e.ar = &R->ar;
    R->tmpl = t;
    R->in = in;
    err->status = KN_OK;
    kn_status st = KN_OK;
    if (!render_guarded(R)) {
        if (raised) *raised = R->e.raised;
        st = err->status != KN_OK ? err->status : KN_EINVAL;
    } else {
        char *res = malloc(R->result.n + 1);
        if (!res) {
            st = kn_fail(err, KN_ENOMEM, "template: out of memory");
        } else {
            memcpy(res, R->result.p, R->result.n);
            res[R->result.n] = 0;
            *out = res;
            if (len) *len = R->result.n;
        }
    }
    tmpl_arena_free(&R->ar);
    free(R);
    return st;
}
