/*
 * sched_step.c — the decoder engine thread: admission from the queue,
 * one iteration-level batched step over every running sequence (decode
 * tokens with their drafts, then prefill chunks within the token budget),
 * sampling, draft verification, stop and length checks, and preemption
 * when KV blocks run short (see scheduler.h).
 */
#include "kiln/engine.h"
#include "sched_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eng_slot_clear(eng_sched *s, int i) {
    kv_seq_truncate(s->kv, i, 0);
    if (s->dkv) kv_seq_truncate(s->dkv, i, 0);
    /* only the engine thread writes slots; others read .r under s->mu */
    pthread_mutex_lock(&s->mu);
    s->slots[i] = (slot){.logit_row = -1};
    pthread_mutex_unlock(&s->mu);
}

void eng_slot_finish(eng_sched *s, int i, eng_finish f, kn_status st, const char *msg, bool flush) {
    eng_req *r = s->slots[i].r;
    eng_slot_clear(s, i);
    if (r->kind == REQ_EMBED && f != ENG_FINISH_STOP) {
        /* an embedding fails or is cancelled as a whole: drop its other slots */
        for (int j = 0; j < s->o.n_slots; j++)
            if (s->slots[j].r == r) eng_slot_clear(s, j);
        pthread_mutex_lock(&s->mu);
        bool was_queued = r->queued;
        if (was_queued) { /* still has inputs waiting: unlink */
            eng_req **pp = &s->q_head, *prev = NULL;
            while (*pp && *pp != r) prev = *pp, pp = &(*pp)->next;
            if (*pp) {
                *pp = r->next;
                if (s->q_tail == r) s->q_tail = prev;
                s->q_len--;
            }
            r->queued = false;
        }
        pthread_mutex_unlock(&s->mu);
        eng_req_finish(r, f, st, msg, false);
        eng_req_unref(r);
        return;
    }
    if (r->kind == REQ_EMBED) {
        if (++r->n_in_done < r->n_in) return;
    }
    eng_req_finish(r, f, st, msg, flush);
    eng_req_unref(r);
}

/* Constrained decoding (llama.cpp's approach): the token sampled as usual
 * when the grammar allows it, else one sampled again from a copy of lg
 * with every token the grammar refuses at -INFINITY. A draft the grammar
 * refuses is not offered to the sampler (it is rejected). False with err
 * set when the grammar state hit a bound or allows no token at all. */
static bool gram_pick(eng_sched *s, eng_req *r, const float *lg, int32_t draft, int32_t *tok, kn_err *err) {
    if (draft >= 0 && !gram_token_ok(r->gstate, r->gvocab, (uint32_t)draft)) draft = -1;
    int32_t t = draft >= 0 ? eng_sampler_sample_draft(r->smp, lg, draft) : eng_sampler_sample(r->smp, lg);
    if (t >= 0 && gram_token_ok(r->gstate, r->gvocab, (uint32_t)t)) {
        *tok = t;
        return true;
    }
    if (gram_mask(r->gstate, r->gvocab, r->gmask, err) != KN_OK) return false;
    const int32_t nv = s->m->hp.n_vocab;
    bool any = false;
    for (int32_t k = 0; k < nv; k++) {
        r->glogits[k] = r->gmask[k] ? lg[k] : -INFINITY;
        any |= r->gmask[k] != 0;
    }
    if (!any) {
        kn_fail(err, KN_EINVAL, "the grammar allows no token of this model's vocabulary at this point");
        return false;
    }
    t = eng_sampler_sample(r->smp, r->glogits);
    if (t < 0 || !r->gmask[t]) { /* every allowed logit was NaN or banned outright: the first allowed one */
        for (t = 0; t < nv && !r->gmask[t]; t++) {}
    }
    *tok = t;
    return true;
}

/* Samples the next token of slot i from a logits row (draft >= 0: the
 * token a drafter proposed for this position), emits it and appends it to
 * the sequence. Returns true when the sequence finished; *tok gets the
 * sampled token. */
