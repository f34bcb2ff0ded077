/*
 * sched.c — slots, the wait queue and the engine thread (see sched.h).
 */
#include "sched.h"

#include "stop.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    /* queue link (sched lock) */
    eng_req *next;
    bool queued;
};

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

const char *eng_spec_name(eng_spec_mode m) {
    switch (m) {
    case ENG_SPEC_NGRAM: return "ngram";
    case ENG_SPEC_DRAFT: return "draft";
    default: return "none";
    }
}

bool eng_spec_parse(const char *s, eng_spec_mode *out) {
    if (!strcmp(s, "none") || !strcmp(s, "off")) *out = ENG_SPEC_NONE;
    else if (!strcmp(s, "ngram")) *out = ENG_SPEC_NGRAM;
    else if (!strcmp(s, "draft")) *out = ENG_SPEC_DRAFT;
    else return false;
    return true;
}

const char *eng_finish_name(eng_finish f) {
    switch (f) {
    case ENG_FINISH_NONE: return "none";
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_CANCELLED: return "cancelled";
    case ENG_FINISH_ERROR: return "error";
    }
    return "error";
}

/* ---- requests ---------------------------------------------------------- */

static void req_free(eng_req *r) {
    if (!r) return;
    free(r->prompt);
    eng_sampler_destroy(r->smp);
    tok_decoder_destroy(r->dec);
    eng_stop_destroy(r->stop);
    free(r->bias);
    if (r->in)
        for (size_t i = 0; i < r->n_in; i++) free(r->in[i]);
    free(r->in);
    free(r->in_len);
    free(r->emb);
    free(r->ring);
    free(r->ev);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void req_unref(eng_req *r) {
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) req_free(r);
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static eng_req *req_alloc(eng_sched *s, req_kind kind) {
    eng_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->s = s;
    r->kind = kind;
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, false);
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->cv); /* eng_req_read's deadlines are CLOCK_MONOTONIC */
    return r;
}

kn_status eng_req_create_gen(eng_sched *s, const int32_t *prompt, size_t n_prompt, const eng_gen_params *p,
                             eng_req **out, kn_err *err) {
    *out = NULL;
    int32_t nv = s->m->hp.n_vocab;
    if (s->encoder)
        return kn_fail(err, KN_EUNSUPPORTED, "this is an embedding (encoder) model; it cannot generate text");
    if (n_prompt == 0) return kn_fail(err, KN_EINVAL, "the prompt is empty");
    if (n_prompt >= (size_t)s->o.n_ctx)
        return kn_fail(err, KN_ERANGE,
                       "the prompt has %zu tokens, but the context holds %d (prompt and generated tokens together); "
                       "shorten the prompt or raise the context size",
                       n_prompt, s->o.n_ctx);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= nv)
            return kn_fail(err, KN_EINVAL, "token id %d at prompt position %zu is out of range [0, %d)", prompt[i],
                           i, nv);
    if (p->n_logprobs > ENG_MAX_LOGPROBS)
        return kn_fail(err, KN_EINVAL, "at most %d top logprobs may be asked for, got %d", ENG_MAX_LOGPROBS,
                       p->n_logprobs);
    if (p->sp.n_bias < 0 || p->sp.n_bias > nv)
        return kn_fail(err, KN_EINVAL, "too many logit_bias entries (%d)", p->sp.n_bias);
    for (int i = 0; i < p->sp.n_bias; i++)
        if (p->sp.bias[i].token < 0 || p->sp.bias[i].token >= nv)
            return kn_fail(err, KN_EINVAL, "logit_bias token id %d is out of range [0, %d)", p->sp.bias[i].token, nv);
    eng_req *r = req_alloc(s, REQ_GEN);
    if (!r) return kn_fail(err, KN_ENOMEM, "out of memory");
    kn_status st = KN_ENOMEM;
    r->n_prompt = n_prompt;
    r->n_predict = p->n_predict;
    r->ignore_eos = p->ignore_eos;
    r->n_logprobs = p->n_logprobs;
    r->t_origin = p->t_origin;
    r->spec = p->spec == ENG_SPEC_DEFAULT ? s->o.spec : p->spec;
    r->stall_timeout_s = p->stall_timeout_s > 0 ? p->stall_timeout_s : ENG_STALL_TIMEOUT_S;
    if (r->spec == ENG_SPEC_DRAFT && !s->o.draft) r->spec = ENG_SPEC_NGRAM;
    r->spec_max = p->spec_max > 0 ? p->spec_max : s->o.spec_max;
    if (r->spec_max > s->o.spec_max) r->spec_max = s->o.spec_max;
    if (r->spec_max <= 0) r->spec = ENG_SPEC_NONE;
    r->prompt = malloc((size_t)s->o.n_ctx * sizeof *r->prompt);
    r->ring_cap = s->ring_cap;
    r->ring = malloc(r->ring_cap);
    if (!r->prompt || !r->ring) goto fail;
    memcpy(r->prompt, prompt, n_prompt * sizeof *prompt);
    if (p->n_logprobs >= 0 && !(r->ev = malloc(EV_RING * sizeof *r->ev))) goto fail;
    eng_sampler_params sp = p->sp;
    if (sp.n_bias > 0) {
        if (!(r->bias = malloc((size_t)sp.n_bias * sizeof *r->bias))) goto fail;
        memcpy(r->bias, sp.bias, (size_t)sp.n_bias * sizeof *r->bias);
        sp.bias = r->bias;
    } else {
        sp.bias = NULL;
        sp.n_bias = 0;
    }
    if ((st = eng_sampler_create(&sp, nv, &r->smp, err)) != KN_OK) goto fail;
    if ((st = eng_stop_create(p->stops, p->n_stops, &r->stop, err)) != KN_OK) goto fail;
    tok_decoder_opts dopts = {.special = false, .strip_space = false, .replace_invalid = false};
    st = KN_ENOMEM;
    if (!(r->dec = tok_decoder_create(s->v, &dopts))) goto fail;
    for (size_t i = 0; i < n_prompt; i++) eng_sampler_accept(r->smp, prompt[i]);
    r->res.n_prompt = n_prompt;
    *out = r;
    return KN_OK;
