/*
 * kiln/tokenizer.h — text in and out of tokens (prefix tok_): the
 * tokenizers built from GGUF metadata (`tokenizer.ggml.*`), the Jinja2
 * chat-template engine, and a model's chat formatting (template + BOS/EOS,
 * rendered and tokenized), each in its section below.
 *
 * Tokenizers.
 * Owns: the vocabulary of one model (token texts, scores, types, special ids,
 * the add-BOS/EOS rules), the lookup tables built from it, the compiled
 * pre-tokenizer regexes, and the decoded byte piece of every token. Four
 * families, chosen by `tokenizer.ggml.model`:
 *   - "llama":  SentencePiece BPE over scores, U+2581 space marker, optional
 *     space prefix, byte fallback through <0xNN> tokens, unknown token;
 *   - "gpt2":   byte-level BPE over ranked merges, with a PCRE2 pre-tokenizer
 *     chosen by `tokenizer.ggml.pre` (llama.cpp's regex lists per family);
 *   - "bert":   WordPiece (greedy longest match) with BERT normalization
 *     (lowercase and accent stripping per metadata, default on);
 *   - "gemma4": BPE over ranked merges on raw UTF-8 (no byte alphabet):
 *     spaces become U+2581, the text is split only into runs of newlines
 *     and runs of other characters, symbols start as whole characters, a
 *     symbol that is no token falls back to <0xNN> byte tokens; BOS is
 *     always added (the file's add_bos_token = false is overridden).
 * Behaviour follows llama.cpp's, since every reference was made with it:
 * defaults for special ids and add flags per family (metadata always wins,
 * but for gemma4's BOS), special-token partitioning (longest token first;
 * user-defined tokens are always split out, control/unknown ones only when
 * parse_special is on; per-model lstrip/rstrip of the whitespace beside a
 * special token: phi-3's special tokens, the jina/modern-bert mask), EOG
 * detection by well-known texts.
 *
 * Invariants of a loaded tok_vocab:
 *  - 1 <= n_vocab <= TOK_MAX_VOCAB and every token text is 1..TOK_MAX_TOKEN_LEN
 *    bytes (empty texts become "[EMPTY_<id>]" as in llama.cpp); no two tokens
 *    share a text.
 *  - Every special id is either TOK_NULL or in [0, n_vocab).
 *  - Every merge names two existing tokens.
 *  - The vocab is immutable after load: any number of threads may use it at
 *    once, each with its own tok_encoder / tok_decoder.
 *
 * Ownership: tok_vocab_load copies what it needs; the gguf_ctx may be closed
 * afterwards. Pointers returned by accessors stay valid until
 * tok_vocab_destroy.
 */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include "kiln/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct gguf_ctx gguf_ctx; /* gguf.h: a vocabulary and a template load from it */

#define TOK_NULL (-1)
#define TOK_MAX_VOCAB (1u << 22)        /* 4M tokens */
#define TOK_MAX_TOKEN_LEN (64u * 1024u) /* bytes per token text */
#define TOK_MAX_MERGES (1u << 23)

typedef enum tok_family {
    TOK_FAMILY_SPM = 0, /* tokenizer.ggml.model = "llama" */
    TOK_FAMILY_BPE = 1, /* "gpt2" */
    TOK_FAMILY_WPM = 2, /* "bert" */
    TOK_FAMILY_GEMMA4 = 3, /* "gemma4" */
} tok_family;

/* Token types: the GGUF `tokenizer.ggml.token_type` values. */
typedef enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
} tok_type;

typedef struct tok_vocab tok_vocab;

/* ---- loading ---------------------------------------------------------- */

/* Builds a vocab from g's metadata (vocab-only files work: no tensors are
 * read). On failure *out is NULL and err names the problem (unknown model or
 * pre-tokenizer, wrong value types, mismatched array lengths, bad merges,
 * oversized strings, ...). The result is owned by the caller. */
kn_status tok_vocab_load(const gguf_ctx *g, tok_vocab **out, kn_err *err);
void tok_vocab_destroy(tok_vocab *v); /* accepts NULL */

/* ---- properties ------------------------------------------------------- */

int32_t tok_n_vocab(const tok_vocab *v);
tok_family tok_vocab_family(const tok_vocab *v);
const char *tok_family_name(tok_family f);
/* The `tokenizer.ggml.pre` value ("default" when absent). */
const char *tok_vocab_pre(const tok_vocab *v);

/* Special ids, TOK_NULL when the model has none. For bert, bos is [CLS]. */
int32_t tok_bos(const tok_vocab *v);
int32_t tok_eos(const tok_vocab *v);
int32_t tok_eot(const tok_vocab *v);
int32_t tok_eom(const tok_vocab *v);
int32_t tok_pad(const tok_vocab *v);
int32_t tok_unk(const tok_vocab *v);
int32_t tok_sep(const tok_vocab *v);
int32_t tok_mask(const tok_vocab *v);
int32_t tok_nl(const tok_vocab *v); /* the newline token, TOK_NULL if none */
bool tok_add_bos(const tok_vocab *v);
bool tok_add_eos(const tok_vocab *v);
bool tok_add_sep(const tok_vocab *v);

