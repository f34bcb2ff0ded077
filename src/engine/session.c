/*
 * session.c — one generation from a dialect-free request to its events
 * (see kiln/engine.h): render and tokenize with the model's front, derive the
 * parameters and the cache key, answer from the cache before any load, or
 * acquire the model and submit; then hand out what the engine produces
 * (or the recorded chunks of a hit) and record a miss for the cache.
 *
 * Memory: the handle, its text and event buffers and its prompt live in
 * one arena sized when the request starts, so that the whole request is
 * freed by eng_gen_close in one call (the cache's record and a hit's value
 * are owned buffers freed there too). Nothing is allocated per token.
 */
#include "kiln/grammar.h"
#include "prep.h"
#include "service_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_CAP 8192 /* bytes of text one read hands out */
#define EV_BATCH 64   /* token events one read hands out (a record chunk holds at most this many) */

struct eng_gen {
    kn_arena arena;         /* holds this struct and the buffers below */
    eng_service *s;
    eng_gen_info info;
    const rt_front *front;  /* the vocabulary the prompt was tokenized with */
    bool own_front;         /* released at close (else it is the instance's) */
    rt_model *m;            /* a miss: the pinned instance */
    eng_req *r;             /* a miss: the engine request */
    int efd;                /* eventfd the engine's notify writes */
    atomic_bool armed;      /* a reader found nothing and waits on efd */
    eng_gen_params gp;      /* what the engine runs */
    int32_t n_key;          /* gp.n_predict before the context cut it */
    int ctx;                /* the context of the answer (a miss), or what a hit was checked against */
    const int32_t *ids;     /* the prompt tokens (arena, or ids_owned) */
    int32_t *ids_owned;     /* tokens made again with another front (malloc'd) */
    char *gbnf;             /* the grammar built for a JSON format or forced tool calls (malloc'd), or NULL */
    size_t n_ids;
    char *prompt;           /* the prompt text for echo (arena), or NULL */
    size_t prompt_len;
    bool prompt_tokens;     /* the prompt came as token ids (echo decodes them) */
    /* reading */
    char *text;             /* [TEXT_CAP] (arena) */
    size_t held, handed;    /* bytes kept for the next piece; bytes handed out by the last read */
    eng_tok_event *ev;      /* [EV_BATCH] (arena) */
    bool with_events;
    bool finished;          /* the last piece was handed out */
    eng_req_result res;
    /* the response cache */
    bool cacheable;
    rc_key key;
    uint64_t tag;
    void *hit_val;          /* a hit: the record (malloc'd by the cache) */
    eng_rec_view rv;
    bool recording;         /* a miss: recorded, stored once finished */
    eng_rec rec;
};

/* ---- helpers ------------------------------------------------------------------- */

/* The engine's notify (called with the request's lock held): a reader
 * that found nothing armed the eventfd; one that is busy reading does not
 * need a signal (it reads again before it waits). */
static void notify_gen(void *arg) {
    eng_gen *g = arg;
    if (atomic_exchange(&g->armed, false)) eng_efd_signal(g->efd);
}

/* What a preparation decides about the answer goes into the handle (the
 * grammar text moves into it). */
static void adopt(eng_gen *g, const eng_gen_request *q, eng_prep *p) {
    free(g->gbnf);
    g->gbnf = p->gbnf;
    p->gbnf = NULL;
    g->gp.grammar = g->gbnf ? g->gbnf : q->grammar;
    g->gp.markup = p->parse;
    g->info.parse = p->parse;
    g->info.syntax = p->syntax;
    g->info.tools = p->tools;
    g->info.reasoning = p->reasoning;
    g->info.in_reasoning = p->in_reasoning;
}