fail:
    if (st == KN_ENOMEM) kn_fail(err, KN_ENOMEM, "out of memory");
    req_free(r);
    return st;
}

kn_status eng_req_create_embed(eng_sched *s, const int32_t *const *inputs, const size_t *lens, size_t n_inputs,
                               bool normalize, eng_req **out, kn_err *err) {
    *out = NULL;
    int32_t nv = s->m->hp.n_vocab;
    if (n_inputs == 0) return kn_fail(err, KN_EINVAL, "no inputs to embed");
    if (n_inputs > ENG_MAX_EMBED_INPUTS)
        return kn_fail(err, KN_ERANGE, "%zu inputs in one request; at most %d", n_inputs, ENG_MAX_EMBED_INPUTS);
    for (size_t i = 0; i < n_inputs; i++) {
        if (lens[i] == 0) return kn_fail(err, KN_EINVAL, "input %zu is empty", i);
        if (lens[i] > (size_t)s->o.n_ctx)
            return kn_fail(err, KN_ERANGE, "input %zu has %zu tokens, more than the context size %d", i, lens[i],
                           s->o.n_ctx);
        for (size_t j = 0; j < lens[i]; j++)
            if (inputs[i][j] < 0 || inputs[i][j] >= nv)
                return kn_fail(err, KN_EINVAL, "token id %d in input %zu is out of range [0, %d)", inputs[i][j], i,
                               nv);
    }
    eng_req *r = req_alloc(s, REQ_EMBED);
    if (!r) return kn_fail(err, KN_ENOMEM, "out of memory");
    r->n_in = n_inputs;
    r->normalize = normalize;
    r->in = calloc(n_inputs, sizeof *r->in);
    r->in_len = malloc(n_inputs * sizeof *r->in_len);
    r->emb = calloc(n_inputs * (size_t)s->m->hp.n_embd, sizeof *r->emb);
    if (!r->in || !r->in_len || !r->emb) goto oom;
    for (size_t i = 0; i < n_inputs; i++) {
        r->in_len[i] = lens[i];
        if (!(r->in[i] = malloc(lens[i] * sizeof *r->in[i]))) goto oom;
        memcpy(r->in[i], inputs[i], lens[i] * sizeof *inputs[i]);
        r->n_tok_total += lens[i];
    }
    r->res.n_prompt = r->n_tok_total;
    *out = r;
    return KN_OK;
oom:
    req_free(r);
    return kn_fail(err, KN_ENOMEM, "out of memory");
}

const float *eng_req_embeddings(const eng_req *r, size_t *n_inputs, int *n_embd, size_t *n_tokens) {
    if (n_inputs) *n_inputs = r->n_in;
    if (n_embd) *n_embd = r->s->m->hp.n_embd;
    if (n_tokens) *n_tokens = r->n_tok_total;
    return r->emb;
}

