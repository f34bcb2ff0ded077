/*
 * schema.c — JSON Schema to GBNF (kiln/grammar.h: gram_schema_rules,
 * gram_schema_to_gbnf; docs/grammar.md, "JSON Schema", is the reference).
 *
 * A recursive walk over the schema that writes GBNF text. Each subschema
 * gives a rule body (alternatives); a body used inside a sequence becomes a
 * rule "<prefix>s<N>" of its own unless it is already one rule name. Shared
 * pieces (any value, strings, numbers, formats) are rules emitted once per
 * prefix when first used. A $ref target becomes one rule per target, named
 * before its body is written, so recursive schemas are recursive rules.
 *
 * Exactness: every text the grammar accepts is valid against the schema
 * (the grammar is a subset: e.g. one spelling per property name, compact
 * whitespace, bounded digit counts). A keyword that would need more is an
 * error naming it and its JSON pointer, never ignored. Two things cannot be
 * seen locally: recursion through $ref without any text in between (caught
 * while walking), and schemas with no finite instance (e.g. a required
 * property that is the object itself): the result is compiled once before
 * it is returned, so what this file returns always compiles.
 *
 * 'pattern' is parsed into a tree whose nodes know their shortest and
 * longest match (rx_raise / rx_cap bound it to minLength/maxLength, keeping
 * only strings it matched), then written as GBNF.
 *
 * Bounds: nesting depth, total work (subschemas visited), the size of the
 * text (GRAM_MAX_TEXT), repetition counts (GRAM_MAX_REPEAT), pattern length;
 * the compile check enforces the rule and element limits.
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_MAX_DEPTH 64u            /* nested subschemas (and $ref/allOf inlining) */
#define SCHEMA_MAX_WORK 100000u         /* subschemas visited, merges included */
#define SCHEMA_MAX_PATTERN 4096u        /* bytes of one 'pattern' */
#define SCHEMA_MAX_RX_NESTING 32u       /* groups in a pattern */
#define SCHEMA_MAX_SET_RANGES 4096      /* ranges of one character class */
#define NUM_DIGITS 16                   /* digits of an unbounded integer part, a fraction */
#define INT_LIMIT 1000000000000000000LL /* |bounds| used exactly; beyond: unbounded or error */

/* shared rules, emitted once per prefix on first use */
enum {
    P_VALUE,
    P_OBJECT,
    P_ARRAY,
    P_STRING,
    P_CHAR,
    P_KCHAR,
    P_HEX,
    P_HEX4,
    P_NUMBER,
    P_UINT,
    P_INTEGER,
    P_BOOL,
    P_NULL,
    P_WS,
    P_DATE,
    P_YEAR,
    P_MD,
    P_D28,
    P_D30,
    P_D31,
    P_LEAP,
    P_TIME,
    P_HH,
    P_DATETIME,
    P_UUID,
    P_EMAIL,
    P_ELOCAL,
    P_EATOM,
    P_ELABEL,
    P_IPV4,
    P_OCTET,
    P_IPV6,
    P_H16,
    P_HOSTNAME,
    P_URI,
    P_COUNT
};

typedef struct prim_def {
    const char *name, *body; /* '@name' in a body refers to another shared rule */
} prim_def;

static const prim_def PRIMS[P_COUNT] = {
    [P_VALUE] = {"value", "@object | @array | @string | @number | @bool | @null"},
    [P_OBJECT] = {"object",
                  "\"{\" ( @string \":\" @ws @value ( \",\" @ws @string \":\" @ws @value )* )? \"}\""},
    [P_ARRAY] = {"array", "\"[\" ( @value ( \",\" @ws @value )* )? \"]\""},
    [P_STRING] = {"string", "\"\\\"\" @char* \"\\\"\""},
    /* any JSON string character: one code point, a surrogate pair escape counting as one */
    [P_CHAR] = {"char",
                "[^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" @hex4 | \"u\" [dD] [89abAB] @hex "
                "@hex \"\\\\u\" [dD] [c-fC-F] @hex @hex )"},
    /* one spelling per code point (the shortest escape): for names that must differ from given ones */
    [P_KCHAR] = {"kchar",
                 "[^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\bfnrt] | \"u00\" ( \"0\" [0-7bef] | \"1\" "
                 "[0-9a-f] ) )"},
    [P_HEX] = {"hex", "[0-9a-fA-F]"},
    [P_HEX4] = {"hex4", "[0-9a-cA-CeEfF] @hex @hex @hex | [dD] [0-7] @hex @hex"},
    [P_NUMBER] = {"number", "\"-\"? @uint ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?"},
    [P_UINT] = {"uint", "\"0\" | [1-9] [0-9]{0,15}"},
    [P_INTEGER] = {"integer", "\"-\"? @uint"},
    [P_BOOL] = {"bool", "\"true\" | \"false\""},
    [P_NULL] = {"null", "\"null\""},
    [P_WS] = {"ws", "\" \"?"},
    [P_DATE] = {"date", "@year \"-\" @md | @leap \"-02-29\""},
    [P_YEAR] = {"year", "[0-9]{4}"},
    [P_MD] = {"md",
              "( \"01\" | \"03\" | \"05\" | \"07\" | \"08\" | \"10\" | \"12\" ) \"-\" @d31 | ( \"04\" | "
              "\"06\" | \"09\" | \"11\" ) \"-\" @d30 | \"02-\" @d28"},
    [P_D28] = {"d28", "\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8]"},
    [P_D30] = {"d30", "@d28 | \"29\" | \"30\""},
    [P_D31] = {"d31", "@d30 | \"31\""},
    /* leap years: divisible by 4 and not by 100, or by 400 (0000 is one, as in ajv-formats) */
    [P_LEAP] = {"leap",
                "[0-9] [0-9] ( \"0\" [48] | [2468] [048] | [13579] [26] ) | ( \"0\" [048] | [2468] [048] | "
                "[13579] [26] ) \"00\""},
    [P_TIME] = {"time",
                "@hh \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,9} )? ( \"Z\" | [+-] @hh \":\" "
                "[0-5] [0-9] )"},
    [P_HH] = {"hh", "[01] [0-9] | \"2\" [0-3]"},
    [P_DATETIME] = {"date-time", "@date \"T\" @time"},
    [P_UUID] = {"uuid", "@hex{8} \"-\" @hex{4} \"-\" @hex{4} \"-\" @hex{4} \"-\" @hex{12}"},
    /* RFC 5321 limits (ajv does not check them, a model must finish): a local
     * part of at most 64 characters, labels of at most 63, at most 4 labels */
    [P_EMAIL] = {"email", "@elocal \"\\x40\" ( @elabel \".\" ){1,3} [a-zA-Z]{2,63}"},
    [P_ELOCAL] = {"elocal", "@eatom{1,32} ( \".\" @eatom{1,15} ){0,2}"},
    [P_EATOM] = {"eatom", "[a-zA-Z0-9_%+-]"},
    [P_ELABEL] = {"elabel", "[a-zA-Z0-9] ( [a-zA-Z0-9-]{0,61} [a-zA-Z0-9] )?"},
    [P_IPV4] = {"ipv4", "@octet \".\" @octet \".\" @octet \".\" @octet"},
    [P_OCTET] = {"octet", "\"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9]"},
    /* the full form, or k groups, "::" and at most 7 - k groups */
    [P_IPV6] =
        {"ipv6",
         "@h16 ( \":\" @h16 ){7} | \"::\" ( @h16 ( \":\" @h16 ){0,6} )? | @h16 \"::\" ( @h16 ( \":\" "
         "@h16 ){0,5} )? | ( @h16 \":\" ){1} @h16 \"::\" ( @h16 ( \":\" @h16 ){0,4} )? | ( @h16 \":\" "
         "){2} @h16 \"::\" ( @h16 ( \":\" @h16 ){0,3} )? | ( @h16 \":\" ){3} @h16 \"::\" ( @h16 ( \":\" "
         "@h16 ){0,2} )? | ( @h16 \":\" ){4} @h16 \"::\" ( @h16 ( \":\" @h16 )? )? | ( @h16 \":\" ){5} "
         "@h16 \"::\" @h16? | ( @h16 \":\" ){6} @h16 \"::\""},
    [P_H16] = {"h16", "[0-9a-fA-F]{1,4}"},
    /* at most 3 labels of 1 to 63 characters: under the 253 of RFC 1123 */
    [P_HOSTNAME] = {"hostname", "@elabel ( \".\" @elabel ){0,2}"},
    [P_URI] = {"uri", "\"http\" \"s\"? \"://\" @hostname ( \"/\" [a-zA-Z0-9._~-]{0,32} ){0,8}"},
};

typedef struct sctx {
    const json_t *root;
    const char *prefix;
    kn_buf *out;
    kn_err *err;
    kn_status st;
    unsigned depth, barrier;
    unsigned long work;
    uint32_t n_rules;   /* s<N>, ref<N>-..., k<N> names */
    uint64_t prims;     /* P_* bits used */
    json_t *refs;       /* "$ref" string -> [name, state (0 in progress, 1 done, 2 empty), barrier] */
    json_t *rule_where; /* rule name -> JSON pointer (for messages from the final compile) */
    json_t *keep;       /* schemas made by merging, freed at the end */
    char path[1024];
    size_t pl;
} sctx;

/* ---- errors and output ------------------------------------------------------- */

static const char *where(const sctx *c) {
    return c->pl ? c->path : "the root";
}

__attribute__((format(printf, 3, 4))) static int fail(sctx *c, kn_status st, const char *fmt, ...) {
    if (c->st != KN_OK) return -1;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->st = kn_fail(c->err, st, "%s at %s", msg, where(c));
    return -1;
}

static bool put_n(sctx *c, kn_buf *b, const char *s, size_t n) {
    if (c->st != KN_OK) return false;
    if (!kn_buf_add(b, s, n, GRAM_MAX_TEXT)) {
        fail(c, KN_ERANGE, "the grammar for this schema is over %u bytes", GRAM_MAX_TEXT);
        return false;
    }
    return true;
}

static bool put(sctx *c, kn_buf *b, const char *s) {
    return put_n(c, b, s, strlen(s));
}

__attribute__((format(printf, 3, 4))) static bool putf(sctx *c, kn_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    KN_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    return put_n(c, b, tmp, (size_t)n);
}

/* A reference to a shared rule. */
static bool prim(sctx *c, kn_buf *b, int p) {
    c->prims |= 1ull << p;
    return put(c, b, c->prefix) && put(c, b, PRIMS[p].name);
}

/* Writes a body template: "@name" refers to the shared rule name. */
static bool put_tmpl(sctx *c, kn_buf *b, const char *t) {
    while (*t) {
        const char *at = strchr(t, '@');
        if (!at) return put(c, b, t);
        if (!put_n(c, b, t, (size_t)(at - t))) return false;
        const char *e = at + 1;
        while ((*e >= 'a' && *e <= 'z') || (*e >= '0' && *e <= '9') || *e == '-')
            e++;
        int p = -1;
        for (int i = 0; i < P_COUNT; i++)
            if (strlen(PRIMS[i].name) == (size_t)(e - at - 1) &&
                !memcmp(PRIMS[i].name, at + 1, (size_t)(e - at - 1)))
                p = i;
        KN_ASSERT(p >= 0);
        if (!prim(c, b, p)) return false;
        t = e;
    }
    return true;
}

/* A GBNF string literal matching exactly the bytes s[0..n) (valid UTF-8). */
static bool put_lit(sctx *c, kn_buf *b, const char *s, size_t n) {
    if (!put(c, b, "\"")) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char tmp[8];
        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            tmp[2] = 0;
        } else if (ch < 0x20 || ch == 0x7F) {
            snprintf(tmp, sizeof tmp, "\\x%02X", ch);
        } else {
            tmp[0] = (char)ch;
            tmp[1] = 0;
        }
        if (!put(c, b, tmp)) return false;
    }
    return put(c, b, "\"");
}

/* A fresh rule name (without the prefix) into name[64]. */
static void new_name(sctx *c, char *name, const char *kind, const char *hint) {
    int n = snprintf(name, 64, "%s%u", kind, ++c->n_rules);
    if (hint && *hint) {
        size_t k = (size_t)n;
        name[k++] = '-';
        for (const char *h = hint; *h && k < 60; h++) {
            char ch = *h;
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
            name[k++] = ok ? ch : '-';
        }
        name[k] = 0;
    }
    json_object_set_new(c->rule_where, name, json_string(c->pl ? c->path : ""));
}

/* Appends "<prefix><name> ::= <body>\n" to the output. */
static bool emit_rule(sctx *c, const char *name, const char *body, size_t n) {
    return put(c, c->out, c->prefix) && put(c, c->out, name) && put(c, c->out, " ::= ") &&
           (n ? put_n(c, c->out, body, n) : put(c, c->out, "\"\"")) && put(c, c->out, "\n");
}

/* ---- paths --------------------------------------------------------------------- */

static size_t path_push(sctx *c, const char *seg) {
    size_t old = c->pl;
    if (c->pl + 2 >= sizeof c->path) return old;
    c->path[c->pl++] = '/';
    for (; *seg && c->pl + 3 < sizeof c->path; seg++) {
        if (*seg == '~' || *seg == '/') {
            c->path[c->pl++] = '~';
            c->path[c->pl++] = *seg == '~' ? '0' : '1';
        } else {
            c->path[c->pl++] = *seg;
        }
    }
    c->path[c->pl] = 0;
    return old;
}

static size_t path_push_i(sctx *c, const char *seg, size_t i) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%zu", i);
    size_t old = path_push(c, seg);
    path_push(c, tmp);
    return old;
}

static void path_pop(sctx *c, size_t old) {
    c->pl = old;
    c->path[old] = 0;
}

/* ---- keywords -------------------------------------------------------------------- */

static const char *const IGNORED[] = {
    "$schema",          "$id",      "$comment",  "title", "description", "default",       "examples",
    "deprecated",       "readOnly", "writeOnly", "$defs", "definitions", "discriminator", "contentEncoding",
    "contentMediaType", NULL};
