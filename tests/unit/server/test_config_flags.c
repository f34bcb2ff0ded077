/* test_config_flags.c — `kiln serve` settings, second part (the first is
 * test_config.c): the CPU range, --print-config, every form of the boolean
 * flags, the reliability keys, and the dump read back. */
#include "config_test.h"

#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void test_cpu_set(void **st) {
    (void)st;
    kn_err e = {0};
    cpu_set_t set;
    assert_int_equal(srv_cpu_range_parse("0,2,4-5, 1023", &set, &e), KN_OK);
    assert_int_equal(CPU_COUNT(&set), 5);
    static const int IN[] = {0, 2, 4, 5, 1023};
    for (size_t i = 0; i < 5; i++) assert_true(CPU_ISSET((size_t)IN[i], &set));
    assert_false(CPU_ISSET(1, &set));
    assert_false(CPU_ISSET(3, &set));
    assert_false(CPU_ISSET(6, &set));
    assert_int_equal(srv_cpu_range_parse("0-1023", &set, &e), KN_OK);
    assert_int_equal(CPU_COUNT(&set), 1024);
    assert_int_equal(srv_cpu_range_parse("2-1", &set, &e), KN_ERANGE);
    assert_int_equal(CPU_COUNT(&set), 0);
    assert_int_equal(srv_cpu_range_parse("", &set, &e), KN_EINVAL);
    assert_int_equal(srv_cpu_range_parse("x", &set, &e), KN_EINVAL);
    assert_msg(&e, "cpu-range: 'x' is not a CPU");

    /* srv_config_cpu_set against the CPUs this process may use */
    cpu_set_t allowed;
    assert_int_equal(sched_getaffinity(0, sizeof allowed, &allowed), 0);
    int first = -1, missing = -1;
    for (int i = 0; i < 1024; i++) {
        if (CPU_ISSET((size_t)i, &allowed) && first < 0) first = i;
        if (!CPU_ISSET((size_t)i, &allowed) && missing < 0) missing = i;
    }
    assert_true(first >= 0);
    srv_config c;
    srv_config_init(&c);
    int n = -1;
    assert_int_equal(srv_config_cpu_set(&c, &set, &n, &e), KN_OK); /* none: no affinity */
    assert_int_equal(n, 0);
    assert_int_equal(CPU_COUNT(&set), 0);
    char text[32];
    snprintf(text, sizeof text, "%d", first);
    assert_int_equal(srv_config_set(&c, "cpu-range", text, &e), KN_OK);
    assert_int_equal(srv_config_cpu_set(&c, &set, &n, &e), KN_OK);
    assert_int_equal(n, 1);
    assert_true(CPU_ISSET((size_t)first, &set));
    assert_int_equal(srv_config_cpu_set(&c, &set, NULL, &e), KN_OK);
    if (missing >= 0) {
        snprintf(text, sizeof text, "%d,%d", first, missing);
        assert_int_equal(srv_config_set(&c, "cpu-range", text, &e), KN_OK);
        assert_int_equal(srv_config_cpu_set(&c, &set, &n, &e), KN_EINVAL);
        char want[80];
        snprintf(want, sizeof want, "CPU %d is not available to this process (it may use %d", missing, first);
        assert_msg(&e, want);
        assert_int_equal(n, 0);
        assert_int_equal(CPU_COUNT(&set), 0);
    }
    srv_config_free(&c);
}

static void test_print_config_flag(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    char *a1[] = {"serve", "--print-config", "-m", "x.gguf"};
    assert_int_equal(srv_config_parse_args(&c, 4, a1, NULL, &e), KN_OK);
    assert_true(c.print_config);
    assert_string_equal(c.model_file, "x.gguf");
    char *a2[] = {"serve", "--print_config=no"};
    assert_int_equal(srv_config_parse_args(&c, 2, a2, NULL, &e), KN_OK);
    assert_false(c.print_config);
    char *a3[] = {"serve", "--print-config=maybe"};
    assert_int_equal(srv_config_parse_args(&c, 2, a3, NULL, &e), KN_EINVAL);
    assert_msg(&e, "--print-config: 'maybe' is not a boolean");
    /* not a file key */
    char path[600];
    assert_int_equal(load_text(&c, "print-config: true\n", &e, path, sizeof path), KN_ENOTFOUND);
    assert_msg(&e, ":1: unknown key 'print-config'");
    assert_msg_lacks(&e, "print-config,");
    assert_false(c.print_config);
    srv_config_free(&c);
    /* through from_args */
    env_saved env;
    env_save_clear(&env);
    assert_int_equal(srv_config_from_args(&c, 4, a1, &e), KN_OK);
    assert_true(c.print_config);
    srv_config_free(&c);
    env_restore(&env);
}

