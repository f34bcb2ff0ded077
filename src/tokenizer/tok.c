/*
 * tok.c — vocabulary loading, lookup tables, special tokens, pieces, the
 * encode driver (special-token partitioning) and the streaming decoder.
 * Family-specific encoding lives in tok_bpe.c, tok_spm.c, tok_wpm.c and
 * tok_gemma4.c.
 */
#include "kiln/gguf.h"
#include "tok_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

uint32_t tok_hash32(const void *p, size_t len) { return (uint32_t)XXH3_64bits(p, len); }

kn_status tok_reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return KN_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return KN_ENOMEM;
        nc *= 2;
    }
    void *q = realloc(*p, nc * elem);
    if (!q) return KN_ENOMEM;
    *p = q;
    *cap = nc;
    return KN_OK;
}

kn_status tok_ivec_push(tok_ivec *a, int32_t x) {
    if (a->n == a->cap && tok_reserve((void **)&a->v, &a->cap, a->n + 1, sizeof(int32_t)) != KN_OK) return KN_ENOMEM;
    a->v[a->n++] = x;
    return KN_OK;
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

kn_status tok_map_init(tok_map *m, uint64_t n) {
    uint64_t size = pow2_at_least(n * 2 + 1);
    m->slots = calloc(size, sizeof(uint64_t));
    if (!m->slots) return KN_ENOMEM;
    m->mask = size - 1;
    return KN_OK;
}

static inline uint32_t lens_get(const void *lens, bool lens_signed, int32_t id) {
    if (lens_signed) {
        int32_t l = ((const int32_t *)lens)[id];
        return l < 0 ? UINT32_MAX : (uint32_t)l;
    }
    return ((const uint32_t *)lens)[id];
}

int32_t tok_map_find(const tok_map *m, const char *pool, const uint64_t *off, const void *lens, bool lens_signed,
                     const char *key, size_t len) {
    if (!m->slots) return TOK_NULL;
    uint32_t h = tok_hash32(key, len);
    uint64_t i = h & m->mask;
    for (;;) {
        uint64_t s = m->slots[i];
        if (!s) return TOK_NULL;
        if ((uint32_t)(s >> 32) == h) {
            int32_t id = (int32_t)(uint32_t)(s & 0xffffffffu) - 1;
            if (lens_get(lens, lens_signed, id) == len && memcmp(pool + off[id], key, len) == 0) return id;
        }
        i = (i + 1) & m->mask;
    }
}

int32_t tok_map_insert(tok_map *m, const char *pool, const uint64_t *off, const void *lens, bool lens_signed,
                          int32_t id) {
    uint32_t len = lens_get(lens, lens_signed, id);
    const char *key = pool + off[id];
    uint32_t h = tok_hash32(key, len);
    uint64_t i = h & m->mask;
    for (;;) {
        uint64_t s = m->slots[i];
        if (!s) {
            m->slots[i] = ((uint64_t)h << 32) | (uint32_t)(id + 1);
            return TOK_NULL;
        }
        if ((uint32_t)(s >> 32) == h) {
            int32_t o = (int32_t)(uint32_t)(s & 0xffffffffu) - 1;
            if (lens_get(lens, lens_signed, o) == len && memcmp(pool + off[o], key, len) == 0) return o;
        }
        i = (i + 1) & m->mask;
    }
}

/* GPT-2 byte-level alphabet: code point -> byte (-1 outside the alphabet). */
void tok_byte_alphabet(int16_t cp_to_byte[324]) {
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    int k = 0;
    for (unsigned c = 0; c < 256; c++) {
        bool self = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
        if (self) cp_to_byte[c] = (int16_t)c;
        else cp_to_byte[256 + k++] = (int16_t)c;
    }
}

/* Decodes one strict UTF-8 code point; returns its length or 0 if invalid. */
size_t tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (!n) return 0;
    unsigned char c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t l;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) { l = 2; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { l = 3; v = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { l = 4; v = c & 0x07; }
    else return 0;
    if (n < l) return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((l == 3 && v < 0x800) || (l == 4 && (v < 0x10000 || v > 0x10FFFF)) || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return l;
}

size_t tok_utf8_decode_lenient(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    if (!(c & 0x80)) { *cp = c; return 1; }
    size_t l;
    uint32_t v;
    if (!(c & 0x40)) goto bad;
    if (!(c & 0x20)) { l = 2; v = c & 0x1F; }
    else if (!(c & 0x10)) { l = 3; v = c & 0x0F; }
    else if (!(c & 0x08)) { l = 4; v = c & 0x07; }
    else goto bad;
    if (n < l) goto bad;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) v = 0xFFFD;
    *cp = v;
    return l;
bad:
    *cp = 0xFFFD;
    return 1;
}

size_t tok_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------ */
/* metadata access                                                          */

static kn_status get_str_opt(const gguf_ctx *g, const char *key, gguf_str *out, bool *found, kn_err *err) {
    kn_status st = gguf_get_str(g, key, out);
    *found = st == KN_OK;
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st != KN_OK) return kn_fail(err, KN_ETYPE, "%s: expected a string", key);
    return KN_OK;
}

static kn_status get_bool_opt(const gguf_ctx *g, const char *key, bool *out, kn_err *err) {
    bool b;
    kn_status st = gguf_get_bool(g, key, &b);
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st != KN_OK) return kn_fail(err, KN_ETYPE, "%s: expected a bool", key);
    *out = b;
    return KN_OK;
}

/* Special id: absent keeps the default; out of range keeps it too (as
 * llama.cpp does, with a warning); a non-integer value is an error. */
static kn_status get_id_opt(const gguf_ctx *g, const char *key, int32_t n, int32_t *id, kn_err *err) {
    int64_t x;
    kn_status st = gguf_get_i64(g, key, &x);
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st == KN_ETYPE) return kn_fail(err, KN_ETYPE, "%s: expected an integer token id", key);
    if (st != KN_OK || x < 0 || x >= n) {
        if (!(st == KN_OK && x == 0xFFFFFFFFLL)) KN_DEBUG("tokenizer: %s out of range, using default", key);
        return KN_OK;
    }
    *id = (int32_t)x;
    return KN_OK;
}

/* ------------------------------------------------------------------------ */
/* load                                                                     */