static bool gen_token(eng_sched *s, int i, const float *lg, int32_t draft, int32_t *tok_out) {
    slot *sl = &s->slots[i];
    eng_req *r = sl->r;
    *tok_out = -1;
    if (r->n_predict == 0) { /* nothing to generate (the prompt was still evaluated) */
        eng_slot_finish(s, i, ENG_FINISH_LENGTH, KN_OK, NULL, true);
        return true;
    }
    int32_t tok;
    if (r->gram) {
        kn_err ge = {0};
        if (!gram_pick(s, r, lg, draft, &tok, &ge)) {
            eng_slot_finish(s, i, ENG_FINISH_ERROR, ge.status ? ge.status : KN_ERANGE, ge.msg, true);
            return true;
        }
    } else {
        tok = draft >= 0 ? eng_sampler_sample_draft(r->smp, lg, draft) : eng_sampler_sample(r->smp, lg);
    }
    *tok_out = tok;
    /* counted before the request can finish, so that a reader of the
     * metrics after the response sees it */
    if (draft >= 0 && tok == draft) met_inc(s->o.metrics.spec_accepted);
    double now = kn_now_s();
    const eng_metrics *mt = &s->o.metrics;
    if (r->res.t_first == 0) { /* read by the consumer only once finished */
        r->res.t_first = now;
        double origin = r->t_origin > 0 ? r->t_origin : r->res.t_submit;
        met_observe(mt->ttft, now - origin);
        met_window_add(mt->ttft_window, now, now - origin);
        met_observe(mt->prefill, now - r->res.t_start);
        met_add(mt->prompt_tokens, (double)r->n_prompt);
    } else {
        met_observe(mt->itl, now - sl->t_last);
    }
    sl->t_last = now;
    /* under a grammar an end-of-generation token is chosen only when the
     * grammar is complete: it ends the request even with ignore_eos */
    if ((!r->ignore_eos || r->gram) && tok_is_eog(s->v, tok)) {
        eng_slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, true);
        return true;
    }
    if (r->gram && !gram_accept_token(r->gstate, r->gvocab, (uint32_t)tok)) {
        kn_err ge = {0};
        kn_status gst = gram_state_status(r->gstate, &ge);
        if (gst == KN_OK) kn_fail(&ge, gst = KN_EINVAL, "the grammar refused token %d", tok);
        eng_slot_finish(s, i, ENG_FINISH_ERROR, gst, ge.msg, true);
        return true;
    }
    eng_sampler_accept(r->smp, tok);
    sl->n_gen++;
    r->prompt[sl->n_toks++] = tok;
    met_inc(mt->gen_tokens);
    const char *piece = NULL;
    size_t plen = 0;
    kn_err e;
    const char *pre = NULL;
    size_t prelen = 0;
    if (r->markup && eng_sched_is_marker(s, tok)) {
        /* the chat parser reads this control token's text */
        tok_decoder_flush(r->dec, &pre, &prelen);
        piece = tok_token_piece(s->v, tok, true, &plen);
    } else if (tok_decoder_feed(r->dec, tok, &piece, &plen, &e) != KN_OK) {
        plen = 0;
    }
    pthread_mutex_lock(&r->mu);
    r->res.n_gen = (size_t)sl->n_gen;
    if (r->ev) {
        eng_tok_event *ev = &r->ev[(r->ev_head + r->ev_len) % EV_RING];
        eng_logprobs(lg, s->m->hp.n_vocab, tok, r->n_logprobs, ev);
        r->ev_len++;
    }
    bool stopped = (prelen && eng_req_emit_locked(r, pre, prelen)) || eng_req_emit_locked(r, piece, plen);
    pthread_cond_broadcast(&r->cv);
    eng_req_notify_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (stopped) {
        eng_slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, false);
        return true;
    }
    if ((r->n_predict >= 0 && sl->n_gen >= r->n_predict) || sl->n_toks >= s->o.n_ctx) {
        eng_slot_finish(s, i, ENG_FINISH_LENGTH, KN_OK, NULL, true);
        return true;
    }
    return false;
}