/* Every boolean flag of kiln serve, in every form: `--flag` alone (at the
 * end, or before another option), `--flag=B` and `--flag B` with every
 * spelling parse_bool takes, and the errors: a word after a boolean flag
 * that is not a boolean names the flag (it is not taken as a positional),
 * and a failing flag leaves the config unchanged. */
static const struct {
    const char *flag;
    size_t off;
} BOOL_FLAGS[] = {
    {"--mmap", offsetof(srv_config, mmap_weights)},
    {"--log-prompts", offsetof(srv_config, log_prompts)},
    {"--response-cache", offsetof(srv_config, response_cache)},
    {"--embedding-cache", offsetof(srv_config, embedding_cache)},
    {"--cache-compress", offsetof(srv_config, cache_compress)},
    {"--print-config", offsetof(srv_config, print_config)},
};

static bool bool_at(const srv_config *c, size_t off) { return *(const bool *)((const char *)c + off); }

/* Parses argv (argc words, argv[0] "serve") into c: checks that pass 1
 * accepts it, then applies it on top of the defaults with the flag's field
 * set to start first; returns the flag's value. */
static bool parse_bool_flag(size_t off, bool start, int argc, char **argv, srv_config *c) {
    kn_err e = {0};
    const char *cfg = NULL;
    kn_status s = srv_config_parse_args(NULL, argc, argv, &cfg, &e);
    if (s) fail_msg("pass 1 of %s %s: %s", argv[1], argc > 2 ? argv[2] : "", e.msg);
    srv_config_init(c);
    *(bool *)((char *)c + off) = start;
    s = srv_config_parse_args(c, argc, argv, NULL, &e);
    if (s) fail_msg("%s %s: %s", argv[1], argc > 2 ? argv[2] : "", e.msg);
    return bool_at(c, off);
}

