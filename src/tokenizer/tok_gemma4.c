/*
 * tok_gemma4.c — Gemma 4's tokenizer (tokenizer.ggml.model = "gemma4"), as
 * llama.cpp runs it (its BPE tokenizer with the GEMMA4 pre-tokenizer):
 *  - invalid UTF-8 becomes U+FFFD (llama.cpp reads the text as code points),
 *    and every ' ' becomes U+2581 (no space prefix; other whitespace stays);
 *  - the text is split only into maximal runs of '\n' and runs of anything
 *    else (llama.cpp's regex "[^\n]+|[\n]+", done here by a scan);
 *  - a run of newlines that is itself a token is taken whole;
 *  - every other run is merged as BPE whose symbols start as whole UTF-8
 *    characters (the merges name raw UTF-8 token texts: there is no GPT-2
 *    byte alphabet), lowest merge rank first, ties leftmost, with the merge
 *    table of tok_bpe.c;
 *  - a final symbol that is no token becomes one <0xNN> token per byte (a
 *    byte without such a token is dropped, as in llama.cpp).
 * BOS and the special ids are loaded in tok.c (BOS is always added).
 *
 * Speed: llama.cpp merges a whole line at once. A symbol is a token or the
 * two halves of a merge, so where no token and no merge joins a character X
 * to a following U+2581 (the "glue" list, found at load: in Gemma 4's vocab
 * only '>' of ">▁</"), no symbol can span the point before that U+2581. A
 * run is therefore cut before every U+2581 that follows a character other
 * than U+2581 and the glue characters, and the chunks (mostly a word with
 * its leading U+2581) are merged one by one through the encoder's word
 * cache. The ids are the same as merging the whole run: merges in different
 * chunks never meet, and within a chunk they keep their order.
 */
#include "tok_internal.h"

#include <stdio.h>
#include <string.h>

#define MARK "\xE2\x96\x81" /* U+2581 */
#define MARK_CP 0x2581u

static bool is_mark(const char *s, size_t i, size_t n) {
    return i + 3 <= n && memcmp(s + i, MARK, 3) == 0;
}

static void add_glue(tok_vocab *v, uint32_t cp) {
    if (v->g4_n_glue < 0) return;
    for (int k = 0; k < v->g4_n_glue; k++)
        if (v->g4_glue[k] == cp) return;
    if (v->g4_n_glue == TOK_G4_MAX_GLUE) {
        v->g4_n_glue = -1;
        return;
    }
    v->g4_glue[v->g4_n_glue++] = cp;
}

/* Adds every X of "X▁" inside t[0..n). Text that is not valid UTF-8 can
 * never be formed from the (sanitized) input and is skipped. Returns the
 * last code point (0 if none or invalid). */
static uint32_t scan_glue(tok_vocab *v, const char *t, size_t n, bool add) {
    uint32_t prev = 0, cp = 0;
    for (size_t k = 0; k < n;) {
        size_t l = tok_utf8_decode((const unsigned char *)t + k, n - k, &cp);
        if (!l) return 0;
        if (add && cp == MARK_CP && k > 0 && prev != MARK_CP) add_glue(v, prev);
        prev = cp;
        k += l;
    }
    return cp;
}

static void find_glue(tok_vocab *v) {
    v->g4_n_glue = 0;
    for (int32_t i = 0; i < v->n; i++)
        scan_glue(v, v->text_pool + v->text_off[i], v->text_len[i], true);
    /* a merge whose halves meet at "X▁" (its result need not be a token) */
    for (uint64_t s = 0; s <= v->merge_mask; s++) {
        uint64_t key = v->merges[s].key;
        if (key == UINT64_MAX) continue;
        int32_t a = (int32_t)(key >> 32), b = (int32_t)(uint32_t)key;
        if (!is_mark(v->text_pool + v->text_off[b], 0, v->text_len[b])) continue;
        uint32_t last = scan_glue(v, v->text_pool + v->text_off[a], v->text_len[a], false);
        if (last && last != MARK_CP) add_glue(v, last);
    }
}

kn_status tok_gemma4_setup(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    for (int b = 0; b < 256; b++) {
        char c = (char)b, hex[8];
        /* after U+FFFD replacement a one-byte symbol is always ASCII */
        v->byte_tok[b] = b < 0x80 ? tok_find(v, &c, 1) : TOK_NULL;
        snprintf(hex, sizeof hex, "<0x%02X>", (unsigned)b);
        v->fallback_tok[b] = tok_find(v, hex, 6);
    }
    kn_status st = tok_bpe_load_merges(v, g, err);
    if (st == KN_OK) find_glue(v);
    return st;
}