static const char *const HANDLED[] = {
    "type",     "enum",          "const",           "properties", "required",         "additionalProperties",
    "items",    "prefixItems",   "additionalItems", "minItems",   "maxItems",         "uniqueItems",
    "anyOf",    "oneOf",         "allOf",           "$ref",       "minLength",        "maxLength",
    "pattern",  "format",        "minimum",         "maximum",    "exclusiveMinimum", "exclusiveMaximum",
    "nullable", "minProperties", "maxProperties",   NULL};

static bool in_list(const char *const *l, const char *k) {
    for (; *l; l++)
        if (!strcmp(*l, k)) return true;
    return false;
}

static int check_keys(sctx *c, const json_t *s) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (in_list(IGNORED, k)) continue;
        if (!in_list(HANDLED, k)) return fail(c, KN_EINVAL, "unsupported JSON Schema keyword '%.60s'", k);
        if (!strcmp(k, "uniqueItems") && json_is_true(v))
            return fail(c, KN_EINVAL, "unsupported JSON Schema keyword 'uniqueItems' (true)");
    }
    return 0;
}

/* Whether s has a keyword that constrains values, other than those in except. */
static bool has_constraint(const json_t *s, const char *const *except) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        (void)v;
        if (in_list(HANDLED, k) && !in_list(except, k)) return true;
    }
    return false;
}

/* ---- $ref ------------------------------------------------------------------------ */

static int hexv(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Resolves a local reference "#", "#/a/b~1c" against the root; *ptr gets the
 * decoded JSON pointer (for messages). */
static const json_t *resolve(sctx *c, const char *ref, char *ptr, size_t cap) {
    if (ref[0] != '#')
        return fail(c, KN_EINVAL, "unsupported $ref '%.100s' (only '#...' in the same schema)", ref), NULL;
    size_t n = 0;
    for (const char *p = ref + 1; *p; p++) {
        int ch = (unsigned char)*p;
        if (ch == '%' && hexv(p[1]) >= 0 && hexv(p[2]) >= 0) {
            ch = hexv(p[1]) * 16 + hexv(p[2]);
            p += 2;
        }
        if (n + 1 >= cap || ch == 0)
            return fail(c, KN_EINVAL, "$ref '%.100s' is too long or malformed", ref), NULL;
        ptr[n++] = (char)ch;
    }
    ptr[n] = 0;
    if (n && ptr[0] != '/')
        return fail(c, KN_EINVAL, "unsupported $ref '%.100s' (not a JSON pointer)", ref), NULL;
    const json_t *cur = c->root;
    const char *p = ptr;
    char seg[256];
    while (*p) {
        p++; /* '/' */
        size_t k = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '~') {
                if (*p != '0' && *p != '1')
                    return fail(c, KN_EINVAL, "bad escape in $ref '%.100s'", ref), NULL;
                ch = *p++ == '0' ? '~' : '/';
            }
            if (k + 1 >= sizeof seg) return fail(c, KN_EINVAL, "$ref '%.100s' is too long", ref), NULL;
            seg[k++] = ch;
        }
        seg[k] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *e;
            unsigned long i = strtoul(seg, &e, 10);
            cur = (k && *e == 0 && seg[0] >= '0' && seg[0] <= '9') ? json_array_get(cur, i) : NULL;
        } else {
            cur = NULL;
        }
        if (!cur) return fail(c, KN_EINVAL, "$ref '%.100s' points to nothing", ref), NULL;
    }
    return cur;
}

/* ---- character sets -------------------------------------------------------------- */

typedef struct cset {
    uint32_t (*r)[2];
    uint32_t n, cap;
} cset;

static bool cs_add(sctx *c, cset *s, uint32_t lo, uint32_t hi) {
    if (s->n == s->cap) {
        if (s->cap >= SCHEMA_MAX_SET_RANGES) return fail(c, KN_ERANGE, "character class too large"), false;
        uint32_t nc = s->cap ? s->cap * 2 : 8;
        void *np = realloc(s->r, (size_t)nc * sizeof *s->r);
        if (!np) return fail(c, KN_ENOMEM, "out of memory"), false;
        s->r = np;
        s->cap = nc;
    }
    s->r[s->n][0] = lo;
    s->r[s->n][1] = hi;
    s->n++;
    return true;
}

static int cmp_range(const void *a, const void *b) {
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void cs_norm(cset *s) {
    if (!s->n) return;
    qsort(s->r, s->n, sizeof *s->r, cmp_range);
    uint32_t k = 0;
    for (uint32_t i = 1; i < s->n; i++) {
        if (s->r[i][0] <= s->r[k][1] + 1) {
            if (s->r[i][1] > s->r[k][1]) s->r[k][1] = s->r[i][1];
        } else {
            s->r[++k][0] = s->r[i][0];
            s->r[k][1] = s->r[i][1];
        }
    }
    s->n = k + 1;
}

/* *s = complement of *s over [0, 0x10FFFF]; s normalized. */
static bool cs_negate(sctx *c, cset *s) {
    cs_norm(s);
    cset o = {0};
    uint32_t next = 0;
    bool ok = true;
    for (uint32_t i = 0; ok && i < s->n; i++) {
        if (s->r[i][0] > next) ok = cs_add(c, &o, next, s->r[i][0] - 1);
        next = s->r[i][1] + 1;
    }
    if (ok && next <= 0x10FFFF) ok = cs_add(c, &o, next, 0x10FFFF);
    free(s->r);
    *s = o;
    return ok;
}

static bool put_class_cp(sctx *c, kn_buf *b, uint32_t cp) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9'))
        return putf(c, b, "%c", (char)cp);
    if (cp < 0x80) return putf(c, b, "\\x%02X", cp);
    if (cp < 0x10000) return putf(c, b, "\\u%04X", cp);
    return putf(c, b, "\\U%08X", cp);
}

/* Writes alternatives matching the JSON spelling of any code point of s (one
 * spelling each: the shortest escape for '"', '\' and control characters).
 * Returns the number of alternatives written (0: s is empty). */
static int put_set(sctx *c, kn_buf *b, cset *s) {
    cs_norm(s);
    int n_alt = 0;
    bool plain = false;
    /* the plain part: [0x20, 0x10FFFF] minus '"', '\' and surrogates */
    static const uint32_t holes[][2] = {{0x22, 0x22}, {0x5C, 0x5C}, {0xD800, 0xDFFF}};
    kn_buf cls = {0};
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t lo = s->r[i][0] < 0x20 ? 0x20 : s->r[i][0], hi = s->r[i][1];
        while (lo <= hi) {
            uint32_t end = hi;
            bool skip = false;
            for (size_t h = 0; h < 3; h++) {
                if (lo >= holes[h][0] && lo <= holes[h][1]) {
                    lo = holes[h][1] + 1;
                    skip = true;
                    break;
                }
                if (holes[h][0] > lo && holes[h][0] - 1 < end) end = holes[h][0] - 1;
            }
            if (skip) continue;
            if (!put_class_cp(c, &cls, lo)) goto out;
            if (end > lo && (!put(c, &cls, "-") || !put_class_cp(c, &cls, end))) goto out;
            plain = true;
            if (end == 0x10FFFF) break;
            lo = end + 1;
        }
    }
    if (plain) {
        if (!put(c, b, "[") || !put_n(c, b, cls.p, cls.n) || !put(c, b, "]")) goto out;
        n_alt++;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        for (uint32_t cp = s->r[i][0]; cp <= s->r[i][1] && cp < 0x80; cp++) {
            const char *lit = NULL;
            char tmp[16];
            if (cp == '"')
                lit = "\"\\\\\\\"\"";
            else if (cp == '\\')
                lit = "\"\\\\\\\\\"";
            else if (cp == 8)
                lit = "\"\\\\b\"";
            else if (cp == 9)
                lit = "\"\\\\t\"";
            else if (cp == 10)
                lit = "\"\\\\n\"";
            else if (cp == 12)
                lit = "\"\\\\f\"";
            else if (cp == 13)
                lit = "\"\\\\r\"";
            else if (cp < 0x20) {
                snprintf(tmp, sizeof tmp, "\"\\\\u00%02x\"", cp);
                lit = tmp;
            }
            if (!lit) continue;
            if ((n_alt && !put(c, b, " | ")) || !put(c, b, lit)) goto out;
            n_alt++;
        }
    }
out:
    kn_buf_free(&cls);
    return c->st == KN_OK ? n_alt : -1;
}

/* Whether a body text is a single item (a rule name, or one literal). */
static bool single_item(const char *p, size_t n) {
    if (!n) return false;
    bool name = true;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            name = false;
    }
    return name;
}

/* Turns a body into one item: itself when it is a rule name, else a new rule. */
static bool to_item(sctx *c, kn_buf *b, const kn_buf *body, const char *kind) {
    if (single_item(body->p, body->n)) return put_n(c, b, body->p, body->n);
    char name[64];
    new_name(c, name, kind, NULL);
    return emit_rule(c, name, body->p, body->n) && put(c, b, c->prefix) && put(c, b, name);
}

/* ---- regular expressions (the 'pattern' subset) --------------------------------- */

struct rnode;

typedef struct rx {
    sctx *c;
    const char *p, *end, *src;
    unsigned depth;
    struct rnode *nd; /* the parsed pattern's nodes */
    uint32_t nn, ncap;
    kn_buf txt; /* item texts of its character sets */
} rx;

static int rx_fail(rx *r, const char *what) {
    return fail(r->c, KN_EINVAL, "'pattern' /%.80s/: %s (at offset %zu)", r->src, what,
                (size_t)(r->p - r->src));
}

/* Decodes one UTF-8 code point of the pattern (valid: it is a JSON string). */
static uint32_t rx_cp(rx *r) {
    gram_u8 u = {0};
    for (;;) {
        int k = gram_u8_feed(&u, (uint8_t)*r->p++);
        if (k == GRAM_U8_DONE) return u.cp;
        if (k == GRAM_U8_BAD || r->p >= r->end) return 0xFFFD;
    }
}

static bool rx_hex(rx *r, int n, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (r->p >= r->end || hexv(*r->p) < 0) return false;
        *v = *v * 16 + (uint32_t)hexv(*r->p++);
    }
    return true;
}

