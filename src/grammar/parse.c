/*
 * parse.c — GBNF text to a compiled gram (see kiln/grammar.h for the
 * syntax and grammar/internal.h for the compiled form).
 *
 * A recursive-descent parser in the shape of llama.cpp's: each rule's
 * alternatives become elements; a parenthesized group becomes a helper rule
 * "<rule>_<n>"; a repetition x{m,n} becomes m copies of x followed by a
 * chain of n-m optional helper rules (x* and x{m,} by one right-recursive
 * helper), exactly as llama.cpp expands them. After parsing: every
 * referenced rule must be defined, the root must exist, and no rule may be
 * left recursive (directly, or through rules that can match nothing), which
 * is what guarantees that the matcher's expansion of a stack terminates.
 *
 * Bounds: GRAM_MAX_TEXT bytes, GRAM_MAX_RULES rules, GRAM_MAX_ELEMS
 * elements, GRAM_MAX_REPEAT for a repetition count, GRAM_MAX_NESTING for
 * parentheses. No globals; everything lives in the parser struct.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct evec {
    gram_elem *p; /* [n] owned */
    uint32_t n, cap;
} evec;

typedef struct prule {
    char *name; /* owned, NUL-terminated */
    evec body;
    bool defined;
    uint32_t ref_at; /* offset of the first reference (for "undefined rule") */
    uint32_t def_at; /* offset of the definition */
    uint32_t n_gen;  /* helper rules generated from this one */
    bool helper;     /* made by the compiler for a group or a repetition */
    uint32_t parent; /* a helper's rule */
} prule;

#define NAME_HT_CAP (GRAM_MAX_RULES * 2u)

typedef struct parser {
    const char *src; /* [len + 1] NUL-terminated copy */
    size_t len;
    kn_err *err;
    kn_status st;
    prule *rules; /* [n_rules] */
    uint32_t n_rules, cap_rules;
    uint32_t *ht; /* [NAME_HT_CAP] rule id + 1, 0 = empty */
    uint64_t n_elems;
    unsigned depth;
} parser;

/* ---- errors ---------------------------------------------------------------- */

