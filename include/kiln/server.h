/*
 * kiln/server.h — the HTTP server (libmicrohttpd): routes, auth, body limits,
 * SSE/NDJSON streaming and graceful shutdown, over the generation service
 * (kiln/engine.h), which owns the model registry.
 *
 * Owns: the MHD daemon, the generation service, the response and embedding
 * cache and the metrics (GET
 * /metrics, Prometheus text; rolling TTFT and end-to-end percentiles with an
 * SLA verdict in /health). Connections are served
 * one thread each (MHD thread-per-connection), so parsing, templating and
 * tokenizing on one connection never hold up another, and a streaming
 * response can wait for tokens without blocking anyone; generation itself
 * runs on each model's engine thread (src/engine/scheduler.h).
 *
 * The settings of `kiln serve` (srv_config: defaults, YAML, environment,
 * flags, profiles) are the first section below; the server the second.
 *
 * Lifecycle: srv_create -> srv_start (listening; /health says "loading"
 * until srv_set_ready) -> srv_drain (stop accepting, let requests finish
 * within the grace period, then cancel the rest) -> srv_destroy.
 */
#ifndef KILN_SERVER_H
#define KILN_SERVER_H

#include "kiln/core.h"
#include "kiln/runtime.h"

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

/* ==== settings of kiln serve ====
 * the settings of `kiln serve`: defaults, a YAML config file
 * (libyaml), the environment and command-line flags, applied in that order
 * so that the precedence is flags > environment > config file > defaults.
 *
 * Owns: srv_config holds copies of every string it was given (freed by
 * srv_config_free). Nothing global.
 *
 * The YAML file is a flat mapping whose keys are the long flag names
 * without the dashes, with '-' or '_' accepted alike (for example
 * `ctx-size: 2048`, `api_key: secret`, `models: /srv/models`). An unknown
 * key, a value of the wrong type or out of range is an error naming the key
 * and the line.
 *
 * Format of the file (at most 1 MiB): one YAML document (or none: an empty
 * file sets nothing) whose top level is a mapping of scalar keys to scalar
 * values. Nested mappings, sequences, aliases, a key given twice and empty
 * or null values (`key:`, `~`, `null`) are errors. Quoted and plain scalars
 * are read alike as text, then parsed by the key's type:
 *   strings  models, model, default-model, host, kv-type (f16|q8_0), api-key,
 *            spec (none|ngram|draft), model-draft, cache-dir,
 *            cache-policy (lru|lfu|fifo|random),
 *            profile (latency|throughput|balanced|memory); non-empty, at
 *            most 4096 bytes; default-model is a bare name (no '/' or '\',
 *            not "." or "..")
 *   lists    preload, pin: model names separated by ','; alias: `name=target`
 *            pairs separated by ',' (llama=tiny-llama-Q4_K_M,small=stories260K);
 *            cpu-range: CPU numbers and inclusive ranges separated by ','
 *            (0-3 or 0,2,4-5; CPUs 0..1023, a range low-high with low <= high).
 *            Spaces and tabs around items and around '=' are dropped, and the
 *            value is stored in that canonical form (no spaces, no empty item).
 *            A model name here: 1..256 bytes of printable ASCII without
 *            spaces, ',', '=', '\' or '"'; '/' separates path parts (org/repo,
 *            none of them empty, "." or ".."); at most one ':' (name:QUANT),
 *            not first or last. An alias name has no ':'; an alias target is
 *            a model name that is not itself an alias (no chains) and not the
 *            alias; an alias name, a pinned name or a preloaded name given
 *            twice is an error.
 *   integers base 10, optional sign; ranges: port 0..65535, threads 1..1024,
 *            ctx-size 0..2^24, parallel 1..1024, batch-size 1..65536,
 *            kv-tokens 0..2^28, queue-len 0..100000, queue-timeout 0..86400,
 *            grace-period 0..3600, conn-limit 1..100000, conn-timeout
 *            1..86400, n-predict -1..2^24, sla-p95-ms 1..3600000, sla-window
 *            10..86400, unload-timeout -1..2592000 (30 days), cleanup-interval
 *            1..3600, batch-wait-ms 0..1000, cache-mib 0..65536, kv-block-size
 *            16..256 (a power of two), cache-ram 0..2^20, draft-max 0..16,
 *            cache-ttl-response and cache-ttl-embedding 1..31536000, send-timeout and
 *            read-timeout 1..86400, limit-messages 1..1000000, limit-max-tokens
 *            1..2^24, limit-embed-inputs 1..2048, limit-stops 0..16,
 *            limit-logit-bias 0..2^20, limit-json-depth 2..1000, responses-max
 *            0..1000000, responses-mib 1..65536, responses-ttl 1..31536000; max-body
 *            1 KiB..1 GiB, memory-budget and cache-disk-size 0..2^50 also take
 *            a k/m/g suffix (binary: 8m = 8 MiB)
 *   booleans mmap, response-cache, embedding-cache, cache-compress, log-prompts:
 *            true/false, yes/no, on/off, 1/0 (any case)
 *
 * Profiles (--profile, KILN_PROFILE or `profile:` in the file) set these
 * knobs at the level of the defaults, so that the file, the environment and
 * the flags still override each knob one by one:
 *
 *   profile     parallel  batch-size  batch-wait-ms  ctx-size  kv-type  cache-mib  spec   cache-ram
 *   latency         1        512           0            0       f16       512    ngram     1024
 *   throughput     16       1024          10            0       f16       512    none      2048
 *   balanced        4        512           2            0       f16       512    ngram     1024
 *   memory          2        512           2         2048       q8_0       64    none         0
 *
 * balanced is the default and equals the plain defaults. latency decodes
 * one sequence at a time with no batching wait (lowest time per token);
 * throughput batches up to 16 sequences and waits up to 10 ms for more
 * requests to join a step; memory trades context, KV precision and cache
 * for a small footprint.
 *
 * Every function that applies settings (set, load_yaml, apply_env,
 * parse_args) either applies all of them or, on error, leaves c unchanged.
 * Error messages never repeat the api-key value.
 */
