/*
 * registry.c — the model registry's table of files: creation, names and
 * their resolution, listings, file metadata (rt_describe), failures and
 * cancellation (see kiln/runtime.h; instances are in registry_load.c, fronts
 * in registry_front.c, files in registry_files.c).
 */
#include "registry_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

void *rt_cleaner_main(void *arg); /* registry_load.c */

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->quant, y->quant);
}

/* ---- names ------------------------------------------------------------------- */

static const char *const QUANTS[] = {
    "F32",    "F16",    "BF16",   "Q8_0",   "Q8_1",   "Q6_K",   "Q5_K_M", "Q5_K_S", "Q5_K",  "Q5_1",
    "Q5_0",   "Q4_K_M", "Q4_K_S", "Q4_K",   "Q4_1",   "Q4_0",   "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q3_K",
    "Q2_K_S", "Q2_K",   "IQ4_XS", "IQ4_NL", "IQ3_S",  "IQ3_M",  "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S",
    "IQ2_XS", "IQ2_XXS", "IQ1_S", "IQ1_M",  "TQ1_0",  "TQ2_0",  "Q4_0_4_4", "MXFP4", "MXFP4_MOE",
};

const char *rt_quant_label(const char *s, size_t n) {
    for (size_t i = 0; i < sizeof QUANTS / sizeof *QUANTS; i++)
        if (strlen(QUANTS[i]) == n && !strncasecmp(QUANTS[i], s, n)) return QUANTS[i];
    return NULL;
}

bool rt_split_file_id(const char *id, char *name, size_t name_cap, char *quant, size_t quant_cap) {
    size_t n = strlen(id);
    const char *slash = strrchr(id, '/');
    const char *base = slash ? slash + 1 : id;
    const char *label = NULL;
    size_t name_len = n;
    /* DIR/<name>/<QUANT>.gguf */
    if (slash && (label = rt_quant_label(base, strlen(base)))) name_len = (size_t)(slash - id);
    else {
        /* <name>-<QUANT> or <name>.<QUANT>: the longest label that ends the base */
        for (const char *p = base + 1; *p && !label; p++) {
            if (p[-1] != '-' && p[-1] != '.') continue;
            if ((label = rt_quant_label(p, strlen(p)))) name_len = (size_t)(p - 1 - id);
        }
    }
    if (!label || name_len == 0) {
        snprintf(name, name_cap, "%s", id);
        if (quant_cap) quant[0] = 0;
        return false;
    }
    snprintf(name, name_cap, "%.*s", (int)name_len, id);
    snprintf(quant, quant_cap, "%s", label);
    return true;
}

bool rt_parse_request(const char *req, char *name, size_t name_cap, char *quant, size_t quant_cap) {
    if (!req) return false;
    size_t n = strlen(req);
    if (n == 0 || n > RT_MAX_NAME || req[0] == '/' || strstr(req, "..")) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)req[i] < 0x20 || (unsigned char)req[i] == 0x7f || req[i] == '\\') return false;
    const char *colon = strrchr(req, ':');
    size_t nl = colon ? (size_t)(colon - req) : n;
    if (nl == 0 || nl >= name_cap) return false;
    memcpy(name, req, nl);
    name[nl] = 0;
    if (colon) {
        size_t ql = n - nl - 1;
        if (ql == 0 || ql >= quant_cap) return false;
        for (size_t i = 0; i < ql; i++) quant[i] = (char)toupper((unsigned char)colon[1 + i]);
        quant[ql] = 0;
    } else if (quant_cap) {
        quant[0] = 0;
    }
    return true;
}

void rt_instance_key(const char *id, const char *task, int n_ctx, int kv, int threads, char *buf, size_t cap) {
    snprintf(buf, cap, "%s|%s|%d|%s|%d", id, task, n_ctx, model_kv_type_name((model_kv_type)kv), threads);
}


bool rt_in_list(const char *list, const char *name) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        while (l && *p == ' ') p++, l--;
        while (l && p[l - 1] == ' ') l--;
        if (l == n && !strncmp(p, name, n)) return true;
        if (!c) break;
        p = c + 1;
    }
    return false;
}