void eng_req_cancel(eng_req *r) {
    if (!r) return;
    atomic_store(&r->cancel, true);
    eng_sched *s = r->s;
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void eng_req_release(eng_req *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    bool fin = r->finished;
    pthread_mutex_unlock(&r->mu);
    if (!fin) eng_req_cancel(r);
    req_unref(r);
}

static void abs_deadline(struct timespec *ts, int timeout_ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}


bool eng_req_read(eng_req *r, int timeout_ms, char *text, size_t text_cap, size_t *text_len, eng_tok_event *ev,
                  size_t ev_cap, size_t *n_ev, eng_req_result *res) {
    *text_len = 0;
    if (n_ev) *n_ev = 0;
    struct timespec dl;
    if (timeout_ms >= 0) abs_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->ring_len == 0 && r->ev_len == 0 && !r->finished) {
        if (timeout_ms < 0) pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0) break;
    }
    size_t n = r->ring_len < text_cap ? r->ring_len : text_cap;
    for (size_t i = 0; i < n;) {
        size_t pos = (r->ring_head + i) % r->ring_cap;
        size_t run = r->ring_cap - pos < n - i ? r->ring_cap - pos : n - i;
        memcpy(text + i, r->ring + pos, run);
        i += run;
    }
    r->ring_head = (r->ring_head + n) % (r->ring_cap ? r->ring_cap : 1);
    r->ring_len -= n;
    *text_len = n;
    size_t ne = 0;
    if (ev && n_ev) {
        ne = r->ev_len < ev_cap ? r->ev_len : ev_cap;
        for (size_t i = 0; i < ne; i++) ev[i] = r->ev[(r->ev_head + i) % EV_RING];
        r->ev_head = (r->ev_head + ne) % EV_RING;
        r->ev_len -= ne;
        *n_ev = ne;
    } else if (r->ev) {
        r->ev_len = 0; /* a consumer that does not want events must not stall the ring */
    }
    bool done = r->finished && r->ring_len == 0 && r->ev_len == 0;
    if (done && res) *res = r->res;
    pthread_mutex_unlock(&r->mu);
    return done;
}

/* ---- engine side ---------------------------------------------------------- */

/* Appends text (room was checked before the step). */
static void ring_push(eng_req *r, const char *p, size_t n) {
    if (!n) return;
    KN_ASSERT(r->ring_len + n <= r->ring_cap);
    size_t tail = (r->ring_head + r->ring_len) % r->ring_cap;
    for (size_t i = 0; i < n;) {
        size_t pos = (tail + i) % r->ring_cap;
        size_t run = r->ring_cap - pos < n - i ? r->ring_cap - pos : n - i;
        memcpy(r->ring + pos, p + i, run);
        i += run;
    }
    r->ring_len += n;
}

