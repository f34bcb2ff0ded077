/*
 * config.c — `kiln serve` settings: defaults, YAML file (libyaml events),
 * environment, flags. See config.h for the format and the precedence
 * protocol.
 *
 * One static const table describes every key (name, type, field offset,
 * range, string checker); set, validate, the YAML loader, the flag parser
 * and the dump all go through it. Every applying function works on a copy
 * and swaps it in on success, so that a failure leaves the caller's config
 * unchanged. The string checkers of the list keys rewrite the value in
 * place into its canonical form (no spaces, no empty items).
 */
#include "config.h"

#include "../cache/cache.h"
#include "../engine/sched.h"
#include "../engine/stop.h"
#include "api.h"

#include <ctype.h>
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

#define CFG_MAX_NAME 256       /* longest model name in a list */
#define CFG_MAX_CPU 1023       /* highest CPU number in cpu-range (CPU_SETSIZE - 1) */

typedef enum key_kind { K_STR, K_INT, K_I64, K_BOOL } key_kind;

typedef struct key_def key_def;

/* Checks a string value; may rewrite canon (a copy of v with room for
 * strlen(v) + 1 bytes) into a canonical form no longer than v. label names
 * the setting in messages. */
typedef kn_status (*str_check_fn)(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);

struct key_def {
    const char *name;   /* canonical long name, '-' separated */
    key_kind kind;
    size_t off;         /* field offset in srv_config */
    long long lo, hi;   /* K_INT / K_I64 range */
    bool secret;        /* never quote the value in messages */
    bool flag_only;     /* a flag of kiln serve, not a setting (not in files, env or the dump) */
    str_check_fn check; /* K_STR: extra checks, or NULL */
};