static void line_col(const parser *ps, size_t off, unsigned *line, unsigned *col) {
    unsigned l = 1, c = 1;
    for (size_t i = 0; i < off && i < ps->len; i++) {
        unsigned char ch = (unsigned char)ps->src[i];
        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

__attribute__((format(printf, 4, 5))) static bool fail_at(parser *ps, kn_status st, const char *at,
                                                          const char *fmt, ...) {
    if (ps->st != KN_OK) return false;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned l, c;
    line_col(ps, (size_t)(at - ps->src), &l, &c);
    ps->st = kn_fail(ps->err, st, "grammar: %s at %u:%u", msg, l, c);
    return false;
}

/* ---- element vectors and rules ---------------------------------------------------- */

static bool ev_push(parser *ps, evec *v, uint32_t type, uint32_t value, const char *at) {
    if (ps->n_elems >= GRAM_MAX_ELEMS)
        return fail_at(ps, KN_ERANGE, at, "grammar too large (over %u elements)", GRAM_MAX_ELEMS);
    if (v->n == v->cap) {
        uint32_t nc = v->cap ? v->cap * 2 : 16;
        gram_elem *np = realloc(v->p, (size_t)nc * sizeof *np);
        if (!np) return fail_at(ps, KN_ENOMEM, at, "out of memory");
        v->p = np;
        v->cap = nc;
    }
    v->p[v->n++] = (gram_elem){type, value};
    ps->n_elems++;
    return true;
}

static uint32_t name_slot(const char *name, size_t n) {
    return (uint32_t)(XXH3_64bits(name, n) & (NAME_HT_CAP - 1));
}

static bool new_rule(parser *ps, const char *name, size_t n, const char *at, uint32_t *id) {
    if (ps->n_rules >= GRAM_MAX_RULES)
        return fail_at(ps, KN_ERANGE, at, "too many rules (over %u, counting helpers)", GRAM_MAX_RULES);
    if (ps->n_rules == ps->cap_rules) {
        uint32_t nc = ps->cap_rules ? ps->cap_rules * 2 : 32;
        prule *np = realloc(ps->rules, (size_t)nc * sizeof *np);
        if (!np) return fail_at(ps, KN_ENOMEM, at, "out of memory");
        ps->rules = np;
        ps->cap_rules = nc;
    }
    char *copy = malloc(n + 1);
    if (!copy) return fail_at(ps, KN_ENOMEM, at, "out of memory");
    memcpy(copy, name, n);
    copy[n] = 0;
    uint32_t h = name_slot(name, n);
    while (ps->ht[h])
        h = (h + 1) & (NAME_HT_CAP - 1);
    ps->ht[h] = ps->n_rules + 1;
    ps->rules[ps->n_rules] = (prule){.name = copy, .ref_at = UINT32_MAX, .def_at = UINT32_MAX};
    *id = ps->n_rules++;
    return true;
}

/* The id of rule `name`, created (undefined) on first sight. */
static bool rule_id(parser *ps, const char *name, size_t n, const char *at, uint32_t *id) {
    for (uint32_t h = name_slot(name, n); ps->ht[h]; h = (h + 1) & (NAME_HT_CAP - 1)) {
        const prule *r = &ps->rules[ps->ht[h] - 1];
        if (strlen(r->name) == n && memcmp(r->name, name, n) == 0) {
            *id = ps->ht[h] - 1;
            return true;
        }
    }
    return new_rule(ps, name, n, at, id);
}

/* A fresh helper rule named "<parent>_<n>" (defined by the caller). */
static bool gen_rule(parser *ps, uint32_t parent, const char *at, uint32_t *id) {
    char name[160];
    for (;;) {
        int k = snprintf(name, sizeof name, "%.120s_%u", ps->rules[parent].name, ++ps->rules[parent].n_gen);
        bool exists = false;
        for (uint32_t h = name_slot(name, (size_t)k); ps->ht[h]; h = (h + 1) & (NAME_HT_CAP - 1)) {
            if (strcmp(ps->rules[ps->ht[h] - 1].name, name) == 0) {
                exists = true;
                break;
            }
        }
        if (!exists) {
            if (!new_rule(ps, name, (size_t)k, at, id)) return false;
            ps->rules[*id].defined = true;
            ps->rules[*id].helper = true;
            ps->rules[*id].parent = parent;
            ps->rules[*id].def_at = (uint32_t)(at - ps->src);
            return true;
        }
    }
}

/* ---- lexing -------------------------------------------------------------------- */

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips blanks and comments; newlines too when newline_ok. */
static const char *skip_space(const char *p, bool newline_ok) {
    for (;;) {
        if (*p == ' ' || *p == '\t') {
            p++;
        } else if (*p == '#') {
            while (*p && *p != '\n' && *p != '\r')
                p++;
        } else if (newline_ok && (*p == '\n' || *p == '\r')) {
            p++;
        } else {
            return p;
        }
    }
}

static const char *word_end(const char *p) {
    while (is_word(*p))
        p++;
    return p;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class at *pp (an escape or a UTF-8
 * sequence); advances *pp. */
static bool parse_char(parser *ps, const char **pp, uint32_t *cp) {
    const char *p = *pp;
    if (*p == '\\') {
        int nhex = 0;
        switch (p[1]) {
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        case 'n': *cp = '\n'; break;
        case 'r': *cp = '\r'; break;
        case 't': *cp = '\t'; break;
        case '\\':
        case '"':
        case '\'':
        case '[':
        case ']':
        case '-':
        case '^': *cp = (unsigned char)p[1]; break;
        case 0: return fail_at(ps, KN_EINVAL, p, "unexpected end of input after '\\'");
        default: return fail_at(ps, KN_EINVAL, p, "unknown escape '\\%c'", p[1]);
        }
        if (!nhex) {
            *pp = p + 2;
            return true;
        }
        uint32_t v = 0;
        for (int i = 0; i < nhex; i++) {
            int h = hexval(p[2 + i]);
            if (h < 0) return fail_at(ps, KN_EINVAL, p, "expecting %d hex digits after '\\%c'", nhex, p[1]);
            v = (v << 4) | (uint32_t)h;
        }
        if (v > 0x10FFFF) return fail_at(ps, KN_EINVAL, p, "code point U+%X is out of range", v);
        *cp = v;
        *pp = p + 2 + nhex;
        return true;
    }
    gram_u8 u = {0};
    for (;;) {
        int r = gram_u8_feed(&u, (uint8_t)*p);
        if (r == GRAM_U8_BAD) return fail_at(ps, KN_EINVAL, *pp, "invalid UTF-8 in grammar text");
        p++;
        if (r == GRAM_U8_DONE) break;
    }
    *cp = u.cp;
    *pp = p;
    return true;
}

static bool parse_int(parser *ps, const char **pp, uint32_t *out) {
    const char *p = *pp;
    if (*p < '0' || *p > '9') return fail_at(ps, KN_EINVAL, p, "expecting a number");
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > GRAM_MAX_REPEAT)
            return fail_at(ps, KN_ERANGE, *pp, "repetition count over the limit of %u", GRAM_MAX_REPEAT);
        p++;
    }
    *out = (uint32_t)v;
    *pp = p;
    return true;
}

/* ---- grammar ------------------------------------------------------------------- */

static bool parse_alternates(parser *ps, const char **pp, uint32_t rule, bool nested);

/* Replaces out[start..n) (the last item) by its repetition {min,max}
 * (max == UINT32_MAX: unbounded), as llama.cpp's handle_repetitions does. */
static bool repeat(parser *ps, evec *out, uint32_t start, uint32_t min, uint32_t max, uint32_t rule,
                   const char *at) {
    uint32_t n = out->n - start;
    gram_elem *prev = malloc((size_t)n * sizeof *prev);
    if (!prev) return fail_at(ps, KN_ENOMEM, at, "out of memory");
    memcpy(prev, out->p + start, (size_t)n * sizeof *prev);
    bool ok = true;
    if (min == 0) {
        ps->n_elems -= n;
        out->n = start;
    }
    for (uint32_t i = 1; ok && i < min; i++)
        for (uint32_t j = 0; ok && j < n; j++)
            ok = ev_push(ps, out, prev[j].type, prev[j].value, at);
    uint32_t n_opt = max == UINT32_MAX ? 1 : max - min, last = 0;
    for (uint32_t i = 0; ok && i < n_opt; i++) {
        uint32_t id;
        if (!(ok = gen_rule(ps, rule, at, &id))) break;
        evec rec = {0};
        for (uint32_t j = 0; ok && j < n; j++)
            ok = ev_push(ps, &rec, prev[j].type, prev[j].value, at);
        if (ok && (i > 0 || max == UINT32_MAX))
            ok = ev_push(ps, &rec, GE_REF, max == UINT32_MAX ? id : last, at);
        if (ok) ok = ev_push(ps, &rec, GE_ALT, 0, at) && ev_push(ps, &rec, GE_END, 0, at);
        ps->rules[id].body = rec; /* freed with the rules, even on failure */
        last = id;
    }
    if (ok && n_opt > 0) ok = ev_push(ps, out, GE_REF, last, at);
    free(prev);
    return ok;
}

/* A class [..] at *pp (on the '['). */
static bool parse_class(parser *ps, const char **pp, evec *out) {
    const char *p = *pp + 1, *open = *pp;
    uint32_t type = GE_CHAR;
    if (*p == '^') {
        p++;
        type = GE_CHAR_NOT;
    }
    bool any = false;
    while (*p != ']') {
        if (!*p) return fail_at(ps, KN_EINVAL, open, "unterminated character class");
        if (*p == '\n' || *p == '\r') return fail_at(ps, KN_EINVAL, open, "unterminated character class");
        uint32_t lo, hi;
        const char *at = p;
        if (!parse_char(ps, &p, &lo)) return false;
        if (!ev_push(ps, out, any ? GE_CHAR_ALT : type, lo, at)) return false;
        any = true;
        if (p[0] == '-' && p[1] != ']' && p[1]) {
            p++;
            if (!parse_char(ps, &p, &hi)) return false;
            if (hi < lo) return fail_at(ps, KN_EINVAL, at, "character range is backwards");
            if (!ev_push(ps, out, GE_RNG_UPPER, hi, at)) return false;
        }
    }
    if (!any) return fail_at(ps, KN_EINVAL, open, "empty character class");
    *pp = p + 1;
    return true;
}

static bool parse_sequence(parser *ps, const char **pp, uint32_t rule, evec *out, bool nested) {
    const char *p = *pp;
    uint32_t last = UINT32_MAX; /* start of the last item, for postfix operators */
    while (*p) {
        const char *at = p;
        if (*p == '"') {
            last = out->n;
            p++;
            while (*p != '"') {
                if (!*p || *p == '\n' || *p == '\r') return fail_at(ps, KN_EINVAL, at, "unterminated string");
                const char *c_at = p;
                uint32_t cp;
                if (!parse_char(ps, &p, &cp) || !ev_push(ps, out, GE_CHAR, cp, c_at)) return false;
            }
            p = skip_space(p + 1, nested);
        } else if (*p == '[') {
            last = out->n;
            if (!parse_class(ps, &p, out)) return false;
            p = skip_space(p, nested);
        } else if (*p == '.') {
            last = out->n;
            if (!ev_push(ps, out, GE_ANY, 0, at)) return false;
            p = skip_space(p + 1, nested);
        } else if (is_word(*p)) {
            const char *e = word_end(p);
            uint32_t id;
            if (!rule_id(ps, p, (size_t)(e - p), at, &id)) return false;
            if (ps->rules[id].ref_at == UINT32_MAX) ps->rules[id].ref_at = (uint32_t)(at - ps->src);
            last = out->n;
            if (!ev_push(ps, out, GE_REF, id, at)) return false;
            p = skip_space(e, nested);
        } else if (*p == '(') {
            if (ps->depth >= GRAM_MAX_NESTING)
                return fail_at(ps, KN_ERANGE, at, "parentheses nested deeper than %u", GRAM_MAX_NESTING);
            uint32_t id;
            if (!gen_rule(ps, rule, at, &id)) return false;
            p = skip_space(p + 1, true);
            ps->depth++;
            bool ok = parse_alternates(ps, &p, id, true);
            ps->depth--;
            if (!ok) return false;
            if (*p != ')') return fail_at(ps, KN_EINVAL, at, "expecting ')' to close this '('");
            last = out->n;
            if (!ev_push(ps, out, GE_REF, id, at)) return false;
            p = skip_space(p + 1, nested);
        } else if (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
            if (last == UINT32_MAX || last == out->n)
                return fail_at(ps, KN_EINVAL, at, "expecting an item before '%c'", *p);
            uint32_t min = 0, max = UINT32_MAX;
            if (*p == '{') {
                p = skip_space(p + 1, nested);
                if (!parse_int(ps, &p, &min)) return false;
                p = skip_space(p, nested);
                if (*p == ',') {
                    p = skip_space(p + 1, nested);
                    if (*p != '}') {
                        if (!parse_int(ps, &p, &max)) return false;
                        p = skip_space(p, nested);
                    }
                } else {
                    max = min;
                }
                if (*p != '}') return fail_at(ps, KN_EINVAL, at, "expecting '}' to close this '{'");
                if (max < min)
                    return fail_at(ps, KN_EINVAL, at, "repetition {%u,%u} has max < min", min, max);
            } else if (*p == '+') {
                min = 1;
            } else if (*p == '?') {
                max = 1;
            }
            if (!repeat(ps, out, last, min, max, rule, at)) return false;
            p = skip_space(p + 1, nested);
            last = UINT32_MAX; /* x** is an error, as in llama.cpp */
        } else {
            break;
        }
    }
    *pp = p;
    return true;
}

static bool parse_alternates(parser *ps, const char **pp, uint32_t rule, bool nested) {
    evec out = {0};
    const char *p = *pp;
    bool ok = parse_sequence(ps, &p, rule, &out, nested);
    while (ok && *p == '|') {
        ok = ev_push(ps, &out, GE_ALT, 0, p);
        p = skip_space(p + 1, true);
        if (ok) ok = parse_sequence(ps, &p, rule, &out, nested);
    }
    if (ok) ok = ev_push(ps, &out, GE_END, 0, p);
    free(ps->rules[rule].body.p); /* a helper is defined once; a named rule twice is an error before this */
    ps->rules[rule].body = out;
    *pp = p;
    return ok;
}

static bool parse_rule(parser *ps, const char **pp) {
    const char *p = *pp, *name = p;
    if (!is_word(*p)) return fail_at(ps, KN_EINVAL, p, "expecting a rule name");
    const char *e = word_end(p);
    uint32_t id;
    if (!rule_id(ps, name, (size_t)(e - name), name, &id)) return false;
    if (ps->rules[id].defined) {
        unsigned l, c;
        line_col(ps, ps->rules[id].def_at, &l, &c);
        return fail_at(ps, KN_EINVAL, name, "rule '%s' defined again (first at %u:%u)", ps->rules[id].name, l,
                       c);
    }
    ps->rules[id].defined = true;
    ps->rules[id].def_at = (uint32_t)(name - ps->src);
    p = skip_space(e, false);
    if (!(p[0] == ':' && p[1] == ':' && p[2] == '=')) return fail_at(ps, KN_EINVAL, p, "expecting '::='");
    p = skip_space(p + 3, true);
    if (!parse_alternates(ps, &p, id, false)) return false;
    if (*p == '\r') p++;
    if (*p == '\n') {
        p++;
    } else if (*p) {
        if (*p == ')') return fail_at(ps, KN_EINVAL, p, "unmatched ')'");
        return fail_at(ps, KN_EINVAL, p, "unexpected '%c' (expecting the end of the rule)", *p);
    }
    *pp = skip_space(p, true);
    return true;
}

/* ---- checks ---------------------------------------------------------------------- */

/* A least fixpoint over the rules by a work list (linear; passes would be
 * quadratic on a chain of rules). An alternative waits for its rule
 * references; a rule is marked once one of its alternatives has no
 * reference left waiting. With chars_block, an alternative that has a
 * character can never be marked: mark[r] = r can match the empty string.
 * Without it, characters do not matter: mark[r] = r has a finite
 * derivation (some sentence of r exists). */
static bool rule_fixpoint(parser *ps, bool *nullable, bool chars_block) {
    uint32_t n = ps->n_rules, n_alts = 0, n_occ = 0;
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t i = 0; i < ps->rules[r].body.n; i++) {
            n_alts += gram_is_end(&ps->rules[r].body.p[i]);
            n_occ += ps->rules[r].body.p[i].type == GE_REF;
        }
    uint32_t *wait = malloc(((size_t)n_alts + 1) * sizeof *wait); /* per alternative: refs not yet nullable */
    uint32_t *alt_rule = malloc(((size_t)n_alts + 1) * sizeof *alt_rule);
    uint32_t *occ_lo = calloc((size_t)n + 2, sizeof *occ_lo);  /* occurrences of rule q: occ[occ_lo[q]..] */
    uint32_t *occ = malloc(((size_t)n_occ + 1) * sizeof *occ); /* the alternative of each occurrence */
    uint32_t *queue = malloc(((size_t)n + 1) * sizeof *queue);
    bool ok = wait && alt_rule && occ_lo && occ && queue;
    if (ok) {
        /* count refs per alternative (UINT32_MAX: has a character) and occurrences per rule */
        uint32_t a = 0;
        for (uint32_t r = 0; r < n; r++) {
            const evec *b = &ps->rules[r].body;
            wait[a] = 0;
            for (uint32_t i = 0; i < b->n; i++) {
                const gram_elem *el = &b->p[i];
                if (gram_is_end(el)) {
                    alt_rule[a++] = r;
                    if (a < n_alts) wait[a] = 0;
                } else if (el->type == GE_REF) {
                    if (wait[a] != UINT32_MAX) wait[a]++;
                    occ_lo[el->value + 2]++;
                } else if (chars_block) {
                    wait[a] = UINT32_MAX;
                }
            }
        }
        for (uint32_t q = 0; q < n; q++)
            occ_lo[q + 2] += occ_lo[q + 1];
        a = 0;
        for (uint32_t r = 0; r < n; r++) {
            const evec *b = &ps->rules[r].body;
            for (uint32_t i = 0; i < b->n; i++) {
                if (gram_is_end(&b->p[i]))
                    a++;
                else if (b->p[i].type == GE_REF)
                    occ[occ_lo[b->p[i].value + 1]++] = a;
            }
        }
        /* now occ_lo[q] .. occ_lo[q + 1] are q's occurrences */
        uint32_t qh = 0, qt = 0;
        for (a = 0; a < n_alts; a++)
            if (wait[a] == 0 && !nullable[alt_rule[a]]) nullable[queue[qt++] = alt_rule[a]] = true;
        while (qh < qt) {
            uint32_t q = queue[qh++];
            for (uint32_t k = occ_lo[q]; k < occ_lo[q + 1]; k++) {
                uint32_t al = occ[k];
                if (wait[al] != UINT32_MAX && --wait[al] == 0 && !nullable[alt_rule[al]])
                    nullable[queue[qt++] = alt_rule[al]] = true;
            }
        }
    }
    free(wait);
    free(alt_rule);
    free(occ_lo);
    free(occ);
    free(queue);
    return ok || fail_at(ps, KN_ENOMEM, ps->src, "out of memory");
}

