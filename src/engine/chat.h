/*
 * chat.h — a model's chat formatting: its template (tokenizer.chat_template,
 * or a built-in chosen from its vocabulary when it has none or the engine
 * cannot run it) bound to its BOS/EOS texts, rendering a list of messages
 * to prompt tokens.
 *
 * Owns: the parsed template and copies of the BOS/EOS texts. Borrows the
 * vocab, which must outlive it.
 */
#ifndef KILN_ENGINE_CHAT_H
#define KILN_ENGINE_CHAT_H

#include "../core/kn.h"
#include "../gguf/gguf.h"
#include "../tokenizer/tok.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct eng_chat eng_chat;

/* Picks the template for a model (g: its metadata). *used_name (optional)
 * is "model" or the built-in's name. */
kn_status eng_chat_create(const gguf_ctx *g, const tok_vocab *v, eng_chat **out, const char **used_name,
                          kn_err *err);
void eng_chat_destroy(eng_chat *c); /* accepts NULL */

/* Renders messages (a JSON array of {role, content}) with the generation
 * prompt and optional tools into text (malloc'd; caller frees). A template
 * error (raise_exception included) returns KN_EINVAL with its message. */
kn_status eng_chat_render(const eng_chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                          char **text, size_t *len, kn_err *err);

/* Renders and tokenizes (special tokens parsed; BOS added per the model's
 * rules unless the rendered text already starts with it). *ids is malloc'd;
 * caller frees. */
kn_status eng_chat_tokenize(const eng_chat *c, const json_t *messages, const json_t *tools, int32_t **ids,
                            size_t *n, kn_err *err);

#endif