static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "[EOT]", "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", "<end_of_utterance>",
};
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>", "[e~[",
};

static bool text_is(const tok_vocab *v, int32_t id, const char *s) {
    size_t l = strlen(s);
    return v->text_len[id] == l && memcmp(v->text_pool + v->text_off[id], s, l) == 0;
}

static bool text_in(const tok_vocab *v, int32_t id, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (text_is(v, id, list[i])) return true;
    return false;
}

static kn_status build_pieces(tok_vocab *v) {
    /* no piece is longer than its token text */
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n; i++) total += (uint64_t)v->text_len[i];
    v->piece_pool = malloc(total ? total : 1);
    v->piece_off = malloc(sizeof(uint64_t) * (size_t)v->n);
    v->piece_len = malloc(sizeof(uint32_t) * (size_t)v->n);
    if (!v->piece_pool || !v->piece_off || !v->piece_len) return KN_ENOMEM;
    int16_t cp_to_byte[324];
    tok_byte_alphabet(cp_to_byte);
    uint64_t pos = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const char *t = v->text_pool + v->text_off[i];
        uint32_t tl = v->text_len[i];
        uint16_t f = v->flags[i];
        char *o = v->piece_pool + pos;
        size_t ol = 0;
        if (f & (TOK_F_UNKNOWN | TOK_F_CONTROL | TOK_F_USER)) {
            memcpy(o, t, tl);
            ol = tl;
        } else if (f & TOK_F_NORMAL) {
            if (v->family == TOK_FAMILY_BPE) {
                size_t k = 0;
                while (k < tl) {
                    uint32_t cp;
                    size_t cl = tok_utf8_decode((const unsigned char *)t + k, tl - k, &cp);
                    int b = -1;
                    if (cl) {
                        if (cp < 324) b = cp_to_byte[cp];
                    } else {
                        cl = 1;
                    }
                    if (b >= 0) {
                        o[ol++] = (char)b;
                    } else {
                        /* not in the byte alphabet: keep the character's own
                         * bytes (llama.cpp writes an "[UNK_BYTE_0x..]" marker) */
                        memcpy(o + ol, t + k, cl);
                        ol += cl;
                    }
                    k += cl;
                }
            } else {
                /* ▁ -> space */
                for (uint32_t k = 0; k < tl;) {
                    if (k + 3 <= tl && (unsigned char)t[k] == 0xE2 && (unsigned char)t[k + 1] == 0x96 &&
                        (unsigned char)t[k + 2] == 0x81) {
                        o[ol++] = ' ';
                        k += 3;
                    } else {
                        o[ol++] = t[k++];
                    }
                }
            }
        } else if (f & TOK_F_BYTE) {
            unsigned x;
            if (tl == 6 && sscanf(t, "<0x%2x>", &x) == 1) o[ol++] = (char)x;
        }
        v->piece_off[i] = pos;
        v->piece_len[i] = (uint32_t)ol;
        if (ol > v->max_piece_len) v->max_piece_len = (uint32_t)ol;
        pos += ol;
    }
    return KN_OK;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tok_vocab *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (v->text_len[x] != v->text_len[y]) return v->text_len[x] > v->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static kn_status build_special(tok_vocab *v) {
    int32_t cnt = 0;
    for (int32_t i = 0; i < v->n; i++)
        if (v->flags[i] & (TOK_F_CONTROL | TOK_F_USER | TOK_F_UNKNOWN)) cnt++;
    v->special = malloc(sizeof(int32_t) * (size_t)(cnt + 1));
    v->special_next = malloc(sizeof(int32_t) * (size_t)(cnt + 1));
    if (!v->special || !v->special_next) return KN_ENOMEM;
    v->n_special = 0;
    for (int32_t i = 0; i < v->n; i++)
        if (v->flags[i] & (TOK_F_CONTROL | TOK_F_USER | TOK_F_UNKNOWN)) v->special[v->n_special++] = i;
    qsort_r(v->special, (size_t)v->n_special, sizeof(int32_t), cmp_special, v);
    for (int i = 0; i < 256; i++) v->special_first[i] = -1;
    /* chains per first byte, in sorted order */
    for (int32_t k = v->n_special - 1; k >= 0; k--) {
        unsigned char c = (unsigned char)v->text_pool[v->text_off[v->special[k]]];
        v->special_next[k] = v->special_first[c];
        v->special_first[c] = k;
    }
    return KN_OK;
}

static kn_status oom(kn_err *err) { return kn_fail(err, KN_ENOMEM, "tokenizer: out of memory"); }

/* tokenizer.ggml.model -> family; tokenizer.ggml.pre (default "default") */
static kn_status load_family(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    gguf_str model, pre;
    bool found;
    kn_status st;
    if ((st = get_str_opt(g, "tokenizer.ggml.model", &model, &found, err)) != KN_OK) return st;
    if (!found)
        return kn_fail(err, KN_ENOTFOUND, "tokenizer.ggml.model: missing (no tokenizer in this file)");
    if (gguf_str_eq(model, "llama")) v->family = TOK_FAMILY_SPM;
    else if (gguf_str_eq(model, "gpt2")) v->family = TOK_FAMILY_BPE;
    else if (gguf_str_eq(model, "bert")) v->family = TOK_FAMILY_WPM;
    else if (gguf_str_eq(model, "gemma4")) v->family = TOK_FAMILY_GEMMA4;
    else
        return kn_fail(err, KN_EUNSUPPORTED, "tokenizer.ggml.model: unsupported tokenizer '%.*s'",
                       (int)(model.len > 64 ? 64 : model.len), model.data);
    if ((st = get_str_opt(g, "tokenizer.ggml.pre", &pre, &found, err)) != KN_OK) return st;
    if (v->family == TOK_FAMILY_GEMMA4) {
        strcpy(v->pre, "gemma4"); /* llama.cpp ignores the file's value */
    } else if (found) {
        if (pre.len >= sizeof v->pre) return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.pre: too long");
        memcpy(v->pre, pre.data, pre.len);
        v->pre[pre.len] = 0;
    } else {
        strcpy(v->pre, "default");
    }
    return KN_OK;
}

/* tokenizer.ggml.tokens -> n, the text pool (an empty token becomes
 * "[EMPTY_<id>]"), and the per-token arrays (scores zeroed) */
