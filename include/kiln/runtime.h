/*
 * kiln/runtime.h — the model manager: the GGUF files of a model directory (or
 * one file) under `name:QUANT` names, loaded on first use into instances,
 * shared by every request that names them, unloaded when idle past their
 * keep-alive, and kept within a memory budget.
 *
 * Owns: the table of files, their fronts (below), the loaded instances
 * (weights, thread pool, draft model) and a cleanup thread. What serves an
 * instance (the engine's scheduler) is attached and detached through
 * rt_hooks, so the registry knows no engine. Borrows the kernel set and
 * the metrics registry (it registers its own families there).
 *
 * Fronts. What a request needs before the weights: the vocabulary, the
 * chat format, the file's sha256 and a few numbers of its shape, read from
 * the file's metadata (no weights; a few ms for a large vocabulary). A
 * front is built once per file identity and shared by every request and
 * by the file's instances (rt_model.front), so a loaded model does not
 * build its vocabulary twice. Fronts of files without an instance stay
 * for a while (the RT_IDLE_FRONTS most recently used) so that answers can
 * be found in the response cache without loading the weights.
 *
 * Names. A file DIR/<name>-<QUANT>.gguf (also `.<QUANT>`) or
 * DIR/<name>/<QUANT>.gguf is model <name> in quantization <QUANT> (labels
 * match case-insensitively and are shown upper-case). A file without such a
 * suffix is model <basename> with the label of its general.file_type, or of
 * its dominant tensor type. Requests say `name`, `name:QUANT` or
 * `org/repo:QUANT`:
 *  - a request equal to a file's path without `.gguf` (e.g.
 *    `tiny-llama-Q4_K_M`) names that file;
 *  - aliases from the config are replaced first;
 *  - `name` alone picks Q4_K_M, else the smallest file of that name;
 *  - an unknown quantization is KN_ENOTFOUND listing the ones available.
 * Only files the scan found resolve, so no request reaches outside the
 * directory.
 *
 * Instances are keyed by (file, context size); the KV type, slots and
 * threads are the server's. Decoder models serve generation and embeddings
 * from one instance. Encoder models (bert) load without a chat template, KV
 * or draft model (chat is NULL, chat_err says it is an embedding model),
 * at their trained context (or the server's smaller one) whatever a request
 * asks, and their scheduler micro-batches embedding requests. A request whose context (num_ctx) is within an
 * instance's uses it with a per-request limit; a larger one gets its own
 * instance.
 *
 * A file that cannot be read (not GGUF, truncated, no tokenizer) fails the
 * front as it fails a load: logged ("cannot load NAME:QUANT: ..."),
 * counted in kiln_model_load_failures_total, and tried again by the next
 * request.
 *
 * Loading: double-checked locking per key. Check the table; if absent,
 * register a LOADING instance and load outside the table lock (other models
 * keep serving); concurrent requests for the key wait for that one load and
 * share its outcome, error included; the next request after a failure
 * retries.
 *
 * Memory: before a load the registry estimates its bytes (weights, KV for
 * the context and slots, scratch). If the estimate does not fit the budget
 * beside the loaded instances, idle instances are unloaded least recently
 * used first; if that is not enough the request waits for memory up to
 * load_wait_s, then fails with KN_EBUSY and the numbers. The context
 * defaults to the model's context_length, reduced (powers of two, not
 * below 2048 unless the model's is smaller) until its KV fits; an explicit
 * context that cannot fit is refused. After each load the estimate is
 * compared with the measured RSS growth.
 *
 * Files that change on disk: every rt_acquire stats the file (device,
 * inode, size, mtime, ctime). An idle, unpinned instance whose file changed
 * since its load is unloaded and the file loaded again (an instance in use,
 * or pinned, keeps serving the weights it read). A file that no longer
 * loads (truncated, not GGUF) fails the load with a message naming the path
 * and its size, then the reader's reason ("truncated file: ..."). The sha256 memo the
 * caches key on is per file identity, so a replacement of the same size and
 * mtime is hashed again. Files are the operator's: a symlinked model file
 * inside the directory is served like a regular file.
 *
 * Keep-alive: every real inference (rt_acquire with touch) refreshes an
 * instance's expiry. A background thread unloads expired, unpinned, idle
 * instances every cleanup_interval_s. keep_alive 0 unloads as soon as the
 * request ends; a negative one never expires; names in `pins` never unload.
 * An instance in use is never unloaded.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include "kiln/core.h"
#include "kiln/metrics.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct tok_vocab tok_vocab; /* tokenizer.h */
typedef struct tok_chat tok_chat;   /* tokenizer.h */

#define RT_MAX_MODELS 4096
#define RT_MAX_NAME 255
#define RT_MAX_QUANT 15
#define RT_IDLE_FRONTS 8 /* fronts kept for files that have no instance */

typedef struct rt_registry rt_registry;
typedef struct rt_model rt_model;
typedef struct rt_opts rt_opts;
struct model;          /* model.h: the weights, opaque here */
struct tensor_ops;     /* tensor.h: the kernel set */

