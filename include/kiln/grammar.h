/*
 * kiln/grammar.h — constrained decoding with GBNF grammars (llama.cpp's
 * syntax, so grammars written for llama-server work unchanged).
 *
 * Owns: the GBNF parser and compiler (`gram`), the incremental matcher over
 * code points and bytes (`gram_state`), and the token trie that turns a
 * matcher state into a mask over a vocabulary (`gram_vocab`). It knows no
 * model, tokenizer or sampler: a vocabulary is just byte strings by id.
 *
 * The format (docs/grammar.md has the full reference):
 *
 *     # comment
 *     root  ::= item ("," ws item)*          # rules: name ::= alternatives
 *     item  ::= [a-z]+ | "\"" [^"\\]* "\"" | num{1,3} | .
 *     num   ::= [0-9]
 *     ws    ::= [ \t\n]*
 *
 * Alternation `|`, grouping `( )`, postfix `?` `*` `+` `{m}` `{m,}` `{m,n}`,
 * string literals and character classes with escapes (\n \r \t \\ \" \[ \]
 * \xHH \uHHHH \UHHHHHHHH) and raw UTF-8, negated classes `[^...]`, `.` for
 * any character, rule references (forward and recursive, but not left
 * recursive). A rule ends at the end of its line unless inside parentheses
 * or after `|`. Matching is over Unicode scalar values; bytes are decoded
 * as strict UTF-8 (no overlongs, surrogates or values over U+10FFFF).
 *
 * JSON Schema (src/grammar/schema.c; docs/grammar.md, "JSON Schema"):
 * gram_schema_rules / gram_schema_to_gbnf write GBNF accepting exactly the
 * compact JSON texts valid against a schema (a subset of all spellings).
 *
 * Invariants:
 *  - A compiled `gram` is immutable and may be shared by any number of
 *    threads and states; it must outlive them.
 *  - A `gram_vocab` is immutable once built (cache it with the model) and
 *    may be shared by threads.
 *  - A `gram_state` belongs to one thread at a time. It holds the parse
 *    stacks, a pending partial UTF-8 sequence, and the scratch that
 *    gram_mask and gram_token_ok use, including a cache of stack sets and
 *    their transitions. Buffers grow to a high-water mark and are reused;
 *    the mask path allocates only when the cache meets a stack set it has
 *    not seen (amortized), and the cache is flushed past 32 MiB.
 *  - Every size is bounded (the GRAM_MAX_* below). A grammar over a bound
 *    fails to compile with a message; a state whose stacks outgrow a bound
 *    stops accepting (gram_state_status says why) instead of growing.
 */
#ifndef KILN_GRAMMAR_H
#define KILN_GRAMMAR_H

#include "kiln/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ------------------------------------------------------------ */

#define GRAM_MAX_TEXT (1u << 20)          /* bytes of grammar text */
#define GRAM_MAX_RULES 65536u             /* rules, including the helpers groups and repetitions make */
#define GRAM_MAX_ELEMS (1u << 21)         /* compiled elements in all rules */
#define GRAM_MAX_REPEAT 1000u             /* m and n in {m}, {m,}, {m,n} */
#define GRAM_MAX_NESTING 64u              /* nested parentheses */
#define GRAM_MAX_STACKS 4096u             /* parse stacks alive in one state */
#define GRAM_MAX_WORK 32768u              /* distinct stacks explored to take one code point */
#define GRAM_MAX_DEPTH 2048u              /* elements on one parse stack (nesting of the input) */
#define GRAM_MAX_STATE_BYTES (256u << 20) /* any one buffer of a state's scratch */
#define GRAM_MAX_VOCAB (1u << 24)         /* tokens in a vocabulary */
#define GRAM_MAX_TOKEN_BYTES 4096u        /* bytes of one token */

/* ---- compiling --------------------------------------------------------- */

typedef struct gram gram;

/* Compiles GBNF text[0..len) (not necessarily NUL-terminated). root names the
 * start rule (NULL: "root"). On error returns KN_EINVAL (syntax, undefined
 * rule, left recursion) or KN_ERANGE (a GRAM_MAX_* bound) with a message
 * naming line:column, e.g. "undefined rule 'foo' at 3:14". *out is owned by
 * the caller: gram_destroy. The text is not kept. */
kn_status gram_compile(const char *text, size_t len, const char *root, gram **out, kn_err *err);
void gram_destroy(gram *g); /* accepts NULL */
/* Number of compiled rules (the grammar's and the generated helpers). */
size_t gram_rule_count(const gram *g);

/* ---- JSON Schema ------------------------------------------------------- */

