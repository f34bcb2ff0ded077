/*
 * scheduler.h — (private to src/engine) the scheduler of one loaded model: requests queue for a fixed
 * set of sequence slots, and one engine thread runs iteration-level batched
 * steps over every running sequence: one decode token for each sequence
 * that is generating, plus chunks of pending prompts (chunked prefill), up
 * to a token budget per step. New requests join at the next step; finished
 * or cancelled ones leave at once.
 *
 * KV: every sequence's KV lives in a paged kv_cache (src/kv). A new
 * sequence first attaches the longest cached block chain that prefixes its
 * tokens (across requests and conversations) and computes only the rest.
 * When the pool runs short, the newest sequence is preempted: its blocks
 * are released (full ones stay cached) and it is recomputed later, which
 * yields the same tokens. The oldest sequence can always progress.
 *
 * Speculative decoding (per request): drafts proposed by prompt lookup
 * (the continuation of the last earlier occurrence of the sequence's last
 * n-gram) or by a small draft model sharing the vocabulary are fed behind
 * the decode token and verified in the same step; greedy output is
 * identical to plain decoding, and sampled output keeps its distribution
 * (eng_sampler_sample_draft).
 *
 * Owns: the engine thread, the KV cache, the forward scratch (and the draft
 * model's KV and scratch), the logits/hidden buffers and the wait queue. Borrows the model,
 * its vocabulary, the kernel set and the thread pool, which must outlive it.
 *
 * Requests (eng_req) are created on the caller's thread with everything the
 * engine needs allocated up front (sampler, detokenizer, stop filter, output
 * rings), so that the engine's token loop allocates nothing. Output goes
 * through a bounded ring per request: when a consumer stops reading, its
 * sequence pauses (it is skipped in the steps) instead of buffering without
 * bound, and the others keep going.
 *
 * Reference counting: eng_req_create returns one reference (the caller's);
 * a submitted request holds a second one for the engine, dropped when it
 * finishes. eng_req_release drops the caller's and cancels the request if
 * it is still running. The last reference frees it.
 *
 * Encoder models (model_is_encoder): the scheduler serves embedding
 * requests only (eng_req_create_gen fails with KN_EUNSUPPORTED) and keeps no
 * KV. Its engine thread micro-batches: the inputs of every waiting request
 * are gathered in arrival order into ONE model_encode call, which closes
 * when they reach the token budget (max_batch; an input longer than the
 * budget runs alone) or when batch_wait_ms has passed since the oldest
 * waiting request arrived (0: at once). Each request gets exactly its own
 * vectors; a request with more inputs than one batch takes continues in
 * the next. Queue: up to n_slots + queue_len requests may wait.
 * The pooled vectors are the model's pooling (model_encode).
 *
 * Thread safety: every eng_sched_* and eng_req_* function may be called
 * from any thread. A request is read by one consumer at a time.
 */
#ifndef KILN_ENGINE_SCHEDULER_H
#define KILN_ENGINE_SCHEDULER_H

#include "kiln/core.h"
#include "kiln/engine.h"
#include "kiln/metrics.h"
#include "kiln/model.h"
#include "kiln/tokenizer.h"
#include "sampler.h"
#include "stop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>



typedef struct eng_sched eng_sched;
typedef struct eng_req eng_req;

/* What the engine records (all optional; NULL series are skipped). Lock-free
 * atomics only, so recording never blocks the token loop. */
typedef struct eng_metrics {
    met_series *ttft;          /* seconds from the request's origin to its first token */
    met_series *itl;           /* seconds between a sequence's consecutive tokens */
    met_series *queue_wait;    /* seconds from submission to a slot */
    met_series *prefill;       /* seconds from a slot to the first token */
    met_series *batch_size;    /* sequences per forward step */
    met_series *prompt_tokens; /* counter */
    met_series *gen_tokens;    /* counter */
    met_series *prefix_queried; /* counter: prompt tokens looked up in the slots' KV */
    met_series *prefix_hit;     /* counter: of those, tokens whose KV was reused */
    met_series *spec_draft;     /* counter: draft tokens fed for verification */
    met_series *spec_accepted;  /* counter: of those, accepted */
    met_series *preemptions;    /* counter: sequences preempted for lack of KV blocks */
    met_series *embed_batch_requests; /* encoder models: requests per forward (micro-batching) */
    met_series *embed_batch_tokens;   /* encoder models: tokens per forward */
    met_window *ttft_window;   /* rolling TTFT samples for the SLA */
} eng_metrics;

