/* fuzz_grammar.c — libFuzzer target for the GBNF engine.
 * Input: grammar text, optionally followed by a NUL byte and up to 64 bytes
 * of input. Compiles the text (root "root"); if it compiles, feeds the input
 * byte by byte, and computes a mask over a small fixed vocabulary at each
 * step, checking it against gram_token_ok. Any crash, leak, sanitizer report
 * or mask disagreement is a bug; compile errors and rejections are fine. */
#include "kiln/grammar.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const VOCAB[] = {"",  "a",  "b", "ab",   "{", "}",    "\"",   "\",", " ",        "\n",
                                    "0", "12", "-", ".",    "x", "\xC3", "\xA9", "é",   "\xE2\x9C", "\x93",
                                    "[", "]",  ":", "true", ",", "\xFF", "(",    ")",   "😀",        "\\"};
#define NV (sizeof VOCAB / sizeof *VOCAB)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *in = nul ? nul + 1 : NULL;
    size_t in_len = nul ? size - tlen - 1 : 0;
    if (in_len > 64) in_len = 64;
    kn_err err;
    gram *g = NULL;
    if (gram_compile((const char *)data, tlen, NULL, &g, &err) != KN_OK) {
        if (g) abort();           /* nothing on error */
        if (!err.msg[0]) abort(); /* a message on error */
        return 0;
    }
    gram_token toks[NV + 2];
    for (size_t i = 0; i < NV; i++)
        toks[i] = (gram_token){VOCAB[i], (uint32_t)strlen(VOCAB[i]), GRAM_TOK_TEXT};
    toks[NV] = (gram_token){"", 0, GRAM_TOK_EOG};
    toks[NV + 1] = (gram_token){"<|x|>", 5, GRAM_TOK_CONTROL};
    gram_vocab *v = NULL;
    gram_state *s = NULL, *c = NULL;
    if (gram_vocab_create(toks, NV + 2, &v, &err) != KN_OK) abort();
    if (gram_state_create(g, &s, &err) == KN_OK && gram_state_clone(s, &c, &err) == KN_OK) {
        uint8_t mask[NV + 2];
        for (size_t i = 0; i <= in_len; i++) {
            if (gram_mask(s, v, mask, &err) != KN_OK) break;
            for (uint32_t id = 0; id < NV + 2; id++) {
                if (mask[id] != gram_token_ok(s, v, id)) abort();
                if (id < NV && gram_state_copy(c, s, &err) == KN_OK &&
                    gram_accept_token(c, v, id) != (mask[id] != 0))
                    abort();
            }
            if (mask[NV] != gram_can_end(s)) abort();
            if (i == in_len || !gram_accept_bytes(s, in + i, 1)) break;
        }
    }
    gram_state_destroy(c);
    gram_state_destroy(s);
    gram_vocab_destroy(v);
    gram_destroy(g);
    return 0;
}
