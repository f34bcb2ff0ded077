/*
 * sched_encoder.c — the engine thread of an encoder (embedding) model:
 * the inputs of waiting requests are micro-batched into one model_encode
 * call, closed by the token budget or the batching wait (see scheduler.h).
 */
#include "sched_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoder models: micro-batched embeddings ------------------------------ */

/* Unlinks a queued request (s->mu held). */
static void enc_unlink_locked(eng_sched *s, eng_req *r) {
    if (!r->queued) return;
    eng_req *prev = NULL;
    for (eng_req *q = s->q_head; q; prev = q, q = q->next) {
        if (q != r) continue;
        if (prev) prev->next = r->next;
        else s->q_head = r->next;
        if (s->q_tail == r) s->q_tail = prev;
        s->q_len--;
        break;
    }
    r->queued = false;
    r->next = NULL;
}

/* Finishes a request of the encoder engine and drops the engine's
 * reference (s->mu held when locked is set; r may be freed). */
static void enc_close(eng_sched *s, eng_req *r, eng_finish f, kn_status st, const char *msg, bool locked) {
    if (!locked) pthread_mutex_lock(&s->mu);
    enc_unlink_locked(s, r);
    if (!locked) pthread_mutex_unlock(&s->mu);
    eng_req_finish(r, f, st, msg, false);
    eng_req_unref(r);
}

/* Drops cancelled queued requests, and expired ones that have not started
 * (s->mu held). */
static void enc_expire_locked(eng_sched *s, double now) {
    for (eng_req *r = s->q_head, *next; r; r = next) {
        next = r->next;
        bool cancel = atomic_load(&r->cancel);
        bool expired = r->next_in == 0 && s->o.queue_timeout_s > 0 && now - r->res.t_submit > s->o.queue_timeout_s;
        if (cancel) {
            enc_close(s, r, ENG_FINISH_CANCELLED, KN_ECANCELLED, NULL, true);
        } else if (expired) {
            char msg[128];
            snprintf(msg, sizeof msg, "waited %.0f s to be embedded; the server is overloaded", now - r->res.t_submit);
            enc_close(s, r, ENG_FINISH_ERROR, KN_EBUSY, msg, true);
        }
    }
}

/* Tokens of the inputs still waiting in the queue, counted up to `stop`
 * (s->mu held). */
static size_t enc_waiting_tokens_locked(const eng_sched *s, size_t stop) {
    size_t n = 0;
    for (const eng_req *r = s->q_head; r && n < stop; r = r->next)
        for (size_t i = r->next_in; i < r->n_in && n < stop; i++) n += r->in_len[i];
    return n;
}

/* Takes queued inputs in arrival order into the batch until the token
 * budget is reached (at least one input); returns how many. A request whose
 * inputs were all taken leaves the queue (s->mu held). */
static size_t enc_gather_locked(eng_sched *s, double now, size_t *n_tok) {
    const size_t budget = (size_t)s->o.max_batch;
    size_t n = 0, tok = 0;
    while (s->q_head) {
        eng_req *r = s->q_head;
        while (r->next_in < r->n_in) {
            size_t len = r->in_len[r->next_in];
            if (n > 0 && tok + len > budget) goto done;
            s->enc_toks[n] = r->in[r->next_in];
            s->enc_lens[n] = len;
            s->enc_req[n] = r;
            s->enc_idx[n] = r->next_in++;
            n++;
            tok += len;
            if (r->res.t_start == 0) {
                r->res.t_start = now;
                met_observe(s->o.metrics.queue_wait, now - r->res.t_submit);
            }
        }
        enc_unlink_locked(s, r);
    }
done:
    *n_tok = tok;
    return n;
}

/* The engine thread of an encoder model: waits for embedding requests,
 * lets a batch fill for up to batch_wait_ms after the first waiting one
 * (or until the token budget is reached), runs every gathered input in one
 * model_encode and hands each request its own vectors. */
