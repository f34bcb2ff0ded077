/*
 * config.c — `kiln serve` settings: defaults, YAML file (libyaml events),
 * environment, flags. See config.h for the format and the precedence
 * protocol.
 *
 * One static const table describes every key (name, type, field offset,
 * range); set, validate, the YAML loader and the flag parser all go through
 * it. Every applying function works on a copy and swaps it in on success,
 * so that a failure leaves the caller's config unchanged.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#define CFG_MAX_FILE (1u << 20)  /* YAML file limit */
#define CFG_MAX_STR 4096         /* longest string value */
#define CFG_SHOW 64              /* value bytes quoted in messages */

typedef enum key_kind { K_STR, K_INT, K_I64, K_BOOL } key_kind;

typedef struct key_def {
    const char *name; /* canonical long name, '-' separated */
    key_kind kind;
    size_t off;       /* field offset in srv_config */
    long long lo, hi; /* K_INT / K_I64 range */
    bool secret;      /* never quote the value in messages */
} key_def;

#define F(field) offsetof(srv_config, field)

static const key_def KEYS[] = {
    {"models", K_STR, F(models_dir), 0, 0, false},
    {"model", K_STR, F(model_file), 0, 0, false},
    {"default-model", K_STR, F(default_model), 0, 0, false},
    {"host", K_STR, F(host), 0, 0, false},
    {"port", K_INT, F(port), 0, 65535, false},
    {"threads", K_INT, F(threads), 1, 1024, false},
    {"ctx-size", K_INT, F(ctx), 0, 1LL << 24, false},
    {"parallel", K_INT, F(parallel), 1, 1024, false},
    {"batch-size", K_INT, F(batch), 1, 65536, false},
    {"kv-tokens", K_INT, F(kv_tokens), 0, 1LL << 28, false},
    {"kv-type", K_STR, F(kv_type), 0, 0, false},
    {"api-key", K_STR, F(api_key), 0, 0, true},
    {"max-body", K_I64, F(max_body), 1LL << 10, 1LL << 30, false},
    {"queue-len", K_INT, F(queue_len), 0, 100000, false},
    {"queue-timeout", K_INT, F(queue_timeout_s), 0, 86400, false},
    {"grace-period", K_INT, F(grace_s), 0, 3600, false},
    {"conn-limit", K_INT, F(conn_limit), 1, 100000, false},
    {"conn-timeout", K_INT, F(conn_timeout_s), 1, 86400, false},
    {"n-predict", K_INT, F(max_tokens), -1, 1LL << 24, false},
    {"mmap", K_BOOL, F(mmap_weights), 0, 0, false},
    {"sla-p95-ms", K_INT, F(sla_p95_ms), 1, 3600000, false},
    {"sla-window", K_INT, F(sla_window_s), 10, 86400, false},
};
#undef F

enum { N_KEYS = (int)(sizeof KEYS / sizeof KEYS[0]) };

/* Short flags of `kiln serve` and the keys they set. */
static const struct {
    const char *flag;
    const char *key;
} SHORT_FLAGS[] = {
    {"-m", "model"}, {"-t", "threads"}, {"-c", "ctx-size"},
    {"-np", "parallel"}, {"-b", "batch-size"}, {"-n", "n-predict"},
};

/* Environment variables and the keys they set. */
static const struct {
    const char *var;
    const char *key;
} ENV_VARS[] = {
    {"KILN_HOST", "host"}, {"KILN_PORT", "port"}, {"KILN_MODELS", "models"}, {"KILN_API_KEY", "api-key"},
};

static char **str_field(srv_config *c, const key_def *k) { return (char **)((char *)c + k->off); }
static char *const *str_field_c(const srv_config *c, const key_def *k) {
    return (char *const *)((const char *)c + k->off);
}
static int *int_field(srv_config *c, const key_def *k) { return (int *)((char *)c + k->off); }
static const int *int_field_c(const srv_config *c, const key_def *k) {
    return (const int *)((const char *)c + k->off);
}

/* Index of a key by name ('-' and '_' alike), or -1. n is the name length. */
static int key_find_n(const char *name, size_t n) {
    for (int i = 0; i < N_KEYS; i++) {
        const char *k = KEYS[i].name;
        size_t j = 0;
        for (; j < n && k[j]; j++) {
            char a = name[j] == '_' ? '-' : name[j];
            if (a != k[j]) break;
        }
        if (j == n && !k[j]) return i;
    }
    return -1;
}

static int key_find(const char *name) { return key_find_n(name, strlen(name)); }