static bool has_room(eng_sched *s, eng_req *r) {
    pthread_mutex_lock(&r->mu);
    bool ok = r->ring_cap - r->ring_len >= s->need_room && (!r->ev || r->ev_len < EV_RING);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Feeds generated bytes through the stop filter into the ring; true when a
 * stop string completed. Caller holds r->mu. */
static bool emit_locked(eng_req *r, const char *bytes, size_t len) {
    bool stopped = false;
    for (size_t off = 0; off < len && !stopped;) {
        const char *o;
        size_t ol;
        off += eng_stop_feed(r->stop, bytes + off, len - off, &o, &ol, &stopped);
        ring_push(r, o, ol);
    }
    return stopped;
}

/* flush: release the text held back by the detokenizer and the stop filter
 * (not after a stop string, whose filter already ended the text). */
static void finish_req(eng_req *r, eng_finish f, kn_status st, const char *msg, bool flush) {
    pthread_mutex_lock(&r->mu);
    if (!r->finished) {
        if (flush && r->kind == REQ_GEN && r->dec) {
            const char *rest;
            size_t rlen;
            tok_decoder_flush(r->dec, &rest, &rlen);
            if (!emit_locked(r, rest, rlen)) {
                eng_stop_flush(r->stop, &rest, &rlen);
                ring_push(r, rest, rlen);
            }
        }
        r->res.finish = f;
        r->res.status = st;
        if (msg) snprintf(r->res.err, sizeof r->res.err, "%s", msg);
        r->res.t_end = kn_now_s();
        r->finished = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Frees a slot and its KV (full blocks stay in the prefix cache); the
 * request's engine reference goes when its last sequence leaves
 * (generation: at once; embedding: after all inputs). */
static void slot_clear(eng_sched *s, int i) {
    kv_seq_truncate(s->kv, i, 0);
    if (s->dkv) kv_seq_truncate(s->dkv, i, 0);
    /* only the engine thread writes slots; others read .r under s->mu */
    pthread_mutex_lock(&s->mu);
    s->slots[i] = (slot){.logit_row = -1};
    pthread_mutex_unlock(&s->mu);
}

static void slot_finish(eng_sched *s, int i, eng_finish f, kn_status st, const char *msg, bool flush) {
    eng_req *r = s->slots[i].r;
    slot_clear(s, i);
    if (r->kind == REQ_EMBED && f != ENG_FINISH_STOP) {
        /* an embedding fails or is cancelled as a whole: drop its other slots */
        for (int j = 0; j < s->o.n_slots; j++)
            if (s->slots[j].r == r) slot_clear(s, j);
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
        finish_req(r, f, st, msg, false);
        req_unref(r);
        return;
    }
    if (r->kind == REQ_EMBED) {
        if (++r->n_in_done < r->n_in) return;
    }
    finish_req(r, f, st, msg, flush);
    req_unref(r);
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
        slot_finish(s, i, ENG_FINISH_LENGTH, KN_OK, NULL, true);
        return true;
    }
    int32_t tok = draft >= 0 ? eng_sampler_sample_draft(r->smp, lg, draft) : eng_sampler_sample(r->smp, lg);
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
    if (!r->ignore_eos && tok_is_eog(s->v, tok)) {
        slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, true);
        return true;
    }
    eng_sampler_accept(r->smp, tok);
    sl->n_gen++;
    r->prompt[sl->n_toks++] = tok;
    met_inc(mt->gen_tokens);
    const char *piece = NULL;
    size_t plen = 0;
    kn_err e;
    if (tok_decoder_feed(r->dec, tok, &piece, &plen, &e) != KN_OK) plen = 0;
    pthread_mutex_lock(&r->mu);
    r->res.n_gen = (size_t)sl->n_gen;
    if (r->ev) {
        eng_tok_event *ev = &r->ev[(r->ev_head + r->ev_len) % EV_RING];
        eng_logprobs(lg, s->m->hp.n_vocab, tok, r->n_logprobs, ev);
        r->ev_len++;
    }
    bool stopped = emit_locked(r, piece, plen);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (stopped) {
        slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, false);
        return true;
    }
    if ((r->n_predict >= 0 && sl->n_gen >= r->n_predict) || sl->n_toks >= s->o.n_ctx) {
        slot_finish(s, i, ENG_FINISH_LENGTH, KN_OK, NULL, true);
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
            finish_req(r, cancel ? ENG_FINISH_CANCELLED : ENG_FINISH_ERROR, cancel ? KN_ECANCELLED : KN_EBUSY,
                       cancel ? NULL : msg, false);
            req_unref(r);
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
static int draft_ngram(const slot *sl, int max, int32_t *out) {
    const int32_t *t = sl->toks;
    int n = sl->n_toks;
    for (int g = 3; g >= 2; g--) {
        if (n <= g) continue;
        const int32_t *pat = t + n - g;
        for (int j = n - g - 1; j >= 0; j--) {
            if (memcmp(t + j, pat, (size_t)g * sizeof *t)) continue;
            int k = 0;
            while (k < max && j + g + k < n) {
                out[k] = t[j + g + k];
                k++;
            }
            if (k > 0) return k;
        }
    }
    return 0;
}

/* Draft-model drafting for the decoding slots in want[0..n_want): brings
 * the draft model's KV up to each sequence's known tokens, then runs it
 * greedily for up to the slot's draft budget (slot.n_draft on entry),
 * writing the drafts. Slots whose drafting failed get n_draft 0. */
static void draft_model_run(eng_sched *s, const int *want, int n_want) {
    const int V = s->m->hp.n_vocab;
    int32_t last[ENG_MAX_SLOTS];
    bool active[ENG_MAX_SLOTS];
    int rounds = 0;
    for (int w = 0; w < n_want; w++) {
        const slot *sl = &s->slots[want[w]];
        active[w] = true;
        last[w] = -1;
        if (sl->n_draft > rounds) rounds = sl->n_draft;
    }
    kn_err e;
    /* catch-up: feed each sequence's tokens the draft model has not seen, in
     * budget-sized batches; the last one's logits give the first draft */
    int row_of[ENG_MAX_SLOTS];
    for (;;) {
        int n = 0, n_rows = 0;
        for (int w = 0; w < n_want; w++) row_of[w] = -1;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || last[w] >= 0) continue;
            int left = sl->n_toks - sl->d_past;
            int chunk = left < s->o.max_batch - n ? left : s->o.max_batch - n;
            for (int k = 0; k < chunk; k++) {
                s->b_tok[n] = sl->toks[sl->d_past + k];
                s->b_pos[n] = sl->d_past + k;
                s->b_seq[n] = want[w];
                s->b_flags[n] = 0;
                n++;
            }
            if (chunk == left && chunk > 0) {
                s->b_flags[n - 1] = MODEL_OUT_LOGITS;
                row_of[w] = n_rows++;
            }
            if (n == s->o.max_batch) break;
        }
        if (n == 0) break;
        model_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags};
        if (model_forward(s->dctx, s->dkv, &b, s->dlogits, &e) != KN_OK) {
            for (int w = 0; w < n_want; w++) s->slots[want[w]].n_draft = 0;
            return;
        }
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            for (int t = 0; t < n; t++)
                if (s->b_seq[t] == want[w]) sl->d_past = s->b_pos[t] + 1;
            if (row_of[w] >= 0) last[w] = eng_argmax(s->dlogits + (size_t)row_of[w] * V, V);
        }
    }
    for (int w = 0; w < n_want; w++) {
        slot *sl = &s->slots[want[w]];
        if (last[w] < 0) active[w] = false, sl->n_draft = 0;
        else sl->draft[0] = last[w];
    }
    /* then one token per sequence per round */
    for (int d = 1; d < rounds; d++) {
        int n = 0;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || d >= sl->n_draft) continue;
            s->b_tok[n] = sl->draft[d - 1];
            s->b_pos[n] = sl->d_past;
            s->b_seq[n] = want[w];
            s->b_flags[n] = MODEL_OUT_LOGITS;
            n++;
        }
        if (n == 0) break;
        model_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags};
        if (model_forward(s->dctx, s->dkv, &b, s->dlogits, &e) != KN_OK) {
            for (int w = 0; w < n_want; w++)
                if (active[w] && s->slots[want[w]].n_draft > d) s->slots[want[w]].n_draft = d;
            break;
        }
        int row = 0;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || d >= sl->n_draft) continue;
            sl->d_past++;
            sl->draft[d] = eng_argmax(s->dlogits + (size_t)row++ * V, V);
        }
    }
}