/* Adds the class escapes \d \w \s (and negations) to s; false if e is not one. */
static bool rx_class_escape(rx *r, char e, cset *s, bool *ok) {
    static const uint32_t SPACE[][2] = {
        {9, 13},          {32, 32},         {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
        {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
    cset t = {0};
    bool is = true;
    *ok = true;
    switch (e | 0x20) {
    case 'd': *ok = cs_add(r->c, &t, '0', '9'); break;
    case 'w':
        *ok = cs_add(r->c, &t, '0', '9') && cs_add(r->c, &t, 'A', 'Z') && cs_add(r->c, &t, 'a', 'z') &&
              cs_add(r->c, &t, '_', '_');
        break;
    case 's':
        for (size_t i = 0; *ok && i < sizeof SPACE / sizeof *SPACE; i++)
            *ok = cs_add(r->c, &t, SPACE[i][0], SPACE[i][1]);
        break;
    default: is = false;
    }
    if (is && *ok && e >= 'A' && e <= 'Z') *ok = cs_negate(r->c, &t);
    for (uint32_t i = 0; is && *ok && i < t.n; i++)
        *ok = cs_add(r->c, s, t.r[i][0], t.r[i][1]);
    free(t.r);
    return is;
}

/* One escaped code point after '\' (r->p on the letter); in_class: \b is backspace. */
static bool rx_escape_cp(rx *r, bool in_class, uint32_t *cp) {
    char e = *r->p++;
    switch (e) {
    case 'n': *cp = '\n'; return true;
    case 'r': *cp = '\r'; return true;
    case 't': *cp = '\t'; return true;
    case 'f': *cp = '\f'; return true;
    case 'v': *cp = '\v'; return true;
    case '0':
        if (r->p < r->end && *r->p >= '0' && *r->p <= '9') break;
        *cp = 0;
        return true;
    case 'x':
        if (rx_hex(r, 2, cp)) return true;
        return rx_fail(r, "bad \\x escape"), false;
    case 'u':
        if (r->p < r->end && *r->p == '{') {
            r->p++;
            uint32_t v = 0;
            int k = 0;
            while (r->p < r->end && hexv(*r->p) >= 0 && k < 8) {
                v = v * 16 + (uint32_t)hexv(*r->p++);
                k++;
            }
            if (!k || r->p >= r->end || *r->p != '}' || v > 0x10FFFF)
                return rx_fail(r, "bad \\u{...} escape"), false;
            r->p++;
            *cp = v;
        } else if (!rx_hex(r, 4, cp)) {
            return rx_fail(r, "bad \\u escape"), false;
        }
        if (*cp >= 0xD800 && *cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
            const char *save = r->p;
            uint32_t lo;
            r->p += 2;
            if (rx_hex(r, 4, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
                return true;
            }
            r->p = save;
        }
        if (*cp >= 0xD800 && *cp <= 0xDFFF) return rx_fail(r, "a lone surrogate is not supported"), false;
        return true;
    case 'b':
        if (in_class) {
            *cp = 8;
            return true;
        }
        return rx_fail(r, "word boundaries (\\b) are not supported"), false;
    case 'B': return rx_fail(r, "word boundaries (\\B) are not supported"), false;
    case 'k': return rx_fail(r, "backreferences (\\k) are not supported"), false;
    case 'p':
    case 'P': return rx_fail(r, "Unicode property escapes (\\p) are not supported"), false;
    case 'c': return rx_fail(r, "control escapes (\\c) are not supported"), false;
    default: break;
    }
    if (e >= '1' && e <= '9') return rx_fail(r, "backreferences are not supported"), false;
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
        return rx_fail(r, "unknown escape"), false;
    r->p--;
    *cp = rx_cp(r);
    return true;
}

/* A class [...] (r->p after '['), into s. */
static bool rx_class(rx *r, cset *s) {
    bool neg = false, ok = true;
    if (r->p < r->end && *r->p == '^') {
        neg = true;
        r->p++;
    }
    bool first = true;
    while (ok) {
        if (r->p >= r->end) return rx_fail(r, "unterminated character class"), false;
        if (*r->p == ']' && !first) break;
        first = false;
        uint32_t lo;
        if (*r->p == '\\') {
            r->p++;
            if (r->p >= r->end) return rx_fail(r, "'\\' at the end"), false;
            bool is_cls;
            if ((is_cls = rx_class_escape(r, *r->p, s, &ok))) {
                r->p++;
                if (!ok) return false;
                if (r->p + 1 < r->end && *r->p == '-' && r->p[1] != ']')
                    return rx_fail(r, "a range from a class escape"), false;
                continue;
            }
            if (!rx_escape_cp(r, true, &lo)) return false;
        } else {
            lo = rx_cp(r);
        }
        uint32_t hi = lo;
        if (r->p + 1 < r->end && *r->p == '-' && r->p[1] != ']') {
            r->p++;
            if (*r->p == '\\') {
                r->p++;
                if (r->p >= r->end) return rx_fail(r, "'\\' at the end"), false;
                bool dummy;
                cset tmp = {0};
                if (rx_class_escape(r, *r->p, &tmp, &dummy)) {
                    free(tmp.r);
                    return rx_fail(r, "a range to a class escape"), false;
                }
                if (!rx_escape_cp(r, true, &hi)) return false;
            } else {
                hi = rx_cp(r);
            }
            if (hi < lo) return rx_fail(r, "a range out of order"), false;
        }
        ok = cs_add(r->c, s, lo, hi);
    }
    r->p++; /* ']' */
    return ok && (!neg || cs_negate(r->c, s));
}

/* ---- the pattern's tree: lengths, and bounding them to minLength/maxLength ---- */

#define RX_INF UINT64_MAX
#define RX_MAX_NODES (4 * SCHEMA_MAX_PATTERN + 16)

enum { RN_SET, RN_ANY, RN_EMPTY, RN_SEQ, RN_ALT, RN_REP };

/* One node of a parsed pattern. Lengths are in code points (one SET or ANY
 * is one code point, in any of its JSON spellings), RX_INF when unbounded. */
typedef struct rnode {
    int kind;
    bool dead;              /* matches nothing (after bounding) */
    bool sat;               /* scratch for rx_cap */
    uint32_t child, next;   /* first child, next sibling: index + 1, 0 = none */
    uint64_t lo, hi;        /* RN_REP: {lo,hi}, hi RX_INF when unbounded */
    uint64_t mn, mx, allot; /* lengths; scratch */
    size_t txt, ntxt;       /* RN_SET: its item text in rx.txt */
} rnode;

static uint64_t sadd(uint64_t a, uint64_t b) {
    return (a == RX_INF || b == RX_INF || a > RX_INF - 1 - b) ? RX_INF : a + b;
}

static uint64_t smul(uint64_t a, uint64_t b) {
    if (!a || !b) return 0;
    return (a == RX_INF || b == RX_INF || a > (RX_INF - 1) / b) ? RX_INF : a * b;
}

static uint64_t umin(uint64_t a, uint64_t b) {
    return a < b ? a : b;
}

/* A new node (index + 1; 0 on failure, with the error set). */
static uint32_t rn_new(rx *r, int kind) {
    if (r->nn == r->ncap) {
        if (r->ncap >= RX_MAX_NODES) return rx_fail(r, "pattern too complex"), 0;
        uint32_t nc = r->ncap ? r->ncap * 2 : 32;
        void *np = realloc(r->nd, (size_t)nc * sizeof *r->nd);
        if (!np) return fail(r->c, KN_ENOMEM, "out of memory"), 0;
        r->nd = np;
        r->ncap = nc;
    }
    r->nd[r->nn] = (rnode){.kind = kind};
    return ++r->nn;
}

#define RN(i) (&r->nd[(i)-1])

/* Recomputes the lengths (and deadness) of node i from its children. */
static void rn_calc(rx *r, uint32_t i) {
    rnode *n = RN(i);
    switch (n->kind) {
    case RN_SET:
    case RN_ANY: n->mn = n->mx = 1; break;
    case RN_EMPTY: n->mn = n->mx = 0; break;
    case RN_SEQ:
        n->mn = n->mx = 0;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            if (RN(ch)->dead) n->dead = true;
            n->mn = sadd(n->mn, RN(ch)->mn);
            n->mx = sadd(n->mx, RN(ch)->mx);
        }
        break;
    case RN_ALT: {
        bool any = false;
        n->mn = RX_INF;
        n->mx = 0;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            if (RN(ch)->dead) continue;
            any = true;
            n->mn = umin(n->mn, RN(ch)->mn);
            if (RN(ch)->mx > n->mx) n->mx = RN(ch)->mx;
        }
        if (!any) n->dead = true;
        break;
    }
    default: {
        const rnode *c = RN(n->child);
        if (c->dead || n->hi == 0 || c->mx == 0) {
            if (c->dead && n->lo > 0) n->dead = true;
            n->kind = RN_EMPTY; /* only "" is left */
            n->mn = n->mx = 0;
            break;
        }
        n->mn = smul(n->lo, c->mn);
        n->mx = n->hi == RX_INF ? RX_INF : smul(n->hi, c->mx);
    }
    }
    if (n->dead) n->mn = n->mx = 0;
}

/* Raises the shortest match of node i to at least L code points, keeping
 * only strings it already matched (alternatives too short are dropped). */
static void rx_raise(rx *r, uint32_t i, uint64_t L) {
    rnode *n = RN(i);
    if (n->dead || n->mn >= L) return;
    if (n->mx < L) {
        n->dead = true;
        return;
    }
    if (n->kind == RN_SEQ) {
        uint64_t need = L - n->mn;
        for (uint32_t ch = n->child; ch && need; ch = RN(ch)->next) {
            uint64_t old = RN(ch)->mn, e = RN(ch)->mx == RX_INF ? RX_INF : RN(ch)->mx - old;
            if (!e) continue;
            rx_raise(r, ch, old + umin(need, e));
            uint64_t got = RN(ch)->mn - old;
            need = got >= need ? 0 : need - got;
        }
    } else if (n->kind == RN_ALT) {
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next)
            rx_raise(r, ch, L);
    } else if (n->kind == RN_REP) {
        uint32_t ch = n->child;
        uint64_t cmn = RN(ch)->mn;
        if (n->hi == RX_INF && cmn == 0) {
            n->dead = true; /* not reached: refused while parsing */
        } else if (cmn == 0 || (L + cmn - 1) / cmn > n->hi) {
            /* hi is finite here (an unbounded repeat of a nullable item is refused) */
            rx_raise(r, ch, (L + n->hi - 1) / n->hi);
            cmn = RN(ch)->mn;
        }
        if (!RN(ch)->dead && cmn > 0 && (L + cmn - 1) / cmn <= n->hi && (L + cmn - 1) / cmn > n->lo)
            n->lo = (L + cmn - 1) / cmn;
    }
    rn_calc(r, i);
}

/* Lowers the longest match of node i to at most L code points, keeping only
 * strings it already matched (alternatives too long are dropped). */
static void rx_cap(rx *r, uint32_t i, uint64_t L) {
    rnode *n = RN(i);
    if (n->dead || n->mx <= L) return;
    if (n->mn > L) {
        n->dead = true;
        return;
    }
    if (n->kind == RN_SEQ) {
        /* share the slack among the children that can grow, water-filling:
         * those that need less than an equal share get all they can use */
        uint64_t rem = L - n->mn, k = 0;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            rnode *c = RN(ch);
            c->allot = c->mx == RX_INF ? RX_INF : c->mx - c->mn;
            c->sat = c->allot == 0;
            k += !c->sat;
        }
        for (bool changed = true; k && changed;) {
            changed = false;
            uint64_t share = rem / k;
            for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
                rnode *c = RN(ch);
                if (c->sat || c->allot > share) continue;
                c->sat = changed = true;
                rem -= c->allot;
                k--;
            }
        }
        uint64_t share = k ? rem / k : 0, extra = k ? rem % k : 0;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            if (RN(ch)->sat) continue;
            uint64_t a = share + (extra ? 1 : 0);
            if (extra) extra--;
            rx_cap(r, ch, RN(ch)->mn + a);
        }
    } else if (n->kind == RN_ALT) {
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next)
            rx_cap(r, ch, L);
    } else if (n->kind == RN_REP) {
        uint32_t ch = n->child;
        if (RN(ch)->mx == RX_INF || smul(n->lo, RN(ch)->mx) > L) {
            /* each repetition gets at most L / lo */
            uint64_t li = L / (n->lo ? n->lo : 1);
            rx_cap(r, ch, li);
        }
        if (!RN(ch)->dead && RN(ch)->mx > 0) n->hi = umin(n->hi, L / RN(ch)->mx);
    }
    rn_calc(r, i);
}

/* ---- the pattern's parser ----------------------------------------------------------- */

static uint32_t rx_alts(rx *r, bool top);

/* A SET node for s (a class, a literal, or a rule of alternatives). */
static uint32_t rx_set_node(rx *r, cset *s) {
    kn_buf t = {0};
    int n = put_set(r->c, &t, s);
    uint32_t id = 0;
    if (n == 0) rx_fail(r, "a character class that matches nothing");
    if (n > 0 && (id = rn_new(r, RN_SET))) {
        size_t at = r->txt.n;
        if (n == 1 ? put_n(r->c, &r->txt, t.p, t.n) : to_item(r->c, &r->txt, &t, "p")) {
            RN(id)->txt = at;
            RN(id)->ntxt = r->txt.n - at;
            rn_calc(r, id);
        } else {
            id = 0;
        }
    }
    kn_buf_free(&t);
    return id;
}

/* One atom with its quantifier. */
static uint32_t rx_atom(rx *r) {
    uint32_t id = 0;
    bool ok = true;
    char ch = *r->p;
    cset s = {0};
    if (ch == '(') {
        r->p++;
        if (r->p < r->end && *r->p == '?') {
            if (r->p + 1 < r->end && r->p[1] == ':') {
                r->p += 2;
            } else if (r->p + 1 < r->end && r->p[1] == '<' && r->p + 2 < r->end && r->p[2] != '=' &&
                       r->p[2] != '!') {
                const char *gt = memchr(r->p, '>', (size_t)(r->end - r->p));
                if (!gt) return rx_fail(r, "unterminated group name"), 0;
                r->p = gt + 1;
            } else {
                return rx_fail(r, "lookahead and lookbehind are not supported"), 0;
            }
        }
        if (++r->depth > SCHEMA_MAX_RX_NESTING) return rx_fail(r, "groups nested too deeply"), 0;
        id = rx_alts(r, false);
        r->depth--;
        if (id && (r->p >= r->end || *r->p != ')')) {
            rx_fail(r, "missing ')'");
            id = 0;
        }
        if (id) r->p++;
    } else if (ch == '[') {
        r->p++;
        id = rx_class(r, &s) ? rx_set_node(r, &s) : 0;
    } else if (ch == '.') {
        r->p++;
        id = cs_add(r->c, &s, '\n', '\n') && cs_add(r->c, &s, '\r', '\r') &&
                     cs_add(r->c, &s, 0x2028, 0x2029) && cs_negate(r->c, &s)
                 ? rx_set_node(r, &s)
                 : 0;
    } else if (ch == '\\') {
        r->p++;
        if (r->p >= r->end) return rx_fail(r, "'\\' at the end"), 0;
        uint32_t cp;
        if (rx_class_escape(r, *r->p, &s, &ok)) {
            r->p++;
            id = ok ? rx_set_node(r, &s) : 0;
        } else {
            id = rx_escape_cp(r, false, &cp) && cs_add(r->c, &s, cp, cp) ? rx_set_node(r, &s) : 0;
        }
    } else if (ch == '^' || ch == '$') {
        return rx_fail(r, "anchors ('^', '$') are supported only at the start and the end"), 0;
    } else if (ch == '*' || ch == '+' || ch == '?' || ch == '{') {
        return rx_fail(r, "nothing to repeat"), 0;
    } else {
        uint32_t cp = rx_cp(r);
        id = cs_add(r->c, &s, cp, cp) ? rx_set_node(r, &s) : 0;
    }
    free(s.r);
    if (!id || r->p >= r->end || !(*r->p == '*' || *r->p == '+' || *r->p == '?' || *r->p == '{')) return id;
    /* quantifier */
    uint64_t lo = 0, hi = RX_INF;
    char q = *r->p++;
    if (q == '+')
        lo = 1;
    else if (q == '?')
        hi = 1;
    else if (q == '{') {
        const char *st = r->p;
        int nd = 0;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9' && nd < 12) {
            lo = lo * 10 + (uint64_t)(*r->p++ - '0');
            nd++;
        }
        if (!nd) {
            r->p = st;
            return rx_fail(r, "a '{' that is not a quantifier"), 0;
        }
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            if (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
                hi = 0;
                nd = 0;
                while (r->p < r->end && *r->p >= '0' && *r->p <= '9' && nd < 12) {
                    hi = hi * 10 + (uint64_t)(*r->p++ - '0');
                    nd++;
                }
            }
        } else {
            hi = lo;
        }
        if (r->p >= r->end || *r->p != '}') return rx_fail(r, "unterminated quantifier"), 0;
        r->p++;
        if (hi < lo) return rx_fail(r, "quantifier {m,n} with n < m"), 0;
        if (lo > GRAM_MAX_REPEAT || (hi != RX_INF && hi > GRAM_MAX_REPEAT))
            return fail(r->c, KN_ERANGE, "'pattern' repetition count over the limit of %u", GRAM_MAX_REPEAT),
                   0;
    }
    if (r->p < r->end && *r->p == '?') r->p++; /* lazy: the same language */
    if (RN(id)->mn == 0 && hi == RX_INF)
        return rx_fail(r, "an unbounded repetition of something that can match \"\" is not supported"), 0;
    uint32_t rep = rn_new(r, RN_REP);
    if (!rep) return 0;
    RN(rep)->child = id;
    RN(rep)->lo = lo;
    RN(rep)->hi = hi;
    rn_calc(r, rep);
    return rep;
}

