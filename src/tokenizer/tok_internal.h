/*
 * tok_internal.h — private layout of the tokenizer module (its .c files; the
 * chat-template engine uses only the UTF-8 helpers).
 *
 * Token strings live in one pool (text_pool, offsets per id); the decoded
 * pieces in another. Lookups go through open-addressing tables of
 * (hash32 << 32 | id + 1) slots, hashed with xxHash; merges through a table
 * keyed by the (left id, right id) pair.
 */
#ifndef KILN_TOKENIZER_TOK_INTERNAL_H
#define KILN_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "kiln/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* attribute bits (llama.cpp's token attrs, the subset we use) */
enum {
    TOK_F_NORMAL = 1 << 0,
    TOK_F_UNKNOWN = 1 << 1,
    TOK_F_CONTROL = 1 << 2,
    TOK_F_USER = 1 << 3,
    TOK_F_UNUSED = 1 << 4,
    TOK_F_BYTE = 1 << 5,
    TOK_F_EOG = 1 << 6,
    TOK_F_LSTRIP = 1 << 7, /* partitioning eats the whitespace before the token */
    TOK_F_RSTRIP = 1 << 8, /* ... and after it */
};

#define TOK_MAX_REGEX 6
#define TOK_G4_MAX_GLUE 16

/* A string -> id table. Keys are (pool + off[id], len[id]). */
typedef struct tok_map {
    uint64_t *slots; /* [mask + 1]: hash32 << 32 | (id + 1); 0 = empty */
    uint64_t mask;
} tok_map;

typedef struct tok_merge {
    uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank;
    int32_t result; /* id of left+right, TOK_NULL if not a token */
} tok_merge;

struct tok_vocab {
    tok_family family;
    char pre[64];
    int32_t n;

    /* stored token texts */
    char *text_pool;   /* [text_pool_len] */
    uint64_t *text_off; /* [n] */
    uint32_t *text_len; /* [n] */
    float *scores;      /* [n] */
    uint8_t *type;      /* [n] tok_type */
    uint16_t *flags;    /* [n] TOK_F_* */
    tok_map map_text;
    uint32_t max_token_len;

    /* decoded pieces (special = true form) */
    char *piece_pool;
    uint64_t *piece_off; /* [n] */
    uint32_t *piece_len; /* [n] */
    uint32_t max_piece_len;

    /* BPE: raw-byte form of each token (byte-level decoded), -1 len if none */
    char *raw_pool;
    uint64_t *raw_off;  /* [n] */
    int32_t *raw_len;   /* [n] */
    tok_map map_raw;
    /* BPE and gemma4: the token of a one-byte symbol (gpt2: the raw byte;
     * gemma4: the one-byte character, ASCII only), TOK_NULL if none */
    int32_t byte_tok[256];
    /* llama.cpp's per-byte fallback for a symbol that is no token (gpt2: the
     * printable ASCII character's token; gemma4: <0xNN>), TOK_NULL if none */
    int32_t fallback_tok[256];
    /* BPE and gemma4: (left id, right id) -> (rank, result) */
    tok_merge *merges;          /* [merge_mask + 1] */
    uint64_t merge_mask;
    int32_t n_merges;
    pcre2_code *re[TOK_MAX_REGEX];
    int n_re;
    bool ignore_merges;

    /* gemma4: the characters X such that "X▁" (X not ▁) lies inside a token
     * or across a merge. No symbol can span a ▁ that follows any other
     * character, so runs are merged in chunks cut before such a ▁
     * (tok_gemma4.c); -1 when there are too many to list (never cut). */
    uint32_t g4_glue[TOK_G4_MAX_GLUE];
    int g4_n_glue;

    /* SPM */
    int32_t spm_byte_tok[256]; /* <0xNN> (or the raw byte) token */
    bool add_space_prefix;
    bool spm_split_ok; /* no token has U+2581 right after another character */

    /* WPM */
    bool wpm_lowercase, wpm_strip_accents;

    /* special tokens */
    int32_t bos, eos, eot, eom, unk, sep, pad, mask, nl;
    bool add_bos, add_eos, add_sep;
    int32_t *special;  /* [n_special] ids with CONTROL|USER|UNKNOWN, longest first */
    int32_t n_special;
    int32_t special_first[256]; /* head of a per-first-byte chain into special_next */
    int32_t *special_next;       /* [n_special] index chain, -1 ends */
};

/* ---- shared helpers (tok.c) ---- */
uint32_t tok_hash32(const void *p, size_t len);
/* Strict UTF-8: one code point from s[0..n); its length, or 0 if invalid
 * (overlong, surrogate, past U+10FFFF or truncated). */
size_t tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* llama.cpp's lenient UTF-8 reading (n >= 1): the code point and its length;
 * an invalid sequence gives U+FFFD over one byte, a surrogate or a value
 * past U+10FFFF gives U+FFFD over its length. */
size_t tok_utf8_decode_lenient(const unsigned char *s, size_t n, uint32_t *cp);
/* Writes cp (<= U+10FFFF) as UTF-8 to o (room for 4); returns the length. */
size_t tok_utf8_encode(uint32_t cp, char *o);
/* GPT-2's byte alphabet: cp_to_byte[code point] = the byte it stands for,
 * -1 for code points outside the alphabet (< 324). */
void tok_byte_alphabet(int16_t cp_to_byte[324]);
int32_t tok_map_find(const tok_map *m, const char *pool, const uint64_t *off, const void *lens, bool lens_signed,
                     const char *key, size_t len);