/* Appends GBNF rules accepting exactly the JSON texts valid against schema
 * (a JSON Schema object or boolean) to *out. Every rule name starts with
 * prefix (letters, digits, '-'; may be ""), the start rule is "<prefix>root".
 * Several schemas with different prefixes can share one grammar.
 * Errors (KN_EINVAL / KN_ERANGE) name the JSON pointer: "unsupported JSON Schema
 * keyword 'not' at /properties/a", "'minItems' 5 > 'maxItems' 2 at /items", ...
 * On error *out is unchanged. What it appends always compiles (it is checked). */
kn_status gram_schema_rules(const json_t *schema, const char *prefix, kn_buf *out, kn_err *err);
/* A whole grammar whose root accepts the schema's values (root ::= ...). *out malloc'd, NUL-terminated. */
kn_status gram_schema_to_gbnf(const json_t *schema, char **out, size_t *len, kn_err *err);

/* ---- matching ------------------------------------------------------------ */

typedef struct gram_state gram_state;

/* A state at the start of g's root rule. g is borrowed and must outlive it. */
kn_status gram_state_create(const gram *g, gram_state **out, kn_err *err);
void gram_state_destroy(gram_state *s); /* accepts NULL */
/* A new state equal to src (stacks, partial UTF-8, status), with its own
 * scratch. */
kn_status gram_state_clone(const gram_state *src, gram_state **out, kn_err *err);
/* Makes dst equal to src (same grammar), reusing dst's buffers: no
 * allocation once dst has held a state as large. For speculative drafts. */
kn_status gram_state_copy(gram_state *dst, const gram_state *src, kn_err *err);
/* Back to the start of the root rule; clears a bound error. */
void gram_state_reset(gram_state *s);
/* KN_OK, or the sticky KN_ERANGE (with its message in err) after a bound
 * was hit; such a state accepts nothing until reset. */
kn_status gram_state_status(const gram_state *s, kn_err *err);

/* Takes one code point. On false the state is unchanged (the code point is
 * not allowed here, is not a Unicode scalar value, a partial UTF-8 sequence
 * is pending, or a bound was hit). */
bool gram_accept_cp(gram_state *s, uint32_t cp);
/* Takes bytes (strict UTF-8; a sequence may be split across calls: the
 * incomplete tail is kept in the state, and accepted only if some allowed
 * character can start with it). All or nothing: on false the state is
 * unchanged. */
bool gram_accept_bytes(gram_state *s, const void *bytes, size_t n);
/* True when the input so far is a complete sentence of the grammar (no
 * partial UTF-8 pending): end of generation may be allowed exactly then. */
bool gram_can_end(const gram_state *s);
/* Number of live parse stacks (for tests and metrics). */
size_t gram_state_stacks(const gram_state *s);

/* ---- vocabularies and token masks ---------------------------------------- */

typedef enum gram_tok_kind {
    GRAM_TOK_TEXT = 0, /* its bytes are text the grammar must accept */
    GRAM_TOK_EOG,      /* end of generation: allowed iff gram_can_end */
    GRAM_TOK_CONTROL,  /* special/control token: never matches text, never allowed */
} gram_tok_kind;

typedef struct gram_token {
    const void *bytes; /* borrowed during gram_vocab_create only */
    uint32_t len;      /* <= GRAM_MAX_TOKEN_BYTES for text tokens */
    uint8_t kind;      /* gram_tok_kind */
} gram_token;

typedef struct gram_vocab gram_vocab;

/* Builds the token trie over toks[0..n) (id = index). Done once per
 * vocabulary; the result is immutable and thread-safe. */
kn_status gram_vocab_create(const gram_token *toks, size_t n, gram_vocab **out, kn_err *err);
void gram_vocab_destroy(gram_vocab *v); /* accepts NULL */
size_t gram_vocab_size(const gram_vocab *v);

/* mask[0..gram_vocab_size(v)) = 1 where the token is allowed in state s, 0
 * elsewhere: a text token iff gram_accept_bytes would take its bytes, an EOG
 * token iff gram_can_end, a control token never. Walks the trie with the
 * state's stacks, never decoding the whole vocabulary. s is not changed
 * (only its scratch). KN_ERANGE when a bound is hit (mask is then all 0). */
kn_status gram_mask(gram_state *s, const gram_vocab *v, uint8_t *mask, kn_err *err);
/* Whether token id is allowed in s (the fast path: try the sampled token
 * first). s is not changed. False for an id out of range. */
bool gram_token_ok(gram_state *s, const gram_vocab *v, uint32_t id);
/* Takes token id: a text token's bytes (as gram_accept_bytes); an EOG token
 * is accepted iff gram_can_end (the state is unchanged); control never. */
bool gram_accept_token(gram_state *s, const gram_vocab *v, uint32_t id);

#endif