kn_status rt_registry_create(const char *dir, const char *file, const rt_opts *o, const struct tensor_ops *ops,
                             rt_registry **out, kn_err *err) {
    *out = NULL;
    rt_registry *r = calloc(1, sizeof *r);
    if (!r) return kn_fail(err, KN_ENOMEM, "out of memory");
    r->o = *o;
    if (o->kv_type != MODEL_KV_F16 && o->kv_type != MODEL_KV_Q8_0) {
        free(r);
        return kn_fail(err, KN_EINVAL, "KV type %d is not a model_kv_type", o->kv_type);
    }
    if (r->o.load_wait_s <= 0) r->o.load_wait_s = 30;
    r->ops = ops;
    r->aliases = o->aliases ? strdup(o->aliases) : NULL;
    r->pins = o->pins ? strdup(o->pins) : NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_cond_init(&r->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (o->metrics) {
        const char *model[] = {"model"};
        r->m_loads = met_counter(o->metrics, "kiln_model_loads_total", "Models loaded", 1, model);
        r->m_unloads = met_counter(o->metrics, "kiln_model_unloads_total", "Models unloaded", 1, model);
        r->m_load_failures = met_counter(o->metrics, "kiln_model_load_failures_total", "Model loads that failed", 1,
                                         model);
        r->m_estimate_error = met_gauge(o->metrics, "kiln_model_memory_estimate_error_bytes",
                                        "RSS growth measured over a model's load minus its estimate", 1, model);
        if (!r->m_loads || !r->m_unloads || !r->m_load_failures || !r->m_estimate_error) {
            rt_registry_destroy(r);
            return kn_fail(err, KN_ENOMEM, "cannot register the registry's metrics");
        }
    }
    size_t cap = 0;
    kn_status st = KN_OK;
    if (file) {
        struct stat sb;
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t bl = strlen(base);
        if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode)) st = kn_fail(err, KN_EIO, "cannot open model file %s", file);
        else if (bl <= 5 || strcmp(base + bl - 5, ".gguf") != 0)
            st = kn_fail(err, KN_EINVAL, "%s: a model file name must end in .gguf", file);
        else st = rt_add_entry(r, &cap, file, base, err);
    } else {
        st = rt_scan_dir(r, &cap, dir, "", 0, err);
    }
    if (st != KN_OK) {
        rt_registry_destroy(r);
        return st;
    }
    qsort(r->e, r->n, sizeof *r->e, cmp_entry);
    const char *src = "--memory-budget";
    r->budget = o->memory_budget ? o->memory_budget : rt_default_budget(&src);
    KN_INFO("model directory: %zu files; memory budget %.0f MiB (%s); keep-alive %s, cleanup every %.0f s", r->n,
            (double)r->budget / RT_MIB, src, o->keep_alive_s < 0 ? "forever" : "set", o->cleanup_interval_s);
    if (o->cleanup_interval_s > 0) {
        if (pthread_create(&r->cleaner, NULL, rt_cleaner_main, r) != 0) {
            rt_registry_destroy(r);
            return kn_fail(err, KN_ENOMEM, "cannot start the cleanup thread");
        }
        r->cleaner_started = true;
    }
    *out = r;
    return KN_OK;
}

void rt_registry_destroy(rt_registry *r) {
    if (!r) return;
    if (r->cleaner_started) {
        pthread_mutex_lock(&r->mu);
        r->stopping = true;
        pthread_cond_broadcast(&r->stop_cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->cleaner, NULL);
    }
    while (r->insts) {
        inst *in = r->insts;
        r->insts = in->next;
        if (in->state == INST_READY) rt_inst_unload(r, in, "shutting down");
        else free(in); /* a failed load that nobody waited for is freed by its loader */
    }
    rt_fronts_free(r);
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].id), free(r->e[i].name), free(r->e[i].quant), free(r->e[i].path);
    }
    free(r->e);
    free(r->aliases);
    free(r->pins);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->stop_cv);
    free(r);
}

const rt_opts *rt_registry_opts(const rt_registry *r) { return &r->o; }
size_t rt_registry_count(const rt_registry *r) { return r->n; }
uint64_t rt_registry_budget(const rt_registry *r) { return r->budget; }