/* A new handle in an arena that also holds the prompt and the buffers. */
static eng_gen *gen_alloc(eng_service *s, const eng_gen_request *q, const int32_t *ids, size_t n_ids) {
    bool keep_text = q->echo && !q->messages && !q->prompt_tokens;
    size_t cap = sizeof(eng_gen) + TEXT_CAP + EV_BATCH * sizeof(eng_tok_event) + n_ids * sizeof(int32_t) +
                 (keep_text ? q->prompt_len + 1 : 0) + 6 * 64;
    kn_arena a;
    if (kn_arena_init(&a, cap) != KN_OK) return NULL;
    eng_gen *g = kn_arena_alloc(&a, sizeof *g);
    g->arena = a;
    g->s = s;
    g->efd = -1;
    g->text = kn_arena_alloc(&g->arena, TEXT_CAP);
    g->ev = kn_arena_alloc(&g->arena, EV_BATCH * sizeof *g->ev);
    int32_t *idc = kn_arena_alloc(&g->arena, n_ids * sizeof *idc);
    memcpy(idc, ids, n_ids * sizeof *idc);
    g->ids = idc;
    g->n_ids = n_ids;
    g->prompt_tokens = q->echo && q->prompt_tokens;
    if (keep_text) {
        g->prompt = kn_arena_alloc(&g->arena, q->prompt_len + 1);
        memcpy(g->prompt, q->prompt ? q->prompt : "", q->prompt_len);
        g->prompt_len = q->prompt_len;
    }
    return g;
}

/* The parameters the engine runs (n_predict before the context cut). */
static void build_params(eng_service *s, const eng_gen_request *q, eng_gen_params *gp) {
    const eng_service_opts *o = &s->o;
    int32_t n = q->n_predict_set ? q->n_predict : o->default_max_tokens;
    /* the server's cap also bounds a generation that asked for no limit */
    if (o->limit_max_tokens > 0 && (n < 0 || n > o->limit_max_tokens)) n = o->limit_max_tokens;
    *gp = (eng_gen_params){.sp = q->sp, .n_predict = n, .ignore_eos = q->ignore_eos, .stops = q->stops,
                           .n_stops = q->n_stops, .n_logprobs = q->n_logprobs, .t_origin = q->t_origin,
                           .spec = q->spec != ENG_SPEC_DEFAULT ? q->spec : (eng_spec_mode)o->rt.spec,
                           .spec_max = q->spec_max > 0 ? q->spec_max : o->rt.spec_max,
                           .stall_timeout_s = o->stall_timeout_s, .grammar = q->grammar};
    if (!q->seed_set) {
        unsigned long long seq = atomic_fetch_add(&s->seq, 1) + 1;
        gp->sp.seed = kn_now_ns() ^ (seq * 0x9E3779B97F4A7C15ull);
    }
}

static void key_of(eng_gen *g, const rt_front *f) {
    eng_key_ctx k = g->s->key;
    k.name = f->name;
    k.quant = f->quant;
    k.sha256 = f->sha256;
    g->gp.n_predict = g->n_key;
    g->key = eng_gen_key(&k, g->ids, g->n_ids, &g->gp);
    g->tag = rc_model_tag(f->id);
}

/* Whether a record may answer a request whose context is ctx (exact) or
 * at least ctx (!exact): see kiln/engine.h. */
static bool record_fits(const eng_rec_view *v, int ctx, bool exact) {
    if (v->ctx_limit) return exact && v->ctx_limit == (uint32_t)ctx;
    return (uint64_t)v->n_prompt + v->n_gen < (uint64_t)ctx;
}

/* Looks the key up; a well-formed record that fits becomes the answer. */
static bool lookup(eng_gen *g, int ctx, bool exact) {
    void *val = NULL;
    size_t len = 0;
    if (rc_lookup(g->s->cache, RC_RESPONSE, g->tag, g->key, &val, &len) == RC_TIER_NONE) return false;
    if (!eng_rec_parse(val, len, EV_BATCH, &g->rv)) {
        KN_WARN("%s: a cached answer is not a well-formed record; computing it again", g->front->id);
        free(val);
        return false;
    }
    if (!record_fits(&g->rv, ctx, exact)) {
        free(val);
        return false;
    }
    g->hit_val = val;
    g->ctx = ctx;
    g->info.cache = ENG_CACHE_HIT;
    return true;
}