kn_status tok_map_init(tok_map *m, uint64_t n);
/* Inserts id; returns the id already holding the same key, or TOK_NULL. */
int32_t tok_map_insert(tok_map *m, const char *pool, const uint64_t *off, const void *lens, bool lens_signed, int32_t id);
/* Length of the UTF-8 sequence introduced by byte c (1 for invalid leads). */
static inline size_t tok_utf8_len(unsigned char c) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* ---- per-family pieces ---- */

/* A growable int32 vector owned by the encoder. */
typedef struct tok_ivec {
    int32_t *v;
    size_t n, cap;
} tok_ivec;
kn_status tok_ivec_push(tok_ivec *a, int32_t x);

/* tok_bpe.c */
kn_status tok_bpe_setup(tok_vocab *v, const gguf_ctx *g, kn_err *err);
/* tokenizer.ggml.merges -> v->merges (shared with gemma4). */
kn_status tok_bpe_load_merges(tok_vocab *v, const gguf_ctx *g, kn_err *err);
void tok_bpe_free(tok_vocab *v); /* also frees what gemma4 set up */

/* tok_gemma4.c */
kn_status tok_gemma4_setup(tok_vocab *v, const gguf_ctx *g, kn_err *err);

/* encoder work state */
typedef struct tok_sym {
    int32_t prev, next;
    uint32_t start, n;
    int32_t id;
} tok_sym;

typedef struct tok_bigram {
    float score; /* SPM: higher first */
    int32_t rank; /* BPE: lower first */
    int32_t left, right;
    uint32_t size;
    int32_t result;
} tok_bigram;

/* BPE word cache entry (direct-mapped, per encoder): word -> its ids. */
#define TOK_WC_WORD 26
#define TOK_WC_IDS 8
#define TOK_WC_SIZE 16384
typedef struct tok_wcache_ent {
    uint32_t hash;
    uint8_t wlen; /* 0 = empty */
    uint8_t nids;
    char word[TOK_WC_WORD];
    int32_t ids[TOK_WC_IDS];
} tok_wcache_ent;

struct tok_encoder {
    tok_wcache_ent *wc; /* [TOK_WC_SIZE], allocated on first BPE use */
    const tok_vocab *v;
    tok_ivec out;
    char *buf; /* scratch text (sanitized / escaped / normalized) */
    size_t buf_cap;
    char *buf2;
    size_t buf2_cap;
    uint8_t *mask; /* special partition: covered bytes */
    size_t mask_cap;
    int32_t *frag; /* special partition: (start, len, id) triples */
    size_t frag_n, frag_cap;
    size_t *pieces; /* pre-tokenizer pieces (start, len) pairs */
    size_t *pieces2;
    size_t pieces_n, pieces_cap, pieces2_cap;
    tok_sym *syms;
    size_t syms_cap;
    tok_bigram *heap;
    size_t heap_n, heap_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    uint32_t *cpts; /* WPM */
    size_t cpts_cap;
};

kn_status tok_reserve(void **p, size_t *cap, size_t need, size_t elem);
/* text itself when it is valid UTF-8, else a copy in e->buf with every
 * invalid sequence replaced by U+FFFD as llama.cpp reads it (*len updated);
 * NULL on OOM. */
const char *tok_bpe_sanitize(tok_encoder *e, const char *text, size_t *len);
/* Merges the symbols e->syms[0..n) (a chain in order, ids set; TOK_NULL ids
 * never merge) lowest merge rank first, ties leftmost. Capacity for n
 * symbols is reserved by the caller; the heap is reserved here. */
kn_status tok_bpe_merge(tok_encoder *e, size_t n);
/* Appends the ids of the word w[0..wl): from the encoder's word cache when
 * it is short and was seen, else from encode_word (then cached). Inline, so
 * that the per-word call of the BPE loops stays direct. */
static inline kn_status tok_word_cached(tok_encoder *e, const char *w, size_t wl,
                                        kn_status (*encode_word)(tok_encoder *e, const char *w, size_t wl)) {
    if (wl > TOK_WC_WORD) return encode_word(e, w, wl);
    /* words repeat a lot: a direct-mapped cache of short words skips the merges */
    if (!e->wc && !(e->wc = calloc(TOK_WC_SIZE, sizeof(tok_wcache_ent)))) return KN_ENOMEM;
    uint32_t h = tok_hash32(w, wl);
    tok_wcache_ent *ce = &e->wc[h & (TOK_WC_SIZE - 1)];
    if (ce->wlen == wl && ce->hash == h && memcmp(ce->word, w, wl) == 0) {
        for (uint8_t k = 0; k < ce->nids; k++)
            if (tok_ivec_push(&e->out, ce->ids[k]) != KN_OK) return KN_ENOMEM;
        return KN_OK;
    }
    size_t before = e->out.n;
    if (encode_word(e, w, wl) != KN_OK) return KN_ENOMEM;
    size_t got = e->out.n - before;
    if (got <= TOK_WC_IDS) {
        ce->hash = h;
        ce->wlen = (uint8_t)wl;
        ce->nids = (uint8_t)got;
        memcpy(ce->word, w, wl);
        if (got) memcpy(ce->ids, e->out.v + before, got * sizeof(int32_t));
    }
    return KN_OK;
}

kn_status tok_bpe_encode(tok_encoder *e, const char *text, size_t len, kn_err *err);
kn_status tok_gemma4_encode(tok_encoder *e, const char *text, size_t len, kn_err *err);
kn_status tok_spm_encode(tok_encoder *e, const char *text, size_t len, kn_err *err);
kn_status tok_wpm_encode(tok_encoder *e, const char *text, size_t len, kn_err *err);
void tok_heap_push(tok_encoder *e, const tok_bigram *b, bool spm);
tok_bigram tok_heap_pop(tok_encoder *e, bool spm);

#endif