/* Appends child to the list of parent (last: its current last child). */
static void rn_append(rx *r, uint32_t parent, uint32_t *last, uint32_t child) {
    if (*last)
        RN(*last)->next = child;
    else
        RN(parent)->child = child;
    *last = child;
}

/* A padding of any characters (an unanchored end of the pattern). */
static uint32_t rx_any_rep(rx *r) {
    uint32_t a = rn_new(r, RN_ANY), rep = a ? rn_new(r, RN_REP) : 0;
    if (!rep) return 0;
    rn_calc(r, a);
    RN(rep)->child = a;
    RN(rep)->hi = RX_INF;
    rn_calc(r, rep);
    return rep;
}

/* Alternatives up to ')' or the end, as an RN_ALT of RN_SEQ. top: '^'/'$'
 * allowed at the ends of each alternative, and unanchored ends take any
 * characters. */
static uint32_t rx_alts(rx *r, bool top) {
    uint32_t alt = rn_new(r, RN_ALT), last_alt = 0;
    if (!alt) return 0;
    for (;;) {
        uint32_t seq = rn_new(r, RN_SEQ), last = 0, a;
        if (!seq) return 0;
        rn_append(r, alt, &last_alt, seq);
        bool anch_start = false, anch_end = false;
        if (top && r->p < r->end && *r->p == '^') {
            anch_start = true;
            r->p++;
        }
        if (top && !anch_start) {
            if (!(a = rx_any_rep(r))) return 0;
            rn_append(r, seq, &last, a);
        }
        while (r->p < r->end && *r->p != '|' && *r->p != ')') {
            if (top && *r->p == '$' && (r->p + 1 == r->end || r->p[1] == '|')) {
                anch_end = true;
                r->p++;
                break;
            }
            if (!(a = rx_atom(r))) return 0;
            rn_append(r, seq, &last, a);
        }
        if (top && !anch_end) {
            if (!(a = rx_any_rep(r))) return 0;
            rn_append(r, seq, &last, a);
        }
        rn_calc(r, seq);
        if (r->p < r->end && *r->p == '|') {
            r->p++;
            continue;
        }
        if (top && r->p < r->end) return rx_fail(r, "unmatched ')'"), 0;
        rn_calc(r, alt);
        return alt;
    }
}

/* ---- the pattern's GBNF --------------------------------------------------------------- */

static bool rx_emit_body(rx *r, uint32_t i, kn_buf *b);

/* Node i as one item (a rule name, a class or a literal). */
static bool rx_emit_item(rx *r, uint32_t i, kn_buf *b) {
    const rnode *n = RN(i);
    if (n->kind == RN_SET || n->kind == RN_ANY || n->kind == RN_EMPTY) return rx_emit_body(r, i, b);
    kn_buf t = {0};
    bool ok = rx_emit_body(r, i, &t) && to_item(r->c, b, &t, "p");
    kn_buf_free(&t);
    return ok;
}

static bool rx_emit_body(rx *r, uint32_t i, kn_buf *b) {
    const rnode *n = RN(i);
    KN_ASSERT(!n->dead);
    switch (n->kind) {
    case RN_SET: return put_n(r->c, b, r->txt.p + n->txt, n->ntxt);
    case RN_ANY: return prim(r->c, b, P_CHAR);
    case RN_EMPTY: return put(r->c, b, "\"\"");
    case RN_SEQ: {
        bool any = false;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            if (RN(ch)->kind == RN_EMPTY) continue;
            if (any && !put(r->c, b, " ")) return false;
            if (!(RN(ch)->kind == RN_REP ? rx_emit_body(r, ch, b) : rx_emit_item(r, ch, b))) return false;
            any = true;
        }
        return any || put(r->c, b, "\"\"");
    }
    case RN_ALT: {
        bool any = false;
        for (uint32_t ch = n->child; ch; ch = RN(ch)->next) {
            if (RN(ch)->dead) continue;
            if ((any && !put(r->c, b, " | ")) || !rx_emit_body(r, ch, b)) return false;
            any = true;
        }
        return true;
    }
    default: {
        uint64_t lo = n->lo, hi = n->hi;
        if (lo > GRAM_MAX_REPEAT || (hi != RX_INF && hi > GRAM_MAX_REPEAT))
            return fail(r->c, KN_ERANGE, "'pattern' repetition count over the limit of %u", GRAM_MAX_REPEAT),
                   false;
        if (!rx_emit_item(r, n->child, b)) return false;
        if (hi == RX_INF)
            return lo == 0   ? put(r->c, b, "*")
                   : lo == 1 ? put(r->c, b, "+")
                             : putf(r->c, b, "{%u,}", (unsigned)lo);
        if (lo == 0 && hi == 1) return put(r->c, b, "?");
        if (lo == hi) return putf(r->c, b, "{%u}", (unsigned)lo);
        return putf(r->c, b, "{%u,%u}", (unsigned)lo, (unsigned)hi);
    }
    }
}

/* A string body for 'pattern', its matches limited to [m, M] code points
 * (M RX_INF: no limit). */
static int string_pattern(sctx *c, const char *pat, size_t n, uint64_t m, uint64_t M, kn_buf *b) {
    if (n > SCHEMA_MAX_PATTERN)
        return fail(c, KN_ERANGE, "'pattern' longer than %u bytes", SCHEMA_MAX_PATTERN);
    if (memchr(pat, 0, n)) return fail(c, KN_EINVAL, "'pattern' with a NUL character is not supported");
    rx rs = {.c = c, .p = pat, .end = pat + n, .src = pat}, *r = &rs;
    uint32_t root = rx_alts(r, true);
    int rc = root ? 0 : -1;
    if (rc == 0 && (m > 0 || M != RX_INF)) {
        uint64_t mn0 = RN(root)->mn, mx0 = RN(root)->mx;
        rx_raise(r, root, m);
        /* a lower bound is still sound: keep repetition counts under the limit */
        uint64_t cap = M != RX_INF && M > GRAM_MAX_REPEAT ? (m > GRAM_MAX_REPEAT ? m : GRAM_MAX_REPEAT) : M;
        rx_cap(r, root, cap);
        const rnode *rt = RN(root);
        if (rt->dead || rt->mn < m || rt->mx > M) {
            char mx_s[24];
            snprintf(mx_s, sizeof mx_s, mx0 == RX_INF ? "unbounded" : "%llu", (unsigned long long)mx0);
            rc = fail(c, KN_EINVAL,
                      "'pattern' /%.80s/ (matches of %llu to %s characters) cannot be limited to "
                      "'minLength'/'maxLength' %llu..%llu",
                      pat, (unsigned long long)mn0, mx_s, (unsigned long long)m, (unsigned long long)M);
        }
    }
    kn_buf alts = {0};
    if (rc == 0)
        rc = rx_emit_body(r, root, &alts) && put(c, b, "\"\\\"\" ") && to_item(c, b, &alts, "p") &&
                     put(c, b, " \"\\\"\"")
                 ? 0
                 : -1;
    kn_buf_free(&alts);
    kn_buf_free(&rs.txt);
    free(rs.nd);
    return rc;
}
#undef RN

/* ---- integer and number ranges --------------------------------------------------- */

