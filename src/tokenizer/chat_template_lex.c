/*
 * chat_template_lex.c — the template lexer: splits the source into text and
 * tags ({{ }}, {% %}, {# #}), applies whitespace control ({%- -%}, {%+ +%},
 * and Hugging Face's trim_blocks/lstrip_blocks), passes {% raw %} bodies
 * through as text, and turns the inside of tags into names, operators,
 * numbers and decoded string literals. Tokens point into the source (which
 * outlives them) except decoded strings, which live in the arena.
 */
#include "chat_template_internal.h"
#include "tok_internal.h" /* tok_utf8_encode */

#include <errno.h>
#include <stdlib.h>

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
        L->v = tmpl_regrow(L->e, L->v, L->nv, cap, sizeof(tok));
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

static int count_nl(const char *s, size_t a, size_t b) {
    int c = 0;
    for (size_t i = a; i < b; i++) c += s[i] == '\n';
    return c;
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
    char *o = tmpl_alloc(L->e, (b - a) + 1);
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
            n += tok_utf8_encode(cp > 0x10FFFF ? 0xFFFD : cp, o + n);
            break;
        }
        default:
            if (d >= '0' && d <= '7') {
                uint32_t cp = (uint32_t)(d - '0');
                for (int q = 0; q < 2 && i + 1 < b && s[i + 1] >= '0' && s[i + 1] <= '7'; q++) cp = cp * 8 + (uint32_t)(s[++i] - '0');
                n += tok_utf8_encode(cp, o + n);
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
        if (p >= n) tmpl_fail(L->e, *line, "unexpected end of template inside a tag");
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
                if (errno || q - p > 40) tmpl_fail(L->e, *line, "integer literal too large");
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
            if (q >= n) tmpl_fail(L->e, l0, "unterminated string literal");
            tok *k = lex_push(L, T_STR, l0, NULL, 0);
            lex_string(L, k, p + 1, q);
            p = q + 1;
        } else {
            static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
            size_t len = 0;
            for (size_t i = 0; i < sizeof ops2 / sizeof ops2[0]; i++)
                if (p + 1 < n && s[p] == ops2[i][0] && s[p + 1] == ops2[i][1]) len = 2;
            if (!len) {
                if (!strchr("+-*/%~<>=()[]{},.:|", c)) tmpl_fail(L->e, *line, "unexpected character '%c'", c);
                len = 1;
                if (c == '(' || c == '[' || c == '{') bal++;
                if ((c == ')' || c == ']' || c == '}') && bal > 0) bal--;
            }
            lex_push(L, T_OP, *line, s + p, len);
            p += len;
        }
    }
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
            if (q + 1 >= n) tmpl_fail(L->e, line, "unclosed comment");
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
                if (!found) tmpl_fail(L->e, rline, "missing {%% endraw %%}");
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

tok *tmpl_lex(ectx *e, const char *s, size_t n, size_t *ntok) {
    lexer L = {.e = e, .s = s, .n = n};
    lex_all(&L);
    *ntok = L.nv;
    return L.v;
}
