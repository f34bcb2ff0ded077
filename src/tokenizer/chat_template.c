/*
 * chat_template.c — the Jinja2 subset engine behind chat_template.h:
 * arena, lexer (with whitespace control), recursive-descent parser to an
 * AST, and a tree-walking renderer. Errors unwind with longjmp to the entry
 * point; every allocation lives in an arena freed in one go, so unwinding
 * never leaks.
 */
#include "tokenizer/chat_template.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * arena
 * ====================================================================== */

typedef struct ar_chunk {
    struct ar_chunk *next;
    size_t used, cap;
    max_align_t data[];
} ar_chunk;

typedef struct arena {
    ar_chunk *head;
    size_t total, cap;
} arena;

static void ar_free(arena *a) {
    ar_chunk *c = a->head;
    while (c) {
        ar_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->total = 0;
}

/* NULL when over the cap or out of memory. */
static void *ar_alloc_raw(arena *a, size_t n) {
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

/* ======================================================================
 * common context: error channel
 * ====================================================================== */

typedef struct ectx {
    jmp_buf jb;
    kn_err *err;
    bool raised;
    arena *ar;
} ectx;

static _Noreturn void efail(ectx *e, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Noreturn void efail(ectx *e, int line, const char *fmt, ...) {
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

static void *ealloc(ectx *e, size_t n) {
    void *p = ar_alloc_raw(e->ar, n);
    if (!p) efail(e, 0, "out of memory (template memory limit reached)");
    memset(p, 0, n);
    return p;
}

static char *estrdup(ectx *e, const char *s, size_t n) {
    char *p = ar_alloc_raw(e->ar, n + 1);
    if (!p) efail(e, 0, "out of memory (template memory limit reached)");
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ======================================================================
 * values
 * ====================================================================== */

enum {
    V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_TUPLE, V_DICT, V_NS, V_LOOP,
    V_MACRO, V_FUNC, V_METHOD
};

typedef struct jv jv;
typedef struct node node;
typedef struct frame frame;

typedef struct jlist {
    jv **v;
    size_t n, cap;
} jlist;

typedef struct jdict {
    jv **k;
    jv **v;
    size_t n, cap;
} jdict;

typedef struct loopinfo {
    jlist *items;
    size_t i;
} loopinfo;

struct jv {
    int t;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlist *l;
        jdict *d;
        loopinfo *loop;
        struct {
            node *n;
            frame *fr;
        } mac;
        int fn;
        struct {
            jv *self;
            const char *name;
        } m;
    } u;
    const char *uname; /* V_UNDEF: what was looked up, for messages */
};

enum { F_RAISE, F_STRFTIME, F_RANGE, F_NAMESPACE, F_DICT };

/* ======================================================================
 * lexer
 * ====================================================================== */

enum { T_EOF, T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };

typedef struct tok {
    int t;
    int line;
    const char *p; /* TEXT/NAME/OP: into the source; STR: decoded (arena) */
    size_t n;
    int64_t iv;
    double fv;
} tok;

typedef struct lexer {
    ectx *e;
    const char *s;
    size_t n;
    tok *v;
    size_t nv, cap;
} lexer;

static tok *lex_push(lexer *L, int t, int line, const char *p, size_t n) {
    if (L->nv == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        tok *nvv = ealloc(L->e, cap * sizeof(tok));
        if (L->nv) memcpy(nvv, L->v, L->nv * sizeof(tok));
        L->v = nvv;
        L->cap = cap;
    }
    tok *k = &L->v[L->nv++];
    memset(k, 0, sizeof *k);
    k->t = t;
    k->line = line;
    k->p = p;
    k->n = n;
    return k;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_alpha_(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int count_nl(const char *s, size_t a, size_t b) {
    int c = 0;
    for (size_t i = a; i < b; i++) c += s[i] == '\n';
    return c;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    if (cp > 0x10FFFF) cp = 0xFFFD;
    if (cp < 0x10000) return put_utf8(o, cp);
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a Python-style string literal body s[a..b) (escapes resolved). */
static void lex_string(lexer *L, tok *k, size_t a, size_t b) {
    const char *s = L->s;
    char *o = ealloc(L->e, (b - a) + 1);
    size_t n = 0;
    for (size_t i = a; i < b; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= b) { o[n++] = c; continue; }
        char d = s[++i];
        switch (d) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case 'a': o[n++] = '\a'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'v': o[n++] = '\v'; break;
        case '\\': o[n++] = '\\'; break;
        case '\'': o[n++] = '\''; break;
        case '"': o[n++] = '"'; break;
        case '\n': break; /* line continuation */
        case 'x': case 'u': case 'U': {
            int nd = d == 'x' ? 2 : d == 'u' ? 4 : 8;
            uint32_t cp = 0;
            int got = 0;
            while (got < nd && i + 1 < b && hexval(s[i + 1]) >= 0) { cp = cp * 16 + (uint32_t)hexval(s[++i]); got++; }
            if (got != nd) { o[n++] = '\\'; o[n++] = d; i -= (size_t)got; break; }
            n += put_utf8(o + n, cp);
            break;
        }
        default:
            if (d >= '0' && d <= '7') {
                uint32_t cp = (uint32_t)(d - '0');
                for (int q = 0; q < 2 && i + 1 < b && s[i + 1] >= '0' && s[i + 1] <= '7'; q++) cp = cp * 8 + (uint32_t)(s[++i] - '0');
                n += put_utf8(o + n, cp);
            } else {
                o[n++] = '\\';
                o[n++] = d;
            }
        }
    }
    o[n] = 0;
    k->p = o;
    k->n = n;
}

/* Lexes the inside of a tag from p; returns the position just after its
 * closing marker. *strip: '-' close; *plus: '+' close. */
static size_t lex_code(lexer *L, size_t p, char kind, int *line, bool *strip, bool *plus) {
    const char *s = L->s;
    size_t n = L->n;
    int bal = 0;
    *strip = *plus = false;
    for (;;) {
        while (p < n && is_ws(s[p])) { if (s[p] == '\n') (*line)++; p++; }
        if (p >= n) efail(L->e, *line, "unexpected end of template inside a tag");
        char c = s[p];
        if (bal == 0) {
            char close = kind == '{' ? '}' : '%';
            if ((c == '-' || c == '+') && p + 2 < n && s[p + 1] == close && s[p + 2] == '}') {
                *strip = c == '-';
                *plus = c == '+';
                lex_push(L, kind == '{' ? T_VEND : T_BEND, *line, s + p, 3);
                return p + 3;
            }
            if (c == close && p + 1 < n && s[p + 1] == '}') {
                lex_push(L, kind == '{' ? T_VEND : T_BEND, *line, s + p, 2);
                return p + 2;
            }
        }
        if (is_alpha_(c)) {
            size_t q = p;
            while (q < n && (is_alpha_(s[q]) || is_digit(s[q]))) q++;
            lex_push(L, T_NAME, *line, s + p, q - p);
            p = q;
        } else if (is_digit(c)) {
            size_t q = p;
            bool isf = false;
            while (q < n && (is_digit(s[q]) || s[q] == '_')) q++;
            if (q + 1 < n && s[q] == '.' && is_digit(s[q + 1])) {
                isf = true;
                q++;
                while (q < n && (is_digit(s[q]) || s[q] == '_')) q++;
            }
            if (q < n && (s[q] == 'e' || s[q] == 'E')) {
                size_t r = q + 1;
                if (r < n && (s[r] == '+' || s[r] == '-')) r++;
                if (r < n && is_digit(s[r])) {
                    isf = true;
                    q = r;
                    while (q < n && is_digit(s[q])) q++;
                }
            }
            char buf[64];
            size_t bn = 0;
            for (size_t i = p; i < q && bn < sizeof buf - 1; i++)
                if (s[i] != '_') buf[bn++] = s[i];
            buf[bn] = 0;
            tok *k = lex_push(L, isf ? T_FLOAT : T_INT, *line, s + p, q - p);
            if (isf) {
                k->fv = strtod(buf, NULL);
            } else {
                errno = 0;
                long long v = strtoll(buf, NULL, 10);
                if (errno || q - p > 40) efail(L->e, *line, "integer literal too large");
                k->iv = v;
            }
            p = q;
        } else if (c == '\'' || c == '"') {
            size_t q = p + 1;
            int l0 = *line;
            while (q < n && s[q] != c) {
                if (s[q] == '\\' && q + 1 < n) { if (s[q + 1] == '\n') (*line)++; q++; }
                if (s[q] == '\n') (*line)++;
                q++;
            }
            if (q >= n) efail(L->e, l0, "unterminated string literal");
            tok *k = lex_push(L, T_STR, l0, NULL, 0);
            lex_string(L, k, p + 1, q);
            p = q + 1;
        } else {
            static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
            size_t len = 0;
            for (size_t i = 0; i < sizeof ops2 / sizeof ops2[0]; i++)
                if (p + 1 < n && s[p] == ops2[i][0] && s[p + 1] == ops2[i][1]) len = 2;
            if (!len) {
                if (!strchr("+-*/%~<>=()[]{},.:|", c)) efail(L->e, *line, "unexpected character '%c'", c);
                len = 1;
                if (c == '(' || c == '[' || c == '{') bal++;
                if ((c == ')' || c == ']' || c == '}') && bal > 0) bal--;
            }
            lex_push(L, T_OP, *line, s + p, len);
            p += len;
        }
    }
}

static bool tok_is_name(const tok *k, const char *name) {
    return k->t == T_NAME && k->n == strlen(name) && !memcmp(k->p, name, k->n);
}

static void lex_all(lexer *L) {
    const char *s = L->s;
    size_t n = L->n, pos = 0;
    int line = 1;
    for (;;) {
        size_t j = pos;
        while (j + 1 < n && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#'))) j++;
        if (j + 1 >= n) j = n;
        size_t tend = j;
        bool line_starting = pos == 0 || s[pos - 1] == '\n';
        if (j < n) {
            char kind = s[j + 1], sign = j + 2 < n ? s[j + 2] : 0;
            if (sign == '-') {
                while (tend > pos && is_ws(s[tend - 1])) tend--;
            } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
                size_t k = tend;
                while (k > pos && (s[k - 1] == ' ' || s[k - 1] == '\t')) k--;
                if ((k > pos && s[k - 1] == '\n') || (k == pos && line_starting)) tend = k;
            }
        }
        if (tend > pos) lex_push(L, T_TEXT, line, s + pos, tend - pos);
        line += count_nl(s, pos, j);
        if (j >= n) break;
        char kind = s[j + 1];
        size_t p = j + 2;
        if (p < n && (s[p] == '-' || s[p] == '+')) p++;
        bool strip = false, plus = false;
        if (kind == '#') {
            size_t q = p;
            while (q + 1 < n && !(s[q] == '#' && s[q + 1] == '}')) q++;
            if (q + 1 >= n) efail(L->e, line, "unclosed comment");
            strip = q > p && s[q - 1] == '-';
            plus = q > p && s[q - 1] == '+';
            line += count_nl(s, p, q);
            pos = q + 2;
        } else {
            size_t first = L->nv;
            lex_push(L, kind == '{' ? T_VBEG : T_BBEG, line, s + j, 2);
            pos = lex_code(L, p, kind, &line, &strip, &plus);
            if (kind == '%' && L->nv - first == 3 && tok_is_name(&L->v[first + 1], "raw")) {
                int rline = L->v[first].line;
                L->nv = first; /* drop the raw tag; emit its body as text */
                size_t body = pos;
                if (strip) while (body < n && is_ws(s[body])) body++;
                else if (!plus && body < n && s[body] == '\n') body++;
                /* find {% endraw %} */
                size_t q = body, end_start = 0, after = 0;
                bool found = false, estrip = false;
                while (q + 1 < n) {
                    if (s[q] == '{' && s[q + 1] == '%') {
                        size_t r = q + 2;
                        bool lstrip_tag = r < n && s[r] == '-';
                        if (r < n && (s[r] == '-' || s[r] == '+')) r++;
                        while (r < n && is_ws(s[r])) r++;
                        if (r + 6 <= n && !memcmp(s + r, "endraw", 6)) {
                            r += 6;
                            while (r < n && is_ws(s[r])) r++;
                            bool es = r < n && s[r] == '-';
                            bool ep = r < n && s[r] == '+';
                            if (es || ep) r++;
                            if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') {
                                end_start = q;
                                if (lstrip_tag) while (end_start > body && is_ws(s[end_start - 1])) end_start--;
                                after = r + 2;
                                estrip = es;
                                plus = ep;
                                found = true;
                                break;
                            }
                        }
                    }
                    q++;
                }
                if (!found) efail(L->e, rline, "missing {%% endraw %%}");
                if (end_start > body) lex_push(L, T_TEXT, line, s + body, end_start - body);
                line += count_nl(s, pos, after);
                pos = after;
                strip = estrip;
                kind = '%';
            }
        }
        if (strip) {
            while (pos < n && is_ws(s[pos])) { if (s[pos] == '\n') line++; pos++; }
        } else if (kind != '{' && !plus && pos < n && s[pos] == '\n') { /* trim_blocks */
            pos++;
            line++;
        }
    }
    lex_push(L, T_EOF, line, s + n, 0);
}

/* ======================================================================
 * AST and parser
 * ====================================================================== */

enum {
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK, N_BREAK, N_CONTINUE,
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS, N_NOT,
    N_AND, N_OR, N_COND, N_LIST, N_TUPLE, N_DICT, N_HOLE
};

typedef struct nlist {
    node **v;
    size_t n, cap;
} nlist;

struct node {
    int k, op, line;
    node *a, *b, *c, *d;
    nlist l1, l2;              /* bodies, args, items; l2: else body, kwarg values, dict values */
    const char **names;        /* for targets, macro params, kwarg names */
    size_t nnames, cap_names;
    const char *s;             /* NUL-terminated name / text */
    size_t sn;
    jv *lit;
};

typedef struct parser {
    ectx *e;
    tok *t;
    size_t i, n;
    int depth;
} parser;

#define PARSE_MAX_DEPTH 128

static node *nnew(parser *P, int k, int line) {
    node *x = ealloc(P->e, sizeof *x);
    x->k = k;
    x->line = line;
    return x;
}

static void nl_push(ectx *e, nlist *l, node *x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        node **v = ealloc(e, cap * sizeof(node *));
        if (l->n) memcpy(v, l->v, l->n * sizeof(node *));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static void names_push(ectx *e, node *x, const char *name) {
    if (x->nnames == x->cap_names) {
        size_t cap = x->cap_names ? x->cap_names * 2 : 4;
        const char **v = ealloc(e, cap * sizeof(char *));
        if (x->nnames) memcpy(v, x->names, x->nnames * sizeof(char *));
        x->names = v;
        x->cap_names = cap;
    }
    x->names[x->nnames++] = name;
}

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
    efail(P->e, k->line, "expected %s, got %s", what, tok_desc(k, b, sizeof b));
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
    return estrdup(P->e, k->p, k->n);
}

static void expect_bend(parser *P) {
    if (peek(P)->t != T_BEND) unexpected(P, "'%}'");
    P->i++;
}

static void depth_in(parser *P) {
    if (++P->depth > PARSE_MAX_DEPTH) efail(P->e, peek(P)->line, "template nested too deeply (limit %d)", PARSE_MAX_DEPTH);
}

static node *parse_expr(parser *P);
static node *parse_or(parser *P);
static node *parse_unary(parser *P, bool with_filter);
static node *parse_primary_postfix(parser *P);

static jv *lit_new(parser *P, int t) {
    jv *v = ealloc(P->e, sizeof *v);
    v->t = t;
    return v;
}

/* Call arguments after '(' up to ')': positional into l1, keyword into names/l2. */
static void parse_args(parser *P, node *x) {
    while (!skip_op(P, ")")) {
        if (x->l1.n + x->l2.n > 0) {
            expect_op(P, ",");
            if (skip_op(P, ")")) break;
        }
        if (peek(P)->t == T_NAME && is_op(peek2(P), "=")) {
            names_push(P->e, x, expect_name(P));
            P->i++;
            nl_push(P->e, &x->l2, parse_expr(P));
        } else {
            if (x->l2.n) efail(P->e, peek(P)->line, "positional argument after keyword argument");
            nl_push(P->e, &x->l1, parse_expr(P));
        }
    }
}

static node *parse_primary(parser *P) {
    tok *k = next(P);
    node *x;
    switch (k->t) {
    case T_NAME: {
        static const char *const tr[] = {"true", "True"}, *const fa[] = {"false", "False"}, *const no[] = {"none", "None"};
        for (int i = 0; i < 2; i++) {
            if (tok_is_name(k, tr[i]) || tok_is_name(k, fa[i])) {
                x = nnew(P, N_LIT, k->line);
                x->lit = lit_new(P, V_BOOL);
                x->lit->u.b = tok_is_name(k, tr[i]);
                return x;
            }
            if (tok_is_name(k, no[i])) {
                x = nnew(P, N_LIT, k->line);
                x->lit = lit_new(P, V_NONE);
                return x;
            }
        }
        x = nnew(P, N_NAME, k->line);
        x->s = estrdup(P->e, k->p, k->n);
        return x;
    }
    case T_STR: {
        size_t total = k->n;
        size_t j = P->i;
        while (P->t[j].t == T_STR) total += P->t[j++].n;
        char *buf = ealloc(P->e, total + 1);
        memcpy(buf, k->p, k->n);
        size_t o = k->n;
        while (peek(P)->t == T_STR) {
            tok *q = next(P);
            memcpy(buf + o, q->p, q->n);
            o += q->n;
        }
        x = nnew(P, N_LIT, k->line);
        x->lit = lit_new(P, V_STR);
        x->lit->u.s.p = buf;
        x->lit->u.s.n = total;
        return x;
    }
    case T_INT:
        x = nnew(P, N_LIT, k->line);
        x->lit = lit_new(P, V_INT);
        x->lit->u.i = k->iv;
        return x;
    case T_FLOAT:
        x = nnew(P, N_LIT, k->line);
        x->lit = lit_new(P, V_FLOAT);
        x->lit->u.f = k->fv;
        return x;
    case T_OP:
        if (is_op(k, "(")) {
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
        if (is_op(k, "[")) {
            x = nnew(P, N_LIST, k->line);
            while (!skip_op(P, "]")) {
                if (x->l1.n) {
                    expect_op(P, ",");
                    if (skip_op(P, "]")) break;
                }
                nl_push(P->e, &x->l1, parse_expr(P));
            }
            return x;
        }
        if (is_op(k, "{")) {
            x = nnew(P, N_DICT, k->line);
            while (!skip_op(P, "}")) {
                if (x->l1.n) {
                    expect_op(P, ",");
                    if (skip_op(P, "}")) break;
                }
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

static node *parse_postfix(parser *P, node *x) {
    for (;;) {
        tok *k = peek(P);
        if (is_op(k, ".")) {
            P->i++;
            tok *a = next(P);
            if (a->t == T_NAME) {
                node *y = nnew(P, N_ATTR, a->line);
                y->a = x;
                y->s = estrdup(P->e, a->p, a->n);
                x = y;
            } else if (a->t == T_INT) {
                node *y = nnew(P, N_ITEM, a->line);
                y->a = x;
                y->b = nnew(P, N_LIT, a->line);
                y->b->lit = lit_new(P, V_INT);
                y->b->lit->u.i = a->iv;
                x = y;
            } else {
                P->i--;
                unexpected(P, "an attribute name");
            }
        } else if (is_op(k, "[")) {
            P->i++;
            node *parts[3] = {NULL, NULL, NULL};
            int np = 0;
            bool slice = false;
            for (;;) {
                if (is_op(peek(P), ":")) {
                    P->i++;
                    slice = true;
                    if (++np > 2) efail(P->e, k->line, "bad slice");
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
            if (!slice && !y->b) efail(P->e, k->line, "empty subscript");
            x = y;
        } else if (is_op(k, "(")) {
            P->i++;
            node *y = nnew(P, N_CALL, k->line);
            y->a = x;
            parse_args(P, y);
            x = y;
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
            node *y = nnew(P, N_CALL, k->line);
            y->a = x;
            parse_args(P, y);
            x = y;
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

static node *mkbin(parser *P, int op, node *a, node *b, int line) {
    node *x = nnew(P, N_BIN, line);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static node *parse_pow(parser *P) {
    node *x = parse_unary(P, true);
    while (is_op(peek(P), "**")) {
        int line = next(P)->line;
        x = mkbin(P, 'P', x, parse_unary(P, true), line);
    }
    return x;
}

static node *parse_math2(parser *P) {
    node *x = parse_pow(P);
    for (;;) {
        tok *k = peek(P);
        int op = is_op(k, "*") ? '*' : is_op(k, "/") ? '/' : is_op(k, "//") ? 'F' : is_op(k, "%") ? '%' : 0;
        if (!op) return x;
        P->i++;
        x = mkbin(P, op, x, parse_pow(P), k->line);
    }
}

static node *parse_concat(parser *P) {
    node *x = parse_math2(P);
    while (is_op(peek(P), "~")) {
        int line = next(P)->line;
        x = mkbin(P, '~', x, parse_math2(P), line);
    }
    return x;
}

static node *parse_math1(parser *P) {
    node *x = parse_concat(P);
    for (;;) {
        tok *k = peek(P);
        int op = is_op(k, "+") ? '+' : is_op(k, "-") ? '-' : 0;
        if (!op) return x;
        P->i++;
        x = mkbin(P, op, x, parse_concat(P), k->line);
    }
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

static node *parse_and(parser *P) {
    node *x = parse_not(P);
    while (tok_is_name(peek(P), "and")) {
        node *y = nnew(P, N_AND, next(P)->line);
        y->a = x;
        y->b = parse_not(P);
        x = y;
    }
    return x;
}

static node *parse_or(parser *P) {
    node *x = parse_and(P);
    while (tok_is_name(peek(P), "or")) {
        node *y = nnew(P, N_OR, next(P)->line);
        y->a = x;
        y->b = parse_and(P);
        x = y;
    }
    return x;
}

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

/* Parses statements until a {% NAME %} with NAME in ends (NULL-terminated);
 * consumes '{%' and the name and returns the name in *which. */
static nlist parse_body(parser *P, const char *const *ends, const char **which);

static node *parse_stmt(parser *P, tok *name);

static nlist parse_body(parser *P, const char *const *ends, const char **which) {
    nlist body = {0};
    depth_in(P);
    for (;;) {
        tok *k = peek(P);
        if (k->t == T_EOF) {
            if (ends) efail(P->e, k->line, "unexpected end of template, expected '{%% %s %%}'", ends[0]);
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
        static const char *const ends2[] = {"endif", NULL};
        x->l2 = parse_body(P, ends2, &w);
        expect_bend(P);
    } else {
        expect_bend(P);
    }
    return x;
}

static node *parse_stmt(parser *P, tok *nm) {
    int line = nm->line;
    const char *w = NULL;
    if (tok_is_name(nm, "if")) return parse_if(P, line);
    if (tok_is_name(nm, "for")) {
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
        if (tok_is_name(peek(P), "recursive")) efail(P->e, line, "recursive for loops are not supported");
        expect_bend(P);
        static const char *const ends[] = {"endfor", "else", NULL};
        x->l1 = parse_body(P, ends, &w);
        expect_bend(P);
        if (!strcmp(w, "else")) {
            static const char *const ends2[] = {"endfor", NULL};
            x->l2 = parse_body(P, ends2, &w);
            expect_bend(P);
        }
        return x;
    }
    if (tok_is_name(nm, "set")) {
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
            if (skip_op(P, "|")) x->c = parse_filter(P, NULL);
            while (skip_op(P, "|")) x->c = parse_filter(P, x->c);
            expect_bend(P);
            static const char *const ends[] = {"endset", NULL};
            x->l1 = parse_body(P, ends, &w);
            x->op = 1; /* block set */
            expect_bend(P);
        }
        return x;
    }
    if (tok_is_name(nm, "macro")) {
        node *x = nnew(P, N_MACRO, line);
        x->s = expect_name(P);
        expect_op(P, "(");
        while (!skip_op(P, ")")) {
            if (x->nnames) {
                expect_op(P, ",");
                if (skip_op(P, ")")) break;
            }
            names_push(P->e, x, expect_name(P));
            nl_push(P->e, &x->l2, skip_op(P, "=") ? parse_expr(P) : NULL);
        }
        expect_bend(P);
        static const char *const ends[] = {"endmacro", NULL};
        x->l1 = parse_body(P, ends, &w);
        if (peek(P)->t == T_NAME) P->i++; /* {% endmacro name %} */
        expect_bend(P);
        return x;
    }
    if (tok_is_name(nm, "call")) {
        node *x = nnew(P, N_CALLBLOCK, line);
        node *caller = nnew(P, N_MACRO, line);
        caller->s = "caller";
        if (skip_op(P, "(")) {
            while (!skip_op(P, ")")) {
                if (caller->nnames) {
                    expect_op(P, ",");
                    if (skip_op(P, ")")) break;
                }
                names_push(P->e, caller, expect_name(P));
                nl_push(P->e, &caller->l2, skip_op(P, "=") ? parse_expr(P) : NULL);
            }
        }
        x->a = parse_expr(P);
        if (x->a->k != N_CALL) efail(P->e, line, "call block needs a macro call");
        expect_bend(P);
        static const char *const ends[] = {"endcall", NULL};
        caller->l1 = parse_body(P, ends, &w);
        expect_bend(P);
        x->b = caller;
        return x;
    }
    if (tok_is_name(nm, "filter")) {
        node *x = nnew(P, N_FILTERBLOCK, line);
        node *f = parse_filter(P, NULL);
        while (skip_op(P, "|")) f = parse_filter(P, f);
        x->a = f;
        expect_bend(P);
        static const char *const ends[] = {"endfilter", NULL};
        x->l1 = parse_body(P, ends, &w);
        expect_bend(P);
        return x;
    }
    if (tok_is_name(nm, "break") || tok_is_name(nm, "continue")) {
        node *x = nnew(P, tok_is_name(nm, "break") ? N_BREAK : N_CONTINUE, line);
        expect_bend(P);
        return x;
    }
    if (tok_is_name(nm, "generation")) { /* HF's AssistantTracker: render the body */
        expect_bend(P);
        static const char *const ends[] = {"endgeneration", NULL};
        node *x = nnew(P, N_IF, line);
        x->a = nnew(P, N_LIT, line);
        x->a->lit = lit_new(P, V_BOOL);
        x->a->lit->u.b = true;
        x->l1 = parse_body(P, ends, &w);
        expect_bend(P);
        return x;
    }
    char b[64];
    efail(P->e, line, "unknown or misplaced tag %s", tok_desc(nm, b, sizeof b));
}

/* ======================================================================
 * the template object
 * ====================================================================== */

struct tok_tmpl {
    arena ar;
    char *src;
    size_t len;
    nlist body;
};

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
    char *s = ealloc(&e, len + 1);
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
    lexer L = {.e = &e, .s = s, .n = n};
    lex_all(&L);
    parser P = {.e = &e, .t = L.v, .i = 0, .n = L.nv};
    t->body = parse_body(&P, NULL, NULL);
    return t;
}

void tok_tmpl_destroy(tok_tmpl *t) {
    if (!t) return;
    ar_free(&t->ar);
    free(t);
}

/* ======================================================================
 * renderer
 * ====================================================================== */

struct frame {
    frame *parent;
    const char **k;
    jv **v;
    size_t n, cap;
};

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

typedef struct args {
    jv **pos;
    size_t np;
    const char **kn;
    jv **kv;
    size_t nk;
} args;

typedef struct rctx {
    ectx e;
    arena ar;
    size_t max_output, max_steps;
    int max_depth;
    size_t steps;
    int depth;
    int brk; /* 1 break, 2 continue */
    int line;
    frame *root, *cur;
    sbuf *out;
    jv *none, *vtrue, *vfalse, *undef;
    jv *hole;
    jv *pending_caller;
    struct tm now;
    const tok_tmpl *tmpl;
    const tok_tmpl_inputs *in;
    sbuf result;
} rctx;

#define RFAIL(R, ...) efail(&(R)->e, (R)->line, __VA_ARGS__)

static void *ralloc(rctx *R, size_t n) { return ealloc(&R->e, n); }

static void step(rctx *R) {
    if (++R->steps > R->max_steps) RFAIL(R, "template too expensive to render (more than %zu steps)", R->max_steps);
}

/* Charges scans that allocate nothing (searching, comparing, measuring big
 * strings, long key lists): one step per 256 bytes. */
static void work(rctx *R, size_t bytes) {
    R->steps += bytes >> 8;
    step(R);
}

/* ---- buffers ---- */

static void sb_reserve(rctx *R, sbuf *b, size_t extra) {
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

static void sb_put(rctx *R, sbuf *b, const char *s, size_t n) {
    if (!n) return;
    sb_reserve(R, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(rctx *R, sbuf *b, const char *s) { sb_put(R, b, s, strlen(s)); }

static void sb_putc(rctx *R, sbuf *b, char c) { sb_put(R, b, &c, 1); }

/* ---- constructors ---- */

static jv *mk(rctx *R, int t) {
    jv *v = ralloc(R, sizeof *v);
    v->t = t;
    return v;
}

static jv *mk_int(rctx *R, int64_t i) {
    jv *v = mk(R, V_INT);
    v->u.i = i;
    return v;
}

static jv *mk_float(rctx *R, double f) {
    jv *v = mk(R, V_FLOAT);
    v->u.f = f;
    return v;
}

static jv *mk_bool(rctx *R, bool b) { return b ? R->vtrue : R->vfalse; }

static jv *mk_strn(rctx *R, const char *p, size_t n) {
    jv *v = mk(R, V_STR);
    v->u.s.p = p;
    v->u.s.n = n;
    return v;
}

static jv *mk_strcopy(rctx *R, const char *p, size_t n) {
    if (n > R->max_output) RFAIL(R, "string too large (limit %zu bytes)", R->max_output);
    return mk_strn(R, estrdup(&R->e, p, n), n);
}

static jv *mk_sb(rctx *R, sbuf *b) { return mk_strn(R, b->p ? b->p : "", b->n); }

static jv *mk_undef(rctx *R, const char *name) {
    jv *v = mk(R, V_UNDEF);
    v->uname = name;
    return v;
}

static jv *mk_list(rctx *R, int t, size_t cap) {
    jv *v = mk(R, t);
    v->u.l = ralloc(R, sizeof(jlist));
    if (cap) {
        v->u.l->v = ralloc(R, cap * sizeof(jv *));
        v->u.l->cap = cap;
    }
    return v;
}

static void list_push(rctx *R, jv *l, jv *x) {
    jlist *L = l->u.l;
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 4;
        jv **nv = ralloc(R, cap * sizeof(jv *));
        if (L->n) memcpy(nv, L->v, L->n * sizeof(jv *));
        L->v = nv;
        L->cap = cap;
    }
    L->v[L->n++] = x;
}

static jv *mk_dict(rctx *R, int t) {
    jv *v = mk(R, t);
    v->u.d = ralloc(R, sizeof(jdict));
    return v;
}

static bool str_eq(const jv *a, const char *p, size_t n) { return a->t == V_STR && a->u.s.n == n && !memcmp(a->u.s.p, p, n); }

static bool val_eq(rctx *R, const jv *a, const jv *b);

static jv **dict_slot(rctx *R, jdict *d, const jv *key) {
    if (d->n > 16) work(R, d->n * 16);
    for (size_t i = 0; i < d->n; i++)
        if (val_eq(R, d->k[i], key)) return &d->v[i];
    return NULL;
}

static jv *dict_get_s(const jdict *d, const char *p, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], p, n)) return d->v[i];
    return NULL;
}

/* Appends without looking for an existing key (keys known unique). */
static void dict_append(rctx *R, jv *dv, jv *key, jv *val) {
    jdict *d = dv->u.d;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv **nk = ralloc(R, cap * sizeof(jv *)), **nv = ralloc(R, cap * sizeof(jv *));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(jv *));
            memcpy(nv, d->v, d->n * sizeof(jv *));
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

static void dict_set(rctx *R, jv *dv, jv *key, jv *val) {
    jv **slot = dict_slot(R, dv->u.d, key);
    if (slot) *slot = val;
    else dict_append(R, dv, key, val);
}

/* ---- JSON input ---- */

static jv *from_json(rctx *R, const json_t *j, int depth) {
    if (depth > 512) RFAIL(R, "input JSON nested too deeply");
    step(R);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv *d = mk_dict(R, V_DICT);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            dict_append(R, d, mk_strcopy(R, k, strlen(k)), from_json(R, v, depth + 1)); /* JSON keys are unique */
        }
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        jv *l = mk_list(R, V_LIST, n);
        for (size_t i = 0; i < n; i++) list_push(R, l, from_json(R, json_array_get(j, i), depth + 1));
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

/* ---- UTF-8 (code point = a byte that is not a continuation byte) ---- */

static bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

static size_t cp_count(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += !is_cont((unsigned char)p[i]);
    return c;
}

/* offsets of every code point plus n at the end; *cnt = code points */
static size_t *cp_offsets(rctx *R, const char *p, size_t n, size_t *cnt) {
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

static uint32_t cp_at(const char *p, size_t n, size_t i, size_t *len) {
    unsigned char c = (unsigned char)p[i];
    size_t need = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t cp = need == 0 ? c : need == 1 ? (c & 0x1F) : need == 2 ? (c & 0x0F) : (c & 0x07);
    size_t j = 1;
    for (; j <= need && i + j < n && is_cont((unsigned char)p[i + j]); j++) cp = (cp << 6) | ((unsigned char)p[i + j] & 63);
    *len = j;
    return cp;
}

static bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- printing ---- */

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
static void to_str(rctx *R, const jv *v, sbuf *b) {
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
    default: to_str(R, v, b); break;
    }
    R->depth--;
}

static jv *as_str(rctx *R, jv *v) {
    if (v->t == V_STR) return v;
    sbuf b = {0};
    to_str(R, v, &b);
    return mk_sb(R, &b);
}

static const char *type_name(const jv *v) {
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

/* json.dumps options: indent < 0 means None; separators; sort_keys */
typedef struct jopts {
    int indent;
    const char *item_sep, *key_sep;
    size_t item_n, key_n;
    bool sort_keys, ascii;
} jopts;

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
static void to_json(rctx *R, const jv *v, const jopts *o, int level, sbuf *b) {
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
            to_json(R, l->v[i], o, level + 1, b);
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
                RFAIL(R, "keys must be str, int, float, bool or None, not %s", type_name(k));
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
                to_json(R, k, &ko, 0, &kb);
                json_str(R, kb.p, kb.n, b, false);
            }
            sb_put(R, b, o->key_sep, o->key_n);
            to_json(R, d->v[ord[i]], o, level + 1, b);
        }
        if (o->indent >= 0) json_nl(R, b, o->indent, level);
        sb_putc(R, b, '}');
        break;
    }
    case V_UNDEF:
        if (v->uname) RFAIL(R, "'%s' is undefined", v->uname);
        RFAIL(R, "Object of type Undefined is not JSON serializable");
    default: RFAIL(R, "Object of type %s is not JSON serializable", type_name(v));
    }
    R->depth--;
}

/* ---- truth, equality, ordering ---- */

static bool truthy(const jv *v) {
    switch (v->t) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v->u.b;
    case V_INT: return v->u.i != 0;
    case V_FLOAT: return v->u.f != 0;
    case V_STR: return v->u.s.n != 0;
    case V_LIST: case V_TUPLE: return v->u.l->n != 0;
    case V_DICT: return v->u.d->n != 0;
    default: return true;
    }
}

static bool is_num(const jv *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num_f(const jv *v) { return v->t == V_FLOAT ? v->u.f : v->t == V_INT ? (double)v->u.i : (double)v->u.b; }
static bool is_intlike(const jv *v) { return v->t == V_INT || v->t == V_BOOL; }
static int64_t num_i(const jv *v) {
    if (v->t == V_INT) return v->u.i;
    if (v->t == V_BOOL) return v->u.b;
    return v->u.f > -9.2e18 && v->u.f < 9.2e18 ? (int64_t)v->u.f : 0; /* only used on int-likes */
}

static bool val_eq(rctx *R, const jv *a, const jv *b) {
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
            if (!val_eq(R, a->u.l->v[i], b->u.l->v[i])) return false;
        }
        return true;
    }
    if (a->t == V_DICT && b->t == V_DICT) {
        if (a->u.d->n != b->u.d->n) return false;
        for (size_t i = 0; i < a->u.d->n; i++) {
            step(R);
            jv **s = dict_slot(R, b->u.d, a->u.d->k[i]);
            if (!s || !val_eq(R, a->u.d->v[i], *s)) return false;
        }
        return true;
    }
    if (a->t == V_NONE && b->t == V_NONE) return true;
    if (a->t == V_UNDEF && b->t == V_UNDEF) return true;
    return a == b;
}

/* <0, 0, >0 */
static int val_cmp(rctx *R, const jv *a, const jv *b, const char *op) {
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
            if (val_eq(R, a->u.l->v[i], b->u.l->v[i])) continue;
            return val_cmp(R, a->u.l->v[i], b->u.l->v[i], op);
        }
        return a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
    }
    RFAIL(R, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b));
}

static _Noreturn void undef_fail(rctx *R, const jv *v) {
    if (v->uname) RFAIL(R, "'%s' is undefined", v->uname);
    RFAIL(R, "undefined value used in an operation");
}

/* ---- iteration ---- */

/* A list view of anything iterable (a dict gives its keys, a string its
 * code points, undefined nothing). */
static jlist *iter_list(rctx *R, jv *v) {
    switch (v->t) {
    case V_LIST: case V_TUPLE: return v->u.l;
    case V_UNDEF: return mk_list(R, V_LIST, 0)->u.l;
    case V_DICT: {
        jv *l = mk_list(R, V_LIST, v->u.d->n);
        for (size_t i = 0; i < v->u.d->n; i++) list_push(R, l, v->u.d->k[i]);
        return l->u.l;
    }
    case V_STR: {
        size_t cnt, *o = cp_offsets(R, v->u.s.p, v->u.s.n, &cnt);
        jv *l = mk_list(R, V_LIST, cnt);
        for (size_t i = 0; i < cnt; i++) {
            step(R);
            list_push(R, l, mk_strn(R, v->u.s.p + o[i], o[i + 1] - o[i]));
        }
        return l->u.l;
    }
    default: RFAIL(R, "'%s' object is not iterable", type_name(v));
    }
}

/* ---- frames ---- */

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
        const char **nk = ralloc(R, cap * sizeof(char *));
        jv **nv = ralloc(R, cap * sizeof(jv *));
        if (f->n) {
            memcpy(nk, f->k, f->n * sizeof(char *));
            memcpy(nv, f->v, f->n * sizeof(jv *));
        }
        f->k = nk;
        f->v = nv;
        f->cap = cap;
    }
    f->k[f->n] = name;
    f->v[f->n++] = v;
}

static jv *lookup(rctx *R, const char *name) {
    for (frame *f = R->cur; f; f = f->parent)
        for (size_t i = 0; i < f->n; i++)
            if (!strcmp(f->k[i], name)) return f->v[i];
    static const struct { const char *n; int fn; } G[] = {
        {"raise_exception", F_RAISE}, {"strftime_now", F_STRFTIME}, {"range", F_RANGE},
        {"namespace", F_NAMESPACE}, {"dict", F_DICT},
    };
    for (size_t i = 0; i < sizeof G / sizeof G[0]; i++)
        if (!strcmp(G[i].n, name)) {
            jv *v = mk(R, V_FUNC);
            v->u.fn = G[i].fn;
            return v;
        }
    return mk_undef(R, name);
}

/* ======================================================================
 * evaluation
 * ====================================================================== */

static jv *eval(rctx *R, node *x);
static void render_body(rctx *R, const nlist *body);

static const char *attr_path_part(const char **p, size_t *n) {
    const char *s = *p, *dot = strchr(s, '.');
    *n = dot ? (size_t)(dot - s) : strlen(s);
    *p = dot ? dot + 1 : NULL;
    return s;
}

static jv *get_item(rctx *R, jv *obj, jv *key);

static bool nm_eq(const char *p, size_t n, const char *lit) { return n == strlen(lit) && !memcmp(p, lit, n); }

/* The canonical (static) name of a method of `t`, or NULL. `name` need not
 * be NUL-terminated. */
static const char *method_name(int t, const char *name, size_t n) {
    static const char *const SM[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                     "upper", "lower", "title", "capitalize", "replace", "find", "count",
                                     "join", "splitlines", "isdigit", "isalpha", "isalnum", "isspace",
                                     "islower", "isupper", NULL};
    static const char *const DM[] = {"items", "keys", "values", "get", NULL};
    const char *const *M = t == V_STR ? SM : t == V_DICT ? DM : NULL;
    for (size_t i = 0; M && M[i]; i++)
        if (nm_eq(name, n, M[i])) return M[i];
    return NULL;
}

static jv *bound(rctx *R, jv *self, const char *name) {
    jv *m = mk(R, V_METHOD);
    m->u.m.self = self;
    m->u.m.name = name;
    return m;
}

/* obj.name (Jinja: attribute first, then item) */
static jv *get_attr(rctx *R, jv *obj, const char *name, size_t nlen) {
    switch (obj->t) {
    case V_UNDEF: return mk_undef(R, obj->uname);
    case V_DICT: {
        const char *m = method_name(V_DICT, name, nlen);
        if (m) return bound(R, obj, m);
    }
        /* fallthrough */
    case V_NS: {
        jv *v = dict_get_s(obj->u.d, name, nlen);
        return v ? v : mk_undef(R, NULL);
    }
    case V_STR: {
        const char *m = method_name(V_STR, name, nlen);
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
        if (!strcmp(nm, "cycle")) return bound(R, obj, "cycle");
        return mk_undef(R, NULL);
    }
    default: return mk_undef(R, NULL);
    }
}

static jv *get_attr_path(rctx *R, jv *obj, const char *path) {
    const char *p = path;
    while (p) {
        size_t n;
        const char *part = attr_path_part(&p, &n);
        bool digits = n > 0 && n < 18;
        for (size_t i = 0; i < n && digits; i++) digits = is_digit(part[i]);
        if (digits && (obj->t == V_LIST || obj->t == V_TUPLE)) obj = get_item(R, obj, mk_int(R, strtoll(part, NULL, 10)));
        else obj = get_attr(R, obj, part, n);
    }
    return obj;
}

/* obj[key] (Jinja: item first, then attribute) */
static jv *get_item(rctx *R, jv *obj, jv *key) {
    switch (obj->t) {
    case V_UNDEF: return mk_undef(R, obj->uname);
    case V_LIST: case V_TUPLE: {
        if (!is_intlike(key)) {
            if (key->t == V_STR) return mk_undef(R, NULL);
            RFAIL(R, "list indices must be integers, not %s", type_name(key));
        }
        int64_t i = num_i(key), n = (int64_t)obj->u.l->n;
        if (i < 0) i += n;
        if (i < 0 || i >= n) return mk_undef(R, NULL);
        return obj->u.l->v[i];
    }
    case V_DICT: case V_NS: {
        jv **s = dict_slot(R, obj->u.d, key);
        if (s) return *s;
        if (key->t == V_STR && obj->t == V_DICT) return get_attr(R, obj, key->u.s.p, key->u.s.n);
        return mk_undef(R, NULL);
    }
    case V_STR: {
        if (key->t == V_STR) return get_attr(R, obj, key->u.s.p, key->u.s.n);
        if (!is_intlike(key)) RFAIL(R, "string indices must be integers");
        size_t cnt, *o = cp_offsets(R, obj->u.s.p, obj->u.s.n, &cnt);
        int64_t i = num_i(key);
        if (i < 0) i += (int64_t)cnt;
        if (i < 0 || i >= (int64_t)cnt) return mk_undef(R, NULL);
        return mk_strn(R, obj->u.s.p + o[i], o[i + 1] - o[i]);
    }
    case V_LOOP:
        if (key->t == V_STR) return get_attr(R, obj, key->u.s.p, key->u.s.n);
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

static jv *do_slice(rctx *R, jv *obj, jv *a, jv *b, jv *c) {
    bool ga, gb, gc;
    int64_t start = slice_arg(R, a, &ga), stop = slice_arg(R, b, &gb), st = slice_arg(R, c, &gc);
    if (!gc) st = 1;
    if (st == 0) RFAIL(R, "slice step cannot be zero");
    if (obj->t == V_UNDEF) return mk_undef(R, obj->uname);
    size_t cnt = 0, *o = NULL;
    if (obj->t == V_STR) o = cp_offsets(R, obj->u.s.p, obj->u.s.n, &cnt);
    else if (obj->t == V_LIST || obj->t == V_TUPLE) cnt = obj->u.l->n;
    else RFAIL(R, "'%s' object is not subscriptable", type_name(obj));
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

static bool contains(rctx *R, jv *hay, jv *needle) {
    switch (hay->t) {
    case V_STR:
        if (needle->t != V_STR) RFAIL(R, "'in <string>' requires string as left operand, not %s", type_name(needle));
        if (!needle->u.s.n) return true;
        work(R, hay->u.s.n);
        return memmem(hay->u.s.p, hay->u.s.n, needle->u.s.p, needle->u.s.n) != NULL;
    case V_LIST: case V_TUPLE:
        for (size_t i = 0; i < hay->u.l->n; i++) {
            step(R);
            if (val_eq(R, hay->u.l->v[i], needle)) return true;
        }
        return false;
    case V_DICT: case V_NS: return dict_slot(R, hay->u.d, needle) != NULL;
    case V_UNDEF: return false;
    default: RFAIL(R, "argument of type '%s' is not iterable", type_name(hay));
    }
}

static int64_t floordiv_i(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static jv *binop(rctx *R, int op, jv *a, jv *b) {
    if (op == '~') {
        sbuf sb = {0};
        to_str(R, a, &sb);
        to_str(R, b, &sb);
        return mk_sb(R, &sb);
    }
    if (op == 'e') return mk_bool(R, val_eq(R, a, b));
    if (op == 'n') return mk_bool(R, !val_eq(R, a, b));
    if (op == 'i') return mk_bool(R, contains(R, b, a));
    if (op == 'I') return mk_bool(R, !contains(R, b, a));
    if (a->t == V_UNDEF) undef_fail(R, a);
    if (b->t == V_UNDEF) undef_fail(R, b);
    switch (op) {
    case '<': return mk_bool(R, val_cmp(R, a, b, "<") < 0);
    case 'l': return mk_bool(R, val_cmp(R, a, b, "<=") <= 0);
    case '>': return mk_bool(R, val_cmp(R, a, b, ">") > 0);
    case 'g': return mk_bool(R, val_cmp(R, a, b, ">=") >= 0);
    default: break;
    }
    static const char *const opname[128] = {['+'] = "+", ['-'] = "-", ['*'] = "*", ['/'] = "/", ['F'] = "//", ['%'] = "%", ['P'] = "**"};
    if (is_num(a) && is_num(b)) {
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
        default: break;
        }
    }
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
    RFAIL(R, "unsupported operand type(s) for %s: '%s' and '%s'", opname[op & 127] ? opname[op & 127] : "?", type_name(a), type_name(b));
}

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

/* positional i, or keyword `name` (NULL name: positional only) */
static jv *arg(const args *A, size_t i, const char *name) {
    if (i < A->np) return A->pos[i];
    if (name)
        for (size_t k = 0; k < A->nk; k++)
            if (!strcmp(A->kn[k], name)) return A->kv[k];
    return NULL;
}

static jv *arg_str(rctx *R, const args *A, size_t i, const char *name, const char *what) {
    jv *v = arg(A, i, name);
    if (!v) return NULL;
    if (v->t != V_STR) RFAIL(R, "%s expects a string argument, got %s", what, type_name(v));
    return v;
}

/* ---- string helpers ---- */

static bool cp_in_set(uint32_t cp, const jv *chars) {
    const char *p = chars->u.s.p;
    size_t n = chars->u.s.n;
    for (size_t i = 0; i < n;) {
        size_t l;
        if (cp_at(p, n, i, &l) == cp) return true;
        i += l;
    }
    return false;
}

static jv *str_strip(rctx *R, jv *s, jv *chars, bool left, bool right) {
    if (chars && chars->t == V_NONE) chars = NULL;
    if (chars && chars->t != V_STR) RFAIL(R, "strip arg must be None or str");
    const char *p = s->u.s.p;
    size_t a = 0, b = s->u.s.n;
    work(R, b);
    if (left)
        while (a < b) {
            size_t l;
            uint32_t cp = cp_at(p, b, a, &l);
            if (chars ? !cp_in_set(cp, chars) : !py_space(cp)) break;
            a += l;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && is_cont((unsigned char)p[st])) st--;
            size_t l;
            uint32_t cp = cp_at(p, b, st, &l);
            if (chars ? !cp_in_set(cp, chars) : !py_space(cp)) break;
            b = st;
        }
    return mk_strn(R, p + a, b - a);
}

static jv *str_split(rctx *R, jv *s, jv *sep, int64_t maxsplit) {
    jv *l = mk_list(R, V_LIST, 0);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (sep && sep->t == V_NONE) sep = NULL;
    if (sep && sep->t != V_STR) RFAIL(R, "split separator must be a string or None");
    if (!sep) {
        size_t i = 0;
        for (;;) {
            while (i < n) {
                size_t len;
                if (!py_space(cp_at(p, n, i, &len))) break;
                i += len;
            }
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)l->u.l->n >= maxsplit) {
                list_push(R, l, mk_strn(R, p + i, n - i));
                break;
            }
            size_t j = i;
            while (j < n) {
                size_t len;
                if (py_space(cp_at(p, n, j, &len))) break;
                j += len;
            }
            step(R);
            list_push(R, l, mk_strn(R, p + i, j - i));
            i = j;
        }
        return l;
    }
    if (!sep->u.s.n) RFAIL(R, "empty separator");
    size_t i = 0;
    for (;;) {
        step(R);
        const char *hit = (maxsplit < 0 || (int64_t)l->u.l->n < maxsplit)
                              ? memmem(p + i, n - i, sep->u.s.p, sep->u.s.n) : NULL;
        if (!hit) {
            list_push(R, l, mk_strn(R, p + i, n - i));
            break;
        }
        size_t h = (size_t)(hit - p);
        list_push(R, l, mk_strn(R, p + i, h - i));
        i = h + sep->u.s.n;
    }
    return l;
}

static char lc(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }
static char uc(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }
static bool is_alnum_ascii(char c) { return is_alpha_(c) ? c != '_' : is_digit(c); }

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' Python str.title, 'j' Jinja's title filter */
static jv *str_case(rctx *R, jv *s, char mode) {
    char *o = ralloc(R, s->u.s.n + 1);
    const char *p = s->u.s.p;
    bool prev_letter = false;
    for (size_t i = 0; i < s->u.s.n; i++) {
        char c = p[i];
        switch (mode) {
        case 'u': o[i] = uc(c); break;
        case 'l': o[i] = lc(c); break;
        case 'c': o[i] = i == 0 ? uc(c) : lc(c); break;
        case 't':
            o[i] = prev_letter ? lc(c) : uc(c);
            prev_letter = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) || (unsigned char)c >= 0x80;
            break;
        default: { /* word start after start, whitespace or - ( { [ < */
            bool start = i == 0 || is_ws(p[i - 1]) || strchr("-({[<", p[i - 1]);
            o[i] = start ? uc(c) : lc(c);
        }
        }
    }
    return mk_strn(R, o, s->u.s.n);
}

static jv *str_replace(rctx *R, jv *s, jv *old, jv *nw, int64_t count) {
    sbuf sb = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    int64_t done = 0;
    if (!old->u.s.n) {
        size_t cnt, *o = cp_offsets(R, p, n, &cnt);
        for (size_t k = 0; k <= cnt; k++) {
            step(R);
            if (count < 0 || done < count) { sb_put(R, &sb, nw->u.s.p, nw->u.s.n); done++; }
            if (k < cnt) sb_put(R, &sb, p + o[k], o[k + 1] - o[k]);
        }
        return mk_sb(R, &sb);
    }
    while (i <= n) {
        const char *hit = (count < 0 || done < count) ? memmem(p + i, n - i, old->u.s.p, old->u.s.n) : NULL;
        if (!hit) break;
        step(R);
        size_t h = (size_t)(hit - p);
        sb_put(R, &sb, p + i, h - i);
        sb_put(R, &sb, nw->u.s.p, nw->u.s.n);
        i = h + old->u.s.n;
        done++;
    }
    if (!done) return s;
    sb_put(R, &sb, p + i, n - i);
    return mk_sb(R, &sb);
}

static jv *join_list(rctx *R, jv *seq, jv *sep, const char *attribute) {
    jlist *l = iter_list(R, seq);
    sbuf sb = {0};
    sb_reserve(R, &sb, 0);
    for (size_t i = 0; i < l->n; i++) {
        step(R);
        if (i && sep) to_str(R, sep, &sb);
        jv *it = attribute ? get_attr_path(R, l->v[i], attribute) : l->v[i];
        to_str(R, it, &sb);
    }
    return mk_sb(R, &sb);
}

static bool affix_match(rctx *R, jv *s, jv *aff, bool start) {
    if (aff->t == V_TUPLE || aff->t == V_LIST) {
        for (size_t i = 0; i < aff->u.l->n; i++)
            if (affix_match(R, s, aff->u.l->v[i], start)) return true;
        return false;
    }
    if (aff->t != V_STR) RFAIL(R, "%s arg must be str or a tuple of str", start ? "startswith" : "endswith");
    if (aff->u.s.n > s->u.s.n) return false;
    const char *p = start ? s->u.s.p : s->u.s.p + s->u.s.n - aff->u.s.n;
    return !memcmp(p, aff->u.s.p, aff->u.s.n);
}

static jv *splitlines(rctx *R, jv *s) {
    jv *l = mk_list(R, V_LIST, 0);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        step(R);
        list_push(R, l, mk_strn(R, p + i, j - i));
        if (j < n && p[j] == '\r' && j + 1 < n && p[j + 1] == '\n') j++;
        i = j + 1;
    }
    return l;
}

static jv *str_method(rctx *R, jv *s, const char *m, const args *A) {
    if (!strcmp(m, "strip")) return str_strip(R, s, arg(A, 0, "chars"), true, true);
    if (!strcmp(m, "lstrip")) return str_strip(R, s, arg(A, 0, "chars"), true, false);
    if (!strcmp(m, "rstrip")) return str_strip(R, s, arg(A, 0, "chars"), false, true);
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        jv *ms = arg(A, 1, "maxsplit");
        int64_t maxsplit = ms && is_intlike(ms) ? num_i(ms) : -1;
        if (!strcmp(m, "rsplit") && maxsplit >= 0) RFAIL(R, "rsplit with maxsplit is not supported");
        return str_split(R, s, arg(A, 0, "sep"), maxsplit);
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        jv *a = arg(A, 0, NULL);
        if (!a) RFAIL(R, "%s() takes at least 1 argument", m);
        return mk_bool(R, affix_match(R, s, a, m[0] == 's'));
    }
    if (!strcmp(m, "upper")) return str_case(R, s, 'u');
    if (!strcmp(m, "lower")) return str_case(R, s, 'l');
    if (!strcmp(m, "capitalize")) return str_case(R, s, 'c');
    if (!strcmp(m, "title")) return str_case(R, s, 't');
    if (!strcmp(m, "replace")) {
        jv *o = arg_str(R, A, 0, NULL, "replace"), *nw = arg_str(R, A, 1, NULL, "replace"), *c = arg(A, 2, "count");
        if (!o || !nw) RFAIL(R, "replace() takes at least 2 arguments");
        return str_replace(R, s, o, nw, c && is_intlike(c) ? num_i(c) : -1);
    }
    if (!strcmp(m, "find") || !strcmp(m, "count")) {
        jv *sub = arg_str(R, A, 0, NULL, m);
        if (!sub) RFAIL(R, "%s() takes at least 1 argument", m);
        work(R, s->u.s.n);
        if (m[0] == 'f') {
            const char *hit = memmem(s->u.s.p, s->u.s.n, sub->u.s.p, sub->u.s.n);
            return mk_int(R, hit ? (int64_t)cp_count(s->u.s.p, (size_t)(hit - s->u.s.p)) : -1);
        }
        if (!sub->u.s.n) return mk_int(R, (int64_t)cp_count(s->u.s.p, s->u.s.n) + 1);
        int64_t c = 0;
        size_t i = 0;
        const char *hit;
        while ((hit = memmem(s->u.s.p + i, s->u.s.n - i, sub->u.s.p, sub->u.s.n))) {
            c++;
            i = (size_t)(hit - s->u.s.p) + sub->u.s.n;
        }
        return mk_int(R, c);
    }
    if (!strcmp(m, "join")) {
        jv *a = arg(A, 0, NULL);
        if (!a) RFAIL(R, "join() takes exactly one argument");
        jlist *l = iter_list(R, a);
        for (size_t i = 0; i < l->n; i++)
            if (l->v[i]->t != V_STR) RFAIL(R, "sequence item %zu: expected str instance, %s found", i, type_name(l->v[i]));
        return join_list(R, a, s, NULL);
    }
    if (!strcmp(m, "splitlines")) return splitlines(R, s);
    if (!strncmp(m, "is", 2)) {
        const char *p = s->u.s.p;
        size_t n = s->u.s.n;
        bool ok = n > 0, any_cased = false;
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            if (!strcmp(m, "isdigit")) ok = ok && is_digit(c);
            else if (!strcmp(m, "isalpha")) ok = ok && is_alpha_(c) && c != '_';
            else if (!strcmp(m, "isalnum")) ok = ok && is_alnum_ascii(c);
            else if (!strcmp(m, "isspace")) ok = ok && is_ws(c);
            else if (!strcmp(m, "islower")) { ok = ok && !(c >= 'A' && c <= 'Z'); any_cased |= c >= 'a' && c <= 'z'; }
            else if (!strcmp(m, "isupper")) { ok = ok && !(c >= 'a' && c <= 'z'); any_cased |= c >= 'A' && c <= 'Z'; }
        }
        if (!strcmp(m, "islower") || !strcmp(m, "isupper")) ok = ok && any_cased;
        return mk_bool(R, ok);
    }
    RFAIL(R, "str.%s() is not supported", m);
}