static int ndigits(int64_t v) {
    int d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Decimal strings x <= y of the same length n: a sequence matching exactly
 * the numbers in [x, y] spelled with n digits. */
static bool range_same_len(sctx *c, kn_buf *b, const char *x, const char *y, int n) {
    if (n == 0) return true;
    if (x[0] == y[0]) {
        if (!putf(c, b, "\"%c\"", x[0])) return false;
        if (n > 1 && !put(c, b, " ")) return false;
        return range_same_len(c, b, x + 1, y + 1, n - 1);
    }
    bool xz = true, y9 = true;
    for (int i = 1; i < n; i++) {
        xz = xz && x[i] == '0';
        y9 = y9 && y[i] == '9';
    }
    char lo = (char)(x[0] + (xz ? 0 : 1)), hi = (char)(y[0] - (y9 ? 0 : 1));
    char nines[24], zeros[24];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    bool alt = false;
    if (!put(c, b, "( ")) return false;
    if (!xz) {
        if (!putf(c, b, "\"%c\" ", x[0]) || !range_same_len(c, b, x + 1, nines, n - 1)) return false;
        alt = true;
    }
    if (lo <= hi) {
        if (alt && !put(c, b, " | ")) return false;
        if (!(lo == hi ? putf(c, b, "\"%c\"", lo) : putf(c, b, "[%c-%c]", lo, hi))) return false;
        if (n > 1 && !putf(c, b, " [0-9]{%d}", n - 1)) return false;
        alt = true;
    }
    if (!y9) {
        if (alt && !put(c, b, " | ")) return false;
        if (!putf(c, b, "\"%c\" ", y[0]) || !range_same_len(c, b, zeros, y + 1, n - 1)) return false;
    }
    return put(c, b, " )");
}

/* Alternatives matching the decimal spellings of [a, hi] (a >= 0; hi < 0:
 * unbounded, up to max_d digits), no leading zeros. */
static bool uint_range(sctx *c, kn_buf *b, int64_t a, int64_t hi, int max_d) {
    int da = ndigits(a), db = hi < 0 ? max_d : ndigits(hi);
    bool first = true;
    int64_t p10 = 1;
    for (int i = 1; i < da; i++)
        p10 *= 10;
    for (int d = da; d <= db; d++, p10 = d <= 19 ? p10 * 10 : p10) {
        if (!first && !put(c, b, " | ")) return false;
        first = false;
        if (hi < 0 && d > da && d > 1) {
            /* every d-digit number */
            if (!putf(c, b, "[1-9] [0-9]{%d}", d - 1)) return false;
            continue;
        }
        char xs[24], ys[24];
        int64_t lo_d = d == da ? a : p10;
        snprintf(xs, sizeof xs, "%0*lld", d, (long long)lo_d);
        if (hi >= 0 && d == db) {
            snprintf(ys, sizeof ys, "%lld", (long long)hi);
        } else {
            memset(ys, '9', (size_t)d);
            ys[d] = 0;
        }
        if (!range_same_len(c, b, xs, ys, d)) return false;
    }
    return true;
}

/* Reads a numeric keyword; *set = false when absent. Draft-4 boolean
 * exclusive bounds are applied to minimum/maximum by the caller. */
static int num_kw(sctx *c, const json_t *s, const char *k, double *v, int64_t *iv, bool *set) {
    const json_t *x = json_object_get(s, k);
    *set = false;
    if (!x) return 0;
    if (json_is_boolean(x) && (!strcmp(k, "exclusiveMinimum") || !strcmp(k, "exclusiveMaximum"))) return 0;
    if (!json_is_number(x)) return fail(c, KN_EINVAL, "'%s' must be a number", k);
    *v = json_number_value(x);
    /* integers exactly (a double loses digits past 2^53); reals rounded toward the inside later */
    *iv = json_is_integer(x) ? (int64_t)json_integer_value(x) : 0;
    if (!json_is_integer(x) && fabs(*v) < 9e18) *iv = (int64_t)*v;
    if (!isfinite(*v)) return fail(c, KN_EINVAL, "'%s' must be finite", k);
    *set = true;
    return 0;
}

typedef struct bounds {
    double lo, hi;
    int64_t ilo, ihi; /* the same, exact for JSON integers */
    bool has_lo, has_hi, lo_excl, hi_excl;
} bounds;

static int read_bounds(sctx *c, const json_t *s, bounds *bd) {
    double v;
    int64_t iv = 0;
    bool set;
    *bd = (bounds){0};
    if (num_kw(c, s, "minimum", &v, &iv, &set)) return -1;
    if (set) {
        bd->lo = v;
        bd->ilo = iv;
        bd->has_lo = true;
        bd->lo_excl = json_is_true(json_object_get(s, "exclusiveMinimum"));
    }
    if (num_kw(c, s, "maximum", &v, &iv, &set)) return -1;
    if (set) {
        bd->hi = v;
        bd->ihi = iv;
        bd->has_hi = true;
        bd->hi_excl = json_is_true(json_object_get(s, "exclusiveMaximum"));
    }
    if (num_kw(c, s, "exclusiveMinimum", &v, &iv, &set)) return -1;
    if (set && (!bd->has_lo || v >= bd->lo)) {
        bd->lo = v;
        bd->ilo = iv;
        bd->has_lo = bd->lo_excl = true;
    }
    if (num_kw(c, s, "exclusiveMaximum", &v, &iv, &set)) return -1;
    if (set && (!bd->has_hi || v <= bd->hi)) {
        bd->hi = v;
        bd->ihi = iv;
        bd->has_hi = bd->hi_excl = true;
    }
    if (bd->has_lo && bd->has_hi && (bd->lo > bd->hi || (bd->lo == bd->hi && (bd->lo_excl || bd->hi_excl))))
        return fail(c, KN_EINVAL, "'minimum' %g > 'maximum' %g (no number is allowed)", bd->lo, bd->hi);
    return 0;
}

/* Integers in [lo, hi] (either side may be unbounded). */
static int integer_body(sctx *c, const json_t *s, kn_buf *b) {
    bounds bd;
    if (read_bounds(c, s, &bd)) return -1;
    if (!bd.has_lo && !bd.has_hi) return prim(c, b, P_INTEGER) ? 1 : -1;
    int64_t lo = 0, hi = 0;
    bool inf_lo = true, inf_hi = true;
    if (bd.has_lo) {
        double v = bd.lo_excl ? floor(bd.lo) + 1 : ceil(bd.lo);
        if (v >= (double)INT_LIMIT)
            return fail(c, KN_ERANGE, "'minimum' %g is over the supported range", bd.lo);
        if (v > -(double)INT_LIMIT) {
            lo = bd.lo == floor(bd.lo) ? bd.ilo + (bd.lo_excl ? 1 : 0) : (int64_t)v;
            inf_lo = false;
        }
    }
    if (bd.has_hi) {
        double v = bd.hi_excl ? ceil(bd.hi) - 1 : floor(bd.hi);
        if (v <= -(double)INT_LIMIT)
            return fail(c, KN_ERANGE, "'maximum' %g is under the supported range", bd.hi);
        if (v < (double)INT_LIMIT) {
            hi = bd.hi == floor(bd.hi) ? bd.ihi - (bd.hi_excl ? 1 : 0) : (int64_t)v;
            inf_hi = false;
        }
    }
    if (!inf_lo && !inf_hi && lo > hi)
        return fail(c, KN_EINVAL, "no integer between 'minimum' and 'maximum'");
    int max_d = NUM_DIGITS;
    if (!inf_lo && ndigits(lo < 0 ? -lo : lo) > max_d) max_d = ndigits(lo < 0 ? -lo : lo);
    if (!inf_hi && ndigits(hi < 0 ? -hi : hi) > max_d) max_d = ndigits(hi < 0 ? -hi : hi);
    bool alt = false;
    /* negatives: "-" then magnitudes [max(1, -hi), -lo] */
    if (inf_lo || lo < 0) {
        int64_t m_lo = (!inf_hi && hi < 0) ? -hi : 1, m_hi = inf_lo ? -1 : -lo;
        if (!put(c, b, "\"-\" ( ") || !uint_range(c, b, m_lo, m_hi, max_d) || !put(c, b, " )")) return -1;
        alt = true;
    }
    if (inf_hi || hi >= 0) {
        if (alt && !put(c, b, " | ")) return -1;
        if (!uint_range(c, b, inf_lo || lo < 0 ? 0 : lo, inf_hi ? -1 : hi, max_d)) return -1;
    }
    return 1;
}

/* Magnitudes m (digits, optional fraction, no exponent) with c_lo (<) m (<)
 * d (d < 0: unbounded), all integers. */
static bool mag_range(sctx *c, kn_buf *b, int64_t lo, bool lo_excl, int64_t hi, bool hi_excl, int max_d) {
    bool alt = false;
    int64_t first = lo;
    if (lo_excl) {
        if (hi < 0 || lo < hi) {
            if (!putf(c, b, "\"%lld\" \".\" \"0\"{0,15} [1-9] [0-9]{0,14}", (long long)lo)) return false;
            alt = true;
        }
        first = lo + 1;
    }
    if (hi < 0) {
        if (alt && !put(c, b, " | ")) return false;
        return put(c, b, "( ") && uint_range(c, b, first, -1, max_d) &&
               put(c, b, " ) ( \".\" [0-9]{1,16} )?");
    }
    if (first <= hi - 1) {
        if (alt && !put(c, b, " | ")) return false;
        if (!put(c, b, "( ") || !uint_range(c, b, first, hi - 1, max_d) ||
            !put(c, b, " ) ( \".\" [0-9]{1,16} )?"))
            return false;
        alt = true;
    }
    if (!hi_excl && hi >= first) {
        if (alt && !put(c, b, " | ")) return false;
        if (!putf(c, b, "\"%lld\" ( \".\" \"0\"{1,16} )?", (long long)hi)) return false;
        alt = true;
    }
    return alt || put(c, b, "\"\"");
}

static int number_body(sctx *c, const json_t *s, kn_buf *b) {
    bounds bd;
    if (read_bounds(c, s, &bd)) return -1;
    if (!bd.has_lo && !bd.has_hi) return prim(c, b, P_NUMBER) ? 1 : -1;
    if ((bd.has_lo && (bd.lo != floor(bd.lo) || fabs(bd.lo) >= (double)INT_LIMIT)) ||
        (bd.has_hi && (bd.hi != floor(bd.hi) || fabs(bd.hi) >= (double)INT_LIMIT)))
        return fail(c, KN_EINVAL,
                    "a bound of a 'number' that is not an integer (or is too large) is not supported; "
                    "bounds of numbers must be integers under 1e18");
    int64_t lo = bd.ilo, hi = bd.ihi;
    int max_d = NUM_DIGITS;
    if (bd.has_lo && ndigits(lo < 0 ? -lo : lo) > max_d) max_d = ndigits(lo < 0 ? -lo : lo);
    if (bd.has_hi && ndigits(hi < 0 ? -hi : hi) > max_d) max_d = ndigits(hi < 0 ? -hi : hi);
    bool alt = false;
    /* non-negative side: x in [max(lo, 0), hi] */
    if (!bd.has_hi || hi > 0 || (hi == 0 && !bd.hi_excl)) {
        int64_t a = bd.has_lo && lo >= 0 ? lo : 0;
        bool a_excl = bd.has_lo && lo >= 0 && bd.lo_excl;
        if (!put(c, b, "( ") || !mag_range(c, b, a, a_excl, bd.has_hi ? hi : -1, bd.hi_excl, max_d) ||
            !put(c, b, " )"))
            return -1;
        alt = true;
    }
    /* negative side: x = -m, m in [max(-hi, 0), -lo] with m > 0 */
    if (!bd.has_lo || lo < 0) {
        int64_t m_lo = bd.has_hi && hi < 0 ? -hi : 0;
        bool m_lo_excl = bd.has_hi && hi < 0 ? bd.hi_excl : true;
        if (alt && !put(c, b, " | ")) return -1;
        if (!put(c, b, "\"-\" ( ") ||
            !mag_range(c, b, m_lo, m_lo_excl, bd.has_lo ? -lo : -1, bd.lo_excl, max_d) || !put(c, b, " )"))
            return -1;
    }
    return 1;
}

/* ---- the walk ------------------------------------------------------------------------ */

static int body(sctx *c, const json_t *s, kn_buf *b);

/* One item (a rule name) for schema s at the current path; 0 when s accepts nothing. */
static int item(sctx *c, const json_t *s, kn_buf *b) {
    kn_buf t = {0};
    int r = body(c, s, &t);
    if (r == 1 && !to_item(c, b, &t, "s")) r = -1;
    kn_buf_free(&t);
    return r;
}

static int item_at(sctx *c, const json_t *s, kn_buf *b, const char *seg) {
    size_t old = path_push(c, seg);
    int r = item(c, s, b);
    if (r >= 0) path_pop(c, old);
    return r;
}

static int ref_item(sctx *c, const char *ref, kn_buf *b) {
    json_t *m = json_object_get(c->refs, ref);
    if (m) {
        int state = (int)json_integer_value(json_array_get(m, 1));
        if (state == 0 && (unsigned)json_integer_value(json_array_get(m, 2)) == c->barrier)
            return fail(c, KN_EINVAL, "$ref '%.100s' recurses into itself with no text in between", ref);
        if (state == 2) return 0;
        return put(c, b, c->prefix) && put(c, b, json_string_value(json_array_get(m, 0))) ? 1 : -1;
    }
    char ptr[512];
    const json_t *target = resolve(c, ref, ptr, sizeof ptr);
    if (!target) return -1;
    const char *last = strrchr(ptr, '/');
    char name[64];
    new_name(c, name, "ref", last ? last + 1 : "root");
    m = json_pack("[s,i,i]", name, 0, (json_int_t)c->barrier);
    if (!m || json_object_set_new(c->refs, ref, m)) return fail(c, KN_ENOMEM, "out of memory");
    char saved[sizeof c->path];
    size_t saved_pl = c->pl;
    memcpy(saved, c->path, sizeof saved);
    snprintf(c->path, sizeof c->path, "%s", ptr);
    c->pl = strlen(c->path);
    kn_buf t = {0};
    int r = body(c, target, &t);
    if (r >= 0) {
        memcpy(c->path, saved, sizeof saved);
        c->pl = saved_pl;
    }
    if (r == 1 && !emit_rule(c, name, t.p, t.n)) r = -1;
    kn_buf_free(&t);
    if (r < 0) return -1;
    json_array_set_new(m, 1, json_integer(r == 1 ? 1 : 2));
    return r == 1 ? (put(c, b, c->prefix) && put(c, b, name) ? 1 : -1) : 0;
}

/* ---- allOf: merging subschemas ---------------------------------------------------- */

typedef struct merge {
    json_t *dst;
    json_t *ap_props; /* array: the 'properties' (or null) of each subschema that limits extra properties */
    bool never;       /* the merged schema accepts nothing */
} merge;

enum { T_NULL = 1, T_BOOL = 2, T_OBJECT = 4, T_ARRAY = 8, T_NUMBER = 16, T_STRING = 32, T_INTEGER = 64 };
static const char *const TYPE_NAMES[] = {"null", "boolean", "object", "array", "number", "string", "integer"};

static int parse_types(sctx *c, const json_t *t, unsigned *out) {
    *out = 0;
    if (!t) {
        *out = T_NULL | T_BOOL | T_OBJECT | T_ARRAY | T_NUMBER | T_STRING;
        return 0;
    }
    if (json_is_string(t) || json_is_array(t)) {
        size_t n = json_is_array(t) ? json_array_size(t) : 1;
        if (n == 0) return fail(c, KN_EINVAL, "'type' is an empty array");
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_is_array(t) ? json_array_get(t, i) : t;
            const char *nm = json_string_value(e);
            unsigned bit = 0;
            for (unsigned k = 0; nm && k < 7; k++)
                if (!strcmp(nm, TYPE_NAMES[k])) bit = 1u << k;
            if (!bit) return fail(c, KN_EINVAL, "unknown 'type' '%.60s'", nm ? nm : "(not a string)");
            *out |= bit;
        }
        return 0;
    }
    return fail(c, KN_EINVAL, "'type' must be a string or an array of strings");
}

static json_t *types_json(unsigned t) {
    json_t *a = json_array();
    for (unsigned k = 0; k < 7; k++)
        if (t & (1u << k)) json_array_append_new(a, json_string(TYPE_NAMES[k]));
    return a;
}

static json_t *all_of2(const json_t *a, const json_t *b) {
    return json_pack("{s:[O,O]}", "allOf", a, b);
}

static int merge_into(sctx *c, merge *mg, const json_t *src, unsigned depth);

static int merge_key(sctx *c, merge *mg, const char *k, json_t *v) {
    json_t *d = json_object_get(mg->dst, k);
    if (!d) {
        /* copies of containers we may extend later, so the input is never changed */
        json_t *nv = (!strcmp(k, "properties") || !strcmp(k, "required")) ? json_copy(v) : json_incref(v);
        return json_object_set_new(mg->dst, k, nv) ? fail(c, KN_ENOMEM, "out of memory") : 0;
    }
    if (json_equal(d, v)) return 0;
    if (!strcmp(k, "properties")) {
        if (!json_is_object(v) || !json_is_object(d))
            return fail(c, KN_EINVAL, "'properties' must be an object");
        const char *pk;
        json_t *pv;
        json_object_foreach(v, pk, pv) {
            json_t *old = json_object_get(d, pk);
            if (json_object_set_new(d, pk, old ? all_of2(old, pv) : json_incref(pv)))
                return fail(c, KN_ENOMEM, "out of memory");
        }
        return 0;
    }
    if (!strcmp(k, "required")) {
        if (!json_is_array(v) || !json_is_array(d)) return fail(c, KN_EINVAL, "'required' must be an array");
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            bool have = false;
            for (size_t j = 0; j < json_array_size(d); j++)
                have = have || json_equal(json_array_get(d, j), e);
            if (!have) json_array_append(d, e);
        }
        return 0;
    }
    if (!strcmp(k, "type")) {
        unsigned a, bb;
        if (parse_types(c, d, &a) || parse_types(c, v, &bb)) return -1;
        unsigned r = a & bb;
        if ((a & T_INTEGER) && (bb & T_NUMBER)) r |= T_INTEGER;
        if ((bb & T_INTEGER) && (a & T_NUMBER)) r |= T_INTEGER;
        if (r & T_INTEGER) r &= ~(unsigned)T_NUMBER | (a & bb & T_NUMBER);
        if (!r)
            mg->never = true;
        else
            json_object_set_new(mg->dst, k, types_json(r));
        return 0;
    }
    bool is_min = !strcmp(k, "minLength") || !strcmp(k, "minItems") || !strcmp(k, "minimum") ||
                  !strcmp(k, "exclusiveMinimum") || !strcmp(k, "minProperties");
    bool is_max = !strcmp(k, "maxLength") || !strcmp(k, "maxItems") || !strcmp(k, "maximum") ||
                  !strcmp(k, "exclusiveMaximum") || !strcmp(k, "maxProperties");
    if ((is_min || is_max) && json_is_number(d) && json_is_number(v)) {
        double x = json_number_value(d), y = json_number_value(v);
        if (is_min ? y > x : y < x) json_object_set(mg->dst, k, v);
        return 0;
    }
    if (!strcmp(k, "enum")) {
        if (!json_is_array(d) || !json_is_array(v)) return fail(c, KN_EINVAL, "'enum' must be an array");
        json_t *r = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(d, i, e) {
            for (size_t j = 0; j < json_array_size(v); j++)
                if (json_equal(e, json_array_get(v, j))) {
                    json_array_append(r, e);
                    break;
                }
        }
        if (!json_array_size(r)) mg->never = true;
        json_object_set_new(mg->dst, k, r);
        return 0;
    }
    if (!strcmp(k, "const")) {
        mg->never = true;
        return 0;
    }
    if (!strcmp(k, "items") || !strcmp(k, "additionalItems")) {
        if (json_is_array(d) || json_is_array(v))
            return fail(c, KN_EINVAL, "allOf: two different '%s' arrays are not supported", k);
        json_object_set_new(mg->dst, k, all_of2(d, v));
        return 0;
    }
    if (!strcmp(k, "nullable")) {
        json_object_set_new(mg->dst, k, json_boolean(json_is_true(d) && json_is_true(v)));
        return 0;
    }
    return fail(c, KN_EINVAL, "allOf: subschemas with different '%s' are not supported", k);
}

