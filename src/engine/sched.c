/*
 * sched.c — requests, their output rings, and the scheduler's lifecycle
 * (see scheduler.h; the engine threads are in sched_step.c and
 * sched_encoder.c, drafting in sched_spec.c).
 */
#include "kiln/engine.h"
#include "kiln/chat.h"
#include "sched_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    gram_state_destroy(r->gstate);
    gram_destroy(r->gram);
    free(r->gmask);
    free(r->glogits);
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

void eng_req_unref(eng_req *r) {
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

/* The model's vocabulary as byte strings for the grammar module: a token's
 * detokenized bytes (byte-level BPE and <0xNN> pieces mapped back to raw
 * bytes); end-of-generation tokens are EOG; control, unknown and unused
 * tokens, empty pieces and ids past the tokenizer's vocabulary never match
 * text. */
static kn_status build_gram_vocab(const eng_sched *s, bool markup, gram_vocab **out, kn_err *err) {
    int32_t nv = s->m->hp.n_vocab, ntok = tok_n_vocab(s->v);
    gram_token *toks = calloc((size_t)nv, sizeof *toks);
    if (!toks) return kn_fail(err, KN_ENOMEM, "out of memory");
    for (int32_t id = 0; id < nv; id++) {
        toks[id].kind = GRAM_TOK_CONTROL;
        if (id >= ntok) continue;
        if (tok_is_eog(s->v, id)) {
            toks[id].kind = GRAM_TOK_EOG;
            continue;
        }
        bool marker = markup && eng_sched_is_marker(s, id);
        if (!marker && (tok_is_control(s->v, id) || tok_token_type(s->v, id) == TOK_TYPE_UNUSED)) continue;
        size_t len = 0;
        const char *piece = tok_token_piece(s->v, id, marker, &len);
        if (!piece || len == 0 || len > GRAM_MAX_TOKEN_BYTES) continue;
        toks[id] = (gram_token){.bytes = piece, .len = (uint32_t)len, .kind = GRAM_TOK_TEXT};
    }
    kn_status st = gram_vocab_create(toks, (size_t)nv, out, err);
    free(toks);
    return st;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The control tokens of every chat syntax's markup that this vocabulary
 * has (end-of-generation ones excluded: they end the answer). */
static void find_markers(eng_sched *s) {
    for (int sy = 0; sy < CHAT_SYNTAX_COUNT; sy++) {
        const char *const *mk = chat_syntax_markers((chat_syntax)sy);
        for (; mk && *mk; mk++) {
            int32_t id = tok_find(s->v, *mk, strlen(*mk));
            if (id == TOK_NULL || !tok_is_control(s->v, id) || tok_is_eog(s->v, id)) continue;
            bool dup = false;
            for (int k = 0; k < s->n_markers; k++) dup |= s->markers[k] == id;
            if (!dup && s->n_markers < (int)(sizeof s->markers / sizeof *s->markers)) s->markers[s->n_markers++] = id;
        }
    }
    qsort(s->markers, (size_t)s->n_markers, sizeof *s->markers, cmp_i32);
}

bool eng_sched_is_marker(const eng_sched *s, int32_t tok) {
    return s->n_markers && bsearch(&tok, s->markers, (size_t)s->n_markers, sizeof tok, cmp_i32);
}

/* The scheduler's grammar vocabulary, built by the first caller. */
static kn_status sched_gram_vocab(eng_sched *s, bool markup, const gram_vocab **out, kn_err *err) {
    kn_status st = KN_OK;
    gram_vocab **gv = markup && s->n_markers ? &s->gvocab_markup : &s->gvocab;
    pthread_mutex_lock(&s->gram_mu);
    if (!*gv) st = build_gram_vocab(s, gv == &s->gvocab_markup, gv, err);
    *out = *gv;
    pthread_mutex_unlock(&s->gram_mu);
    return st;
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
    r->markup = p->markup && s->n_markers > 0;
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
    if (p->grammar && p->grammar[0]) {
        if ((st = gram_compile(p->grammar, strlen(p->grammar), NULL, &r->gram, err)) != KN_OK) goto fail;
        if ((st = gram_state_create(r->gram, &r->gstate, err)) != KN_OK) goto fail;
        if ((st = sched_gram_vocab(s, p->markup, &r->gvocab, err)) != KN_OK) goto fail;
        st = KN_ENOMEM;
        r->gmask = malloc((size_t)nv);
        r->glogits = malloc((size_t)nv * sizeof *r->glogits);
        if (!r->gmask || !r->glogits) goto fail;
    }
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

void eng_req_set_notify(eng_req *r, void (*fn)(void *arg), void *arg) {
    pthread_mutex_lock(&r->mu);
    r->notify = fn;
    r->notify_arg = arg;
    if (fn && (r->ring_len || r->ev_len || r->finished)) fn(arg);
    pthread_mutex_unlock(&r->mu);
}

void eng_req_notify_locked(eng_req *r) {
    if (r->notify) r->notify(r->notify_arg);
}

void eng_req_release(eng_req *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->notify = NULL; /* the caller's notify target may go away with its reference */
    bool fin = r->finished;
    pthread_mutex_unlock(&r->mu);
    if (!fin) eng_req_cancel(r);
    eng_req_unref(r);
}

void eng_deadline(struct timespec *ts, int timeout_ms) {
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
    if (timeout_ms >= 0) eng_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->ring_len == 0 && r->ev_len == 0 && !r->finished) {
        if (timeout_ms == 0) break;
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

bool eng_req_has_room(eng_sched *s, eng_req *r) {
    pthread_mutex_lock(&r->mu);
    bool ok = r->ring_cap - r->ring_len >= s->need_room && (!r->ev || r->ev_len < EV_RING);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Feeds generated bytes through the stop filter into the ring; true when a
 * stop string completed. Caller holds r->mu. */
bool eng_req_emit_locked(eng_req *r, const char *bytes, size_t len) {
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
void eng_req_finish(eng_req *r, eng_finish f, kn_status st, const char *msg, bool flush) {
    pthread_mutex_lock(&r->mu);
    if (!r->finished) {
        if (flush && r->kind == REQ_GEN && r->dec) {
            const char *rest;
            size_t rlen;
            tok_decoder_flush(r->dec, &rest, &rlen);
            if (!eng_req_emit_locked(r, rest, rlen)) {
                eng_stop_flush(r->stop, &rest, &rlen);
                ring_push(r, rest, rlen);
            }
        }
        r->res.finish = f;
        r->res.stop_index = f == ENG_FINISH_STOP && r->stop ? eng_stop_matched(r->stop) : -1;
        r->res.status = st;
        if (msg) snprintf(r->res.err, sizeof r->res.err, "%s", msg);
        r->res.t_end = kn_now_s();
        r->finished = true;
        pthread_cond_broadcast(&r->cv);
        eng_req_notify_locked(r);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Frees a slot and its KV (full blocks stay in the prefix cache); the
 * request's engine reference goes when its last sequence leaves
 * (generation: at once; embedding: after all inputs). */

/* ---- scheduler ------------------------------------------------------------ */

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
    pthread_mutex_init(&s->gram_mu, NULL);
    cond_init_mono(&s->cv);
    find_markers(s);
    if (s->o.spec_max > ENG_SPEC_MAX) s->o.spec_max = ENG_SPEC_MAX;
    if (s->o.spec_max < 0) s->o.spec_max = 0;
    if (s->o.spec == ENG_SPEC_DEFAULT) s->o.spec = ENG_SPEC_NONE;
    kn_status st;
    if (model_is_encoder(m)) {
        if ((st = eng_encoder_init(s, ops, pool, err)) != KN_OK) goto fail;
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
    s->need_room = max_piece + 64 + 8 + ENG_STOP_MAX_LEN + 8; /* a piece (or a markup token's text), a pending UTF-8 char, a held-back stop prefix */
    s->ring_cap = 4 * s->need_room < 16384 ? 16384 : 4 * s->need_room;
start:
    if (pthread_create(&s->thread, NULL, s->encoder ? eng_encoder_main : eng_decoder_main, s) != 0) {
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
                eng_slot_finish(s, i, ENG_FINISH_CANCELLED, KN_ECANCELLED, "the server is shutting down", false);
    while (s->q_head) {
        eng_req *r = s->q_head;
        s->q_head = r->next;
        r->queued = false;
        eng_req_finish(r, ENG_FINISH_CANCELLED, KN_ECANCELLED, "the server is shutting down", false);
        eng_req_unref(r);
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
    gram_vocab_destroy(s->gvocab);
    gram_vocab_destroy(s->gvocab_markup);
    pthread_mutex_destroy(&s->gram_mu);
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