static kn_status load_tokens(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    gguf_type et;
    uint64_t n;
    const void *data;
    kn_status st = gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data);
    if (st == KN_ENOTFOUND) return kn_fail(err, KN_ENOTFOUND, "tokenizer.ggml.tokens: missing");
    if (st != KN_OK || et != GGUF_TYPE_STRING)
        return kn_fail(err, KN_ETYPE, "tokenizer.ggml.tokens: expected an array of strings");
    if (n == 0) return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.tokens: empty vocab");
    if (n > TOK_MAX_VOCAB)
        return kn_fail(err, KN_ERANGE, "tokenizer.ggml.tokens: %llu tokens (max %u)", (unsigned long long)n,
                       TOK_MAX_VOCAB);
    v->n = (int32_t)n;
    uint64_t pool = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s) != KN_OK)
            return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.tokens[%llu]: unreadable", (unsigned long long)i);
        if (s.len > TOK_MAX_TOKEN_LEN)
            return kn_fail(err, KN_ERANGE, "tokenizer.ggml.tokens[%llu]: %llu bytes long (max %u)",
                           (unsigned long long)i, (unsigned long long)s.len, TOK_MAX_TOKEN_LEN);
        pool += s.len ? s.len : 24;
    }
    v->text_pool = malloc(pool + 1);
    v->text_off = malloc(sizeof(uint64_t) * n);
    v->text_len = malloc(sizeof(uint32_t) * n);
    v->scores = calloc(n, sizeof(float));
    v->type = malloc(n);
    v->flags = malloc(n * sizeof *v->flags);
    if (!v->text_pool || !v->text_off || !v->text_len || !v->scores || !v->type || !v->flags) return oom(err);
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s);
        v->text_off[i] = pos;
        if (s.len == 0) {
            int l = snprintf(v->text_pool + pos, 24, "[EMPTY_%llu]", (unsigned long long)i);
            v->text_len[i] = (uint32_t)l;
        } else {
            memcpy(v->text_pool + pos, s.data, s.len);
            v->text_len[i] = (uint32_t)s.len;
        }
        pos += v->text_len[i];
        if (v->text_len[i] > v->max_token_len) v->max_token_len = v->text_len[i];
    }
    return KN_OK;
}

/* An optional per-token array of 4-byte elements, i32 (or f32 too when
 * f32 is set; `what` names the type in the error). *data is NULL when the
 * key is absent. */
static kn_status token_array(const tok_vocab *v, const gguf_ctx *g, const char *key, bool f32,
                             const char *what, const void **data, gguf_type *et, kn_err *err) {
    uint64_t n;
    const void *d;
    *data = NULL;
    kn_status st = gguf_get_arr(g, key, et, &n, &d);
    if (st == KN_ENOTFOUND) return KN_OK;
    if (st != KN_OK || !(*et == GGUF_TYPE_INT32 || (f32 && *et == GGUF_TYPE_FLOAT32)))
        return kn_fail(err, KN_ETYPE, "%s: expected an array of %s", key, what);
    if (n != (uint64_t)v->n)
        return kn_fail(err, KN_EFORMAT, "%s: %llu entries for %d tokens", key, (unsigned long long)n, v->n);
    *data = d; /* not NULL: a numeric array of n >= 1 elements in the mapping */
    return KN_OK;
}

/* tokenizer.ggml.scores (f32, or i32 converted; zero when absent) */
static kn_status load_scores(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    const void *data;
    gguf_type et;
    kn_status st = token_array(v, g, "tokenizer.ggml.scores", true, "f32", &data, &et, err);
    if (st != KN_OK || !data) return st;
    for (int32_t i = 0; i < v->n; i++) {
        if (et == GGUF_TYPE_FLOAT32) memcpy(&v->scores[i], (const char *)data + 4 * (size_t)i, 4);
        else { int32_t x; memcpy(&x, (const char *)data + 4 * (size_t)i, 4); v->scores[i] = (float)x; }
    }
    return KN_OK;
}

/* tokenizer.ggml.token_type (all normal when absent; unknown values become
 * undefined) and the attribute flags they give */
static kn_status load_token_types(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    const void *data;
    gguf_type et;
    kn_status st = token_array(v, g, "tokenizer.ggml.token_type", false, "i32", &data, &et, err);
    if (st != KN_OK) return st;
    if (data) {
        for (int32_t i = 0; i < v->n; i++) {
            int32_t x;
            memcpy(&x, (const char *)data + 4 * (size_t)i, 4);
            v->type[i] = (x >= 0 && x <= 6) ? (uint8_t)x : TOK_TYPE_UNDEFINED;
        }
    } else {
        memset(v->type, TOK_TYPE_NORMAL, (size_t)v->n);
    }
    for (int32_t i = 0; i < v->n; i++) {
        static const uint8_t F[7] = {0, TOK_F_NORMAL, TOK_F_UNKNOWN, TOK_F_CONTROL, TOK_F_USER, TOK_F_UNUSED, TOK_F_BYTE};
        v->flags[i] = F[v->type[i]];
    }
    return KN_OK;
}

/* text -> id; two tokens with one text are an error */
static kn_status index_texts(tok_vocab *v, kn_err *err) {
    if (tok_map_init(&v->map_text, (uint64_t)v->n) != KN_OK) return oom(err);
    for (int32_t i = 0; i < v->n; i++) {
        int32_t o = tok_map_insert(&v->map_text, v->text_pool, v->text_off, v->text_len, false, i);
        if (o != TOK_NULL)
            return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.tokens: duplicate token '%.*s' at ids %d and %d",
                           (int)(v->text_len[i] > 64 ? 64 : v->text_len[i]), v->text_pool + v->text_off[i], o,
                           i);
    }
    return KN_OK;
}

/* Special token ids and the add_* flags: the family's defaults (llama.cpp's),
 * the BPE pre-tokenizer's, then the file's keys. */
