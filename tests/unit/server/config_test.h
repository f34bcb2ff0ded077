/* config_test.h — helpers the settings tests share (test_config.c,
 * test_config_flags.c): the environment saved and cleared around a test,
 * files in a temporary directory, message checks. */
#ifndef KILN_TEST_CONFIG_TEST_H
#define KILN_TEST_CONFIG_TEST_H

#include "testutil.h"
#include "kiln/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* The environment variables srv_config_apply_env reads. Every test that can
 * reach them saves and clears them first and restores them at the end. */
static const char *const ENV_NAMES[] = {"KILN_HOST",    "KILN_PORT",            "KILN_MODELS",           "KILN_API_KEY",
                                        "KILN_PROFILE", "MODEL_UNLOAD_TIMEOUT", "CLEANUP_CHECK_INTERVAL"};
enum { N_ENV = 7 };

typedef struct env_saved {
    char *val[N_ENV];
} env_saved;

static inline void env_save_clear(env_saved *s) {
    for (int i = 0; i < N_ENV; i++) {
        const char *v = getenv(ENV_NAMES[i]);
        s->val[i] = v ? strdup(v) : NULL;
        unsetenv(ENV_NAMES[i]);
    }
}

static inline void env_restore(env_saved *s) {
    for (int i = 0; i < N_ENV; i++) {
        if (s->val[i])
            setenv(ENV_NAMES[i], s->val[i], 1);
        else
            unsetenv(ENV_NAMES[i]);
        free(s->val[i]);
        s->val[i] = NULL;
    }
}

/* Writes text to dir/name; returns the path in buf. */
static inline const char *write_file(char *buf, size_t cap, const char *dir, const char *name, const char *text) {
    snprintf(buf, cap, "%s/%s", dir, name);
    FILE *f = fopen(buf, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* Asserts the message contains want (prints it otherwise). */
static inline void assert_msg(const kn_err *e, const char *want) {
    if (!strstr(e->msg, want)) fail_msg("message \"%s\" lacks \"%s\"", e->msg, want);
}

static inline void assert_msg_lacks(const kn_err *e, const char *bad) {
    if (strstr(e->msg, bad)) fail_msg("message \"%s\" contains \"%s\"", e->msg, bad);
}

/* Loads YAML text from a temp file into c; returns the status. */
static inline kn_status load_text(srv_config *c, const char *text, kn_err *e, char *path, size_t cap) {
    char dir[512];
    tu_tmpdir(dir, sizeof dir);
    write_file(path, cap, dir, "kiln.yaml", text);
    kn_status st = srv_config_load_yaml(c, path, e);
    tu_rmdir(dir);
    return st;
}


#endif
