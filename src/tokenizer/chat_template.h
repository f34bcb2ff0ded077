/*
 * chat_template.h — a Jinja2 chat-template engine written in C (the subset
 * that real Hugging Face `tokenizer.chat_template`s use), plus a few
 * built-in templates for models that carry none.
 *
 * Owns: parsing a template source into an AST (tok_tmpl) and rendering it
 * with the chat inputs (messages, tools, tokens, extra variables). The
 * template is immutable after tok_tmpl_create and may be rendered
 * concurrently from several threads (each render uses its own arena).
 *
 * Environment, as Hugging Face configures Jinja2: trim_blocks and
 * lstrip_blocks on, keep_trailing_newline off, no autoescape, loopcontrols
 * (break/continue), `{% generation %}` blocks render their body, `tojson`
 * never escapes non-ASCII and formats exactly like Python's json.dumps
 * (", " and ": " separators, indent=N supported, key order as given),
 * `raise_exception(msg)` and `strftime_now(fmt)`.
 *
 * Supported subset:
 *  - statements: if/elif/else, for (loop.index/index0/revindex/revindex0/
 *    first/last/length/previtem/nextitem/depth/cycle(), `for x in y if c`,
 *    for-else, tuple unpacking; each iteration is a fresh scope), set (plain,
 *    tuple, namespace attribute, block set with filters), macro (positional
 *    and keyword args, defaults, varargs), call blocks (caller()), filter
 *    blocks, raw, comments, break/continue, generation.
 *  - whitespace control: {%- -%} {{- -}} {#- -#}, {%+ and +%}.
 *  - expressions: literals (strings with Python escapes, adjacent-string
 *    concatenation, ints, floats, true/false/none in both spellings, lists,
 *    tuples, dicts), + - * / // % ** (Python floor semantics), ~,
 *    comparisons (chained), and/or/not, in/not in, is/is not tests, ternary,
 *    slicing [a:b:c] with negative steps, indexing, attribute access (dict
 *    keys as attributes), calls; string methods strip lstrip rstrip split
 *    rsplit(no maxsplit) startswith endswith upper lower title capitalize
 *    replace find count join splitlines isdigit isalpha isalnum isspace
 *    islower isupper; dict methods items keys values get.
 *  - filters: trim length count tojson (HF's signature: ensure_ascii,
 *    indent, separators, sort_keys) join upper lower replace default/d first
 *    last list string int float abs round items selectattr rejectattr select
 *    reject map unique indent wordcount safe e escape forceescape capitalize
 *    title center reverse sort sum min max dictsort
 *    attr. Unknown filters/tests fail when reached (Jinja 3 behaviour).
 *  - tests: defined undefined none string number integer float mapping
 *    iterable sequence boolean true false odd even divisibleby equalto eq ==
 *    sameas ne != lt < le <= gt > ge >= in callable lower upper escaped.
 *  - globals: raise_exception, strftime_now, range (at most 100000 items,
 *    like Jinja's sandbox), namespace, dict.
 *  - Undefined behaves like Jinja's default Undefined: prints as "", is
 *    falsy, iterates as empty, `is defined` works; arithmetic on it or
 *    calling it is an error. One deliberate leniency: an attribute or item of
 *    an undefined value is undefined (Jinja would raise).
 *  - Not supported: extends/block/include/import (no loader), recursive
 *    loops, str.format and the `%` string operator, list.append (the HF
 *    sandbox forbids it anyway), Markup/autoescape. Case mapping is
 *    ASCII-only; strings are indexed, sliced and measured in Unicode code
 *    points like Python.
 *
 * Limits (all errors, never crashes): template source length
 * (TOK_TMPL_MAX_SOURCE), parser nesting depth (128), renderer recursion
 * depth (macro calls, nested expressions), evaluation steps (loop
 * iterations, statements, filter items), output size and render memory
 * (tok_tmpl_limits).
 *
 * Errors: a parse or runtime error fills kn_err with
 * "template line N: <problem>"; raise_exception(msg) fills it with exactly
 * msg (up to 500 bytes; status KN_EINVAL, and tok_tmpl_render reports it
 * as raised).
 */