/* Attaches the cached prefix of slot i's tokens; at least the last known
 * token is computed again (its logits pick the next token). */
static void slot_attach(eng_sched *s, int i) {
    slot *sl = &s->slots[i];
    if (sl->r->kind == REQ_EMBED) { /* an embedding sums every position's hidden state: nothing to reuse */
        sl->n_past = 0;
        return;
    }
    int hit = kv_seq_match(s->kv, i, sl->toks, sl->n_toks);
    int keep = hit >= sl->n_toks ? sl->n_toks - 1 : hit;
    if (keep < hit) kv_seq_truncate(s->kv, i, keep);
    sl->n_past = keep;
    met_add(s->o.metrics.prefix_queried, (double)sl->n_toks);
    met_add(s->o.metrics.prefix_hit, (double)keep);
}

/* Admission and housekeeping under s->mu. Returns the number of busy slots. */
static int admit_locked(eng_sched *s, double now) {
    /* expire or drop queued requests */
    for (eng_req **pp = &s->q_head, *prev = NULL; *pp;) {
        eng_req *r = *pp;
        bool started = r->kind == REQ_EMBED && r->next_in > 0;
        bool cancel = atomic_load(&r->cancel);
        bool expired = !started && s->o.queue_timeout_s > 0 && now - r->res.t_submit > s->o.queue_timeout_s;
        if (!started && (cancel || expired)) {
            *pp = r->next;
            if (s->q_tail == r) s->q_tail = prev;
            s->q_len--;
            r->queued = false;
            char msg[128];
            snprintf(msg, sizeof msg, "waited %.0f s for a free slot; the server is overloaded",
                     now - r->res.t_submit);
            eng_req_finish(r, cancel ? ENG_FINISH_CANCELLED : ENG_FINISH_ERROR, cancel ? KN_ECANCELLED : KN_EBUSY,
                       cancel ? NULL : msg, false);
            eng_req_unref(r);
            continue;
        }
        prev = r;
        pp = &r->next;
    }
    int busy = 0;
    for (int i = 0; i < s->o.n_slots; i++) busy += s->slots[i].r != NULL;
    while (s->q_head && busy < s->o.n_slots) {
        eng_req *r = s->q_head;
        int i = 0;
        while (s->slots[i].r) i++;
        slot *sl = &s->slots[i];
        *sl = (slot){.r = r, .logit_row = -1, .order = s->next_order++};
        if (r->kind == REQ_GEN) {
            sl->toks = r->prompt;
            sl->n_toks = (int)r->n_prompt;
        } else {
            sl->input = r->next_in++;
            sl->toks = r->in[sl->input];
            sl->n_toks = (int)r->in_len[sl->input];
        }
        slot_attach(s, i);
        if (r->res.t_start == 0) {
            r->res.t_start = now;
            met_observe(s->o.metrics.queue_wait, now - r->res.t_submit);
        }
        busy++;
        if (r->kind == REQ_GEN || r->next_in == r->n_in) {
            s->q_head = r->next;
            if (!s->q_head) s->q_tail = NULL;
            s->q_len--;
            r->queued = false;
            r->next = NULL;
        }
    }
    return busy;
}

static void embed_done(eng_sched *s, int i) {
    slot *sl = &s->slots[i];
    eng_req *r = sl->r;
    int E = s->m->hp.n_embd;
    float *e = r->emb + sl->input * (size_t)E;
    double ss = 0;
    for (int k = 0; k < E; k++) {
        e[k] /= (float)sl->n_toks;
        ss += (double)e[k] * e[k];
    }
    met_add(s->o.metrics.prompt_tokens, (double)sl->n_toks);
    if (r->normalize && ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (int k = 0; k < E; k++) e[k] *= inv;
    }
}

/* Releases a sequence's blocks; it is recomputed (from whatever prefix is
 * still cached) when blocks free up. Its tokens and sampler state stay. */