static kn_status check_kv_type(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_bare_name(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_profile(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_names(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_aliases(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_cpu_range(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_spec(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_policy(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_cors(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);

#define F(field) offsetof(srv_config, field)

static const key_def KEYS[] = {
    {"models", K_STR, F(models_dir), 0, 0, false, false, NULL},
    {"model", K_STR, F(model_file), 0, 0, false, false, NULL},
    {"default-model", K_STR, F(default_model), 0, 0, false, false, check_bare_name},
    {"host", K_STR, F(host), 0, 0, false, false, NULL},
    {"port", K_INT, F(port), 0, 65535, false, false, NULL},
    {"threads", K_INT, F(threads), 1, 1024, false, false, NULL},
    {"ctx-size", K_INT, F(ctx), 0, 1LL << 24, false, false, NULL},
    {"parallel", K_INT, F(parallel), 1, 1024, false, false, NULL},
    {"batch-size", K_INT, F(batch), 1, 65536, false, false, NULL},
    {"kv-tokens", K_INT, F(kv_tokens), 0, 1LL << 28, false, false, NULL},
    {"kv-type", K_STR, F(kv_type), 0, 0, false, false, check_kv_type},
    {"api-key", K_STR, F(api_key), 0, 0, true, false, NULL},
    {"max-body", K_I64, F(max_body), 1LL << 10, 1LL << 30, false, false, NULL},
    {"queue-len", K_INT, F(queue_len), 0, 100000, false, false, NULL},
    {"queue-timeout", K_INT, F(queue_timeout_s), 0, 86400, false, false, NULL},
    {"grace-period", K_INT, F(grace_s), 0, 3600, false, false, NULL},
    {"conn-limit", K_INT, F(conn_limit), 1, 100000, false, false, NULL},
    {"conn-timeout", K_INT, F(conn_timeout_s), 1, 86400, false, false, NULL},
    {"send-timeout", K_INT, F(send_timeout_s), 1, 86400, false, false, NULL},
    {"read-timeout", K_INT, F(read_timeout_s), 1, 86400, false, false, NULL},
    {"limit-messages", K_INT, F(limit_messages), 1, 1000000, false, false, NULL},
    {"limit-max-tokens", K_INT, F(limit_max_tokens), 1, 1LL << 24, false, false, NULL},
    {"limit-embed-inputs", K_INT, F(limit_embed_inputs), 1, ENG_MAX_EMBED_INPUTS, false, false, NULL},
    {"limit-stops", K_INT, F(limit_stops), 0, ENG_STOP_MAX, false, false, NULL},
    {"limit-logit-bias", K_INT, F(limit_logit_bias), 0, 1 << 20, false, false, NULL},
    {"limit-json-depth", K_INT, F(limit_json_depth), 2, 1000, false, false, NULL},
    {"cors-origin", K_STR, F(cors_origin), 0, 0, false, false, check_cors},
    {"log-prompts", K_BOOL, F(log_prompts), 0, 0, false, false, NULL},
    {"n-predict", K_INT, F(max_tokens), -1, 1LL << 24, false, false, NULL},
    {"mmap", K_BOOL, F(mmap_weights), 0, 0, false, false, NULL},
    {"sla-p95-ms", K_INT, F(sla_p95_ms), 1, 3600000, false, false, NULL},
    {"sla-window", K_INT, F(sla_window_s), 10, 86400, false, false, NULL},
    {"memory-budget", K_I64, F(memory_budget), 0, 1LL << 50, false, false, NULL},
    {"unload-timeout", K_INT, F(unload_timeout_s), -1, 2592000, false, false, NULL},
    {"cleanup-interval", K_INT, F(cleanup_interval_s), 1, 3600, false, false, NULL},
    {"preload", K_STR, F(preload), 0, 0, false, false, check_names},
    {"pin", K_STR, F(pin), 0, 0, false, false, check_names},
    {"alias", K_STR, F(aliases), 0, 0, false, false, check_aliases},
    {"profile", K_STR, F(profile), 0, 0, false, false, check_profile},
    {"batch-wait-ms", K_INT, F(batch_wait_ms), 0, 1000, false, false, NULL},
    {"cache-mib", K_INT, F(cache_mib), 0, 65536, false, false, NULL},
    {"cpu-range", K_STR, F(cpu_range), 0, 0, false, false, check_cpu_range},
    {"kv-block-size", K_INT, F(kv_block_size), 16, 256, false, false, NULL},
    {"cache-ram", K_INT, F(cache_ram_mib), 0, 1 << 20, false, false, NULL},
    {"spec", K_STR, F(spec), 0, 0, false, false, check_spec},
    {"draft-max", K_INT, F(draft_max), 0, 16, false, false, NULL},
    {"model-draft", K_STR, F(model_draft), 0, 0, false, false, NULL},
    {"response-cache", K_BOOL, F(response_cache), 0, 0, false, false, NULL},
    {"embedding-cache", K_BOOL, F(embedding_cache), 0, 0, false, false, NULL},
    {"cache-policy", K_STR, F(cache_policy), 0, 0, false, false, check_policy},
    {"cache-compress", K_BOOL, F(cache_compress), 0, 0, false, false, NULL},
    {"cache-ttl-response", K_INT, F(cache_ttl_response_s), 1, 31536000, false, false, NULL},
    {"cache-ttl-embedding", K_INT, F(cache_ttl_embedding_s), 1, 31536000, false, false, NULL},
    {"cache-dir", K_STR, F(cache_dir), 0, 0, false, false, NULL},
    {"cache-disk-size", K_I64, F(cache_disk_size), 0, 1LL << 50, false, false, NULL},
    {"print-config", K_BOOL, F(print_config), 0, 0, false, true, NULL},
};
#undef F

enum { N_KEYS = (int)(sizeof KEYS / sizeof KEYS[0]) };

/* Short flags of `kiln serve` and the keys they set. */
static const struct {
    const char *flag;
    const char *key;
} SHORT_FLAGS[] = {
    {"-m", "model"}, {"-t", "threads"}, {"-c", "ctx-size"},
    {"-np", "parallel"}, {"-b", "batch-size"}, {"-n", "n-predict"}, {"-md", "model-draft"},
};

/* Environment variables and the keys they set. */
static const struct {
    const char *var;
    const char *key;
} ENV_VARS[] = {
    {"KILN_HOST", "host"},
    {"KILN_PORT", "port"},
    {"KILN_MODELS", "models"},
    {"KILN_API_KEY", "api-key"},
    {"KILN_PROFILE", "profile"},
    {"MODEL_UNLOAD_TIMEOUT", "unload-timeout"},
    {"CLEANUP_CHECK_INTERVAL", "cleanup-interval"},
};

/* The profiles: knob values applied at the level of the defaults (the
 * table in config.h). Every profile names the same knobs. */
enum { N_PROFILE_KNOBS = 8 };
static const struct {
    const char *name;
    struct {
        const char *key, *value;
    } knobs[N_PROFILE_KNOBS];
} PROFILES[] = {
    {"latency",
     {{"parallel", "1"}, {"batch-size", "512"}, {"batch-wait-ms", "0"}, {"ctx-size", "0"}, {"kv-type", "f16"},
      {"cache-mib", "512"}, {"spec", "ngram"}, {"cache-ram", "1024"}}},
    {"throughput",
     {{"parallel", "16"}, {"batch-size", "1024"}, {"batch-wait-ms", "10"}, {"ctx-size", "0"}, {"kv-type", "f16"},
      {"cache-mib", "512"}, {"spec", "none"}, {"cache-ram", "2048"}}},
    {"balanced",
     {{"parallel", "4"}, {"batch-size", "512"}, {"batch-wait-ms", "2"}, {"ctx-size", "0"}, {"kv-type", "f16"},
      {"cache-mib", "512"}, {"spec", "ngram"}, {"cache-ram", "1024"}}},
    {"memory",
     {{"parallel", "2"}, {"batch-size", "512"}, {"batch-wait-ms", "2"}, {"ctx-size", "2048"}, {"kv-type", "q8_0"},
      {"cache-mib", "64"}, {"spec", "none"}, {"cache-ram", "0"}}},
};
enum { N_PROFILES = (int)(sizeof PROFILES / sizeof PROFILES[0]) };

static char **str_field(srv_config *c, const key_def *k) { return (char **)((char *)c + k->off); }
static char *const *str_field_c(const srv_config *c, const key_def *k) {
    return (char *const *)((const char *)c + k->off);
}
static int *int_field(srv_config *c, const key_def *k) { return (int *)((char *)c + k->off); }
static const int *int_field_c(const srv_config *c, const key_def *k) {
    return (const int *)((const char *)c + k->off);
}

/* Index of a key by name ('-' and '_' alike), or -1. n is the name length.
 * Flag-only keys are found only when flags is true. */
static int key_find_n(const char *name, size_t n, bool flags) {
    for (int i = 0; i < N_KEYS; i++) {
        if (KEYS[i].flag_only && !flags) continue;
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

static int key_find(const char *name) { return key_find_n(name, strlen(name), false); }

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

/* ---- string checkers ------------------------------------------------------ */

static kn_status check_spec(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    char sv[CFG_SHOW + 16];
    eng_spec_mode m;
    if (!eng_spec_parse(v, &m))
        return kn_fail(err, KN_EINVAL, "%s: %s is not a speculative decoding mode (none, ngram or draft)", label,
                       show(sv, sizeof sv, k, v));
    return KN_OK;
}

static kn_status check_policy(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    char sv[CFG_SHOW + 16];
    rc_policy p;
    if (!rc_policy_parse(v, &p))
        return kn_fail(err, KN_EINVAL, "%s: %s is not a cache eviction policy (lru, lfu, fifo or random)", label,
                       show(sv, sizeof sv, k, v));
    return KN_OK;
}

static kn_status check_kv_type(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    char sv[CFG_SHOW + 16];
    if (strcmp(v, "f16") && strcmp(v, "q8_0"))
        return kn_fail(err, KN_EINVAL, "%s: %s is not a KV cache type (f16 or q8_0)", label, show(sv, sizeof sv, k, v));
    return KN_OK;
}

static kn_status check_bare_name(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    char sv[CFG_SHOW + 16];
    if (strchr(v, '/') || strchr(v, '\\') || !strcmp(v, ".") || !strcmp(v, ".."))
        return kn_fail(err, KN_EINVAL, "%s: %s is not a model name (a file name without .gguf)", label,
                       show(sv, sizeof sv, k, v));
    return KN_OK;
}

static int profile_find(const char *name) {
    for (int i = 0; i < N_PROFILES; i++)
        if (!strcmp(PROFILES[i].name, name)) return i;
    return -1;
}

static kn_status check_profile(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    char sv[CFG_SHOW + 16];
    if (profile_find(v) < 0)
        return kn_fail(err, KN_EINVAL, "%s: %s is not a profile (latency, throughput, balanced or memory)", label,
                       show(sv, sizeof sv, k, v));
    return KN_OK;
}

static bool is_blank(char ch) { return ch == ' ' || ch == '\t'; }

/* Rewrites v into canon as a canonical comma list: items trimmed of spaces
 * and tabs, spaces and tabs around '=' dropped, no empty item. */
static kn_status canon_list(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    char sv[CFG_SHOW + 16];
    size_t o = 0;
    const char *p = v;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_blank(*a)) a++;
        while (b > a && is_blank(b[-1])) b--;
        if (a == b) return kn_fail(err, KN_EINVAL, "%s: %s has an empty item", label, show(sv, sizeof sv, k, v));
        if (o) canon[o++] = ',';
        for (const char *q = a; q < b; q++) {
            if (is_blank(*q)) {
                const char *r = q;
                while (r < b && is_blank(*r)) r++;
                /* blanks before '=' or after '=' are dropped */
                if (*r == '=' || (o && canon[o - 1] == '=')) {
                    q = r - 1;
                    continue;
                }
            }
            canon[o++] = *q;
        }
        if (!*end) break;
        p = end + 1;
    }
    canon[o] = 0;
    return KN_OK;
}

/* NULL if s[0..n) is a model name (config.h), else why not. */
static const char *name_problem(const char *s, size_t n, bool alias_name) {
    if (n > CFG_MAX_NAME) return "is longer than 256 bytes";
    size_t colons = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f) return "has a space or a byte that is not printable ASCII";
        if (ch == ',' || ch == '=' || ch == '\\' || ch == '"') return "has one of , = \\ \"";
        if (ch == ':') colons++;
    }
    if (colons && alias_name) return "has a ':' (an alias is a plain name)";
    if (colons > 1) return "has more than one ':'";
    /* parts between '/' and ':' are neither empty nor "." nor ".." */
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/' && s[i] != ':') continue;
        size_t len = i - start;
        if (len == 0) return "has an empty part (around '/' or ':')";
        if ((len == 1 && s[start] == '.') || (len == 2 && s[start] == '.' && s[start + 1] == '.'))
            return "has a part that is '.' or '..'";
        start = i + 1;
    }
    return NULL;
}

/* Whether the item s[0..n) occurs in the canonical list before position
 * `before` (a pointer into list); with key_only, compares the part before
 * '=' of each item. */
static bool list_has_before(const char *list, const char *before, const char *s, size_t n, bool key_only) {
    const char *cur = list, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len) && it < before) {
        if (key_only) {
            const char *eq = memchr(it, '=', len);
            if (eq) len = (size_t)(eq - it);
        }
        if (len == n && !memcmp(it, s, n)) return true;
    }
    return false;
}

static kn_status check_names(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    kn_status st = canon_list(k, label, v, canon, err);
    if (st) return st;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = (int)(len < CFG_SHOW ? len : CFG_SHOW);
        const char *why = name_problem(it, len, false);
        if (why) return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not a model name: it %s", label, show_n, it, why);
        if (list_has_before(canon, it, it, len, false))
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is listed twice", label, show_n, it);
    }
    return KN_OK;
}

static kn_status check_aliases(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    kn_status st = canon_list(k, label, v, canon, err);
    if (st) return st;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = (int)(len < CFG_SHOW ? len : CFG_SHOW);
        const char *eq = memchr(it, '=', len);
        if (!eq || memchr(eq + 1, '=', len - (size_t)(eq - it) - 1))
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not of the form alias=target", label, show_n, it);
        size_t nl = (size_t)(eq - it), tl = len - nl - 1;
        const char *t = eq + 1;
        if (!nl || !tl)
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not of the form alias=target", label, show_n, it);
        const char *why = name_problem(it, nl, true);
        if (why)
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' is not a name: it %s", label,
                           (int)(nl < CFG_SHOW ? nl : CFG_SHOW), it, why);
        why = name_problem(t, tl, false);
        if (why)
            return kn_fail(err, KN_EINVAL, "%s: target '%.*s' is not a model name: it %s", label,
                           (int)(tl < CFG_SHOW ? tl : CFG_SHOW), t, why);
        if (nl == tl && !memcmp(it, t, nl))
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' points to itself", label,
                           (int)(nl < CFG_SHOW ? nl : CFG_SHOW), it);
        if (list_has_before(canon, it, it, nl, true))
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' is given twice", label,
                           (int)(nl < CFG_SHOW ? nl : CFG_SHOW), it);
    }
    /* no chains: a target is not an alias */
    cur = canon;
    while (srv_config_list_next(&cur, &it, &len)) {
        const char *eq = memchr(it, '=', len);
        const char *t = eq + 1;
        size_t tl = len - (size_t)(t - it);
        if (list_has_before(canon, canon + strlen(canon) + 1, t, tl, true))
            return kn_fail(err, KN_EINVAL, "%s: the target '%.*s' of alias '%.*s' is itself an alias (aliases do not chain)",
                           label, (int)(tl < CFG_SHOW ? tl : CFG_SHOW), t,
                           (int)((size_t)(eq - it) < CFG_SHOW ? (size_t)(eq - it) : CFG_SHOW), it);
    }
    return KN_OK;
}

