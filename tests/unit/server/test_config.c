/* test_config.c — `kiln serve` settings: defaults, every key through YAML
 * and through flags, the precedence flags > environment > file > profile >
 * defaults (also for MODEL_UNLOAD_TIMEOUT / CLEANUP_CHECK_INTERVAL and the
 * profile itself), each profile's knobs, the list keys (preload, pin,
 * alias, cpu-range), and error messages that name the key, the value and
 * the line. The rest is in test_config_flags.c. */
#include "config_test.h"

#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void test_defaults(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    assert_string_equal(c.models_dir, "./models");
    assert_null(c.model_file);
    assert_null(c.default_model);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 8080);
    assert_true(c.threads >= 1 && c.threads <= 1024);
    assert_int_equal(c.ctx, 0);
    assert_int_equal(c.parallel, 4);
    assert_int_equal(c.batch, 512);
    assert_int_equal(c.kv_tokens, 0);
    assert_string_equal(c.kv_type, "f16");
    assert_null(c.api_key);
    assert_int_equal(c.max_body, 8 << 20);
    assert_int_equal(c.queue_len, 64);
    assert_int_equal(c.queue_timeout_s, 60);
    assert_int_equal(c.grace_s, 30);
    assert_int_equal(c.conn_limit, 1024);
    assert_int_equal(c.conn_timeout_s, 60);
    assert_int_equal(c.max_tokens, -1);
    assert_false(c.mmap_weights);
    assert_int_equal(c.sla_p95_ms, 2000);
    assert_int_equal(c.sla_window_s, 300);
    assert_int_equal(c.memory_budget, 0);
    assert_int_equal(c.unload_timeout_s, 300);
    assert_int_equal(c.cleanup_interval_s, 30);
    assert_null(c.preload);
    assert_null(c.pin);
    assert_null(c.aliases);
    assert_string_equal(c.profile, "balanced");
    assert_int_equal(c.batch_wait_ms, 2);
    assert_int_equal(c.cache_mib, 512);
    assert_null(c.cpu_range);
    assert_false(c.print_config);
    kn_err e = {0};
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    srv_config_free(&c);
    assert_null(c.host);
    srv_config_free(&c); /* idempotent */
    srv_config_free(NULL);
}

/* The values every-key tests set (all differ from the defaults). */
static void check_all_set(const srv_config *c) {
    assert_string_equal(c->models_dir, "/srv/models dir");
    assert_string_equal(c->model_file, "/srv/m/tiny.gguf");
    assert_string_equal(c->default_model, "tiny");
    assert_string_equal(c->host, "0.0.0.0");
    assert_int_equal(c->port, 9191);
    assert_int_equal(c->threads, 3);
    assert_int_equal(c->ctx, 2048);
    assert_int_equal(c->parallel, 8);
    assert_int_equal(c->batch, 256);
    assert_int_equal(c->kv_tokens, 16384);
    assert_string_equal(c->kv_type, "q8_0");
    assert_string_equal(c->api_key, "s3cret: key");
    assert_int_equal(c->max_body, 1 << 20);
    assert_int_equal(c->queue_len, 7);
    assert_int_equal(c->queue_timeout_s, 11);
    assert_int_equal(c->grace_s, 5);
    assert_int_equal(c->conn_limit, 99);
    assert_int_equal(c->conn_timeout_s, 13);
    assert_int_equal(c->max_tokens, 77);
    assert_true(c->mmap_weights);
    assert_int_equal(c->sla_p95_ms, 1500);
    assert_int_equal(c->sla_window_s, 60);
    assert_int_equal(c->memory_budget, 3LL << 30);
    assert_int_equal(c->unload_timeout_s, 45);
    assert_int_equal(c->cleanup_interval_s, 5);
    assert_string_equal(c->preload, "tiny,stories260K:Q8_0");
    assert_string_equal(c->pin, "org/repo:Q8_0");
    assert_string_equal(c->aliases, "llama=tiny-llama-Q4_K_M,small=stories260K");
    assert_string_equal(c->profile, "memory");
    assert_int_equal(c->batch_wait_ms, 7);
    assert_int_equal(c->cache_mib, 128);
    assert_string_equal(c->cpu_range, "0-3,6");
    assert_false(c->print_config);
}

static void test_yaml_every_key(void **st) {
    (void)st;
    static const char *yaml = "# kiln serve settings\n"
                              "models: /srv/models dir\n"
                              "model: /srv/m/tiny.gguf\n"
                              "default_model: tiny\n"
                              "host: \"0.0.0.0\"\n"
                              "port: 9191\n"
                              "threads: 3\n"
                              "ctx-size: 2048\n"
                              "parallel: 8\n"
                              "batch_size: 256\n"
                              "kv-tokens: 16384\n"
                              "kv_type: q8_0\n"
                              "api-key: 's3cret: key'\n"
                              "max_body: 1m\n"
                              "queue-len: 7\n"
                              "queue_timeout: 11\n"
                              "grace-period: 5\n"
                              "conn_limit: 99\n"
                              "conn-timeout: 13\n"
                              "n_predict: 77\n"
                              "mmap: yes\n"
                              "sla-p95-ms: 1500\n"
                              "sla_window: 60\n"
                              "memory-budget: 3g\n"
                              "unload_timeout: 45\n"
                              "cleanup-interval: 5\n"
                              "preload: tiny, stories260K:Q8_0\n"
                              "pin: org/repo:Q8_0\n"
                              "alias: \"llama = tiny-llama-Q4_K_M,\\tsmall=stories260K \"\n"
                              "profile: memory\n"
                              "batch_wait_ms: 7\n"
                              "cache-mib: 128\n"
                              "cpu_range: 0-3, 6\n";
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    char path[600];
    assert_int_equal(load_text(&c, yaml, &e, path, sizeof path), KN_OK);
    check_all_set(&c);
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    srv_config_free(&c);
}

