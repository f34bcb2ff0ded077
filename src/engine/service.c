/*
 * service.c — the generation service (see kiln/engine.h): the model registry
 * with a scheduler attached to every loaded instance, the engine's metric
 * families, and what the server asks of models besides generation
 * (tokens, loading, status).
 */
#include "service_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <xxhash.h>

bool eng_fail(eng_error *e, eng_err_kind kind, const char *param, const char *code, const char *fmt, ...) {
    if (!e) return false;
    e->kind = kind;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

int eng_efd_new(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void eng_efd_signal(int fd) {
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already non-zero, the reader will wake */
}

void eng_efd_drain(int fd) {
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

const char *eng_cache_use_name(eng_cache_use u) {
    switch (u) {
    case ENG_CACHE_MISS: return "miss";
    case ENG_CACHE_HIT: return "hit";
    default: return "bypass";
    }
}

/* ---- the scheduler of each instance (rt_hooks) ------------------------------ */

static kn_status attach(void *arg, const rt_opts *o, rt_model *m, kn_err *err) {
    eng_service *s = arg;
    eng_sched_opts so = {.n_slots = o->n_slots, .n_ctx = m->n_ctx, .max_batch = o->max_batch,
                         .queue_len = o->queue_len, .queue_timeout_s = o->queue_timeout_s,
                         .kv_type = (model_kv_type)o->kv_type, .batch_wait_ms = o->batch_wait_ms,
                         .block_size = o->block_size, .kv_blocks = o->kv_blocks,
                         .cache_bytes = m->kv_cache_bytes, .salt = XXH3_64bits(m->path, strlen(m->path)),
                         .spec = (eng_spec_mode)o->spec, .spec_max = o->spec_max, .draft = m->draft};
    const eng_families *f = &s->fam;
    if (f->ttft) {
        const char *lv[1] = {m->id};
        so.metrics = (eng_metrics){.ttft = met_get(f->ttft, lv), .itl = met_get(f->itl, lv),
                                   .queue_wait = met_get(f->queue_wait, lv), .prefill = met_get(f->prefill, lv),
                                   .batch_size = met_get(f->batch_size, lv),
                                   .prompt_tokens = met_get(f->prompt_tokens, lv),
                                   .gen_tokens = met_get(f->gen_tokens, lv),
                                   .prefix_queried = met_get(f->prefix_queried, lv),
                                   .prefix_hit = met_get(f->prefix_hit, lv),
                                   .spec_draft = met_get(f->spec_draft, lv),
                                   .spec_accepted = met_get(f->spec_accepted, lv),
                                   .preemptions = met_get(f->preemptions, lv), .ttft_window = s->ttft_window,
                                   .embed_batch_requests = met_get(f->embed_batch_requests, lv),
                                   .embed_batch_tokens = met_get(f->embed_batch_tokens, lv)};
    }
    eng_sched *sched = NULL;
    kn_status st = eng_sched_create(m->m, m->front->vocab, s->ops, m->pool, &so, &sched, err);
    if (st == KN_OK) m->engine = sched;
    return st;
}

static void detach(void *arg, rt_model *m) {
    (void)arg;
    eng_sched_destroy(m->engine);
    m->engine = NULL;
}

static void cancel(void *arg, rt_model *m) {
    (void)arg;
    if (m->engine) eng_sched_cancel_all(m->engine);
}

/* ---- metrics ------------------------------------------------------------------ */

static bool families_create(eng_families *f, met_registry *r) {
    const char *model[] = {"model"};
    const double *lat = MET_BUCKETS_LATENCY_S, *itl = MET_BUCKETS_ITL_S;
    int nlat = MET_COUNT(MET_BUCKETS_LATENCY_S), nitl = MET_COUNT(MET_BUCKETS_ITL_S);
    f->ttft = met_histogram(r, "kiln_time_to_first_token_seconds", "Request arrival to the first generated token", 1,
                            model, lat, nlat);
    f->itl = met_histogram(r, "kiln_inter_token_latency_seconds", "Time between consecutive tokens of a sequence", 1,
                           model, itl, nitl);
    f->queue_wait = met_histogram(r, "kiln_queue_wait_seconds", "Submission to a free slot", 1, model, lat, nlat);
    f->prefill = met_histogram(r, "kiln_prefill_seconds", "A slot to the first token (prompt processing)", 1, model,
                               lat, nlat);
    f->batch_size = met_histogram(r, "kiln_batch_size", "Sequences per forward step", 1, model, MET_BUCKETS_BATCH,
                                  MET_COUNT(MET_BUCKETS_BATCH));
    f->prompt_tokens = met_counter(r, "kiln_prompt_tokens_total", "Prompt tokens processed", 1, model);
    f->gen_tokens = met_counter(r, "kiln_generated_tokens_total", "Tokens generated", 1, model);
    f->prefix_queried = met_counter(r, "kiln_prefix_cache_queried_tokens_total",
                                    "Prompt tokens looked up in the KV cache", 1, model);
    f->prefix_hit = met_counter(r, "kiln_prefix_cache_hit_tokens_total",
                                "Prompt tokens whose KV was reused instead of computed", 1, model);
    f->spec_draft = met_counter(r, "kiln_spec_draft_tokens_total", "Draft tokens proposed for verification", 1, model);
    f->spec_accepted = met_counter(r, "kiln_spec_accepted_tokens_total", "Draft tokens accepted", 1, model);
    f->preemptions = met_counter(r, "kiln_preemptions_total",
                                 "Sequences preempted when KV blocks ran out (recomputed later)", 1, model);
    static const double EMB_TOKENS[] = {16, 64, 256, 512, 1024, 2048, 4096, 8192};
    f->embed_batch_requests = met_histogram(r, "kiln_embedding_batch_requests",
                                            "Embedding requests per encoder forward pass (micro-batching)", 1, model,
                                            MET_BUCKETS_BATCH, MET_COUNT(MET_BUCKETS_BATCH));
    f->embed_batch_tokens = met_histogram(r, "kiln_embedding_batch_tokens", "Tokens per encoder forward pass", 1,
                                          model, EMB_TOKENS, MET_COUNT(EMB_TOKENS));
    return f->ttft && f->itl && f->queue_wait && f->prefill && f->batch_size && f->prompt_tokens && f->gen_tokens &&
           f->prefix_queried && f->prefix_hit && f->spec_draft && f->spec_accepted && f->preemptions &&
           f->embed_batch_requests && f->embed_batch_tokens;
}

/* ---- the service ------------------------------------------------------------------ */

kn_status eng_service_create(const eng_service_opts *o, eng_service **out, kn_err *err) {
    *out = NULL;
    eng_service *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    s->o = *o;
    s->ops = o->ops;
    s->cache = o->cache;
    atomic_init(&s->seq, 0);
    s->ttft_window = met_window_create(o->ttft_window_s > 0 ? o->ttft_window_s : 300, 1 << 16);
    if (!s->ttft_window || (o->metrics && !families_create(&s->fam, o->metrics))) {
        eng_service_destroy(s);
        return kn_fail(err, KN_ENOMEM, "cannot set up the engine's metrics");
    }
    s->key.kv_type = model_kv_type_name((model_kv_type)o->rt.kv_type);
    s->key.ops_level = (int)o->ops->level;
    s->key.ops_vnni = o->ops->vnni;
    s->key.draft = o->rt.draft_path ? o->rt.draft_path : "";
    rt_opts ro = o->rt;
    ro.metrics = o->metrics;
    ro.hooks = (rt_hooks){.arg = s, .attach = attach, .detach = detach, .cancel = cancel};
    kn_status st = rt_registry_create(o->models_dir, o->model_file, &ro, o->ops, &s->reg, err);
    if (st != KN_OK) {
        eng_service_destroy(s);
        return st;
    }
    s->default_model = o->default_model;
    if (!s->default_model && o->model_file && rt_registry_count(s->reg) == 1) {
        rt_entry_info in;
        rt_registry_entry(s->reg, 0, &in);
        s->default_model = in.id;
    }
    *out = s;
    return KN_OK;
}

void eng_service_destroy(eng_service *s) {
    if (!s) return;
    rt_registry_destroy(s->reg);
    met_window_destroy(s->ttft_window);
    free(s);
}

rt_registry *eng_service_registry(eng_service *s) { return s->reg; }
const char *eng_service_default_model(const eng_service *s) { return s->default_model; }
met_window *eng_service_ttft_window(eng_service *s) { return s->ttft_window; }

const char *eng_model_name(const eng_service *s, const char *model, eng_error *e) {
    if (model && *model) return model;
    if (s->default_model) return s->default_model;
    char names[400];
    rt_registry_names(s->reg, names, sizeof names);
    eng_fail(e, ENG_ERR_REQUEST, "model", "missing_field", "'model' is required; available: %s", names);
    return NULL;
}

bool eng_model_error(kn_status st, const char *name, const kn_err *err, eng_error *e) {
    switch (st) {
    case KN_ENOTFOUND: return eng_fail(e, ENG_ERR_NOT_FOUND, "model", "model_not_found", "%s", err->msg);
    case KN_EBUSY: return eng_fail(e, ENG_ERR_BUSY, "model", "insufficient_memory", "%s", err->msg);
    case KN_ERANGE: return eng_fail(e, ENG_ERR_REQUEST, "model", "context_too_large", "%s", err->msg);
    case KN_EUNSUPPORTED:
        return eng_fail(e, ENG_ERR_REQUEST, "model", "model_unsupported", "cannot serve model '%.128s': %s", name,
                        err->msg);
    default:
        return eng_fail(e, ENG_ERR_INTERNAL, "model", "model_load_failed", "cannot load model '%.128s': %s", name,
                        err->msg);
    }
}

bool eng_front_get(eng_service *s, const char *model, const rt_front **f, eng_error *e) {
    const char *name = eng_model_name(s, model, e);
    if (!name) return false;
    kn_err err = {0};
    kn_status st = rt_front_acquire(s->reg, name, f, &err);
    return st == KN_OK || eng_model_error(st, name, &err, e);
}

bool eng_model_get(eng_service *s, const char *model, const rt_acquire_opts *ao, rt_model **m, eng_error *e) {
    const char *name = eng_model_name(s, model, e);
    if (!name) return false;
    kn_err err = {0};
    kn_status st = rt_acquire(s->reg, name, ao, m, &err);
    return st == KN_OK || eng_model_error(st, name, &err, e);
}

bool eng_service_load(eng_service *s, const char *model, double keep_alive_s, const char **model_id, eng_error *e) {
    rt_acquire_opts ao = {.n_ctx = 0, .keep_alive_s = keep_alive_s, .touch = true};
    rt_model *m = NULL;
    if (!eng_model_get(s, model, &ao, &m, e)) return false;
    *model_id = m->id;
    rt_release(s->reg, m);
    return true;
}

/* ---- tokens --------------------------------------------------------------------- */

bool eng_service_tokenize(eng_service *s, const char *model, const char *text, size_t len, bool add_special,
                          int32_t **ids, size_t *n, eng_error *e) {
    const rt_front *f = NULL;
    if (!eng_front_get(s, model, &f, e)) return false;
    kn_err err = {0};
    kn_status st = tok_encode_alloc(f->vocab, text, len, add_special, true, ids, n, &err);
    rt_front_release(s->reg, f);
    return st == KN_OK || eng_fail(e, ENG_ERR_REQUEST, "content", NULL, "cannot tokenize: %s", err.msg);
}

bool eng_service_detokenize(eng_service *s, const char *model, const int64_t *ids, size_t n, const char *param,
                            char **text, size_t *len, eng_error *e) {
    const rt_front *f = NULL;
    if (!eng_front_get(s, model, &f, e)) return false;
    int32_t *t = malloc((n ? n : 1) * sizeof *t);
    bool ok = t != NULL || eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
    for (size_t i = 0; ok && i < n; i++) {
        if (ids[i] < 0 || ids[i] > INT32_MAX || !tok_valid(f->vocab, (int32_t)ids[i])) {
            ok = eng_fail(e, ENG_ERR_REQUEST, param, "invalid_value", "'%s[%zu]' is not a token id of this model",
                          param, i);
            break;
        }
        t[i] = (int32_t)ids[i];
    }
    if (ok) {
        kn_err err = {0};
        tok_decoder_opts o = {.special = false, .strip_space = true, .replace_invalid = false};
        if (tok_decode_all(f->vocab, t, n, &o, text, len, &err) != KN_OK)
            ok = eng_fail(e, ENG_ERR_REQUEST, param, NULL, "cannot detokenize: %s", err.msg);
    }
    free(t);
    rt_front_release(s->reg, f);
    return ok;
}

/* ---- status --------------------------------------------------------------------- */

typedef struct status_cb {
    void (*fn)(void *arg, const eng_model_status *st);
    void *arg;
} status_cb;

static void status_one(void *arg, const rt_loaded_info *li) {
    status_cb *cb = arg;
    eng_model_status st = {.li = li};
    if (li->m->engine) {
        eng_sched_stats ss;
        eng_sched_stats_get(li->m->engine, &ss);
        st.slots_total = ss.slots_total, st.slots_busy = ss.slots_busy, st.running = ss.running;
        st.waiting = ss.waiting, st.n_ctx = ss.n_ctx, st.kv_bytes = ss.kv_bytes;
        st.kv_blocks_total = ss.kv.blocks_total, st.kv_blocks_used = ss.kv.blocks_used;
        st.kv_blocks_cached = ss.kv.blocks_cached, st.kv_blocks_logical = ss.kv.blocks_logical;
        st.block_bytes = ss.block_bytes, st.block_tokens = ss.block_tokens;
    }
    cb->fn(cb->arg, &st);
}

void eng_service_foreach_loaded(eng_service *s, void (*fn)(void *arg, const eng_model_status *st), void *arg) {
    status_cb cb = {fn, arg};
    rt_foreach_loaded(s->reg, status_one, &cb);
}
