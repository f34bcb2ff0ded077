/*
 * sched_internal.h — what the scheduler's files share (private to
 * src/engine): the request, slot and scheduler structs, and the helpers
 * that cross files.
 *
 *   sched.c          requests, output rings, create/destroy/submit/stats
 *   sched_step.c     the decoder engine thread: admission, one batched
 *                    step (decode tokens, drafts, prefill chunks), sampling
 *                    and verification, preemption
 *   sched_spec.c     drafting for speculative decoding (prompt lookup, a
 *                    draft model)
 *   sched_encoder.c  the encoder engine thread: micro-batched embeddings
 *
 * Locking: s->mu guards the queue, the slots' request pointers (read by
 * other threads) and `stopping`; r->mu guards a request's output ring,
 * events, `finished` and `res`. The engine thread alone writes slots and
 * the step buffers. r->mu is never taken while holding s->mu for long,
 * and never the other way round.
 */
#ifndef KILN_ENGINE_SCHED_INTERNAL_H
#define KILN_ENGINE_SCHED_INTERNAL_H

#include "kiln/engine.h"
#include "kiln/grammar.h"
#include "scheduler.h"

#include "stop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define EV_RING 64

typedef enum { REQ_GEN = 0, REQ_EMBED } req_kind;

struct eng_req {
    eng_sched *s;
    atomic_int refs;
    atomic_bool cancel;
    req_kind kind;
    /* generation (engine thread only once submitted) */
    int32_t *prompt;  /* n_ctx capacity: the prompt, then the accepted generated tokens */
    size_t n_prompt;
    eng_spec_mode spec;
    int spec_max;
    eng_sampler *smp;
    tok_decoder *dec;
    eng_stop *stop;
    eng_logit_bias *bias;
    int32_t n_predict;
    bool ignore_eos;
    int n_logprobs;
    double t_origin;
    double stall_timeout_s; /* see eng_gen_params */
    /* constrained decoding (all NULL without a grammar); allocated at creation */
    gram *gram;              /* the compiled grammar (owned) */
    gram_state *gstate;      /* where the output stands in it (owned) */
    const gram_vocab *gvocab; /* the scheduler's token trie (borrowed) */
    bool markup;             /* render the markup tokens (eng_sched.markers) as their text */
    uint8_t *gmask;          /* [n_vocab] gram_mask's output */
    float *glogits;          /* [n_vocab] a logits row with the tokens the grammar refuses at -INFINITY */
    /* embedding */
    int32_t **in;
    size_t *in_len;
    size_t n_in;
    size_t next_in;  /* admission cursor (sched lock) */
    size_t n_in_done;
    size_t n_tok_total;
    bool normalize;
    float *emb;      /* n_in x n_embd */
    /* output, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *ring;
    size_t ring_cap, ring_head, ring_len;
    eng_tok_event *ev;
    size_t ev_head, ev_len;
    bool finished;
    eng_req_result res;
    void (*notify)(void *arg); /* called (under mu) when output or the end is ready; see eng_req_set_notify */
    void *notify_arg;
    /* queue link (sched lock) */
    eng_req *next;
    bool queued;
};

/* Whether tok is one of s's markup control tokens. */
bool eng_sched_is_marker(const eng_sched *s, int32_t tok);

typedef struct slot {
    eng_req *r;          /* NULL: free */
    size_t input;        /* embed: which input */
    const int32_t *toks; /* gen: the request's prompt and accepted tokens; embed: the input */
    int n_toks;          /* tokens known; the KV must hold all but (gen) the last */
    int n_past;          /* positions in the KV */
    bool paused;         /* preempted: its blocks were released; it recomputes when blocks free up */
    uint64_t paused_step; /* the step that paused it */
    uint64_t order;      /* admission order: lower is older (kept across preemption) */
    int32_t n_gen;
    int logit_row;       /* this step: first row in logits (1 + n_draft rows), or -1 */
    int emb_row;         /* this step: first row in the hidden buffer (embedding) */
    int chunk;           /* this step: tokens fed, drafts included */
    int n_draft;         /* this step: draft tokens fed after the last known token */
    int32_t draft[ENG_SPEC_MAX];
    int spec_k;          /* draft tokens to propose next (adapted per step; 0: not started) */
    int d_past;          /* positions in the draft model's KV */
    double stall_since;  /* 0 when not stalled */
    double t_last;       /* when the previous token was sampled */
} slot;