static void test_flags_every_key(void **st) {
    (void)st;
    char *argv[] = {"serve",
                    "--models", "/srv/models dir",
                    "--model", "/srv/m/tiny.gguf",
                    "--default-model", "tiny",
                    "--host", "0.0.0.0",
                    "--port", "9191",
                    "--threads", "3",
                    "--ctx-size", "2048",
                    "--parallel", "8",
                    "--batch-size", "256",
                    "--kv-tokens", "16384",
                    "--kv-type", "q8_0",
                    "--api-key", "s3cret: key",
                    "--max-body", "1048576",
                    "--queue-len", "7",
                    "--queue-timeout", "11",
                    "--grace-period", "5",
                    "--conn-limit", "99",
                    "--conn-timeout", "13",
                    "--n-predict", "77",
                    "--mmap",
                    "--sla-p95-ms", "1500",
                    "--sla-window=60",
                    "--memory-budget", "3072m",
                    "--unload-timeout", "45",
                    "--cleanup_interval", "5",
                    "--preload", "tiny,stories260K:Q8_0",
                    "--pin=org/repo:Q8_0",
                    "--alias", "llama=tiny-llama-Q4_K_M, small = stories260K",
                    "--profile", "memory",
                    "--batch-wait-ms", "7",
                    "--cache-mib", "128",
                    "--cpu-range", "0-3,6"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    const char *cfg = "sentinel";
    assert_int_equal(srv_config_parse_args(&c, argc, argv, &cfg, &e), KN_OK);
    assert_null(cfg);
    check_all_set(&c);
    srv_config_free(&c);
}

static void test_flags_short_and_equals(void **st) {
    (void)st;
    char *argv[] = {"serve", "-m", "a.gguf", "-t", "2", "-c", "512", "-np", "3", "-b", "64", "-n", "-1",
                    "--port=0", "--host=::1", "--api_key=k=v", "--max-body=2k", "--mmap=false",
                    "--kv-type=q8_0", "-h", "--help", "--config=/x/y.yaml"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    srv_config c;
    srv_config_init(&c);
    c.mmap_weights = true;
    c.max_tokens = 5;
    kn_err e = {0};
    const char *cfg = NULL;
    assert_int_equal(srv_config_parse_args(&c, argc, argv, &cfg, &e), KN_OK);
    assert_string_equal(cfg, "/x/y.yaml");
    assert_string_equal(c.model_file, "a.gguf");
    assert_int_equal(c.threads, 2);
    assert_int_equal(c.ctx, 512);
    assert_int_equal(c.parallel, 3);
    assert_int_equal(c.batch, 64);
    assert_int_equal(c.max_tokens, -1);
    assert_int_equal(c.port, 0);
    assert_string_equal(c.host, "::1");
    assert_string_equal(c.api_key, "k=v");
    assert_int_equal(c.max_body, 2048);
    assert_false(c.mmap_weights);
    assert_string_equal(c.kv_type, "q8_0");

    /* Later flags win; --config FILE (two arguments) is skipped, not applied. */
    char *argv2[] = {"serve", "--port", "1", "--config", "f.yaml", "--port", "2"};
    assert_int_equal(srv_config_parse_args(&c, 7, argv2, NULL, &e), KN_OK);
    assert_int_equal(c.port, 2);
    srv_config_free(&c);
}

static void test_set_values(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    /* '-' and '_' alike; bounds inclusive. */
    assert_int_equal(srv_config_set(&c, "ctx_size", "4096", &e), KN_OK);
    assert_int_equal(c.ctx, 4096);
    assert_int_equal(srv_config_set(&c, "port", "65535", &e), KN_OK);
    assert_int_equal(c.port, 65535);
    assert_int_equal(srv_config_set(&c, "port", "+0", &e), KN_OK);
    assert_int_equal(c.port, 0);
    assert_int_equal(srv_config_set(&c, "max-body", "1024", &e), KN_OK);
    assert_int_equal(c.max_body, 1024);
    assert_int_equal(srv_config_set(&c, "max-body", "1G", &e), KN_OK);
    assert_int_equal(c.max_body, 1LL << 30);
    assert_int_equal(srv_config_set(&c, "n-predict", "16777216", &e), KN_OK);
    assert_int_equal(c.max_tokens, 1 << 24);
    static const char *const T[] = {"true", "YES", "On", "1"}, *const F[] = {"false", "no", "OFF", "0"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(srv_config_set(&c, "mmap", T[i], &e), KN_OK);
        assert_true(c.mmap_weights);
        assert_int_equal(srv_config_set(&c, "mmap", F[i], &e), KN_OK);
        assert_false(c.mmap_weights);
    }

    /* Errors: status, message naming key and value, and the old value kept. */
    static const struct {
        const char *key, *val;
        kn_status st;
        const char *msg;
    } BAD[] = {
        {"port", "65536", KN_ERANGE, "port: '65536' is out of range (0..65535)"},
        {"port", "-1", KN_ERANGE, "port: '-1' is out of range"},
        {"port", "80x", KN_EINVAL, "port: '80x' is not an integer"},
        {"port", " 80", KN_EINVAL, "' 80' is not an integer"},
        {"port", "0x50", KN_EINVAL, "'0x50' is not an integer"},
        {"port", "", KN_EINVAL, "port: '' is not an integer"},
        {"port", "99999999999999999999999", KN_ERANGE, "out of range"},
        {"threads", "0", KN_ERANGE, "threads: '0' is out of range (1..1024)"},
        {"threads", "1025", KN_ERANGE, "(1..1024)"},
        {"ctx-size", "16777217", KN_ERANGE, "ctx-size: '16777217'"},
        {"parallel", "0", KN_ERANGE, "parallel: '0'"},
        {"batch-size", "65537", KN_ERANGE, "batch-size: '65537'"},
        {"kv-tokens", "268435457", KN_ERANGE, "kv-tokens: '268435457'"},
        {"max-body", "1023", KN_ERANGE, "max-body: '1023' is out of range (1024..1073741824)"},
        {"max-body", "2g", KN_ERANGE, "max-body: '2g' is out of range"},
        {"max-body", "99999999999999k", KN_ERANGE, "out of range"},
        {"max-body", "8mb", KN_EINVAL, "'8mb' is not an integer"},
        {"queue-len", "100001", KN_ERANGE, "queue-len: '100001'"},
        {"queue-timeout", "86401", KN_ERANGE, "queue-timeout"},
        {"grace-period", "3601", KN_ERANGE, "grace-period: '3601'"},
        {"conn-limit", "0", KN_ERANGE, "conn-limit: '0'"},
        {"conn-timeout", "0", KN_ERANGE, "conn-timeout: '0'"},
        {"n-predict", "-2", KN_ERANGE, "n-predict: '-2' is out of range (-1..16777216)"},
        {"kv-type", "q4_0", KN_EINVAL, "kv-type: 'q4_0' is not a KV cache type"},
        {"mmap", "maybe", KN_EINVAL, "mmap: 'maybe' is not a boolean"},
        {"host", "", KN_EINVAL, "host: the value is empty"},
        {"default-model", "../etc/passwd", KN_EINVAL, "is not a model name"},
        {"default-model", "..", KN_EINVAL, "is not a model name"},
        {"colour", "red", KN_ENOTFOUND, "unknown setting 'colour'"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        srv_config ref;
        srv_config_free(&c);
        srv_config_init(&c);
        srv_config_init(&ref);
        memset(&e, 0, sizeof e);
        kn_status s = srv_config_set(&c, BAD[i].key, BAD[i].val, &e);
        if (s != BAD[i].st) fail_msg("%s=%s: status %d, want %d (%s)", BAD[i].key, BAD[i].val, s, BAD[i].st, e.msg);
        assert_int_equal(e.status, BAD[i].st);
        assert_msg(&e, BAD[i].msg);
        /* unchanged */
        assert_int_equal(c.port, ref.port);
        assert_int_equal(c.max_body, ref.max_body);
        assert_string_equal(c.host, ref.host);
        assert_string_equal(c.kv_type, ref.kv_type);
        assert_null(c.default_model);
        srv_config_free(&ref);
    }
    /* A long string is refused; the api-key never appears in a message. */
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(srv_config_set(&c, "api-key", big, &e), KN_ERANGE);
    assert_msg(&e, "api-key");
    assert_msg_lacks(&e, "aaaa");
    assert_int_equal(srv_config_set(&c, "models", big, &e), KN_ERANGE);
    assert_msg(&e, "longer than 4096 bytes");
    assert_true(strlen(e.msg) < 200); /* the value is cut in messages */
    srv_config_free(&c);
}

static void test_precedence(void **st) {
    (void)st;
    env_saved env;
    env_save_clear(&env);
    char dir[512], path[600];
    tu_tmpdir(dir, sizeof dir);
    /* file sets host, port, threads, models, api-key */
    write_file(path, sizeof path, dir, "kiln.yaml",
               "host: 10.0.0.1\nport: 1111\nthreads: 3\nmodels: /file/models\napi_key: filekey\n");
    /* env sets host, port, models; flags set port and model */
    setenv("KILN_HOST", "10.0.0.2", 1);
    setenv("KILN_PORT", "2222", 1);
    setenv("KILN_MODELS", "/env/models", 1);
    setenv("KILN_API_KEY", "", 1); /* empty: sets nothing */
    char *argv[] = {"serve", "--port", "3333", "--config", path, "-m", "x.gguf"};
    srv_config c;
    kn_err e = {0};
    kn_status s = srv_config_from_args(&c, 7, argv, &e);
    if (s) fail_msg("from_args: %s", e.msg);
    assert_int_equal(c.port, 3333);                   /* flag > env > file */
    assert_string_equal(c.host, "10.0.0.2");          /* env > file */
    assert_string_equal(c.models_dir, "/env/models"); /* env > file */
    assert_int_equal(c.threads, 3);                   /* file > default */
    assert_string_equal(c.api_key, "filekey");        /* empty env ignored */
    assert_string_equal(c.model_file, "x.gguf");      /* flag > default */
    assert_int_equal(c.parallel, 4);                  /* default */
    srv_config_free(&c);

    /* The flag for host beats the env; without env the file value shows. */
    unsetenv("KILN_PORT");
    char cfgflag[700];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", path);
    char *argv2[] = {"serve", cfgflag, "--host", "h"};
    s = srv_config_from_args(&c, 4, argv2, &e);
    if (s) fail_msg("from_args: %s", e.msg);
    assert_string_equal(c.host, "h");
    assert_int_equal(c.port, 1111);
    srv_config_free(&c);

    /* An invalid env value names the variable and leaves c unchanged. */
    setenv("KILN_PORT", "80a", 1);
    srv_config_init(&c);
    assert_int_equal(srv_config_apply_env(&c, &e), KN_EINVAL);
    assert_msg(&e, "KILN_PORT: '80a' is not an integer");
    assert_string_equal(c.host, "127.0.0.1"); /* KILN_HOST was valid, but nothing applied */
    setenv("KILN_PORT", "70000", 1);
    assert_int_equal(srv_config_apply_env(&c, &e), KN_ERANGE);
    assert_msg(&e, "KILN_PORT");
    unsetenv("KILN_PORT");
    setenv("KILN_API_KEY", "envkey", 1);
    assert_int_equal(srv_config_apply_env(&c, &e), KN_OK);
    assert_string_equal(c.api_key, "envkey");
    assert_string_equal(c.host, "10.0.0.2");
    srv_config_free(&c);

    /* An error in the file comes out of from_args too. */
    unsetenv("KILN_HOST");
    write_file(path, sizeof path, dir, "kiln.yaml", "port: 1\nthreads: lots\n");
    s = srv_config_from_args(&c, 7, argv, &e);
    assert_int_equal(s, KN_EINVAL);
    assert_msg(&e, ":2: threads: 'lots' is not an integer");
    srv_config_free(&c);

    tu_rmdir(dir);
    env_restore(&env);
}

static void test_yaml_errors(void **st) {
    (void)st;
    static const struct {
        const char *text;
        kn_status st;
        const char *msg;
    } BAD[] = {
        {"port: 1\nhost: h\ncolour: red\n", KN_ENOTFOUND, "kiln.yaml:3: unknown key 'colour' (known: models, model"},
        {"port: 1\nport_: 2\n", KN_ENOTFOUND, ":2: unknown key 'port_'"},
        {"\n\nport: eighty\n", KN_EINVAL, "kiln.yaml:3: port: 'eighty' is not an integer"},
        {"threads: 5000\n", KN_ERANGE, ":1: threads: '5000' is out of range (1..1024)"},
        {"ctx_size: -5\n", KN_ERANGE, ":1: ctx_size: '-5' is out of range"},
        {"kv-type: f32\n", KN_EINVAL, ":1: kv-type: 'f32' is not a KV cache type"},
        {"mmap: perhaps\n", KN_EINVAL, ":1: mmap: 'perhaps' is not a boolean"},
        {"port: 1\nhost: h: x\n", KN_EFORMAT, "kiln.yaml:2:8: malformed YAML: mapping values are not allowed"},
        {"host: \"unterminated\n", KN_EFORMAT, "malformed YAML"},
        {"port: 1\nhost:\n  name: h\n", KN_EFORMAT, ":3: key 'host': the value must be a scalar, not a mapping"},
        {"host: [a, b]\n", KN_EFORMAT, ":1: key 'host': the value must be a scalar, not a sequence"},
        {"- port\n- 1\n", KN_EFORMAT, ":1: the top level must be a mapping of settings, not a sequence"},
        {"just text\n", KN_EFORMAT, "the top level must be a mapping"},
        {"port: 1\nthreads: 2\nport: 3\n", KN_EFORMAT, ":3: key 'port' is set twice (first at line 1)"},
        {"port: 1\nport_: 2\n", KN_ENOTFOUND, "unknown key"},
        {"threads: 1\nthreads_: 2\n", KN_ENOTFOUND, "unknown key"},
        {"ctx-size: 1\nctx_size: 2\n", KN_EFORMAT, "key 'ctx_size' is set twice"},
        {"api_key:\n", KN_EINVAL, ":1: key 'api_key' has no value"},
        {"host: ~\n", KN_EINVAL, "key 'host' has no value"},
        {"a: &x 1\n", KN_ENOTFOUND, "unknown key 'a'"},
        {"port: &x 1\nthreads: *x\n", KN_EFORMAT, ":2: key 'threads': the value must be a scalar, not an alias"},
        {"? [a]\n: 1\n", KN_EFORMAT, "a key must be a scalar, not a sequence"},
        {"port: 1\n---\nport: 2\n", KN_EFORMAT, ":2: more than one YAML document"},
        {"api-key: \"\"\n", KN_EINVAL, "api-key: the value is empty"},
        {"host: \"a\\0b\"\n", KN_EINVAL, "contains a NUL byte"},
    };
    kn_err e;
    char path[600];
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        srv_config c;
        srv_config_init(&c);
        memset(&e, 0, sizeof e);
        kn_status s = load_text(&c, BAD[i].text, &e, path, sizeof path);
        if (s != BAD[i].st) fail_msg("case %zu: status %d, want %d (%s)", i, s, BAD[i].st, e.msg);
        assert_msg(&e, BAD[i].msg);
        assert_msg(&e, path); /* every message names the file */
        /* nothing applied, even keys before the error */
        assert_int_equal(c.port, 8080);
        assert_string_equal(c.host, "127.0.0.1");
        srv_config_free(&c);
    }

    /* libyaml's own message carries line and column. */
    srv_config c;
    srv_config_init(&c);
    assert_int_equal(load_text(&c, "port: 1\n\nhost: 'abc\n", &e, path, sizeof path), KN_EFORMAT);
    assert_msg(&e, "malformed YAML: found unexpected end of stream (while scanning a quoted scalar at line 3)");
    assert_msg(&e, "kiln.yaml:4:1:");

    /* Missing file: KN_EIO naming the path. */
    assert_int_equal(srv_config_load_yaml(&c, "/nonexistent/kiln-test/conf.yaml", &e), KN_EIO);
    assert_msg(&e, "/nonexistent/kiln-test/conf.yaml");

    /* Over 1 MiB: refused before parsing (a valid file, only too long). */
    size_t big = (1u << 20) + 100;
    char *text = malloc(big + 1);
    assert_non_null(text);
    memset(text, '#', big);
    memcpy(text, "port: 1\n#", 9);
    text[big] = 0;
    assert_int_equal(load_text(&c, text, &e, path, sizeof path), KN_ERANGE);
    assert_msg(&e, "larger than the limit of 1048576 bytes");
    assert_int_equal(c.port, 8080);
    /* Exactly 1 MiB is still accepted. */
    text[1u << 20] = 0;
    assert_int_equal(load_text(&c, text, &e, path, sizeof path), KN_OK);
    assert_int_equal(c.port, 1);
    free(text);

    /* Empty files and empty documents set nothing. */
    static const char *const EMPTY[] = {"", "# only a comment\n", "---\n", "---\n...\n", "{}\n"};
    for (size_t i = 0; i < sizeof EMPTY / sizeof EMPTY[0]; i++) {
        c.port = 4242;
        kn_status s = load_text(&c, EMPTY[i], &e, path, sizeof path);
        if (s) fail_msg("empty case %zu: %s", i, e.msg);
        assert_int_equal(c.port, 4242);
    }
    srv_config_free(&c);
}

static void test_flag_errors(void **st) {
    (void)st;
    static const struct {
        const char *args[4];
        kn_status st;
        const char *msg;
    } BAD[] = {
        {{"--colour", "red"}, KN_ENOTFOUND, "unknown flag '--colour'"},
        {{"--colour=red"}, KN_ENOTFOUND, "unknown flag '--colour'"},
        {{"-x", "1"}, KN_ENOTFOUND, "unknown flag '-x'"},
        {{"-p", "1"}, KN_ENOTFOUND, "unknown flag '-p'"},
        {{"--"}, KN_ENOTFOUND, "unknown flag '--'"},
        {{"model.gguf"}, KN_EINVAL, "unexpected argument 'model.gguf'"},
        {{"--port"}, KN_EINVAL, "--port needs a value"},
        {{"-t", "1", "-c"}, KN_EINVAL, "-c needs a value"},
        {{"--port", "http"}, KN_EINVAL, "--port: 'http' is not an integer"},
        {{"--port=99999"}, KN_ERANGE, "--port: '99999' is out of range (0..65535)"},
        {{"-t", "abc"}, KN_EINVAL, "-t: 'abc' is not an integer"},
        {{"-np", "0"}, KN_ERANGE, "-np: '0' is out of range (1..1024)"},
        {{"--mmap=maybe"}, KN_EINVAL, "--mmap: 'maybe' is not a boolean"},
        {{"--kv-type", "f32"}, KN_EINVAL, "--kv-type: 'f32'"},
        {{"--config", "a.yaml", "--config", "b.yaml"}, KN_EINVAL, "--config is given twice"},
        {{"--config"}, KN_EINVAL, "--config needs a value"},
        {{"--config="}, KN_EINVAL, "--config: the file name is empty"},
        {{"--api-key="}, KN_EINVAL, "--api-key: the value is empty"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char *argv[6] = {"serve"};
        int argc = 1;
        for (int j = 0; j < 4 && BAD[i].args[j]; j++) argv[argc++] = (char *)BAD[i].args[j];
        /* pass 1 (c == NULL) and pass 2 both report it */
        kn_err e = {0};
        const char *cfg = "sentinel";
        kn_status s = srv_config_parse_args(NULL, argc, argv, &cfg, &e);
        if (s != BAD[i].st) fail_msg("case %zu: status %d, want %d (%s)", i, s, BAD[i].st, e.msg);
        assert_msg(&e, BAD[i].msg);
        assert_null(cfg);
        srv_config c;
        srv_config_init(&c);
        memset(&e, 0, sizeof e);
        assert_int_equal(srv_config_parse_args(&c, argc, argv, NULL, &e), BAD[i].st);
        assert_msg(&e, BAD[i].msg);
        srv_config_free(&c);
    }

    /* A failing flag leaves c unchanged, even flags before it. */
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    char *argv[] = {"serve", "--port", "1", "--api-key=topsecret", "--threads", "0"};
    assert_int_equal(srv_config_parse_args(&c, 6, argv, NULL, &e), KN_ERANGE);
    assert_msg(&e, "--threads: '0'");
    assert_int_equal(c.port, 8080);
    assert_null(c.api_key);
    /* Pass 1 does not touch anything but finds --config. */
    char *argv2[] = {"serve", "--port", "1", "--config", "conf.yaml"};
    const char *cfg = NULL;
    assert_int_equal(srv_config_parse_args(NULL, 5, argv2, &cfg, &e), KN_OK);
    assert_string_equal(cfg, "conf.yaml");
    srv_config_free(&c);

    /* from_args reports a missing config file by its path. */
    env_saved env;
    env_save_clear(&env);
    char *argv3[] = {"serve", "--config", "/nonexistent/kiln-test/x.yaml"};
    assert_int_equal(srv_config_from_args(&c, 3, argv3, &e), KN_EIO);
    assert_msg(&e, "/nonexistent/kiln-test/x.yaml");
    srv_config_free(&c);
    env_restore(&env);
}

static void test_validate(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    c.ctx = 4096;
    c.kv_tokens = 4095;
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "kv-tokens (4095) is smaller than ctx-size (4096)");
    c.kv_tokens = 4096;
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    c.kv_tokens = 0;
    c.ctx = 1 << 24;
    c.parallel = 1024;
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "parallel (1024) * ctx-size (16777216)");
    c.parallel = 16;
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    c.port = 70000; /* set directly, bypassing set */
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "port: 70000 is out of range");
    c.port = 80;
    c.max_body = 10;
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "max-body: 10");
    c.max_body = 4096;
    free(c.models_dir);
    c.models_dir = NULL;
    assert_int_equal(srv_config_validate(&c, &e), KN_EINVAL);
    assert_msg(&e, "no model source");
    assert_int_equal(srv_config_set(&c, "model", "m.gguf", &e), KN_OK);
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    srv_config_free(&c);
}