/* Per-token queries; ids out of range give TOK_TYPE_UNDEFINED / false / NULL. */
bool tok_valid(const tok_vocab *v, int32_t id);
tok_type tok_token_type(const tok_vocab *v, int32_t id);
float tok_token_score(const tok_vocab *v, int32_t id);
bool tok_is_eog(const tok_vocab *v, int32_t id);     /* ends generation */
bool tok_is_control(const tok_vocab *v, int32_t id); /* control or unknown */
/* The token's text as stored in the vocab (not NUL-terminated; *len set). */
const char *tok_token_text(const tok_vocab *v, int32_t id, size_t *len);
/* The id whose stored text is exactly text[0..len), or TOK_NULL. */
int32_t tok_find(const tok_vocab *v, const char *text, size_t len);

/* The bytes a token stands for when detokenized (▁ -> space, byte-level
 * decoding, <0xNN> -> one byte). Control and unknown tokens give their text
 * when `special` is true and nothing otherwise. Borrowed; valid until
 * tok_vocab_destroy. Returns NULL (and *len 0) for an invalid id. */
const char *tok_token_piece(const tok_vocab *v, int32_t id, bool special, size_t *len);

/* ---- encoding --------------------------------------------------------- */

/* An encoder holds the reusable work buffers of tok_encode (regex match data,
 * symbol arrays, heap, output). One per thread; it borrows the vocab, which
 * must outlive it. Its buffers grow with the largest input seen and are
 * released by tok_encoder_destroy. */
typedef struct tok_encoder tok_encoder;

tok_encoder *tok_encoder_create(const tok_vocab *v); /* NULL on OOM */
void tok_encoder_destroy(tok_encoder *e);            /* accepts NULL */

/* Maximum input accepted by one encode call. */
#define TOK_MAX_INPUT ((size_t)1 << 30)

/* Tokenizes text[0..len) (any bytes; invalid UTF-8 is handled as llama.cpp
 * does). add_special adds BOS/EOS (bert: [CLS]/[SEP]) per the model's rules;
 * parse_special turns control-token text in the input into its id.
 * Writes at most cap ids to out and sets *n_out to the total number of ids;
 * out may be NULL (cap 0) to only count. Returns KN_ERANGE when cap was too
 * small (the first cap ids are written, *n_out is the full count).
 * The encoder's own copy of the ids is also available via tok_encoder_ids
 * until the next call. */
kn_status tok_encoder_encode(tok_encoder *e, const char *text, size_t len, bool add_special,
                             bool parse_special, int32_t *out, size_t cap, size_t *n_out, kn_err *err);
/* The ids of the last successful tok_encoder_encode (borrowed). */
const int32_t *tok_encoder_ids(const tok_encoder *e, size_t *n);

/* One-shot form: creates a temporary encoder. */
kn_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t *out, size_t cap, size_t *n_out, kn_err *err);

/* Tokenizes once into a malloc'd array (*ids, caller frees; *n ids, possibly
 * 0). On failure *ids is NULL and err names the problem. */
kn_status tok_encode_alloc(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                           int32_t **ids, size_t *n, kn_err *err);

/* ---- streaming decoding ----------------------------------------------- */

/* A streaming detokenizer. Feeding one token returns the bytes that are ready
 * to emit: whole UTF-8 characters only; an incomplete trailing sequence is
 * held back until a later token completes it. Invalid bytes (which can never
 * complete) are released at once as they are (raw mode) or as U+FFFD.
 * Leading-space rule (strip_space): for SPM with add_space_prefix, one
 * leading space of the first non-empty piece after reset is removed, so that
 * decode(encode(x)) == x also when a BOS (empty piece) comes first. (llama.cpp
 * strips only on the very first token; streams should leave it off.)
 * No allocation per token: the internal buffer is sized at creation for the
 * longest piece. */
typedef struct tok_decoder tok_decoder;

typedef struct tok_decoder_opts {
    bool special;      /* render control/unknown tokens as their text */
    bool strip_space;  /* apply the SPM leading-space rule */
    bool replace_invalid; /* emit U+FFFD for bytes that are not valid UTF-8 */
} tok_decoder_opts;

tok_decoder *tok_decoder_create(const tok_vocab *v, const tok_decoder_opts *opts); /* NULL on OOM */
void tok_decoder_destroy(tok_decoder *d); /* accepts NULL */
void tok_decoder_reset(tok_decoder *d);
/* Feeds one id. On success *out and *len give the bytes to emit now (borrowed,
 * valid until the next call on d; *len may be 0). KN_EINVAL for an id out of
 * range (state unchanged). */
kn_status tok_decoder_feed(tok_decoder *d, int32_t id, const char **out, size_t *len, kn_err *err);
/* End of stream: returns the held-back incomplete bytes, raw or as one
 * U+FFFD per held byte sequence when replace_invalid is set; then resets. */
