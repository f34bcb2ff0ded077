/*
 * registry_front.c — a file's front: its vocabulary, chat format, sha256
 * and shape, read from the metadata without the weights (see kiln/runtime.h).
 *
 * One front per entry at a time (entry->front), built by one thread while
 * the others wait for its outcome (as loads are), held by requests
 * (rt_front_acquire) and by the file's instances. A file that changed on
 * disk gets a new front; the old one is freed when its last holder lets
 * go. Fronts nobody holds stay until more than RT_IDLE_FRONTS are idle,
 * the least recently used going first.
 */
#include "kiln/tokenizer.h"
#include "registry_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shape of an open model file (model_read_shape) and its architecture's name. */
static kn_status read_shape(const gguf_ctx *g, model_shape *s, char arch[64], kn_err *err) {
    gguf_str a = {0};
    snprintf(arch, 64, "llama");
    if (gguf_get_str(g, "general.architecture", &a) == KN_OK && a.len < 64) snprintf(arch, 64, "%.*s", (int)a.len, a.data);
    return model_read_shape(g, s, err);
}

static void front_free(front_rec *f) {
    if (!f) return;
    tok_chat_destroy(f->pub.chat);
    tok_vocab_destroy(f->pub.vocab);
    free(f);
}

/* The smallest context a new instance of this file gets (see rt_front.ctx_min). */
static int ctx_min_of(const rt_registry *r, const model_shape *s) {
    int train = (int)(s->ctx_train > (1 << 24) ? (1 << 24) : s->ctx_train);
    if (s->encoder) {
        if (train > (1 << 20)) train = 1 << 20;
        return r->o.n_ctx > 0 && r->o.n_ctx < train ? r->o.n_ctx : train;
    }
    if (r->o.n_ctx > 0) return r->o.n_ctx;
    return train < 2048 ? train : 2048;
}

/* Reads the front of e's file as it is now (no lock held). */
static kn_status front_build(rt_registry *r, entry *e, front_rec **out, kn_err *err) {
    *out = NULL;
    double t0 = kn_now_s();
    front_rec *f = calloc(1, sizeof *f);
    if (!f) return kn_fail(err, KN_ENOMEM, "out of memory");
    f->e = e;
    f->pub.name = e->name;
    f->pub.quant = e->quant;
    f->pub.id = e->id;
    f->pub.path = e->path;
    gguf_ctx *g = NULL;
    kn_status st;
    if (!rt_file_id_of(e->path, &f->fid)) {
        st = kn_fail(err, KN_EIO, "cannot open the model file %s", e->path);
        goto fail;
    }
    if ((st = gguf_open(e->path, &g, err)) != KN_OK || (st = read_shape(g, &f->sh, f->arch, err)) != KN_OK) {
        if (st == KN_EFORMAT || st == KN_EIO || st == KN_ENOTFOUND) rt_bad_file(err, e->path);
        goto fail;
    }
    if ((st = tok_vocab_load(g, &f->pub.vocab, err)) != KN_OK) {
        kn_err_prefix(err, "tokenizer");
        goto fail;
    }
    f->pub.encoder = f->sh.encoder;
    f->pub.n_embd = (int32_t)f->sh.n_embd;
    f->pub.n_vocab = tok_n_vocab(f->pub.vocab);
    f->pub.ctx_train = (int)(f->sh.ctx_train > (1 << 24) ? (1 << 24) : f->sh.ctx_train);
    f->pub.ctx_min = ctx_min_of(r, &f->sh);
    kn_err cerr = {0};
    if (f->pub.encoder) {
        snprintf(f->pub.chat_err, sizeof f->pub.chat_err, "%s:%s is an embedding model", e->name, e->quant);
    } else if (tok_chat_create_with(g, f->pub.vocab, r->o.chat_template, &f->pub.chat, &f->pub.chat_source, &cerr) != KN_OK) {
        snprintf(f->pub.chat_err, sizeof f->pub.chat_err, "%s", cerr.msg);
        KN_WARN("%s: no usable chat template (%s); chat requests will fail", e->id, cerr.msg);
    }
    gguf_close(g);
    g = NULL;
    double t_meta = kn_now_s() - t0;
    if (r->o.hash_files) rt_file_sha256(r, e, &f->fid, f->pub.sha256);
    KN_INFO("%s: front read in %.1f ms (vocabulary of %d tokens, chat template %s%s)", e->id, t_meta * 1e3,
            f->pub.n_vocab, f->pub.chat ? (f->pub.chat_source ? f->pub.chat_source : "model") : "none",
            r->o.hash_files ? (f->pub.sha256[0] ? ", sha256 known" : ", no sha256") : "");
    *out = f;
    return KN_OK;
fail:
    gguf_close(g);
    front_free(f);
    return st;
}