static kn_status load_special_ids(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    kn_status st;
    v->eot = v->eom = v->sep = v->pad = v->mask = TOK_NULL;
    switch (v->family) {
    case TOK_FAMILY_SPM:
        v->bos = 1; v->eos = 2; v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
        break;
    case TOK_FAMILY_WPM:
        v->bos = 101; v->eos = TOK_NULL; v->unk = 100; v->sep = 102; v->pad = 0; v->mask = 103;
        v->add_bos = true; v->add_sep = true;
        break;
    case TOK_FAMILY_BPE:
        v->bos = 11; v->eos = 11; v->unk = TOK_NULL;
        break;
    case TOK_FAMILY_GEMMA4: /* every id comes from the file */
        v->bos = v->eos = v->unk = TOK_NULL;
        break;
    }
    if (v->family == TOK_FAMILY_BPE) {
        if ((st = tok_bpe_setup(v, g, err)) != KN_OK) return st; /* sets add_bos, ignore_merges per pre */
    } else if (v->family == TOK_FAMILY_GEMMA4) {
        if ((st = tok_gemma4_setup(v, g, err)) != KN_OK) return st;
    }
    if ((st = get_bool_opt(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err)) != KN_OK)
        return st;

    int32_t *dflt[] = {&v->bos, &v->eos, &v->unk, &v->sep, &v->pad, &v->mask};
    for (size_t k = 0; k < sizeof dflt / sizeof dflt[0]; k++)
        if (*dflt[k] >= v->n) *dflt[k] = TOK_NULL;
    struct { const char *key; int32_t *id; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},     {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},     {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk}, {"tokenizer.ggml.seperator_token_id", &v->sep},
        {"tokenizer.ggml.padding_token_id", &v->pad}, {"tokenizer.ggml.mask_token_id", &v->mask},
    };
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if ((st = get_id_opt(g, ids[k].key, v->n, ids[k].id, err)) != KN_OK) return st;
    if (v->family == TOK_FAMILY_WPM && gguf_find_key(g, "tokenizer.ggml.bos_token_id") < 0)
        if ((st = get_id_opt(g, "tokenizer.ggml.cls_token_id", v->n, &v->bos, err)) != KN_OK) return st;
    if ((st = get_bool_opt(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err)) != KN_OK) return st;
    if ((st = get_bool_opt(g, "tokenizer.ggml.add_eos_token", &v->add_eos, err)) != KN_OK) return st;
    if ((st = get_bool_opt(g, "tokenizer.ggml.add_sep_token", &v->add_sep, err)) != KN_OK) return st;
    if (v->family == TOK_FAMILY_GEMMA4 && !v->add_bos) {
        /* llama.cpp's workaround for Gemma 4 files that say false (its PR 21500) */
        KN_DEBUG("tokenizer: gemma4: tokenizer.ggml.add_bos_token overridden to true");
        v->add_bos = true;
    }
    if (v->add_bos && v->bos == TOK_NULL)
        return kn_fail(err, KN_EFORMAT, "tokenizer: add_bos_token is true but there is no BOS token");
    if (v->add_eos && v->eos == TOK_NULL)
        return kn_fail(err, KN_EFORMAT, "tokenizer: add_eos_token is true but there is no EOS token");
    if (v->add_sep && v->sep == TOK_NULL)
        return kn_fail(err, KN_EFORMAT, "tokenizer: add_sep_token is true but there is no SEP token");
    return KN_OK;
}

/* WordPiece normalizer: lowercase (default on), strip_accents (default:
 * as lowercase) */
static kn_status load_normalizer(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    kn_status st;
    v->wpm_lowercase = true;
    if ((st = get_bool_opt(g, "tokenizer.ggml.normalizer.lowercase", &v->wpm_lowercase, err)) != KN_OK)
        return st;
    v->wpm_strip_accents = v->wpm_lowercase;
    return get_bool_opt(g, "tokenizer.ggml.normalizer.strip_accents", &v->wpm_strip_accents, err);
}

/* EOT by text (lowest id wins), then the EOG set; such tokens become control */
static void mark_end_tokens(tok_vocab *v) {
    for (int32_t i = 0; i < v->n && v->eot == TOK_NULL; i++)
        if (text_in(v, i, EOT_TEXTS, sizeof EOT_TEXTS / sizeof EOT_TEXTS[0])) { v->eot = i; v->flags[i] |= TOK_F_CONTROL; }
    for (int32_t i = 0; i < v->n && v->eom == TOK_NULL; i++)
        if (text_is(v, i, "<|eom_id|>")) { v->eom = i; v->flags[i] |= TOK_F_CONTROL; }
    for (int32_t i = 0; i < v->n; i++)
        if (text_in(v, i, EOG_TEXTS, sizeof EOG_TEXTS / sizeof EOG_TEXTS[0])) v->flags[i] |= TOK_F_EOG | TOK_F_CONTROL;
    if (v->eos != TOK_NULL) v->flags[v->eos] |= TOK_F_EOG;
    if (v->eot != TOK_NULL) v->flags[v->eot] |= TOK_F_EOG;
    if (v->eom != TOK_NULL) v->flags[v->eom] |= TOK_F_EOG;
    /* Harmony (gpt-oss): <|end|> closes one message, and the answer follows
     * the analysis message in the same turn, which <|return|> or <|call|>
     * ends. As llama.cpp: with those in the EOG set, <|end|> leaves it (and
     * likewise beside <|calls|> and <|flush|>, LFM2's). */
    int32_t end = TOK_NULL;
    bool ret = false, call = false, flush = false;
    for (int32_t i = 0; i < v->n; i++) {
        if (!(v->flags[i] & TOK_F_EOG)) continue;
        if (text_is(v, i, "<|end|>")) end = i;
        else if (text_is(v, i, "<|return|>")) ret = true;
        else if (text_is(v, i, "<|call|>") || text_is(v, i, "<|calls|>")) call = true;
        else if (text_is(v, i, "<|flush|>")) flush = true;
    }
    if (end != TOK_NULL && call && (ret || flush)) v->flags[end] &= (uint16_t)~TOK_F_EOG;
    /* Gemma 4 (and paddleocr): with <|tool_response> among the end tokens,
     * "</s>" is ordinary text, neither an end nor a control token */
    int32_t tool_resp = TOK_NULL, end_s = TOK_NULL;
    for (int32_t i = 0; i < v->n; i++) {
        if (!(v->flags[i] & TOK_F_EOG)) continue;
        if (text_is(v, i, "<|tool_response>")) tool_resp = i;
        else if (text_is(v, i, "</s>")) end_s = i;
    }
    if (tool_resp != TOK_NULL && end_s != TOK_NULL) v->flags[end_s] = TOK_F_NORMAL;
}

static bool ascii_contains_ci(const char *s, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t k = 0;
        while (k < m && (char)tolower((unsigned char)s[i + k]) == needle[k]) k++;
        if (k == m) return true;
    }
    return false;
}

static void set_strip(tok_vocab *v, const char *text, uint16_t flag, bool on) {
    int32_t id = tok_find(v, text, strlen(text));
    if (id == TOK_NULL) return;
    v->flags[id] = on ? (uint16_t)(v->flags[id] | flag) : (uint16_t)(v->flags[id] & ~flag);
}

/* llama.cpp's per-model token attributes, which GGUF files do not carry,
 * chosen by the pre-tokenizer, general.architecture and general.name (case
 * folded): partitioning then eats the whitespace on that side of the token.
 * Runs after mark_end_tokens (phi-3's rule covers the tokens that are
 * special by then). */