/* "'value'" (cut to CFG_SHOW bytes) for messages, or a neutral word for a secret. */
static const char *show(char *buf, size_t cap, const key_def *k, const char *v) {
    if (k->secret) {
        snprintf(buf, cap, "the value");
        return buf;
    }
    size_t n = strlen(v);
    if (n > CFG_SHOW)
        snprintf(buf, cap, "'%.*s...'", CFG_SHOW, v);
    else
        snprintf(buf, cap, "'%s'", v);
    return buf;
}

/* Base-10 integer with optional sign, no spaces; with `suffix` a k/m/g
 * suffix multiplies by 2^10/2^20/2^30. Returns false if s is not such an
 * integer. Values too large saturate, so the caller's range check rejects
 * them. */
static bool parse_ll(const char *s, bool suffix, long long *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (*p < '0' || *p > '9') return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    /* On overflow (ERANGE) v is LLONG_MIN/MAX: out of every key's range. */
    if (suffix && *end && !end[1]) {
        int sh = 0;
        switch (*end) {
        case 'k': case 'K': sh = 10; break;
        case 'm': case 'M': sh = 20; break;
        case 'g': case 'G': sh = 30; break;
        default: return false;
        }
        end++;
        /* Saturate instead of overflowing: the range check rejects it. */
        if (v > (1LL << 40))
            v = 1LL << 62;
        else if (v < -(1LL << 40))
            v = -(1LL << 62);
        else
            v *= 1LL << sh;
    }
    if (*end) return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *const T[] = {"true", "yes", "on", "1"};
    static const char *const N[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        if (!strcasecmp(s, T[i])) { *out = true; return true; }
        if (!strcasecmp(s, N[i])) { *out = false; return true; }
    }
    return false;
}

/* Applies KEYS[idx] = value; label names the setting in messages (the key
 * as the user wrote it, the flag, or the environment variable). */
static kn_status set_idx(srv_config *c, int idx, const char *value, const char *label, kn_err *err) {
    const key_def *k = &KEYS[idx];
    char sv[CFG_SHOW + 16];
    switch (k->kind) {
    case K_STR: {
        size_t n = strlen(value);
        if (n == 0) return kn_fail(err, KN_EINVAL, "%s: the value is empty", label);
        if (n > CFG_MAX_STR)
            return kn_fail(err, KN_ERANGE, "%s: %s is longer than %d bytes", label, show(sv, sizeof sv, k, value),
                           CFG_MAX_STR);
        if (!strcmp(k->name, "kv-type") && strcmp(value, "f16") && strcmp(value, "q8_0"))
            return kn_fail(err, KN_EINVAL, "%s: %s is not a KV cache type (f16 or q8_0)", label,
                           show(sv, sizeof sv, k, value));
        if (!strcmp(k->name, "default-model") &&
            (strchr(value, '/') || strchr(value, '\\') || !strcmp(value, ".") || !strcmp(value, "..")))
            return kn_fail(err, KN_EINVAL, "%s: %s is not a model name (a file name without .gguf)", label,
                           show(sv, sizeof sv, k, value));
        char *dup = strdup(value);
        if (!dup) return kn_fail(err, KN_ENOMEM, "%s: out of memory", label);
        char **f = str_field(c, k);
        free(*f);
        *f = dup;
        return KN_OK;
    }
    case K_INT:
    case K_I64: {
        long long v;
        bool suffix = k->kind == K_I64;
        if (!parse_ll(value, suffix, &v))
            return kn_fail(err, KN_EINVAL, "%s: %s is not an integer%s", label, show(sv, sizeof sv, k, value),
                           suffix ? " (bytes, or with a k/m/g suffix)" : "");
        if (v < k->lo || v > k->hi)
            return kn_fail(err, KN_ERANGE, "%s: %s is out of range (%lld..%lld)", label,
                           show(sv, sizeof sv, k, value), k->lo, k->hi);
        if (k->kind == K_INT)
            *int_field(c, k) = (int)v;
        else
            *(int64_t *)((char *)c + k->off) = (int64_t)v;
        return KN_OK;
    }
    case K_BOOL: {
        bool b;
        if (!parse_bool(value, &b))
            return kn_fail(err, KN_EINVAL, "%s: %s is not a boolean (true/false, yes/no, on/off, 1/0)", label,
                           show(sv, sizeof sv, k, value));
        *(bool *)((char *)c + k->off) = b;
        return KN_OK;
    }
    }
    return kn_fail(err, KN_EINVAL, "%s: internal: bad key kind", label);
}