typedef struct srv_config {
    char *models_dir;      /* --models DIR (default "./models") */
    char *model_file;      /* -m FILE: serve this one file (NULL: scan models_dir) */
    char *default_model;   /* --default-model NAME: used when a request names none */
    char *host;            /* --host (default "127.0.0.1") */
    int port;              /* --port (default 8080; 0 = any free port) */
    int threads;           /* -t (default: online CPUs) */
    int ctx;               /* -c: context of EACH sequence (0 = the model's, at most 4096) */
    int parallel;          /* -np: sequences decoded together (default 4) */
    int batch;             /* -b: tokens per forward step (default 512) */
    int kv_tokens;         /* --kv-tokens: the KV pool in positions (0 = parallel * ctx plus cache-ram);
                              smaller pools oversubscribe and preempt */
    int kv_block_size;     /* --kv-block-size: KV positions per block, a power of two 16..256 (default 32) */
    int cache_ram_mib;     /* --cache-ram: KV pool room in MiB for cached prefixes beyond the slots
                              (default 1024, the balanced profile) */
    char *spec;            /* --spec none|ngram|draft: requests' default speculative decoding (default "ngram") */
    int draft_max;         /* --draft-max: draft tokens per step (default 8; 0 = off) */
    char *model_draft;     /* -md/--model-draft FILE: the draft model for --spec draft (NULL = none) */
    char *chat_template;   /* --chat-template NAME|JINJA: every model's chat template (a built-in or source) */
    char *chat_template_file; /* --chat-template-file FILE: the same from a file */
    char *kv_type;         /* --kv-type f16|q8_0 (default "f16") */
    char *api_key;         /* --api-key (NULL = no auth) */
    int64_t max_body;      /* --max-body BYTES (default 8 MiB) */
    int queue_len;         /* --queue-len: requests waiting for a slot (default 64) */
    int queue_timeout_s;   /* --queue-timeout: longest wait for a slot before 503 (default 60) */
    int grace_s;           /* --grace-period: shutdown waits this long for requests in flight (default 30) */
    int conn_limit;        /* --conn-limit: open connections (default 1024) */
    int conn_timeout_s;    /* --conn-timeout: idle connection timeout (default 60) */
    int send_timeout_s;    /* --send-timeout: a client that reads nothing of its answer for this long is
                              disconnected and its sequence cancelled (default 120) */
    int read_timeout_s;    /* --read-timeout: the request body must arrive within this many seconds of
                              the headers, else 408 or the connection is closed (default 60) */
    /* request limits (issue 11): each breach is a 400 naming the field and the flag */
    int limit_messages;    /* --limit-messages: chat messages per request (default 1024) */
    int limit_max_tokens;  /* --limit-max-tokens: max_tokens / num_predict a request may ask, and the cap
                              of a generation that sets none (default 32768) */
    int limit_embed_inputs; /* --limit-embed-inputs: embedding inputs per request (default 2048) */
    int limit_stops;       /* --limit-stops: stop strings per request (default 16, the most supported) */
    int limit_logit_bias;  /* --limit-logit-bias: logit_bias entries per request (default 1024) */
    int limit_json_depth;  /* --limit-json-depth: nesting of arrays and objects in a body (default 64) */
    char *cors_origin;     /* --cors-origin: "*" or a comma list of origins (scheme://host[:port]) that
                              browsers may call from (NULL = CORS off, the default) */
    bool log_prompts;      /* --log-prompts: log prompt and completion text (default false: logs carry
                              no request text) */
    int max_tokens;        /* --n-predict: default generation limit when a request sets none (default -1 = context) */
    bool mmap_weights;     /* --mmap */
    int sla_p95_ms;        /* --sla-p95-ms: end-to-end p95 target reported in /health (default 2000) */
    int sla_window_s;      /* --sla-window: seconds of the rolling percentiles (default 300) */
    /* model manager (issue 7) */
    int64_t memory_budget; /* --memory-budget BYTES (k/m/g): what loaded models may take in all; default 0 =
                              auto: the runtime uses 90% of the cgroup memory limit, or of MemAvailable
                              when there is no limit */
    int unload_timeout_s;  /* --unload-timeout / MODEL_UNLOAD_TIMEOUT: seconds an idle model stays loaded
                              (default 300; 0 = unload as soon as it is idle; -1 = never) */
    int cleanup_interval_s; /* --cleanup-interval / CLEANUP_CHECK_INTERVAL: seconds between checks for
                               expired models (default 30) */
    char *preload;         /* --preload NAMES: models loaded at startup, canonical comma list (NULL = none) */
    char *pin;             /* --pin NAMES: models that never unload, canonical comma list (NULL = none) */
    char *aliases;         /* --alias A=T,...: canonical `alias=target` comma list (NULL = none) */
    char *profile;         /* --profile / KILN_PROFILE: latency|throughput|balanced|memory (default
                              "balanced"); the knobs it set are in the fields above */
    int batch_wait_ms;     /* --batch-wait-ms: how long a decode step may wait for more requests to
                              batch (default 2, the balanced profile) */
    int cache_mib;         /* --cache-mib: the memory (L1) budget of the response and embedding caches in
                              MiB, shared half and half when both are on (default 512; 0 = no L1) */
    bool response_cache;   /* --response-cache: cache deterministic completions (default true) */
    bool embedding_cache;  /* --embedding-cache: cache embeddings per input (default true) */
    char *cache_policy;    /* --cache-policy lru|lfu|fifo|random: L1 eviction (default "lru") */
    bool cache_compress;   /* --cache-compress: zstd for L1 values over 1 KiB (default true) */
    int cache_ttl_response_s;  /* --cache-ttl-response: seconds (default 3600) */
    int cache_ttl_embedding_s; /* --cache-ttl-embedding: seconds (default 86400) */
    char *cache_dir;       /* --cache-dir DIR: the disk (L2) cache, LMDB (default $XDG_CACHE_HOME/kiln, else
                              ~/.cache/kiln; NULL when neither is set = no L2); never inside the models dir */
    int64_t cache_disk_size; /* --cache-disk-size BYTES (k/m/g): L2 size limit (default 10g; 0 = no L2) */
    /* the OpenAI Responses store (previous_response_id, GET /v1/responses/{id}) */
    int responses_max;     /* --responses-max: stored responses kept (default 1000; 0 = store nothing) */
    int responses_mib;     /* --responses-mib: their bytes in all, in MiB (default 64) */
    int responses_ttl_s;   /* --responses-ttl: seconds a stored response is kept (default 3600) */
    char *cpu_range;       /* --cpu-range: CPUs the compute threads may run on, canonical
                              (e.g. "0-3" or "0,2,4-5"; NULL = no affinity); see srv_config_cpu_set */
    bool print_config;     /* --print-config (a flag only, not a file key): print srv_config_dump and exit */
} srv_config;