static void set_strip_attrs(tok_vocab *v, const gguf_ctx *g) {
    gguf_str name = {0}, arch = {0};
    if (gguf_get_str(g, "general.name", &name) != KN_OK) name.len = 0;
    if (gguf_get_str(g, "general.architecture", &arch) != KN_OK) arch.len = 0;
    if (strstr(v->pre, "jina-v2-de") || strstr(v->pre, "jina-v2-es") || strstr(v->pre, "jina-v2-code") ||
        ascii_contains_ci(arch.data, arch.len, "nomic-bert-moe") ||
        ascii_contains_ci(arch.data, arch.len, "jina-bert-v3")) {
        set_strip(v, "<mask>", TOK_F_LSTRIP, true);
    } else if (ascii_contains_ci(name.data, name.len, "phi-3") || ascii_contains_ci(name.data, name.len, "phi3")) {
        for (int32_t i = 0; i < v->n; i++)
            if (v->flags[i] & (TOK_F_CONTROL | TOK_F_USER | TOK_F_UNKNOWN)) v->flags[i] |= TOK_F_RSTRIP;
        set_strip(v, "</s>", TOK_F_RSTRIP, true);
        set_strip(v, "<unk>", TOK_F_RSTRIP, false);
        set_strip(v, "<s>", TOK_F_RSTRIP, false);
        set_strip(v, "<|endoftext|>", TOK_F_RSTRIP, false);
    } else if (ascii_contains_ci(name.data, name.len, "modern-bert")) {
        set_strip(v, "[MASK]", TOK_F_LSTRIP, true);
    }
}

/* SPM: the byte-fallback token of each byte, and whether chunking at U+2581
 * is exact (no token has U+2581 right after another character) */
static void build_spm_tables(tok_vocab *v) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = tok_find(v, buf, 6);
        if (id == TOK_NULL) { buf[0] = (char)b; id = tok_find(v, buf, 1); }
        v->spm_byte_tok[b] = id;
    }
    v->spm_split_ok = true;
    for (int32_t i = 0; i < v->n && v->spm_split_ok; i++) {
        const unsigned char *t = (const unsigned char *)v->text_pool + v->text_off[i];
        uint32_t tl = v->text_len[i];
        for (uint32_t k = 1; k + 3 <= tl; k++)
            if (t[k] == 0xE2 && t[k + 1] == 0x96 && t[k + 2] == 0x81 &&
                !(k >= 3 && t[k - 3] == 0xE2 && t[k - 2] == 0x96 && t[k - 1] == 0x81)) {
                v->spm_split_ok = false;
                break;
            }
    }
}

/* the newline token: SPM's <0x0A>, WPM's pad, BPE's encoding of "\n" */
static void find_newline(tok_vocab *v) {
    v->nl = TOK_NULL;
    if (v->family == TOK_FAMILY_SPM) v->nl = v->spm_byte_tok['\n'];
    else if (v->family == TOK_FAMILY_WPM) v->nl = v->pad;
    else {
        int32_t id;
        size_t cnt = 0;
        if (tok_encode(v, "\n", 1, false, false, &id, 1, &cnt, NULL) == KN_OK && cnt >= 1) v->nl = id;
        else if (cnt >= 1) v->nl = id;
        else v->nl = v->pad;
    }
}

kn_status tok_vocab_load(const gguf_ctx *g, tok_vocab **out, kn_err *err) {
    *out = NULL;
    kn_status st;
    tok_vocab *v = calloc(1, sizeof *v);
    if (!v) return kn_fail(err, KN_ENOMEM, "tokenizer: out of memory");
    if ((st = load_family(v, g, err)) != KN_OK) goto fail;
    if ((st = load_tokens(v, g, err)) != KN_OK) goto fail;
    if ((st = load_scores(v, g, err)) != KN_OK) goto fail;
    if ((st = load_token_types(v, g, err)) != KN_OK) goto fail;
    if ((st = index_texts(v, err)) != KN_OK) goto fail;
    if ((st = load_special_ids(v, g, err)) != KN_OK) goto fail;
    if ((st = load_normalizer(v, g, err)) != KN_OK) goto fail;
    mark_end_tokens(v);
    set_strip_attrs(v, g);
    build_spm_tables(v);
    if (build_special(v) != KN_OK || build_pieces(v) != KN_OK) {
        st = oom(err);
        goto fail;
    }
    find_newline(v);
    *out = v;
    return KN_OK;
fail:
    tok_vocab_destroy(v);
    return st;
}

void tok_vocab_destroy(tok_vocab *v) {
    if (!v) return;
    tok_bpe_free(v);
    free(v->text_pool);
    free(v->text_off);
    free(v->text_len);
    free(v->scores);
    free(v->type);
    free(v->flags);
    free(v->map_text.slots);
    free(v->piece_pool);
    free(v->piece_off);
    free(v->piece_len);
    free(v->special);
    free(v->special_next);
    free(v);
}

/* ------------------------------------------------------------------------ */
/* accessors                                                                */

