/*
 * registry_load.c — instances: the context and memory of a new one, its
 * load (weights, threads, draft model, then the hooks' attach), eviction
 * under the memory budget, acquire/release with double-checked locking,
 * keep-alive and the cleanup thread (see kiln/runtime.h).
 */
#include "registry_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- memory ----------------------------------------------------------------- */

/* Bytes a load will take: weights, KV, forward scratch, engine buffers
 * (model_estimate_bytes), and the draft model when one is configured.
 * cache_bytes: KV pool room for cached prefixes beyond the slots' own. */
static uint64_t estimate(const rt_registry *r, const model_shape *s, int n_ctx, uint64_t cache_bytes) {
    const rt_opts *o = &r->o;
    model_mem_opts mo = {.n_ctx = n_ctx, .n_slots = o->n_slots, .max_batch = o->max_batch,
                         .kv_type = (model_kv_type)o->kv_type, .block_size = o->block_size,
                         .kv_blocks = o->kv_blocks, .cache_bytes = cache_bytes, .spec_max = o->spec_max};
    uint64_t bytes = model_estimate_bytes(s, &mo);
    if (!s->encoder && o->draft_path && o->spec_max > 0) {
        struct stat st;
        if (stat(o->draft_path, &st) == 0)
            bytes += (uint64_t)((double)st.st_size * 1.1 + (double)o->n_slots * n_ctx * 1024.0);
    }
    return bytes;
}

static uint64_t busy_bytes(const rt_registry *r) {
    uint64_t b = 0;
    for (inst *in = r->insts; in; in = in->next)
        if (in->state == INST_LOADING || in->pins > 0 || in->pinned) b += in->m.est_bytes;
    return b;
}

/* The smallest power-of-two context (not below 2048 unless the model's is
 * smaller) whose estimate fits avail; the floor when none does. */
static int fit_ctx(const rt_registry *r, const model_shape *sh, int ctx, uint64_t avail, uint64_t *est) {
    int floor_ctx = ctx < 2048 ? ctx : 2048, n_ctx = ctx;
    int p = 1;
    while (p * 2 <= ctx) p *= 2;
    if (p == ctx) p /= 2;
    for (; p >= floor_ctx; p /= 2) {
        n_ctx = p;
        *est = estimate(r, sh, p, 0);
        if (*est <= avail) return n_ctx;
    }
    if (n_ctx < floor_ctx) {
        n_ctx = floor_ctx;
        *est = estimate(r, sh, floor_ctx, 0);
    }
    return n_ctx;
}

/* Context for a new instance: explicit (request or server) or automatic. */
static kn_status choose_ctx(rt_registry *r, const model_shape *sh, int req_ctx, int *n_ctx, bool *reduced,
                            uint64_t *est, kn_err *err) {
    *reduced = false;
    if (sh->encoder) {
        /* its positions end at the trained context; a request cannot ask for more */
        int train = (int)(sh->ctx_train > (1 << 20) ? (1 << 20) : sh->ctx_train);
        *n_ctx = r->o.n_ctx > 0 && r->o.n_ctx < train ? r->o.n_ctx : train;
        *est = estimate(r, sh, *n_ctx, 0);
        if (*est > r->budget)
            return kn_fail(err, KN_ERANGE, "the embedding model needs %.0f MiB, more than the memory budget of %.0f MiB",
                           (double)*est / RT_MIB, (double)r->budget / RT_MIB);
        return KN_OK;
    }
    int explicit_ctx = req_ctx > 0 ? req_ctx : r->o.n_ctx;
    uint64_t avail = r->budget > busy_bytes(r) ? r->budget - busy_bytes(r) : 0;
    if (explicit_ctx > 0) {
        *n_ctx = explicit_ctx;
        *est = estimate(r, sh, *n_ctx, 0);
        if (*est > r->budget)
            return kn_fail(err, KN_ERANGE,
                           "a context of %d tokens x %d slots needs %.0f MiB with the weights, more than the memory "
                           "budget of %.0f MiB; lower the context or the slots",
                           *n_ctx, r->o.n_slots, (double)*est / RT_MIB, (double)r->budget / RT_MIB);
        return KN_OK;
    }
    int ctx = (int)(sh->ctx_train > (1 << 24) ? (1 << 24) : sh->ctx_train);
    *n_ctx = ctx;
    *est = estimate(r, sh, ctx, 0);
    if (*est <= avail) return KN_OK;
    *n_ctx = fit_ctx(r, sh, ctx, avail, est);
    *reduced = *n_ctx < ctx;
    if (*reduced)
        KN_WARN("context of the new instance reduced from %d to %d tokens: %d slots of KV at %.0f bytes a token "
                "must fit the %.0f MiB left of the budget",
                ctx, *n_ctx, r->o.n_slots, model_kv_bytes_per_token(sh, (model_kv_type)r->o.kv_type), (double)avail / RT_MIB);
    return KN_OK;
}