/* Parses one cpu-range item (digits, or digits-digits). */
static kn_status cpu_item(const char *label, const char *it, size_t len, int *lo, int *hi, kn_err *err) {
    int show_n = (int)(len < CFG_SHOW ? len : CFG_SHOW);
    long v[2] = {0, 0};
    int nv = 0;
    size_t i = 0;
    while (nv < 2) {
        size_t d = 0;
        for (; i < len && it[i] >= '0' && it[i] <= '9'; i++, d++)
            if (v[nv] <= CFG_MAX_CPU) v[nv] = v[nv] * 10 + (it[i] - '0'); /* stops growing past the limit */
        if (!d) break;
        nv++;
        if (i < len && it[i] == '-' && nv == 1) {
            i++;
            continue;
        }
        break;
    }
    if (!nv || i != len || (nv == 1 && it[len - 1] == '-'))
        return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not a CPU or a range of CPUs (like 3 or 0-3)", label, show_n, it);
    if (nv == 1) v[1] = v[0];
    if (v[0] > CFG_MAX_CPU || v[1] > CFG_MAX_CPU)
        return kn_fail(err, KN_ERANGE, "%s: '%.*s' is over the highest CPU number %d", label, show_n, it, CFG_MAX_CPU);
    if (v[0] > v[1])
        return kn_fail(err, KN_ERANGE, "%s: '%.*s' is a range whose start is above its end", label, show_n, it);
    *lo = (int)v[0];
    *hi = (int)v[1];
    return KN_OK;
}