int32_t tok_n_vocab(const tok_vocab *v) { return v->n; }
tok_family tok_vocab_family(const tok_vocab *v) { return v->family; }
const char *tok_family_name(tok_family f) {
    switch (f) {
    case TOK_FAMILY_SPM: return "spm";
    case TOK_FAMILY_BPE: return "bpe";
    case TOK_FAMILY_WPM: return "wpm";
    case TOK_FAMILY_GEMMA4: return "gemma4";
    }
    return "?";
}
const char *tok_vocab_pre(const tok_vocab *v) { return v->pre; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
int32_t tok_eot(const tok_vocab *v) { return v->eot; }
int32_t tok_eom(const tok_vocab *v) { return v->eom; }
int32_t tok_pad(const tok_vocab *v) { return v->pad; }
int32_t tok_unk(const tok_vocab *v) { return v->unk; }
int32_t tok_sep(const tok_vocab *v) { return v->sep; }
int32_t tok_mask(const tok_vocab *v) { return v->mask; }
int32_t tok_nl(const tok_vocab *v) { return v->nl; }
bool tok_add_bos(const tok_vocab *v) { return v->add_bos; }
bool tok_add_eos(const tok_vocab *v) { return v->add_eos; }
bool tok_add_sep(const tok_vocab *v) { return v->add_sep; }
bool tok_valid(const tok_vocab *v, int32_t id) { return id >= 0 && id < v->n; }
tok_type tok_token_type(const tok_vocab *v, int32_t id) {
    return tok_valid(v, id) ? (tok_type)v->type[id] : TOK_TYPE_UNDEFINED;
}
float tok_token_score(const tok_vocab *v, int32_t id) { return tok_valid(v, id) ? v->scores[id] : 0.0f; }
bool tok_is_eog(const tok_vocab *v, int32_t id) { return tok_valid(v, id) && (v->flags[id] & TOK_F_EOG); }
bool tok_is_control(const tok_vocab *v, int32_t id) {
    return tok_valid(v, id) && (v->flags[id] & (TOK_F_CONTROL | TOK_F_UNKNOWN));
}
const char *tok_token_text(const tok_vocab *v, int32_t id, size_t *len) {
    if (!tok_valid(v, id)) { *len = 0; return NULL; }
    *len = v->text_len[id];
    return v->text_pool + v->text_off[id];
}
int32_t tok_find(const tok_vocab *v, const char *text, size_t len) {
    return tok_map_find(&v->map_text, v->text_pool, v->text_off, v->text_len, false, text, len);
}
const char *tok_token_piece(const tok_vocab *v, int32_t id, bool special, size_t *len) {
    if (!tok_valid(v, id)) { *len = 0; return NULL; }
    if (!special && (v->flags[id] & (TOK_F_CONTROL | TOK_F_UNKNOWN))) { *len = 0; return v->piece_pool; }
    *len = v->piece_len[id];
    return v->piece_pool + v->piece_off[id];
}

/* ------------------------------------------------------------------------ */
/* encoding                                                                 */

tok_encoder *tok_encoder_create(const tok_vocab *v) {
    tok_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->v = v;
    if (v->family == TOK_FAMILY_BPE) {
        e->md = pcre2_match_data_create(4, NULL);
        e->mctx = pcre2_match_context_create(NULL);
        e->jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
        if (!e->md || !e->mctx || !e->jit) goto fail;
        pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
    }
    return e;
fail:
    tok_encoder_destroy(e);
    return NULL;
}

void tok_encoder_destroy(tok_encoder *e) {
    if (!e) return;
    free(e->wc);
    free(e->out.v);
    free(e->buf);
    free(e->buf2);
    free(e->mask);
    free(e->frag);
    free(e->pieces);
    free(e->pieces2);
    free(e->syms);
    free(e->heap);
    free(e->cpts);
    if (e->md) pcre2_match_data_free(e->md);
    if (e->mctx) pcre2_match_context_free(e->mctx);
    if (e->jit) pcre2_jit_stack_free(e->jit);
    free(e);
}

/* Binary heap of bigrams. SPM: highest score first, then leftmost; BPE:
 * lowest rank first, then leftmost. Capacity is reserved by the caller. */
static inline bool heap_before(const tok_bigram *a, const tok_bigram *b, bool spm) {
    if (spm) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

void tok_heap_push(tok_encoder *e, const tok_bigram *b, bool spm) {
    KN_ASSERT(e->heap_n < e->heap_cap);
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(b, &e->heap[p], spm)) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = *b;
}

tok_bigram tok_heap_pop(tok_encoder *e, bool spm) {
    tok_bigram top = e->heap[0];
    tok_bigram last = e->heap[--e->heap_n];
    size_t n = e->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&e->heap[c + 1], &e->heap[c], spm)) c++;
        if (!heap_before(&e->heap[c], &last, spm)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

/* isspace() in the C locale, as llama.cpp's partitioning uses it */
static inline bool is_c_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Splits text into fragments: raw text and special-token ids, exactly as
 * llama.cpp's tokenizer_st_partition (each special token, longest first, is
 * cut out of the remaining raw text left to right; an lstrip/rstrip token
 * also takes the whitespace beside it out of that text). The result is the
 * token fragments in text order, as triples (start, len, id) whose span
 * covers the stripped whitespace too; raw text is what lies between. */
