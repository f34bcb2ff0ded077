/*
 * config_internal.h — private to the config_*.c files of `kiln serve`'s
 * settings (the public side is kiln/server.h):
 *   config_keys.c   the key table, the profiles, and what a value may be
 *                   (the string checkers, integers, booleans, set)
 *   config.c        defaults, copies, validation, the environment, and the
 *                   whole protocol (srv_config_from_args); list helpers
 *   config_yaml.c   the YAML file in (libyaml events) and out (the dump)
 *   config_flags.c  the flags of kiln serve
 *
 * One static const table describes every key (name, type, field offset,
 * range, string checker); set, validate, the YAML loader, the flag parser
 * and the dump all go through it. Every applying function works on a copy
 * (srv_cfg_copy) and swaps it in on success (srv_cfg_commit), so that a
 * failure leaves the caller's config unchanged.
 */
#ifndef KILN_SERVER_CONFIG_INTERNAL_H
#define KILN_SERVER_CONFIG_INTERNAL_H

#include "kiln/server.h"

#include <stddef.h>

#define CFG_MAX_FILE (1u << 20) /* YAML file limit */
#define CFG_MAX_STR 4096        /* longest string value */
#define CFG_SHOW 64             /* value bytes quoted in messages */
#define CFG_MAX_NAME 256        /* longest model name in a list */
#define CFG_MAX_CPU 1023        /* highest CPU number in cpu-range (CPU_SETSIZE - 1) */
#define CFG_N_KEYS 61           /* rows of srv_cfg_keys (checked where it is defined) */

typedef enum key_kind { K_STR, K_INT, K_I64, K_BOOL } key_kind;

typedef struct key_def key_def;

/* Checks a string value; may rewrite canon (a copy of v with room for
 * strlen(v) + 1 bytes) into a canonical form no longer than v. label names
 * the setting in messages. */
typedef kn_status (*str_check_fn)(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);

struct key_def {
    const char *name; /* canonical long name, '-' separated */
    key_kind kind;
    size_t off;         /* field offset in srv_config */
    long long lo, hi;   /* K_INT / K_I64 range */
    bool secret;        /* never quote the value in messages */
    bool flag_only;     /* a flag of kiln serve, not a setting (not in files, env or the dump) */
    str_check_fn check; /* K_STR: extra checks, or NULL */
};

/* The key table, in the order of the dump: CFG_N_KEYS rows (config_keys.c;
 * declared without its size so that the definition's own count is what the
 * check there compares). */
extern const key_def srv_cfg_keys[];

/* A key's field in a config. */
static inline char **str_field(srv_config *c, const key_def *k) { return (char **)((char *)c + k->off); }
static inline char *const *str_field_c(const srv_config *c, const key_def *k) {
    return (char *const *)((const char *)c + k->off);
}
static inline int *int_field(srv_config *c, const key_def *k) { return (int *)((char *)c + k->off); }
static inline const int *int_field_c(const srv_config *c, const key_def *k) {
    return (const int *)((const char *)c + k->off);
}

/* How many of n bytes a message quotes (a %.*s precision). */
static inline int cfg_shown(size_t n) { return (int)(n < CFG_SHOW ? n : CFG_SHOW); }

static inline bool is_blank(char ch) { return ch == ' ' || ch == '\t'; }

/* ---- config_keys.c ----------------------------------------------------------- */

/* Index of a key by name ('-' and '_' alike), or -1. n is the name length.
 * Flag-only keys are found only when flags is true. */
int srv_cfg_key_find_n(const char *name, size_t n, bool flags);
int srv_cfg_key_find(const char *name); /* NUL-terminated, not flag-only */

/* Applies srv_cfg_keys[idx] = value; label names the setting in messages
 * (the key as the user wrote it, the flag, or the environment variable). */
kn_status srv_cfg_set_idx(srv_config *c, int idx, const char *value, const char *label, kn_err *err);

/* "true"/"yes"/"on"/"1" and "false"/"no"/"off"/"0", any case. */
bool srv_cfg_parse_bool(const char *s, bool *out);

/* Index of a profile by name, or -1. */
int srv_cfg_profile_find(const char *name);

/* The canonical form of a comma list (kiln/server.h), into canon. */
kn_status srv_cfg_canon_list(const key_def *k, const char *label, const char *v, char *canon, kn_err *err);
/* Parses a canonical cpu-range list; fills out when non-NULL. */
kn_status srv_cfg_cpu_parse(const char *label, const char *canon, cpu_set_t *out, kn_err *err);

/* ---- config.c ------------------------------------------------------------------ */

/* dst = a deep copy of src. On failure dst is zeroed (nothing to free). */
kn_status srv_cfg_copy(srv_config *dst, const srv_config *src, kn_err *err);
/* Replaces *c by *tmp (whose strings it takes). */
void srv_cfg_commit(srv_config *c, srv_config *tmp);

/* ---- config_yaml.c ----------------------------------------------------------- */

/* Reads a config file (at most CFG_MAX_FILE bytes) into *buf (the caller frees). */
kn_status srv_cfg_read_file(const char *path, char **buf, size_t *len, kn_err *err);
/* Applies YAML text (read from path) on top of c, all or nothing. */
kn_status srv_cfg_load_yaml_buf(srv_config *c, const char *path, const char *buf, size_t len, kn_err *err);

#endif