static void slot_preempt(eng_sched *s, int i) {
    slot *sl = &s->slots[i];
    kv_seq_truncate(s->kv, i, 0);
    if (sl->r->kind == REQ_EMBED) /* its sum of hidden states starts over */
        memset(sl->r->emb + sl->input * (size_t)s->m->hp.n_embd, 0, (size_t)s->m->hp.n_embd * sizeof(float));
    sl->n_past = 0;
    sl->paused = true;
    sl->paused_step = s->step;
    met_inc(s->o.metrics.preemptions);
}

/* Frees at least need blocks by preempting sequences newer than slot
 * `self` (newest first). Returns whether enough blocks are available. */
static bool make_room(eng_sched *s, int self, int need, int n_ord) {
    for (int k = n_ord - 1; k >= 0 && kv_available(s->kv) < need; k--) {
        int j = s->ord[k];
        if (j == self) break; /* only newer ones are preempted */
        /* not one already in this step's batch, whose positions are set */
        if (!s->slots[j].paused && s->slots[j].chunk == 0 && kv_seq_len(s->kv, j) > 0) slot_preempt(s, j);
    }
    return kv_available(s->kv) >= need;
}

/* Prompt-lookup drafting: the tokens that followed the most recent earlier
 * occurrence of the sequence's last n-gram (n = 3, then 2). */
static int order_slots(eng_sched *s) {
    int n = 0;
    for (int i = 0; i < s->o.n_slots; i++) {
        if (!s->slots[i].r) continue;
        int k = n++;
        while (k > 0 && s->slots[s->ord[k - 1]].order > s->slots[i].order) {
            s->ord[k] = s->ord[k - 1];
            k--;
        }
        s->ord[k] = i;
    }
    return n;
}

/* Largest chunk <= want of slot i from pos0 whose blocks are available
 * beside the `reserved` ones this step already takes. */
static int fit_chunk(eng_sched *s, int i, int pos0, int want, int reserved) {
    int avail = kv_available(s->kv) - reserved, lo = 0, hi = want;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (kv_seq_need(s->kv, i, pos0, pos0 + mid) <= avail) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* One step's plan: the batch being built and what it takes. */
typedef struct step_plan {
    uint64_t step;
    double now;
    int n_ord;       /* busy slots in s->ord, oldest first */
    int n;           /* tokens in the batch */
    int n_rows;      /* logits rows handed out */
    int n_emb;       /* hidden-state rows handed out (embeddings) */
    int n_dec;       /* decoding sequences */
    int reserved;    /* KV blocks this step takes */
    bool any_stalled;
    int n_want;      /* slots drafting with the draft model */
    int want_draft[ENG_MAX_SLOTS];
} step_plan;

/* Waits for work (s->mu held on entry and exit); returns the number of
 * busy slots after admission, 0 when the engine should wait again, -1
 * when it is stopping. */
static int wait_and_admit_locked(eng_sched *s, bool was_busy, double *now) {
    if (s->stopping) return -1;
    *now = kn_now_s();
    if (!was_busy && s->q_head && s->o.batch_wait_ms > 0) {
        /* idle until now: give requests arriving together a moment to share the first step */
        struct timespec dl;
        eng_deadline(&dl, s->o.batch_wait_ms);
        while (s->q_len < s->o.n_slots && !s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &dl) == 0) {
        }
        *now = kn_now_s();
    }
    int busy = admit_locked(s, *now);
    if (busy == 0) {
        struct timespec dl;
        eng_deadline(&dl, 500);
        pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    }
    return busy;
}

/* The decode token of each generating sequence, oldest first (a sequence
 * short of blocks preempts newer ones, or pauses itself), and how many
 * drafts it may propose. A sequence whose reader is not keeping up is
 * skipped (and cancelled after its stall timeout). */