/* What serves a loaded instance, attached by its owner (the engine). attach
 * runs after the weights are loaded, before the instance is visible to
 * requests, and sets m->engine; detach runs before the weights are freed;
 * cancel asks everything the instance runs to stop (shutdown). All three
 * may be NULL. */
typedef struct rt_hooks {
    void *arg;
    kn_status (*attach)(void *arg, const rt_opts *o, rt_model *m, kn_err *err);
    void (*detach)(void *arg, rt_model *m);
    void (*cancel)(void *arg, rt_model *m);
} rt_hooks;

struct rt_opts {
    int threads;
    int n_ctx;     /* per sequence; 0 = the model's context_length, reduced to fit memory */
    int n_slots;
    int max_batch;
    int queue_len;
    double queue_timeout_s;
    int kv_type;                /* a model_kv_type (model.h): 0 F16, 1 Q8_0 */
    bool mmap_weights;
    met_registry *metrics;      /* borrowed; NULL: none. Registers kiln_model_{loads,unloads,load_failures}_total
                                   and kiln_model_memory_estimate_error_bytes {model} */
    uint64_t memory_budget;     /* bytes; 0 = 90% of the cgroup limit, else of MemAvailable */
    double keep_alive_s;        /* default keep-alive (MODEL_UNLOAD_TIMEOUT); < 0: never */
    double cleanup_interval_s;  /* 0: no cleanup thread */
    double load_wait_s;         /* how long a load may wait for memory (default 30) */
    const char *aliases;        /* "alias=target,..." (may be NULL) */
    const char *pins;           /* "name,..." never unloaded (may be NULL) */
    int batch_wait_ms;          /* the scheduler's batching wait */
    int block_size;             /* KV positions per block (0: 32) */
    int kv_blocks;              /* KV pool in blocks (0: every slot its context, plus cache_bytes) */
    uint64_t cache_bytes;       /* KV pool room for cached prefixes beyond the slots */
    int spec;                   /* requests' default speculative decoding (an eng_spec_mode) */
    int spec_max;               /* draft tokens per step */
    const char *draft_path;     /* a draft model file for draft-model speculation (may be NULL) */
    const char *chat_template;  /* every model's chat template, chosen by the user: a built-in's name or Jinja
                                   source (NULL: each model's own) */
    bool hash_files;            /* compute each file's sha256 (rt_front.sha256; the caches key on it) */
    rt_hooks hooks;             /* copied */
};

/* A file's front (see above). Valid while acquired. */
typedef struct rt_front {
    const char *name, *quant, *id, *path; /* the file's names (as rt_entry_info) */
    tok_vocab *vocab;
    tok_chat *chat;          /* NULL when the template cannot be used (chat_err says why) */
    char chat_err[sizeof(((kn_err *)0)->msg)];
    const char *chat_source; /* "model", "override" or a built-in's name */
    char sha256[65];         /* the file's sha256 (hex) when rt_opts.hash_files, else "" */
    bool encoder;            /* an embedding (encoder) model: no generation */
    int32_t n_embd, n_vocab;
    int ctx_train;           /* the model's context_length */
    int ctx_min;             /* the smallest context an instance of this file gets under this configuration
                                (the explicit one, else the floor of the automatic one; an encoder's is its
                                fixed context) */
} rt_front;

/* A loaded instance, pinned by rt_acquire until rt_release. */
struct rt_model {
    const char *name;        /* the file's model name (e.g. "tiny-llama") */
    const char *quant;       /* its label (e.g. "Q4_K_M") */
    const char *id;          /* the file's path under the directory without .gguf (e.g. "tiny-llama-Q4_K_M") */
    const char *path;
    struct model *m;         /* the weights (model.h) */
    const struct model *draft; /* the draft model sharing the vocabulary, or NULL */
    const rt_front *front;   /* vocabulary, chat format, digest (held for the instance's life) */
    char sha256[65];         /* the digest of the file this instance loaded ("" when unknown) */
    kn_pool *pool;           /* the instance's compute threads */
    void *engine;            /* set by rt_hooks.attach (the scheduler) */
    const char *arch;        /* general.architecture */
    uint64_t weight_bytes;
    int n_ctx;
    bool ctx_reduced;        /* the automatic context was cut to fit memory */
    double load_s;           /* seconds the load took */
    time_t loaded_at;
    uint64_t est_bytes;      /* the estimate the budget counts */
    uint64_t kv_cache_bytes; /* KV pool room for cached prefixes beyond the slots (what the budget allowed) */
};

kn_status rt_registry_create(const char *dir, const char *file, const rt_opts *o, const struct tensor_ops *ops,
                             rt_registry **out, kn_err *err);
void rt_registry_destroy(rt_registry *r); /* unloads everything (logged); accepts NULL */
/* The options the registry was created with (its copy). */
const rt_opts *rt_registry_opts(const rt_registry *r);

typedef struct rt_entry_info {
    const char *name, *quant, *id, *path;
    uint64_t size;
    time_t mtime;
    bool loaded;
} rt_entry_info;