static kn_status partition(tok_encoder *e, const char *text, size_t len, bool parse_special) {
    const tok_vocab *v = e->v;
    e->frag_n = 0;
    if (tok_reserve((void **)&e->mask, &e->mask_cap, len + 1, 1) != KN_OK) return KN_ENOMEM;
    memset(e->mask, 0, len + 1);
    /* Candidate occurrences: for every position, tokens whose text starts there,
     * grouped per special index. Simulate the per-token passes in sorted order. */
    size_t n_hits = 0;
    /* count hits first (bounded by len * chain length; chains are short) */
    for (size_t i = 0; i < len; i++) {
        for (int32_t k = v->special_first[(unsigned char)text[i]]; k >= 0; k = v->special_next[k]) {
            int32_t id = v->special[k];
            if (!parse_special && (v->flags[id] & (TOK_F_CONTROL | TOK_F_UNKNOWN))) continue;
            uint32_t tl = v->text_len[id];
            if (tl <= len - i && memcmp(text + i, v->text_pool + v->text_off[id], tl) == 0) n_hits++;
        }
    }
    if (n_hits) {
        /* hits as (k, pos) pairs sorted by k then pos */
        size_t need = n_hits * 2;
        size_t *hits = malloc(need * sizeof(size_t));
        if (!hits) return KN_ENOMEM;
        size_t h = 0;
        for (size_t i = 0; i < len; i++) {
            for (int32_t k = v->special_first[(unsigned char)text[i]]; k >= 0; k = v->special_next[k]) {
                int32_t id = v->special[k];
                if (!parse_special && (v->flags[id] & (TOK_F_CONTROL | TOK_F_UNKNOWN))) continue;
                uint32_t tl = v->text_len[id];
                if (tl <= len - i && memcmp(text + i, v->text_pool + v->text_off[id], tl) == 0) {
                    hits[2 * h] = (size_t)k;
                    hits[2 * h + 1] = i;
                    h++;
                }
            }
        }
        /* counting sort by k keeps positions ascending */
        size_t *cnt = calloc((size_t)v->n_special + 1, sizeof(size_t));
        size_t *sorted = malloc(need * sizeof(size_t));
        if (!cnt || !sorted) { free(hits); free(cnt); free(sorted); return KN_ENOMEM; }
        for (size_t j = 0; j < h; j++) cnt[hits[2 * j] + 1]++;
        for (int32_t k = 0; k < v->n_special; k++) cnt[k + 1] += cnt[k];
        for (size_t j = 0; j < h; j++) {
            size_t d = cnt[hits[2 * j]]++;
            sorted[2 * d] = hits[2 * j];
            sorted[2 * d + 1] = hits[2 * j + 1];
        }
        free(cnt);
        free(hits);
        /* accept: for each token in order, occurrences left to right, not
         * overlapping accepted ones nor the previous accepted one of this token */
        size_t j = 0;
        kn_status st = KN_OK;
        while (j < h && st == KN_OK) {
            size_t k = sorted[2 * j];
            int32_t id = v->special[k];
            uint32_t tl = v->text_len[id];
            size_t cursor = 0;
            for (; j < h && sorted[2 * j] == k; j++) {
                size_t p = sorted[2 * j + 1];
                if (p < cursor) continue;
                bool free_span = true;
                for (size_t q = p; q < p + tl; q++)
                    if (e->mask[q]) { free_span = false; break; }
                if (!free_span) continue;
                /* lstrip/rstrip: the whitespace beside the token, up to the
                 * ends of its raw fragment (the masked bytes), goes with it */
                size_t s0 = p, s1 = p + tl;
                if (v->flags[id] & TOK_F_LSTRIP)
                    while (s0 > 0 && !e->mask[s0 - 1] && is_c_space(text[s0 - 1])) s0--;
                if (v->flags[id] & TOK_F_RSTRIP)
                    while (s1 < len && !e->mask[s1] && is_c_space(text[s1])) s1++;
                /* the same token cannot straddle an accepted span: fragments are separate */
                memset(e->mask + s0, 1, s1 - s0);
                if (tok_reserve((void **)&e->frag, &e->frag_cap, (e->frag_n + 1) * 3, sizeof(int32_t)) != KN_OK) {
                    st = KN_ENOMEM;
                    break;
                }
                e->frag[e->frag_n * 3] = (int32_t)s0;
                e->frag[e->frag_n * 3 + 1] = (int32_t)(s1 - s0);
                e->frag[e->frag_n * 3 + 2] = id;
                e->frag_n++;
                cursor = s1;
            }
        }
        free(sorted);
        if (st != KN_OK) return st;
    }
    /* Build the ordered fragment list: walk text, emitting raw runs and tokens. */
    size_t nt = e->frag_n;
    /* tokens sorted by start */
    int32_t *tk = NULL;
    if (nt) {
        tk = malloc(nt * 3 * sizeof(int32_t));
        if (!tk) return KN_ENOMEM;
        memcpy(tk, e->frag, nt * 3 * sizeof(int32_t));
        /* insertion into position order via a start index (positions are unique) */
        int32_t *at = malloc((len + 1) * sizeof(int32_t));
        if (!at) { free(tk); return KN_ENOMEM; }
        for (size_t i = 0; i <= len; i++) at[i] = -1;
        for (size_t t = 0; t < nt; t++) at[tk[3 * t]] = (int32_t)t;
        size_t m = 0;
        for (size_t i = 0; i < len; i++)
            if (at[i] >= 0) {
                int32_t t = at[i];
                e->frag[3 * m] = tk[3 * t];
                e->frag[3 * m + 1] = tk[3 * t + 1];
                e->frag[3 * m + 2] = tk[3 * t + 2];
                m++;
            }
        free(at);
        free(tk);
    }
    return KN_OK;
}

kn_status tok_encoder_encode(tok_encoder *e, const char *text, size_t len, bool add_special, bool parse_special,
                             int32_t *out, size_t cap, size_t *n_out, kn_err *err) {
    const tok_vocab *v = e->v;
    kn_status st;
    *n_out = 0;
    e->out.n = 0;
    if (len > TOK_MAX_INPUT) return kn_fail(err, KN_ERANGE, "tokenize: input of %zu bytes is too long (max %zu)", len, TOK_MAX_INPUT);
    if (len && !text) return kn_fail(err, KN_EINVAL, "tokenize: NULL text");
    if (len && (st = partition(e, text, len, parse_special)) != KN_OK) return kn_fail(err, st, "tokenize: out of memory");
    size_t nfrag = len ? e->frag_n : 0;
    /* the fragment array is overwritten by nothing below; copy its count */
    if (add_special && v->add_bos) {
        if ((st = tok_ivec_push(&e->out, v->bos)) != KN_OK) goto oom;
    }
    if (len) {
        size_t pos = 0;
        bool prev_special = true;
        for (size_t f = 0; f <= nfrag; f++) {
            size_t fs = f < nfrag ? (size_t)e->frag[3 * f] : len;
            if (fs > pos) {
                if (v->family == TOK_FAMILY_SPM) {
                    /* SPM needs the space prefix decision; pass it via the encoder */
                    size_t fl = fs - pos;
                    kn_status s2;
                    if (v->add_space_prefix && prev_special) {
                        /* build " " + text in buf2 */
                        if (tok_reserve((void **)&e->buf2, &e->buf2_cap, fl + 1, 1) != KN_OK) goto oom;
                        e->buf2[0] = ' ';
                        memcpy(e->buf2 + 1, text + pos, fl);
                        s2 = tok_spm_encode(e, e->buf2, fl + 1, err);
                    } else {
                        s2 = tok_spm_encode(e, text + pos, fl, err);
                    }
                    if (s2 != KN_OK) return s2;
                } else {
                    if (v->family == TOK_FAMILY_BPE) st = tok_bpe_encode(e, text + pos, fs - pos, err);
                    else if (v->family == TOK_FAMILY_GEMMA4) st = tok_gemma4_encode(e, text + pos, fs - pos, err);
                    else st = tok_wpm_encode(e, text + pos, fs - pos, err);
                    if (st != KN_OK) return st;
                }
                prev_special = false;
            }
            if (f < nfrag) {
                if ((st = tok_ivec_push(&e->out, e->frag[3 * f + 2])) != KN_OK) goto oom;
                pos = fs + (size_t)e->frag[3 * f + 1];
                prev_special = true;
            }
        }
    }
    if (add_special) {
        if (v->family == TOK_FAMILY_WPM) {
            if (v->add_sep && (st = tok_ivec_push(&e->out, v->sep)) != KN_OK) goto oom;
        } else if (v->add_eos) {
            if ((st = tok_ivec_push(&e->out, v->eos)) != KN_OK) goto oom;
        }
    }
    *n_out = e->out.n;
    if (out && e->out.n && cap) memcpy(out, e->out.v, (e->out.n < cap ? e->out.n : cap) * sizeof(int32_t));
    if (e->out.n > cap && out) return kn_fail(err, KN_ERANGE, "tokenize: %zu ids do not fit in %zu", e->out.n, cap);
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}

const int32_t *tok_encoder_ids(const tok_encoder *e, size_t *n) {
    *n = e->out.n;
    return e->out.v;
}