static void plan_decode(eng_sched *s, step_plan *p) {
    int dec_need = 0;
    for (int k = 0; k < p->n_ord; k++) {
        int i = s->ord[k];
        slot *sl = &s->slots[i];
        if (!sl->r || sl->paused || sl->r->kind != REQ_GEN || sl->n_toks - sl->n_past != 1) continue;
        if (!eng_req_has_room(s, sl->r)) {
            if (sl->stall_since == 0) sl->stall_since = p->now;
            else if (p->now - sl->stall_since > sl->r->stall_timeout_s) {
                KN_WARN("a client read nothing for %.0f s; cancelling its request", sl->r->stall_timeout_s);
                eng_slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, "client stopped reading", false);
                continue;
            }
            p->any_stalled = true;
            continue;
        }
        sl->stall_since = 0;
        int need = kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1) + dec_need;
        if (need > kv_available(s->kv) && !make_room(s, i, need, p->n_ord)) {
            slot_preempt(s, i);
            continue;
        }
        dec_need = need;
        sl->chunk = 1;
        p->n_dec++;
        /* drafts: bounded by the context and the tokens it may still generate */
        eng_req *r = sl->r;
        if (r->spec == ENG_SPEC_NONE) continue;
        int room = s->o.n_ctx - sl->n_toks - 1;
        int left = r->n_predict >= 0 ? r->n_predict - sl->n_gen - 1 : room;
        /* the draft length adapts to how well drafts fare: +2 after a
         * step that accepted them all, -1 after one that did not */
        if (sl->spec_k == 0) sl->spec_k = (r->spec_max + 1) / 2;
        int kmax = sl->spec_k < room ? sl->spec_k : room;
        if (kmax > left) kmax = left;
        if (kmax <= 0) continue;
        if (r->spec == ENG_SPEC_DRAFT && s->dkv) {
            sl->n_draft = kmax;
            p->want_draft[p->n_want++] = i;
        } else {
            sl->n_draft = eng_draft_ngram(sl, kmax, sl->draft);
        }
    }
}

/* The decode tokens and their drafts into the batch: drafts fit the token
 * budget and the free blocks, oldest first. */
static void batch_decode(eng_sched *s, step_plan *p) {
    int budget = s->o.max_batch - p->n_dec;
    for (int k = 0; k < p->n_ord; k++) {
        int i = s->ord[k];
        slot *sl = &s->slots[i];
        if (!sl->r || sl->chunk == 0) continue;
        int d = sl->n_draft < budget ? sl->n_draft : budget;
        while (d > 0 &&
               p->reserved + kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1 + d) > kv_available(s->kv))
            d--;
        sl->n_draft = d;
        budget -= d;
        p->reserved += kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1 + d);
        sl->logit_row = p->n_rows;
        for (int t = 0; t <= d; t++) {
            s->b_tok[p->n] = t == 0 ? sl->toks[sl->n_past] : sl->draft[t - 1];
            s->b_pos[p->n] = sl->n_past + t;
            s->b_seq[p->n] = i;
            s->b_flags[p->n] = MODEL_OUT_LOGITS;
            p->n++;
            p->n_rows++;
        }
        sl->chunk = 1 + d;
        met_add(s->o.metrics.spec_draft, (double)d);
    }
}

/* A preempted sequence resumes (from whatever prefix is still cached)
 * when this step has room for it. Returns whether it takes part now. */
static bool resume_paused(eng_sched *s, step_plan *p, int k, int i) {
    slot *sl = &s->slots[i];
    /* not in the step that paused it, and only with some room */
    if (sl->paused_step == p->step) return false;
    if (kv_available(s->kv) - p->reserved < kv_blocks_per_seq(s->kv) / 4 + 1 && k > 0) return false;
    sl->paused = false;
    slot_attach(s, i);
    if (kv_available(s->kv) < p->reserved) {
        /* its cached blocks were what this step counts on: wait */
        kv_seq_truncate(s->kv, i, 0);
        sl->n_past = 0;
        sl->paused = true;
        return false;
    }
    /* everything but the last token was cached: decode next step */
    return !(sl->r->kind == REQ_GEN && sl->n_toks - sl->n_past <= 1);
}