static jv *items_of(rctx *R, jv *d) {
    jv *l = mk_list(R, V_LIST, d->u.d->n);
    for (size_t i = 0; i < d->u.d->n; i++) {
        jv *t = mk_list(R, V_TUPLE, 2);
        list_push(R, t, d->u.d->k[i]);
        list_push(R, t, d->u.d->v[i]);
        list_push(R, l, t);
    }
    return l;
}

static jv *call_method(rctx *R, jv *mth, const args *A) {
    jv *self = mth->u.m.self;
    const char *m = mth->u.m.name;
    if (self->t == V_STR) return str_method(R, self, m, A);
    if (self->t == V_DICT) {
        if (!strcmp(m, "items")) return items_of(R, self);
        if (!strcmp(m, "keys") || !strcmp(m, "values")) {
            jv *l = mk_list(R, V_LIST, self->u.d->n);
            for (size_t i = 0; i < self->u.d->n; i++) list_push(R, l, m[0] == 'k' ? self->u.d->k[i] : self->u.d->v[i]);
            return l;
        }
        if (!strcmp(m, "get")) {
            jv *k = arg(A, 0, NULL), *def = arg(A, 1, "default");
            if (!k) RFAIL(R, "get expected at least 1 argument");
            jv **s = dict_slot(R, self->u.d, k);
            return s ? *s : def ? def : R->none;
        }
    }
    if (self->t == V_LOOP && !strcmp(m, "cycle")) {
        if (!A->np) RFAIL(R, "no items for cycling given");
        return A->pos[self->u.loop->i % A->np];
    }
    RFAIL(R, "unsupported method %s", m);
}