kn_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t *out, size_t cap, size_t *n_out, kn_err *err) {
    tok_encoder *e = tok_encoder_create(v);
    if (!e) { *n_out = 0; return kn_fail(err, KN_ENOMEM, "tokenize: out of memory"); }
    kn_status st = tok_encoder_encode(e, text, len, add_special, parse_special, out, cap, n_out, err);
    tok_encoder_destroy(e);
    return st;
}

kn_status tok_encode_alloc(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                           int32_t **ids, size_t *n, kn_err *err) {
    *ids = NULL;
    *n = 0;
    tok_encoder *e = tok_encoder_create(v);
    if (!e) return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
    size_t cnt = 0;
    kn_status st = tok_encoder_encode(e, text, len, add_special, parse_special, NULL, 0, &cnt, err);
    if (st == KN_OK) { /* one pass: the encoder keeps the ids */
        const int32_t *src = tok_encoder_ids(e, &cnt);
        *ids = malloc((cnt ? cnt : 1) * sizeof **ids);
        if (!*ids) {
            st = kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
        } else {
            if (cnt) memcpy(*ids, src, cnt * sizeof **ids);
            *n = cnt;
            st = KN_OK;
        }
    }
    tok_encoder_destroy(e);
    return st;
}

/* ------------------------------------------------------------------------ */
/* streaming decoder                                                        */

struct tok_decoder {
    const tok_vocab *v;
    tok_decoder_opts o;
    bool first;
    char *hold; /* [4] incomplete tail */
    size_t n_hold;
    char *outb; /* [max_piece_len * 3 + 16] */
    size_t out_cap;
};

tok_decoder *tok_decoder_create(const tok_vocab *v, const tok_decoder_opts *opts) {
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->v = v;
    if (opts) d->o = *opts;
    d->first = true;
    d->hold = malloc(8);
    d->out_cap = (size_t)v->max_piece_len * 3 + 32;
    d->outb = malloc(d->out_cap);
    if (!d->hold || !d->outb) { tok_decoder_destroy(d); return NULL; }
    return d;
}

void tok_decoder_destroy(tok_decoder *d) {
    if (!d) return;
    free(d->hold);
    free(d->outb);
    free(d);
}

void tok_decoder_reset(tok_decoder *d) {
    d->first = true;
    d->n_hold = 0;
}

size_t tok_decoder_pending(const tok_decoder *d) { return d->n_hold; }

/* Is s[0..n) a proper prefix of some valid UTF-8 sequence? */
static bool utf8_incomplete_prefix(const unsigned char *s, size_t n) {
    if (n == 0 || n >= 4) return false;
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return false;
    if (n >= need) return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char x = s[i];
        if (i == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) return false;
    }
    return true;
}

/* Appends bytes in[0..n) after the held tail, validating as it goes. */
static size_t dec_emit(tok_decoder *d, const char *in, size_t n) {
    /* work area: hold + in, processed into outb */
    size_t o = 0;
    char tmp[8];
    size_t nh = d->n_hold;
    memcpy(tmp, d->hold, nh);
    d->n_hold = 0;
    size_t total = nh + n;
    size_t i = 0;
#define AT(k) ((k) < nh ? (unsigned char)tmp[k] : (unsigned char)in[(k)-nh])
    while (i < total) {
        unsigned char c = AT(i);
        if (c < 0x80) { d->outb[o++] = (char)c; i++; continue; }
        /* try a full sequence */
        unsigned char seq[4];
        size_t avail = total - i < 4 ? total - i : 4;
        for (size_t k = 0; k < avail; k++) seq[k] = AT(i + k);
        uint32_t cp;
        size_t l = tok_utf8_decode(seq, avail, &cp);
        if (l) {
            memcpy(d->outb + o, seq, l);
            o += l;
            i += l;
            continue;
        }
        /* incomplete at the very end? hold it */
        if (utf8_incomplete_prefix(seq, avail) && i + avail == total) {
            memcpy(d->hold, seq, avail);
            d->n_hold = avail;
            break;
        }
        /* invalid byte: release it */
        if (d->o.replace_invalid) {
            memcpy(d->outb + o, "\xEF\xBF\xBD", 3);
            o += 3;
        } else {
            d->outb[o++] = (char)c;
        }
        i++;
    }
#undef AT
    return o;
}

kn_status tok_decoder_feed(tok_decoder *d, int32_t id, const char **out, size_t *len, kn_err *err) {
    *out = d->outb;
    *len = 0;
    if (!tok_valid(d->v, id)) return kn_fail(err, KN_EINVAL, "detokenize: token id %d out of range [0, %d)", id, d->v->n);
    size_t pl;
    const char *p = tok_token_piece(d->v, id, d->o.special, &pl);
    if (d->first && pl) {
        d->first = false;
        if (d->o.strip_space && d->v->add_space_prefix && p[0] == ' ') { p++; pl--; }
    }
    *len = dec_emit(d, p, pl);
    return KN_OK;
}

void tok_decoder_flush(tok_decoder *d, const char **out, size_t *len) {
    size_t o = 0;
    if (d->n_hold) {
        if (d->o.replace_invalid) {
            memcpy(d->outb, "\xEF\xBF\xBD", 3);
            o = 3;
        } else {
            memcpy(d->outb, d->hold, d->n_hold);
            o = d->n_hold;
        }
    }
    *out = d->outb;
    *len = o;
    tok_decoder_reset(d);
}

kn_status tok_decode_all(const tok_vocab *v, const int32_t *ids, size_t n, const tok_decoder_opts *opts, char **out,
                         size_t *len, kn_err *err) {
    *out = NULL;
    *len = 0;
    tok_decoder_opts o = opts ? *opts : (tok_decoder_opts){0};
    o.replace_invalid = false;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (!tok_valid(v, ids[i])) return kn_fail(err, KN_EINVAL, "detokenize: token id %d out of range [0, %d)", ids[i], v->n);
        total += v->piece_len[ids[i]];
    }
    char *buf = malloc(total);
    tok_decoder *d = tok_decoder_create(v, &o);
    if (!buf || !d) { free(buf); tok_decoder_destroy(d); return kn_fail(err, KN_ENOMEM, "detokenize: out of memory"); }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        tok_decoder_feed(d, ids[i], &p, &pl, NULL);
        memcpy(buf + pos, p, pl);
        pos += pl;
    }
    const char *p;
    size_t pl;
    tok_decoder_flush(d, &p, &pl);
    memcpy(buf + pos, p, pl);
    pos += pl;
    buf[pos] = 0;
    tok_decoder_destroy(d);
    *out = buf;
    *len = pos;
    return KN_OK;
}