/* Submits to the instance's scheduler (a miss). */
static bool submit(eng_gen *g, const eng_gen_request *q, eng_error *e) {
    rt_model *m = g->m;
    int ctx = m->n_ctx;
    if (q->num_ctx > 0 && q->num_ctx < ctx) ctx = q->num_ctx;
    g->ctx = ctx;
    if (g->n_ids >= (size_t)ctx)
        return eng_fail(e, ENG_ERR_REQUEST, q->prompt_param, "context_length_exceeded",
                        "the prompt has %zu tokens, but the context holds %d (prompt and generated tokens together); "
                        "shorten the prompt or raise the context size (-c)",
                        g->n_ids, ctx);
    g->gp.n_predict = g->n_key;
    if (ctx < m->n_ctx) {
        int32_t room = (int32_t)((size_t)ctx - g->n_ids);
        if (g->gp.n_predict < 0 || g->gp.n_predict > room) g->gp.n_predict = room;
    }
    kn_err err = {0};
    kn_status st = eng_req_create_gen(m->engine, g->ids, g->n_ids, &g->gp, &g->r, &err);
    if (st != KN_OK)
        return eng_fail(e, st == KN_ENOMEM ? ENG_ERR_INTERNAL : ENG_ERR_REQUEST, NULL, NULL, "%s", err.msg);
    eng_req_set_notify(g->r, notify_gen, g);
    if ((st = eng_sched_submit(m->engine, g->r, &err)) != KN_OK)
        return eng_fail(e, ENG_ERR_BUSY, NULL, st == KN_EBUSY ? "overloaded" : "shutting_down", "%s", err.msg);
    return true;
}

/* Acquires the instance; when its front is not the one the prompt was
 * tokenized with (the file changed), the prompt and key are made again. */
static bool acquire(eng_gen *g, const eng_gen_request *q, eng_error *e) {
    rt_acquire_opts ao = {.n_ctx = q->num_ctx, .keep_alive_s = q->keep_alive_s, .touch = true};
    if (!g->m && !eng_model_get(g->s, g->front->id, &ao, &g->m, e)) return false;
    if (g->m->front != g->front) {
        /* the instance serves a file that changed on disk since: its own vocabulary and digest apply */
        eng_prep p;
        if (!eng_prep_request(q, g->m->front, &p, e)) return false;
        adopt(g, q, &p);
        g->ids_owned = p.ids;
        g->ids = p.ids;
        g->n_ids = g->info.n_prompt = p.n_ids;
        if (g->own_front) rt_front_release(g->s->reg, g->front);
        g->front = g->m->front;
        g->own_front = false;
        if (g->cacheable) key_of(g, g->front);
    }
    /* a file that changed after the front was read has no digest: not cached */
    if (g->cacheable && (!g->m->sha256[0] || strcmp(g->m->sha256, g->front->sha256))) g->cacheable = false;
    return true;
}

/* ---- start ----------------------------------------------------------------------- */

/* A grammar is checked before anything is loaded or looked up: a
 * malformed one is the client's error, with gram's line:column. (The
 * scheduler compiles it again for the request it creates.) */
static bool check_grammar(const char *text, eng_error *e) {
    if (!text || !text[0]) return true;
    gram *g = NULL;
    kn_err err = {0};
    kn_status st = gram_compile(text, strlen(text), NULL, &g, &err);
    gram_destroy(g);
    if (st == KN_OK) return true;
    if (st == KN_ENOMEM) return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
    return eng_fail(e, ENG_ERR_REQUEST, "grammar", "invalid_grammar", "%s", err.msg);
}