static void test_bool_flag_forms(void **st) {
    (void)st;
    static const char *const T[] = {"true", "yes", "on", "1", "TRUE", "Yes", "ON"};
    static const char *const F[] = {"false", "no", "off", "0", "FALSE", "No", "Off"};
    for (size_t f = 0; f < sizeof BOOL_FLAGS / sizeof BOOL_FLAGS[0]; f++) {
        const char *flag = BOOL_FLAGS[f].flag;
        size_t off = BOOL_FLAGS[f].off;
        srv_config c;
        char eq[64];
        /* the bare switch: last, before a long option, before a short one, before -h */
        char *a1[] = {"serve", (char *)flag};
        assert_true(parse_bool_flag(off, false, 2, a1, &c));
        srv_config_free(&c);
        char *a2[] = {"serve", (char *)flag, "--port", "7"};
        assert_true(parse_bool_flag(off, false, 4, a2, &c));
        assert_int_equal(c.port, 7);
        srv_config_free(&c);
        char *a3[] = {"serve", (char *)flag, "-m", "x.gguf"};
        assert_true(parse_bool_flag(off, false, 4, a3, &c));
        assert_string_equal(c.model_file, "x.gguf");
        srv_config_free(&c);
        char *a4[] = {"serve", (char *)flag, "-h"};
        assert_true(parse_bool_flag(off, false, 3, a4, &c));
        srv_config_free(&c);
        char *a5[] = {"serve", (char *)flag, "--config=x.yaml"};
        assert_true(parse_bool_flag(off, false, 3, a5, &c));
        srv_config_free(&c);
        /* --flag B and --flag=B, every spelling, both ways */
        for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
            char *t1[] = {"serve", (char *)flag, (char *)T[i]};
            assert_true(parse_bool_flag(off, false, 3, t1, &c));
            srv_config_free(&c);
            char *f1[] = {"serve", (char *)flag, (char *)F[i], "--port", "9"};
            assert_false(parse_bool_flag(off, true, 5, f1, &c));
            assert_int_equal(c.port, 9);
            srv_config_free(&c);
            snprintf(eq, sizeof eq, "%s=%s", flag, T[i]);
            char *t2[] = {"serve", eq};
            assert_true(parse_bool_flag(off, false, 2, t2, &c));
            srv_config_free(&c);
            snprintf(eq, sizeof eq, "%s=%s", flag, F[i]);
            char *f2[] = {"serve", eq};
            assert_false(parse_bool_flag(off, true, 2, f2, &c));
            srv_config_free(&c);
        }
        /* '_' for '-' in the name, and a later flag wins */
        char under[64];
        snprintf(under, sizeof under, "%s", flag);
        for (char *p = under + 2; *p; p++)
            if (*p == '-') *p = '_';
        char *u1[] = {"serve", under, "off", (char *)flag};
        assert_true(parse_bool_flag(off, false, 4, u1, &c));
        srv_config_free(&c);
        char *u2[] = {"serve", (char *)flag, under, "0"};
        assert_false(parse_bool_flag(off, true, 4, u2, &c));
        srv_config_free(&c);

        /* errors: a word that is not a boolean names the flag, in both passes */
        static const char *const BAD[] = {"maybe", "model.gguf", "", "2", "-"};
        for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
            char want[128];
            snprintf(want, sizeof want, "%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)", flag,
                     BAD[i]);
            char *b1[] = {"serve", "--port", "5", (char *)flag, (char *)BAD[i]};
            kn_err e = {0};
            const char *cfg = "sentinel";
            assert_int_equal(srv_config_parse_args(NULL, 5, b1, &cfg, &e), KN_EINVAL);
            assert_msg(&e, want);
            assert_msg_lacks(&e, "unexpected argument");
            assert_null(cfg);
            srv_config_init(&c);
            memset(&e, 0, sizeof e);
            assert_int_equal(srv_config_parse_args(&c, 5, b1, NULL, &e), KN_EINVAL);
            assert_msg(&e, want);
            assert_int_equal(c.port, 8080); /* unchanged, even the flag before it */
            srv_config_free(&c);
            snprintf(eq, sizeof eq, "%s=%s", flag, BAD[i]);
            char *b2[] = {"serve", eq};
            srv_config_init(&c);
            assert_int_equal(srv_config_parse_args(&c, 2, b2, NULL, &e), KN_EINVAL);
            assert_msg(&e, want);
            srv_config_free(&c);
        }
        /* one value only: a word after the value is a positional, an error */
        char *b3[] = {"serve", (char *)flag, "true", "model.gguf"};
        srv_config_init(&c);
        kn_err e = {0};
        assert_int_equal(srv_config_parse_args(&c, 4, b3, NULL, &e), KN_EINVAL);
        assert_msg(&e, "unexpected argument 'model.gguf'");
        srv_config_free(&c);
    }

    /* through the whole protocol: --print-config false does not print, and
     * a flag B overrides the file */
    env_saved env;
    env_save_clear(&env);
    char dir[512], path[600];
    tu_tmpdir(dir, sizeof dir);
    write_file(path, sizeof path, dir, "kiln.yaml", "response-cache: false\nmmap: true\nmodels: /m\n");
    char *a[] = {"serve", "--config", path, "--response-cache", "true", "--mmap", "no", "--print-config", "false",
                 "--cache-compress"};
    srv_config c;
    kn_err e = {0};
    assert_int_equal(srv_config_from_args(&c, 10, a, &e), KN_OK);
    assert_true(c.response_cache);
    assert_false(c.mmap_weights);
    assert_false(c.print_config);
    assert_true(c.cache_compress);
    assert_string_equal(c.models_dir, "/m");
    srv_config_free(&c);
    tu_rmdir(dir);
    env_restore(&env);
}

