/*
 * config_flags.c — the flags of `kiln serve` (see srv_config_parse_args in
 * kiln/server.h): long flags `--name VALUE` and `--name=VALUE` for every key, the
 * short forms, boolean flags (`--name` alone, `--name B` or `--name=B`), and
 * `--config FILE`, applied to a copy of the config and committed only when
 * every flag is good.
 */
#include "config_internal.h"

#include <stdio.h>
#include <string.h>

/* Short flags of `kiln serve` and the keys they set. */
static const struct {
    const char *flag;
    const char *key;
} SHORT_FLAGS[] = {
    {"-m", "model"}, {"-t", "threads"}, {"-c", "ctx-size"},
    {"-np", "parallel"}, {"-b", "batch-size"}, {"-n", "n-predict"}, {"-md", "model-draft"},
};

/* The value of a boolean flag written without '=': the next argument, unless
 * there is none or it is another option (it starts with '-'), in which case
 * the flag is a switch ("true"). The next word is taken whatever it is, so
 * that `--mmap model.gguf` is an error naming --mmap ("not a boolean"), not
 * a stray positional argument. */
static const char *bool_value(int argc, char **argv, int *i) {
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!next || (next[0] == '-' && next[1])) return "true";
    ++*i;
    return next;
}

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
                snprintf(label, sizeof label, "--%.*s", cfg_shown(nl), name);
            }
            if (nl == 6 && !strncmp(name, "config", 6))
                is_config = true;
            else
                idx = srv_cfg_key_find_n(name, nl, true);
            if (!is_config && idx < 0)
                return kn_fail(err, KN_ENOTFOUND, "unknown flag '%s' (see kiln serve --help)", label);
        } else if (a[0] == '-' && a[1]) {
            for (size_t s = 0; s < sizeof SHORT_FLAGS / sizeof SHORT_FLAGS[0]; s++)
                if (!strcmp(a, SHORT_FLAGS[s].flag)) idx = srv_cfg_key_find(SHORT_FLAGS[s].key);
            if (idx < 0) return kn_fail(err, KN_ENOTFOUND, "unknown flag '%s' (see kiln serve --help)", label);
        } else {
            return kn_fail(err, KN_EINVAL, "unexpected argument '%s' (flags take the form --name VALUE)", label);
        }
        if (!val) {
            if (idx >= 0 && srv_cfg_keys[idx].kind == K_BOOL) {
                val = bool_value(argc, argv, &i);
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
        kn_status st = srv_cfg_set_idx(c, idx, val, label, err);
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
        st = srv_cfg_copy(&tmp, c, err);
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
    srv_cfg_commit(c, &tmp);
    return KN_OK;
}