bool eng_gen_start(eng_service *s, const eng_gen_request *q, eng_gen **out, eng_error *e) {
    *out = NULL;
    double t0 = kn_now_s();
    if (!check_grammar(q->grammar, e)) return false;
    const rt_front *f = NULL;
    if (!eng_front_get(s, q->model, &f, e)) return false;
    if (f->encoder) {
        rt_front_release(s->reg, f);
        return eng_fail(e, ENG_ERR_REQUEST, "model", "embedding_model",
                        "model %s:%s is an embedding model; it computes embeddings, not text", f->name, f->quant);
    }
    eng_prep p;
    if (!eng_prep_request(q, f, &p, e)) {
        rt_front_release(s->reg, f);
        return false;
    }
    size_t n_ids = p.n_ids;
    eng_gen *g = gen_alloc(s, q, p.ids, n_ids);
    if (!g || (g->efd = eng_efd_new()) < 0) {
        if (g) eng_gen_close(g);
        eng_prep_free(&p);
        rt_front_release(s->reg, f);
        return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory (or descriptors)");
    }
    g->front = f;
    g->own_front = true;
    g->info.model_id = f->id;
    g->info.n_prompt = n_ids;
    g->with_events = q->n_logprobs >= 0;
    build_params(s, q, &g->gp);
    adopt(g, q, &p);
    eng_prep_free(&p);
    g->n_key = g->gp.n_predict;
    g->cacheable = rc_enabled(s->cache, RC_RESPONSE) && q->cache && f->sha256[0] &&
                   (q->sp.temp <= 0.0f || q->seed_set);
    if (g->cacheable) {
        key_of(g, f);
        /* the context this request would get: exact when it names one or the
         * model is loaded (that instance answers), else a lower bound */
        rt_acquire_opts ao = {.n_ctx = q->num_ctx, .keep_alive_s = q->keep_alive_s, .touch = true,
                              .loaded_only = true};
        if (q->num_ctx == 0) {
            kn_err err = {0};
            if (rt_acquire(s->reg, f->id, &ao, &g->m, &err) != KN_OK) g->m = NULL;
        }
        int ctx = q->num_ctx > 0 ? q->num_ctx : g->m ? g->m->n_ctx : f->ctx_min;
        if (lookup(g, ctx, q->num_ctx > 0 || g->m)) {
            eng_efd_signal(g->efd); /* a hit never waits */
            *out = g;
            return true;
        }
    }
    if (!acquire(g, q, e) || !submit(g, q, e)) {
        eng_gen_close(g);
        return false;
    }
    g->info.load_s = kn_now_s() - t0;
    if (g->cacheable) {
        g->info.cache = ENG_CACHE_MISS;
        g->recording = true;
        g->rec.with_events = g->with_events;
    }
    *out = g;
    return true;
}

/* ---- reading --------------------------------------------------------------------- */

/* A finished miss goes to the cache with the context that cut it, if one did. */
static void store(eng_gen *g) {
    g->recording = false;
    const eng_req_result *res = &g->res;
    if (res->finish != ENG_FINISH_STOP && res->finish != ENG_FINISH_LENGTH) return;
    bool cut = res->finish == ENG_FINISH_LENGTH &&
               (res->n_prompt + res->n_gen >= (size_t)g->ctx || (g->n_key >= 0 && g->gp.n_predict < g->n_key) ||
                g->n_key < 0);
    g->rec.ctx_limit = cut ? (uint32_t)g->ctx : 0;
    size_t len = 0;
    void *v = eng_rec_finish(&g->rec, res, &len);
    if (v) rc_store(g->s->cache, RC_RESPONSE, g->tag, g->key, v, len);
    free(v);
}

static eng_read_status replay(eng_gen *g, const char **text, size_t *len, const eng_tok_event **ev, size_t *n_ev) {
    size_t n = 0, nev = 0;
    const char *t = NULL;
    if (eng_rec_next(&g->rv, &t, &n, g->ev, &nev)) {
        *text = t, *len = n, *ev = g->ev, *n_ev = g->with_events ? nev : 0;
        return ENG_READ_DATA;
    }
    double now = kn_now_s();
    g->res = (eng_req_result){.finish = (eng_finish)g->rv.finish, .stop_index = g->rv.stop_index, .status = KN_OK, .n_prompt = g->rv.n_prompt,
                              .n_gen = g->rv.n_gen, .t_submit = now, .t_start = now, .t_first = now, .t_end = now};
    g->finished = true;
    return ENG_READ_DONE;
}