/* ---- tests ---- */

static const char *const TEST_NAMES[] = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable",
    "sequence", "boolean", "true", "false", "odd", "even", "divisibleby", "equalto", "eq", "==",
    "sameas", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "in", "callable", "lower",
    "upper", "escaped", NULL};

static bool name_in(const char *n, const char *const *list);

static bool run_test(rctx *R, const char *t, jv *v, const args *A) {
    if (!name_in(t, TEST_NAMES)) RFAIL(R, "no test named '%s'", t);
    jv *a0 = arg(A, 0, NULL);
    if (!strcmp(t, "defined")) return v->t != V_UNDEF;
    if (!strcmp(t, "undefined")) return v->t == V_UNDEF;
    if (!strcmp(t, "none")) return v->t == V_NONE;
    if (!strcmp(t, "string")) return v->t == V_STR;
    if (!strcmp(t, "number")) return is_num(v);
    if (!strcmp(t, "integer")) return v->t == V_INT;
    if (!strcmp(t, "float")) return v->t == V_FLOAT;
    if (!strcmp(t, "boolean")) return v->t == V_BOOL;
    if (!strcmp(t, "true")) return v->t == V_BOOL && v->u.b;
    if (!strcmp(t, "false")) return v->t == V_BOOL && !v->u.b;
    if (!strcmp(t, "mapping")) return v->t == V_DICT;
    if (!strcmp(t, "iterable")) return v->t == V_STR || v->t == V_LIST || v->t == V_TUPLE || v->t == V_DICT || v->t == V_UNDEF;
    if (!strcmp(t, "sequence")) return v->t == V_STR || v->t == V_LIST || v->t == V_TUPLE || v->t == V_DICT || v->t == V_UNDEF;
    if (!strcmp(t, "callable")) return v->t == V_MACRO || v->t == V_FUNC || v->t == V_METHOD;
    if (!strcmp(t, "escaped")) return false;
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (v->t != V_STR) return false;
        jv *c = str_case(R, v, t[0] == 'l' ? 'l' : 'u');
        return str_eq(c, v->u.s.p, v->u.s.n);
    }
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (v->t == V_UNDEF) undef_fail(R, v);
        if (!is_intlike(v)) RFAIL(R, "test '%s' needs an integer, got %s", t, type_name(v));
        int64_t r = num_i(v) % 2;
        return t[0] == 'o' ? r != 0 : r == 0;
    }
    if (!a0) RFAIL(R, "test '%s' needs an argument", t);
    if (!strcmp(t, "divisibleby")) {
        if (!is_intlike(v) || !is_intlike(a0)) RFAIL(R, "divisibleby needs integers");
        if (num_i(a0) == 0) RFAIL(R, "integer division or modulo by zero");
        if (num_i(a0) == -1) return true;
        return num_i(v) % num_i(a0) == 0;
    }
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==")) return val_eq(R, v, a0);
    if (!strcmp(t, "sameas")) return val_eq(R, v, a0) && v->t == a0->t;
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !val_eq(R, v, a0);
    if (!strcmp(t, "in")) return contains(R, a0, v);
    if (v->t == V_UNDEF) undef_fail(R, v);
    if (!strcmp(t, "lt") || !strcmp(t, "<")) return val_cmp(R, v, a0, "<") < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return val_cmp(R, v, a0, "<=") <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, ">")) return val_cmp(R, v, a0, ">") > 0;
    if (!strcmp(t, "ge") || !strcmp(t, ">=")) return val_cmp(R, v, a0, ">=") >= 0;
    RFAIL(R, "no test named '%s'", t);
}

