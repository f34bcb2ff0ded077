/* test_names.c — the model manager's pure name helpers (runtime/registry.h):
 * quantization labels of file-name suffixes, splitting a file's id into
 * model name and label, parsing a request's `name[:QUANT]` (slashes, case,
 * and every kind of bad input), and the instance cache key. */
#include "testutil.h"
#include "kiln/model.h"
#include "kiln/runtime.h"

#include <stdio.h>
#include <string.h>

/* ---- rt_quant_label ---- */

static void test_quant_label(void **state) {
    (void)state;
    static const char *const LABELS[] = {"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0",
                                         "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M", "Q2_K", "IQ4_XS"};
    for (size_t i = 0; i < sizeof LABELS / sizeof *LABELS; i++) {
        const char *l = rt_quant_label(LABELS[i], strlen(LABELS[i]));
        assert_non_null(l);
        assert_string_equal(l, LABELS[i]);
    }
    /* case-insensitive, shown upper-case */
    assert_string_equal(rt_quant_label("q4_k_m", 6), "Q4_K_M");
    assert_string_equal(rt_quant_label("f16", 3), "F16");
    assert_string_equal(rt_quant_label("bf16", 4), "BF16");
    assert_string_equal(rt_quant_label("Q8_0", 4), "Q8_0");
    /* the length counts: a prefix or a longer string is not a label */
    assert_string_equal(rt_quant_label("Q4_K_M-extra", 6), "Q4_K_M");
    assert_string_equal(rt_quant_label("Q4_K_M", 4), "Q4_K");
    assert_null(rt_quant_label("Q4_K_M", 3));
    assert_null(rt_quant_label("Q4_K_MX", 7));
    /* not labels */
    assert_null(rt_quant_label("", 0));
    assert_null(rt_quant_label("Q9_0", 4));
    assert_null(rt_quant_label("llama", 5));
    assert_null(rt_quant_label("260K", 4));
    assert_null(rt_quant_label("Q4-K-M", 6));
    assert_null(rt_quant_label("instruct", 8));
}

/* ---- rt_split_file_id ---- */

typedef struct split_case {
    const char *id;
    bool has;
    const char *name, *quant;
} split_case;

static void test_split_file_id(void **state) {
    (void)state;
    static const split_case CASES[] = {
        {"tiny-llama-Q4_K_M", true, "tiny-llama", "Q4_K_M"},
        {"tiny-llama-q4_k_m", true, "tiny-llama", "Q4_K_M"},   /* lower-case suffix */
        {"x.q8_0", true, "x", "Q8_0"},                         /* dot form */
        {"x-f16", true, "x", "F16"},
        {"Model-BF16", true, "Model", "BF16"},
        {"org/repo/Q8_0", true, "org/repo", "Q8_0"},           /* DIR/<name>/<QUANT>.gguf */
        {"org/repo/q4_0", true, "org/repo", "Q4_0"},
        {"sub/Q4_0", true, "sub", "Q4_0"},
        {"org/repo-Q6_K", true, "org/repo", "Q6_K"},           /* slash in the name, dash suffix */
        {"stories260K-Q8_0", true, "stories260K", "Q8_0"},
        {"stories260K", false, "stories260K", ""},             /* no suffix */
        {"tiny-llama-ropescale-Q8_0", true, "tiny-llama-ropescale", "Q8_0"},
        /* a quant-like word in the middle is part of the name */
        {"llama-q8_0-instruct", false, "llama-q8_0-instruct", ""},
        {"mistral-Q4_K_M-chat-Q8_0", true, "mistral-Q4_K_M-chat", "Q8_0"},
        {"model-F16.Q8_0", true, "model-F16", "Q8_0"},
        {"Q8_0-model", false, "Q8_0-model", ""},
        /* suffix must be a whole label after a separator */
        {"modelQ8_0", false, "modelQ8_0", ""},
        {"model_Q8_0", false, "model_Q8_0", ""},
        {"model-Q8_0x", false, "model-Q8_0x", ""},
        {"model-Q4_K_M_", false, "model-Q4_K_M_", ""},
        /* nothing left for a name */
        {"Q8_0", false, "Q8_0", ""},
        {"-Q8_0", false, "-Q8_0", ""},
        {"a/b/c", false, "a/b/c", ""},
        {"dir/Q8_0-x", false, "dir/Q8_0-x", ""},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        const split_case *c = &CASES[i];
        char name[RT_MAX_NAME + 1], quant[RT_MAX_QUANT + 1];
        memset(name, 'z', sizeof name);
        memset(quant, 'z', sizeof quant);
        bool has = rt_split_file_id(c->id, name, sizeof name, quant, sizeof quant);
        if (has != c->has || strcmp(name, c->name) || strcmp(quant, c->quant))
            fail_msg("rt_split_file_id(\"%s\") = %d, \"%s\", \"%s\"; want %d, \"%s\", \"%s\"", c->id, has, name,
                     quant, c->has, c->name, c->quant);
    }
}