void rt_registry_entry(rt_registry *r, size_t i, rt_entry_info *info) {
    entry *e = &r->e[i];
    pthread_mutex_lock(&r->mu);
    bool loaded = false;
    for (inst *in = r->insts; in; in = in->next) loaded |= in->e == e && in->state == INST_READY;
    *info = (rt_entry_info){.name = e->name, .quant = e->quant, .id = e->id, .path = e->path,
                            .size = e->seen ? e->seen_size : e->size, .mtime = e->seen ? e->seen_mtime : e->mtime,
                            .loaded = loaded};
    pthread_mutex_unlock(&r->mu);
}

void rt_registry_names(const rt_registry *r, char *buf, size_t cap) {
    size_t off = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < r->n && cap; i++) {
        int k = snprintf(buf + off, cap - off, "%s%s:%s", i ? ", " : "", r->e[i].name, r->e[i].quant);
        if (k < 0 || (size_t)k >= cap - off) {
            if (cap >= 4) strcpy(buf + cap - 4, "...");
            return;
        }
        off += (size_t)k;
    }
}

/* Looks an alias up: copies its target into out. */
static bool alias_of(const char *list, const char *name, char *out, size_t cap) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        const char *eq = memchr(p, '=', l);
        if (eq && (size_t)(eq - p) == n && !strncmp(p, name, n)) {
            snprintf(out, cap, "%.*s", (int)(l - n - 1), eq + 1);
            return true;
        }
        if (!c) break;
        p = c + 1;
    }
    return false;
}

entry *rt_resolve(const rt_registry *r, const char *req, kn_err *err) {
    char target[RT_MAX_NAME + 1];
    if (req && alias_of(r->aliases, req, target, sizeof target)) req = target;
    for (size_t i = 0; req && i < r->n; i++)
        if (!strcmp(r->e[i].id, req)) return &r->e[i];
    char name[RT_MAX_NAME + 1], quant[32];
    if (!rt_parse_request(req, name, sizeof name, quant, sizeof quant)) {
        kn_fail(err, KN_ENOTFOUND, "model name '%.128s' is not valid (expected name or name:QUANT)", req ? req : "");
        return NULL;
    }
    entry *pick = NULL, *q4km = NULL;
    char have[256] = "";
    size_t hl = 0;
    for (size_t i = 0; i < r->n; i++) {
        entry *e = &r->e[i];
        if (strcmp(e->name, name)) continue;
        int k = snprintf(have + hl, sizeof have - hl, "%s%s", hl ? ", " : "", e->quant);
        if (k > 0 && (size_t)k < sizeof have - hl) hl += (size_t)k;
        if (quant[0]) {
            if (!strcasecmp(e->quant, quant)) return e;
            continue;
        }
        if (!strcmp(e->quant, "Q4_K_M")) q4km = e;
        if (!pick || e->size < pick->size) pick = e;
    }
    if (!quant[0] && (q4km || pick)) return q4km ? q4km : pick;
    if (hl) {
        kn_fail(err, KN_ENOTFOUND, "model '%s' has no quantization %s; available: %s", name, quant, have);
        return NULL;
    }
    char names[400];
    rt_registry_names(r, names, sizeof names);
    kn_fail(err, KN_ENOTFOUND, "model '%.128s' not found; available: %s", req, names[0] ? names : "(none)");
    return NULL;
}

bool rt_registry_has(rt_registry *r, const char *name) { return rt_resolve(r, name, NULL) != NULL; }

kn_status rt_lookup(rt_registry *r, const char *name, rt_entry_info *info, kn_err *err) {
    entry *e = rt_resolve(r, name, err);
    if (!e) return KN_ENOTFOUND;
    rt_registry_entry(r, (size_t)(e - r->e), info);
    return KN_OK;
}


