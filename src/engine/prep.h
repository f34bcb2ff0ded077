/*
 * prep.h — (private to src/engine) a request's prompt and constraints,
 * prepared against one model's front: the chat conversation rendered with
 * the template (tools, the reasoning switch, tool-call arguments as
 * objects; tools described in a system message when the template has no
 * tool syntax), tokenized; the grammar that JSON mode, a JSON Schema or a
 * forced tool call needs; and how the answer is to be parsed (kiln/chat.h).
 *
 * Owns: the token ids and the generated grammar text (eng_prep_free).
 */
#ifndef KILN_ENGINE_PREP_H
#define KILN_ENGINE_PREP_H

#include "kiln/engine.h"
#include "kiln/runtime.h"

typedef struct eng_prep {
    int32_t *ids; /* the prompt (malloc'd) */
    size_t n_ids;
    char *gbnf; /* a grammar built from json_schema or forced tools (malloc'd), or NULL */
    /* the answer's parse (eng_gen_info) */
    bool parse, tools, reasoning, in_reasoning;
    const char *close; /* what closes the reasoning block the prompt opened (static), or NULL */
    int syntax;
} eng_prep;

/* Everything of q that depends on the front f; false with e on a client
 * error (bad tools, tool_choice, schema, template failure) or OOM. */
bool eng_prep_request(const eng_gen_request *q, const rt_front *f, eng_prep *p, eng_error *e);
void eng_prep_free(eng_prep *p);

#endif