void *eng_encoder_main(void *arg) {
    eng_sched *s = arg;
    const int E = s->m->hp.n_embd;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            if (s->stopping) break;
            double now = kn_now_s();
            enc_expire_locked(s, now);
            if (!s->q_head) {
                struct timespec dl;
                eng_deadline(&dl, 500);
                pthread_cond_timedwait(&s->cv, &s->mu, &dl);
                continue;
            }
            /* the head waited longest: the batch closes batch_wait_ms after its arrival */
            double left_ms = (double)s->o.batch_wait_ms - (now - s->q_head->res.t_submit) * 1e3;
            if (left_ms <= 0 || enc_waiting_tokens_locked(s, (size_t)s->o.max_batch) >= (size_t)s->o.max_batch) break;
            struct timespec dl;
            eng_deadline(&dl, (int)ceil(left_ms));
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
        }
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        size_t n_tok = 0;
        size_t n = enc_gather_locked(s, kn_now_s(), &n_tok);
        pthread_mutex_unlock(&s->mu);
        if (n == 0) continue;
        size_t n_req = 0;
        for (size_t i = 0; i < n; i++) n_req += i + 1 == n || s->enc_req[i + 1] != s->enc_req[i];
        kn_err e = {0};
        kn_status st = model_encode(s->ctx, s->enc_toks, s->enc_lens, n, false, s->enc_out, &e);
        /* recorded before any request finishes, so that a reader of the
         * metrics after its response sees its batch */
        if (st == KN_OK) {
            met_observe(s->o.metrics.batch_size, (double)n);
            met_observe(s->o.metrics.embed_batch_requests, (double)n_req);
            met_observe(s->o.metrics.embed_batch_tokens, (double)n_tok);
            met_add(s->o.metrics.prompt_tokens, (double)n_tok);
        } else {
            KN_ERROR("encoder forward failed: %s", e.msg);
        }
        for (size_t i = 0; i < n; i++) {
            eng_req *r = s->enc_req[i];
            if (st == KN_OK) {
                float *dst = r->emb + s->enc_idx[i] * (size_t)E;
                const float *src = s->enc_out + i * (size_t)E;
                double ss = 0;
                for (int d = 0; d < E; d++) ss += (double)src[d] * src[d];
                float inv = r->normalize && ss > 0 ? (float)(1.0 / sqrt(ss)) : 1.0f;
                for (int d = 0; d < E; d++) dst[d] = src[d] * inv;
                r->n_in_done++;
            }
            if (i + 1 < n && s->enc_req[i + 1] == r) continue; /* not its last input in this batch */
            /* its last input here: r may be freed below, and is not referenced by later items */
            if (st != KN_OK) enc_close(s, r, ENG_FINISH_ERROR, st, e.msg, false);
            else if (atomic_load(&r->cancel)) enc_close(s, r, ENG_FINISH_CANCELLED, KN_ECANCELLED, NULL, false);
            else if (r->n_in_done == r->n_in) enc_close(s, r, ENG_FINISH_STOP, KN_OK, NULL, false);
        }
    }
    return NULL;
}


/* The encoder engine's state: no KV, no drafts, no logits; a forward
 * scratch for the token budget or one whole input, whichever is larger. */
kn_status eng_encoder_init(eng_sched *s, const tensor_ops *ops, kn_pool *pool, kn_err *err) {
    const model *m = s->m;
    s->encoder = true;
    if (s->o.n_ctx > m->hp.n_ctx_train) s->o.n_ctx = m->hp.n_ctx_train; /* position embeddings end there */
    s->o.spec = ENG_SPEC_NONE;
    s->o.spec_max = 0;
    s->o.draft = NULL;
    s->enc_cap = s->o.max_batch > s->o.n_ctx ? s->o.max_batch : s->o.n_ctx;
    kn_status st = model_ctx_create(m, ops, pool, s->enc_cap, &s->ctx, err);
    if (st != KN_OK) return st;
    size_t cap = (size_t)s->enc_cap;
    s->slots = calloc((size_t)s->o.n_slots, sizeof *s->slots);
    s->enc_toks = malloc(cap * sizeof *s->enc_toks);
    s->enc_lens = malloc(cap * sizeof *s->enc_lens);
    s->enc_req = malloc(cap * sizeof *s->enc_req);
    s->enc_idx = malloc(cap * sizeof *s->enc_idx);
    s->enc_out = malloc(cap * (size_t)m->hp.n_embd * sizeof *s->enc_out);
    if (!s->slots || !s->enc_toks || !s->enc_lens || !s->enc_req || !s->enc_idx || !s->enc_out)
        return kn_fail(err, KN_ENOMEM, "out of memory");
    return KN_OK;
}