/* The default disk cache directory: $XDG_CACHE_HOME/kiln when that is an
 * absolute path, else $HOME/.cache/kiln, else NULL (malloc'd). */
char *srv_default_cache_dir(void);

/* Fills the defaults. On allocation failure a string default is left NULL,
 * which srv_config_validate reports. */
void srv_config_init(srv_config *c);
void srv_config_free(srv_config *c); /* frees the strings and zeroes c; accepts a zeroed struct; idempotent */

/* Applies a YAML file on top of c (only the keys it sets). Errors: KN_EIO
 * (cannot open/read, naming the path), KN_ERANGE (over 1 MiB), KN_EFORMAT
 * (malformed YAML: libyaml's message with line and column; not a flat
 * mapping of scalars), or set's errors, all prefixed "PATH:LINE: ". */
kn_status srv_config_load_yaml(srv_config *c, const char *path, kn_err *err);

/* Applies one setting by its flag name (long, without dashes, '-' or '_'),
 * value as text (copied). Shared by the YAML loader, the environment and the
 * flag parser. Unknown key: KN_ENOTFOUND; bad value: KN_EINVAL; out of
 * range: KN_ERANGE; the message names the key and the value. */
kn_status srv_config_set(srv_config *c, const char *key, const char *value, kn_err *err);