/* Left recursion: a rule that can reach itself before consuming a
 * character, directly or through rules that may match nothing. */
static bool check_left_recursion(parser *ps) {
    uint32_t n = ps->n_rules;
    bool *nullable = calloc(n, sizeof *nullable);
    uint8_t *color = calloc(n, 1);
    uint32_t *stk = malloc((size_t)n * 3 * sizeof *stk); /* (rule, next element, live) frames */
    bool ok = nullable && color && stk;
    if (!ok) {
        free(nullable);
        free(color);
        free(stk);
        return fail_at(ps, KN_ENOMEM, ps->src, "out of memory");
    }
    /* nullable, by a work list (linear; a fixpoint by passes is quadratic
     * on a chain of rules): an alternative made only of refs waits for
     * that many nullable refs; a rule with one whose count reaches 0 is
     * nullable. */
    if (ok) ok = rule_fixpoint(ps, nullable, true);
    /* DFS over "r can start with q" edges; a back edge is left recursion.
     * A frame (rule, next element, at the left edge) walks r's elements: at
     * an alternative's start or after nullable refs, a ref is an edge. */
    for (uint32_t s = 0; s < n && ok; s++) {
        if (color[s]) continue;
        uint32_t sp = 0;
        stk[sp++] = s;
        stk[sp++] = 0;
        stk[sp++] = 1;
        color[s] = 1;
        while (sp && ok) {
            uint32_t r = stk[sp - 3], i = stk[sp - 2];
            bool live = stk[sp - 1];
            const evec *b = &ps->rules[r].body;
            uint32_t q = UINT32_MAX;
            for (; i < b->n; i++) {
                const gram_elem *el = &b->p[i];
                if (gram_is_end(el)) {
                    live = true;
                    continue;
                }
                if (live && el->type == GE_REF) {
                    q = el->value;
                    live = nullable[q];
                    i++;
                    break;
                }
                live = false;
            }
            stk[sp - 2] = i;
            stk[sp - 1] = live;
            if (q == UINT32_MAX) {
                color[r] = 2;
                sp -= 3;
            } else if (color[q] == 1) {
                /* name a rule of the user's in the cycle when there is one */
                uint32_t nm = q;
                for (uint32_t k = sp; k >= 3; k -= 3) {
                    uint32_t rr = stk[k - 3];
                    if (!ps->rules[rr].helper) nm = rr;
                    if (rr == q) break;
                }
                uint32_t at = ps->rules[nm].def_at;
                while (ps->rules[nm].helper)
                    nm = ps->rules[nm].parent; /* a helper: name its rule */
                ok = fail_at(ps, KN_EINVAL, ps->src + at, "left recursion in rule '%s'", ps->rules[nm].name);
            } else if (color[q] == 0) {
                color[q] = 1;
                stk[sp++] = q;
                stk[sp++] = 0;
                stk[sp++] = 1;
            }
        }
    }
    free(nullable);
    free(color);
    free(stk);
    return ok;
}

