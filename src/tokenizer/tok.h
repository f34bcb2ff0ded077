/*
 * tok.h — tokenizers built from GGUF metadata (`tokenizer.ggml.*`).
 *
 * Owns: the vocabulary of one model (token texts, scores, types, special ids,
 * the add-BOS/EOS rules), the lookup tables built from it, the compiled
 * pre-tokenizer regexes, and the decoded byte piece of every token. Three
 * families, chosen by `tokenizer.ggml.model`:
 *   - "llama": SentencePiece BPE over scores, U+2581 space marker, optional
 *     space prefix, byte fallback through <0xNN> tokens, unknown token;
 *   - "gpt2":  byte-level BPE over ranked merges, with a PCRE2 pre-tokenizer
 *     chosen by `tokenizer.ggml.pre` (llama.cpp's regex lists per family);
 *   - "bert":  WordPiece (greedy longest match) with BERT normalization
 *     (lowercase and accent stripping per metadata, default on).
 * Behaviour follows llama.cpp's, since every reference was made with it:
 * defaults for special ids and add flags per family (metadata always wins),
 * special-token partitioning (longest token first; user-defined tokens are
 * always split out, control/unknown ones only when parse_special is on),
 * EOG detection by well-known texts.
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
#ifndef KILN_TOKENIZER_TOK_H
#define KILN_TOKENIZER_TOK_H

#include "../core/kn.h"
#include "../gguf/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOK_NULL (-1)
#define TOK_MAX_VOCAB (1u << 22)        /* 4M tokens */
#define TOK_MAX_TOKEN_LEN (64u * 1024u) /* bytes per token text */
#define TOK_MAX_MERGES (1u << 23)

typedef enum tok_family {
    TOK_FAMILY_SPM = 0, /* tokenizer.ggml.model = "llama" */
    TOK_FAMILY_BPE = 1, /* "gpt2" */
    TOK_FAMILY_WPM = 2, /* "bert" */
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

#endif