/* ---- model manager settings (issue 7) -------------------------------------- */

static void test_new_keys_values(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    static const struct {
        const char *key, *val;
        long long want;
    } OK[] = {
        {"memory-budget", "0", 0},
        {"memory-budget", "1", 1},
        {"memory_budget", "512m", 512LL << 20},
        {"memory-budget", "1048576g", 1LL << 50},
        {"unload-timeout", "-1", -1},
        {"unload-timeout", "0", 0},
        {"unload_timeout", "2592000", 2592000},
        {"cleanup-interval", "1", 1},
        {"cleanup-interval", "3600", 3600},
        {"batch-wait-ms", "0", 0},
        {"batch-wait-ms", "1000", 1000},
        {"cache-mib", "0", 0},
        {"cache-mib", "65536", 65536},
    };
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        kn_status s = srv_config_set(&c, OK[i].key, OK[i].val, &e);
        if (s) fail_msg("%s=%s: %s", OK[i].key, OK[i].val, e.msg);
    }
    assert_int_equal(c.memory_budget, 1LL << 50);
    assert_int_equal(c.unload_timeout_s, 2592000);
    assert_int_equal(c.cleanup_interval_s, 3600);
    assert_int_equal(c.batch_wait_ms, 1000);
    assert_int_equal(c.cache_mib, 65536);
    assert_int_equal(srv_config_set(&c, "memory-budget", "512m", &e), KN_OK);
    assert_int_equal(c.memory_budget, 512LL << 20);
    for (int i = 0; i < 4; i++) {
        static const char *const P[] = {"latency", "throughput", "balanced", "memory"};
        assert_int_equal(srv_config_set(&c, "profile", P[i], &e), KN_OK);
        assert_string_equal(c.profile, P[i]);
    }
    srv_config_free(&c);

    static const struct {
        const char *key, *val;
        kn_status st;
        const char *msg;
    } BAD[] = {
        {"memory-budget", "-1", KN_ERANGE, "memory-budget: '-1' is out of range (0..1125899906842624)"},
        {"memory-budget", "1048577g", KN_ERANGE, "memory-budget: '1048577g' is out of range"},
        {"memory-budget", "4gb", KN_EINVAL, "memory-budget: '4gb' is not an integer (bytes, or with a k/m/g suffix)"},
        {"memory-budget", "auto", KN_EINVAL, "'auto' is not an integer"},
        {"unload-timeout", "-2", KN_ERANGE, "unload-timeout: '-2' is out of range (-1..2592000)"},
        {"unload-timeout", "2592001", KN_ERANGE, "unload-timeout: '2592001'"},
        {"unload-timeout", "5m", KN_EINVAL, "unload-timeout: '5m' is not an integer"},
        {"cleanup-interval", "0", KN_ERANGE, "cleanup-interval: '0' is out of range (1..3600)"},
        {"cleanup-interval", "3601", KN_ERANGE, "cleanup-interval: '3601'"},
        {"batch-wait-ms", "1001", KN_ERANGE, "batch-wait-ms: '1001' is out of range (0..1000)"},
        {"batch-wait-ms", "-1", KN_ERANGE, "batch-wait-ms: '-1'"},
        {"cache-mib", "65537", KN_ERANGE, "cache-mib: '65537' is out of range (0..65536)"},
        {"profile", "fast", KN_EINVAL, "profile: 'fast' is not a profile (latency, throughput, balanced or memory)"},
        {"profile", "Latency", KN_EINVAL, "'Latency' is not a profile"},
        {"profile", "", KN_EINVAL, "profile: the value is empty"},
        {"print-config", "true", KN_ENOTFOUND, "unknown setting 'print-config'"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        srv_config_init(&c);
        memset(&e, 0, sizeof e);
        kn_status s = srv_config_set(&c, BAD[i].key, BAD[i].val, &e);
        if (s != BAD[i].st) fail_msg("%s=%s: status %d, want %d (%s)", BAD[i].key, BAD[i].val, s, BAD[i].st, e.msg);
        assert_msg(&e, BAD[i].msg);
        assert_int_equal(c.memory_budget, 0);
        assert_int_equal(c.unload_timeout_s, 300);
        assert_int_equal(c.cleanup_interval_s, 30);
        assert_int_equal(c.batch_wait_ms, 2);
        assert_int_equal(c.cache_mib, 512);
        assert_string_equal(c.profile, "balanced");
        srv_config_free(&c);
    }

    /* validate catches fields set directly */
    srv_config_init(&c);
    c.cleanup_interval_s = 0;
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "cleanup-interval: 0 is out of range");
    c.cleanup_interval_s = 30;
    free(c.profile);
    c.profile = strdup("fast");
    assert_int_equal(srv_config_validate(&c, &e), KN_EINVAL);
    assert_msg(&e, "profile");
    free(c.profile);
    c.profile = strdup("latency");
    c.pin = strdup("a,,b");
    assert_int_equal(srv_config_validate(&c, &e), KN_EINVAL);
    assert_msg(&e, "pin: 'a,,b' has an empty item");
    free(c.pin);
    c.pin = NULL;
    c.cpu_range = strdup("3-1");
    assert_int_equal(srv_config_validate(&c, &e), KN_ERANGE);
    assert_msg(&e, "cpu-range: '3-1'");
    free(c.cpu_range);
    c.cpu_range = strdup("0,1");
    assert_int_equal(srv_config_validate(&c, &e), KN_OK);
    srv_config_free(&c);
}