static int merge_into(sctx *c, merge *mg, const json_t *src, unsigned depth) {
    if (++c->work > SCHEMA_MAX_WORK)
        return fail(c, KN_ERANGE, "schema too complex (over %u subschemas visited)", SCHEMA_MAX_WORK);
    if (depth > SCHEMA_MAX_DEPTH)
        return fail(c, KN_ERANGE, "allOf/$ref nested deeper than %u (a recursive allOf?)", SCHEMA_MAX_DEPTH);
    if (json_is_true(src)) return 0;
    if (json_is_false(src)) {
        mg->never = true;
        return 0;
    }
    if (!json_is_object(src)) return fail(c, KN_EINVAL, "a schema must be an object or a boolean");
    if (check_keys(c, src)) return -1;
    const json_t *ref = json_object_get(src, "$ref");
    if (ref) {
        if (!json_is_string(ref)) return fail(c, KN_EINVAL, "'$ref' must be a string");
        char ptr[512];
        const json_t *t = resolve(c, json_string_value(ref), ptr, sizeof ptr);
        if (!t || merge_into(c, mg, t, depth + 1)) return -1;
    }
    const json_t *all = json_object_get(src, "allOf");
    if (all) {
        if (!json_is_array(all) || !json_array_size(all))
            return fail(c, KN_EINVAL, "'allOf' must be a non-empty array");
        for (size_t i = 0; i < json_array_size(all); i++)
            if (merge_into(c, mg, json_array_get(all, i), depth + 1)) return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v) {
        if (!strcmp(k, "$ref") || !strcmp(k, "allOf") || in_list(IGNORED, k)) continue;
        if (merge_key(c, mg, k, v)) return -1;
    }
    const json_t *ap = json_object_get(src, "additionalProperties");
    if (ap && !json_is_true(ap)) {
        const json_t *pr = json_object_get(src, "properties");
        json_array_append_new(mg->ap_props, pr ? json_incref((json_t *)pr) : json_null());
    }
    return 0;
}

/* The merged schema for s (with allOf, or $ref with other keywords); owned by c->keep. */
static const json_t *merged(sctx *c, const json_t *s) {
    merge mg = {.dst = json_object(), .ap_props = json_array()};
    if (!mg.dst || !mg.ap_props) {
        fail(c, KN_ENOMEM, "out of memory");
        goto fail;
    }
    if (merge_into(c, &mg, s, c->depth)) goto fail;
    /* a subschema that limits extra properties must list every property the others name */
    if (json_array_size(mg.ap_props) > 0) {
        const json_t *props = json_object_get(mg.dst, "properties"),
                     *req = json_object_get(mg.dst, "required");
        for (size_t i = 0; i < json_array_size(mg.ap_props); i++) {
            const json_t *lim = json_array_get(mg.ap_props, i);
            const char *pk;
            json_t *pv;
            if (json_is_object(props)) json_object_foreach((json_t *)props, pk, pv) {
                    (void)pv;
                    if (!json_object_get(lim, pk)) {
                        fail(c, KN_EINVAL,
                             "allOf: property '%.60s' is limited by 'additionalProperties' of another "
                             "subschema "
                             "(not supported)",
                             pk);
                        goto fail;
                    }
                }
            for (size_t j = 0; json_is_array(req) && j < json_array_size(req); j++) {
                const char *rn = json_string_value(json_array_get(req, j));
                if (rn && !json_object_get(lim, rn) &&
                    (!json_is_object(props) || !json_object_get(props, rn))) {
                    fail(c, KN_EINVAL, "required property '%.60s' is not allowed by 'additionalProperties'",
                         rn);
                    goto fail;
                }
            }
        }
    }
    json_decref(mg.ap_props);
    if (mg.never) {
        json_decref(mg.dst);
        return json_false();
    }
    json_array_append_new(c->keep, mg.dst);
    return mg.dst;
fail:
    json_decref(mg.dst);
    json_decref(mg.ap_props);
    return NULL;
}

/* ---- objects ---------------------------------------------------------------------- */

typedef struct trie {
    uint32_t cp;
    bool end;
    uint32_t first, next; /* child list: index + 1, 0 = none */
} trie;

/* Rules for a key: any JSON string except the names in the array (one
 * spelling per code point, so a name cannot come back escaped). */
static int key_except(sctx *c, const json_t *names, kn_buf *b) {
    trie *t = calloc(1, sizeof *t);
    uint32_t n = 1, cap = 1;
    int rc = 0;
    if (!t) return fail(c, KN_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < json_array_size(names); i++) {
        const char *s = json_string_value(json_array_get(names, i));
        size_t len = json_string_length(json_array_get(names, i));
        uint32_t node = 0;
        gram_u8 u = {0};
        for (size_t j = 0; j < len && rc == 0; j++) {
            if (gram_u8_feed(&u, (uint8_t)s[j]) != GRAM_U8_DONE) continue;
            uint32_t ch = t[node].first, found = 0;
            for (; ch; ch = t[ch - 1].next)
                if (t[ch - 1].cp == u.cp) found = ch;
            if (!found) {
                if (n == cap) {
                    if (cap > (1u << 20)) {
                        rc = fail(c, KN_ERANGE, "too many property names");
                        break;
                    }
                    trie *nt = realloc(t, (size_t)cap * 2 * sizeof *t);
                    if (!nt) {
                        rc = fail(c, KN_ENOMEM, "out of memory");
                        break;
                    }
                    t = nt;
                    cap *= 2;
                }
                t[n] = (trie){.cp = u.cp, .next = t[node].first};
                t[node].first = found = ++n;
            }
            node = found - 1;
        }
        if (rc == 0) t[node].end = true;
    }
    /* one rule per node: name base + node index */
    char base[64];
    new_name(c, base, "k", NULL);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        kn_buf r = {0};
        cset others = {0};
        bool ok = true;
        int alts = 0;
        if (!t[i].end) {
            ok = put(c, &r, "\"\\\"\"");
            alts++;
        }
        for (uint32_t ch = t[i].first; ok && ch; ch = t[ch - 1].next) {
            cset one = {0};
            ok = (!alts || put(c, &r, " | ")) && cs_add(c, &one, t[ch - 1].cp, t[ch - 1].cp) &&
                 cs_add(c, &others, t[ch - 1].cp, t[ch - 1].cp);
            kn_buf e = {0};
            int k = ok ? put_set(c, &e, &one) : -1;
            ok = ok && k >= 0 &&
                 (k == 1 ? put_n(c, &r, e.p, e.n)
                         : (put(c, &r, "( ") && put_n(c, &r, e.p, e.n) && put(c, &r, " )"))) &&
                 putf(c, &r, " %s%s-%u", c->prefix, base, ch - 1);
            kn_buf_free(&e);
            free(one.r);
            alts++;
        }
        if (ok) ok = cs_negate(c, &others);
        if (ok) {
            kn_buf e = {0};
            int k = put_set(c, &e, &others);
            if (k > 0)
                ok = (!alts || put(c, &r, " | ")) && put(c, &r, "( ") && put_n(c, &r, e.p, e.n) &&
                     put(c, &r, " ) ") && prim(c, &r, P_KCHAR) && put(c, &r, "* \"\\\"\"");
            ok = ok && k >= 0;
            kn_buf_free(&e);
        }
        char nm[96];
        snprintf(nm, sizeof nm, "%s-%u", base, i);
        if (ok) ok = emit_rule(c, nm, r.p, r.n);
        kn_buf_free(&r);
        free(others.r);
        if (!ok) rc = -1;
    }
    free(t);
    if (rc == 0 && !(put(c, b, "\"\\\"\" ") && putf(c, b, "%s%s-0", c->prefix, base))) rc = -1;
    return rc;
}

typedef struct prop {
    kn_buf kv; /* "key" ":" ws value */
    bool required;
} prop;

static int count_kw(sctx *c, const json_t *s, const char *k, uint64_t *v, bool *set);

/* " ( "," ws x ){lo,hi}" (hi UINT64_MAX: unbounded); nothing when hi is 0. */
static bool put_more(sctx *c, kn_buf *t, const kn_buf *x, uint64_t lo, uint64_t hi) {
    if (hi == 0) return true;
    if (!(put(c, t, " ( \",\" ") && prim(c, t, P_WS) && put(c, t, " ") && put_n(c, t, x->p, x->n)))
        return false;
    if (hi == UINT64_MAX)
        return lo == 0   ? put(c, t, " )*")
               : lo == 1 ? put(c, t, " )+")
                         : putf(c, t, " ){%llu,}", (unsigned long long)lo);
    if (lo == 0 && hi == 1) return put(c, t, " )?");
    return putf(c, t, " ){%llu,%llu}", (unsigned long long)lo, (unsigned long long)hi);
}

static int object_body(sctx *c, const json_t *s, kn_buf *b) {
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
                 *ap = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return fail(c, KN_EINVAL, "'properties' must be an object");
    if (req && !json_is_array(req)) return fail(c, KN_EINVAL, "'required' must be an array of strings");
    for (size_t i = 0; i < json_array_size(req); i++)
        if (!json_is_string(json_array_get(req, i)))
            return fail(c, KN_EINVAL, "'required' must be an array of strings");
    if (ap && !json_is_boolean(ap) && !json_is_object(ap))
        return fail(c, KN_EINVAL, "'additionalProperties' must be a schema");
    uint64_t min_p = 0, max_p = UINT64_MAX, pv;
    bool pset;
    if (count_kw(c, s, "minProperties", &pv, &pset)) return -1;
    if (pset) min_p = pv;
    if (count_kw(c, s, "maxProperties", &pv, &pset)) return -1;
    if (pset) max_p = pv;
    if (min_p > max_p)
        return fail(c, KN_EINVAL, "'minProperties' %llu > 'maxProperties' %llu", (unsigned long long)min_p,
                    (unsigned long long)max_p);
    size_t np = json_object_size(props) + json_array_size(req);
    prop *pr = calloc(np + 1, sizeof *pr);
    json_t *names = json_array();
    kn_buf extra = {0}, t = {0};
    size_t n = 0;
    int rc = 1;
    if (!pr || !names) {
        rc = fail(c, KN_ENOMEM, "out of memory");
        goto out;
    }
    /* the value schema of extra properties. Absent additionalProperties
     * beside `properties` emits no extra members (as llama.cpp and OpenAI's
     * strict mode do): every answer still validates, and a model cannot
     * wander into keys the schema never names */
    bool has_extra = false, open_extra = true;
    if (!ap || json_is_true(ap)) {
        has_extra = prim(c, &extra, P_VALUE);
        open_extra = ap || !props;
    } else if (json_is_object(ap)) {
        int r = item_at(c, ap, &extra, "additionalProperties");
        if (r < 0) goto fail;
        has_extra = r == 1;
    }
    const char *k;
    json_t *v;
    size_t old = path_push(c, "properties");
    json_object_foreach((json_t *)props, k, v) {
        bool required = false;
        for (size_t i = 0; i < json_array_size(req); i++)
            required = required || !strcmp(json_string_value(json_array_get(req, i)), k);
        json_array_append_new(names, json_string(k));
        kn_buf val = {0};
        int r = item_at(c, v, &val, k);
        if (r < 0) {
            kn_buf_free(&val);
            goto fail;
        }
        if (r == 0) {
            kn_buf_free(&val);
            if (required) {
                path_pop(c, old);
                rc = 0; /* a required property that can have no value */
                goto out;
            }
            continue;
        }
        char *key =
            json_dumps(json_array_get(names, json_array_size(names) - 1), JSON_ENCODE_ANY | JSON_COMPACT);
        bool ok = key && put_lit(c, &pr[n].kv, key, strlen(key)) && put(c, &pr[n].kv, " \":\" ") &&
                  prim(c, &pr[n].kv, P_WS) && put(c, &pr[n].kv, " ") && put_n(c, &pr[n].kv, val.p, val.n);
        free(key);
        kn_buf_free(&val);
        pr[n++].required = required;
        if (!ok) goto fail;
    }
    path_pop(c, old);
    /* required names that are not in properties: extra properties that must be there */
    for (size_t i = 0; i < json_array_size(req); i++) {
        const json_t *rn = json_array_get(req, i);
        if (props && json_object_get(props, json_string_value(rn))) continue;
        bool dup = false;
        for (size_t j = 0; j < json_array_size(names); j++)
            dup = dup || json_equal(json_array_get(names, j), rn);
        if (dup) continue;
        if (!has_extra) {
            rc =
                fail(c, KN_EINVAL,
                     "required property '%.60s' is not in 'properties' and 'additionalProperties' forbids it",
                     json_string_value(rn));
            goto out;
        }
        json_array_append(names, (json_t *)rn);
        char *key = json_dumps(rn, JSON_ENCODE_ANY | JSON_COMPACT);
        bool ok = key && put_lit(c, &pr[n].kv, key, strlen(key)) && put(c, &pr[n].kv, " \":\" ") &&
                  prim(c, &pr[n].kv, P_WS) && put(c, &pr[n].kv, " ") && put_n(c, &pr[n].kv, extra.p, extra.n);
        free(key);
        pr[n++].required = true;
        if (!ok) goto fail;
    }
    /* maxProperties: at most max_p listed members can appear (optional ones
     * past the budget are left out), extra ones fill the rest */
    size_t n_req = 0;
    for (size_t i = 0; i < n; i++)
        n_req += pr[i].required;
    if (n_req > max_p) {
        rc = fail(c, KN_EINVAL,
                  "'maxProperties' %llu is less than the %zu required properties (no object is allowed)",
                  (unsigned long long)max_p, n_req);
        goto out;
    }
    if (n > max_p) {
        size_t keep_opt = (size_t)max_p - n_req, k2 = 0;
        for (size_t i = 0; i < n; i++) {
            if (!pr[i].required && keep_opt == 0) {
                kn_buf_free(&pr[i].kv);
                continue;
            }
            if (!pr[i].required) keep_opt--;
            prop tmp = pr[i];
            pr[i] = (prop){0};
            pr[k2++] = tmp;
        }
        n = k2;
    }
    /* minProperties: optional members become required, in order, then extra
     * members are required */
    for (size_t i = 0; i < n && n_req < min_p; i++)
        if (!pr[i].required) {
            pr[i].required = true;
            n_req++;
        }
    uint64_t x_lo = min_p > n ? min_p - n : 0, x_hi = max_p == UINT64_MAX ? UINT64_MAX : max_p - n;
    if (x_lo > 0 && !open_extra && has_extra) open_extra = true; /* the schema allows them: write them */
    if (x_lo > 0 && !has_extra) {
        rc = fail(c, KN_EINVAL,
                  "'minProperties' %llu needs more properties than 'properties' lists and "
                  "'additionalProperties' forbids others (no object is allowed)",
                  (unsigned long long)min_p);
        goto out;
    }
    if (x_lo > 1) {
        /* two extra members may repeat a name (JSON keeps one): only one can be required */
        rc = fail(c, KN_EINVAL,
                  "'minProperties' %llu needs %llu additional properties with distinct names (at most 1 is "
                  "supported)",
                  (unsigned long long)min_p, (unsigned long long)x_lo);
        goto out;
    }
    if (x_hi != UINT64_MAX && x_hi > GRAM_MAX_REPEAT) x_hi = GRAM_MAX_REPEAT; /* fewer: still valid */
    /* extra members: a key none of the names, then the value */
    if (!open_extra || x_hi == 0) has_extra = false;
    kn_buf xkv = {0};
    if (has_extra) {
        bool ok;
        if (json_array_size(names)) {
            ok = key_except(c, names, &xkv) == 0;
        } else {
            ok = prim(c, &xkv, P_STRING);
        }
        ok = ok && put(c, &xkv, " \":\" ") && prim(c, &xkv, P_WS) && put(c, &xkv, " ") &&
             put_n(c, &xkv, extra.p, extra.n);
        if (ok) {
            kn_buf tmp = {0};
            ok = to_item(c, &tmp, &xkv, "x");
            kn_buf_free(&xkv);
            xkv = tmp;
        }
        if (!ok) {
            kn_buf_free(&xkv);
            goto fail;
        }
    }
    /* rest(i): members i.. after at least one member, each with its comma */
    size_t first_req = n;
    for (size_t i = 0; i < n; i++)
        if (pr[i].required) {
            first_req = i;
            break;
        }
    bool ok = true;
#define REST_ITEM(i)                                                                                         \
    (pr[i].required ? (put(c, &t, " \",\" ") && prim(c, &t, P_WS) && put(c, &t, " ") &&                      \
                       put_n(c, &t, pr[i].kv.p, pr[i].kv.n))                                                 \
                    : (put(c, &t, " ( \",\" ") && prim(c, &t, P_WS) && put(c, &t, " ") &&                    \
                       put_n(c, &t, pr[i].kv.p, pr[i].kv.n) && put(c, &t, " )?")))
#define EXTRA_TAIL() (!has_extra || put_more(c, &t, &xkv, x_lo, x_hi))
    /* after a first extra member */
#define EXTRA_REST() (put_more(c, &t, &xkv, x_lo ? x_lo - 1 : 0, x_hi == UINT64_MAX ? UINT64_MAX : x_hi - 1))
    if (first_req == 0 || n == 0) {
        ok = put(c, &t, "\"{\" ");
        if (n == 0) {
            if (has_extra)
                ok = ok && put(c, &t, "( ") && put_n(c, &t, xkv.p, xkv.n) && EXTRA_REST() &&
                     put(c, &t, x_lo ? " )" : " )?");
        } else {
            ok = ok && put_n(c, &t, pr[0].kv.p, pr[0].kv.n);
            for (size_t i = 1; ok && i < n; i++)
                ok = REST_ITEM(i);
            ok = ok && EXTRA_TAIL();
        }
        ok = ok && put(c, &t, " \"}\"");
    } else {
        /* leading optional members: rest-i rules and first-i rules */
        char base[64];
        new_name(c, base, "o", NULL);
        kn_buf saved = t;
        for (size_t i = n + 1; ok && i-- > 1;) {
            t = (kn_buf){0};
            if (i < n)
                ok = REST_ITEM(i) && putf(c, &t, " %s%s-r%zu", c->prefix, base, i + 1);
            else
                ok = EXTRA_TAIL();
            char nm[96];
            snprintf(nm, sizeof nm, "%s-r%zu", base, i);
            ok = ok && emit_rule(c, nm, t.p, t.n);
            kn_buf_free(&t);
        }
        for (size_t i = first_req + 1; ok && i-- > 0;) {
            t = (kn_buf){0};
            if (i < n) {
                ok =
                    put_n(c, &t, pr[i].kv.p, pr[i].kv.n) && putf(c, &t, " %s%s-r%zu", c->prefix, base, i + 1);
                if (ok && !pr[i].required) ok = putf(c, &t, " | %s%s-f%zu", c->prefix, base, i + 1);
            } else if (has_extra) {
                ok = put_n(c, &t, xkv.p, xkv.n) && EXTRA_REST() && put(c, &t, " | \"\"");
            }
            char nm[96];
            snprintf(nm, sizeof nm, "%s-f%zu", base, i);
            ok = ok && emit_rule(c, nm, t.p, t.n);
            kn_buf_free(&t);
        }
        t = saved;
        ok = ok && putf(c, &t, "\"{\" %s%s-f0 \"}\"", c->prefix, base);
    }
#undef REST_ITEM
#undef EXTRA_TAIL
#undef EXTRA_REST
    kn_buf_free(&xkv);
    if (!ok) goto fail;
    rc = put_n(c, b, t.p, t.n) ? 1 : -1;
    goto out;
fail:
    rc = -1;
out:
    for (size_t i = 0; pr && i < np + 1; i++)
        kn_buf_free(&pr[i].kv);
    free(pr);
    json_decref(names);
    kn_buf_free(&extra);
    kn_buf_free(&t);
    return rc;
}

