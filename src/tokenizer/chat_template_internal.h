/*
 * chat_template_internal.h — private to the chat-template engine
 * (chat_template_*.c); kiln/tokenizer.h is its public face.
 *
 * Who owns what:
 *   chat_template_lex.c      source text -> tokens (tags, whitespace control,
 *                            {% raw %}, string-literal escapes)
 *   chat_template_parse.c    tokens -> AST (recursive descent; statements
 *                            through a table of tag names); tok_tmpl_create,
 *                            tok_tmpl_destroy
 *   chat_template_value.c    the arena, the error channel, dicts, JSON input,
 *                            printing (str(), repr(), json.dumps), equality
 *                            and ordering, iteration
 *   chat_template_eval.c     expressions and statements: scopes, attribute
 *                            and item access, slicing, operators, calls,
 *                            macros, loops; tok_tmpl_render
 *   chat_template_methods.c  str and dict methods (a table per type) and the
 *                            string helpers the filters share
 *   chat_template_filters.c  the named built-ins: filters, tests and global
 *                            functions, each a table of name -> function
 *
 * Invariants:
 *   - Memory: everything a parse or a render allocates comes from one arena
 *     (the template's, or the render's) and is freed with it in one go, so
 *     an error can unwind from anywhere without leaking. Values (jv) are
 *     shared freely and never freed one by one; the few that are mutated in
 *     place (lists being built, dicts, namespaces, scopes) are only mutated
 *     by their builder or by an explicit `set`.
 *   - Errors: tmpl_fail (RFAIL at render time) fills kn_err with
 *     "template line N: ..." and longjmps to the one setjmp of the entry
 *     point (tok_tmpl_create, render_guarded). Nothing between holds a
 *     resource outside the arena.
 *   - The template (tokens, AST, literals) is immutable after
 *     tok_tmpl_create: renders only read it, so they may run concurrently.
 *   - Bounded recursion: the parser nests at most TMPL_PARSE_MAX_DEPTH
 *     levels; the renderer counts depth (expressions, statements, macro
 *     calls, printing nested values) against limits.max_depth; JSON input
 *     nests at most 512 levels.
 *   - Bounded work: every statement, loop iteration, filter and collection
 *     item calls step(); scans that allocate nothing charge work() by size;
 *     output strings are capped at limits.max_output and the arena at
 *     limits.max_memory. Code moved between these files must keep the same
 *     step()/work() calls, since the step count decides when a render fails.
 *
 * Names: functions shared between the files carry the prefix tmpl_ (the
 * public API is tok_tmpl_); small hot helpers are static inline below;
 * everything else is static in its file.
 */
#ifndef KILN_TOKENIZER_CHAT_TEMPLATE_INTERNAL_H
#define KILN_TOKENIZER_CHAT_TEMPLATE_INTERNAL_H

#include "kiln/tokenizer.h"

#include <setjmp.h>
#include <stdint.h>
#include <string.h>

/* ======================================================================
 * arena and error channel (chat_template_value.c)
 * ====================================================================== */

typedef struct ar_chunk {
    struct ar_chunk *next;
    size_t used, cap;
    max_align_t data[];
} ar_chunk;

typedef struct arena {
    ar_chunk *head;
    size_t total, cap; /* bytes held; the most it may hold */
} arena;

/* n bytes (16-aligned, not zeroed), or NULL when over the cap or out of
 * memory. */
void *tmpl_arena_alloc(arena *a, size_t n);
void tmpl_arena_free(arena *a); /* frees every chunk; a stays usable */

typedef struct ectx {
    jmp_buf jb;
    kn_err *err;
    bool raised; /* the error came from raise_exception */
    arena *ar;
} ectx;

/* Fills e->err with "template line N: <fmt>" ("template: <fmt>" when line
 * is 0) and longjmps to e->jb. */
