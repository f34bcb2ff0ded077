/*
 * registry_internal.h — what the registry's files share (private to
 * src/runtime):
 *
 *   registry.c        creation, the file table, names and resolution,
 *                     listings, rt_describe, cancel
 *   registry_files.c  the directory scan, file identities and digests,
 *                     memory readings (budget, RSS)
 *   registry_front.c  fronts: vocabulary, chat format and digest of a file
 *   registry_load.c   instances: context and memory, loading, eviction,
 *                     acquire/release, keep-alive and the cleanup thread
 *
 * Locking: r->mu guards the instance list, every inst field but the
 * rt_model it wraps (written before it becomes READY), each entry's
 * front fields and `seen_*`/`sha*`, and r->used. Files are read and models
 * loaded outside the lock.
 */
#ifndef KILN_RUNTIME_REGISTRY_INTERNAL_H
#define KILN_RUNTIME_REGISTRY_INTERNAL_H

#include "kiln/runtime.h"

#include "kiln/gguf.h"
#include "kiln/model.h"

#include <pthread.h>

#define RT_MIB (1024.0 * 1024.0)

/* The identity of a file: a replaced file (new inode) or one rewritten in
 * place (ctime moves on every write, and cannot be set back like mtime)
 * differs even when its size and mtime are the same. */
typedef struct file_id {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
} file_id;

typedef struct entry entry;


/* A front and its bookkeeping (pub first: rt_front* <-> front_rec*). */
typedef struct front_rec {
    rt_front pub;
    entry *e;
    file_id fid;      /* the file it was read from */
    int refs;         /* requests and instances holding it */
    double last_used;
    bool detached;    /* no longer the entry's front (the file changed): freed at the last release */
    model_shape sh;  /* what the memory estimate needs */
    char arch[64];    /* general.architecture */
} front_rec;

struct entry {
    char *id;    /* path under the directory without .gguf */
    char *name;  /* model name */
    char *quant; /* label */
    char *path;
    uint64_t size; /* at the scan (read without the lock by resolve) */
    time_t mtime;
    uint64_t seen_size; /* as the last rt_acquire saw it, when seen (under mu) */
    time_t seen_mtime;
    bool seen;
    /* the file's sha256 as last computed, and the identity of the file it was for (under mu) */
    char sha256[65];
    file_id sha_id;
    /* the front (under mu) */
    front_rec *front;    /* the current one, NULL when none */
    bool front_building; /* a thread is building it; others wait on r->cv */
    unsigned front_gen;  /* bumped when a build ends */
    kn_err front_err;    /* the last build's failure (status KN_OK when it succeeded) */
};

enum { INST_LOADING = 0, INST_READY, INST_FAILED, INST_GONE };

typedef struct inst {
    rt_model m; /* first: rt_model* <-> inst* */
    entry *e;
    front_rec *front;  /* held for the instance's life */
    file_id fid;       /* the file as it was when the load began */
    int state;
    kn_err err;        /* INST_FAILED */
    int waiters;       /* threads waiting on this load */
    model *draft;      /* the draft model, when one is configured and shares the vocabulary */
    uint64_t cache_bytes; /* KV pool room for cached prefixes (what the budget allowed) */
    int pins;
    double last_used;  /* kn_now_s() */
    double keep_alive_s;
    bool pinned;       /* config pin: never unloaded */
    bool encoder;      /* an embedding (encoder) model: one instance at its trained context */
    bool attached;     /* the hooks' attach succeeded (detach is due) */
    struct inst *next;
} inst;

struct rt_registry {
    rt_opts o;
    char *aliases, *pins; /* copies */
    const tensor_ops *ops;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* a load or a front build finished, an instance was released or unloaded */
    pthread_cond_t stop_cv;  /* wakes the cleanup thread */
    entry *e;
    size_t n;
    inst *insts;
    uint64_t budget;
    uint64_t used; /* estimates of loading and loaded instances */
    bool stopping;
    pthread_t cleaner;
    bool cleaner_started;
    /* metric families (NULL when no metrics registry) */
    met_family *m_loads, *m_unloads, *m_load_failures, *m_estimate_error;
};

/* ---- registry_files.c ---- */
kn_status rt_scan_dir(rt_registry *r, size_t *cap, const char *dir, const char *rel, int depth, kn_err *err);
kn_status rt_add_entry(rt_registry *r, size_t *cap, const char *path, const char *rel, kn_err *err);
bool rt_file_id_of(const char *path, file_id *id);
bool rt_file_id_eq(const file_id *a, const file_id *b);
/* The file's sha256 into out, computed once per identity of the file; ""
 * when it cannot be read or is no longer the file `want`. */
void rt_file_sha256(rt_registry *r, entry *e, const file_id *want, char out[65]);
/* Prefixes a load error with the file and its size. */
void rt_bad_file(kn_err *err, const char *path);
uint64_t rt_default_budget(const char **src);
uint64_t rt_rss_bytes(void);

/* ---- registry.c ---- */
entry *rt_resolve(const rt_registry *r, const char *req, kn_err *err);
bool rt_in_list(const char *list, const char *name);
/* A load (or front) failure: logged and counted; err is prefixed with the
 * file's id unless it is about memory or the context. */
void rt_load_failed(rt_registry *r, const entry *e, kn_status st, kn_err *err);

/* ---- registry_front.c ---- */
/* The entry's current front, built if needed (no lock held on entry);
 * holds a reference. */
kn_status rt_front_get(rt_registry *r, entry *e, front_rec **out, kn_err *err);
void rt_front_put(rt_registry *r, front_rec *f);
/* Frees every front (destroy). */
void rt_fronts_free(rt_registry *r);

/* ---- registry_load.c ---- */
void rt_inst_unload(rt_registry *r, inst *in, const char *why);

#endif