void tok_decoder_flush(tok_decoder *d, const char **out, size_t *len);
/* Bytes currently held back. */
size_t tok_decoder_pending(const tok_decoder *d);

/* Whole-sequence decode into a malloc'd buffer the caller frees (raw bytes,
 * no U+FFFD replacement; strip_space per opts). */
kn_status tok_decode_all(const tok_vocab *v, const int32_t *ids, size_t n, const tok_decoder_opts *opts,
                         char **out, size_t *len, kn_err *err);

/* ==== chat templates (a Jinja2 subset) ====
 * a Jinja2 chat-template engine written in C (the subset
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

/* Names: "chatml", "llama2", "llama3", "mistral", "zephyr", "phi3", "gemma"
 * (Gemma 2 and 3: a system message joins the first user turn), "qwen3",
 * "gemma4", "harmony" (gpt-oss). The family ones render as the family's own
 * template does when there are no tools (docs/tokenizer.md, Chat templates).
 * Returns the Jinja source (static storage) or NULL for an unknown name. */
const char *tok_tmpl_builtin(const char *name);
/* The i-th built-in name (i from 0), NULL past the end. */
const char *tok_tmpl_builtin_name(size_t i);

/* Picks a built-in for a model without a usable template, by heuristics on
 * its vocabulary: has_token(ctx, "<|im_start|>") etc. (ctx is passed
 * through), since a format's control tokens must exist for its prompt to
 * tokenize as trained. `arch` (general.architecture, may be NULL) breaks
 * ties (ChatML with qwen3/qwen3moe is "qwen3") and decides when no marker
 * is found. Logs the choice with kn_log and returns its name (never NULL;
 * "chatml" as last resort). */
const char *tok_tmpl_builtin_guess(bool (*has_token)(void *ctx, const char *text), void *ctx,
                                   const char *arch);

/* The template to use for a model: its own source (model_src, may be NULL)
 * when it parses and renders a one-message probe conversation without an
 * engine error (its own raise_exception is fine), else a built-in chosen by
 * tok_tmpl_builtin_guess (the fallback is logged). *used (if non-NULL) becomes "model" or the built-in
 * name. NULL only if even the built-in fails (err set). Caller destroys. */
tok_tmpl *tok_tmpl_for_model(const char *model_src, size_t len, bool (*has_token)(void *ctx, const char *text),
                             void *ctx, const char *arch, const char **used, kn_err *err);

/* ==== a model's chat formatting ====
 * a model's chat formatting: its template (tokenizer.chat_template,
 * or a built-in chosen from its vocabulary when it has none or the engine
 * cannot run it) bound to its BOS/EOS texts, rendering a list of messages
 * to prompt tokens.
 *
 * Owns: the parsed template and copies of the BOS/EOS texts. Borrows the
 * vocab, which must outlive it.
 */
typedef struct tok_chat tok_chat;

/* Picks the template for a model (g: its metadata). *used_name (optional)
 * is "model" or the built-in's name. */
kn_status tok_chat_create(const gguf_ctx *g, const tok_vocab *v, tok_chat **out, const char **used_name,
                          kn_err *err);
/* The same with a template chosen by the user (llama-server's
 * --chat-template / --chat-template-file): override is a built-in's name
 * or Jinja source (NULL: the model's own, as tok_chat_create). A template
 * that does not parse is an error naming it; *used_name becomes "override"
 * or the built-in's name. */
kn_status tok_chat_create_with(const gguf_ctx *g, const tok_vocab *v, const char *override, tok_chat **out,
                               const char **used_name, kn_err *err);
/* The Jinja source of the template in use (the model's, the override or the
 * built-in); borrowed. */
const char *tok_chat_source(const tok_chat *c, size_t *len);
void tok_chat_destroy(tok_chat *c); /* accepts NULL */

/* Renders messages (a JSON array of {role, content}) with the generation
 * prompt and optional tools into text (malloc'd; caller frees). A template
 * error (raise_exception included) returns KN_EINVAL with its message. */
kn_status tok_chat_render(const tok_chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                          char **text, size_t *len, kn_err *err);
/* The same with extra template variables (a JSON object or NULL), e.g.
 * {"enable_thinking": false}. */
kn_status tok_chat_render_ex(const tok_chat *c, const json_t *messages, const json_t *tools, const json_t *extra,
                             bool add_generation_prompt, char **text, size_t *len, kn_err *err);
/* Tokenizes a prompt rendered by this chat format: special tokens parsed,
 * BOS added per the model's rules unless the text already starts with it
 * (what tok_chat_tokenize does after rendering). *ids malloc'd. */
kn_status tok_chat_encode(const tok_chat *c, const char *text, size_t len, int32_t **ids, size_t *n, kn_err *err);

/* Renders and tokenizes (special tokens parsed; BOS added per the model's
 * rules unless the rendered text already starts with it). *ids is malloc'd;
 * caller frees. */
kn_status tok_chat_tokenize(const tok_chat *c, const json_t *messages, const json_t *tools, int32_t **ids,
                            size_t *n, kn_err *err);

#endif