_Noreturn void tmpl_fail(ectx *e, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* n zeroed bytes from e->ar; fails (never returns NULL) when over the limit. */
void *tmpl_alloc(ectx *e, size_t n);
/* A NUL-terminated copy of s[0..n) in e->ar. */
char *tmpl_strdup(ectx *e, const char *s, size_t n);
/* Growing an array: a new zeroed array of cap elements of `size` bytes
 * holding a copy of old[0..n) (the old one stays in the arena). */
void *tmpl_regrow(ectx *e, const void *old, size_t n, size_t cap, size_t size);

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
typedef struct rctx rctx;
typedef struct args args;
typedef struct tmpl_method tmpl_method;

/* A global function (range, namespace, ...): the result, or RFAIL. */
typedef jv *(*tmpl_global_fn)(rctx *R, const args *A);

typedef struct jlist {
    jv **v;
    size_t n, cap;
} jlist;

/* Insertion-ordered; keys compared with tmpl_val_eq (linear scan). */
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
            const char *p; /* not NUL-terminated in general */
            size_t n;
        } s;
        jlist *l;  /* V_LIST, V_TUPLE */
        jdict *d;  /* V_DICT, V_NS */
        loopinfo *loop;
        struct {
            node *n;   /* the N_MACRO node */
            frame *fr; /* the scope it was defined in */
        } mac;
        tmpl_global_fn fn; /* V_FUNC */
        struct {
            jv *self;
            const tmpl_method *def;
        } m; /* V_METHOD: a method bound to self */
    } u;
    const char *uname; /* V_UNDEF: what was looked up, for messages */
};

/* ======================================================================
 * tokens (chat_template_lex.c) and the AST (chat_template_parse.c)
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

/* Lexes s[0..n) (newlines already normalized) into tokens ending with
 * T_EOF; the array lives in e->ar. */
tok *tmpl_lex(ectx *e, const char *s, size_t n, size_t *ntok);