/* Merges one chunk w[0..n) (valid UTF-8) and appends its ids. */
static kn_status chunk_bpe(tok_encoder *e, const char *w, size_t n) {
    const tok_vocab *v = e->v;
    if (tok_reserve((void **)&e->syms, &e->syms_cap, n, sizeof(tok_sym)) != KN_OK) return KN_ENOMEM;
    size_t ns = 0;
    for (size_t off = 0; off < n; ns++) {
        unsigned char c = (unsigned char)w[off];
        size_t l = tok_utf8_len(c);
        if (l > n - off) l = n - off;
        tok_sym *y = &e->syms[ns];
        y->start = (uint32_t)off;
        y->n = (uint32_t)l;
        y->prev = (int32_t)ns - 1;
        y->id = l == 1 ? v->byte_tok[c] : tok_find(v, w + off, l);
        off += l;
        y->next = off == n ? -1 : (int32_t)ns + 1;
    }
    if (tok_bpe_merge(e, ns) != KN_OK) return KN_ENOMEM;
    for (int32_t i = 0; i != -1; i = e->syms[i].next) {
        const tok_sym *y = &e->syms[i];
        if (y->id != TOK_NULL) {
            if (tok_ivec_push(&e->out, y->id) != KN_OK) return KN_ENOMEM;
            continue;
        }
        for (uint32_t k = 0; k < y->n; k++) {
            int32_t id = v->fallback_tok[(unsigned char)w[y->start + k]];
            if (id != TOK_NULL && tok_ivec_push(&e->out, id) != KN_OK) return KN_ENOMEM;
        }
    }
    return KN_OK;
}

/* May the run w[0..n) be cut before the U+2581 at i (0 < i)? Yes unless the
 * character before it is U+2581 or a glue character. */
static bool cut_before(const tok_vocab *v, const char *w, size_t i) {
    if (i >= 3 && is_mark(w, i - 3, i)) return false;
    size_t k = i - 1;
    while (k > 0 && i - k < 4 && ((unsigned char)w[k] & 0xC0) == 0x80)
        k--;
    uint32_t cp;
    if (!tok_utf8_decode((const unsigned char *)w + k, i - k, &cp)) return false;
    for (int g = 0; g < v->g4_n_glue; g++)
        if (v->g4_glue[g] == cp) return false;
    return true;
}

/* Merges one run of characters other than '\n', chunk by chunk. */
static kn_status run_bpe(tok_encoder *e, const char *w, size_t n) {
    const tok_vocab *v = e->v;
    if (v->g4_n_glue < 0) return chunk_bpe(e, w, n);
    size_t cs = 0;
    for (const char *p = w; (p = memchr(p, 0xE2, n - (size_t)(p - w))) != NULL; p++) {
        size_t i = (size_t)(p - w);
        if (i > cs && is_mark(w, i, n) && cut_before(v, w, i)) {
            if (tok_word_cached(e, w + cs, i - cs, chunk_bpe) != KN_OK) return KN_ENOMEM;
            cs = i;
        }
    }
    return tok_word_cached(e, w + cs, n - cs, chunk_bpe);
}

kn_status tok_gemma4_encode(tok_encoder *e, const char *text, size_t len, kn_err *err) {
    const tok_vocab *v = e->v;
    if (!len) return KN_OK;
    const char *s = tok_bpe_sanitize(e, text, &len); /* may live in e->buf */
    if (!s) goto oom;
    size_t spaces = 0;
    for (const char *p = s; (p = memchr(p, ' ', len - (size_t)(p - s))) != NULL; p++)
        spaces++;
    size_t bl = len + 2 * spaces;
    if (bl > UINT32_MAX / 2) return kn_fail(err, KN_ERANGE, "tokenize: fragment too long");
    if (tok_reserve((void **)&e->buf2, &e->buf2_cap, bl + 1, 1) != KN_OK) goto oom;
    char *w = e->buf2;
    for (size_t i = 0, o = 0; i < len; i++) {
        if (s[i] == ' ') {
            memcpy(w + o, MARK, 3);
            o += 3;
        } else {
            w[o++] = s[i];
        }
    }
    for (size_t i = 0; i < bl;) {
        bool nl = w[i] == '\n';
        size_t j = i + 1;
        while (j < bl && (w[j] == '\n') == nl)
            j++;
        int32_t id = nl ? tok_find(v, w + i, j - i) : TOK_NULL;
        if (id != TOK_NULL) {
            if (tok_ivec_push(&e->out, id) != KN_OK) goto oom;
        } else if ((nl ? chunk_bpe(e, w + i, j - i) : run_bpe(e, w + i, j - i)) != KN_OK) {
            goto oom;
        }
        i = j;
    }
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}