/* Orders the busy slots oldest first into s->ord; returns how many. */
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

static void *engine_main(void *arg) {
    eng_sched *s = arg;
    const int V = s->m->hp.n_vocab, E = s->m->hp.n_embd;
    bool was_busy = false;
    int want_draft[ENG_MAX_SLOTS];
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        double now = kn_now_s();
        if (!was_busy && s->q_head && s->o.batch_wait_ms > 0) {
            /* idle until now: give requests arriving together a moment to share the first step */
            struct timespec dl;
            abs_deadline(&dl, s->o.batch_wait_ms);
            while (s->q_len < s->o.n_slots && !s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &dl) == 0) {
            }
            now = kn_now_s();
        }
        int busy = admit_locked(s, now);
        was_busy = busy > 0;
        if (busy == 0) {
            struct timespec dl;
            abs_deadline(&dl, 500);
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);

        /* cancelled sequences leave at once */
        for (int i = 0; i < s->o.n_slots; i++)
            if (s->slots[i].r && atomic_load(&s->slots[i].r->cancel))
                slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, NULL, false);
        int n_ord = order_slots(s);
        const uint64_t step = ++s->step;
        for (int i = 0; i < s->o.n_slots; i++) {
            s->slots[i].logit_row = -1;
            s->slots[i].chunk = s->slots[i].n_draft = 0;
        }

        /* decode tokens first (oldest first; a sequence short of blocks
         * preempts newer ones, or pauses itself), each followed by its
         * drafts, then prefill chunks in the remaining budget */
        int n = 0, n_rows = 0, n_emb = 0, n_want = 0, n_dec = 0, dec_need = 0;
        bool any_stalled = false;
        for (int k = 0; k < n_ord; k++) {
            int i = s->ord[k];
            slot *sl = &s->slots[i];
            if (!sl->r || sl->paused || sl->r->kind != REQ_GEN || sl->n_toks - sl->n_past != 1) continue;
            if (!has_room(s, sl->r)) {
                if (sl->stall_since == 0) sl->stall_since = now;
                else if (now - sl->stall_since > sl->r->stall_timeout_s) {
                    KN_WARN("a client read nothing for %.0f s; cancelling its request", sl->r->stall_timeout_s);
                    slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, "client stopped reading", false);
                    continue;
                }
                any_stalled = true;
                continue;
            }
            sl->stall_since = 0;
            int need = kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1) + dec_need;
            if (need > kv_available(s->kv) && !make_room(s, i, need, n_ord)) {
                slot_preempt(s, i);
                continue;
            }
            dec_need = need;
            sl->chunk = 1;
            n_dec++;
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
                want_draft[n_want++] = i;
            } else {
                sl->n_draft = draft_ngram(sl, kmax, sl->draft);
            }
        }
        if (n_want > 0) draft_model_run(s, want_draft, n_want);
        /* drafts fit the token budget and the free blocks, oldest first */
        int budget = s->o.max_batch - n_dec, reserved = 0;
        for (int k = 0; k < n_ord; k++) {
            int i = s->ord[k];
            slot *sl = &s->slots[i];
            if (!sl->r || sl->chunk == 0) continue;
            int d = sl->n_draft < budget ? sl->n_draft : budget;
            while (d > 0 && reserved + kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1 + d) > kv_available(s->kv)) d--;
            sl->n_draft = d;
            budget -= d;
            reserved += kv_seq_need(s->kv, i, sl->n_past, sl->n_past + 1 + d);
            sl->logit_row = n_rows;
            for (int t = 0; t <= d; t++) {
                s->b_tok[n] = t == 0 ? sl->toks[sl->n_past] : sl->draft[t - 1];
                s->b_pos[n] = sl->n_past + t;
                s->b_seq[n] = i;
                s->b_flags[n] = MODEL_OUT_LOGITS;
                n++;
                n_rows++;
            }
            sl->chunk = 1 + d;
            met_add(s->o.metrics.spec_draft, (double)d);
        }
        for (int k = 0; k < n_ord && n < s->o.max_batch; k++) {
            int i = s->ord[k];
            slot *sl = &s->slots[i];
            if (!sl->r || sl->chunk > 0) continue;
            if (sl->r->kind == REQ_GEN && sl->n_toks - sl->n_past <= 1 && !sl->paused) continue; /* stalled decoder */
            if (sl->paused) {
                /* not in the step that paused it, and only with some room */
                if (sl->paused_step == step) continue;
                if (kv_available(s->kv) - reserved < kv_blocks_per_seq(s->kv) / 4 + 1 && k > 0) continue;
                sl->paused = false;
                slot_attach(s, i);
                if (kv_available(s->kv) < reserved) {
                    /* its cached blocks were what this step counts on: wait */
                    kv_seq_truncate(s->kv, i, 0);
                    sl->n_past = 0;
                    sl->paused = true;
                    continue;
                }
                if (sl->r->kind == REQ_GEN && sl->n_toks - sl->n_past <= 1) {
                    /* everything but the last token was cached: decode next step */
                    continue;
                }
            }
            int left = sl->n_toks - sl->n_past;
            int chunk = left < s->o.max_batch - n ? left : s->o.max_batch - n;
            /* fit the blocks that are free beyond what this step already takes */
            int fit = fit_chunk(s, i, sl->n_past, chunk, reserved);
            if (fit == 0 && k == 0) {
                /* the oldest sequence must progress: preempt newer ones */
                make_room(s, i, kv_seq_need(s->kv, i, sl->n_past, sl->n_past + chunk) + reserved, n_ord);
                fit = fit_chunk(s, i, sl->n_past, chunk, reserved);
            }
            chunk = fit;
            if (chunk == 0) continue;
            reserved += kv_seq_need(s->kv, i, sl->n_past, sl->n_past + chunk);
            bool embed = sl->r->kind == REQ_EMBED;
            if (embed) sl->emb_row = n_emb;
            for (int t = 0; t < chunk; t++) {
                s->b_tok[n] = sl->toks[sl->n_past + t];
                s->b_pos[n] = sl->n_past + t;
                s->b_seq[n] = i;
                s->b_flags[n] = embed ? MODEL_OUT_EMBD : 0;
                n++;
            }
            sl->chunk = chunk;
            if (embed) {
                n_emb += chunk;
            } else if (chunk == left) {
                s->b_flags[n - 1] = MODEL_OUT_LOGITS;
                sl->logit_row = n_rows++;
            }
        }
        if (n == 0) {
            pthread_mutex_lock(&s->mu);
            struct timespec dl;
            abs_deadline(&dl, any_stalled ? 10 : 2);
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        /* logits and hidden rows come out in batch order, which is the order
         * logit_row and emb_row were handed out in */
        int n_seqs = 0;
        for (int i = 0; i < s->o.n_slots; i++) n_seqs += s->slots[i].r && s->slots[i].chunk > 0;
        met_observe(s->o.metrics.batch_size, n_seqs);
        model_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags,
                         .embd = s->hidden};
        kn_err e;
        kn_status fst = model_forward(s->ctx, s->kv, &b, s->logits, &e);
        if (fst == KN_EBUSY) {
            /* the step's block accounting fell short (nothing was computed):
             * preempt the newest sequence in it and plan again */
            KN_WARN("KV pool short for a step (%s); preempting the newest sequence", e.msg);
            for (int k = n_ord - 1; k >= 0; k--)
                if (s->slots[s->ord[k]].r && s->slots[s->ord[k]].chunk > 0) {
                    slot_preempt(s, s->ord[k]);
                    break;
                }
            continue;
        }
        if (fst != KN_OK) {
            KN_ERROR("forward step failed: %s", e.msg);
            for (int i = 0; i < s->o.n_slots; i++)
                if (s->slots[i].r && s->slots[i].chunk > 0) slot_finish(s, i, ENG_FINISH_ERROR, e.status, e.msg, false);
            continue;
        }
        /* advance */
        for (int i = 0; i < s->o.n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r || sl->chunk == 0) continue;
            if (sl->r->kind == REQ_EMBED) {
                float *acc = sl->r->emb + sl->input * (size_t)E;
                for (int k = 0; k < sl->chunk; k++) {
                    const float *h = s->hidden + (size_t)(sl->emb_row + k) * E;
                    for (int d = 0; d < E; d++) acc[d] += h[d];
                }
                sl->n_past += sl->chunk;
                if (sl->n_past == sl->n_toks) {
                    embed_done(s, i);
                    slot_finish(s, i, ENG_FINISH_STOP, KN_OK, NULL, false);
                }
                continue;
            }
            if (sl->logit_row < 0) { /* a prefill chunk short of the prompt's end */
                sl->n_past += sl->chunk;
                continue;
            }
            /* the last known token and any drafts behind it were fed: verify */
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
            if (done) continue;
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
    }
    return NULL;
}

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
    finish_req(r, f, st, msg, false);
    req_unref(r);
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
static void *encoder_main(void *arg) {
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
                abs_deadline(&dl, 500);
                pthread_cond_timedwait(&s->cv, &s->mu, &dl);
                continue;
            }
            /* the head waited longest: the batch closes batch_wait_ms after its arrival */
            double left_ms = (double)s->o.batch_wait_ms - (now - s->q_head->res.t_submit) * 1e3;
            if (left_ms <= 0 || enc_waiting_tokens_locked(s, (size_t)s->o.max_batch) >= (size_t)s->o.max_batch) break;
            struct timespec dl;
            abs_deadline(&dl, (int)ceil(left_ms));
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

