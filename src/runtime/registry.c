/*
 * registry.c — model table, lazy loading and pinning (see registry.h).
 */
#include "registry.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct entry {
    char *name;
    char *path;
    uint64_t size;
    time_t mtime;
    pthread_mutex_t load_mu; /* held while this entry loads */
    rt_model *inst;          /* NULL until loaded (table lock) */
    kn_pool *pool;
    int pins;                /* table lock */
    bool loading;            /* table lock */
} entry;

struct rt_registry {
    rt_opts o;
    const tensor_ops *ops;
    pthread_mutex_t mu;
    entry *e;
    size_t n;
};

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static kn_status add_entry(rt_registry *r, size_t *cap, const char *path, const char *base, kn_err *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return KN_OK; /* vanished or not a file: skip */
    size_t bl = strlen(base);
    if (bl <= 5 || strcmp(base + bl - 5, ".gguf") != 0) return KN_OK;
    if (bl - 5 > RT_MAX_NAME) {
        KN_WARN("skipping %s: the name is longer than %d bytes", path, RT_MAX_NAME);
        return KN_OK;
    }
    if (r->n == RT_MAX_MODELS) return kn_fail(err, KN_ERANGE, "more than %d models", RT_MAX_MODELS);
    if (r->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        entry *ne = realloc(r->e, nc * sizeof *ne);
        if (!ne) return kn_fail(err, KN_ENOMEM, "out of memory");
        r->e = ne;
        *cap = nc;
    }
    entry *e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    e->name = strndup(base, bl - 5);
    e->path = strdup(path);
    if (!e->name || !e->path) {
        free(e->name);
        free(e->path);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    e->size = (uint64_t)st.st_size;
    e->mtime = st.st_mtime;
    r->n++;
    return KN_OK;
}

kn_status rt_registry_create(const char *dir, const char *file, const rt_opts *o, const tensor_ops *ops,
                             rt_registry **out, kn_err *err) {
    *out = NULL;
    rt_registry *r = calloc(1, sizeof *r);
    if (!r) return kn_fail(err, KN_ENOMEM, "out of memory");
    r->o = *o;
    r->ops = ops;
    pthread_mutex_init(&r->mu, NULL);
    size_t cap = 0;
    kn_status st = KN_OK;
    if (file) {
        struct stat sb;
        if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            st = kn_fail(err, KN_EIO, "cannot open model file %s", file);
            goto fail;
        }
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t bl = strlen(base);
        if (bl <= 5 || strcmp(base + bl - 5, ".gguf") != 0) {
            st = kn_fail(err, KN_EINVAL, "%s: a model file name must end in .gguf", file);
            goto fail;
        }
        if ((st = add_entry(r, &cap, file, base, err)) != KN_OK) goto fail;
    } else {
        DIR *d = opendir(dir);
        if (!d) {
            st = kn_fail(err, KN_EIO, "cannot open the model directory %s", dir);
            goto fail;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char path[4096];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) continue;
            if ((st = add_entry(r, &cap, path, de->d_name, err)) != KN_OK) break;
        }
        closedir(d);
        if (st != KN_OK) goto fail;
        qsort(r->e, r->n, sizeof *r->e, cmp_entry);
    }
    for (size_t i = 0; i < r->n; i++) pthread_mutex_init(&r->e[i].load_mu, NULL);
    *out = r;
    return KN_OK;
fail:
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].name);
        free(r->e[i].path);
    }
    free(r->e);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return st;
}

static void inst_destroy(rt_model *m, kn_pool *pool) {
    if (!m) return;
    eng_sched_destroy(m->sched);
    eng_chat_destroy(m->chat);
    tok_vocab_destroy(m->vocab);
    model_destroy(m->m);
    kn_pool_destroy(pool);
    free(m);
}