#ifndef KILN_TOKENIZER_CHAT_TEMPLATE_H
#define KILN_TOKENIZER_CHAT_TEMPLATE_H

#include "../core/kn.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define TOK_TMPL_MAX_SOURCE (1u << 20) /* template source bytes */

typedef struct tok_tmpl tok_tmpl;

/* Render limits; a zero field means the default given beside it. */
typedef struct tok_tmpl_limits {
    size_t max_output; /* bytes of rendered text, default 16 MiB */
    size_t max_memory; /* bytes of render-time allocations, default 256 MiB */
    size_t max_steps;  /* statements + loop iterations + filter items, default 10M */
    int max_depth;     /* renderer recursion (macro calls, nesting), default 500 */
} tok_tmpl_limits;

typedef struct tok_tmpl_inputs {
    const json_t *messages;     /* JSON array (required); borrowed */
    const json_t *tools;        /* JSON array or NULL (then `tools` is undefined) */
    bool add_generation_prompt;
    const char *bos_token;      /* NULL: the variable is undefined */
    const char *eos_token;      /* NULL: the variable is undefined */
    const json_t *extra;        /* JSON object of extra variables or NULL */
    const struct tm *now;       /* pinned instant for strftime_now, or NULL
                                 * for the current local time */
    tok_tmpl_limits limits;
} tok_tmpl_inputs;

/* Parses src[0..len) (need not be NUL-terminated; len <= TOK_TMPL_MAX_SOURCE).
 * Returns NULL with err filled on a syntax error or out of memory. The
 * caller owns the result (tok_tmpl_destroy). src is copied. */
tok_tmpl *tok_tmpl_create(const char *src, size_t len, kn_err *err);
void tok_tmpl_destroy(tok_tmpl *t); /* accepts NULL */

/* Renders. On success *out is a malloc'd NUL-terminated buffer of *len bytes
 * that the caller frees. On failure *out is NULL and err holds the message;
 * *raised (if non-NULL) tells whether it came from raise_exception, in which
 * case err->msg is exactly the template's message. */
kn_status tok_tmpl_render(const tok_tmpl *t, const tok_tmpl_inputs *in, char **out, size_t *len,
                          bool *raised, kn_err *err);

/* ---- built-in templates ---- */

/* Names: "chatml", "llama2", "llama3", "mistral", "zephyr", "phi3", "gemma".
 * Returns the Jinja source (static storage) or NULL for an unknown name. */
const char *tok_tmpl_builtin(const char *name);
/* The i-th built-in name (i from 0), NULL past the end. */
const char *tok_tmpl_builtin_name(size_t i);

/* Picks a built-in for a model without a usable template, by heuristics on
 * its vocabulary: has_token(ctx, "<|im_start|>") etc. (ctx is passed
 * through). `arch` (general.architecture, may be NULL) breaks ties. Logs the
 * choice with kn_log and returns its name (never NULL; "chatml" as last
 * resort). */
const char *tok_tmpl_builtin_guess(bool (*has_token)(void *ctx, const char *text), void *ctx,
                                   const char *arch);

/* The template to use for a model: its own source (model_src, may be NULL)
 * when it parses and renders a one-message probe conversation without an
 * engine error (its own raise_exception is fine), else a built-in chosen by
 * tok_tmpl_builtin_guess (the fallback is logged). *used (if non-NULL) becomes "model" or the built-in
 * name. NULL only if even the built-in fails (err set). Caller destroys. */
tok_tmpl *tok_tmpl_for_model(const char *model_src, size_t len, bool (*has_token)(void *ctx, const char *text),
                             void *ctx, const char *arch, const char **used, kn_err *err);

#endif