/* ---- filters ---- */

static const char *const FILTER_NAMES[] = {
    "trim", "length", "count", "tojson", "join", "upper", "lower", "replace", "default", "d", "first",
    "last", "list", "string", "int", "float", "abs", "round", "items", "selectattr", "rejectattr",
    "select", "reject", "map", "unique", "indent", "wordcount", "safe", "e", "escape", "forceescape",
    "capitalize", "title", "center", "reverse", "sort", "sum", "min", "max", "dictsort", "attr", NULL};

static bool name_in(const char *n, const char *const *list) {
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(list[i], n)) return true;
    return false;
}

static jv *apply_filter(rctx *R, const char *f, jv *v, const args *A);

static int64_t vlen(rctx *R, jv *v) {
    switch (v->t) {
    case V_STR: work(R, v->u.s.n); return (int64_t)cp_count(v->u.s.p, v->u.s.n);
    case V_LIST: case V_TUPLE: return (int64_t)v->u.l->n;
    case V_DICT: case V_NS: return (int64_t)v->u.d->n;
    case V_UNDEF: return 0;
    default: RFAIL(R, "object of type '%s' has no len()", type_name(v));
    }
}

static jv *lower_key(rctx *R, jv *v, bool case_sensitive) {
    if (!case_sensitive && v->t == V_STR) return str_case(R, v, 'l');
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
        if (attribute) key = get_attr_path(R, key, attribute);
        if (by_first) key = get_item(R, key, mk_int(R, 0));
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
                    int c = val_cmp(R, k[i], k[j], "<");
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
    jlist *l = iter_list(R, v);
    size_t first = 0;
    const char *attribute = NULL;
    if (attr_mode) {
        jv *an = arg(A, 0, NULL);
        if (!an || an->t != V_STR) RFAIL(R, "selectattr/rejectattr need an attribute name");
        attribute = estrdup(&R->e, an->u.s.p, an->u.s.n);
        first = 1;
    }
    jv *tn = A->np > first ? A->pos[first] : NULL;
    if (tn && tn->t != V_STR) RFAIL(R, "the test name must be a string");
    const char *test = tn ? estrdup(&R->e, tn->u.s.p, tn->u.s.n) : NULL;
    if (test && !name_in(test, TEST_NAMES)) RFAIL(R, "no test named '%s'", test);
    args TA = {0};
    if (A->np > first + 1) {
        TA.pos = A->pos + first + 1;
        TA.np = A->np - first - 1;
    }
    jv *out = mk_list(R, V_LIST, 0);
    for (size_t i = 0; i < l->n; i++) {
        step(R);
        jv *it = attribute ? get_attr_path(R, l->v[i], attribute) : l->v[i];
        bool ok = test ? run_test(R, test, it, &TA) : truthy(it);
        if (ok == keep) list_push(R, out, l->v[i]);
    }
    return out;
}