/* ---- scheduler ------------------------------------------------------------ */

/* The encoder engine's state: no KV, no drafts, no logits; a forward
 * scratch for the token budget or one whole input, whichever is larger. */
static kn_status encoder_init(eng_sched *s, const tensor_ops *ops, kn_pool *pool, kn_err *err) {
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

kn_status eng_sched_create(const model *m, const tok_vocab *v, const tensor_ops *ops, kn_pool *pool,
                           const eng_sched_opts *o, eng_sched **out, kn_err *err) {
    *out = NULL;
    if (o->n_slots < 1 || o->n_slots > ENG_MAX_SLOTS)
        return kn_fail(err, KN_EINVAL, "slots %d out of range [1, %d]", o->n_slots, ENG_MAX_SLOTS);
    if (o->n_ctx < 2) return kn_fail(err, KN_EINVAL, "context %d too small", o->n_ctx);
    eng_sched *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    s->m = m;
    s->v = v;
    s->o = *o;
    if (s->o.max_batch < s->o.n_slots) s->o.max_batch = s->o.n_slots;
    if (s->o.queue_len < 0) s->o.queue_len = 0;
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);
    if (s->o.spec_max > ENG_SPEC_MAX) s->o.spec_max = ENG_SPEC_MAX;
    if (s->o.spec_max < 0) s->o.spec_max = 0;
    if (s->o.spec == ENG_SPEC_DEFAULT) s->o.spec = ENG_SPEC_NONE;
    kn_status st;
    if (model_is_encoder(m)) {
        if ((st = encoder_init(s, ops, pool, err)) != KN_OK) goto fail;
        goto start;
    }
    kv_geom g;
    if ((st = model_kv_geom(m, s->o.kv_type, &g, err)) != KN_OK) goto fail;
    kv_opts ko = {.n_seq = s->o.n_slots, .n_ctx = s->o.n_ctx, .block_size = s->o.block_size ? s->o.block_size : 32,
                  .n_blocks = s->o.kv_blocks, .prefix_cache = !s->o.no_prefix_cache, .salt = s->o.salt,
                  .test_const_hash = s->o.test_const_hash};
    if (ko.n_blocks == 0) {
        uint64_t block = 2ull * (uint64_t)g.n_layer * (uint64_t)g.n_head_kv * (uint64_t)ko.block_size * g.row_bytes;
        int64_t total = kv_pool_blocks(s->o.n_slots, s->o.n_ctx, ko.block_size, block, s->o.cache_bytes);
        ko.n_blocks = total > (1 << 28) ? (1 << 28) : (int)total;
    }
    if ((st = kv_cache_create(&g, &ko, &s->kv, err)) != KN_OK) goto fail;
    if ((st = model_ctx_create(m, ops, pool, s->o.max_batch, &s->ctx, err)) != KN_OK) goto fail;
    if (s->o.draft) {
        if (s->o.draft->hp.n_vocab != m->hp.n_vocab) {
            st = kn_fail(err, KN_EINVAL, "the draft model has %d tokens in its vocabulary, the model %d",
                         s->o.draft->hp.n_vocab, m->hp.n_vocab);
            goto fail;
        }
        if ((st = model_kv_create(s->o.draft, s->o.n_slots, s->o.n_ctx, MODEL_KV_F16, &s->dkv, err)) != KN_OK ||
            (st = model_ctx_create(s->o.draft, ops, pool, s->o.max_batch, &s->dctx, err)) != KN_OK)
            goto fail;
        if (!(s->dlogits = malloc((size_t)s->o.n_slots * (size_t)m->hp.n_vocab * sizeof *s->dlogits))) {
            st = kn_fail(err, KN_ENOMEM, "out of memory");
            goto fail;
        }
    }
    st = KN_ENOMEM;
    int B = s->o.max_batch;
    s->slots = calloc((size_t)s->o.n_slots, sizeof *s->slots);
    s->b_tok = malloc((size_t)B * sizeof *s->b_tok);
    s->b_pos = malloc((size_t)B * sizeof *s->b_pos);
    s->b_seq = malloc((size_t)B * sizeof *s->b_seq);
    s->b_flags = malloc((size_t)B);
    s->logits = malloc((size_t)s->o.n_slots * (size_t)(1 + s->o.spec_max) * (size_t)m->hp.n_vocab * sizeof *s->logits);
    s->ord = malloc((size_t)s->o.n_slots * sizeof *s->ord);
    s->hidden = malloc((size_t)B * (size_t)m->hp.n_embd * sizeof *s->hidden);
    if (!s->ord || !s->slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_flags || !s->logits || !s->hidden) {
        kn_fail(err, KN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < s->o.n_slots; i++) s->slots[i].logit_row = -1;
    size_t max_piece = 0;
    for (int32_t id = 0; id < tok_n_vocab(v); id++) {
        size_t len = 0;
        tok_token_piece(v, id, false, &len);
        if (len > max_piece) max_piece = len;
    }
    s->need_room = max_piece + 8 + ENG_STOP_MAX_LEN + 8; /* a piece, a pending UTF-8 char, a held-back stop prefix */
    s->ring_cap = 4 * s->need_room < 16384 ? 16384 : 4 * s->need_room;
start:
    if (pthread_create(&s->thread, NULL, s->encoder ? encoder_main : engine_main, s) != 0) {
        st = kn_fail(err, KN_ENOMEM, "cannot start the engine thread");
        goto fail;
    }
    s->thread_started = true;
    *out = s;
    return KN_OK;
fail:
    eng_sched_destroy(s);
    return st;
}

void eng_sched_destroy(eng_sched *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    /* whatever is left finishes as cancelled */
    if (s->slots)
        for (int i = 0; i < s->o.n_slots; i++)
            if (s->slots[i].r)
                slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, "the server is shutting down", false);
    while (s->q_head) {
        eng_req *r = s->q_head;
        s->q_head = r->next;
        r->queued = false;
        finish_req(r, ENG_FINISH_CANCELLED, KN_ECANCELLED, "the server is shutting down", false);
        req_unref(r);
    }
    model_ctx_destroy(s->ctx);
    kv_cache_destroy(s->kv);
    model_ctx_destroy(s->dctx);
    kv_cache_destroy(s->dkv);
    free(s->dlogits);
    free(s->ord);
    free(s->slots);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_flags);
    free(s->logits);
    free(s->hidden);
    free(s->enc_toks);
    free(s->enc_lens);
    free(s->enc_req);
    free(s->enc_idx);
    free(s->enc_out);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