/* ---- arrays ------------------------------------------------------------------------ */

static int count_kw(sctx *c, const json_t *s, const char *k, uint64_t *v, bool *set) {
    const json_t *x = json_object_get(s, k);
    *set = false;
    if (!x) return 0;
    double d = json_number_value(x);
    if (!json_is_number(x) || d < 0 || d != floor(d))
        return fail(c, KN_EINVAL, "'%s' must be a non-negative integer", k);
    *v = d > 1e15 ? (uint64_t)1e15 : (uint64_t)d;
    *set = true;
    return 0;
}

static int array_body(sctx *c, const json_t *s, kn_buf *b) {
    uint64_t m = 0, M = UINT64_MAX, v;
    bool set;
    if (count_kw(c, s, "minItems", &v, &set)) return -1;
    if (set) m = v;
    if (count_kw(c, s, "maxItems", &v, &set)) return -1;
    if (set) M = v;
    if (m > M)
        return fail(c, KN_EINVAL, "'minItems' %llu > 'maxItems' %llu", (unsigned long long)m,
                    (unsigned long long)M);
    if (m > GRAM_MAX_REPEAT || (M != UINT64_MAX && M > GRAM_MAX_REPEAT))
        return fail(c, KN_ERANGE, "'minItems'/'maxItems' over the limit of %u", GRAM_MAX_REPEAT);
    const json_t *prefix = json_object_get(s, "prefixItems"), *items = json_object_get(s, "items"),
                 *rest = NULL;
    const char *prefix_kw = "prefixItems", *rest_kw = "items";
    if (prefix) {
        rest = items;
    } else if (json_is_array(items)) {
        prefix = items;
        prefix_kw = "items";
        rest = json_object_get(s, "additionalItems");
        rest_kw = "additionalItems";
    } else {
        rest = items;
    }
    if (prefix && !json_is_array(prefix))
        return fail(c, KN_EINVAL, "'%s' must be an array of schemas", prefix_kw);
    if (rest && json_is_array(rest)) return fail(c, KN_EINVAL, "'%s' must be a schema", rest_kw);
    size_t k = json_array_size(prefix);
    if (k > GRAM_MAX_REPEAT) return fail(c, KN_ERANGE, "'%s' longer than %u", prefix_kw, GRAM_MAX_REPEAT);
    kn_buf *its = calloc(k + 1, sizeof *its), t = {0};
    if (!its) return fail(c, KN_ENOMEM, "out of memory");
    int rc = 1;
    uint64_t cap = UINT64_MAX;
    for (size_t i = 0; i < k; i++) {
        size_t old = path_push_i(c, prefix_kw, i);
        int r = item(c, json_array_get(prefix, i), &its[i]);
        if (r < 0) goto fail;
        path_pop(c, old);
        if (r == 0) {
            cap = i;
            break;
        }
    }
    if (cap == UINT64_MAX) {
        if (rest) {
            int r = item_at(c, rest, &its[k], rest_kw);
            if (r < 0) goto fail;
            if (r == 0) cap = k;
        } else if (!prim(c, &its[k], P_VALUE)) {
            goto fail;
        }
    }
    uint64_t Mx = M < cap ? M : cap;
    if (m > Mx) {
        rc = 0;
        goto out;
    }
    bool ok = true;
    if (Mx == 0) {
        ok = put(c, &t, "\"[\" \"]\"");
    } else {
        /* elements from index i on, each after a comma */
        kn_buf tail = {0};
        uint64_t i = 1;
        char base[64] = "";
        /* optional prefix elements need rules: t-i ::= "," ws it[i] t-(i+1)? */
        size_t n_opt_rules = 0;
        for (uint64_t j = 1; j < k && j < Mx; j++)
            if (j >= m) n_opt_rules++;
        if (n_opt_rules) new_name(c, base, "a", NULL);
        for (; ok && i < k && i < Mx && i < m; i++)
            ok = put(c, &tail, " \",\" ") && prim(c, &tail, P_WS) && put(c, &tail, " ") &&
                 put_n(c, &tail, its[i].p, its[i].n);
        if (ok && i < k && i < Mx) {
            /* rules for optional prefix elements i..min(k, Mx)-1, then the rest */
            uint64_t end = k < Mx ? k : Mx;
            for (uint64_t j = end; ok && j-- > i;) {
                kn_buf r = {0};
                ok = put(c, &r, "\",\" ") && prim(c, &r, P_WS) && put(c, &r, " ") &&
                     put_n(c, &r, its[j].p, its[j].n);
                if (ok && j + 1 < end)
                    ok = putf(c, &r, " %s%s-%llu?", c->prefix, base, (unsigned long long)(j + 1));
                else if (ok && end == k && Mx > k)
                    ok = put(c, &r, " ( \",\" ") && prim(c, &r, P_WS) && put(c, &r, " ") &&
                         put_n(c, &r, its[k].p, its[k].n) &&
                         (Mx == UINT64_MAX ? put(c, &r, " )*")
                                           : putf(c, &r, " ){0,%llu}", (unsigned long long)(Mx - k)));
                char nm[96];
                snprintf(nm, sizeof nm, "%s-%llu", base, (unsigned long long)j);
                ok = ok && emit_rule(c, nm, r.p, r.n);
                kn_buf_free(&r);
            }
            ok = ok && putf(c, &tail, " %s%s-%llu?", c->prefix, base, (unsigned long long)i);
        } else if (ok && Mx > i) {
            /* rest elements: i >= k */
            uint64_t lo = m > i ? m - i : 0;
            ok = put(c, &tail, " ( \",\" ") && prim(c, &tail, P_WS) && put(c, &tail, " ") &&
                 put_n(c, &tail, its[k].p, its[k].n);
            if (ok) {
                if (Mx == UINT64_MAX)
                    ok = lo == 0 ? put(c, &tail, " )*") : putf(c, &tail, " ){%llu,}", (unsigned long long)lo);
                else
                    ok =
                        putf(c, &tail, " ){%llu,%llu}", (unsigned long long)lo, (unsigned long long)(Mx - i));
            }
        }
        const kn_buf *first = k > 0 ? &its[0] : &its[k];
        if (ok) {
            if (m >= 1)
                ok = put(c, &t, "\"[\" ") && put_n(c, &t, first->p, first->n) &&
                     put_n(c, &t, tail.p, tail.n) && put(c, &t, " \"]\"");
            else
                ok = put(c, &t, "\"[\" ( ") && put_n(c, &t, first->p, first->n) &&
                     put_n(c, &t, tail.p, tail.n) && put(c, &t, " )? \"]\"");
        }
        kn_buf_free(&tail);
    }
    if (!ok) goto fail;
    rc = put_n(c, b, t.p, t.n) ? 1 : -1;
    goto out;
fail:
    rc = -1;
out:
    for (size_t i = 0; i <= k; i++)
        kn_buf_free(&its[i]);
    free(its);
    kn_buf_free(&t);
    return rc;
}

/* ---- strings --------------------------------------------------------------------- */

/* The formats ajv-formats defines for numbers (the others apply to strings only). */
static bool number_format(const json_t *f) {
    static const char *const NF[] = {"int32", "int64", "float", "double", NULL};
    return json_is_string(f) && in_list(NF, json_string_value(f));
}