/* Prefill chunks (prompts, embedding inputs, resumed sequences) in the
 * remaining token budget, oldest first, each fitted to the free blocks. */
static void batch_prefill(eng_sched *s, step_plan *p) {
    for (int k = 0; k < p->n_ord && p->n < s->o.max_batch; k++) {
        int i = s->ord[k];
        slot *sl = &s->slots[i];
        if (!sl->r || sl->chunk > 0) continue;
        if (sl->r->kind == REQ_GEN && sl->n_toks - sl->n_past <= 1 && !sl->paused) continue; /* stalled decoder */
        if (sl->paused && !resume_paused(s, p, k, i)) continue;
        int left = sl->n_toks - sl->n_past;
        int chunk = left < s->o.max_batch - p->n ? left : s->o.max_batch - p->n;
        /* fit the blocks that are free beyond what this step already takes */
        int fit = fit_chunk(s, i, sl->n_past, chunk, p->reserved);
        if (fit == 0 && k == 0) {
            /* the oldest sequence must progress: preempt newer ones */
            make_room(s, i, kv_seq_need(s->kv, i, sl->n_past, sl->n_past + chunk) + p->reserved, p->n_ord);
            fit = fit_chunk(s, i, sl->n_past, chunk, p->reserved);
        }
        chunk = fit;
        if (chunk == 0) continue;
        p->reserved += kv_seq_need(s->kv, i, sl->n_past, sl->n_past + chunk);
        bool embed = sl->r->kind == REQ_EMBED;
        if (embed) sl->emb_row = p->n_emb;
        for (int t = 0; t < chunk; t++) {
            s->b_tok[p->n] = sl->toks[sl->n_past + t];
            s->b_pos[p->n] = sl->n_past + t;
            s->b_seq[p->n] = i;
            s->b_flags[p->n] = embed ? MODEL_OUT_EMBD : 0;
            p->n++;
        }
        sl->chunk = chunk;
        if (embed) {
            p->n_emb += chunk;
        } else if (chunk == left) {
            s->b_flags[p->n - 1] = MODEL_OUT_LOGITS;
            sl->logit_row = p->n_rows++;
        }
    }
}

/* Runs the planned batch. False when nothing was computed (the caller
 * plans again). */
static bool run_batch(eng_sched *s, const step_plan *p) {
    /* logits and hidden rows come out in batch order, which is the order
     * logit_row and emb_row were handed out in */
    int n_seqs = 0;
    for (int i = 0; i < s->o.n_slots; i++) n_seqs += s->slots[i].r && s->slots[i].chunk > 0;
    met_observe(s->o.metrics.batch_size, n_seqs);
    model_batch b = {.n_tokens = p->n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags,
                     .embd = s->hidden};
    kn_err e;
    kn_status fst = model_forward(s->ctx, s->kv, &b, s->logits, &e);
    if (fst == KN_EBUSY) {
        /* the step's block accounting fell short (nothing was computed):
         * preempt the newest sequence in it and plan again */
        KN_WARN("KV pool short for a step (%s); preempting the newest sequence", e.msg);
        for (int k = p->n_ord - 1; k >= 0; k--)
            if (s->slots[s->ord[k]].r && s->slots[s->ord[k]].chunk > 0) {
                slot_preempt(s, s->ord[k]);
                break;
            }
        return false;
    }
    if (fst != KN_OK) {
        KN_ERROR("forward step failed: %s", e.msg);
        for (int i = 0; i < s->o.n_slots; i++)
            if (s->slots[i].r && s->slots[i].chunk > 0) eng_slot_finish(s, i, ENG_FINISH_ERROR, e.status, e.msg, false);
        return false;
    }
    return true;
}

/* An embedding chunk: its hidden states are summed into the input's
 * vector; the input is done when its last position was fed. */