static inline bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static inline bool is_alpha_(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool is_alnum_ascii(char c) { return is_alpha_(c) ? c != '_' : is_digit(c); }

static inline bool tok_is_name(const tok *k, const char *name) {
    return k->t == T_NAME && k->n == strlen(name) && !memcmp(k->p, name, k->n);
}

enum {
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK, N_BREAK, N_CONTINUE,
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS, N_NOT,
    N_AND, N_OR, N_COND, N_LIST, N_TUPLE, N_DICT
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

#define TMPL_PARSE_MAX_DEPTH 128

/* Parses tokens t[0..n) (ending with T_EOF) into the template body. */
nlist tmpl_parse(ectx *e, tok *t, size_t n);

struct tok_tmpl {
    arena ar; /* holds src, the tokens and the AST */
    char *src;
    size_t len;
    nlist body;
};

/* ======================================================================
 * render state (chat_template_eval.c)
 * ====================================================================== */

struct frame {
    frame *parent;
    const char **k;
    jv **v;
    size_t n, cap;
};

typedef struct sbuf {
    char *p; /* NUL-terminated once anything was put; arena memory */
    size_t n, cap;
} sbuf;

/* Evaluated call arguments: positional pos[0..np), keyword kn[i] = kv[i]. */
struct args {
    jv **pos;
    size_t np;
    const char **kn;
    jv **kv;
    size_t nk;
};

/* One render: calloc'd by tok_tmpl_render, everything else in ar. */
struct rctx {
    ectx e;
    arena ar;
    size_t max_output, max_steps; /* the limits in force */
    int max_depth;
    size_t steps; /* step() count so far */
    int depth;    /* current recursion depth */
    int brk;      /* 1 break, 2 continue: unwinding to the enclosing loop */
    int line;     /* template line being evaluated, for messages */
    frame *root, *cur; /* the inputs' scope; the innermost scope */
    sbuf *out;         /* where text goes (result, or a capture) */
    jv *none, *vtrue, *vfalse, *undef; /* shared constants */
    jv *hole;          /* the operand of an operand-less filter chain ({% filter %}, {% set %} blocks) */
    struct tm now;     /* strftime_now's instant */
    const tok_tmpl *tmpl;
    const tok_tmpl_inputs *in;
    sbuf result;
};

#define RFAIL(R, ...) tmpl_fail(&(R)->e, (R)->line, __VA_ARGS__)

static inline void *ralloc(rctx *R, size_t n) { return tmpl_alloc(&R->e, n); }

static inline void step(rctx *R) {
    if (++R->steps > R->max_steps) RFAIL(R, "template too expensive to render (more than %zu steps)", R->max_steps);
}

/* Charges scans that allocate nothing (searching, comparing, measuring big
 * strings, long key lists): one step per 256 bytes. */
static inline void work(rctx *R, size_t bytes) {
    R->steps += bytes >> 8;
    step(R);
}

/* ---- buffers ---- */

/* Grows b for `extra` more bytes (and a NUL); fails past max_output. */
void tmpl_sb_grow(rctx *R, sbuf *b, size_t extra);

static inline void sb_reserve(rctx *R, sbuf *b, size_t extra) {
    if (extra > R->max_output || b->n + extra > R->max_output || b->n + extra + 1 > b->cap)
        tmpl_sb_grow(R, b, extra);
}

static inline void sb_put(rctx *R, sbuf *b, const char *s, size_t n) {
    if (!n) return;
    sb_reserve(R, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static inline void sb_puts(rctx *R, sbuf *b, const char *s) { sb_put(R, b, s, strlen(s)); }

static inline void sb_putc(rctx *R, sbuf *b, char c) { sb_put(R, b, &c, 1); }

/* ---- constructors ---- */

static inline jv *mk(rctx *R, int t) {
    jv *v = ralloc(R, sizeof *v);
    v->t = t;
    return v;
}

static inline jv *mk_int(rctx *R, int64_t i) {
    jv *v = mk(R, V_INT);
    v->u.i = i;
    return v;
}

static inline jv *mk_float(rctx *R, double f) {
    jv *v = mk(R, V_FLOAT);
    v->u.f = f;
    return v;
}

static inline jv *mk_bool(rctx *R, bool b) { return b ? R->vtrue : R->vfalse; }

/* A string over p[0..n) (borrowed: p must live as long as the render). */
static inline jv *mk_strn(rctx *R, const char *p, size_t n) {
    jv *v = mk(R, V_STR);
    v->u.s.p = p;
    v->u.s.n = n;
    return v;
}

static inline jv *mk_strcopy(rctx *R, const char *p, size_t n) {
    if (n > R->max_output) RFAIL(R, "string too large (limit %zu bytes)", R->max_output);
    return mk_strn(R, tmpl_strdup(&R->e, p, n), n);
}

static inline jv *mk_sb(rctx *R, sbuf *b) { return mk_strn(R, b->p ? b->p : "", b->n); }

static inline jv *mk_undef(rctx *R, const char *name) {
    jv *v = mk(R, V_UNDEF);
    v->uname = name;
    return v;
}

static inline jv *mk_list(rctx *R, int t, size_t cap) {
    jv *v = mk(R, t);
    v->u.l = ralloc(R, sizeof(jlist));
    if (cap) {
        v->u.l->v = ralloc(R, cap * sizeof(jv *));
        v->u.l->cap = cap;
    }
    return v;
}

static inline void list_push(rctx *R, jv *l, jv *x) {
    jlist *L = l->u.l;
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 4;
        L->v = tmpl_regrow(&R->e, L->v, L->n, cap, sizeof(jv *));
        L->cap = cap;
    }
    L->v[L->n++] = x;
}

static inline jv *mk_dict(rctx *R, int t) {
    jv *v = mk(R, t);
    v->u.d = ralloc(R, sizeof(jdict));
    return v;
}

static inline bool str_eq(const jv *a, const char *p, size_t n) {
    return a->t == V_STR && a->u.s.n == n && !memcmp(a->u.s.p, p, n);
}

/* p[0..n) equals the NUL-terminated lit */
static inline bool nm_eq(const char *p, size_t n, const char *lit) {
    return n == strlen(lit) && !memcmp(p, lit, n);
}

/* ---- dicts (chat_template_value.c) ---- */

jv **tmpl_dict_slot(rctx *R, jdict *d, const jv *key); /* the value's slot, or NULL */
jv *tmpl_dict_get(const jdict *d, const char *p, size_t n); /* by string key, or NULL */
void tmpl_dict_append(rctx *R, jv *dv, jv *key, jv *val); /* key known absent */
void tmpl_dict_set(rctx *R, jv *dv, jv *key, jv *val);

/* A value from JSON (copied into the arena). */
jv *tmpl_from_json(rctx *R, const json_t *j, int depth);

/* ---- UTF-8 (code point = a byte that is not a continuation byte) ---- */

static inline bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

static inline size_t cp_count(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += !is_cont((unsigned char)p[i]);
    return c;
}

/* offsets of every code point plus n at the end; *cnt = code points */
size_t *tmpl_cp_offsets(rctx *R, const char *p, size_t n, size_t *cnt);

/* The code point at p[i] (lenient) and its length in bytes. */
static inline uint32_t cp_at(const char *p, size_t n, size_t i, size_t *len) {
    unsigned char c = (unsigned char)p[i];
    size_t need = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t cp = need == 0 ? c : need == 1 ? (c & 0x1F) : need == 2 ? (c & 0x0F) : (c & 0x07);
    size_t j = 1;
    for (; j <= need && i + j < n && is_cont((unsigned char)p[i + j]); j++) cp = (cp << 6) | ((unsigned char)p[i + j] & 63);
    *len = j;
    return cp;
}

/* Python's str.isspace() for one code point */
static inline bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- printing (chat_template_value.c) ---- */

void tmpl_to_str(rctx *R, const jv *v, sbuf *b); /* str(v) appended to b */
jv *tmpl_as_str(rctx *R, jv *v);                 /* v itself when a string */
const char *tmpl_type_name(const jv *v);         /* Python's type name */

/* json.dumps options: indent < 0 means None; separators; sort_keys */
typedef struct jopts {
    int indent;
    const char *item_sep, *key_sep;
    size_t item_n, key_n;
    bool sort_keys, ascii;
} jopts;

void tmpl_to_json(rctx *R, const jv *v, const jopts *o, int level, sbuf *b);

/* ---- truth, equality, ordering ---- */

static inline bool truthy(const jv *v) {
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

static inline bool is_num(const jv *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static inline double num_f(const jv *v) {
    return v->t == V_FLOAT ? v->u.f : v->t == V_INT ? (double)v->u.i : (double)v->u.b;
}
static inline bool is_intlike(const jv *v) { return v->t == V_INT || v->t == V_BOOL; }
static inline int64_t num_i(const jv *v) {
    if (v->t == V_INT) return v->u.i;
    if (v->t == V_BOOL) return v->u.b;
    return v->u.f > -9.2e18 && v->u.f < 9.2e18 ? (int64_t)v->u.f : 0; /* only used on int-likes */
}

bool tmpl_val_eq(rctx *R, const jv *a, const jv *b);
/* <0, 0, >0; op names the operator in the error for unorderable types */
int tmpl_val_cmp(rctx *R, const jv *a, const jv *b, const char *op);
_Noreturn void tmpl_undef_fail(rctx *R, const jv *v);

/* A list view of anything iterable (a dict gives its keys, a string its
 * code points, undefined nothing). */
jlist *tmpl_iter_list(rctx *R, jv *v);

/* ======================================================================
 * evaluation helpers (chat_template_eval.c)
 * ====================================================================== */

jv *tmpl_get_attr(rctx *R, jv *obj, const char *name, size_t nlen); /* obj.name */
jv *tmpl_get_attr_path(rctx *R, jv *obj, const char *path);         /* "a.b.0" */
jv *tmpl_get_item(rctx *R, jv *obj, jv *key);                       /* obj[key] */
jv *tmpl_slice(rctx *R, jv *obj, jv *a, jv *b, jv *c);              /* obj[a:b:c], NULL = omitted */
bool tmpl_contains(rctx *R, jv *hay, jv *needle);                   /* needle in hay */
jv *tmpl_binop(rctx *R, int op, jv *a, jv *b);

/* positional i, or keyword `name` (NULL name: positional only); NULL if
 * absent */
static inline jv *arg(const args *A, size_t i, const char *name) {
    if (i < A->np) return A->pos[i];
    if (name)
        for (size_t k = 0; k < A->nk; k++)
            if (!strcmp(A->kn[k], name)) return A->kv[k];
    return NULL;
}

static inline jv *arg_str(rctx *R, const args *A, size_t i, const char *name, const char *what) {
    jv *v = arg(A, i, name);
    if (!v) return NULL;
    if (v->t != V_STR) RFAIL(R, "%s expects a string argument, got %s", what, tmpl_type_name(v));
    return v;
}

/* ======================================================================
 * methods (chat_template_methods.c)
 * ====================================================================== */

struct tmpl_method {
    const char *name;
    jv *(*fn)(rctx *R, jv *self, const args *A);
};

/* The method `name` (not NUL-terminated) of values of type t, or NULL. */
const tmpl_method *tmpl_method_find(int t, const char *name, size_t n);

/* String helpers shared with the filters. */
jv *tmpl_str_strip(rctx *R, jv *s, jv *chars, bool left, bool right); /* chars: NULL/None = whitespace */
/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' Python str.title, 'j' Jinja's title filter */
jv *tmpl_str_case(rctx *R, jv *s, char mode);
jv *tmpl_str_replace(rctx *R, jv *s, jv *old, jv *nw, int64_t count); /* count < 0: all */
jv *tmpl_join(rctx *R, jv *seq, jv *sep, const char *attribute);       /* sep, attribute may be NULL */
jv *tmpl_splitlines(rctx *R, jv *s);
jv *tmpl_items(rctx *R, jv *d); /* a dict's (key, value) tuples */

/* ======================================================================
 * named built-ins (chat_template_filters.c)
 * ====================================================================== */

/* `v | name(A)`; fails on an unknown name. */
jv *tmpl_apply_filter(rctx *R, const char *name, jv *v, const args *A);
/* `v is name(A)`; fails on an unknown name. */
bool tmpl_run_test(rctx *R, const char *name, jv *v, const args *A);
/* The global function `name`, or NULL. */
tmpl_global_fn tmpl_global_find(const char *name);

#endif