/* Every field but api_key and print_config. */
static void assert_cfg_equal(const srv_config *a, const srv_config *b) {
#define S(f)                                                                                                           \
    do {                                                                                                               \
        if (!a->f || !b->f)                                                                                            \
            assert_ptr_equal(a->f, b->f);                                                                              \
        else                                                                                                           \
            assert_string_equal(a->f, b->f);                                                                           \
    } while (0)
#define I(f) assert_int_equal(a->f, b->f)
    S(models_dir); S(model_file); S(default_model); S(host); I(port); I(threads); I(ctx); I(parallel); I(batch);
    I(kv_tokens); S(kv_type); I(max_body); I(queue_len); I(queue_timeout_s); I(grace_s); I(conn_limit);
    I(conn_timeout_s); I(max_tokens); I(mmap_weights); I(sla_p95_ms); I(sla_window_s); I(memory_budget);
    I(unload_timeout_s); I(cleanup_interval_s); S(preload); S(pin); S(aliases); S(profile); I(batch_wait_ms);
    I(cache_mib); S(cpu_range);
#undef S
#undef I
}

/* dump -> file -> load on top of the defaults gives the same config. */
static void roundtrip(const srv_config *c, char **text_out) {
    char *text = srv_config_dump(c);
    assert_non_null(text);
    srv_config back;
    srv_config_init(&back);
    kn_err e = {0};
    char path[600];
    kn_status s = load_text(&back, text, &e, path, sizeof path);
    if (s) fail_msg("reading the dump back: %s\n%s", e.msg, text);
    assert_cfg_equal(c, &back);
    assert_null(back.api_key);
    srv_config_free(&back);
    *text_out = text;
}

/* Issue 11: timeouts, request limits, CORS origins and --log-prompts. */
static void test_reliability_keys(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    assert_int_equal(c.send_timeout_s, 120);
    assert_int_equal(c.read_timeout_s, 60);
    assert_int_equal(c.limit_messages, 1024);
    assert_int_equal(c.limit_max_tokens, 32768);
    assert_int_equal(c.limit_embed_inputs, 2048);
    assert_int_equal(c.limit_stops, 16);
    assert_int_equal(c.limit_logit_bias, 1024);
    assert_int_equal(c.limit_json_depth, 64);
    assert_null(c.cors_origin);
    assert_false(c.log_prompts);
    static const struct {
        const char *key, *val;
        kn_status want;
    } CASES[] = {
        {"send-timeout", "1", KN_OK},          {"send-timeout", "0", KN_ERANGE},
        {"read_timeout", "86400", KN_OK},      {"read-timeout", "86401", KN_ERANGE},
        {"limit-messages", "1", KN_OK},        {"limit-messages", "0", KN_ERANGE},
        {"limit-max-tokens", "16777216", KN_OK}, {"limit-max-tokens", "16777217", KN_ERANGE},
        {"limit-embed-inputs", "2048", KN_OK}, {"limit-embed-inputs", "2049", KN_ERANGE},
        {"limit-stops", "0", KN_OK},           {"limit-stops", "17", KN_ERANGE},
        {"limit-logit-bias", "0", KN_OK},      {"limit-logit-bias", "-1", KN_ERANGE},
        {"limit-json-depth", "2", KN_OK},      {"limit-json-depth", "1", KN_ERANGE},
        {"limit-json-depth", "x", KN_EINVAL},  {"log-prompts", "yes", KN_OK},
        {"cors-origin", "*", KN_OK},           {"cors-origin", "ftp://a", KN_EINVAL},
        {"cors-origin", "http://a/b", KN_EINVAL}, {"cors-origin", "http://a, http://a", KN_EINVAL},
        {"cors-origin", "a.example", KN_EINVAL},
        {"cors-origin", " http://a.example , https://[::1]:8443", KN_OK},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        kn_status s = srv_config_set(&c, CASES[i].key, CASES[i].val, &e);
        if (s != CASES[i].want) fail_msg("%s=%s: got %d (%s), want %d", CASES[i].key, CASES[i].val, s, e.msg, CASES[i].want);
    }
    assert_string_equal(c.cors_origin, "http://a.example,https://[::1]:8443");
    assert_true(c.log_prompts);
    assert_int_equal(c.limit_json_depth, 2);
    assert_int_equal(c.send_timeout_s, 1);
    srv_config_free(&c);
}

