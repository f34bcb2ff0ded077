/*
 * registry.h — the models a server can serve: the GGUF files of a model
 * directory (or one file), loaded on first use and shared by every request
 * that names them.
 *
 * Owns: the table of entries (name, path, size, mtime) and each loaded
 * instance: the model, its vocabulary, its chat format, its thread pool and
 * its scheduler (engine thread). Borrows the kernel set.
 *
 * Names: a file DIR/<name>.gguf is served as <name>. Only names found by the
 * scan resolve, so a request cannot reach a file outside the directory
 * (names with '/' or ".." simply do not exist).
 *
 * Loading: rt_acquire loads a model on first use under double-checked
 * locking (the table lock is never held while loading, so requests to other
 * loaded models go on); concurrent first requests cause one load. A loaded
 * instance stays until rt_registry_destroy.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef KILN_RUNTIME_REGISTRY_H
#define KILN_RUNTIME_REGISTRY_H

#include "../core/kn.h"
#include "../engine/chat.h"
#include "../engine/sched.h"
#include "../model/model.h"
#include "../tokenizer/tok.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define RT_MAX_MODELS 4096
#define RT_MAX_NAME 255

typedef struct rt_registry rt_registry;

/* Metric families the registry fills per model (label: model); any may be
 * NULL. Owned by the caller's metrics registry. */
typedef struct rt_metrics {
    met_family *ttft, *itl, *queue_wait, *prefill, *batch_size; /* histograms */
    met_family *prompt_tokens, *gen_tokens;                     /* counters */
    met_family *loads, *unloads, *load_failures;                /* counters */
    met_window *ttft_window;
} rt_metrics;

typedef struct rt_opts {
    int threads;
    int n_ctx;     /* per sequence; 0 = the model's trained context, at most 4096 */
    int n_slots;
    int max_batch;
    int queue_len;
    double queue_timeout_s;
    model_kv_type kv_type;
    bool mmap_weights;
    const rt_metrics *metrics; /* borrowed; NULL: none */
} rt_opts;

/* A loaded instance, pinned by rt_acquire until rt_release. */
typedef struct rt_model {
    const char *name;
    const char *path;
    model *m;
    tok_vocab *vocab;
    eng_chat *chat;          /* NULL when the template cannot be used (chat_err says why) */
    char chat_err[sizeof(((kn_err *)0)->msg)];
    const char *chat_source; /* "model" or a built-in's name */
    eng_sched *sched;
    int n_ctx;
    double load_s;           /* seconds the load took */
    time_t loaded_at;
} rt_model;

/* Scans dir for *.gguf (not recursively) or takes the one file when file
 * is set (dir is then ignored). The kernel set ops is borrowed. */
kn_status rt_registry_create(const char *dir, const char *file, const rt_opts *o, const tensor_ops *ops,
                             rt_registry **out, kn_err *err);
void rt_registry_destroy(rt_registry *r); /* unloads everything; accepts NULL */

typedef struct rt_entry_info {
    const char *name;
    const char *path;
    uint64_t size;
    time_t mtime;
    bool loaded;
    bool loading;
} rt_entry_info;

size_t rt_registry_count(const rt_registry *r);
/* Fills info for entry i (strings live as long as the registry). */
void rt_registry_entry(rt_registry *r, size_t i, rt_entry_info *info);
/* True while any model is loading. */
bool rt_registry_loading(rt_registry *r);
/* "a, b, c" (at most cap bytes, truncated with "...") for error messages. */
void rt_registry_names(const rt_registry *r, char *buf, size_t cap);
/* True when name is in the table. */
bool rt_registry_has(const rt_registry *r, const char *name);

/* Finds and pins a model, loading it if needed. KN_ENOTFOUND names the
 * available models; a failed load returns its error (the next call retries). */
kn_status rt_acquire(rt_registry *r, const char *name, rt_model **out, kn_err *err);
void rt_release(rt_registry *r, rt_model *m); /* accepts NULL */

/* Calls fn for every loaded instance (pinned during the call). */
void rt_foreach_loaded(rt_registry *r, void (*fn)(void *arg, rt_model *m), void *arg);

/* Cancels every queued and running request of every loaded model. */
void rt_cancel_all(rt_registry *r);

#endif