void srv_config_init(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->models_dir = strdup("./models");
    c->host = strdup("127.0.0.1");
    c->kv_type = strdup("f16");
    c->port = 8080;
    int t = kn_default_threads();
    c->threads = t < 1 ? 1 : t > 1024 ? 1024 : t;
    c->ctx = 0;
    c->parallel = 4;
    c->batch = 512;
    c->kv_tokens = 0;
    c->max_body = 8 << 20;
    c->queue_len = 64;
    c->queue_timeout_s = 60;
    c->grace_s = 30;
    c->conn_limit = 1024;
    c->conn_timeout_s = 60;
    c->max_tokens = -1;
    c->mmap_weights = false;
    c->sla_p95_ms = 2000;
    c->sla_window_s = 300;
}

void srv_config_free(srv_config *c) {
    if (!c) return;
    for (int i = 0; i < N_KEYS; i++)
        if (KEYS[i].kind == K_STR) free(*str_field(c, &KEYS[i]));
    memset(c, 0, sizeof *c);
}

/* dst = a deep copy of src. On failure dst is zeroed (nothing to free). */
static kn_status cfg_copy(srv_config *dst, const srv_config *src, kn_err *err) {
    *dst = *src;
    for (int i = 0; i < N_KEYS; i++)
        if (KEYS[i].kind == K_STR) *str_field(dst, &KEYS[i]) = NULL;
    for (int i = 0; i < N_KEYS; i++) {
        if (KEYS[i].kind != K_STR) continue;
        const char *s = *str_field_c(src, &KEYS[i]);
        if (!s) continue;
        char *d = strdup(s);
        if (!d) {
            srv_config_free(dst);
            return kn_fail(err, KN_ENOMEM, "config: out of memory");
        }
        *str_field(dst, &KEYS[i]) = d;
    }
    return KN_OK;
}

/* Replaces *c by *tmp (whose strings it takes). */
static void cfg_commit(srv_config *c, srv_config *tmp) {
    srv_config_free(c);
    *c = *tmp;
    memset(tmp, 0, sizeof *tmp);
}

kn_status srv_config_set(srv_config *c, const char *key, const char *value, kn_err *err) {
    int idx = key_find(key);
    if (idx < 0) return kn_fail(err, KN_ENOTFOUND, "unknown setting '%.*s'", CFG_SHOW, key);
    return set_idx(c, idx, value, key, err);
}

kn_status srv_config_validate(const srv_config *c, kn_err *err) {
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (k->kind == K_INT) {
            int v = *int_field_c(c, k);
            if (v < k->lo || v > k->hi)
                return kn_fail(err, KN_ERANGE, "%s: %d is out of range (%lld..%lld)", k->name, v, k->lo, k->hi);
        } else if (k->kind == K_I64) {
            int64_t v = *(const int64_t *)((const char *)c + k->off);
            if (v < k->lo || v > k->hi)
                return kn_fail(err, KN_ERANGE, "%s: %lld is out of range (%lld..%lld)", k->name, (long long)v,
                               k->lo, k->hi);
        }
    }
    if (!c->host || !*c->host) return kn_fail(err, KN_EINVAL, "host: not set");
    if (!c->kv_type || (strcmp(c->kv_type, "f16") && strcmp(c->kv_type, "q8_0")))
        return kn_fail(err, KN_EINVAL, "kv-type: must be f16 or q8_0");
    if ((!c->model_file || !*c->model_file) && (!c->models_dir || !*c->models_dir))
        return kn_fail(err, KN_EINVAL, "no model source: give -m FILE or --models DIR");
    if (c->kv_tokens > 0 && c->ctx > 0 && c->kv_tokens < c->ctx)
        return kn_fail(err, KN_ERANGE,
                       "kv-tokens (%d) is smaller than ctx-size (%d): not even one sequence would fit",
                       c->kv_tokens, c->ctx);
    if (c->kv_tokens == 0 && c->ctx > 0 && (long long)c->parallel * c->ctx > (1LL << 28))
        return kn_fail(err, KN_ERANGE,
                       "parallel (%d) * ctx-size (%d) is over %lld KV positions: lower them or set kv-tokens",
                       c->parallel, c->ctx, 1LL << 28);
    return KN_OK;
}

/* ---- YAML ------------------------------------------------------------------ */

static unsigned long line_of(const yaml_event_t *ev) { return (unsigned long)ev->start_mark.line + 1; }

static const char *event_what(yaml_event_type_t t) {
    switch (t) {
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_ALIAS_EVENT: return "an alias";
    case YAML_SCALAR_EVENT: return "a scalar";
    default: return "not a value";
    }
}