eng_read_status eng_gen_read(eng_gen *g, const char **text, size_t *len, const eng_tok_event **ev, size_t *n_ev,
                             eng_req_result *res) {
    *text = "", *len = 0, *ev = g->ev, *n_ev = 0;
    eng_read_status rs;
    if (g->hit_val) {
        rs = g->finished ? ENG_READ_DONE : replay(g, text, len, ev, n_ev);
        if (rs == ENG_READ_DONE && res) *res = g->res;
        return rs;
    }
    if (g->finished) {
        if (res) *res = g->res;
        return ENG_READ_DONE;
    }
    /* the tail held back by the last read comes first */
    memmove(g->text, g->text + g->handed, g->held);
    g->handed = 0;
    size_t nev = 0, ready = 0;
    bool done = false;
    for (int pass = 0;; pass++) {
        size_t tl = 0;
        done = eng_req_read(g->r, 0, g->text + g->held, TEXT_CAP - g->held, &tl, g->with_events ? g->ev : NULL,
                            EV_BATCH, &nev, &g->res);
        g->held += tl;
        ready = done ? g->held : kn_utf8_complete(g->text, g->held);
        if (ready || nev || done) {
            if (pass) atomic_store(&g->armed, false);
            break;
        }
        if (pass) return ENG_READ_NONE; /* armed: the engine's next output signals the eventfd */
        /* nothing yet: clear the eventfd, ask the engine to signal it, and
         * look once more (output that came in between is not lost) */
        eng_efd_drain(g->efd);
        atomic_store(&g->armed, true);
    }
    g->held -= ready;
    g->handed = ready;
    if (done) {
        g->finished = true;
        if (g->recording) {
            eng_rec_chunk(&g->rec, g->text, ready, g->ev, nev);
            store(g);
        }
        if (!ready && !nev) {
            if (res) *res = g->res;
            return ENG_READ_DONE;
        }
    } else if (g->recording) {
        eng_rec_chunk(&g->rec, g->text, ready, g->ev, nev);
    }
    *text = g->text, *len = ready, *ev = g->ev, *n_ev = nev;
    return ENG_READ_DATA;
}

int eng_gen_fd(const eng_gen *g) { return g->efd; }

void eng_gen_wait(eng_gen *g, int timeout_ms) {
    if (g->hit_val || g->finished) return;
    struct pollfd p = {.fd = g->efd, .events = POLLIN};
    poll(&p, 1, timeout_ms);
}

void eng_gen_cancel(eng_gen *g) {
    g->recording = false;
    if (g->r) eng_req_cancel(g->r);
}

void eng_gen_close(eng_gen *g) {
    if (!g) return;
    eng_req_release(g->r); /* clears the notify first: the eventfd may close below */
    if (g->m) rt_release(g->s->reg, g->m);
    if (g->own_front) rt_front_release(g->s->reg, g->front);
    if (g->efd >= 0) close(g->efd);
    free(g->hit_val);
    free(g->ids_owned);
    free(g->gbnf);
    eng_rec_free(&g->rec);
    kn_arena a = g->arena; /* g lives in it */
    kn_arena_free(&a);
}

const eng_gen_info *eng_gen_get_info(const eng_gen *g) { return &g->info; }

bool eng_service_count_tokens(eng_service *s, const eng_gen_request *q, size_t *n, eng_error *e) {
    *n = 0;
    if (!check_grammar(q->grammar, e)) return false;
    const rt_front *f = NULL;
    if (!eng_front_get(s, q->model, &f, e)) return false;
    bool ok = false;
    eng_prep p;
    if (f->encoder)
        eng_fail(e, ENG_ERR_REQUEST, "model", "embedding_model", "model %s:%s is an embedding model", f->name, f->quant);
    else if ((ok = eng_prep_request(q, f, &p, e))) {
        *n = p.n_ids;
        eng_prep_free(&p);
    }
    rt_front_release(s->reg, f);
    return ok;
}

const char *eng_gen_token_piece(const eng_gen *g, int32_t id, size_t *len) {
    return tok_token_piece(g->front->vocab, id, true, len);
}

char *eng_gen_prompt_text(const eng_gen *g, size_t *len) {
    *len = 0;
    if (g->prompt) {
        char *t = malloc(g->prompt_len + 1);
        if (!t) return NULL;
        memcpy(t, g->prompt, g->prompt_len + 1);
        *len = g->prompt_len;
        return t;
    }
    if (!g->prompt_tokens) return NULL;
    char *t = NULL;
    kn_err err = {0};
    tok_decoder_opts o = {.special = true, .strip_space = false, .replace_invalid = true};
    if (tok_decode_all(g->front->vocab, g->ids, g->n_ids, &o, &t, len, &err) != KN_OK) *len = 0;
    return t;
}
