/*
 * model_bert.h — internal to src/model: the encoder (bert) scratch and
 * forward pass behind model_encode (model_bert.c), and the hook by which
 * model_forward.c's model_ctx owns one.
 *
 * Invariants: a bert_ctx is sized at creation for max_batch tokens in all
 * and sequences up to n_ctx_train; bert_encode allocates nothing.
 */
#ifndef KILN_MODEL_BERT_H
#define KILN_MODEL_BERT_H

#include "model.h"

typedef struct bert_ctx bert_ctx;

/* Scratch for an encoder model; ops and pool are borrowed (they outlive it).
 * Free with bert_ctx_destroy. */
kn_status bert_ctx_create(const model *m, const tensor_ops *ops, kn_pool *pool, int max_batch, bert_ctx **out,
                          kn_err *err);
void bert_ctx_destroy(bert_ctx *b); /* accepts NULL */
uint64_t bert_ctx_bytes(const bert_ctx *b);

/* The encoder scratch of c, NULL for a decoder model (model_forward.c). */
bert_ctx *model_ctx_encoder(model_ctx *c);

#endif