static int string_body(sctx *c, const json_t *s, kn_buf *b) {
    uint64_t m = 0, M = UINT64_MAX, v;
    bool set, has_len;
    if (count_kw(c, s, "minLength", &v, &set)) return -1;
    if (set) m = v;
    has_len = set;
    if (count_kw(c, s, "maxLength", &v, &set)) return -1;
    if (set) M = v;
    has_len = has_len || set;
    if (m > M)
        return fail(c, KN_EINVAL, "'minLength' %llu > 'maxLength' %llu", (unsigned long long)m,
                    (unsigned long long)M);
    const json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    if (number_format(fmt)) fmt = NULL; /* does not apply to strings */
    if (fmt && !json_is_string(fmt)) return fail(c, KN_EINVAL, "'format' must be a string");
    if (pat && !json_is_string(pat)) return fail(c, KN_EINVAL, "'pattern' must be a string");
    if (fmt && pat) return fail(c, KN_EINVAL, "combining 'format' and 'pattern' is not supported");
    if (fmt) {
        /* each format's grammar with the lengths of its strings (code points) */
        static const struct {
            const char *name;
            int p;
            unsigned mn, mx;
        } FORMATS[] = {
            {"date", P_DATE, 10, 10}, {"time", P_TIME, 9, 24},          {"date-time", P_DATETIME, 20, 35},
            {"uuid", P_UUID, 36, 36}, {"email", P_EMAIL, 6, 320},       {"ipv4", P_IPV4, 7, 15},
            {"ipv6", P_IPV6, 2, 39},  {"hostname", P_HOSTNAME, 1, 191}, {"uri", P_URI, 8, 463}};
        const char *f = json_string_value(fmt);
        for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++) {
            if (strcmp(f, FORMATS[i].name)) continue;
            if (m > FORMATS[i].mn || M < FORMATS[i].mx)
                return fail(
                    c, KN_EINVAL,
                    "'format' '%s' (strings of %u to %u characters here) with 'minLength'/'maxLength' "
                    "%llu..%llu is not supported",
                    f, FORMATS[i].mn, FORMATS[i].mx, (unsigned long long)m, (unsigned long long)M);
            return put(c, b, "\"\\\"\" ") && prim(c, b, FORMATS[i].p) && put(c, b, " \"\\\"\"") ? 1 : -1;
        }
        return fail(
            c, KN_EINVAL,
            "unsupported 'format' '%.60s' (supported: date, time, date-time, uuid, email, ipv4, ipv6, "
            "hostname, uri)",
            f);
    }
    if (pat)
        return string_pattern(c, json_string_value(pat), json_string_length(pat), m,
                              M == UINT64_MAX ? RX_INF : M, b)
                   ? -1
                   : 1;
    if (!has_len) return prim(c, b, P_STRING) ? 1 : -1;
    if (m > GRAM_MAX_REPEAT || (M != UINT64_MAX && M > GRAM_MAX_REPEAT))
        return fail(c, KN_ERANGE, "'minLength'/'maxLength' over the limit of %u", GRAM_MAX_REPEAT);
    bool ok = put(c, b, "\"\\\"\" ") && prim(c, b, P_CHAR);
    if (M == UINT64_MAX)
        ok = ok && (m == 0   ? put(c, b, "*")
                    : m == 1 ? put(c, b, "+")
                             : putf(c, b, "{%llu,}", (unsigned long long)m));
    else
        ok = ok && putf(c, b, "{%llu,%llu}", (unsigned long long)m, (unsigned long long)M);
    return ok && put(c, b, " \"\\\"\"") ? 1 : -1;
}

/* ---- enum / const ---------------------------------------------------------------- */

static bool value_has_type(const json_t *v, unsigned types) {
    switch (json_typeof(v)) {
    case JSON_NULL: return types & T_NULL;
    case JSON_TRUE:
    case JSON_FALSE: return types & T_BOOL;
    case JSON_OBJECT: return types & T_OBJECT;
    case JSON_ARRAY: return types & T_ARRAY;
    case JSON_STRING: return types & T_STRING;
    case JSON_INTEGER: return types & (T_NUMBER | T_INTEGER);
    case JSON_REAL: {
        double d = json_real_value(v);
        return (types & T_NUMBER) || ((types & T_INTEGER) && d == floor(d) && fabs(d) < 1e300);
    }
    }
    return false;
}

/* v as compact JSON, reals with the fewest digits that read back equal. */
static char *compact_json(const json_t *v) {
    for (int prec = 15; prec <= 17; prec++) {
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(prec));
        if (!txt || prec == 17) return txt;
        json_t *back = json_loads(txt, JSON_DECODE_ANY, NULL);
        bool same = back && json_equal(back, v);
        json_decref(back);
        if (same) return txt;
        free(txt);
    }
    return NULL;
}

static int enum_body(sctx *c, const json_t *s, unsigned types, kn_buf *b) {
    static const char *const WITH[] = {"enum", "const", "type", "nullable", NULL};
    const json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    if (has_constraint(s, WITH)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)s, k, v) {
            (void)v;
            if (in_list(HANDLED, k) && !in_list(WITH, k))
                return fail(c, KN_EINVAL, "'%s' combined with '%.60s' is not supported",
                            en ? "enum" : "const", k);
        }
    }
    if (en && !json_is_array(en)) return fail(c, KN_EINVAL, "'enum' must be an array");
    if (en && !json_array_size(en)) return fail(c, KN_EINVAL, "'enum' is empty (no value is allowed)");
    int n_alt = 0;
    size_t n = en ? json_array_size(en) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = en ? json_array_get(en, i) : cn;
        if (en && cn && !json_equal(v, cn)) continue;
        if (!value_has_type(v, types)) continue;
        bool dup = false;
        for (size_t j = 0; en && j < i; j++)
            dup = dup || json_equal(json_array_get(en, j), v);
        if (dup) continue;
        char *txt = compact_json(v);
        if (!txt) return fail(c, KN_ENOMEM, "out of memory");
        bool ok = (!n_alt || put(c, b, " | ")) && put_lit(c, b, txt, strlen(txt));
        free(txt);
        if (!ok) return -1;
        n_alt++;
    }
    return n_alt > 0;
}

/* ---- body ----------------------------------------------------------------------- */

static int alternatives(sctx *c, const json_t *s, const char *kw, kn_buf *b) {
    static const char *const SELF[] = {"anyOf", "oneOf", NULL};
    const json_t *alts = json_object_get(s, kw);
    if (!json_is_array(alts) || !json_array_size(alts))
        return fail(c, KN_EINVAL, "'%s' must be a non-empty array", kw);
    json_t *rest = NULL;
    if (has_constraint(s, SELF)) {
        rest = json_copy((json_t *)s);
        if (!rest) return fail(c, KN_ENOMEM, "out of memory");
        json_object_del(rest, kw);
        json_array_append_new(c->keep, rest);
    }
    int n = 0;
    for (size_t i = 0; i < json_array_size(alts); i++) {
        const json_t *a = json_array_get(alts, i);
        json_t *sch = (json_t *)a;
        if (rest) {
            sch = all_of2(rest, a);
            if (!sch) return fail(c, KN_ENOMEM, "out of memory");
            json_array_append_new(c->keep, sch);
        }
        kn_buf t = {0};
        size_t old = path_push_i(c, kw, i);
        int r = item(c, sch, &t);
        if (r >= 0) path_pop(c, old);
        bool ok = r < 0 || r == 0 || ((!n || put(c, b, " | ")) && put_n(c, b, t.p, t.n));
        kn_buf_free(&t);
        if (r < 0 || !ok) return -1;
        n += r;
    }
    return n > 0;
}

static int body(sctx *c, const json_t *s, kn_buf *b) {
    if (++c->work > SCHEMA_MAX_WORK)
        return fail(c, KN_ERANGE, "schema too complex (over %u subschemas visited)", SCHEMA_MAX_WORK);
    if (json_is_true(s)) return prim(c, b, P_VALUE) ? 1 : -1;
    if (json_is_false(s)) return 0;
    if (!json_is_object(s)) return fail(c, KN_EINVAL, "a schema must be an object or a boolean");
    if (c->depth >= SCHEMA_MAX_DEPTH)
        return fail(c, KN_ERANGE, "schema nested deeper than %u", SCHEMA_MAX_DEPTH);
    if (check_keys(c, s)) return -1;
    c->depth++;
    int r = -1;
    static const char *const REF_ONLY[] = {"$ref", NULL};
    const json_t *ref = json_object_get(s, "$ref");
    if (ref && !json_is_string(ref)) {
        r = fail(c, KN_EINVAL, "'$ref' must be a string");
    } else if (json_object_get(s, "allOf") || (ref && has_constraint(s, REF_ONLY))) {
        const json_t *m = merged(c, s);
        if (m) {
            c->depth++;
            r = body(c, m, b);
            c->depth--;
        }
    } else if (ref) {
        r = ref_item(c, json_string_value(ref), b);
    } else if (json_object_get(s, "anyOf") && json_object_get(s, "oneOf")) {
        r = fail(c, KN_EINVAL, "'anyOf' and 'oneOf' together are not supported");
    } else if (json_object_get(s, "anyOf") || json_object_get(s, "oneOf")) {
        r = alternatives(c, s, json_object_get(s, "anyOf") ? "anyOf" : "oneOf", b);
    } else {
        unsigned types;
        const json_t *nl = json_object_get(s, "nullable");
        if (nl && !json_is_boolean(nl)) {
            r = fail(c, KN_EINVAL, "'nullable' must be a boolean");
        } else if (!has_constraint(s, (const char *const[]){NULL})) {
            r = prim(c, b, P_VALUE) ? 1 : -1; /* no constraint: any value */
        } else if (parse_types(c, json_object_get(s, "type"), &types) == 0) {
            if (json_is_true(nl)) types |= T_NULL;
            if (json_object_get(s, "enum") || json_object_get(s, "const")) {
                r = enum_body(c, s, types, b);
            } else {
                if ((types & T_NUMBER) && (types & T_INTEGER)) types &= ~(unsigned)T_INTEGER;
                r = 0;
                static const unsigned ORDER[] = {T_OBJECT,  T_ARRAY, T_STRING, T_NUMBER,
                                                 T_INTEGER, T_BOOL,  T_NULL};
                for (size_t i = 0; i < 7 && r >= 0; i++) {
                    if (!(types & ORDER[i])) continue;
                    kn_buf t = {0};
                    int q;
                    switch (ORDER[i]) {
                    case T_OBJECT:
                    case T_ARRAY:
                        /* inside, text has been taken: a $ref back to a rule in progress is fine */
                        c->barrier++;
                        q = ORDER[i] == T_OBJECT ? object_body(c, s, &t) : array_body(c, s, &t);
                        c->barrier--;
                        break;
                    case T_STRING: q = string_body(c, s, &t); break;
                    case T_NUMBER:
                    case T_INTEGER:
                        if (number_format(json_object_get(s, "format")))
                            q = fail(c, KN_EINVAL, "'format' '%s' on numbers is not supported",
                                     json_string_value(json_object_get(s, "format")));
                        else
                            q = ORDER[i] == T_NUMBER ? number_body(c, s, &t) : integer_body(c, s, &t);
                        break;
                    case T_BOOL: q = prim(c, &t, P_BOOL) ? 1 : -1; break;
                    default: q = prim(c, &t, P_NULL) ? 1 : -1; break;
                    }
                    if (q == 1 && !((r == 0 || put(c, b, " | ")) && put_n(c, b, t.p, t.n))) q = -1;
                    kn_buf_free(&t);
                    if (q < 0)
                        r = -1;
                    else if (q == 1)
                        r = 1;
                }
            }
        }
    }
    c->depth--;
    return r;
}

/* ---- entry points ----------------------------------------------------------------- */

static bool valid_prefix(const char *p) {
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

kn_status gram_schema_rules(const json_t *schema, const char *prefix, kn_buf *out, kn_err *err) {
    if (!prefix) prefix = "";
    if (!schema) return kn_fail(err, KN_EINVAL, "no schema");
    if (strlen(prefix) > 64 || !valid_prefix(prefix))
        return kn_fail(err, KN_EINVAL, "bad rule prefix '%.64s' (letters, digits and '-')", prefix);
    sctx c = {.root = schema, .prefix = prefix, .out = out, .err = err};
    c.refs = json_object();
    c.rule_where = json_object();
    c.keep = json_array();
    size_t start = out->n;
    if (!c.refs || !c.rule_where || !c.keep) {
        fail(&c, KN_ENOMEM, "out of memory");
    } else {
        kn_buf t = {0};
        int r = body(&c, schema, &t);
        if (r == 0) fail(&c, KN_EINVAL, "the schema accepts no value");
        if (r == 1) emit_rule(&c, "root", t.p, t.n);
        kn_buf_free(&t);
        /* the shared rules used, and those they use */
        uint64_t done = 0;
        while (c.st == KN_OK && (c.prims & ~done)) {
            for (int p = 0; p < P_COUNT && c.st == KN_OK; p++) {
                if (!(c.prims & ~done & (1ull << p))) continue;
                done |= 1ull << p;
                kn_buf pb = {0};
                if (put_tmpl(&c, &pb, PRIMS[p].body)) emit_rule(&c, PRIMS[p].name, pb.p, pb.n);
                kn_buf_free(&pb);
            }
        }
    }
    /* what this returns compiles: check it (catches schemas with no finite instance) */
    if (c.st == KN_OK) {
        char root[80];
        snprintf(root, sizeof root, "%sroot", prefix);
        gram *g = NULL;
        kn_err ge = {0};
        kn_status gs = gram_compile(out->p + start, out->n - start, root, &g, &ge);
        gram_destroy(g);
        if (gs != KN_OK) {
            const char *q = strchr(ge.msg, '\''), *q2 = q ? strchr(q + 1, '\'') : NULL;
            const char *at = NULL;
            if (q && q2 && (size_t)(q2 - q - 1) > strlen(prefix)) {
                char nm[128];
                size_t len = (size_t)(q2 - q - 1) - strlen(prefix);
                if (len < sizeof nm) {
                    memcpy(nm, q + 1 + strlen(prefix), len);
                    nm[len] = 0;
                    /* helper rules are "<name>-<suffix>": try shorter names */
                    for (char *dash; !(at = json_string_value(json_object_get(c.rule_where, nm))) &&
                                     (dash = strrchr(nm, '-'));)
                        *dash = 0;
                }
            }
            c.st = kn_fail(err,
                           gs == KN_ENOMEM   ? KN_ENOMEM
                           : gs == KN_ERANGE ? KN_ERANGE
                                             : KN_EINVAL,
                           gs == KN_ERANGE ? "schema too large for a grammar (%s)%s%s"
                                           : "schema has no finite instance (%s)%s%s",
                           ge.msg, at ? " at " : "", at ? (*at ? at : "the root") : "");
        }
    }
    json_decref(c.refs);
    json_decref(c.rule_where);
    json_decref(c.keep);
    if (c.st != KN_OK) {
        out->n = start;
        if (out->p) out->p[start] = 0;
    }
    return c.st;
}

kn_status gram_schema_to_gbnf(const json_t *schema, char **out, size_t *len, kn_err *err) {
    kn_buf b = {0};
    *out = NULL;
    if (len) *len = 0;
    kn_status st = gram_schema_rules(schema, "", &b, err);
    if (st != KN_OK) {
        kn_buf_free(&b);
        return st;
    }
    *out = b.p;
    if (len) *len = b.n;
    return KN_OK;
}