/* Checks cross-field rules (a model source is set, ranges, kv-tokens holds
 * at least one sequence of ctx-size, parallel * ctx-size fits kv-tokens'
 * range when kv-tokens is 0). */
kn_status srv_config_validate(const srv_config *c, kn_err *err);

/* Applies the environment on top of c: KILN_HOST, KILN_PORT, KILN_MODELS,
 * KILN_API_KEY, KILN_PROFILE, MODEL_UNLOAD_TIMEOUT and CLEANUP_CHECK_INTERVAL
 * (whole seconds), validated as the keys host, port, models, api-key,
 * profile, unload-timeout and cleanup-interval. KILN_PROFILE only sets the
 * profile field (srv_config_from_args applies its knobs). A variable that
 * is unset or empty sets nothing. An invalid value is an error naming the
 * variable. */
kn_status srv_config_apply_env(srv_config *c, kn_err *err);

/* Applies the flags of `kiln serve` (argv[0] is "serve" and is skipped):
 * long flags `--name VALUE` and `--name=VALUE` for every key above ('-' or
 * '_' inside the name), and the short forms -m (model), -t (threads),
 * -c (ctx-size), -np (parallel), -b (batch-size), -n (n-predict),
 * -md (model-draft), each followed by its value as the next argument (which
 * may start with '-', as in `-n -1`). A boolean key (mmap, log-prompts,
 * response-cache, embedding-cache, cache-compress, print-config) is given
 * as `--name` alone (true), `--name=BOOL` or `--name BOOL` (BOOL as in the
 * file: true/false, yes/no, on/off, 1/0): a bare `--name` followed by
 * another option (an argument starting with '-') or by nothing is the
 * switch; any other next argument is its value, and one that is not a
 * boolean is an error naming the flag. -h/--help are skipped
 * (the caller handles them). `--config FILE` / `--config=FILE` is not a
 * setting: it is returned through *config_path (a pointer into argv, NULL if
 * absent) when config_path is non-NULL; giving it twice is an error. Later
 * flags override earlier ones. Unknown flags, positional arguments and a
 * missing value are errors naming the flag.
 *
 * c may be NULL: then the flags are only checked (parsed into a scratch
 * config and discarded) and *config_path is found. This is the first pass of
 * the protocol below.
 *
 * The protocol giving flags > environment > config file > profile >
 * defaults (what srv_config_from_args does; the file is read once):
 *     srv_config_parse_args(NULL, argc, argv, &path, err);  // pass 1: check, find --config
 *     // find the profile: the same layers on a scratch config
 *     srv_config_init(&s);
 *     if (path) srv_config_load_yaml(&s, path, err);
 *     srv_config_apply_env(&s, err);
 *     srv_config_parse_args(&s, argc, argv, NULL, err);     // s.profile: flag > env > file > default
 *     // then the real layers, the profile's knobs at the level of the defaults
 *     srv_config_init(&c);
 *     srv_config_apply_profile(&c, s.profile, err);
 *     if (path) srv_config_load_yaml(&c, path, err);
 *     srv_config_apply_env(&c, err);
 *     srv_config_parse_args(&c, argc, argv, NULL, err);     // pass 2: flags win
 *     srv_config_validate(&c, err);
 * Each knob is then set by the highest layer that names it, and c.profile
 * names the profile whose values fill the knobs no layer named.
 */