struct eng_sched {
    const model *m;
    const tok_vocab *v;
    eng_sched_opts o;
    kv_cache *kv;
    model_ctx *ctx;
    slot *slots;
    int *ord;       /* [n_slots] busy slots, oldest first (this step) */
    uint64_t step;  /* steps planned so far */
    uint64_t next_order;
    /* step buffers */
    int32_t *b_tok, *b_pos, *b_seq;
    uint8_t *b_flags;
    float *logits; /* n_slots x (1 + spec_max) rows x n_vocab */
    float *hidden; /* max_batch x n_embd */
    /* draft model (optional) */
    kv_cache *dkv;
    model_ctx *dctx;
    float *dlogits; /* n_slots x n_vocab */
    /* constrained decoding: the vocabulary as the grammar sees it, built on
     * the first request with a grammar (under gram_mu), freed with s */
    pthread_mutex_t gram_mu;
    gram_vocab *gvocab;
    gram_vocab *gvocab_markup; /* the same with the markup tokens as their text (eng_gen_params.markup) */
    /* the control tokens of the chat syntaxes' markup (chat_syntax_markers) in this vocabulary, sorted */
    int32_t markers[64];
    int n_markers;
    size_t need_room; /* ring bytes one token may emit, flush included */
    size_t ring_cap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_req *q_head, *q_tail;
    int q_len;
    bool stopping;
    pthread_t thread;
    bool thread_started;
    /* encoder models (no KV, no slots used): micro-batches of embedding inputs */
    bool encoder;
    int enc_cap;              /* tokens the forward scratch holds: max(max_batch, n_ctx) */
    const int32_t **enc_toks; /* [enc_cap] this batch's inputs */
    size_t *enc_lens;         /* [enc_cap] */
    eng_req **enc_req;        /* [enc_cap] the request of each input (a request's inputs are contiguous) */
    size_t *enc_idx;          /* [enc_cap] the input's index in its request */
    float *enc_out;           /* [enc_cap x n_embd] pooled vectors */
};



/* ---- helpers shared by the scheduler's files ---- */

/* Drops a reference; the last one frees the request. */
void eng_req_unref(eng_req *r);
/* Finishes r (once): flush releases the text held back by the detokenizer
 * and the stop filter; wakes the reader and calls its notify. */
void eng_req_finish(eng_req *r, eng_finish f, kn_status st, const char *msg, bool flush);
/* Feeds generated bytes through the stop filter into the ring (room was
 * checked before the step); true when a stop string completed. r->mu held. */
bool eng_req_emit_locked(eng_req *r, const char *bytes, size_t len);
/* Whether r's ring has room for one more token's output. */
bool eng_req_has_room(eng_sched *s, eng_req *r);
/* Calls r's notify hook, if any (r->mu held). */
void eng_req_notify_locked(eng_req *r);
/* An absolute CLOCK_MONOTONIC deadline timeout_ms from now. */
void eng_deadline(struct timespec *ts, int timeout_ms);

/* Frees slot i (its full KV blocks stay cached) / finishes its request's
 * sequence there (sched_step.c). */
void eng_slot_clear(eng_sched *s, int i);
void eng_slot_finish(eng_sched *s, int i, eng_finish f, kn_status st, const char *msg, bool flush);

/* Drafting (sched_spec.c): prompt lookup into out (at most max tokens;
 * returns how many), and the draft model for the decoding slots want[]. */
int eng_draft_ngram(const slot *sl, int max, int32_t *out);
void eng_draft_model_run(eng_sched *s, const int *want, int n_want);

/* The engine threads. */
void *eng_decoder_main(void *arg);
void *eng_encoder_main(void *arg);
/* The encoder engine's buffers (sched_encoder.c). */
kn_status eng_encoder_init(eng_sched *s, const tensor_ops *ops, kn_pool *pool, kn_err *err);

#endif
