/*
 * chat_template_parse.c — the template parser: a recursive descent from
 * tokens (chat_template_lex.c) to the AST of chat_template_internal.h, and
 * the template object (tok_tmpl_create normalizes newlines, lexes and
 * parses; the whole result lives in the template's arena).
 *
 * Expressions, loosest first: `a if c else b`, or, and, not, comparisons
 * (chained: a < b < c is a < b and b < c), + -, ~, * / // %, **, unary
 * + -, then filters `|f(...)`, tests `is [not] t(...)` and calls, then
 * primaries with postfix .attr [item] [a:b:c] (call). Statements are parsed
 * through STATEMENTS, a table of tag name -> parser. Nesting is bounded by
 * TMPL_PARSE_MAX_DEPTH (depth_in), so hostile input cannot overflow the
 * stack.
 */
#include "chat_template_internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct parser {
    ectx *e;
    tok *t;
    size_t i, n;
    int depth;
} parser;

/* ---- nodes ---- */

static node *nnew(parser *P, int k, int line) {
    node *x = tmpl_alloc(P->e, sizeof *x);
    x->k = k;
    x->line = line;
    return x;
}

static void nl_push(ectx *e, nlist *l, node *x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        l->v = tmpl_regrow(e, l->v, l->n, cap, sizeof(node *));
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static void names_push(ectx *e, node *x, const char *name) {
    if (x->nnames == x->cap_names) {
        size_t cap = x->cap_names ? x->cap_names * 2 : 4;
        x->names = tmpl_regrow(e, x->names, x->nnames, cap, sizeof(char *));
        x->cap_names = cap;
    }
    x->names[x->nnames++] = name;
}

/* A literal node of value type t (the caller fills the value). */
static node *lit_node(parser *P, int line, int t) {
    node *x = nnew(P, N_LIT, line);
    x->lit = tmpl_alloc(P->e, sizeof *x->lit);
    x->lit->t = t;
    return x;
}

/* ---- tokens ---- */

static tok *peek(parser *P) { return &P->t[P->i]; }
static tok *peek2(parser *P) { return &P->t[P->i + 1 < P->n ? P->i + 1 : P->i]; }
static tok *next(parser *P) {
    tok *k = &P->t[P->i];
    if (k->t != T_EOF) P->i++;
    return k;
}
static bool is_op(const tok *k, const char *op) { return k->t == T_OP && k->n == strlen(op) && !memcmp(k->p, op, k->n); }
static bool skip_op(parser *P, const char *op) {
    if (is_op(peek(P), op)) { P->i++; return true; }
    return false;
}
static bool skip_name(parser *P, const char *name) {
    if (tok_is_name(peek(P), name)) { P->i++; return true; }
    return false;
}

static const char *tok_desc(const tok *k, char *buf, size_t cap) {
    switch (k->t) {
    case T_EOF: return "end of template";
    case T_TEXT: return "template text";
    case T_VBEG: return "'{{'";
    case T_VEND: return "'}}'";
    case T_BBEG: return "'{%'";
    case T_BEND: return "'%}'";
    case T_STR: return "string literal";
    case T_INT: case T_FLOAT: return "number";
    default: snprintf(buf, cap, "'%.*s'", (int)(k->n > 40 ? 40 : k->n), k->p); return buf;
    }
}

static _Noreturn void unexpected(parser *P, const char *what) {
    char b[64];
    tok *k = peek(P);
    tmpl_fail(P->e, k->line, "expected %s, got %s", what, tok_desc(k, b, sizeof b));
}

static void expect_op(parser *P, const char *op) {
    if (!skip_op(P, op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        unexpected(P, w);
    }
}

static const char *expect_name(parser *P) {
    tok *k = peek(P);
    if (k->t != T_NAME) unexpected(P, "a name");
    P->i++;
    return tmpl_strdup(P->e, k->p, k->n);
}

static void expect_bend(parser *P) {
    if (peek(P)->t != T_BEND) unexpected(P, "'%}'");
    P->i++;
}

static void depth_in(parser *P) {
    if (++P->depth > TMPL_PARSE_MAX_DEPTH)
        tmpl_fail(P->e, peek(P)->line, "template nested too deeply (limit %d)", TMPL_PARSE_MAX_DEPTH);
}

/* In a comma-separated list closed by `close`, with `count` items read so
 * far: consumes the separator and tells whether another item follows
 * (false once the closing token is consumed; a trailing comma is fine). */
static bool more_items(parser *P, size_t count, const char *close) {
    if (skip_op(P, close)) return false;
    if (count) {
        expect_op(P, ",");
        if (skip_op(P, close)) return false;
    }
    return true;
}

/* ---- expressions ---- */

static node *parse_expr(parser *P);
static node *parse_or(parser *P);
static node *parse_unary(parser *P, bool with_filter);

/* Call arguments after '(' up to ')': positional into l1, keyword into names/l2. */
static void parse_args(parser *P, node *x) {
    while (more_items(P, x->l1.n + x->l2.n, ")")) {
        if (peek(P)->t == T_NAME && is_op(peek2(P), "=")) {
            names_push(P->e, x, expect_name(P));
            P->i++;
            nl_push(P->e, &x->l2, parse_expr(P));
        } else {
            if (x->l2.n) tmpl_fail(P->e, peek(P)->line, "positional argument after keyword argument");
            nl_push(P->e, &x->l1, parse_expr(P));
        }
    }
}

/* Macro (or caller) parameters after '(' up to ')': names, defaults in l2
 * (NULL where none). */
static void parse_params(parser *P, node *x) {
    while (more_items(P, x->nnames, ")")) {
        names_push(P->e, x, expect_name(P));
        nl_push(P->e, &x->l2, skip_op(P, "=") ? parse_expr(P) : NULL);
    }
}

static node *parse_name_literal(parser *P, tok *k) {
    static const char *const tr[] = {"true", "True"}, *const fa[] = {"false", "False"},
                             *const no[] = {"none", "None"};
    for (int i = 0; i < 2; i++) {
        if (tok_is_name(k, tr[i]) || tok_is_name(k, fa[i])) {
            node *x = lit_node(P, k->line, V_BOOL);
            x->lit->u.b = tok_is_name(k, tr[i]);
            return x;
        }
        if (tok_is_name(k, no[i])) return lit_node(P, k->line, V_NONE);
    }
    node *x = nnew(P, N_NAME, k->line);
    x->s = tmpl_strdup(P->e, k->p, k->n);
    return x;
}

/* adjacent string literals concatenate */
static node *parse_string(parser *P, tok *k) {
    size_t total = k->n;
    size_t j = P->i;
    while (P->t[j].t == T_STR) total += P->t[j++].n;
    char *buf = tmpl_alloc(P->e, total + 1);
    memcpy(buf, k->p, k->n);
    size_t o = k->n;
    while (peek(P)->t == T_STR) {
        tok *q = next(P);
        memcpy(buf + o, q->p, q->n);
        o += q->n;
    }
    node *x = lit_node(P, k->line, V_STR);
    x->lit->u.s.p = buf;
    x->lit->u.s.n = total;
    return x;
}

/* after '(': a parenthesized expression or a tuple */
static node *parse_paren(parser *P, tok *k) {
    if (skip_op(P, ")")) return nnew(P, N_TUPLE, k->line);
    node *e = parse_expr(P);
    if (is_op(peek(P), ",")) {
        node *t = nnew(P, N_TUPLE, k->line);
        nl_push(P->e, &t->l1, e);
        while (skip_op(P, ",")) {
            if (is_op(peek(P), ")")) break;
            nl_push(P->e, &t->l1, parse_expr(P));
        }
        e = t;
    }
    expect_op(P, ")");
    return e;
}

static node *parse_primary(parser *P) {
    tok *k = next(P);
    node *x;
    switch (k->t) {
    case T_NAME: return parse_name_literal(P, k);
    case T_STR: return parse_string(P, k);
    case T_INT:
        x = lit_node(P, k->line, V_INT);
        x->lit->u.i = k->iv;
        return x;
    case T_FLOAT:
        x = lit_node(P, k->line, V_FLOAT);
        x->lit->u.f = k->fv;
        return x;
    case T_OP:
        if (is_op(k, "(")) return parse_paren(P, k);
        if (is_op(k, "[")) {
            x = nnew(P, N_LIST, k->line);
            while (more_items(P, x->l1.n, "]")) nl_push(P->e, &x->l1, parse_expr(P));
            return x;
        }
        if (is_op(k, "{")) {
            x = nnew(P, N_DICT, k->line);
            while (more_items(P, x->l1.n, "}")) {
                nl_push(P->e, &x->l1, parse_expr(P));
                expect_op(P, ":");
                nl_push(P->e, &x->l2, parse_expr(P));
            }
            return x;
        }
        break;
    default:
        break;
    }
    P->i--;
    unexpected(P, "an expression");
}

/* after '[': an item [a] or a slice [a:b:c] of x */
static node *parse_subscript(parser *P, node *x, tok *k) {
    node *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (is_op(peek(P), ":")) {
            P->i++;
            slice = true;
            if (++np > 2) tmpl_fail(P->e, k->line, "bad slice");
            continue;
        }
        if (is_op(peek(P), "]")) break;
        if (parts[np]) unexpected(P, "']'");
        parts[np] = parse_expr(P);
    }
    P->i++;
    node *y = nnew(P, slice ? N_SLICE : N_ITEM, k->line);
    y->a = x;
    y->b = parts[0];
    y->c = parts[1];
    y->d = parts[2];
    if (!slice && !y->b) tmpl_fail(P->e, k->line, "empty subscript");
    return y;
}

static node *parse_call(parser *P, node *x, tok *k) {
    node *y = nnew(P, N_CALL, k->line);
    y->a = x;
    parse_args(P, y);
    return y;
}

static node *parse_postfix(parser *P, node *x) {
    for (;;) {
        tok *k = peek(P);
        if (is_op(k, ".")) {
            P->i++;
            tok *a = next(P);
            if (a->t == T_NAME) {
                node *y = nnew(P, N_ATTR, a->line);
                y->a = x;
                y->s = tmpl_strdup(P->e, a->p, a->n);
                x = y;
            } else if (a->t == T_INT) { /* x.0 is x[0] */
                node *y = nnew(P, N_ITEM, a->line);
                y->a = x;
                y->b = lit_node(P, a->line, V_INT);
                y->b->lit->u.i = a->iv;
                x = y;
            } else {
                P->i--;
                unexpected(P, "an attribute name");
            }
        } else if (is_op(k, "[")) {
            P->i++;
            x = parse_subscript(P, x, k);
        } else if (is_op(k, "(")) {
            P->i++;
            x = parse_call(P, x, k);
        } else {
            return x;
        }
    }
}

static node *parse_primary_postfix(parser *P) {
    depth_in(P);
    node *x = parse_postfix(P, parse_primary(P));
    P->depth--;
    return x;
}

static node *parse_filter(parser *P, node *operand) {
    tok *k = peek(P);
    node *f = nnew(P, N_FILTER, k->line);
    f->a = operand;
    f->s = expect_name(P);
    if (skip_op(P, "(")) parse_args(P, f);
    return f;
}

/* f(...) | g(...) | ...: a chain applied to an operand supplied at render
 * time (N_FILTER with a NULL operand takes the render's hole) */
static node *parse_filter_chain(parser *P) {
    node *f = parse_filter(P, NULL);
    while (skip_op(P, "|")) f = parse_filter(P, f);
    return f;
}

/* Can this token start the single argument of a test without parentheses
 * (`x is divisibleby 3`)? */
static bool test_arg_start(parser *P) {
    tok *k = peek(P);
    if (k->t == T_STR || k->t == T_INT || k->t == T_FLOAT) return true;
    if (k->t == T_NAME) {
        static const char *const kw[] = {"else", "or", "and", "if", "is", "in", "not"};
        for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
            if (tok_is_name(k, kw[i])) return false;
        return true;
    }
    return is_op(k, "[") || is_op(k, "{") || is_op(k, "-");
}

static node *parse_filter_expr(parser *P, node *x) {
    for (;;) {
        tok *k = peek(P);
        if (is_op(k, "|")) {
            P->i++;
            x = parse_filter(P, x);
        } else if (tok_is_name(k, "is")) {
            P->i++;
            node *t = nnew(P, N_TEST, k->line);
            t->a = x;
            if (skip_name(P, "not")) t->op = 1;
            t->s = expect_name(P);
            if (skip_op(P, "(")) parse_args(P, t);
            else if (test_arg_start(P)) nl_push(P->e, &t->l1, parse_unary(P, false));
            x = t;
        } else if (is_op(k, "(")) {
            P->i++;
            x = parse_call(P, x, k);
        } else {
            return x;
        }
    }
}

static node *parse_unary(parser *P, bool with_filter) {
    depth_in(P);
    tok *k = peek(P);
    node *x;
    if (is_op(k, "-") || is_op(k, "+")) {
        P->i++;
        x = nnew(P, is_op(k, "-") ? N_NEG : N_POS, k->line);
        x->a = parse_unary(P, false);
    } else {
        x = parse_primary_postfix(P);
    }
    if (with_filter) x = parse_filter_expr(P, x);
    P->depth--;
    return x;
}

static node *parse_filtered(parser *P) { return parse_unary(P, true); }

static node *mkbin(parser *P, int op, node *a, node *b, int line) {
    node *x = nnew(P, N_BIN, line);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

/* A binary operator token and its N_BIN op code. */
typedef struct binop_tok {
    const char *tok;
    int op;
} binop_tok;

/* One left-associative precedence level: sub (op sub)*, ops ending with a
 * NULL token. */
static node *parse_binary(parser *P, const binop_tok *ops, node *(*sub)(parser *P)) {
    node *x = sub(P);
    for (;;) {
        tok *k = peek(P);
        int op = 0;
        for (const binop_tok *o = ops; o->tok && !op; o++)
            if (is_op(k, o->tok)) op = o->op;
        if (!op) return x;
        P->i++;
        x = mkbin(P, op, x, sub(P), k->line);
    }
}

static node *parse_pow(parser *P) {
    static const binop_tok ops[] = {{"**", 'P'}, {NULL, 0}};
    return parse_binary(P, ops, parse_filtered);
}

static node *parse_math2(parser *P) {
    static const binop_tok ops[] = {{"*", '*'}, {"/", '/'}, {"//", 'F'}, {"%", '%'}, {NULL, 0}};
    return parse_binary(P, ops, parse_pow);
}

static node *parse_concat(parser *P) {
    static const binop_tok ops[] = {{"~", '~'}, {NULL, 0}};
    return parse_binary(P, ops, parse_math2);
}

static node *parse_math1(parser *P) {
    static const binop_tok ops[] = {{"+", '+'}, {"-", '-'}, {NULL, 0}};
    return parse_binary(P, ops, parse_concat);
}

static node *parse_compare(parser *P) {
    node *x = parse_math1(P), *prev_rhs = NULL, *result = NULL;
    for (;;) {
        tok *k = peek(P);
        int op = 0;
        if (is_op(k, "==")) op = 'e';
        else if (is_op(k, "!=")) op = 'n';
        else if (is_op(k, "<")) op = '<';
        else if (is_op(k, "<=")) op = 'l';
        else if (is_op(k, ">")) op = '>';
        else if (is_op(k, ">=")) op = 'g';
        else if (tok_is_name(k, "in")) op = 'i';
        else if (tok_is_name(k, "not") && tok_is_name(peek2(P), "in")) { op = 'I'; P->i++; }
        if (!op) return result ? result : x;
        P->i++;
        node *lhs = prev_rhs ? prev_rhs : x;
        node *rhs = parse_math1(P);
        node *c = mkbin(P, op, lhs, rhs, k->line);
        if (result) {
            node *a = nnew(P, N_AND, k->line);
            a->a = result;
            a->b = c;
            result = a;
        } else {
            result = c;
        }
        prev_rhs = rhs;
    }
}

static node *parse_not(parser *P) {
    tok *k = peek(P);
    if (tok_is_name(k, "not")) {
        P->i++;
        depth_in(P);
        node *x = nnew(P, N_NOT, k->line);
        x->a = parse_not(P);
        P->depth--;
        return x;
    }
    return parse_compare(P);
}

/* sub (keyword sub)* as a left-leaning chain of `kind` nodes (and, or) */
static node *parse_logic(parser *P, const char *keyword, int kind, node *(*sub)(parser *P)) {
    node *x = sub(P);
    while (tok_is_name(peek(P), keyword)) {
        node *y = nnew(P, kind, next(P)->line);
        y->a = x;
        y->b = sub(P);
        x = y;
    }
    return x;
}

static node *parse_and(parser *P) { return parse_logic(P, "and", N_AND, parse_not); }

static node *parse_or(parser *P) { return parse_logic(P, "or", N_OR, parse_and); }

static node *parse_expr(parser *P) {
    depth_in(P);
    node *x = parse_or(P);
    while (tok_is_name(peek(P), "if")) {
        node *c = nnew(P, N_COND, next(P)->line);
        c->a = parse_or(P);
        c->b = x;
        if (skip_name(P, "else")) c->c = parse_expr(P);
        x = c;
    }
    P->depth--;
    return x;
}

/* expr [, expr ...] -> a tuple when there is a comma */
static node *parse_tuple_expr(parser *P) {
    node *x = parse_expr(P);
    if (!is_op(peek(P), ",")) return x;
    node *t = nnew(P, N_TUPLE, x->line);
    nl_push(P->e, &t->l1, x);
    while (skip_op(P, ",")) {
        if (peek(P)->t == T_BEND || peek(P)->t == T_VEND) break;
        nl_push(P->e, &t->l1, parse_expr(P));
    }
    return t;
}

/* ---- statements ---- */

static node *parse_stmt(parser *P, tok *name);

/* Parses statements until a {% NAME %} with NAME in ends (NULL-terminated);
 * consumes '{%' and the name and returns the name in *which. With ends
 * NULL, parses to the end of the template. */
static nlist parse_body(parser *P, const char *const *ends, const char **which) {
    nlist body = {0};
    depth_in(P);
    for (;;) {
        tok *k = peek(P);
        if (k->t == T_EOF) {
            if (ends) tmpl_fail(P->e, k->line, "unexpected end of template, expected '{%% %s %%}'", ends[0]);
            break;
        }
        if (k->t == T_TEXT) {
            P->i++;
            node *x = nnew(P, N_TEXT, k->line);
            x->s = k->p;
            x->sn = k->n;
            nl_push(P->e, &body, x);
        } else if (k->t == T_VBEG) {
            P->i++;
            node *x = nnew(P, N_OUT, k->line);
            x->a = parse_tuple_expr(P);
            if (peek(P)->t != T_VEND) unexpected(P, "'}}'");
            P->i++;
            nl_push(P->e, &body, x);
        } else if (k->t == T_BBEG) {
            tok *nm = peek2(P);
            if (nm->t != T_NAME) { P->i++; unexpected(P, "a statement name"); }
            if (ends) {
                bool hit = false;
                for (size_t i = 0; ends[i]; i++)
                    if (tok_is_name(nm, ends[i])) { *which = ends[i]; hit = true; }
                if (hit) { P->i += 2; break; }
            }
            P->i += 2;
            node *x = parse_stmt(P, nm);
            if (x) nl_push(P->e, &body, x);
        } else {
            unexpected(P, "template text or a tag");
        }
    }
    P->depth--;
    return body;
}

/* The body up to {% end %} and the closing '%}'. */
static nlist parse_block(parser *P, const char *end) {
    const char *const ends[] = {end, NULL};
    const char *w = NULL;
    nlist body = parse_body(P, ends, &w);
    expect_bend(P);
    return body;
}

/* Each statement parser starts after the tag name; line is the tag's. */

static node *parse_if(parser *P, int line) {
    node *x = nnew(P, N_IF, line);
    x->a = parse_tuple_expr(P);
    expect_bend(P);
    static const char *const ends[] = {"endif", "elif", "else", NULL};
    const char *w = NULL;
    x->l1 = parse_body(P, ends, &w);
    if (!strcmp(w, "elif")) {
        node *y = parse_if(P, peek(P)->line);
        nl_push(P->e, &x->l2, y);
    } else if (!strcmp(w, "else")) {
        expect_bend(P);
        x->l2 = parse_block(P, "endif");
    } else {
        expect_bend(P);
    }
    return x;
}

static node *parse_for(parser *P, int line) {
    node *x = nnew(P, N_FOR, line);
    bool paren = skip_op(P, "(");
    names_push(P->e, x, expect_name(P));
    while (skip_op(P, ",")) names_push(P->e, x, expect_name(P));
    if (paren) expect_op(P, ")");
    if (!skip_name(P, "in")) unexpected(P, "'in'");
    x->a = parse_or(P);
    if (is_op(peek(P), ",")) { /* for x in a, b */
        node *t = nnew(P, N_TUPLE, line);
        nl_push(P->e, &t->l1, x->a);
        while (skip_op(P, ",")) nl_push(P->e, &t->l1, parse_or(P));
        x->a = t;
    }
    if (skip_name(P, "if")) x->b = parse_expr(P);
    if (tok_is_name(peek(P), "recursive")) tmpl_fail(P->e, line, "recursive for loops are not supported");
    expect_bend(P);
    static const char *const ends[] = {"endfor", "else", NULL};
    const char *w = NULL;
    x->l1 = parse_body(P, ends, &w);
    expect_bend(P);
    if (!strcmp(w, "else")) x->l2 = parse_block(P, "endfor");
    return x;
}

/* {% set a = e %}, {% set a, b = e %}, {% set ns.attr = e %}, and the block
 * form {% set a | filters %}...{% endset %} (op = 1) */
static node *parse_set(parser *P, int line) {
    node *x = nnew(P, N_SET, line);
    tok *k = peek(P);
    const char *first = expect_name(P);
    if (is_op(peek(P), ".")) { /* ns.attr = */
        P->i++;
        x->a = nnew(P, N_ATTR, k->line);
        x->a->a = nnew(P, N_NAME, k->line);
        x->a->a->s = first;
        x->a->s = expect_name(P);
    } else {
        names_push(P->e, x, first);
        while (skip_op(P, ",")) names_push(P->e, x, expect_name(P));
    }
    if (skip_op(P, "=")) {
        x->b = parse_tuple_expr(P);
        expect_bend(P);
    } else {
        if (x->a || x->nnames != 1) unexpected(P, "'='");
        if (skip_op(P, "|")) x->c = parse_filter_chain(P);
        expect_bend(P);
        x->l1 = parse_block(P, "endset");
        x->op = 1; /* block set */
    }
    return x;
}

static node *parse_macro(parser *P, int line) {
    node *x = nnew(P, N_MACRO, line);
    x->s = expect_name(P);
    expect_op(P, "(");
    parse_params(P, x);
    expect_bend(P);
    static const char *const ends[] = {"endmacro", NULL};
    const char *w = NULL;
    x->l1 = parse_body(P, ends, &w);
    if (peek(P)->t == T_NAME) P->i++; /* {% endmacro name %} */
    expect_bend(P);
    return x;
}

/* {% call(params) m(args) %}body{% endcall %}: b is the caller macro */
static node *parse_call_block(parser *P, int line) {
    node *x = nnew(P, N_CALLBLOCK, line);
    node *caller = nnew(P, N_MACRO, line);
    caller->s = "caller";
    if (skip_op(P, "(")) parse_params(P, caller);
    x->a = parse_expr(P);
    if (x->a->k != N_CALL) tmpl_fail(P->e, line, "call block needs a macro call");
    expect_bend(P);
    caller->l1 = parse_block(P, "endcall");
    x->b = caller;
    return x;
}

static node *parse_filter_block(parser *P, int line) {
    node *x = nnew(P, N_FILTERBLOCK, line);
    x->a = parse_filter_chain(P);
    expect_bend(P);
    x->l1 = parse_block(P, "endfilter");
    return x;
}

static node *parse_break(parser *P, int line) {
    node *x = nnew(P, N_BREAK, line);
    expect_bend(P);
    return x;
}

static node *parse_continue(parser *P, int line) {
    node *x = nnew(P, N_CONTINUE, line);
    expect_bend(P);
    return x;
}

/* HF's AssistantTracker: render the body (as `if true`) */
static node *parse_generation(parser *P, int line) {
    expect_bend(P);
    node *x = nnew(P, N_IF, line);
    x->a = lit_node(P, line, V_BOOL);
    x->a->lit->u.b = true;
    x->l1 = parse_block(P, "endgeneration");
    return x;
}

static const struct {
    const char *name;
    node *(*parse)(parser *P, int line);
} STATEMENTS[] = {
    {"if", parse_if},       {"for", parse_for},       {"set", parse_set},
    {"macro", parse_macro}, {"call", parse_call_block}, {"filter", parse_filter_block},
    {"break", parse_break}, {"continue", parse_continue}, {"generation", parse_generation},
};

static node *parse_stmt(parser *P, tok *nm) {
    for (size_t i = 0; i < sizeof STATEMENTS / sizeof STATEMENTS[0]; i++)
        if (tok_is_name(nm, STATEMENTS[i].name)) return STATEMENTS[i].parse(P, nm->line);
    char b[64];
    tmpl_fail(P->e, nm->line, "unknown or misplaced tag %s", tok_desc(nm, b, sizeof b));
}

nlist tmpl_parse(ectx *e, tok *t, size_t n) {
    parser P = {.e = e, .t = t, .i = 0, .n = n};
    return parse_body(&P, NULL, NULL);
}

/* ======================================================================
 * the template object
 * ====================================================================== */

tok_tmpl *tok_tmpl_create(const char *src, size_t len, kn_err *err) {
    if (!src && len) {
        kn_fail(err, KN_EINVAL, "template: no source");
        return NULL;
    }
    if (len > TOK_TMPL_MAX_SOURCE) {
        kn_fail(err, KN_ERANGE, "template: source too long (%zu bytes, limit %u)", len, TOK_TMPL_MAX_SOURCE);
        return NULL;
    }
    tok_tmpl *t = calloc(1, sizeof *t);
    if (!t) {
        kn_fail(err, KN_ENOMEM, "template: out of memory");
        return NULL;
    }
    t->ar.cap = (size_t)64 << 20;
    /* ectx lives on the heap-free stack frame; volatile-free since nothing
     * local is modified between setjmp and longjmp. */
    ectx e;
    memset(&e, 0, sizeof e);
    e.err = err;
    e.ar = &t->ar;
    if (setjmp(e.jb)) {
        tok_tmpl_destroy(t);
        return NULL;
    }
    /* normalize newlines (\r\n and \r -> \n) and drop one trailing newline
     * (keep_trailing_newline=False) */
    char *s = tmpl_alloc(&e, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    t->src = s;
    t->len = n;
    size_t ntok;
    tok *toks = tmpl_lex(&e, s, n, &ntok);
    t->body = tmpl_parse(&e, toks, ntok);
    return t;
}

void tok_tmpl_destroy(tok_tmpl *t) {
    if (!t) return;
    tmpl_arena_free(&t->ar);
    free(t);
}