void rt_registry_destroy(rt_registry *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        entry *e = &r->e[i];
        if (e->inst) {
            KN_INFO("unloading %s", e->name);
            inst_destroy(e->inst, e->pool);
            if (r->o.metrics) met_inc(met_get(r->o.metrics->unloads, (const char *const[]){e->name}));
        }
        pthread_mutex_destroy(&e->load_mu);
        free(e->name);
        free(e->path);
    }
    free(r->e);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

size_t rt_registry_count(const rt_registry *r) { return r->n; }

void rt_registry_entry(rt_registry *r, size_t i, rt_entry_info *info) {
    pthread_mutex_lock(&r->mu);
    entry *e = &r->e[i];
    *info = (rt_entry_info){.name = e->name, .path = e->path, .size = e->size, .mtime = e->mtime,
                            .loaded = e->inst != NULL, .loading = e->loading};
    pthread_mutex_unlock(&r->mu);
}

bool rt_registry_loading(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    bool any = false;
    for (size_t i = 0; i < r->n; i++) any |= r->e[i].loading;
    pthread_mutex_unlock(&r->mu);
    return any;
}

void rt_registry_names(const rt_registry *r, char *buf, size_t cap) {
    size_t off = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < r->n && cap; i++) {
        int k = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "", r->e[i].name);
        if (k < 0 || (size_t)k >= cap - off) {
            if (cap >= 4) strcpy(buf + cap - 4, "...");
            return;
        }
        off += (size_t)k;
    }
}