/* ---- instances ----------------------------------------------------------------- */

/* Frees what a load built (no lock held; the instance is not visible). */
static void inst_teardown(rt_registry *r, inst *in) {
    if (in->attached && r->o.hooks.detach) r->o.hooks.detach(r->o.hooks.arg, &in->m);
    in->attached = false;
    in->m.engine = NULL;
    model_destroy(in->draft);
    model_destroy(in->m.m);
    kn_pool_destroy(in->m.pool);
    rt_front_put(r, in->front);
    in->draft = NULL, in->m.m = NULL, in->m.pool = NULL, in->front = NULL;
    in->m.front = NULL;
}

static void unlink_inst(rt_registry *r, inst *in) {
    for (inst **pp = &r->insts; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            in->next = NULL;
            return;
        }
}

void rt_inst_unload(rt_registry *r, inst *in, const char *why) {
    KN_INFO("unloading %s:%s (%s)", in->e->name, in->e->quant, why);
    const char *lv[1] = {in->e->id};
    inst_teardown(r, in);
    free(in);
    met_inc(met_get(r->m_unloads, lv));
}

static void unload_list(rt_registry *r, inst *v, const char *why) {
    while (v) {
        inst *next = v->next;
        rt_inst_unload(r, v, why);
        v = next;
    }
}

/* The draft model for draft-model speculation, when configured and it
 * shares the vocabulary (a failure only logs: prompt lookup is used). */
static void load_draft(rt_registry *r, inst *in, const model_load_opts *lo) {
    const rt_opts *o = &r->o;
    if (!o->draft_path || o->spec_max <= 0 || in->encoder) return;
    kn_err derr = {0};
    if (model_load(o->draft_path, lo, &in->draft, &derr) != KN_OK) {
        KN_WARN("%s: cannot load the draft model %s (%s); draft-model speculation falls back to prompt lookup",
                in->e->id, o->draft_path, derr.msg);
    } else if (in->draft->hp.n_vocab != in->m.m->hp.n_vocab) {
        KN_WARN("%s: the draft model %s has %d tokens in its vocabulary, this model %d; it is not used for it",
                in->e->id, o->draft_path, in->draft->hp.n_vocab, in->m.m->hp.n_vocab);
        model_destroy(in->draft);
        in->draft = NULL;
    }
    in->m.draft = in->draft;
}

static void log_loaded(const rt_registry *r, const inst *in, int64_t grew) {
    const rt_opts *o = &r->o;
    const rt_model *m = &in->m;
    const model_hparams *hp = &m->m->hp;
    if (in->encoder) {
        static const char *const POOL[] = {"none (mean)", "mean", "cls", "last"};
        KN_INFO("loaded %s:%s in %.2f s: %s encoder, %d layers, dim %d, vocab %d, pooling %s; context %d, "
                "micro-batches of up to %d tokens (wait %d ms); memory: estimate %.1f MiB, RSS grew %.1f MiB",
                m->name, m->quant, m->load_s, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab,
                POOL[(unsigned)hp->pooling <= MODEL_POOL_LAST ? hp->pooling : 0], m->n_ctx, o->max_batch,
                o->batch_wait_ms, (double)m->est_bytes / RT_MIB, (double)grew / RT_MIB);
        return;
    }
    KN_INFO("loaded %s:%s in %.2f s: %s, %d layers, dim %d, vocab %d; %d slots x %d ctx (KV %s); chat template: %s; "
            "memory: estimate %.1f MiB, RSS grew %.1f MiB (the KV is touched as it fills)%s",
            m->name, m->quant, m->load_s, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab, o->n_slots,
            m->n_ctx, model_kv_type_name((model_kv_type)o->kv_type),
            m->front->chat ? (m->front->chat_source ? m->front->chat_source : "model") : "none", (double)m->est_bytes / RT_MIB,
            (double)grew / RT_MIB, in->draft ? "; with a draft model" : "");
}