/* A rule reachable from the root that has no finite derivation (every
 * alternative needs itself again, as in `x ::= "a" x`) is a trap: the
 * matcher would let generation enter it and never allow it to end. Named by
 * the first such rule of the user's (a helper names its rule). */
static bool check_productive(parser *ps, uint32_t root) {
    uint32_t n = ps->n_rules;
    bool *prod = calloc(n, sizeof *prod), *seen = calloc(n, sizeof *seen);
    uint32_t *stk = malloc(((size_t)n + 1) * sizeof *stk);
    bool ok = prod && seen && stk;
    if (ok) ok = rule_fixpoint(ps, prod, false);
    if (ok) {
        uint32_t sp = 0, bad = UINT32_MAX;
        stk[sp++] = root;
        seen[root] = true;
        while (sp && bad == UINT32_MAX) {
            uint32_t r = stk[--sp];
            if (!prod[r]) {
                bad = r;
                break;
            }
            const evec *b = &ps->rules[r].body;
            for (uint32_t i = 0; i < b->n; i++)
                if (b->p[i].type == GE_REF && !seen[b->p[i].value]) {
                    seen[b->p[i].value] = true;
                    stk[sp++] = b->p[i].value;
                }
        }
        if (bad != UINT32_MAX) {
            uint32_t at = ps->rules[bad].def_at;
            while (ps->rules[bad].helper)
                bad = ps->rules[bad].parent;
            if (ps->rules[bad].def_at != UINT32_MAX) at = ps->rules[bad].def_at;
            ok = fail_at(ps, KN_EINVAL, ps->src + (at == UINT32_MAX ? 0 : at),
                         "rule '%s' can never finish (every alternative needs the rule again)",
                         ps->rules[bad].name);
        }
    } else {
        ok = fail_at(ps, KN_ENOMEM, ps->src, "out of memory");
    }
    free(prod);
    free(seen);
    free(stk);
    return ok;
}

