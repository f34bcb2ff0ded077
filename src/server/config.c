/*
 * config.c — `kiln serve` settings (see kiln/server.h for the format and the
 * precedence protocol): the defaults, copying and freeing a config,
 * srv_config_set and the cross-field validation, the environment layer, the
 * whole protocol (srv_config_from_args), and the helpers over the list
 * values (pins, aliases, cpu-range).
 *
 * What a key is and how a value is checked live in config_keys.c, the YAML
 * file in config_yaml.c, the flags in config_flags.c (config_internal.h
 * says how they fit).
 */
#include "config_internal.h"

#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- defaults, copies, set, validate ------------------------------------------ */

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
    c->responses_max = 1000;
    c->responses_mib = 64;
    c->responses_ttl_s = 3600;
    c->print_config = false;
}

void srv_config_free(srv_config *c) {
    if (!c) return;
    for (int i = 0; i < CFG_N_KEYS; i++)
        if (srv_cfg_keys[i].kind == K_STR) free(*str_field(c, &srv_cfg_keys[i]));
    memset(c, 0, sizeof *c);
}

/* dst = a deep copy of src. On failure dst is zeroed (nothing to free). */
kn_status srv_cfg_copy(srv_config *dst, const srv_config *src, kn_err *err) {
    *dst = *src;
    for (int i = 0; i < CFG_N_KEYS; i++)
        if (srv_cfg_keys[i].kind == K_STR) *str_field(dst, &srv_cfg_keys[i]) = NULL;
    for (int i = 0; i < CFG_N_KEYS; i++) {
        if (srv_cfg_keys[i].kind != K_STR) continue;
        const char *s = *str_field_c(src, &srv_cfg_keys[i]);
        if (!s) continue;
        char *d = strdup(s);
        if (!d) {
            srv_config_free(dst);
            return kn_fail(err, KN_ENOMEM, "config: out of memory");
        }
        *str_field(dst, &srv_cfg_keys[i]) = d;
    }
    return KN_OK;
}

/* Replaces *c by *tmp (whose strings it takes). */
void srv_cfg_commit(srv_config *c, srv_config *tmp) {
    srv_config_free(c);
    *c = *tmp;
    memset(tmp, 0, sizeof *tmp);
}

kn_status srv_config_set(srv_config *c, const char *key, const char *value, kn_err *err) {
    int idx = srv_cfg_key_find(key);
    if (idx < 0) return kn_fail(err, KN_ENOTFOUND, "unknown setting '%.*s'", CFG_SHOW, key);
    return srv_cfg_set_idx(c, idx, value, key, err);
}

kn_status srv_config_validate(const srv_config *c, kn_err *err) {
    for (int i = 0; i < CFG_N_KEYS; i++) {
        const key_def *k = &srv_cfg_keys[i];
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
    if (!c->profile || srv_cfg_profile_find(c->profile) < 0) return kn_fail(err, KN_EINVAL, "profile: not set or unknown");
    /* strings set directly, bypassing set: run their checks */
    for (int i = 0; i < CFG_N_KEYS; i++) {
        const key_def *k = &srv_cfg_keys[i];
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

/* ---- the environment ----------------------------------------------------------- */

kn_status srv_config_apply_env(srv_config *c, kn_err *err) {
    srv_config tmp;
    kn_status st = srv_cfg_copy(&tmp, c, err);
    if (st) return st;
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof ENV_VARS[0]; i++) {
        const char *v = getenv(ENV_VARS[i].var);
        if (!v || !*v) continue;
        st = srv_cfg_set_idx(&tmp, srv_cfg_key_find(ENV_VARS[i].key), v, ENV_VARS[i].var, err);
        if (st) {
            srv_config_free(&tmp);
            return st;
        }
    }
    srv_cfg_commit(c, &tmp);
    return KN_OK;
}

/* ---- the protocol ------------------------------------------------------------ */

/* The file, environment and flag layers on top of c. */
static kn_status apply_layers(srv_config *c, const char *path, const char *buf, size_t len, int argc, char **argv,
                              kn_err *err) {
    kn_status st = path ? srv_cfg_load_yaml_buf(c, path, buf, len, err) : KN_OK;
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
    if (!st && path) st = srv_cfg_read_file(path, &buf, &len, err);
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
    kn_status st = srv_cfg_canon_list(&srv_cfg_keys[srv_cfg_key_find("cpu-range")], "cpu-range", text, canon, err);
    if (!st) st = srv_cfg_cpu_parse("cpu-range", canon, out, err);
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