/* Loads in's weights and attaches what serves them (no lock held). */
static kn_status load(rt_registry *r, inst *in, kn_err *err) {
    const rt_opts *o = &r->o;
    entry *e = in->e;
    rt_model *m = &in->m;
    double t0 = kn_now_s();
    uint64_t rss0 = rt_rss_bytes();
    kn_status st;
    model_load_opts lo = {.mmap_weights = o->mmap_weights};
    KN_INFO("loading %s (%s:%s) from %s (context %d%s, estimate %.1f MiB)", e->id, e->name, e->quant, e->path, m->n_ctx,
            m->ctx_reduced ? ", reduced to fit memory" : "", (double)m->est_bytes / RT_MIB);
    if (!rt_file_id_of(e->path, &in->fid))
        return kn_fail(err, KN_EIO, "cannot open the model file %s: %s", e->path, strerror(errno));
    if ((st = model_load(e->path, &lo, &m->m, err)) != KN_OK) {
        if (st == KN_EFORMAT || st == KN_EIO || st == KN_ENOTFOUND) rt_bad_file(err, e->path);
        return st;
    }
    m->arch = m->m->hp.arch_name;
    m->weight_bytes = m->m->weight_bytes;
    if (o->hash_files) {
        if (rt_file_id_eq(&in->front->fid, &in->fid)) memcpy(m->sha256, in->front->pub.sha256, 65);
        else rt_file_sha256(r, e, &in->fid, m->sha256); /* changed since the front was read */
    }
    if (!(m->pool = kn_pool_create(o->threads))) return kn_fail(err, KN_ENOMEM, "cannot start %d threads", o->threads);
    load_draft(r, in, &lo);
    if (o->hooks.attach) {
        if ((st = o->hooks.attach(o->hooks.arg, o, m, err)) != KN_OK) return st;
        in->attached = true;
    }
    m->load_s = kn_now_s() - t0;
    m->loaded_at = time(NULL);
    int64_t grew = (int64_t)rt_rss_bytes() - (int64_t)rss0;
    const char *lv[1] = {e->id};
    met_set(met_get(r->m_estimate_error, lv), (double)(grew - (int64_t)m->est_bytes));
    log_loaded(r, in, grew);
    return KN_OK;
}

/* Frees memory for `need` bytes by unloading idle instances, least recently
 * used first. Called with the lock held; returns the victims (unlinked) for
 * the caller to unload after unlocking. */
static inst *evict_for(rt_registry *r, uint64_t need) {
    inst *victims = NULL;
    while (r->used + need > r->budget) {
        inst *lru = NULL;
        for (inst *in = r->insts; in; in = in->next)
            if (in->state == INST_READY && in->pins == 0 && !in->pinned &&
                (!lru || in->last_used < lru->last_used))
                lru = in;
        if (!lru) break;
        unlink_inst(r, lru);
        lru->state = INST_GONE;
        r->used -= lru->m.est_bytes;
        lru->next = victims;
        victims = lru;
    }
    return victims;
}

static inst *find_inst(rt_registry *r, const entry *e, int n_ctx) {
    inst *best = NULL;
    for (inst *in = r->insts; in; in = in->next) {
        if (in->e != e || (in->state != INST_READY && in->state != INST_LOADING)) continue;
        if (n_ctx > 0 && in->m.n_ctx < n_ctx && !in->encoder) continue; /* an encoder's context is its model's */
        if (!best || in->m.n_ctx < best->m.n_ctx) best = in; /* the smallest that fits */
    }
    return best;
}

static void touch(rt_registry *r, inst *in, const rt_acquire_opts *ao) {
    if (!ao->touch) return;
    in->last_used = kn_now_s();
    if (!isnan(ao->keep_alive_s)) in->keep_alive_s = ao->keep_alive_s;
    else if (in->keep_alive_s == 0) in->keep_alive_s = r->o.keep_alive_s; /* a new request lifts a pending unload */
}

/* Looks for a usable instance (mu held; it may be dropped and retaken).
 * Returns 1 with *out pinned, 0 when there is none (the caller loads it),
 * or -1 with *st set when the load this thread waited for failed. */