kn_status eng_sched_submit(eng_sched *s, eng_req *r, kn_err *err) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return kn_fail(err, KN_ECANCELLED, "the server is shutting down");
    }
    int free_slots = 0;
    for (int i = 0; i < s->o.n_slots; i++) free_slots += s->slots[i].r == NULL;
    /* a request that can start at once does not count against the queue;
     * an encoder has no slots: as many requests as it has slots and queue may wait */
    bool full = s->encoder ? s->q_len >= s->o.queue_len + s->o.n_slots
                           : s->q_len >= s->o.queue_len && !(s->q_len == 0 && free_slots > 0);
    if (full) {
        int ql = s->q_len;
        pthread_mutex_unlock(&s->mu);
        return kn_fail(err, KN_EBUSY, "the server is overloaded: %d requests are already waiting (queue limit %d)", ql,
                       s->o.queue_len);
    }
    atomic_fetch_add(&r->refs, 1);
    r->res.t_submit = kn_now_s();
    r->next = NULL;
    r->queued = true;
    if (s->q_tail) s->q_tail->next = r;
    else s->q_head = r;
    s->q_tail = r;
    s->q_len++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return KN_OK;
}

void eng_sched_cancel_all(eng_sched *s) {
    pthread_mutex_lock(&s->mu);
    for (eng_req *r = s->q_head; r; r = r->next) atomic_store(&r->cancel, true);
    for (int i = 0; i < s->o.n_slots; i++)
        if (s->slots[i].r) atomic_store(&s->slots[i].r->cancel, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void eng_sched_stats_get(eng_sched *s, eng_sched_stats *st) {
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&s->mu);
    st->slots_total = s->o.n_slots;
    for (int i = 0; i < s->o.n_slots; i++) {
        eng_req *r = s->slots[i].r;
        if (!r) continue;
        st->slots_busy++;
        bool first = true;
        for (int j = 0; j < i; j++)
            if (s->slots[j].r == r) first = false;
        st->running += first;
    }
    st->waiting = s->q_len;
    pthread_mutex_unlock(&s->mu);
    st->n_ctx = s->o.n_ctx;
    if (!s->kv) return; /* an encoder keeps no KV */
    st->kv_bytes = kv_bytes(s->kv);
    st->block_bytes = kv_block_bytes(s->kv);
    st->block_tokens = kv_block_size(s->kv);
    kv_stats_get(s->kv, &st->kv);
}

void eng_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, int n_top, eng_tok_event *ev) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - mx));
    float lse = mx + (float)log(sum);
    ev->token = chosen;
    ev->logprob = logits[chosen] - lse;
    if (n_top > ENG_MAX_LOGPROBS) n_top = ENG_MAX_LOGPROBS;
    if (n_top > n_vocab) n_top = n_vocab;
    int k = 0;
    for (int32_t i = 0; i < n_vocab && n_top > 0; i++) {
        float l = logits[i];
        if (k == n_top && l <= logits[ev->top_id[k - 1]]) continue;
        int p = k < n_top ? k++ : k - 1;
        while (p > 0 && logits[ev->top_id[p - 1]] < l) {
            ev->top_id[p] = ev->top_id[p - 1];
            p--;
        }
        ev->top_id[p] = i;
    }
    ev->n_top = k;
    for (int i = 0; i < k; i++) ev->top_lp[i] = logits[ev->top_id[i]] - lse;
}
