/*
 * grammar/internal.h — the compiled form of a grammar, shared by the parser
 * (parse.c), the matcher (match.c) and the token trie (vocab.c).
 *
 * A grammar compiles to one flat array of elements, llama.cpp-style. A rule
 * is its alternatives in order, each a sequence of elements, separated by
 * GE_ALT and closed by GE_END. A character set is one GE_CHAR/GE_CHAR_NOT
 * (its first character) followed by any GE_RNG_UPPER (the upper end of a
 * range started by the element before) and GE_CHAR_ALT (another character
 * of the set); GE_ANY is a set on its own. Repetitions and groups are
 * expanded into helper rules at compile time, so the matcher only sees
 * characters, sets, and rule references.
 *
 * A parse stack is an array of element positions, bottom first. Its top is
 * always the start of a character set (the next character to match); an
 * empty stack means the input so far completes the root rule.
 */
#ifndef KILN_GRAMMAR_INTERNAL_H
#define KILN_GRAMMAR_INTERNAL_H

#include "kiln/grammar.h"

enum {
    GE_END = 0,
    GE_ALT,
    GE_REF,       /* value: rule id */
    GE_CHAR,      /* value: code point; starts a set */
    GE_CHAR_NOT,  /* value: code point; starts a negated set */
    GE_RNG_UPPER, /* value: upper end of the range begun by the element before */
    GE_CHAR_ALT,  /* value: another code point of the set */
    GE_ANY,       /* any character; a set on its own */
};

typedef struct gram_elem {
    uint32_t type;
    uint32_t value;
} gram_elem;

struct gram {
    gram_elem *elems; /* [n_elems] owned */
    uint32_t n_elems;
    uint32_t n_rules;
    uint32_t *alt_lo; /* [n_rules + 1]: rule r's alternatives are alts[alt_lo[r] .. alt_lo[r+1]) */
    uint32_t *alts;   /* start position of each alternative in elems */
    uint32_t root;
};

static inline bool gram_is_end(const gram_elem *e) {
    return e->type == GE_END || e->type == GE_ALT;
}
static inline bool gram_is_set(const gram_elem *e) {
    return e->type == GE_CHAR || e->type == GE_CHAR_NOT || e->type == GE_ANY;
}

/* Strict incremental UTF-8 decoding (Unicode Table 3-7). */
typedef struct gram_u8 {
    uint32_t cp;    /* bits decoded so far */
    uint8_t need;   /* continuation bytes still expected (0: none pending) */
    uint8_t lo, hi; /* allowed range of the next continuation byte */
} gram_u8;

enum { GRAM_U8_BAD = -1, GRAM_U8_MORE = 0, GRAM_U8_DONE = 1 };

/* Feeds one byte; GRAM_U8_DONE leaves the code point in u->cp. */
static inline int gram_u8_feed(gram_u8 *u, uint8_t b) {
    if (u->need == 0) {
        if (b < 0x80) {
            u->cp = b;
            return GRAM_U8_DONE;
        }
        u->lo = 0x80;
        u->hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            u->need = 1;
            u->cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            u->need = 2;
            u->cp = b & 0x0F;
            if (b == 0xE0) u->lo = 0xA0;
            if (b == 0xED) u->hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            u->need = 3;
            u->cp = b & 0x07;
            if (b == 0xF0) u->lo = 0x90;
            if (b == 0xF4) u->hi = 0x8F;
        } else {
            return GRAM_U8_BAD;
        }
        return GRAM_U8_MORE;
    }
    if (b < u->lo || b > u->hi) return GRAM_U8_BAD;
    u->cp = (u->cp << 6) | (b & 0x3F);
    u->lo = 0x80;
    u->hi = 0xBF;
    return --u->need == 0 ? GRAM_U8_DONE : GRAM_U8_MORE;
}

/* The code points a pending sequence can still become: [*lo, *hi]. */
static inline void gram_u8_range(const gram_u8 *u, uint32_t *lo, uint32_t *hi) {
    unsigned rest = 6u * (u->need - 1u);
    *lo = (((u->cp << 6) | (u->lo & 0x3Fu)) << rest);
    *hi = (((u->cp << 6) | (u->hi & 0x3Fu)) << rest) | ((1u << rest) - 1u);
}

static inline bool gram_cp_valid(uint32_t cp) {
    return cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

/* Whether the set starting at e matches cp; *next is the element after the set. */
static inline bool gram_match_set(const gram_elem *e, uint32_t cp, const gram_elem **next) {
    if (e->type == GE_ANY) {
        *next = e + 1;
        return true;
    }
    bool neg = e->type == GE_CHAR_NOT, found = false;
    do {
        if (e[1].type == GE_RNG_UPPER) {
            found = found || (e->value <= cp && cp <= e[1].value);
            e += 2;
        } else {
            found = found || e->value == cp;
            e += 1;
        }
    } while (e->type == GE_CHAR_ALT);
    *next = e;
    return found != neg;
}

/* Whether the set starting at e matches some code point in [lo, hi]. */
bool gram_match_set_range(const gram_elem *e, uint32_t lo, uint32_t hi);

#endif