/* Parses a canonical cpu-range list; fills out when non-NULL. */
static kn_status cpu_parse_canon(const char *label, const char *canon, cpu_set_t *out, kn_err *err) {
    if (out) CPU_ZERO(out);
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int lo, hi;
        kn_status st = cpu_item(label, it, len, &lo, &hi, err);
        if (st) return st;
        if (out)
            for (int c = lo; c <= hi; c++) CPU_SET((size_t)c, out);
    }
    return KN_OK;
}

/* "*", or a comma list of origins: http:// or https://, then a host of
 * letters, digits, '.', '-', or a bracketed IPv6 address, and an optional
 * :port; no path, no trailing '/'. */
static kn_status check_cors(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    kn_status st = canon_list(k, label, v, canon, err);
    if (st) return st;
    if (!strcmp(canon, "*")) return KN_OK;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = (int)(len < CFG_SHOW ? len : CFG_SHOW);
        size_t pre = len > 8 && !strncmp(it, "https://", 8) ? 8 : len > 7 && !strncmp(it, "http://", 7) ? 7 : 0;
        bool ok = pre > 0;
        for (size_t i = pre; ok && i < len; i++) {
            unsigned char ch = (unsigned char)it[i];
            ok = isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']';
        }
        if (!ok)
            return kn_fail(err, KN_EINVAL,
                           "%s: '%.*s' is not an origin (\"*\", or scheme://host[:port] with http or https and no "
                           "path)",
                           label, show_n, it);
        if (list_has_before(canon, it, it, len, false))
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is listed twice", label, show_n, it);
    }
    return KN_OK;
}