static int existing_locked(rt_registry *r, entry *e, const rt_acquire_opts *ao, const file_id *now_id, bool have_id,
                           rt_model **out, kn_status *st, kn_err *err) {
    for (;;) {
        inst *in = find_inst(r, e, ao->n_ctx);
        if (in && in->state == INST_READY && have_id && !rt_file_id_eq(&in->fid, now_id) && in->pins == 0 &&
            !in->pinned) {
            /* the file changed on disk since this instance loaded it, and no
             * request uses it: unload it and load the file as it is now (an
             * instance in use keeps serving what it loaded; a pinned one too) */
            unlink_inst(r, in);
            in->state = INST_GONE;
            r->used -= in->m.est_bytes;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            rt_inst_unload(r, in, "the file changed on disk");
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (in && in->state == INST_READY) { /* fast path */
            in->pins++;
            touch(r, in, ao);
            *out = &in->m;
            return 1;
        }
        if (!in) return 0;
        /* loading: wait for that one load and share its outcome */
        in->waiters++;
        while (in->state == INST_LOADING) pthread_cond_wait(&r->cv, &r->mu);
        in->waiters--;
        if (in->state == INST_FAILED) {
            if (err) *err = in->err;
            *st = in->err.status;
            if (in->waiters == 0) free(in);
            return -1;
        }
        /* READY (or unloaded meanwhile): look again */
    }
}

/* Reserves est bytes under the budget for in (mu held): evicts idle
 * instances, then waits a bounded time for busy ones. */
static kn_status reserve_locked(rt_registry *r, inst *in, const model_shape *sh, uint64_t est, kn_err *err) {
    double deadline = kn_now_s() + r->o.load_wait_s;
    for (;;) {
        inst *v = evict_for(r, est);
        if (v) {
            pthread_mutex_unlock(&r->mu);
            unload_list(r, v, "making room under the memory budget");
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->used + est <= r->budget) break;
        double now = kn_now_s();
        if (now >= deadline)
            return kn_fail(err, KN_EBUSY,
                           "not enough memory to load %s:%s: it needs about %.0f MiB, the budget is %.0f MiB and "
                           "%.0f MiB are in use by models serving requests; retry later",
                           in->e->name, in->e->quant, (double)est / RT_MIB, (double)r->budget / RT_MIB,
                           (double)r->used / RT_MIB);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double wait = deadline - now < 0.2 ? deadline - now : 0.2;
        ts.tv_nsec += (long)(wait * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    /* the prefix cache's extra KV room takes only what the budget has
     * left, never a context or another model's place */
    uint64_t left = r->budget - r->used - est;
    in->cache_bytes = r->o.kv_blocks > 0 || in->encoder ? 0 : (r->o.cache_bytes < left ? r->o.cache_bytes : left);
    uint64_t with_cache = estimate(r, sh, in->m.n_ctx, in->cache_bytes);
    if (with_cache > est && r->used + with_cache <= r->budget) est = with_cache;
    else in->cache_bytes = 0;
    in->m.est_bytes = est;
    in->m.kv_cache_bytes = in->cache_bytes;
    r->used += est;
    return KN_OK;
}

/* A new LOADING instance of e with its front (mu held), linked first. */
static inst *new_inst_locked(rt_registry *r, entry *e, front_rec *f) {
    inst *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->e = e;
    in->front = f;
    in->m.name = e->name;
    in->m.quant = e->quant;
    in->m.id = e->id;
    in->m.path = e->path;
    in->m.front = &f->pub;
    in->m.arch = f->arch;
    in->state = INST_LOADING;
    in->pinned = rt_in_list(r->pins, e->id) || rt_in_list(r->pins, e->name);
    in->keep_alive_s = r->o.keep_alive_s;
    in->encoder = f->sh.encoder;
    in->next = r->insts;
    r->insts = in;
    return in;
}

/* Loads a new instance of e for ao (no lock held on entry). */
static kn_status load_new(rt_registry *r, entry *e, const rt_acquire_opts *ao, const char *name,
                          rt_model **out, kn_err *err) {
    front_rec *f = NULL;
    kn_status st = rt_front_get(r, e, &f, err);
    if (st != KN_OK) return st; /* logged and counted as a load failure */
    kn_err lerr = {0};
    pthread_mutex_lock(&r->mu);
    if (find_inst(r, e, ao->n_ctx)) { /* someone started meanwhile */
        pthread_mutex_unlock(&r->mu);
        rt_front_put(r, f);
        return rt_acquire(r, name, ao, out, err);
    }
    inst *in = new_inst_locked(r, e, f);
    if (!in) {
        pthread_mutex_unlock(&r->mu);
        rt_front_put(r, f);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    bool reduced = false;
    uint64_t est = 0;
    int n_ctx = 0;
    st = choose_ctx(r, &f->sh, ao->n_ctx, &n_ctx, &reduced, &est, &lerr);
    in->m.n_ctx = n_ctx;
    in->m.ctx_reduced = reduced;
    in->m.est_bytes = est;
    if (st == KN_OK) st = reserve_locked(r, in, &f->sh, est, &lerr);
    bool reserved = st == KN_OK;
    pthread_mutex_unlock(&r->mu);
    if (st == KN_OK) st = load(r, in, &lerr);
    if (st == KN_ENOTFOUND) st = KN_EFORMAT; /* a key or tensor missing from the file: a bad file, not a bad name */
    if (st != KN_OK) { /* free what the load built, and say why, before waiters can see the failure */
        inst_teardown(r, in);
        lerr.status = st;
        rt_load_failed(r, e, st, &lerr);
    }
    pthread_mutex_lock(&r->mu);
    bool free_failed = false;
    if (st == KN_OK) {
        in->state = INST_READY;
        in->pins = 1;
        in->last_used = kn_now_s();
        touch(r, in, ao);
        *out = &in->m;
    } else {
        if (reserved) r->used -= in->m.est_bytes;
        unlink_inst(r, in);
        in->state = INST_FAILED;
        in->err = lerr;
        free_failed = in->waiters == 0;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (st == KN_OK) {
        const char *lv[1] = {e->id};
        met_inc(met_get(r->m_loads, lv));
        return KN_OK;
    }
    if (err) *err = lerr;
    if (free_failed) free(in);
    return st;
}

kn_status rt_acquire(rt_registry *r, const char *name, const rt_acquire_opts *ao_in, rt_model **out, kn_err *err) {
    *out = NULL;
    rt_acquire_opts ao = ao_in ? *ao_in : (rt_acquire_opts){.n_ctx = 0, .keep_alive_s = NAN, .touch = true};
    entry *e = rt_resolve(r, name, err);
    if (!e) return KN_ENOTFOUND;
    file_id now_id;
    bool have_id = rt_file_id_of(e->path, &now_id); /* one stat per request: a replaced file is reloaded */
    pthread_mutex_lock(&r->mu);
    if (have_id) {
        e->seen = true;
        e->seen_size = now_id.size;
        e->seen_mtime = (time_t)(now_id.mtime_ns / 1000000000);
    }
    kn_status st = KN_OK;
    int found = existing_locked(r, e, &ao, &now_id, have_id, out, &st, err);
    pthread_mutex_unlock(&r->mu);
    if (found > 0) return KN_OK;
    if (found < 0) return st;
    if (ao.loaded_only) return KN_OK; /* *out stays NULL */
    return load_new(r, e, &ao, name, out, err);
}

void rt_release(rt_registry *r, rt_model *m) {
    if (!m) return;
    inst *in = (inst *)m;
    pthread_mutex_lock(&r->mu);
    if (in->pins > 0) in->pins--;
    in->last_used = kn_now_s();
    bool now = in->pins == 0 && in->keep_alive_s == 0 && !in->pinned && in->state == INST_READY;
    if (now) {
        unlink_inst(r, in);
        in->state = INST_GONE;
        r->used -= in->m.est_bytes;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (now) rt_inst_unload(r, in, "keep_alive 0");
}

int rt_cleanup(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    double now = kn_now_s();
    inst *victims = NULL;
    for (inst **pp = &r->insts; *pp;) {
        inst *in = *pp;
        if (in->state == INST_READY && in->pins == 0 && !in->pinned && in->keep_alive_s >= 0 &&
            now - in->last_used >= in->keep_alive_s) {
            *pp = in->next;
            in->state = INST_GONE;
            r->used -= in->m.est_bytes;
            in->next = victims;
            victims = in;
            continue;
        }
        pp = &in->next;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    int n = 0;
    while (victims) {
        inst *next = victims->next;
        char why[96];
        snprintf(why, sizeof why, "idle for %.0f s, keep-alive %.0f s", now - victims->last_used,
                 victims->keep_alive_s);
        rt_inst_unload(r, victims, why);
        n++;
        victims = next;
    }
    return n;
}

void *rt_cleaner_main(void *arg) {
    rt_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double iv = r->o.cleanup_interval_s;
        ts.tv_sec += (time_t)iv;
        ts.tv_nsec += (long)((iv - floor(iv)) * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->stop_cv, &r->mu, &ts);
        if (r->stopping) break;
        pthread_mutex_unlock(&r->mu);
        rt_cleanup(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}
