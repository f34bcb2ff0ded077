/* fuzz_schema.c — libFuzzer target for the JSON Schema converter.
 * Input: a JSON document (the schema), optionally followed by a NUL byte and
 * up to 256 bytes of text. Converts the schema to GBNF; on success the
 * result must compile (the converter must never hand out a grammar that
 * does not), and the text is fed through a matcher state to exercise the
 * rules it made. On failure there must be a message and no output. Any
 * crash, leak or sanitizer report is a bug. */
#include "kiln/grammar.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *in = nul ? nul + 1 : NULL;
    size_t in_len = nul ? size - jlen - 1 : 0;
    if (in_len > 256) in_len = 256;
    json_t *schema = json_loadb((const char *)data, jlen, JSON_DECODE_ANY, NULL);
    if (!schema) return 0;
    char *text = NULL;
    size_t len = 0;
    kn_err err = {0};
    kn_status st = gram_schema_to_gbnf(schema, &text, &len, &err);
    json_decref(schema);
    if (st != KN_OK) {
        if (text) abort();        /* nothing on error */
        if (!err.msg[0]) abort(); /* a message on error */
        if (st != KN_EINVAL && st != KN_ERANGE && st != KN_ENOMEM) abort();
        return 0;
    }
    if (!text || strlen(text) != len) abort();
    gram *g = NULL;
    if (gram_compile(text, len, NULL, &g, &err) != KN_OK)
        abort(); /* the converter's output always compiles */
    gram_state *s = NULL;
    if (gram_state_create(g, &s, &err) == KN_OK) {
        for (size_t i = 0; i < in_len; i++)
            if (!gram_accept_bytes(s, in + i, 1)) break;
        (void)gram_can_end(s);
    }
    gram_state_destroy(s);
    gram_destroy(g);
    free(text);
    return 0;
}
