/*
 * config_keys.c — what a setting of `kiln serve` is: the key table (name,
 * type, field, range, checker) and the profiles, the string checkers (enums,
 * model names, comma lists, aliases, cpu-range, CORS origins), integer and
 * boolean parsing, and srv_cfg_set_idx, through which every layer (file,
 * environment, flags, profile) applies a value. See kiln/server.h for the
 * format of each kind of value.
 *
 * The string checkers of the list keys rewrite the value in place into its
 * canonical form (no spaces, no empty items).
 */
#include "config_internal.h"

#include "kiln/cache.h"
#include "kiln/engine.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static kn_status check_kv_type(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_bare_name(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_profile(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_names(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_aliases(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_cpu_range(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_spec(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_policy(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
static kn_status check_cors(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);

/* ---- the key table and the profiles ------------------------------------- */

#define F(field) offsetof(srv_config, field)

const key_def srv_cfg_keys[] = {
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
    {"chat-template", K_STR, F(chat_template), 0, 0, false, false, NULL},
    {"chat-template-file", K_STR, F(chat_template_file), 0, 0, false, false, NULL},
    {"response-cache", K_BOOL, F(response_cache), 0, 0, false, false, NULL},
    {"embedding-cache", K_BOOL, F(embedding_cache), 0, 0, false, false, NULL},
    {"cache-policy", K_STR, F(cache_policy), 0, 0, false, false, check_policy},
    {"cache-compress", K_BOOL, F(cache_compress), 0, 0, false, false, NULL},
    {"cache-ttl-response", K_INT, F(cache_ttl_response_s), 1, 31536000, false, false, NULL},
    {"cache-ttl-embedding", K_INT, F(cache_ttl_embedding_s), 1, 31536000, false, false, NULL},
    {"cache-dir", K_STR, F(cache_dir), 0, 0, false, false, NULL},
    {"cache-disk-size", K_I64, F(cache_disk_size), 0, 1LL << 50, false, false, NULL},
    {"responses-max", K_INT, F(responses_max), 0, 1000000, false, false, NULL},
    {"responses-mib", K_INT, F(responses_mib), 1, 65536, false, false, NULL},
    {"responses-ttl", K_INT, F(responses_ttl_s), 1, 31536000, false, false, NULL},
    {"print-config", K_BOOL, F(print_config), 0, 0, false, true, NULL},
};
#undef F

_Static_assert(sizeof srv_cfg_keys / sizeof srv_cfg_keys[0] == CFG_N_KEYS,
               "CFG_N_KEYS in config_internal.h is the number of rows of srv_cfg_keys");

/* The profiles: knob values applied at the level of the defaults (the
 * table in kiln/server.h). Every profile names the same knobs. */
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

/* ---- lookup ---------------------------------------------------------------- */

/* Index of a key by name ('-' and '_' alike), or -1. n is the name length.
 * Flag-only keys are found only when flags is true. */
int srv_cfg_key_find_n(const char *name, size_t n, bool flags) {
    for (int i = 0; i < CFG_N_KEYS; i++) {
        if (srv_cfg_keys[i].flag_only && !flags) continue;
        const char *k = srv_cfg_keys[i].name;
        size_t j = 0;
        for (; j < n && k[j]; j++) {
            char a = name[j] == '_' ? '-' : name[j];
            if (a != k[j]) break;
        }
        if (j == n && !k[j]) return i;
    }
    return -1;
}

int srv_cfg_key_find(const char *name) { return srv_cfg_key_find_n(name, strlen(name), false); }

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

/* Checks a value of a key that takes one word of a fixed set: ok, or
 * "LABEL: 'v' is not WHAT". */
static kn_status check_word(const key_def *k, const char *label, const char *v, bool ok, const char *what,
                            kn_err *err) {
    char sv[CFG_SHOW + 16];
    return ok ? KN_OK : kn_fail(err, KN_EINVAL, "%s: %s is not %s", label, show(sv, sizeof sv, k, v), what);
}

static kn_status check_spec(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    eng_spec_mode m;
    return check_word(k, label, v, eng_spec_parse(v, &m), "a speculative decoding mode (none, ngram or draft)",
                      err);
}

static kn_status check_policy(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    rc_policy p;
    return check_word(k, label, v, rc_policy_parse(v, &p),
                      "a cache eviction policy (lru, lfu, fifo or random)", err);
}

static kn_status check_kv_type(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    return check_word(k, label, v, !strcmp(v, "f16") || !strcmp(v, "q8_0"), "a KV cache type (f16 or q8_0)", err);
}

static kn_status check_bare_name(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    bool ok = !strchr(v, '/') && !strchr(v, '\\') && strcmp(v, ".") && strcmp(v, "..");
    return check_word(k, label, v, ok, "a model name (a file name without .gguf)", err);
}

int srv_cfg_profile_find(const char *name) {
    for (int i = 0; i < N_PROFILES; i++)
        if (!strcmp(PROFILES[i].name, name)) return i;
    return -1;
}

static kn_status check_profile(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    (void)canon;
    return check_word(k, label, v, srv_cfg_profile_find(v) >= 0,
                      "a profile (latency, throughput, balanced or memory)", err);
}

/* Rewrites v into canon as a canonical comma list: items trimmed of spaces
 * and tabs, spaces and tabs around '=' dropped, no empty item. */
