/*
 * service_internal.h — what the session's files share (private to
 * src/engine): the service struct and its model helpers.
 *
 *   service.c   the service: registry hooks (a scheduler per instance),
 *               metric families, tokens, loading, status
 *   session.c   a generation: render, key, cache, acquire, submit, read
 *   embed.c     an embedding request: cache per input, then one engine
 *               request for the misses
 */
#ifndef KILN_ENGINE_SERVICE_INTERNAL_H
#define KILN_ENGINE_SERVICE_INTERNAL_H

#include "record.h"
#include "kiln/engine.h"

#include <stdatomic.h>

/* The engine's metric families, per model (NULL when no registry). */
typedef struct eng_families {
    met_family *ttft, *itl, *queue_wait, *prefill, *batch_size;
    met_family *prompt_tokens, *gen_tokens, *prefix_queried, *prefix_hit;
    met_family *spec_draft, *spec_accepted, *preemptions;
    met_family *embed_batch_requests, *embed_batch_tokens;
} eng_families;

struct eng_service {
    eng_service_opts o;
    rt_registry *reg;
    const tensor_ops *ops;
    rc_cache *cache;
    eng_families fam;
    met_window *ttft_window;
    const char *default_model;
    eng_key_ctx key;   /* the instance-independent part: KV type, kernel set, draft model */
    atomic_ullong seq; /* default seeds */
};

/* The eventfd a reader waits on: a new one (-1 on failure), a signal (a
 * write; a counter already set stays set), and a drain (a read that does
 * not block). */
int eng_efd_new(void);
void eng_efd_signal(int fd);
void eng_efd_drain(int fd);

/* The model a request names, or the default; NULL with e when neither. */
const char *eng_model_name(const eng_service *s, const char *model, eng_error *e);
/* A registry failure as an eng_error (always false). */
bool eng_model_error(kn_status st, const char *name, const kn_err *err, eng_error *e);
/* The front / a pinned instance of the model a request names. */
bool eng_front_get(eng_service *s, const char *model, const rt_front **f, eng_error *e);
bool eng_model_get(eng_service *s, const char *model, const rt_acquire_opts *ao, rt_model **m, eng_error *e);

#endif