size_t rt_registry_count(const rt_registry *r);
void rt_registry_entry(rt_registry *r, size_t i, rt_entry_info *info);
/* "a:Q4_K_M, b:F16, ..." (at most cap bytes, "..." when cut). */
void rt_registry_names(const rt_registry *r, char *buf, size_t cap);
/* True when a request for name would resolve to a file. */
bool rt_registry_has(rt_registry *r, const char *name);
/* Resolves a request name to its file without loading it (KN_ENOTFOUND
 * lists what exists). */
kn_status rt_lookup(rt_registry *r, const char *name, rt_entry_info *info, kn_err *err);
uint64_t rt_registry_budget(const rt_registry *r);

/* One metadata key of a model file, for rt_describe. */
typedef enum rt_meta_kind { RT_META_INT, RT_META_UINT, RT_META_FLOAT, RT_META_BOOL, RT_META_STRING, RT_META_ARRAY } rt_meta_kind;
typedef struct rt_meta {
    const char *key;
    size_t key_len;
    rt_meta_kind kind;
    int64_t i;            /* INT, BOOL */
    uint64_t u;           /* UINT */
    double f;             /* FLOAT */
    const char *str;      /* STRING (not NUL-terminated; may be any bytes) */
    size_t len;           /* STRING: bytes; ARRAY: elements */
    const char *elem;     /* ARRAY: the element type's name ("string", "int32", ...) */
} rt_meta;
/* The metadata of a file, read without loading it (for /api/show): every
 * key but the chat template, which comes apart. Strings point into the
 * open file, which the description holds until rt_description_free.
 * KN_ENOTFOUND for an unknown name; the reader's error for a bad file. */
typedef struct rt_description {
    rt_entry_info info;
    const char *arch;     /* general.architecture ("" when absent), NUL-terminated */
    const char *tmpl;     /* tokenizer.chat_template (NULL when absent), not NUL-terminated */
    size_t tmpl_len;
    rt_meta *keys;        /* [n_keys] */
    size_t n_keys;
    void *file;           /* private: the open file */
    char arch_buf[64];
} rt_description;
kn_status rt_describe(rt_registry *r, const char *name, rt_description *out, kn_err *err);
void rt_description_free(rt_description *d); /* accepts a zeroed one */

/* The front of the file a request names (built if needed, see above).
 * KN_ENOTFOUND: unknown name (the message lists what exists); another
 * status: the file cannot be read (the message names it). Release it. */
kn_status rt_front_acquire(rt_registry *r, const char *name, const rt_front **out, kn_err *err);
void rt_front_release(rt_registry *r, const rt_front *f); /* accepts NULL */

typedef struct rt_acquire_opts {
    int n_ctx;           /* 0: the default; larger than an instance's: a new instance */
    double keep_alive_s; /* NAN: the default; < 0 never; 0 unload when the request ends */
    bool touch;          /* a real inference: refreshes the keep-alive */
    bool loaded_only;    /* never load: *out stays NULL (KN_OK) when no instance is loaded */
} rt_acquire_opts;

/* Resolves, loads if needed and pins. ao may be NULL (defaults, touch).
 * KN_ENOTFOUND: unknown name or quantization (the message lists what
 * exists); KN_EBUSY: no memory within the wait (the message has the
 * numbers); other statuses: the load failed. */
kn_status rt_acquire(rt_registry *r, const char *name, const rt_acquire_opts *ao, rt_model **out, kn_err *err);
void rt_release(rt_registry *r, rt_model *m); /* accepts NULL */

/* Loaded instances, for /api/ps, /health and gauges. */
typedef struct rt_loaded_info {
    rt_model *m;
    int in_flight;       /* pins */
    double expires_in_s; /* < 0: never */
    time_t expires_at;   /* wall clock; 0 when never */
    bool pinned;
} rt_loaded_info;
/* Calls fn for every loaded instance (pinned during the call; does not
 * refresh keep-alives). */
void rt_foreach_loaded(rt_registry *r, void (*fn)(void *arg, const rt_loaded_info *info), void *arg);

/* Unloads expired instances now (what the cleanup thread does); returns how
 * many were unloaded. */
int rt_cleanup(rt_registry *r);

/* Asks every loaded instance to stop what it runs (rt_hooks.cancel). */
void rt_cancel_all(rt_registry *r);

/* ---- pure helpers (unit-tested) ---- */

/* The quantization label a file-name suffix names ("q4_k_m" -> "Q4_K_M"),
 * or NULL. */
const char *rt_quant_label(const char *s, size_t n);
/* Splits a file path under the directory (without .gguf) into model name
 * and quant label; false when it has no quant suffix (name = the path). */
bool rt_split_file_id(const char *id, char *name, size_t name_cap, char *quant, size_t quant_cap);
/* Splits a request "name[:QUANT]"; false on a malformed name (empty, too
 * long, control characters, "..", a leading '/'). quant is "" when absent. */
bool rt_parse_request(const char *req, char *name, size_t name_cap, char *quant, size_t quant_cap);
/* The instance cache key: "id|task|n_ctx|kv|threads" (kv: a model_kv_type). */
void rt_instance_key(const char *id, const char *task, int n_ctx, int kv, int threads, char *buf, size_t cap);

#endif