typedef struct eng_sched_opts {
    int n_slots;         /* sequences decoded together */
    int n_ctx;           /* positions per sequence (prompt + generated) */
    int max_batch;       /* tokens per forward step */
    int queue_len;       /* requests that may wait for a slot (0: none wait) */
    double queue_timeout_s; /* a request waiting longer than this fails with KN_EBUSY */
    model_kv_type kv_type;
    int block_size;       /* KV positions per block (0: 32) */
    int kv_blocks;        /* KV pool in blocks; 0: every slot its full context, plus cache_bytes */
    uint64_t cache_bytes; /* with kv_blocks 0: extra pool for cached prefixes beyond the slots */
    bool no_prefix_cache; /* do not share blocks between sequences */
    uint64_t salt;        /* the model instance's identity for block hashes */
    bool test_const_hash; /* test hook: forces block hash collisions */
    eng_spec_mode spec;   /* default for requests (DEFAULT means NONE) */
    int spec_max;         /* draft tokens per step (0: off; at most ENG_SPEC_MAX) */
    const model *draft;   /* optional draft model sharing m's vocabulary (borrowed) */
    int batch_wait_ms;    /* an idle engine that gets a request waits this long for more to batch with
                             (encoders: a micro-batch closes this long after its oldest request arrived) */
    eng_metrics metrics;  /* copied */
} eng_sched_opts;

/* Starts the engine thread. m, v, ops and pool are borrowed. */
kn_status eng_sched_create(const model *m, const tok_vocab *v, const tensor_ops *ops, kn_pool *pool,
                           const eng_sched_opts *o, eng_sched **out, kn_err *err);
/* Cancels everything queued or running (they finish with
 * ENG_FINISH_CANCELLED), stops the thread and frees. Accepts NULL. */
void eng_sched_destroy(eng_sched *s);

/* Asks every queued and running request to stop (they finish with
 * ENG_FINISH_CANCELLED at the next step); new ones may still be submitted. */
void eng_sched_cancel_all(eng_sched *s);

typedef struct eng_sched_stats {
    int slots_total, slots_busy;
    int running;      /* requests with at least one sequence in a slot */
    int waiting;      /* requests in the queue */
    int n_ctx;
    uint64_t kv_bytes;    /* the KV pool */
    kv_stats kv;          /* block accounting */
    uint64_t block_bytes; /* one block, K and V */
    int block_tokens;     /* positions per block */
} eng_sched_stats;
void eng_sched_stats_get(eng_sched *s, eng_sched_stats *st);

/* ---- requests ---- */



/* A generation request over prompt[0..n_prompt) (copied). Fails with
 * KN_ERANGE when the prompt does not leave room for one generated token in
 * the context (the message has both counts), KN_EINVAL on bad parameters. */
kn_status eng_req_create_gen(eng_sched *s, const int32_t *prompt, size_t n_prompt, const eng_gen_params *p,
                             eng_req **out, kn_err *err);
/* An embedding request: each input (copied) is run as its own sequence, all
 * of them batched into as few steps as the slots and the token budget
 * allow; the result is the mean of each input's last hidden states (encoder
 * models: the model's pooled vector, micro-batched with other requests),
 * L2-normalized when normalize is set. Inputs longer than the context fail
 * with KN_ERANGE naming the input. */
kn_status eng_req_create_embed(eng_sched *s, const int32_t *const *inputs, const size_t *lens, size_t n_inputs,
                               bool normalize, eng_req **out, kn_err *err);

/* Queues the request. KN_EBUSY when the queue is full; KN_ECANCELLED when
 * the scheduler is shutting down. On failure the caller still owns its
 * reference. */
kn_status eng_sched_submit(eng_sched *s, eng_req *r, kn_err *err);



/* Takes what is ready: up to text_cap bytes of generated text (stop strings
 * removed, UTF-8 characters whole) and up to ev_cap token events. Waits up
 * to timeout_ms (< 0: forever) while nothing is ready. Returns true when the
 * request has finished and everything was taken; *res is then filled. */
bool eng_req_read(eng_req *r, int timeout_ms, char *text, size_t text_cap, size_t *text_len, eng_tok_event *ev,
                  size_t ev_cap, size_t *n_ev, eng_req_result *res);
/* Push instead of poll: fn(arg) is called from the engine thread (with
 * the request's lock held: it must only signal, e.g. write an eventfd)
 * whenever new output is ready and when the request finishes, and once at
 * once if something is already there. Set it before eng_sched_submit, or
 * with NULL to remove it; arg must stay valid until removed or the request
 * is released. */
void eng_req_set_notify(eng_req *r, void (*fn)(void *arg), void *arg);
/* Asks the engine to stop the request (it finishes with
 * ENG_FINISH_CANCELLED at the next step). */
void eng_req_cancel(eng_req *r);
/* Drops the caller's reference (cancelling the request if it is still
 * running). Accepts NULL. */
void eng_req_release(eng_req *r);

/* Embedding results once finished: n_inputs x n_embd floats, owned by the
 * request; *n_tokens (optional) gets the total tokens processed. */
const float *eng_req_embeddings(const eng_req *r, size_t *n_inputs, int *n_embd, size_t *n_tokens);

/* Log-probabilities: fills the chosen token's log-softmax and the top n
 * alternatives (sorted, ties by lower id) from raw logits. */
void eng_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, int n_top, eng_tok_event *ev);

#endif