void rt_foreach_loaded(rt_registry *r, void (*fn)(void *arg, const rt_loaded_info *info), void *arg) {
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (inst *in = r->insts; in; in = in->next) n += in->state == INST_READY;
    inst **list = n ? malloc(n * sizeof *list) : NULL;
    rt_loaded_info *infos = n ? malloc(n * sizeof *infos) : NULL;
    size_t k = 0;
    double now = kn_now_s();
    time_t wall = time(NULL);
    for (inst *in = r->insts; in && list && infos; in = in->next) {
        if (in->state != INST_READY) continue;
        bool never = in->pinned || in->keep_alive_s < 0;
        double left = never ? -1 : in->keep_alive_s - (in->pins > 0 ? 0 : now - in->last_used);
        if (!never && left < 0) left = 0;
        infos[k] = (rt_loaded_info){.m = &in->m, .in_flight = in->pins, .expires_in_s = left,
                                    .expires_at = never ? 0 : wall + (time_t)ceil(left), .pinned = in->pinned};
        in->pins++;
        list[k++] = in;
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < k; i++) fn(arg, &infos[i]);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < k; i++) list[i]->pins--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(list);
    free(infos);
}


void rt_load_failed(rt_registry *r, const entry *e, kn_status st, kn_err *err) {
    if (st != KN_EBUSY && st != KN_ERANGE) kn_err_prefix(err, "%s", e->id);
    KN_ERROR("cannot load %s:%s: %s", e->name, e->quant, err->msg);
    const char *lv[1] = {e->id};
    met_inc(met_get(r->m_load_failures, lv));
}

void rt_cancel_all(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    for (inst *in = r->insts; in; in = in->next)
        if (in->state == INST_READY && in->attached && r->o.hooks.cancel) r->o.hooks.cancel(r->o.hooks.arg, &in->m);
    pthread_mutex_unlock(&r->mu);
}

/* ---- metadata (rt_describe) ---------------------------------------------------- */

static bool meta_of(const gguf_ctx *g, int64_t i, rt_meta *m) {
    gguf_str k = gguf_kv_key(g, i);
    memset(m, 0, sizeof *m);
    m->key = k.data;
    m->key_len = (size_t)k.len;
    gguf_type t = gguf_kv_type(g, i);
    if (t == GGUF_TYPE_ARRAY) {
        gguf_type et;
        uint64_t n;
        const void *data;
        if (gguf_kv_get_arr(g, i, &et, &n, &data) != KN_OK) return false;
        m->kind = RT_META_ARRAY;
        m->elem = gguf_type_name(et);
        m->len = (size_t)n;
        return true;
    }
    gguf_str sv = {0};
    if (gguf_kv_scalar(g, i, &m->i, &m->u, &m->f, &sv) != KN_OK) return false;
    switch (t) {
    case GGUF_TYPE_STRING: m->kind = RT_META_STRING, m->str = sv.data, m->len = (size_t)sv.len; break;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: m->kind = RT_META_FLOAT; break;
    case GGUF_TYPE_BOOL: m->kind = RT_META_BOOL; break;
    case GGUF_TYPE_UINT64: m->kind = RT_META_UINT; break;
    default: m->kind = RT_META_INT; break;
    }
    return true;
}

kn_status rt_describe(rt_registry *r, const char *name, rt_description *d, kn_err *err) {
    memset(d, 0, sizeof *d);
    kn_status st = rt_lookup(r, name, &d->info, err);
    if (st != KN_OK) return st;
    gguf_ctx *g = NULL;
    if ((st = gguf_open(d->info.path, &g, err)) != KN_OK) return st;
    d->file = g;
    int64_t n = gguf_n_kv(g);
    d->keys = calloc(n > 0 ? (size_t)n : 1, sizeof *d->keys);
    if (!d->keys) {
        rt_description_free(d);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        if (gguf_str_eq(gguf_kv_key(g, i), "tokenizer.chat_template")) continue;
        if (meta_of(g, i, &d->keys[d->n_keys])) d->n_keys++;
    }
    gguf_str tmpl = {0}, arch = {0};
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl) == KN_OK) d->tmpl = tmpl.data, d->tmpl_len = (size_t)tmpl.len;
    if (gguf_get_str(g, "general.architecture", &arch) == KN_OK && arch.len < sizeof d->arch_buf)
        snprintf(d->arch_buf, sizeof d->arch_buf, "%.*s", (int)arch.len, arch.data);
    d->arch = d->arch_buf;
    return KN_OK;
}

void rt_description_free(rt_description *d) {
    if (!d) return;
    gguf_close(d->file);
    free(d->keys);
    memset(d, 0, sizeof *d);
}