/* MODEL_UNLOAD_TIMEOUT and CLEANUP_CHECK_INTERVAL: flag > env > file > default. */
static void test_env_ttl_precedence(void **st) {
    (void)st;
    env_saved env;
    env_save_clear(&env);
    char dir[512], path[600];
    tu_tmpdir(dir, sizeof dir);
    write_file(path, sizeof path, dir, "kiln.yaml", "unload-timeout: 100\ncleanup_interval: 10\n");
    srv_config c;
    kn_err e = {0};

    /* defaults */
    char *argv0[] = {"serve"};
    assert_int_equal(srv_config_from_args(&c, 1, argv0, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 300);
    assert_int_equal(c.cleanup_interval_s, 30);
    srv_config_free(&c);

    /* file > default */
    char *argv1[] = {"serve", "--config", path};
    assert_int_equal(srv_config_from_args(&c, 3, argv1, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 100);
    assert_int_equal(c.cleanup_interval_s, 10);
    srv_config_free(&c);

    /* env > file */
    setenv("MODEL_UNLOAD_TIMEOUT", "200", 1);
    setenv("CLEANUP_CHECK_INTERVAL", "20", 1);
    assert_int_equal(srv_config_from_args(&c, 3, argv1, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 200);
    assert_int_equal(c.cleanup_interval_s, 20);
    srv_config_free(&c);
    /* env > default (no file) */
    assert_int_equal(srv_config_from_args(&c, 1, argv0, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 200);
    assert_int_equal(c.cleanup_interval_s, 20);
    srv_config_free(&c);

    /* flag > env > file, each variable on its own */
    char *argv2[] = {"serve", "--config", path, "--unload-timeout", "7"};
    assert_int_equal(srv_config_from_args(&c, 5, argv2, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 7);
    assert_int_equal(c.cleanup_interval_s, 20);
    srv_config_free(&c);
    char *argv3[] = {"serve", "--cleanup-interval=3", "--config", path};
    unsetenv("MODEL_UNLOAD_TIMEOUT");
    assert_int_equal(srv_config_from_args(&c, 4, argv3, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, 100);
    assert_int_equal(c.cleanup_interval_s, 3);
    srv_config_free(&c);

    /* -1 and 0 are whole seconds too; an empty variable sets nothing */
    setenv("MODEL_UNLOAD_TIMEOUT", "-1", 1);
    setenv("CLEANUP_CHECK_INTERVAL", "", 1);
    assert_int_equal(srv_config_from_args(&c, 3, argv1, &e), KN_OK);
    assert_int_equal(c.unload_timeout_s, -1);
    assert_int_equal(c.cleanup_interval_s, 10);
    srv_config_free(&c);

    /* invalid values name the variable, through apply_env and from_args */
    static const struct {
        const char *var, *val;
        kn_status st;
        const char *msg;
    } BAD[] = {
        {"MODEL_UNLOAD_TIMEOUT", "5m", KN_EINVAL, "MODEL_UNLOAD_TIMEOUT: '5m' is not an integer"},
        {"MODEL_UNLOAD_TIMEOUT", "1.5", KN_EINVAL, "MODEL_UNLOAD_TIMEOUT: '1.5' is not an integer"},
        {"MODEL_UNLOAD_TIMEOUT", " 30", KN_EINVAL, "MODEL_UNLOAD_TIMEOUT: ' 30'"},
        {"MODEL_UNLOAD_TIMEOUT", "-5", KN_ERANGE, "MODEL_UNLOAD_TIMEOUT: '-5' is out of range (-1..2592000)"},
        {"CLEANUP_CHECK_INTERVAL", "0", KN_ERANGE, "CLEANUP_CHECK_INTERVAL: '0' is out of range (1..3600)"},
        {"CLEANUP_CHECK_INTERVAL", "thirty", KN_EINVAL, "CLEANUP_CHECK_INTERVAL: 'thirty' is not an integer"},
        {"KILN_PROFILE", "fastest", KN_EINVAL, "KILN_PROFILE: 'fastest' is not a profile"},
    };
    unsetenv("MODEL_UNLOAD_TIMEOUT");
    unsetenv("CLEANUP_CHECK_INTERVAL");
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        setenv(BAD[i].var, BAD[i].val, 1);
        srv_config_init(&c);
        memset(&e, 0, sizeof e);
        kn_status s = srv_config_apply_env(&c, &e);
        if (s != BAD[i].st) fail_msg("%s=%s: status %d, want %d (%s)", BAD[i].var, BAD[i].val, s, BAD[i].st, e.msg);
        assert_msg(&e, BAD[i].msg);
        assert_int_equal(c.unload_timeout_s, 300);
        assert_int_equal(c.cleanup_interval_s, 30);
        srv_config_free(&c);
        memset(&e, 0, sizeof e);
        /* a flag for the same key does not hide a bad variable */
        char *argv4[] = {"serve", "--unload-timeout", "1", "--cleanup-interval", "1", "--profile", "latency"};
        assert_int_equal(srv_config_from_args(&c, 7, argv4, &e), BAD[i].st);
        assert_msg(&e, BAD[i].msg);
        srv_config_free(&c);
        unsetenv(BAD[i].var);
    }
    tu_rmdir(dir);
    env_restore(&env);
}

/* The knobs of each profile, per the table in config.h. */
typedef struct prof_want {
    const char *name;
    int parallel, batch, wait_ms, ctx;
    const char *kv;
    int cache;
} prof_want;

static const prof_want PROFILE_TABLE[] = {
    {"latency", 1, 512, 0, 0, "f16", 512},
    {"throughput", 16, 1024, 10, 0, "f16", 512},
    {"balanced", 4, 512, 2, 0, "f16", 512},
    {"memory", 2, 512, 2, 2048, "q8_0", 64},
};

static void check_profile(const srv_config *c, const prof_want *w) {
    assert_string_equal(c->profile, w->name);
    assert_int_equal(c->parallel, w->parallel);
    assert_int_equal(c->batch, w->batch);
    assert_int_equal(c->batch_wait_ms, w->wait_ms);
    assert_int_equal(c->ctx, w->ctx);
    assert_string_equal(c->kv_type, w->kv);
    assert_int_equal(c->cache_mib, w->cache);
}

static void test_profiles(void **st) {
    (void)st;
    env_saved env;
    env_save_clear(&env);
    srv_config c;
    kn_err e = {0};
    for (size_t i = 0; i < 4; i++) {
        const prof_want *w = &PROFILE_TABLE[i];
        /* through the flag */
        char *argv[] = {"serve", "--profile", (char *)w->name};
        kn_status s = srv_config_from_args(&c, 3, argv, &e);
        if (s) fail_msg("%s: %s", w->name, e.msg);
        check_profile(&c, w);
        assert_int_equal(c.port, 8080); /* other keys keep their defaults */
        assert_int_equal(c.unload_timeout_s, 300);
        srv_config_free(&c);
        /* directly on the defaults */
        srv_config_init(&c);
        assert_int_equal(srv_config_apply_profile(&c, w->name, &e), KN_OK);
        check_profile(&c, w);
        srv_config_free(&c);
        /* through KILN_PROFILE */
        setenv("KILN_PROFILE", w->name, 1);
        assert_int_equal(srv_config_from_args(&c, 1, argv, &e), KN_OK);
        check_profile(&c, w);
        srv_config_free(&c);
        unsetenv("KILN_PROFILE");
    }
    /* balanced is the plain defaults */
    srv_config d;
    srv_config_init(&d);
    srv_config_init(&c);
    assert_int_equal(srv_config_apply_profile(&c, "balanced", &e), KN_OK);
    char *dc = srv_config_dump(&c), *dd = srv_config_dump(&d);
    assert_non_null(dc);
    assert_non_null(dd);
    assert_string_equal(dc, dd);
    free(dc);
    free(dd);
    /* an unknown profile leaves c unchanged */
    assert_int_equal(srv_config_apply_profile(&c, "turbo", &e), KN_EINVAL);
    assert_msg(&e, "'turbo' is not a profile");
    assert_int_equal(srv_config_apply_profile(&c, NULL, &e), KN_EINVAL);
    assert_string_equal(c.profile, "balanced");
    assert_int_equal(c.parallel, 4);
    srv_config_free(&c);
    srv_config_free(&d);

    /* An individual flag overrides the profile's value, before or after --profile. */
    char *a1[] = {"serve", "--profile", "throughput", "--parallel", "3"};
    char *a2[] = {"serve", "-np", "3", "--profile=throughput"};
    char **av[] = {a1, a2};
    int ac[] = {5, 4};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(srv_config_from_args(&c, ac[i], av[i], &e), KN_OK);
        assert_string_equal(c.profile, "throughput");
        assert_int_equal(c.parallel, 3);
        assert_int_equal(c.batch, 1024);
        assert_int_equal(c.batch_wait_ms, 10);
        srv_config_free(&c);
    }

    char dir[512], path[600];
    tu_tmpdir(dir, sizeof dir);
    /* The profile from the file, a knob from the file over it. */
    write_file(path, sizeof path, dir, "kiln.yaml", "profile: memory\nctx-size: 4096\n");
    char *b1[] = {"serve", "--config", path};
    assert_int_equal(srv_config_from_args(&c, 3, b1, &e), KN_OK);
    assert_string_equal(c.profile, "memory");
    assert_int_equal(c.ctx, 4096); /* file > profile */
    assert_string_equal(c.kv_type, "q8_0");
    assert_int_equal(c.parallel, 2);
    assert_int_equal(c.cache_mib, 64);
    srv_config_free(&c);

    /* The file's profile overridden by the flag: the flag's profile fills
     * every knob the file does not set; the file's knobs still win. */
    write_file(path, sizeof path, dir, "kiln.yaml", "profile: memory\nparallel: 3\n");
    char *b2[] = {"serve", "--config", path, "--profile", "throughput"};
    assert_int_equal(srv_config_from_args(&c, 5, b2, &e), KN_OK);
    assert_string_equal(c.profile, "throughput");
    assert_int_equal(c.parallel, 3);  /* file > profile */
    assert_int_equal(c.batch, 1024);  /* throughput, not memory */
    assert_int_equal(c.batch_wait_ms, 10);
    assert_int_equal(c.ctx, 0);       /* not memory's 2048 */
    assert_string_equal(c.kv_type, "f16");
    assert_int_equal(c.cache_mib, 512);
    srv_config_free(&c);

    /* env > file for the profile, flag > env */
    setenv("KILN_PROFILE", "latency", 1);
    assert_int_equal(srv_config_from_args(&c, 3, b1, &e), KN_OK);
    assert_string_equal(c.profile, "latency");
    assert_int_equal(c.parallel, 3); /* the file's knob */
    assert_int_equal(c.batch_wait_ms, 0);
    assert_int_equal(c.ctx, 0);
    srv_config_free(&c);
    assert_int_equal(srv_config_from_args(&c, 5, b2, &e), KN_OK);
    assert_string_equal(c.profile, "throughput");
    srv_config_free(&c);
    unsetenv("KILN_PROFILE");

    /* A knob from the file, the profile from the flag, the knob again from a flag. */
    write_file(path, sizeof path, dir, "kiln.yaml", "batch-wait-ms: 9\nkv-type: f16\n");
    char *b3[] = {"serve", "--profile", "memory", "--config", path, "--batch-wait-ms", "11"};
    assert_int_equal(srv_config_from_args(&c, 7, b3, &e), KN_OK);
    assert_int_equal(c.batch_wait_ms, 11);
    assert_string_equal(c.kv_type, "f16"); /* file > profile */
    assert_int_equal(c.ctx, 2048);
    srv_config_free(&c);

    /* A bad profile in the file is reported with its line, even when the flag names another. */
    write_file(path, sizeof path, dir, "kiln.yaml", "port: 1\nprofile: fastest\n");
    assert_int_equal(srv_config_from_args(&c, 5, b2, &e), KN_EINVAL);
    assert_msg(&e, "kiln.yaml:2: profile: 'fastest' is not a profile");
    srv_config_free(&c);
    char *b4[] = {"serve", "--profile", "quick"};
    assert_int_equal(srv_config_from_args(&c, 3, b4, &e), KN_EINVAL);
    assert_msg(&e, "--profile: 'quick' is not a profile");
    srv_config_free(&c);

    /* The memory profile's ctx-size still meets validate (kv-tokens from the file). */
    write_file(path, sizeof path, dir, "kiln.yaml", "kv-tokens: 1024\n");
    assert_int_equal(srv_config_from_args(&c, 5, b2, &e), KN_OK); /* ctx 0: fine */
    srv_config_free(&c);
    char *b5[] = {"serve", "--config", path, "--profile", "memory"};
    assert_int_equal(srv_config_from_args(&c, 5, b5, &e), KN_ERANGE);
    assert_msg(&e, "kv-tokens (1024) is smaller than ctx-size (2048)");
    srv_config_free(&c);

    tu_rmdir(dir);
    env_restore(&env);
}

static void test_lists(void **st) {
    (void)st;
    srv_config c;
    srv_config_init(&c);
    kn_err e = {0};
    static const struct {
        const char *key, *val, *canon;
    } OK[] = {
        {"preload", "tiny", "tiny"},
        {"preload", " a , b:Q8_0,\tc/d ", "a,b:Q8_0,c/d"},
        {"pin", "org/repo:Q4_K_M,stories260K", "org/repo:Q4_K_M,stories260K"},
        {"pin", "a.b-c_d", "a.b-c_d"},
        {"alias", "llama=tiny-llama-Q4_K_M,small=stories260K", "llama=tiny-llama-Q4_K_M,small=stories260K"},
        {"alias", " x = org/y:Q8_0 ", "x=org/y:Q8_0"},
        {"alias", "a=c,b=c", "a=c,b=c"},
        {"cpu-range", "0-3", "0-3"},
        {"cpu-range", "0,2,4-5", "0,2,4-5"},
        {"cpu-range", " 7 , 1-1,1023", "7,1-1,1023"},
    };
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        kn_status s = srv_config_set(&c, OK[i].key, OK[i].val, &e);
        if (s) fail_msg("%s=%s: %s", OK[i].key, OK[i].val, e.msg);
        const char *got = !strcmp(OK[i].key, "preload") ? c.preload
                          : !strcmp(OK[i].key, "pin")   ? c.pin
                          : !strcmp(OK[i].key, "alias") ? c.aliases
                                                        : c.cpu_range;
        assert_string_equal(got, OK[i].canon);
    }

    static const struct {
        const char *key, *val;
        kn_status st;
        const char *msg;
    } BAD[] = {
        {"pin", "a,,b", KN_EINVAL, "pin: 'a,,b' has an empty item"},
        {"pin", "a,", KN_EINVAL, "has an empty item"},
        {"pin", " ", KN_EINVAL, "has an empty item"},
        {"pin", "a b", KN_EINVAL, "pin: 'a b' is not a model name: it has a space"},
        {"pin", "a,b,a", KN_EINVAL, "pin: 'a' is listed twice"},
        {"preload", "../x", KN_EINVAL, "preload: '../x' is not a model name: it has a part that is '.' or '..'"},
        {"preload", "/abs", KN_EINVAL, "'/abs' is not a model name: it has an empty part"},
        {"preload", "org//x", KN_EINVAL, "has an empty part"},
        {"preload", "x:", KN_EINVAL, "has an empty part"},
        {"preload", "a:b:c", KN_EINVAL, "'a:b:c' is not a model name: it has more than one ':'"},
        {"preload", "a\\b", KN_EINVAL, "has one of"},
        {"preload", "a=b", KN_EINVAL, "'a=b' is not a model name"},
        {"preload", "caf\xc3\xa9", KN_EINVAL, "not printable ASCII"},
        {"alias", "llama", KN_EINVAL, "alias: 'llama' is not of the form alias=target"},
        {"alias", "llama=", KN_EINVAL, "'llama=' is not of the form alias=target"},
        {"alias", "=x", KN_EINVAL, "is not of the form alias=target"},
        {"alias", "a=b=c", KN_EINVAL, "'a=b=c' is not of the form alias=target"},
        {"alias", "a:q=b", KN_EINVAL, "alias: alias 'a:q' is not a name: it has a ':'"},
        {"alias", "a=b c", KN_EINVAL, "alias: target 'b c' is not a model name"},
        {"alias", "a=a", KN_EINVAL, "alias: alias 'a' points to itself"},
        {"alias", "a=x,b=y,a=z", KN_EINVAL, "alias: alias 'a' is given twice"},
        {"alias", "a=b,b=c", KN_EINVAL, "the target 'b' of alias 'a' is itself an alias (aliases do not chain)"},
        {"alias", "b=c,a=b", KN_EINVAL, "the target 'b' of alias 'a' is itself an alias"},
        {"alias", "a=x,,b=y", KN_EINVAL, "has an empty item"},
        {"cpu-range", "0-", KN_EINVAL, "cpu-range: '0-' is not a CPU or a range of CPUs"},
        {"cpu-range", "-3", KN_EINVAL, "'-3' is not a CPU"},
        {"cpu-range", "a", KN_EINVAL, "'a' is not a CPU"},
        {"cpu-range", "1-2-3", KN_EINVAL, "'1-2-3' is not a CPU"},
        {"cpu-range", "1 - 2", KN_EINVAL, "'1 - 2' is not a CPU"},
        {"cpu-range", "+1", KN_EINVAL, "'+1' is not a CPU"},
        {"cpu-range", "0,,1", KN_EINVAL, "cpu-range: '0,,1' has an empty item"},
        {"cpu-range", "1024", KN_ERANGE, "cpu-range: '1024' is over the highest CPU number 1023"},
        {"cpu-range", "0-99999999999999999999", KN_ERANGE, "is over the highest CPU number"},
        {"cpu-range", "5-2", KN_ERANGE, "cpu-range: '5-2' is a range whose start is above its end"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        srv_config d;
        srv_config_init(&d);
        memset(&e, 0, sizeof e);
        kn_status s = srv_config_set(&d, BAD[i].key, BAD[i].val, &e);
        if (s != BAD[i].st) fail_msg("%s=%s: status %d, want %d (%s)", BAD[i].key, BAD[i].val, s, BAD[i].st, e.msg);
        assert_msg(&e, BAD[i].msg);
        assert_null(d.pin);
        assert_null(d.preload);
        assert_null(d.aliases);
        assert_null(d.cpu_range);
        srv_config_free(&d);
    }

    /* The same errors through YAML (with the line) and flags. */
    char path[600];
    srv_config d;
    srv_config_init(&d);
    assert_int_equal(load_text(&d, "pin: a\nalias: a=b,b=c\n", &e, path, sizeof path), KN_EINVAL);
    assert_msg(&e, "kiln.yaml:2: alias: the target 'b'");
    assert_null(d.pin);
    char *argv[] = {"serve", "--cpu-range", "3-1"};
    assert_int_equal(srv_config_parse_args(&d, 3, argv, NULL, &e), KN_ERANGE);
    assert_msg(&e, "--cpu-range: '3-1' is a range whose start is above its end");
    srv_config_free(&d);

    /* list_next, is_pinned, alias_target */
    assert_int_equal(srv_config_set(&c, "pin", "org/repo:Q4_K_M, tiny", &e), KN_OK);
    assert_int_equal(srv_config_set(&c, "alias", "llama=tiny-llama-Q4_K_M, small=stories260K", &e), KN_OK);
    const char *cur = c.pin, *it;
    size_t len;
    assert_true(srv_config_list_next(&cur, &it, &len));
    assert_int_equal(len, 15);
    assert_memory_equal(it, "org/repo:Q4_K_M", 15);
    assert_true(srv_config_list_next(&cur, &it, &len));
    assert_int_equal(len, 4);
    assert_memory_equal(it, "tiny", 4);
    assert_false(srv_config_list_next(&cur, &it, &len));
    assert_false(srv_config_list_next(&cur, &it, &len));
    cur = NULL;
    assert_false(srv_config_list_next(&cur, &it, &len));
    cur = " a ,b";
    assert_true(srv_config_list_next(&cur, &it, &len));
    assert_int_equal(len, 1);
    assert_memory_equal(it, "a", 1);
    assert_true(srv_config_is_pinned(&c, "tiny"));
    assert_true(srv_config_is_pinned(&c, "org/repo:Q4_K_M"));
    assert_false(srv_config_is_pinned(&c, "org/repo"));
    assert_false(srv_config_is_pinned(&c, "tin"));
    const char *t = srv_config_alias_target(&c, "small", &len);
    assert_non_null(t);
    assert_int_equal(len, strlen("stories260K"));
    assert_memory_equal(t, "stories260K", len);
    t = srv_config_alias_target(&c, "llama", &len);
    assert_non_null(t);
    assert_int_equal(len, strlen("tiny-llama-Q4_K_M"));
    assert_memory_equal(t, "tiny-llama-Q4_K_M", len);
    assert_null(srv_config_alias_target(&c, "llam", &len));
    assert_null(srv_config_alias_target(&c, "tiny-llama-Q4_K_M", &len));
    srv_config_free(&c);
    srv_config_init(&c); /* none set */
    assert_false(srv_config_is_pinned(&c, "tiny"));
    assert_null(srv_config_alias_target(&c, "llama", &len));
    srv_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_yaml_every_key),
        cmocka_unit_test(test_flags_every_key),
        cmocka_unit_test(test_flags_short_and_equals),
        cmocka_unit_test(test_set_values),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_new_keys_values),
        cmocka_unit_test(test_env_ttl_precedence),
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
