/*
 * record.h — the values the generation session keeps in the response and
 * embedding cache (private to src/engine; the keys are in kiln/engine.h).
 *
 * Values (host byte order; an L2 store moves with its machine):
 *  - a generation record "KRS1", version 3: finish reason, prompt and
 *    generated token counts, the context it was cut at (0 when it ended
 *    for another reason), then the chunks of text as the engine produced
 *    them (bytes and token events per chunk, two LEB128 varints: a
 *    streamed answer has a chunk per token, so this table must stay
 *    small), the events (token, logprob, top alternatives) when logprobs
 *    were asked for, and the text.
 *  - an embedding "KEM1": n_embd, the input's token count, the floats.
 * Parsing checks every length against the value's size, so a damaged
 * value is refused, never read past.
 */
#ifndef KILN_ENGINE_RECORD_H
#define KILN_ENGINE_RECORD_H

#include "kiln/core.h"
#include "scheduler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A generation's answer as it is produced: the chunks of text (and token
 * events when with_events) in the order the client got them. */
typedef struct eng_rec {
    kn_buf text, chunks, events;
    uint32_t n_chunks;
    uint32_t ctx_limit; /* set before finishing: the context that cut the answer, 0 when none did */
    bool with_events;
    bool failed; /* out of memory: not stored */
} eng_rec;
void eng_rec_chunk(eng_rec *r, const char *text, size_t n, const eng_tok_event *ev, size_t nev);
/* The serialized record (malloc'd, *len bytes), or NULL. */
void *eng_rec_finish(eng_rec *r, const eng_req_result *res, size_t *len);
void eng_rec_free(eng_rec *r);

/* A parsed record (pointers into the value) and a cursor over its chunks. */
typedef struct eng_rec_view {
    uint8_t finish;
    int stop_index;     /* the stop string that ended it, -1: none (an end-of-generation token) */
    bool with_events;
    uint32_t n_prompt, n_gen, n_chunks, ctx_limit;
    const uint8_t *chunks, *events;
    size_t chunks_len, events_len;
    const char *text;
    size_t text_len;
    uint32_t i;
    size_t chunk_off, text_off, ev_off;
} eng_rec_view;
/* False when the value is not a well-formed record with at most max_ev
 * events per chunk. */
bool eng_rec_parse(const void *val, size_t len, size_t max_ev, eng_rec_view *v);
/* The next chunk's text and events (ev holds max_ev); false at the end or
 * on damaged events. */
bool eng_rec_next(eng_rec_view *v, const char **text, size_t *n, eng_tok_event *ev, size_t *nev);

/* An embedding's cached value (malloc'd) and its parse. */
void *eng_emb_value(const float *v, int n_embd, size_t n_tok, size_t *len);
bool eng_emb_parse(const void *val, size_t len, int n_embd, const float **v, size_t *n_tok);

#endif