/* ---- rt_parse_request ---- */

static bool parse(const char *req, char *name, char *quant) {
    return rt_parse_request(req, name, RT_MAX_NAME + 1, quant, RT_MAX_QUANT + 1);
}

static void test_parse_request_ok(void **state) {
    (void)state;
    char name[RT_MAX_NAME + 1], quant[RT_MAX_QUANT + 1];
    assert_true(parse("stories", name, quant));
    assert_string_equal(name, "stories");
    assert_string_equal(quant, "");

    assert_true(parse("tiny-llama:Q4_K_M", name, quant));
    assert_string_equal(name, "tiny-llama");
    assert_string_equal(quant, "Q4_K_M");

    assert_true(parse("tiny-llama:q4_k_m", name, quant)); /* upper-cased */
    assert_string_equal(name, "tiny-llama");
    assert_string_equal(quant, "Q4_K_M");

    assert_true(parse("org/repo:q8_0", name, quant));
    assert_string_equal(name, "org/repo");
    assert_string_equal(quant, "Q8_0");

    assert_true(parse("org/sub/repo.v1_x:f16", name, quant));
    assert_string_equal(name, "org/sub/repo.v1_x");
    assert_string_equal(quant, "F16");

    /* a file id with its suffix is a plain name to the parser */
    assert_true(parse("tiny-llama-Q4_K_M", name, quant));
    assert_string_equal(name, "tiny-llama-Q4_K_M");
    assert_string_equal(quant, "");

    /* a single dot is fine, only ".." is refused */
    assert_true(parse("v1.5-model:Q8_0", name, quant));
    assert_string_equal(name, "v1.5-model");
    assert_string_equal(quant, "Q8_0");

    /* the longest name accepted */
    char longest[RT_MAX_NAME + 1];
    memset(longest, 'a', RT_MAX_NAME);
    longest[RT_MAX_NAME] = 0;
    assert_true(parse(longest, name, quant));
    assert_string_equal(name, longest);
    assert_string_equal(quant, "");
    /* ... and with a quant: total length within RT_MAX_NAME */
    char lq[RT_MAX_NAME + 1];
    memset(lq, 'b', RT_MAX_NAME - 5);
    memcpy(lq + RT_MAX_NAME - 5, ":q8_0", 6);
    assert_true(parse(lq, name, quant));
    assert_int_equal(strlen(name), RT_MAX_NAME - 5);
    assert_string_equal(quant, "Q8_0");
}

