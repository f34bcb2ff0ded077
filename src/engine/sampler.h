/*
 * sampler.h — (private to src/engine) token samplers: greedy, temperature, top-k, top-p, min-p,
 * typical-p, repetition/presence/frequency penalties over the last N
 * tokens, logit bias, and a seeded RNG for reproducible sampling.
 *
 * Owns: an eng_sampler holds its candidate buffer and penalty history,
 * allocated once at creation; sampling a token allocates nothing and never
 * sorts the whole vocabulary (top-k uses selection; top-p grows a sorted
 * prefix only as far as the probability mass needs).
 *
 * Order of operations (llama.cpp's default chain): logit bias -> penalties
 * -> greedy if temp <= 0 -> top-k -> typical-p -> top-p -> min-p ->
 * temperature -> draw.
 */
#ifndef KILN_ENGINE_SAMPLER_H
#define KILN_ENGINE_SAMPLER_H

#include "kiln/core.h"
#include "kiln/engine.h"

#include <stdint.h>


typedef struct eng_sampler eng_sampler;

kn_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out, kn_err *err);
void eng_sampler_destroy(eng_sampler *s); /* accepts NULL */
/* Picks a token from logits[n_vocab] (not modified). */
int32_t eng_sampler_sample(eng_sampler *s, const float *logits);
/* Speculative decoding: the same distribution as eng_sampler_sample, given
 * a token a deterministic drafter proposed; the result equals draft when
 * the draft is accepted (greedy: exactly when it is the argmax). */
int32_t eng_sampler_sample_draft(eng_sampler *s, const float *logits, int32_t draft);
/* Records a token in the penalty history (prompt tokens too, if wanted). */
void eng_sampler_accept(eng_sampler *s, int32_t token);
void eng_sampler_reset(eng_sampler *s);

/* Index of the largest logit (lowest index on ties). */
int32_t eng_argmax(const float *logits, int32_t n);

#endif