static jv *do_escape(rctx *R, jv *v) {
    v = as_str(R, v);
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
        jv *s = str_strip(R, v, NULL, true, true);
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
        jv *s = str_strip(R, v, NULL, true, true);
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
    v = as_str(R, v);
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
    jv *lines = splitlines(R, mk_sb(R, &s2));
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

static jv *apply_filter(rctx *R, const char *f, jv *v, const args *A) {
    step(R);
    if (!strcmp(f, "safe")) return v;
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv *def = arg(A, 0, "default_value"), *boolean = arg(A, 1, "boolean");
        if (!def) def = mk_strn(R, "", 0);
        if (v->t == V_UNDEF || (boolean && truthy(boolean) && !truthy(v))) return def;
        return v;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) return mk_int(R, vlen(R, v));
    if (!strcmp(f, "string")) return as_str(R, v);
    if (!strcmp(f, "tojson")) {
        /* HF's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
        jv *ind = arg(A, 1, "indent"), *seps = arg(A, 2, "separators"), *sk = arg(A, 3, "sort_keys");
        jv *ea = arg(A, 0, "ensure_ascii");
        jopts o = {.indent = -1, .sort_keys = sk && truthy(sk), .ascii = ea && truthy(ea)};
        if (ind && ind->t != V_NONE) {
            if (!is_intlike(ind) || num_i(ind) < 0 || num_i(ind) > 64) RFAIL(R, "tojson indent must be an integer in 0..64");
            o.indent = (int)num_i(ind);
        }
        o.item_sep = o.indent >= 0 ? "," : ", ";
        o.key_sep = ": ";
        if (seps && seps->t != V_NONE) {
            if ((seps->t != V_LIST && seps->t != V_TUPLE) || seps->u.l->n != 2 || seps->u.l->v[0]->t != V_STR ||
                seps->u.l->v[1]->t != V_STR)
                RFAIL(R, "tojson separators must be a pair of strings");
            o.item_sep = seps->u.l->v[0]->u.s.p;
            o.item_n = seps->u.l->v[0]->u.s.n;
            o.key_sep = seps->u.l->v[1]->u.s.p;
            o.key_n = seps->u.l->v[1]->u.s.n;
        } else {
            o.item_n = strlen(o.item_sep);
            o.key_n = strlen(o.key_sep);
        }
        sbuf sb = {0};
        sb_reserve(R, &sb, 0);
        to_json(R, v, &o, 0, &sb);
        return mk_sb(R, &sb);
    }
    if (!strcmp(f, "list")) {
        jlist *l = iter_list(R, v);
        jv *o = mk_list(R, V_LIST, l->n);
        for (size_t i = 0; i < l->n; i++) list_push(R, o, l->v[i]);
        return o;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (v->t == V_UNDEF) return v;
        jlist *l = iter_list(R, v);
        if (!l->n) return mk_undef(R, NULL);
        return f[0] == 'f' ? l->v[0] : l->v[l->n - 1];
    }
    if (!strcmp(f, "join")) {
        jv *sep = arg(A, 0, "d"), *at = arg(A, 1, "attribute");
        if (at && at->t != V_STR) RFAIL(R, "join attribute must be a string");
        return join_list(R, v, sep, at ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL);
    }
    if (!strcmp(f, "items")) {
        if (v->t == V_UNDEF) return mk_list(R, V_LIST, 0);
        if (v->t != V_DICT) RFAIL(R, "items filter needs a mapping, got %s", type_name(v));
        return items_of(R, v);
    }
    if (!strcmp(f, "dictsort")) {
        if (v->t != V_DICT) RFAIL(R, "dictsort needs a mapping, got %s", type_name(v));
        jv *cs = arg(A, 0, "case_sensitive"), *rev = arg(A, 2, "reverse");
        return sort_list(R, items_of(R, v)->u.l, rev && truthy(rev), cs && truthy(cs), NULL, true);
    }
    if (!strcmp(f, "selectattr")) return do_select(R, v, A, true, true);
    if (!strcmp(f, "rejectattr")) return do_select(R, v, A, true, false);
    if (!strcmp(f, "select")) return do_select(R, v, A, false, true);
    if (!strcmp(f, "reject")) return do_select(R, v, A, false, false);
    if (!strcmp(f, "map")) {
        jlist *l = iter_list(R, v);
        jv *out = mk_list(R, V_LIST, l->n);
        jv *at = arg(A, A->np ? (size_t)-1 : 0, "attribute");
        if (at) {
            if (at->t != V_STR && !is_intlike(at)) RFAIL(R, "map attribute must be a string");
            jv *def = arg(A, (size_t)-1, "default");
            const char *path = at->t == V_STR ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
            for (size_t i = 0; i < l->n; i++) {
                step(R);
                jv *x = path ? get_attr_path(R, l->v[i], path) : get_item(R, l->v[i], at);
                list_push(R, out, x->t == V_UNDEF && def ? def : x);
            }
            return out;
        }
        jv *fn = arg(A, 0, NULL);
        if (!fn || fn->t != V_STR) RFAIL(R, "map needs a filter name or attribute=");
        const char *fname = estrdup(&R->e, fn->u.s.p, fn->u.s.n);
        if (!name_in(fname, FILTER_NAMES)) RFAIL(R, "no filter named '%s'", fname);
        args FA = {0};
        FA.pos = A->pos + 1;
        FA.np = A->np - 1;
        FA.kn = A->kn;
        FA.kv = A->kv;
        FA.nk = A->nk;
        for (size_t i = 0; i < l->n; i++) list_push(R, out, apply_filter(R, fname, l->v[i], &FA));
        return out;
    }
    if (!strcmp(f, "unique")) {
        jlist *l = iter_list(R, v);
        jv *cs = arg(A, 0, "case_sensitive"), *at = arg(A, 1, "attribute");
        const char *path = at && at->t == V_STR ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
        jv *out = mk_list(R, V_LIST, 0), *keys = mk_list(R, V_LIST, 0);
        for (size_t i = 0; i < l->n; i++) {
            jv *k = lower_key(R, path ? get_attr_path(R, l->v[i], path) : l->v[i], cs && truthy(cs));
            if (contains(R, keys, k)) continue;
            list_push(R, keys, k);
            list_push(R, out, l->v[i]);
        }
        return out;
    }
    if (!strcmp(f, "sort")) {
        jv *rev = arg(A, 0, "reverse"), *cs = arg(A, 1, "case_sensitive"), *at = arg(A, 2, "attribute");
        const char *path = at && at->t == V_STR ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
        return sort_list(R, iter_list(R, v), rev && truthy(rev), cs && truthy(cs), path, false);
    }
    if (!strcmp(f, "reverse")) {
        if (v->t == V_STR) return do_slice(R, v, NULL, NULL, mk_int(R, -1));
        jlist *l = iter_list(R, v);
        jv *o = mk_list(R, V_LIST, l->n);
        for (size_t i = l->n; i > 0; i--) list_push(R, o, l->v[i - 1]);
        return o;
    }
    if (!strcmp(f, "sum")) {
        jv *at = arg(A, 0, "attribute"), *acc = arg(A, 1, "start");
        const char *path = at && at->t == V_STR ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
        if (!acc) acc = mk_int(R, 0);
        jlist *l = iter_list(R, v);
        for (size_t i = 0; i < l->n; i++) acc = binop(R, '+', acc, path ? get_attr_path(R, l->v[i], path) : l->v[i]);
        return acc;
    }
    if (!strcmp(f, "min") || !strcmp(f, "max")) {
        jv *cs = arg(A, 0, "case_sensitive"), *at = arg(A, 1, "attribute");
        const char *path = at && at->t == V_STR ? estrdup(&R->e, at->u.s.p, at->u.s.n) : NULL;
        jlist *l = iter_list(R, v);
        if (!l->n) return mk_undef(R, NULL);
        jv *best = l->v[0], *bk = lower_key(R, path ? get_attr_path(R, best, path) : best, cs && truthy(cs));
        for (size_t i = 1; i < l->n; i++) {
            step(R);
            jv *k = lower_key(R, path ? get_attr_path(R, l->v[i], path) : l->v[i], cs && truthy(cs));
            int c = val_cmp(R, k, bk, "<");
            if (f[1] == 'i' ? c < 0 : c > 0) { best = l->v[i]; bk = k; }
        }
        return best;
    }
    if (!strcmp(f, "attr")) {
        jv *n = arg_str(R, A, 0, "name", "attr");
        if (!n) RFAIL(R, "attr needs a name");
        return get_attr(R, v, n->u.s.p, n->u.s.n);
    }
    if (!strcmp(f, "int")) {
        jv *def = arg(A, 0, "default");
        return to_int(R, v, def ? def : mk_int(R, 0));
    }
    if (!strcmp(f, "float")) {
        jv *def = arg(A, 0, "default");
        return to_float(R, v, def ? def : mk_float(R, 0));
    }
    if (!strcmp(f, "abs")) {
        if (v->t == V_INT) {
            if (v->u.i == INT64_MIN) RFAIL(R, "integer overflow");
            return mk_int(R, v->u.i < 0 ? -v->u.i : v->u.i);
        }
        if (v->t == V_BOOL) return mk_int(R, v->u.b);
        if (v->t == V_FLOAT) return mk_float(R, fabs(v->u.f));
        RFAIL(R, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (!strcmp(f, "round")) {
        jv *pr = arg(A, 0, "precision"), *me = arg(A, 1, "method");
        int64_t p = pr && is_intlike(pr) ? num_i(pr) : 0;
        if (p < -20 || p > 20) RFAIL(R, "round precision out of range");
        int method = 'r';
        if (me && me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "ceil")) method = 'c';
        else if (me && me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "floor")) method = 'f';
        else if (me && !(me->t == V_STR && nm_eq(me->u.s.p, me->u.s.n, "common")))
            RFAIL(R, "method must be 'common', 'ceil' or 'floor'");
        if (!is_num(v)) RFAIL(R, "round needs a number, got %s", type_name(v));
        if (is_intlike(v) && method == 'r' && p >= 0) return mk_int(R, num_i(v));
        double x = num_f(v), sc = pow(10.0, (double)p), y;
        if (method == 'c') y = ceil(x * sc) / sc;
        else if (method == 'f') y = floor(x * sc) / sc;
        else y = nearbyint(x * sc) / sc;
        return mk_float(R, y);
    }
    if (!strcmp(f, "wordcount")) {
        v = as_str(R, v);
        int64_t c = 0;
        bool in = false;
        for (size_t i = 0; i < v->u.s.n;) {
            size_t l;
            uint32_t cp = cp_at(v->u.s.p, v->u.s.n, i, &l);
            /* \w: ASCII alphanumerics and _, and non-ASCII except the
             * common punctuation/symbol/emoji blocks (approximation) */
            bool w = cp < 0x80 ? (is_alnum_ascii((char)cp) || cp == '_')
                               : !(py_space(cp) || (cp >= 0x80 && cp <= 0xBF) || (cp >= 0x2000 && cp <= 0x2BFF) ||
                                   (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xE000 && cp <= 0xF8FF) ||
                                   (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF0F) || cp >= 0x1F000);
            if (w && !in) c++;
            in = w;
            i += l;
        }
        return mk_int(R, c);
    }
    if (!strcmp(f, "indent")) return do_indent(R, v, A);
    if (!strcmp(f, "e") || !strcmp(f, "escape") || !strcmp(f, "forceescape")) return do_escape(R, v);
    /* the rest work on the string form */
    jv *s = as_str(R, v);
    if (!strcmp(f, "trim")) return str_strip(R, s, arg(A, 0, "chars"), true, true);
    if (!strcmp(f, "upper")) return str_case(R, s, 'u');
    if (!strcmp(f, "lower")) return str_case(R, s, 'l');
    if (!strcmp(f, "capitalize")) return str_case(R, s, 'c');
    if (!strcmp(f, "title")) return str_case(R, s, 'j');
    if (!strcmp(f, "replace")) {
        jv *o = arg(A, 0, "old"), *nw = arg(A, 1, "new"), *c = arg(A, 2, "count");
        if (!o || !nw) RFAIL(R, "replace needs two arguments");
        return str_replace(R, s, as_str(R, o), as_str(R, nw), c && is_intlike(c) ? num_i(c) : -1);
    }
    if (!strcmp(f, "center")) {
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
    RFAIL(R, "no filter named '%s'", f);
}