static void test_parse_request_bad(void **state) {
    (void)state;
    char overlong[RT_MAX_NAME + 2];
    memset(overlong, 'a', RT_MAX_NAME + 1);
    overlong[RT_MAX_NAME + 1] = 0;
    char overlong_q[RT_MAX_NAME + 8];
    memset(overlong_q, 'a', RT_MAX_NAME);
    memcpy(overlong_q + RT_MAX_NAME, ":Q8_0", 6); /* name fits alone, not with the quant */
    char long_quant[64];
    snprintf(long_quant, sizeof long_quant, "model:%s", "Q4_K_M_Q4_K_M_Q4_K_M"); /* quant over RT_MAX_QUANT */
    const char *const BAD[] = {
        "",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "x..y",
        "/abs",
        "/etc/passwd",
        "a\\b",
        "a\nb",
        "a\tb",
        "a\rb",
        "\x01model",
        "model\x1f",
        "model\x7f",
        "name:",
        "org/repo:",
        ":Q8_0",
        ":",
        overlong,
        overlong_q,
        long_quant,
    };
    int accepted = 0;
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        char name[RT_MAX_NAME + 1], quant[RT_MAX_QUANT + 1];
        if (parse(BAD[i], name, quant)) {
            char shown[200] = "";
            for (size_t j = 0, o = 0; BAD[i][j] && j < 60 && o + 5 < sizeof shown; j++)
                o += (size_t)snprintf(shown + o, sizeof shown - o, (unsigned char)BAD[i][j] < 0x20 ||
                                      BAD[i][j] == 0x7f ? "\\x%02x" : "%c", (unsigned char)BAD[i][j]);
            print_error("rt_parse_request accepted bad input #%zu \"%s\" (%zu bytes) as name \"%.60s\" quant \"%s\"\n",
                        i, shown, strlen(BAD[i]), name, quant);
            accepted++;
        }
    }
    assert_int_equal(accepted, 0);
    char name[RT_MAX_NAME + 1], quant[RT_MAX_QUANT + 1];
    assert_false(rt_parse_request(NULL, name, sizeof name, quant, sizeof quant));
    /* small output buffers are refused, not overflowed */
    char small[8], sq[4];
    memset(small, 'z', sizeof small);
    assert_false(rt_parse_request("abcdefghij", small, sizeof small, quant, sizeof quant));
    assert_false(rt_parse_request("abc:Q4_K_M", name, sizeof name, sq, sizeof sq));
    assert_true(rt_parse_request("abcdefg:F16", small, sizeof small, sq, sizeof sq));
    assert_string_equal(small, "abcdefg");
    assert_string_equal(sq, "F16");
}

/* ---- rt_instance_key ---- */

static void test_instance_key(void **state) {
    (void)state;
    char base[512], k[512];
    rt_instance_key("tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 4, base, sizeof base);
    /* deterministic */
    rt_instance_key("tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 4, k, sizeof k);
    assert_string_equal(k, base);
    /* each component shows */
    assert_non_null(strstr(base, "tiny-llama-Q4_K_M"));
    assert_non_null(strstr(base, "generate"));
    assert_non_null(strstr(base, "2048"));
    /* any component that differs gives a different key */
    struct {
        const char *id, *task;
        int n_ctx;
        model_kv_type kv;
        int threads;
    } const VARIANTS[] = {
        {"tiny-llama-Q8_0", "generate", 2048, MODEL_KV_F16, 4},
        {"tiny-llama-Q4_K_M", "embed", 2048, MODEL_KV_F16, 4},
        {"tiny-llama-Q4_K_M", "generate", 4096, MODEL_KV_F16, 4},
        {"tiny-llama-Q4_K_M", "generate", 204, MODEL_KV_F16, 4},
        {"tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_Q8_0, 4},
        {"tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 1},
        {"tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 44},
        {"tiny-llama", "generate", 2048, MODEL_KV_F16, 4},
        {"org/tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 4},
    };
    size_t nv = sizeof VARIANTS / sizeof *VARIANTS;
    char keys[16][512];
    for (size_t i = 0; i < nv; i++) {
        rt_instance_key(VARIANTS[i].id, VARIANTS[i].task, VARIANTS[i].n_ctx, VARIANTS[i].kv, VARIANTS[i].threads,
                        keys[i], sizeof keys[i]);
        if (!strcmp(keys[i], base)) fail_msg("variant %zu has the base key \"%s\"", i, base);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(keys[i], keys[j])) fail_msg("variants %zu and %zu share the key \"%s\"", j, i, keys[i]);
    }
    /* the context and the thread count cannot run into each other */
    char a[128], b[128];
    rt_instance_key("m", "generate", 12, MODEL_KV_F16, 3, a, sizeof a);
    rt_instance_key("m", "generate", 1, MODEL_KV_F16, 23, b, sizeof b);
    assert_string_not_equal(a, b);
    /* a short buffer is cut, NUL-terminated */
    char tiny[6];
    memset(tiny, 'z', sizeof tiny);
    rt_instance_key("tiny-llama-Q4_K_M", "generate", 2048, MODEL_KV_F16, 4, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
    assert_memory_equal(tiny, base, sizeof tiny - 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_label),       cmocka_unit_test(test_split_file_id),
        cmocka_unit_test(test_parse_request_ok),  cmocka_unit_test(test_parse_request_bad),
        cmocka_unit_test(test_instance_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