kn_status srv_cfg_canon_list(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
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

/* NULL if s[0..n) is a model name (kiln/server.h), else why not. */
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
    kn_status st = srv_cfg_canon_list(k, label, v, canon, err);
    if (st) return st;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = cfg_shown(len);
        const char *why = name_problem(it, len, false);
        if (why) return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not a model name: it %s", label, show_n, it, why);
        if (list_has_before(canon, it, it, len, false))
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is listed twice", label, show_n, it);
    }
    return KN_OK;
}

static kn_status check_aliases(const key_def *k, const char *label, const char *v, char *canon, kn_err *err) {
    kn_status st = srv_cfg_canon_list(k, label, v, canon, err);
    if (st) return st;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = cfg_shown(len);
        const char *eq = memchr(it, '=', len);
        if (!eq || memchr(eq + 1, '=', len - (size_t)(eq - it) - 1))
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not of the form alias=target", label, show_n, it);
        size_t nl = (size_t)(eq - it), tl = len - nl - 1;
        const char *t = eq + 1;
        if (!nl || !tl)
            return kn_fail(err, KN_EINVAL, "%s: '%.*s' is not of the form alias=target", label, show_n, it);
        const char *why = name_problem(it, nl, true);
        if (why)
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' is not a name: it %s", label, cfg_shown(nl), it, why);
        why = name_problem(t, tl, false);
        if (why)
            return kn_fail(err, KN_EINVAL, "%s: target '%.*s' is not a model name: it %s", label, cfg_shown(tl),
                           t, why);
        if (nl == tl && !memcmp(it, t, nl))
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' points to itself", label, cfg_shown(nl), it);
        if (list_has_before(canon, it, it, nl, true))
            return kn_fail(err, KN_EINVAL, "%s: alias '%.*s' is given twice", label, cfg_shown(nl), it);
    }
    /* no chains: a target is not an alias */
    cur = canon;
    while (srv_config_list_next(&cur, &it, &len)) {
        const char *eq = memchr(it, '=', len);
        const char *t = eq + 1;
        size_t tl = len - (size_t)(t - it);
        if (list_has_before(canon, canon + strlen(canon) + 1, t, tl, true))
            return kn_fail(err, KN_EINVAL, "%s: the target '%.*s' of alias '%.*s' is itself an alias (aliases do not chain)",
                           label, cfg_shown(tl), t, cfg_shown((size_t)(eq - it)), it);
    }
    return KN_OK;
}

/* Parses one cpu-range item (digits, or digits-digits). */
static kn_status cpu_item(const char *label, const char *it, size_t len, int *lo, int *hi, kn_err *err) {
    int show_n = cfg_shown(len);
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
kn_status srv_cfg_cpu_parse(const char *label, const char *canon, cpu_set_t *out, kn_err *err) {
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
    kn_status st = srv_cfg_canon_list(k, label, v, canon, err);
    if (st) return st;
    if (!strcmp(canon, "*")) return KN_OK;
    const char *cur = canon, *it;
    size_t len;
    while (srv_config_list_next(&cur, &it, &len)) {
        int show_n = cfg_shown(len);
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
    kn_status st = srv_cfg_canon_list(k, label, v, canon, err);
    if (st) return st;
    return srv_cfg_cpu_parse(label, canon, NULL, err);
}

/* ---- integers, booleans, set ------------------------------------------------ */

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

bool srv_cfg_parse_bool(const char *s, bool *out) {
    static const char *const T[] = {"true", "yes", "on", "1"};
    static const char *const N[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        if (!strcasecmp(s, T[i])) { *out = true; return true; }
        if (!strcasecmp(s, N[i])) { *out = false; return true; }
    }
    return false;
}

/* Applies srv_cfg_keys[idx] = value; label names the setting in messages (the key
 * as the user wrote it, the flag, or the environment variable). */
kn_status srv_cfg_set_idx(srv_config *c, int idx, const char *value, const char *label, kn_err *err) {
    const key_def *k = &srv_cfg_keys[idx];
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
        if (!srv_cfg_parse_bool(value, &b))
            return kn_fail(err, KN_EINVAL, "%s: %s is not a boolean (true/false, yes/no, on/off, 1/0)", label,
                           show(sv, sizeof sv, k, value));
        *(bool *)((char *)c + k->off) = b;
        return KN_OK;
    }
    }
    return kn_fail(err, KN_EINVAL, "%s: internal: bad key kind", label);
}

/* ---- profiles ----------------------------------------------------------------- */

kn_status srv_config_apply_profile(srv_config *c, const char *name, kn_err *err) {
    int p = name ? srv_cfg_profile_find(name) : -1;
    if (p < 0)
        return kn_fail(err, KN_EINVAL, "profile: '%.*s' is not a profile (latency, throughput, balanced or memory)",
                       CFG_SHOW, name ? name : "");
    srv_config tmp;
    kn_status st = srv_cfg_copy(&tmp, c, err);
    if (!st) st = srv_cfg_set_idx(&tmp, srv_cfg_key_find("profile"), name, "profile", err);
    for (int i = 0; !st && i < N_PROFILE_KNOBS; i++)
        st = srv_cfg_set_idx(&tmp, srv_cfg_key_find(PROFILES[p].knobs[i].key), PROFILES[p].knobs[i].value, PROFILES[p].name, err);
    if (st) {
        srv_config_free(&tmp);
        return st;
    }
    srv_cfg_commit(c, &tmp);
    return KN_OK;
}