static void advance_embed(eng_sched *s, int i) {
    slot *sl = &s->slots[i];
    const int E = s->m->hp.n_embd;
    float *acc = sl->r->emb + sl->input * (size_t)E;
    for (int k = 0; k < sl->chunk; k++) {
        const float *h = s->hidden + (size_t)(sl->emb_row + k) * E;
        for (int d = 0; d < E; d++) acc[d] += h[d];
    }
    sl->n_past += sl->chunk;
    if (sl->n_past == sl->n_toks) {
        embed_done(s, i);
        eng_slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, false);
    }
}

/* The last known token and any drafts behind it were fed: sample each
 * position, accept drafts while they match, and keep the KV of the
 * accepted ones. */
static void advance_decode(eng_sched *s, int i) {
    slot *sl = &s->slots[i];
    const int V = s->m->hp.n_vocab;
    int base = sl->n_past + sl->chunk - sl->n_draft - 1; /* position of the last known token */
    int nd = sl->n_draft, accepted = 0;
    bool done = false;
    for (int d = 0; d <= nd && !done; d++) {
        int32_t tok;
        int32_t draft = d < nd ? sl->draft[d] : -1;
        done = gen_token(s, i, s->logits + (size_t)(sl->logit_row + d) * V, draft, &tok);
        if (d < nd && tok == draft) accepted++;
        if (done || d == nd || tok != draft) break;
    }
    if (done) return;
    if (nd > 0) {
        sl->spec_k = accepted == nd ? sl->spec_k + 2 : sl->spec_k - 1;
        if (sl->spec_k > sl->r->spec_max) sl->spec_k = sl->r->spec_max;
        if (sl->spec_k < 1) sl->spec_k = 1;
    }
    /* the KV holds the last known token and the accepted drafts */
    sl->n_past = base + 1 + accepted;
    if (nd > accepted) kv_seq_truncate(s->kv, i, sl->n_past);
    if (s->dkv && sl->d_past > sl->n_past) {
        kv_seq_truncate(s->dkv, i, sl->n_past);
        sl->d_past = kv_seq_len(s->dkv, i);
    }
}

void *eng_decoder_main(void *arg) {
    eng_sched *s = arg;
    bool was_busy = false;
    step_plan p;
    for (;;) {
        double now = 0;
        pthread_mutex_lock(&s->mu);
        int busy = wait_and_admit_locked(s, was_busy, &now);
        pthread_mutex_unlock(&s->mu);
        if (busy < 0) break;
        was_busy = busy > 0;
        if (busy == 0) continue;

        /* cancelled sequences leave at once */
        for (int i = 0; i < s->o.n_slots; i++)
            if (s->slots[i].r && atomic_load(&s->slots[i].r->cancel))
                eng_slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, NULL, false);
        p.step = ++s->step;
        p.now = now;
        p.n_ord = order_slots(s);
        p.n = p.n_rows = p.n_emb = p.n_dec = p.reserved = p.n_want = 0;
        p.any_stalled = false;
        for (int i = 0; i < s->o.n_slots; i++) {
            s->slots[i].logit_row = -1;
            s->slots[i].chunk = s->slots[i].n_draft = 0;
        }
        /* decode tokens first, each followed by its drafts, then prefill
         * chunks in the remaining budget */
        plan_decode(s, &p);
        if (p.n_want > 0) eng_draft_model_run(s, p.want_draft, p.n_want);
        batch_decode(s, &p);
        batch_prefill(s, &p);
        if (p.n == 0) {
            pthread_mutex_lock(&s->mu);
            struct timespec dl;
            eng_deadline(&dl, p.any_stalled ? 10 : 2);
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        if (!run_batch(s, &p)) continue;
        for (int i = 0; i < s->o.n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r || sl->chunk == 0) continue;
            if (sl->r->kind == REQ_EMBED) advance_embed(s, i);
            else if (sl->logit_row < 0) sl->n_past += sl->chunk; /* a prefill chunk short of the prompt's end */
            else advance_decode(s, i);
        }
    }
    return NULL;
}