kn_status srv_config_parse_args(srv_config *c, int argc, char **argv, const char **config_path,
                                kn_err *err);

/* The whole protocol above: initializes c (do not call srv_config_init
 * first), then applies the profile, the config file, the environment and
 * the flags and validates. Whatever it returns, the caller later calls
 * srv_config_free(c). */
kn_status srv_config_from_args(srv_config *c, int argc, char **argv, kn_err *err);

/* Sets c->profile to name and the knobs of that profile (the table at the
 * top) on top of c. Meant for a config fresh from srv_config_init (the
 * "defaults" level). Unknown name: KN_EINVAL naming it; c is then unchanged. */
kn_status srv_config_apply_profile(srv_config *c, const char *name, kn_err *err);

/* The settings in effect as YAML text that srv_config_load_yaml reads back
 * (malloc'd, NUL-terminated; the caller frees it; NULL when out of memory).
 * One `key: value` line per file key in the order of the table in config.c;
 * strings are double-quoted (escaping \\, \" and control bytes as \xNN;
 * other bytes as they are), byte sizes use the largest exact k/m/g suffix.
 * Lines that must not set anything when read back are comments: a string
 * key that is not set (`# model: (none)`) and the api-key, which is never
 * shown (`# api-key: (set)` or `# api-key: (none)`). Loaded on top of
 * srv_config_init, the dump gives back every field but api_key and
 * print_config. */
char *srv_config_dump(const srv_config *c);

/* ---- helpers over the list values ---------------------------------------- */

/* Steps through a canonical comma list (preload, pin, aliases, cpu_range):
 * *cursor starts at the list (NULL is an empty list); each call gives the
 * next item as *item (not NUL-terminated) and *len, and returns false at
 * the end. Does not allocate. */
bool srv_config_list_next(const char **cursor, const char **item, size_t *len);

/* Whether name is in c->pin (exact, case-sensitive comparison). */
bool srv_config_is_pinned(const srv_config *c, const char *name);

/* The target of alias name in c->aliases (exact match), as a pointer into
 * c->aliases with its length in *len (not NUL-terminated), or NULL when
 * name is not an alias. */
const char *srv_config_alias_target(const srv_config *c, const char *name, size_t *len);

/* Parses a cpu-range text (the syntax above) into *out. Bad syntax:
 * KN_EINVAL; a CPU over 1023 or a range low > high: KN_ERANGE; the message
 * names the item. Pure: does not look at the machine. */
kn_status srv_cpu_range_parse(const char *text, cpu_set_t *out, kn_err *err);

/* The CPUs of c->cpu_range as a set, checked against the CPUs this process
 * may run on (sched_getaffinity): a CPU outside them is KN_EINVAL naming it
 * and listing the allowed ones. With no cpu-range, *out is empty and
 * *count 0 (no affinity wanted). *count (may be NULL) gets the number of
 * CPUs in the set. */
kn_status srv_config_cpu_set(const srv_config *c, cpu_set_t *out, int *count, kn_err *err);

/* ==== the server ==== */

typedef struct srv_server srv_server;

/* Creates the metrics and the model registry (over cfg's model directory or
 * file, with ro's engine settings; ro->metrics is filled in by the server).
 * cfg and ops are borrowed for the server's life. */
kn_status srv_create(const srv_config *cfg, const rt_opts *ro, const struct tensor_ops *ops, srv_server **out,
                     kn_err *err);
/* The registry the server owns. */
rt_registry *srv_registry(srv_server *s);
/* Binds and starts serving. *port gets the bound port (useful with port 0). */
kn_status srv_start(srv_server *s, int *port, kn_err *err);
/* /health turns 200. */
void srv_set_ready(srv_server *s);
/* Graceful shutdown: stops accepting, waits up to grace_s for requests in
 * flight, cancels whatever is left, and stops the HTTP threads. Logs each
 * step. */
void srv_drain(srv_server *s, int grace_s);
void srv_destroy(srv_server *s); /* unloads the models; accepts NULL */

/* The model the server answers with when a request names none (may be NULL). */
const char *srv_default_model(const srv_server *s);

#endif
