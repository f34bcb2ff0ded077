/* fuzz_template.c — libFuzzer target for the chat-template engine.
 * Input: template source, optionally followed by a NUL byte and a JSON
 * messages array (a default conversation is used when it is missing or not
 * an array). Parses and renders with tight limits; any crash, leak or
 * sanitizer report is a bug, errors are fine. */
#include "kiln/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char DEFAULT_MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"H\\u00e9llo \\u2713\"},"
    "{\"role\":\"assistant\",\"content\":\"Hi\",\"tool_calls\":[{\"id\":\"abcdefghi\",\"function\":{\"name\":\"f\","
    "\"arguments\":{\"a\":[1,2.5,null,true]}}}]},{\"role\":\"tool\",\"content\":\"42\"}]";
static const char DEFAULT_TOOLS[] = "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    json_error_t je;
    json_t *msgs = NULL;
    if (nul) msgs = json_loadb((const char *)nul + 1, size - tlen - 1, 0, &je);
    if (!json_is_array(msgs)) {
        json_decref(msgs);
        msgs = json_loads(DEFAULT_MESSAGES, 0, &je);
    }
    json_t *tools = json_loads(DEFAULT_TOOLS, 0, &je);
    kn_err err;
    tok_tmpl *t = tok_tmpl_create((const char *)data, tlen, &err);
    if (t) {
        struct tm now = {.tm_year = 124, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_wday = 5, .tm_yday = 207};
        tok_tmpl_inputs in = {
            .messages = msgs,
            .tools = (size & 1) ? tools : NULL,
            .add_generation_prompt = (size & 2) != 0,
            .bos_token = "<s>",
            .eos_token = "</s>",
            .now = &now,
            .limits = {.max_output = 1 << 20, .max_memory = 32 << 20, .max_steps = 200000, .max_depth = 200},
        };
        char *out = NULL;
        size_t len = 0;
        bool raised;
        if (tok_tmpl_render(t, &in, &out, &len, &raised, &err) == KN_OK) {
            if (strlen(out) > len) abort(); /* the length covers the text */
            free(out);
        } else if (out) {
            abort(); /* no output on error */
        }
        tok_tmpl_destroy(t);
    }
    json_decref(msgs);
    json_decref(tools);
    return 0;
}