/* ---- compile ---------------------------------------------------------------------- */

static void parser_free(parser *ps) {
    for (uint32_t i = 0; i < ps->n_rules; i++) {
        free(ps->rules[i].name);
        free(ps->rules[i].body.p);
    }
    free(ps->rules);
    free(ps->ht);
    free((char *)ps->src);
}

void gram_destroy(gram *g) {
    if (!g) return;
    free(g->elems);
    free(g->alt_lo);
    free(g->alts);
    free(g);
}

size_t gram_rule_count(const gram *g) {
    return g->n_rules;
}

static kn_status flatten(parser *ps, uint32_t root, gram **out, kn_err *err) {
    gram *g = calloc(1, sizeof *g);
    if (!g) return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    uint32_t n = ps->n_rules, n_alts = 0, *start = NULL;
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t i = 0; i < ps->rules[r].body.n; i++)
            n_alts += gram_is_end(&ps->rules[r].body.p[i]);
    g->n_rules = n;
    g->root = root;
    g->n_elems = (uint32_t)ps->n_elems;
    g->elems = malloc((size_t)g->n_elems * sizeof *g->elems);
    g->alt_lo = malloc(((size_t)n + 1) * sizeof *g->alt_lo);
    g->alts = malloc(((size_t)n_alts + 1) * sizeof *g->alts);
    start = malloc(((size_t)n + 1) * sizeof *start);
    if (!g->elems || !g->alt_lo || !g->alts || !start) goto fail;
    uint32_t pos = 0, na = 0;
    for (uint32_t r = 0; r < n; r++) {
        const evec *b = &ps->rules[r].body;
        KN_ASSERT(b->n > 0 && b->p[b->n - 1].type == GE_END);
        memcpy(g->elems + pos, b->p, (size_t)b->n * sizeof *b->p);
        g->alt_lo[r] = na;
        g->alts[na++] = pos;
        for (uint32_t i = 0; i + 1 < b->n; i++)
            if (b->p[i].type == GE_ALT) g->alts[na++] = pos + i + 1;
        pos += b->n;
    }
    KN_ASSERT(pos == g->n_elems && na == n_alts);
    g->alt_lo[n] = na;
    free(start);
    *out = g;
    return KN_OK;
