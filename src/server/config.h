/*
 * config.h — the settings of `kiln serve`: defaults, a YAML config file
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
 *   strings  models, model, default-model, host, kv-type (f16|q8_0), api-key;
 *            non-empty, at most 4096 bytes; default-model is a bare name
 *            (no '/' or '\', not "." or "..")
 *   integers base 10, optional sign; ranges: port 0..65535, threads 1..1024,
 *            ctx-size 0..2^24, parallel 1..1024, batch-size 1..65536,
 *            kv-tokens 0..2^28, queue-len 0..100000, queue-timeout 0..86400,
 *            grace-period 0..3600, conn-limit 1..100000, conn-timeout
 *            1..86400, n-predict -1..2^24; max-body 1 KiB..1 GiB and also
 *            takes a k/m/g suffix (binary: 8m = 8 MiB)
 *   booleans mmap: true/false, yes/no, on/off, 1/0 (any case)
 *
 * Every function that applies settings (set, load_yaml, apply_env,
 * parse_args) either applies all of them or, on error, leaves c unchanged.
 * Error messages never repeat the api-key value.
 */
#ifndef KILN_SERVER_CONFIG_H
#define KILN_SERVER_CONFIG_H

#include "../core/kn.h"

#include <stdbool.h>
#include <stdint.h>

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
    int kv_tokens;         /* --kv-tokens: KV positions in all (0 = parallel * ctx) */
    char *kv_type;         /* --kv-type f16|q8_0 (default "f16") */
    char *api_key;         /* --api-key (NULL = no auth) */
    int64_t max_body;      /* --max-body BYTES (default 8 MiB) */
    int queue_len;         /* --queue-len: requests waiting for a slot (default 64) */
    int queue_timeout_s;   /* --queue-timeout: longest wait for a slot before 503 (default 60) */
    int grace_s;           /* --grace-period: shutdown waits this long for requests in flight (default 30) */
    int conn_limit;        /* --conn-limit: open connections (default 1024) */
    int conn_timeout_s;    /* --conn-timeout: idle connection timeout (default 60) */
    int max_tokens;        /* --n-predict: default generation limit when a request sets none (default -1 = context) */
    bool mmap_weights;     /* --mmap */
    int sla_p95_ms;        /* --sla-p95-ms: end-to-end p95 target reported in /health (default 2000) */
    int sla_window_s;      /* --sla-window: seconds of the rolling percentiles (default 300) */
} srv_config;

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
 * KILN_API_KEY, validated as the keys host, port, models and api-key. A
 * variable that is unset or empty sets nothing. An invalid value is an
 * error naming the variable. */
kn_status srv_config_apply_env(srv_config *c, kn_err *err);

/* Applies the flags of `kiln serve` (argv[0] is "serve" and is skipped):
 * long flags `--name VALUE` and `--name=VALUE` for every key above ('-' or
 * '_' inside the name), `--mmap` (alone = true, or `--mmap=BOOL`), the short
 * forms -m (model), -t (threads), -c (ctx-size), -np (parallel),
 * -b (batch-size), -n (n-predict), each followed by its value as the next
 * argument (which may start with '-', as in `-n -1`). -h/--help are skipped
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
 * The protocol giving flags > environment > config file > defaults (what
 * srv_config_from_args does):
 *     srv_config_init(&c);
 *     srv_config_parse_args(NULL, argc, argv, &path, err);  // pass 1: check, find --config
 *     if (path) srv_config_load_yaml(&c, path, err);
 *     srv_config_apply_env(&c, err);
 *     srv_config_parse_args(&c, argc, argv, NULL, err);     // pass 2: flags win
 *     srv_config_validate(&c, err);
 */
kn_status srv_config_parse_args(srv_config *c, int argc, char **argv, const char **config_path,
                                kn_err *err);

/* The whole protocol above: initializes c (do not call srv_config_init
 * first), then applies the config file, the environment and the flags and
 * validates. Whatever it returns, the caller later calls srv_config_free(c). */
kn_status srv_config_from_args(srv_config *c, int argc, char **argv, kn_err *err);

#endif
