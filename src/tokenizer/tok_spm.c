/*
 * tok_spm.c — SentencePiece BPE over token scores (tokenizer.ggml.model =
 * "llama"), as llama.cpp does it: spaces become U+2581, the text is split
 * into UTF-8 characters, and the adjacent pair whose concatenation is the
 * highest-scoring token is merged first (ties: leftmost) until no pair forms
 * a token. Symbols that are not tokens fall back to <0xNN> byte tokens.
 */
#include "tok_internal.h"

#include <string.h>

static void try_bigram(tok_encoder *e, const char *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const tok_vocab *v = e->v;
    const tok_sym *l = &e->syms[left], *r = &e->syms[right];
    int32_t id = tok_find(v, s + l->start, l->n + r->n);
    if (id == TOK_NULL) return;
    tok_bigram b = {.score = v->scores[id], .rank = 0, .left = left, .right = right, .size = l->n + r->n, .result = id};
    tok_heap_push(e, &b, true);
}

/* Merges one chunk s[0..bl) and appends its ids. */
static kn_status spm_chunk(tok_encoder *e, const char *s, size_t bl) {
    const tok_vocab *v = e->v;
    /* symbols */
    if (tok_reserve((void **)&e->syms, &e->syms_cap, bl + 1, sizeof(tok_sym)) != KN_OK) return KN_ENOMEM;
    size_t ns = 0;
    for (size_t off = 0; off < bl;) {
        size_t l = tok_utf8_len((unsigned char)s[off]);
        if (l > bl - off) l = bl - off;
        tok_sym *y = &e->syms[ns];
        y->start = (uint32_t)off;
        y->n = (uint32_t)l;
        y->prev = (int32_t)ns - 1;
        off += l;
        y->next = off == bl ? -1 : (int32_t)ns + 1;
        y->id = TOK_NULL;
        ns++;
    }
    /* every merge adds at most two bigrams */
    if (tok_reserve((void **)&e->heap, &e->heap_cap, 3 * ns + 3, sizeof(tok_bigram)) != KN_OK) return KN_ENOMEM;
    e->heap_n = 0;
    for (size_t i = 1; i < ns; i++) try_bigram(e, s, (int32_t)i - 1, (int32_t)i);
    while (e->heap_n) {
        tok_bigram b = tok_heap_pop(e, true);
        tok_sym *l = &e->syms[b.left], *r = &e->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) e->syms[r->next].prev = b.left;
        try_bigram(e, s, l->prev, b.left);
        try_bigram(e, s, b.left, l->next);
    }
    for (int32_t i = 0; i != -1 && ns; i = e->syms[i].next) {
        const tok_sym *y = &e->syms[i];
        int32_t id = tok_find(v, s + y->start, y->n);
        if (id != TOK_NULL) {
            if (tok_ivec_push(&e->out, id) != KN_OK) return KN_ENOMEM;
            continue;
        }
        for (uint32_t k = 0; k < y->n; k++) {
            int32_t b = v->spm_byte_tok[(unsigned char)s[y->start + k]];
            if (b == TOK_NULL) b = v->unk;
            if (b != TOK_NULL && tok_ivec_push(&e->out, b) != KN_OK) return KN_ENOMEM;
        }
    }
    return KN_OK;
}

static bool is_marker(const char *s, size_t i, size_t n) {
    return i + 3 <= n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81;
}

kn_status tok_spm_encode(tok_encoder *e, const char *text, size_t len, kn_err *err) {
    const tok_vocab *v = e->v;
    if (len == 0) return KN_OK;
    /* escape spaces: each ' ' becomes 3 bytes */
    size_t need = len * 3;
    if (tok_reserve((void **)&e->buf, &e->buf_cap, need + 1, 1) != KN_OK) goto oom;
    size_t bl = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(e->buf + bl, "\xE2\x96\x81", 3);
            bl += 3;
        } else {
            e->buf[bl++] = text[i];
        }
    }
    if (bl > UINT32_MAX / 2) return kn_fail(err, KN_ERANGE, "tokenize: fragment too long");
    const char *s = e->buf;
    if (!v->spm_split_ok) {
        if (spm_chunk(e, s, bl) != KN_OK) goto oom;
        return KN_OK;
    }
    /* No token contains a U+2581 right after another character, so no merge
     * crosses such a point: merge the chunks between them independently
     * (same result, without one heap over the whole text). */
    size_t cs = 0;
    for (size_t i = 0; i < bl;) {
        if (i > cs && is_marker(s, i, bl) && !(i >= 3 && is_marker(s, i - 3, bl))) {
            if (spm_chunk(e, s + cs, i - cs) != KN_OK) goto oom;
            cs = i;
        }
        i += is_marker(s, i, bl) ? 3 : 1;
    }
    if (cs < bl && spm_chunk(e, s + cs, bl - cs) != KN_OK) goto oom;
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}