/* A plain scalar that YAML reads as null. */
static bool is_null_scalar(const yaml_event_t *ev) {
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* Parses the YAML text in buf into tmp. */
static kn_status yaml_apply(srv_config *tmp, const char *path, const char *buf, size_t len, kn_err *err) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);

    kn_status st = KN_OK;
    unsigned long seen_line[N_KEYS] = {0};
    enum { S_STREAM, S_DOC, S_TOP, S_KEY, S_VALUE, S_DOC_END, S_AFTER } state = S_STREAM;
    int key_idx = -1;
    unsigned long key_line = 0;
    char key_text[CFG_SHOW + 1] = {0};
    bool done = false;

    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.error == YAML_MEMORY_ERROR) {
                st = kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
            } else if (p.context) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu:%lu: malformed YAML: %s (%s at line %lu)", path,
                             (unsigned long)p.problem_mark.line + 1, (unsigned long)p.problem_mark.column + 1,
                             p.problem ? p.problem : "error", p.context, (unsigned long)p.context_mark.line + 1);
            } else {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu:%lu: malformed YAML: %s", path,
                             (unsigned long)p.problem_mark.line + 1, (unsigned long)p.problem_mark.column + 1,
                             p.problem ? p.problem : "error");
            }
            break;
        }
        yaml_event_type_t t = ev.type;
        switch (state) {
        case S_STREAM: /* STREAM-START */
            state = S_DOC;
            break;
        case S_DOC:
            if (t == YAML_STREAM_END_EVENT)
                done = true; /* an empty file: nothing to set */
            else if (t == YAML_DOCUMENT_START_EVENT)
                state = S_TOP;
            break;
        case S_TOP:
            if (t == YAML_MAPPING_START_EVENT) {
                state = S_KEY;
            } else if (t == YAML_SCALAR_EVENT && is_null_scalar(&ev)) {
                state = S_DOC_END; /* "---" alone: an empty document */
            } else {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: the top level must be a mapping of settings, not %s",
                             path, line_of(&ev), event_what(t));
            }
            break;
        case S_KEY:
            if (t == YAML_MAPPING_END_EVENT) {
                state = S_DOC_END;
            } else if (t != YAML_SCALAR_EVENT) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: a key must be a scalar, not %s", path, line_of(&ev),
                             event_what(t));
            } else {
                const char *k = (const char *)ev.data.scalar.value;
                size_t kl = ev.data.scalar.length;
                snprintf(key_text, sizeof key_text, "%.*s", (int)(kl < CFG_SHOW ? kl : CFG_SHOW), k);
                key_line = line_of(&ev);
                key_idx = strlen(k) == kl ? key_find_n(k, kl) : -1;
                if (key_idx < 0) {
                    char known[512];
                    size_t n = 0;
                    for (int i = 0; i < N_KEYS && n < sizeof known; i++)
                        n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "", KEYS[i].name);
                    st = kn_fail(err, KN_ENOTFOUND, "%s:%lu: unknown key '%s' (known: %s)", path, key_line,
                                 key_text, known);
                } else if (seen_line[key_idx]) {
                    st = kn_fail(err, KN_EFORMAT, "%s:%lu: key '%s' is set twice (first at line %lu)", path,
                                 key_line, key_text, seen_line[key_idx]);
                } else {
                    seen_line[key_idx] = key_line;
                    state = S_VALUE;
                }
            }
            break;
        case S_VALUE:
            if (t != YAML_SCALAR_EVENT) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: key '%s': the value must be a scalar, not %s", path,
                             line_of(&ev), key_text, event_what(t));
            } else if (is_null_scalar(&ev)) {
                st = kn_fail(err, KN_EINVAL, "%s:%lu: key '%s' has no value", path, line_of(&ev), key_text);
            } else if (strlen((const char *)ev.data.scalar.value) != ev.data.scalar.length) {
                st = kn_fail(err, KN_EINVAL, "%s:%lu: key '%s': the value contains a NUL byte", path,
                             line_of(&ev), key_text);
            } else {
                st = set_idx(tmp, key_idx, (const char *)ev.data.scalar.value, key_text, err);
                if (st) kn_err_prefix(err, "%s:%lu", path, line_of(&ev));
                state = S_KEY;
            }
            break;
        case S_DOC_END: /* DOCUMENT-END */
            state = S_AFTER;
            break;
        case S_AFTER:
            if (t == YAML_STREAM_END_EVENT)
                done = true;
            else
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: more than one YAML document", path, line_of(&ev));
            break;
        }
        yaml_event_delete(&ev);
        if (st) break;
    }
    yaml_parser_delete(&p);
    return st;
}