static const char *const PROFILES[4] = {"latency", "throughput", "balanced", "memory"};

static void test_dump_roundtrip(void **st) {
    (void)st;
    env_saved env;
    env_save_clear(&env);
    kn_err e = {0};
    char *text;

    /* the defaults */
    srv_config c;
    srv_config_init(&c);
    roundtrip(&c, &text);
    assert_non_null(strstr(text, "\nmodels: \"./models\"\n"));
    assert_non_null(strstr(text, "\n# model: (none)\n"));
    assert_non_null(strstr(text, "\n# api-key: (none)\n"));
    assert_non_null(strstr(text, "\nport: 8080\n"));
    assert_non_null(strstr(text, "\nmax-body: 8m\n"));
    assert_non_null(strstr(text, "\nmemory-budget: 0\n"));
    assert_non_null(strstr(text, "\nmmap: false\n"));
    assert_non_null(strstr(text, "\nunload-timeout: 300\n"));
    assert_non_null(strstr(text, "\ncleanup-interval: 30\n"));
    assert_non_null(strstr(text, "\nprofile: \"balanced\"\n"));
    assert_non_null(strstr(text, "\nbatch-wait-ms: 2\n"));
    assert_non_null(strstr(text, "\ncache-mib: 512\n"));
    assert_non_null(strstr(text, "\n# cpu-range: (none)\n"));
    assert_null(strstr(text, "print-config"));
    free(text);
    srv_config_free(&c);

    /* everything set, strings that need quoting, a secret api-key */
    char *argv[] = {"serve",
                    "--models", "/srv/\"odd\" dir\\x: #y\tz",
                    "-m", "/m/t\xc3\xa9.gguf",
                    "--default-model", "tiny",
                    "--host", "::1",
                    "--api-key", "hunter2-secret",
                    "--max-body", "1536",
                    "--memory-budget", "3g",
                    "--unload-timeout", "-1",
                    "--cleanup-interval", "2",
                    "--preload", "a, b:Q8_0",
                    "--pin", "org/x",
                    "--alias", "l=org/x,s=stories260K",
                    "--profile", "memory",
                    "--threads", "2",
                    "--mmap",
                    "--cpu-range", "0",
                    "--print-config"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    assert_int_equal(srv_config_from_args(&c, argc, argv, &e), KN_OK);
    assert_true(c.print_config);
    roundtrip(&c, &text);
    assert_null(strstr(text, "hunter2"));
    assert_non_null(strstr(text, "\n# api-key: (set)\n"));
    assert_non_null(strstr(text, "\nmodels: \"/srv/\\\"odd\\\" dir\\\\x: #y\\x09z\"\n"));
    assert_non_null(strstr(text, "\nmax-body: 1536\n"));
    assert_non_null(strstr(text, "\nmemory-budget: 3g\n"));
    assert_non_null(strstr(text, "\nalias: \"l=org/x,s=stories260K\"\n"));
    assert_non_null(strstr(text, "\nkv-type: \"q8_0\"\n"));
    assert_non_null(strstr(text, "\nctx-size: 2048\n"));
    /* read back through from_args too: the same config */
    char dir[512], path[600];
    tu_tmpdir(dir, sizeof dir);
    write_file(path, sizeof path, dir, "dumped.yaml", text);
    char *argv2[] = {"serve", "--config", path};
    srv_config back;
    assert_int_equal(srv_config_from_args(&back, 3, argv2, &e), KN_OK);
    assert_cfg_equal(&c, &back);
    srv_config_free(&back);
    tu_rmdir(dir);
    free(text);
    srv_config_free(&c);

    /* each profile's config round-trips */
    for (size_t i = 0; i < 4; i++) {
        srv_config_init(&c);
        assert_int_equal(srv_config_apply_profile(&c, PROFILES[i], &e), KN_OK);
        roundtrip(&c, &text);
        free(text);
        srv_config_free(&c);
    }
    env_restore(&env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_set),
        cmocka_unit_test(test_print_config_flag),
        cmocka_unit_test(test_bool_flag_forms),
        cmocka_unit_test(test_reliability_keys),
        cmocka_unit_test(test_dump_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