static kn_status check_cpu_range(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    kn_status st = canon_list(k, label, v, canon, err);
    if (st) return st;
    return cpu_parse_canon(label, canon, NULL, err);
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
        char *dup = strdup(value);
        if (!dup) return kn_fail(err, KN_ENOMEM, "%s: out of memory", label);
        if (k->check) {
            kn_status st = k->check(k, label, value, dup, err);
            if (st) {
                free(dup);
                return st;
            }
        }
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

char *srv_default_cache_dir(void) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    char buf[4096];
    int n;
    if (x && x[0] == '/')
        n = snprintf(buf, sizeof buf, "%s/kiln", x);
    else if (h && h[0] == '/')
        n = snprintf(buf, sizeof buf, "%s/.cache/kiln", h);
    else
        return NULL;
    return n > 0 && (size_t)n < sizeof buf ? strdup(buf) : NULL;
}

void srv_config_init(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->models_dir = strdup("./models");
    c->host = strdup("127.0.0.1");
    c->kv_type = strdup("f16");
    c->kv_block_size = 32;
    c->cache_ram_mib = 1024;
    c->spec = strdup("ngram");
    c->draft_max = 8;
    c->profile = strdup("balanced");
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
    c->send_timeout_s = 120;
    c->read_timeout_s = 60;
    srv_limits lim = srv_limits_default(); /* one place for the request limits' defaults */
    c->limit_messages = lim.messages;
    c->limit_max_tokens = lim.max_tokens;
    c->limit_embed_inputs = lim.embed_inputs;
    c->limit_stops = lim.stops;
    c->limit_logit_bias = lim.logit_bias;
    c->limit_json_depth = lim.json_depth;
    c->cors_origin = NULL;
    c->log_prompts = false;
    c->max_tokens = -1;
    c->mmap_weights = false;
    c->sla_p95_ms = 2000;
    c->sla_window_s = 300;
    c->memory_budget = 0;
    c->unload_timeout_s = 300;
    c->cleanup_interval_s = 30;
    c->batch_wait_ms = 2;
    c->cache_mib = 512;
    c->response_cache = true;
    c->embedding_cache = true;
    c->cache_policy = strdup("lru");
    c->cache_compress = true;
    c->cache_ttl_response_s = 3600;
    c->cache_ttl_embedding_s = 86400;
    c->cache_dir = srv_default_cache_dir();
    c->cache_disk_size = 10LL << 30;
    c->print_config = false;
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
    if (c->kv_block_size & (c->kv_block_size - 1))
        return kn_fail(err, KN_EINVAL, "kv-block-size: must be a power of two (16, 32, 64, 128 or 256), got %d",
                       c->kv_block_size);
    if (!c->spec) return kn_fail(err, KN_ENOMEM, "out of memory");
    if (!c->kv_type || (strcmp(c->kv_type, "f16") && strcmp(c->kv_type, "q8_0")))
        return kn_fail(err, KN_EINVAL, "kv-type: must be f16 or q8_0");
    if (!c->profile || profile_find(c->profile) < 0) return kn_fail(err, KN_EINVAL, "profile: not set or unknown");
    /* strings set directly, bypassing set: run their checks */
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        const char *v = k->kind == K_STR && k->check ? *str_field_c(c, k) : NULL;
        if (!v) continue;
        char *tmp = strdup(v);
        if (!tmp) return kn_fail(err, KN_ENOMEM, "config: out of memory");
        kn_status st = *v ? k->check(k, k->name, v, tmp, err) : kn_fail(err, KN_EINVAL, "%s: empty", k->name);
        free(tmp);
        if (st) return st;
    }
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
                key_idx = strlen(k) == kl ? key_find_n(k, kl, false) : -1;
                if (key_idx < 0) {
                    char known[512];
                    size_t n = 0;
                    for (int i = 0; i < N_KEYS && n < sizeof known; i++)
                        if (!KEYS[i].flag_only)
                            n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", KEYS[i].name);
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

/* Reads a config file (at most CFG_MAX_FILE bytes) into *buf (caller frees). */
static kn_status read_config_file(const char *path, char **buf, size_t *len, kn_err *err) {
    *buf = NULL;
    *len = 0;
    /* kn_read_file refuses a file of exactly its limit: allow one byte more
     * so that the limit is "at most 1 MiB", and say so. */
    kn_status st = kn_read_file(path, CFG_MAX_FILE + 1, buf, len, err);
    if (st == KN_ERANGE)
        return kn_fail(err, KN_ERANGE, "%s: larger than the limit of %u bytes (1 MiB) for a config file", path,
                       CFG_MAX_FILE);
    return st;
}

/* Applies YAML text (read from path) on top of c, all or nothing. */
static kn_status load_yaml_buf(srv_config *c, const char *path, const char *buf, size_t len, kn_err *err) {
    srv_config tmp;
    kn_status st = cfg_copy(&tmp, c, err);
    if (!st) st = yaml_apply(&tmp, path, buf, len, err);
    if (st) {
        srv_config_free(&tmp);
        return st;
    }
    cfg_commit(c, &tmp);
    return KN_OK;
}

kn_status srv_config_load_yaml(srv_config *c, const char *path, kn_err *err) {
    char *buf;
    size_t len;
    kn_status st = read_config_file(path, &buf, &len, err);
    if (st) return st;
    st = load_yaml_buf(c, path, buf, len, err);
    free(buf);
    return st;
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
                idx = key_find_n(name, nl, true);
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

/* The file, environment and flag layers on top of c. */
static kn_status apply_layers(srv_config *c, const char *path, const char *buf, size_t len, int argc, char **argv,
                              kn_err *err) {
    kn_status st = path ? load_yaml_buf(c, path, buf, len, err) : KN_OK;
    if (!st) st = srv_config_apply_env(c, err);
    if (!st) st = srv_config_parse_args(c, argc, argv, NULL, err);
    return st;
}

kn_status srv_config_from_args(srv_config *c, int argc, char **argv, kn_err *err) {
    srv_config_init(c);
    const char *path = NULL;
    char *buf = NULL;
    size_t len = 0;
    kn_status st = srv_config_parse_args(NULL, argc, argv, &path, err);
    if (!st && path) st = read_config_file(path, &buf, &len, err);
    if (!st) {
        /* The profile in effect: the same layers on a scratch config, where
         * the profile key takes flag > env > file > default like any other. */
        srv_config s;
        srv_config_init(&s);
        st = apply_layers(&s, path, buf, len, argc, argv, err);
        if (!st && !s.profile) st = kn_fail(err, KN_ENOMEM, "config: out of memory");
        if (!st) st = srv_config_apply_profile(c, s.profile, err);
        srv_config_free(&s);
    }
    if (!st) st = apply_layers(c, path, buf, len, argc, argv, err);
    free(buf);
    if (!st) st = srv_config_validate(c, err);
    return st;
}

kn_status srv_config_apply_profile(srv_config *c, const char *name, kn_err *err) {
    int p = name ? profile_find(name) : -1;
    if (p < 0)
        return kn_fail(err, KN_EINVAL, "profile: '%.*s' is not a profile (latency, throughput, balanced or memory)",
                       CFG_SHOW, name ? name : "");
    srv_config tmp;
    kn_status st = cfg_copy(&tmp, c, err);
    if (!st) st = set_idx(&tmp, key_find("profile"), name, "profile", err);
    for (int i = 0; !st && i < N_PROFILE_KNOBS; i++)
        st = set_idx(&tmp, key_find(PROFILES[p].knobs[i].key), PROFILES[p].knobs[i].value, PROFILES[p].name, err);
    if (st) {
        srv_config_free(&tmp);
        return st;
    }
    cfg_commit(c, &tmp);
    return KN_OK;
}

/* ---- dump ------------------------------------------------------------------ */

/* v with the largest exact k/m/g suffix. */
static void dump_bytes(FILE *f, long long v) {
    static const struct {
        int sh;
        char suf;
    } S[] = {{30, 'g'}, {20, 'm'}, {10, 'k'}};
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        long long u = 1LL << S[i].sh;
        if (v != 0 && v % u == 0) {
            fprintf(f, "%lld%c", v / u, S[i].suf);
            return;
        }
    }
    fprintf(f, "%lld", v);
}

/* A YAML double-quoted scalar. */
static void dump_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

char *srv_config_dump(const srv_config *c) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return NULL;
    fprintf(f, "# kiln serve: settings in effect (flags > environment > config file > profile %s > defaults)\n",
            c->profile ? c->profile : "?");
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        if (k->flag_only) continue;
        switch (k->kind) {
        case K_STR: {
            const char *v = *str_field_c(c, k);
            if (k->secret)
                fprintf(f, "# %s: %s\n", k->name, v ? "(set)" : "(none)");
            else if (!v)
                fprintf(f, "# %s: (none)\n", k->name);
            else {
                fprintf(f, "%s: ", k->name);
                dump_str(f, v);
                fputc('\n', f);
            }
            break;
        }
        case K_INT: fprintf(f, "%s: %d\n", k->name, *int_field_c(c, k)); break;
        case K_I64:
            fprintf(f, "%s: ", k->name);
            dump_bytes(f, (long long)*(const int64_t *)((const char *)c + k->off));
            fputc('\n', f);
            break;
        case K_BOOL: fprintf(f, "%s: %s\n", k->name, *(const bool *)((const char *)c + k->off) ? "true" : "false"); break;
        }
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- list helpers ---------------------------------------------------------- */

bool srv_config_list_next(const char **cursor, const char **item, size_t *len) {
    const char *p = *cursor;
    if (!p) return false;
    while (is_blank(*p)) p++;
    if (!*p) {
        *cursor = NULL;
        return false;
    }
    const char *end = strchr(p, ',');
    const char *next = end ? end + 1 : NULL;
    if (!end) end = p + strlen(p);
    const char *b = end;
    while (b > p && is_blank(b[-1])) b--;
    *item = p;
    *len = (size_t)(b - p);
    *cursor = next;
    return true;
}

bool srv_config_is_pinned(const srv_config *c, const char *name) {
    const char *cur = c->pin, *it;
    size_t len, n = strlen(name);
    while (srv_config_list_next(&cur, &it, &len))
        if (len == n && !memcmp(it, name, n)) return true;
    return false;
}

const char *srv_config_alias_target(const srv_config *c, const char *name, size_t *len) {
    const char *cur = c->aliases, *it;
    size_t il, n = strlen(name);
    while (srv_config_list_next(&cur, &it, &il)) {
        const char *eq = memchr(it, '=', il);
        if (!eq || (size_t)(eq - it) != n || memcmp(it, name, n)) continue;
        *len = il - n - 1;
        return eq + 1;
    }
    return NULL;
}

kn_status srv_cpu_range_parse(const char *text, cpu_set_t *out, kn_err *err) {
    CPU_ZERO(out);
    if (!text || !*text) return kn_fail(err, KN_EINVAL, "cpu-range: the value is empty");
    size_t n = strlen(text);
    if (n > CFG_MAX_STR) return kn_fail(err, KN_ERANGE, "cpu-range: longer than %d bytes", CFG_MAX_STR);
    char *canon = strdup(text);
    if (!canon) return kn_fail(err, KN_ENOMEM, "cpu-range: out of memory");
    kn_status st = canon_list(&KEYS[key_find("cpu-range")], "cpu-range", text, canon, err);
    if (!st) st = cpu_parse_canon("cpu-range", canon, out, err);
    free(canon);
    if (st) CPU_ZERO(out);
    return st;
}

kn_status srv_config_cpu_set(const srv_config *c, cpu_set_t *out, int *count, kn_err *err) {
    CPU_ZERO(out);
    if (count) *count = 0;
    if (!c->cpu_range) return KN_OK;
    cpu_set_t want;
    kn_status st = srv_cpu_range_parse(c->cpu_range, &want, err);
    if (st) return st;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return kn_fail(err, KN_EIO, "cpu-range: cannot read the CPUs this process may use: %s", strerror(errno));
    for (int cpu = 0; cpu <= CFG_MAX_CPU; cpu++) {
        if (!CPU_ISSET((size_t)cpu, &want) || CPU_ISSET((size_t)cpu, &allowed)) continue;
        /* list the allowed CPUs as ranges */
        char list[256];
        size_t o = 0;
        for (int a = 0; a <= CFG_MAX_CPU && o < sizeof list; a++) {
            if (!CPU_ISSET((size_t)a, &allowed)) continue;
            int b = a;
            while (b < CFG_MAX_CPU && CPU_ISSET((size_t)(b + 1), &allowed)) b++;
            int w = b > a ? snprintf(list + o, sizeof list - o, "%s%d-%d", o ? "," : "", a, b)
                          : snprintf(list + o, sizeof list - o, "%s%d", o ? "," : "", a);
            o += (size_t)w;
            a = b;
        }
        return kn_fail(err, KN_EINVAL, "cpu-range '%.*s': CPU %d is not available to this process (it may use %s)",
                       CFG_SHOW, c->cpu_range, cpu, o ? list : "none");
    }
    *out = want;
    if (count) *count = CPU_COUNT(&want);
    return KN_OK;
}