kn_status srv_config_load_yaml(srv_config *c, const char *path, kn_err *err) {
    char *buf = NULL;
    size_t len = 0;
    /* kn_read_file refuses a file of exactly its limit: allow one byte more
     * so that the limit is "at most 1 MiB", and say so. */
    kn_status st = kn_read_file(path, CFG_MAX_FILE + 1, &buf, &len, err);
    if (st == KN_ERANGE)
        return kn_fail(err, KN_ERANGE, "%s: larger than the limit of %u bytes (1 MiB) for a config file", path,
                       CFG_MAX_FILE);
    if (st) return st;
    srv_config tmp;
    st = cfg_copy(&tmp, c, err);
    if (!st) st = yaml_apply(&tmp, path, buf, len, err);
    free(buf);
    if (st) {
        srv_config_free(&tmp);
        return st;
    }
    cfg_commit(c, &tmp);
    return KN_OK;
}

/* ---- environment ----------------------------------------------------------- */

kn_status srv_config_apply_env(srv_config *c, kn_err *err) {
    srv_config tmp;
    kn_status st = cfg_copy(&tmp, c, err);
    if (st) return st;
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof ENV_VARS[0]; i++) {
        const char *v = getenv(ENV_VARS[i].var);
        if (!v || !*v) continue;
        st = set_idx(&tmp, key_find(ENV_VARS[i].key), v, ENV_VARS[i].var, err);
        if (st) {
            srv_config_free(&tmp);
            return st;
        }
    }
    cfg_commit(c, &tmp);
    return KN_OK;
}

/* ---- flags ----------------------------------------------------------------- */

static kn_status parse_into(srv_config *c, int argc, char **argv, const char **config_path, kn_err *err) {
    const char *cfg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) continue;
        char label[CFG_SHOW + 8];
        snprintf(label, sizeof label, "%.*s", CFG_SHOW, a);
        int idx = -1;
        const char *val = NULL;
        bool is_config = false;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            if (eq) {
                val = eq + 1;
                snprintf(label, sizeof label, "--%.*s", (int)(nl < CFG_SHOW ? nl : CFG_SHOW), name);
            }
            if (nl == 6 && !strncmp(name, "config", 6))
                is_config = true;
            else
                idx = key_find_n(name, nl);
            if (!is_config && idx < 0)
                return kn_fail(err, KN_ENOTFOUND, "unknown flag '%s' (see kiln serve --help)", label);
        } else if (a[0] == '-' && a[1]) {
            for (size_t s = 0; s < sizeof SHORT_FLAGS / sizeof SHORT_FLAGS[0]; s++)
                if (!strcmp(a, SHORT_FLAGS[s].flag)) idx = key_find(SHORT_FLAGS[s].key);
            if (idx < 0) return kn_fail(err, KN_ENOTFOUND, "unknown flag '%s' (see kiln serve --help)", label);
        } else {
            return kn_fail(err, KN_EINVAL, "unexpected argument '%s' (flags take the form --name VALUE)", label);
        }
        if (!val) {
            if (idx >= 0 && KEYS[idx].kind == K_BOOL) {
                val = "true"; /* --mmap alone */
            } else {
                if (i + 1 >= argc) return kn_fail(err, KN_EINVAL, "%s needs a value", label);
                val = argv[++i];
            }
        }
        if (is_config) {
            if (cfg) return kn_fail(err, KN_EINVAL, "--config is given twice");
            if (!*val) return kn_fail(err, KN_EINVAL, "--config: the file name is empty");
            cfg = val;
            continue;
        }
        kn_status st = set_idx(c, idx, val, label, err);
        if (st) return st;
    }
    if (config_path) *config_path = cfg;
    return KN_OK;
}

kn_status srv_config_parse_args(srv_config *c, int argc, char **argv, const char **config_path,
                                kn_err *err) {
    if (config_path) *config_path = NULL;
    srv_config tmp;
    kn_status st;
    if (c) {
        st = cfg_copy(&tmp, c, err);
    } else {
        srv_config_init(&tmp);
        st = KN_OK;
    }
    if (!st) st = parse_into(&tmp, argc, argv, config_path, err);
    if (st || !c) {
        srv_config_free(&tmp);
        if (st && config_path) *config_path = NULL;
        return st;
    }
    cfg_commit(c, &tmp);
    return KN_OK;
}

kn_status srv_config_from_args(srv_config *c, int argc, char **argv, kn_err *err) {
    srv_config_init(c);
    const char *path = NULL;
    kn_status st = srv_config_parse_args(NULL, argc, argv, &path, err);
    if (!st && path) st = srv_config_load_yaml(c, path, err);
    if (!st) st = srv_config_apply_env(c, err);
    if (!st) st = srv_config_parse_args(c, argc, argv, NULL, err);
    if (!st) st = srv_config_validate(c, err);
    return st;
}