fail:
    free(start);
    gram_destroy(g);
    return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
}

kn_status gram_compile(const char *text, size_t len, const char *root, gram **out, kn_err *err) {
    *out = NULL;
    if (!root) root = "root";
    if (len > GRAM_MAX_TEXT)
        return kn_fail(err, KN_ERANGE, "grammar: text of %zu bytes is over the limit of %u", len,
                       GRAM_MAX_TEXT);
    if (len && memchr(text, 0, len)) return kn_fail(err, KN_EINVAL, "grammar: NUL byte in the text");
    parser ps = {.len = len, .err = err};
    char *src = malloc(len + 1);
    ps.ht = calloc(NAME_HT_CAP, sizeof *ps.ht);
    if (!src || !ps.ht) {
        free(src);
        free(ps.ht);
        return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    }
    if (len) memcpy(src, text, len);
    src[len] = 0;
    ps.src = src;

    const char *p = skip_space(ps.src, true);
    while (*p && ps.st == KN_OK)
        if (!parse_rule(&ps, &p)) break;
    /* every referenced rule is defined */
    for (uint32_t r = 0; ps.st == KN_OK && r < ps.n_rules; r++)
        if (!ps.rules[r].defined)
            fail_at(&ps, KN_EINVAL, ps.src + ps.rules[r].ref_at, "undefined rule '%s'", ps.rules[r].name);
    uint32_t root_id = 0;
    if (ps.st == KN_OK) {
        bool found = false;
        size_t rl = strlen(root);
        for (uint32_t h = name_slot(root, rl); ps.ht[h]; h = (h + 1) & (NAME_HT_CAP - 1)) {
            if (strcmp(ps.rules[ps.ht[h] - 1].name, root) == 0) {
                root_id = ps.ht[h] - 1;
                found = true;
                break;
            }
        }
        if (!found) kn_fail(err, ps.st = KN_EINVAL, "grammar: no rule named '%.100s' (the start rule)", root);
    }
    if (ps.st == KN_OK) check_left_recursion(&ps);
    if (ps.st == KN_OK) check_productive(&ps, root_id);
    if (ps.st == KN_OK) ps.st = flatten(&ps, root_id, out, err);
    kn_status st = ps.st;
    parser_free(&ps);
    return st;
}