/* Frees the least recently used idle fronts beyond RT_IDLE_FRONTS (mu
 * held); returns them in a list for the caller to free unlocked. */
static front_rec *trim_idle_locked(rt_registry *r, front_rec **extra) {
    size_t idle = 0;
    for (size_t i = 0; i < r->n; i++) idle += r->e[i].front && r->e[i].front->refs == 0;
    front_rec *list = NULL;
    while (idle > RT_IDLE_FRONTS) {
        entry *lru = NULL;
        for (size_t i = 0; i < r->n; i++) {
            front_rec *f = r->e[i].front;
            if (f && f->refs == 0 && (!lru || f->last_used < lru->front->last_used)) lru = &r->e[i];
        }
        front_rec *f = lru->front;
        lru->front = NULL;
        f->e = (entry *)list; /* reuse the link while it is on its way out */
        list = f;
        idle--;
    }
    *extra = list;
    return list;
}

static void free_list(front_rec *list) {
    while (list) {
        front_rec *next = (front_rec *)list->e;
        front_free(list);
        list = next;
    }
}

kn_status rt_front_get(rt_registry *r, entry *e, front_rec **out, kn_err *err) {
    *out = NULL;
    file_id now;
    bool have = rt_file_id_of(e->path, &now);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        front_rec *f = e->front;
        if (f && have && !rt_file_id_eq(&f->fid, &now)) {
            /* the file changed on disk: a new front; the old one goes with its last holder */
            e->front = NULL;
            if (f->refs == 0) {
                pthread_mutex_unlock(&r->mu);
                front_free(f);
                pthread_mutex_lock(&r->mu);
            } else {
                f->detached = true;
            }
            continue;
        }
        if (f) {
            f->refs++;
            f->last_used = kn_now_s();
            pthread_mutex_unlock(&r->mu);
            *out = f;
            return KN_OK;
        }
        if (!e->front_building) break;
        /* another thread is reading the file: share its outcome */
        unsigned gen = e->front_gen;
        while (e->front_building && e->front_gen == gen) pthread_cond_wait(&r->cv, &r->mu);
        if (!e->front && e->front_err.status != KN_OK) {
            kn_status st = e->front_err.status;
            if (err) *err = e->front_err;
            pthread_mutex_unlock(&r->mu);
            return st;
        }
    }
    e->front_building = true;
    pthread_mutex_unlock(&r->mu);
    kn_err ferr = {0};
    front_rec *f = NULL;
    kn_status st = front_build(r, e, &f, &ferr);
    if (st == KN_ENOTFOUND) st = KN_EFORMAT; /* a key missing from the file: a bad file, not a bad name */
    if (st != KN_OK) {
        /* an attempt to load the file, which failed at its metadata: logged as loads are */
        KN_INFO("loading %s (%s:%s) from %s (reading its metadata)", e->id, e->name, e->quant, e->path);
        ferr.status = st;
        rt_load_failed(r, e, st, &ferr);
    }
    front_rec *trimmed = NULL;
    pthread_mutex_lock(&r->mu);
    e->front_building = false;
    e->front_gen++;
    e->front_err = st == KN_OK ? (kn_err){0} : ferr;
    if (st == KN_OK) {
        f->refs = 1;
        f->last_used = kn_now_s();
        e->front = f;
        trim_idle_locked(r, &trimmed);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free_list(trimmed);
    if (st != KN_OK) {
        if (err) *err = ferr;
        return st;
    }
    *out = f;
    return KN_OK;
}

void rt_front_put(rt_registry *r, front_rec *f) {
    if (!f) return;
    front_rec *trimmed = NULL;
    pthread_mutex_lock(&r->mu);
    bool gone = --f->refs == 0 && f->detached;
    f->last_used = kn_now_s();
    if (!gone && f->refs == 0) trim_idle_locked(r, &trimmed);
    pthread_mutex_unlock(&r->mu);
    if (gone) front_free(f);
    free_list(trimmed);
}

void rt_fronts_free(rt_registry *r) {
    for (size_t i = 0; i < r->n; i++) {
        front_free(r->e[i].front);
        r->e[i].front = NULL;
    }
}

kn_status rt_front_acquire(rt_registry *r, const char *name, const rt_front **out, kn_err *err) {
    *out = NULL;
    entry *e = rt_resolve(r, name, err);
    if (!e) return KN_ENOTFOUND;
    front_rec *f = NULL;
    kn_status st = rt_front_get(r, e, &f, err);
    if (st == KN_OK) *out = &f->pub;
    return st;
}

void rt_front_release(rt_registry *r, const rt_front *f) { rt_front_put(r, (front_rec *)f); }