static entry *find(const rt_registry *r, const char *name) {
    if (!name) return NULL;
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->e[mid].name, name);
        if (c == 0) return &r->e[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

bool rt_registry_has(const rt_registry *r, const char *name) { return find(r, name) != NULL; }

static kn_status load(rt_registry *r, entry *e, rt_model **out, kn_pool **pool_out, kn_err *err) {
    const rt_opts *o = &r->o;
    double t0 = kn_now_s();
    rt_model *m = calloc(1, sizeof *m);
    kn_pool *pool = NULL;
    if (!m) return kn_fail(err, KN_ENOMEM, "out of memory");
    m->name = e->name;
    m->path = e->path;
    kn_status st;
    model_load_opts lo = {.mmap_weights = o->mmap_weights};
    KN_INFO("loading %s from %s", e->name, e->path);
    if ((st = model_load(e->path, &lo, &m->m, err)) != KN_OK) goto fail;
    if ((st = tok_vocab_load(m->m->gguf, &m->vocab, err)) != KN_OK) {
        kn_err_prefix(err, "tokenizer");
        goto fail;
    }
    kn_err cerr = {0};
    if (eng_chat_create(m->m->gguf, m->vocab, &m->chat, &m->chat_source, &cerr) != KN_OK) {
        snprintf(m->chat_err, sizeof m->chat_err, "%s", cerr.msg);
        KN_WARN("%s: no usable chat template (%s); chat requests will fail", e->name, cerr.msg);
    }
    const model_hparams *hp = &m->m->hp;
    int n_ctx = o->n_ctx;
    if (n_ctx <= 0) n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (hp->n_ctx_train > 0 && n_ctx > hp->n_ctx_train) {
        KN_WARN("%s: context %d exceeds the model's trained context %d; using %d", e->name, n_ctx, hp->n_ctx_train,
                hp->n_ctx_train);
        n_ctx = hp->n_ctx_train;
    }
    m->n_ctx = n_ctx;
    if (!(pool = kn_pool_create(o->threads))) {
        st = kn_fail(err, KN_ENOMEM, "cannot start %d threads", o->threads);
        goto fail;
    }
    eng_sched_opts so = {.n_slots = o->n_slots, .n_ctx = n_ctx, .max_batch = o->max_batch,
                         .queue_len = o->queue_len, .queue_timeout_s = o->queue_timeout_s, .kv_type = o->kv_type};
    if (o->metrics) {
        const rt_metrics *mf = o->metrics;
        const char *lv[1] = {e->name};
        so.metrics = (eng_metrics){.ttft = met_get(mf->ttft, lv), .itl = met_get(mf->itl, lv),
                                   .queue_wait = met_get(mf->queue_wait, lv), .prefill = met_get(mf->prefill, lv),
                                   .batch_size = met_get(mf->batch_size, lv),
                                   .prompt_tokens = met_get(mf->prompt_tokens, lv),
                                   .gen_tokens = met_get(mf->gen_tokens, lv), .ttft_window = mf->ttft_window};
    }
    if ((st = eng_sched_create(m->m, m->vocab, r->ops, pool, &so, &m->sched, err)) != KN_OK) goto fail;
    m->load_s = kn_now_s() - t0;
    m->loaded_at = time(NULL);
    eng_sched_stats ss;
    eng_sched_stats_get(m->sched, &ss);
    KN_INFO("loaded %s in %.2f s: %s, %d layers, dim %d, vocab %d; weights %.1f MiB (%s); %d slots x %d ctx, "
            "KV %.1f MiB (%s); chat template: %s",
            e->name, m->load_s, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab,
            (double)m->m->weight_bytes / 1048576.0, m->m->weights_mem ? "copied" : "mapped", o->n_slots, n_ctx,
            (double)ss.kv_bytes / 1048576.0, model_kv_type_name(o->kv_type),
            m->chat ? (m->chat_source ? m->chat_source : "model") : "none");
    *out = m;
    *pool_out = pool;
    return KN_OK;
fail:
    KN_ERROR("cannot load %s: %s", e->name, err ? err->msg : "?");
    inst_destroy(m, pool);
    return st;
}

kn_status rt_acquire(rt_registry *r, const char *name, rt_model **out, kn_err *err) {
    *out = NULL;
    entry *e = find(r, name);
    if (!e) {
        char names[400];
        rt_registry_names(r, names, sizeof names);
        return kn_fail(err, KN_ENOTFOUND, "model '%.*s' not found; available: %s", 128, name ? name : "",
                       names[0] ? names : "(none)");
    }
    /* fast path: loaded */
    pthread_mutex_lock(&r->mu);
    if (e->inst) {
        e->pins++;
        *out = e->inst;
        pthread_mutex_unlock(&r->mu);
        return KN_OK;
    }
    pthread_mutex_unlock(&r->mu);
    /* slow path: one loader per entry; check again under its lock */
    pthread_mutex_lock(&e->load_mu);
    pthread_mutex_lock(&r->mu);
    if (e->inst) {
        e->pins++;
        *out = e->inst;
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_unlock(&e->load_mu);
        return KN_OK;
    }
    e->loading = true;
    pthread_mutex_unlock(&r->mu);
    rt_model *m = NULL;
    kn_pool *pool = NULL;
    kn_status st = load(r, e, &m, &pool, err);
    if (r->o.metrics) {
        const char *lv[1] = {e->name};
        met_inc(met_get(st == KN_OK ? r->o.metrics->loads : r->o.metrics->load_failures, lv));
    }
    pthread_mutex_lock(&r->mu);
    e->loading = false;
    if (st == KN_OK) {
        e->inst = m;
        e->pool = pool;
        e->pins++;
        *out = m;
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&e->load_mu);
    return st;
}

void rt_release(rt_registry *r, rt_model *m) {
    if (!m) return;
    entry *e = find(r, m->name);
    pthread_mutex_lock(&r->mu);
    if (e && e->pins > 0) e->pins--;
    pthread_mutex_unlock(&r->mu);
}

void rt_foreach_loaded(rt_registry *r, void (*fn)(void *arg, rt_model *m), void *arg) {
    for (size_t i = 0; i < r->n; i++) {
        pthread_mutex_lock(&r->mu);
        rt_model *m = r->e[i].inst;
        if (m) r->e[i].pins++;
        pthread_mutex_unlock(&r->mu);
        if (!m) continue;
        fn(arg, m);
        rt_release(r, m);
    }
}

void rt_cancel_all(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].inst) eng_sched_cancel_all(r->e[i].inst->sched);
    pthread_mutex_unlock(&r->mu);
}
