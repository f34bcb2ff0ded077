/*
 * tok_wpm.c — WordPiece (tokenizer.ggml.model = "bert"), as llama.cpp does
 * it: BERT normalization (whitespace splits words; control characters,
 * U+0000 and U+FFFD are dropped; with strip_accents every code point is
 * replaced by the first code point of its NFD decomposition and nonspacing
 * marks are dropped; lowercase per metadata; punctuation, ASCII symbols and
 * CJK ideographs become one-character words), then per word "▁" + word is cut
 * greedily into the longest vocab tokens; a word that cannot be cut entirely
 * becomes the unknown token. Unicode properties come from ICU.
 */
#include "tok_internal.h"

#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/utf16.h>



static bool is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static bool is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static uint32_t nfd_first(const UNormalizer2 *nfd, uint32_t c) {
    if (c < 0xC0 || !nfd) return c;
    UChar buf[32];
    UErrorCode ec = U_ZERO_ERROR;
    int32_t n = unorm2_getDecomposition(nfd, (UChar32)c, buf, 32, &ec);
    if (U_FAILURE(ec) || n <= 0) return c;
    UChar32 first;
    int32_t i = 0;
    U16_NEXT(buf, i, n, first);
    return (uint32_t)first;
}

static kn_status wpm_word(tok_encoder *e, const char *w, size_t n) {
    const tok_vocab *v = e->v;
    size_t before = e->out.n;
    for (size_t i = 0; i < n; i++) {
        bool match = false;
        size_t jmax = n < i + v->max_token_len + 1 ? n : i + v->max_token_len + 1;
        for (size_t j = jmax; j > i; j--) {
            int32_t id = tok_find(v, w + i, j - i);
            if (id != TOK_NULL) {
                if (tok_ivec_push(&e->out, id) != KN_OK) return KN_ENOMEM;
                match = true;
                i = j - 1;
                break;
            }
        }
        if (!match) {
            e->out.n = before;
            break;
        }
    }
    if (e->out.n == before && v->unk != TOK_NULL) return tok_ivec_push(&e->out, v->unk);
    return KN_OK;
}

kn_status tok_wpm_encode(tok_encoder *e, const char *text, size_t len, kn_err *err) {
    const tok_vocab *v = e->v;
    if (!len) return KN_OK;
    UErrorCode ec = U_ZERO_ERROR;
    const UNormalizer2 *nfd = v->wpm_strip_accents ? unorm2_getNFDInstance(&ec) : NULL;
    if (U_FAILURE(ec)) nfd = NULL;
    /* normalized words, each stored as "▁" + chars in buf; pieces hold (start, len) */
    if (tok_reserve((void **)&e->buf, &e->buf_cap, len * 6 + 16, 1) != KN_OK) goto oom;
    size_t o = 0, wstart = 0;
    bool in_word = false;
    e->pieces_n = 0;
#define END_WORD()                                                                                      \
    do {                                                                                                \
        if (in_word) {                                                                                  \
            if (tok_reserve((void **)&e->pieces, &e->pieces_cap, (e->pieces_n + 1) * 2, sizeof(size_t)) != KN_OK) \
                goto oom;                                                                               \
            e->pieces[2 * e->pieces_n] = wstart;                                                        \
            e->pieces[2 * e->pieces_n + 1] = o - wstart;                                                \
            e->pieces_n++;                                                                              \
            in_word = false;                                                                            \
        }                                                                                               \
    } while (0)
#define BEGIN_WORD()                                                                                    \
    do {                                                                                                \
        if (!in_word) {                                                                                 \
            wstart = o;                                                                                 \
            memcpy(e->buf + o, "\xE2\x96\x81", 3);                                                      \
            o += 3;                                                                                     \
            in_word = true;                                                                             \
        }                                                                                               \
    } while (0)
    for (size_t i = 0; i < len;) {
        uint32_t c;
        i += tok_utf8_decode_lenient((const unsigned char *)text + i, len - i, &c);
        if (nfd) c = nfd_first(nfd, c);
        if (is_ws(c)) {
            END_WORD();
            continue;
        }
        int8_t cat = (int8_t)u_charType((UChar32)c);
        bool is_control = cat == U_CONTROL_CHAR || cat == U_FORMAT_CHAR || cat == U_PRIVATE_USE_CHAR ||
                          cat == U_SURROGATE;
        if (c == 0 || c == 0xFFFD || is_control) continue;
        if (v->wpm_strip_accents && cat == U_NON_SPACING_MARK) continue;
        uint32_t lc = v->wpm_lowercase ? (uint32_t)u_tolower((UChar32)c) : c;
        bool is_punct = cat == U_DASH_PUNCTUATION || cat == U_START_PUNCTUATION || cat == U_END_PUNCTUATION ||
                        cat == U_CONNECTOR_PUNCTUATION || cat == U_OTHER_PUNCTUATION ||
                        cat == U_INITIAL_PUNCTUATION || cat == U_FINAL_PUNCTUATION;
        bool is_symbol = cat == U_MATH_SYMBOL || cat == U_CURRENCY_SYMBOL || cat == U_MODIFIER_SYMBOL ||
                         cat == U_OTHER_SYMBOL;
        if (is_punct || (c < 0x7F && is_symbol) || is_chinese(c)) {
            END_WORD();
            BEGIN_WORD();
            o += tok_utf8_encode(lc, e->buf + o);
            END_WORD();
        } else {
            BEGIN_WORD();
            o += tok_utf8_encode(lc, e->buf + o);
        }
    }
    END_WORD();
#undef END_WORD
#undef BEGIN_WORD
    for (size_t p = 0; p < e->pieces_n; p++)
        if (wpm_word(e, e->buf + e->pieces[2 * p], e->pieces[2 * p + 1]) != KN_OK) goto oom;
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}