/* ---- calls ---- */

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

static jv *call_builtin(rctx *R, int fn, const args *A) {
    switch (fn) {
    case F_RAISE: {
        jv *m = arg(A, 0, "message");
        jv *s = as_str(R, m ? m : mk_strn(R, "", 0));
        R->e.raised = true;
        kn_fail(R->e.err, KN_EINVAL, "%.*s", (int)(s->u.s.n > 500 ? 500 : s->u.s.n), s->u.s.p);
        longjmp(R->e.jb, 1);
    }
    case F_STRFTIME: {
        jv *fmt = arg_str(R, A, 0, "format", "strftime_now");
        if (!fmt) RFAIL(R, "strftime_now needs a format string");
        if (fmt->u.s.n > 256 || memchr(fmt->u.s.p, 0, fmt->u.s.n)) RFAIL(R, "strftime_now format too long");
        char f[260], out[1024];
        memcpy(f, fmt->u.s.p, fmt->u.s.n);
        f[fmt->u.s.n] = 0;
        size_t n = strftime(out, sizeof out, f, &R->now);
        return mk_strcopy(R, out, n);
    }
    case F_RANGE: {
        int64_t a = 0, b, st = 1;
        for (size_t i = 0; i < A->np; i++)
            if (!is_intlike(A->pos[i])) RFAIL(R, "range() arguments must be integers, got %s", type_name(A->pos[i]));
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
    case F_NAMESPACE: case F_DICT: {
        jv *d = mk_dict(R, fn == F_NAMESPACE ? V_NS : V_DICT);
        for (size_t i = 0; i < A->np; i++) {
            jv *p = A->pos[i];
            if (p->t == V_DICT || p->t == V_NS)
                for (size_t k = 0; k < p->u.d->n; k++) dict_set(R, d, p->u.d->k[k], p->u.d->v[k]);
            else RFAIL(R, "%s() positional arguments must be mappings", fn == F_DICT ? "dict" : "namespace");
        }
        for (size_t i = 0; i < A->nk; i++) dict_set(R, d, mk_strn(R, A->kn[i], strlen(A->kn[i])), A->kv[i]);
        return d;
    }
    default: RFAIL(R, "unknown builtin");
    }
}

static jv *call_value(rctx *R, jv *fn, const args *A, jv *caller) {
    switch (fn->t) {
    case V_MACRO: return call_macro(R, fn, A, caller);
    case V_FUNC: return call_builtin(R, fn->u.fn, A);
    case V_METHOD: return call_method(R, fn, A);
    case V_UNDEF:
        if (fn->uname) RFAIL(R, "'%s' is undefined", fn->uname);
        RFAIL(R, "undefined value is not callable");
    default: RFAIL(R, "'%s' object is not callable", type_name(fn));
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
    case N_ATTR: r = get_attr(R, eval(R, x->a), x->s, strlen(x->s)); break;
    case N_ITEM: {
        jv *o = eval(R, x->a);
        r = get_item(R, o, eval(R, x->b));
        break;
    }
    case N_SLICE: {
        jv *o = eval(R, x->a);
        jv *a = x->b ? eval(R, x->b) : NULL, *b = x->c ? eval(R, x->c) : NULL, *c = x->d ? eval(R, x->d) : NULL;
        r = do_slice(R, o, a, b, c);
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
        r = apply_filter(R, x->s, v, &A);
        break;
    }
    case N_TEST: {
        jv *v = eval(R, x->a);
        args A;
        eval_args(R, x, &A);
        R->line = x->line;
        bool t = run_test(R, x->s, v, &A);
        r = mk_bool(R, x->op ? !t : t);
        break;
    }
    case N_BIN: {
        jv *a = eval(R, x->a);
        jv *b = eval(R, x->b);
        R->line = x->line;
        r = binop(R, x->op, a, b);
        break;
    }
    case N_NEG: case N_POS: {
        jv *a = eval(R, x->a);
        if (a->t == V_UNDEF) undef_fail(R, a);
        if (!is_num(a)) RFAIL(R, "bad operand type for unary %c: '%s'", x->k == N_NEG ? '-' : '+', type_name(a));
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
                RFAIL(R, "unhashable type: '%s'", type_name(k));
            dict_set(R, r, k, eval(R, x->l2.v[i]));
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
    if (v->t != V_LIST && v->t != V_TUPLE) RFAIL(R, "cannot unpack non-sequence %s", type_name(v));
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
    jlist *src = iter_list(R, seq);
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
    case N_OUT: to_str(R, eval(R, x->a), R->out); break;
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
            dict_set(R, ns, mk_strn(R, x->a->s, strlen(x->a->s)), v);
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
        to_str(R, call_value(R, fn, &A, caller), R->out);
        break;
    }
    case N_FILTERBLOCK: {
        jv *body = render_to_string(R, &x->l1);
        to_str(R, eval_with_hole(R, x->a, body), R->out);
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
            frame_set(R, R->root, estrdup(&R->e, k, strlen(k)), from_json(R, v, 0));
        }
    }
    if (in->messages) frame_set(R, R->root, "messages", from_json(R, in->messages, 0));
    frame_set(R, R->root, "add_generation_prompt", mk_bool(R, in->add_generation_prompt));
    if (in->bos_token) frame_set(R, R->root, "bos_token", mk_strcopy(R, in->bos_token, strlen(in->bos_token)));
    if (in->eos_token) frame_set(R, R->root, "eos_token", mk_strcopy(R, in->eos_token, strlen(in->eos_token)));
    if (in->tools) frame_set(R, R->root, "tools", from_json(R, in->tools, 0));
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
    ar_free(&R->ar);
    free(R);
    return st;
}
