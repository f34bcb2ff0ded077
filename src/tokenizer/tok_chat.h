/*
 * tok_chat.h — a model's chat formatting: its template (tokenizer.chat_template,
 * or a built-in chosen from its vocabulary when it has none or the engine
 * cannot run it) bound to its BOS/EOS texts, rendering a list of messages
 * to prompt tokens.
 *
 * Owns: the parsed template and copies of the BOS/EOS texts. Borrows the
 * vocab, which must outlive it.
 */
#ifndef KILN_TOKENIZER_TOK_CHAT_H
#define KILN_TOKENIZER_TOK_CHAT_H

#include "../core/kn.h"
#include "../gguf/gguf.h"
#include "tok.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_chat tok_chat;

/* Picks the template for a model (g: its metadata). *used_name (optional)
 * is "model" or the built-in's name. */
kn_status tok_chat_create(const gguf_ctx *g, const tok_vocab *v, tok_chat **out, const char **used_name,
                          kn_err *err);
void tok_chat_destroy(tok_chat *c); /* accepts NULL */

/* Renders messages (a JSON array of {role, content}) with the generation
 * prompt and optional tools into text (malloc'd; caller frees). A template
 * error (raise_exception included) returns KN_EINVAL with its message. */
kn_status tok_chat_render(const tok_chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                          char **text, size_t *len, kn_err *err);

/* Renders and tokenizes (special tokens parsed; BOS added per the model's
 * rules unless the rendered text already starts with it). *ids is malloc'd;
 * caller frees. */
kn_status tok_chat_tokenize(const tok_chat *c, const json_t *messages, const json_t *tools, int32_t **ids,
                            size_t *n, kn_err *err);

#endif
