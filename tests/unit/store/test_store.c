/* test_store.c — the model store's name rules: OWNER/NAME[:QUANT] parsing,
 * quantization labels in hub file names, the quant matcher, skipped names,
 * and the local listing / `kiln rm` name resolution over a temporary
 * directory (with the shared stories260K.gguf as a file without a label). */
#include "testutil.h"
#include "kiln/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_ref_parse_ok(void **state) {
    (void)state;
    store_ref r;
    kn_err e = {0};
    assert_int_equal(store_ref_parse("TheBloke/Llama-2-7B-GGUF", &r, &e), KN_OK);
    assert_string_equal(r.repo, "TheBloke/Llama-2-7B-GGUF");
    assert_string_equal(r.name, "Llama-2-7B-GGUF");
    assert_string_equal(r.quant, STORE_DEFAULT_QUANT);
    assert_int_equal(store_ref_parse("org/repo.v1_x:q8_0", &r, &e), KN_OK);
    assert_string_equal(r.repo, "org/repo.v1_x");
    assert_string_equal(r.name, "repo.v1_x");
    assert_string_equal(r.quant, "Q8_0");
    assert_int_equal(store_ref_parse("a/b:ud-q4_k_xl", &r, &e), KN_OK);
    assert_string_equal(r.quant, "UD-Q4_K_XL");
}

static void test_ref_parse_bad(void **state) {
    (void)state;
    static const char *const BAD[] = {
        "",
        "noslash",
        "a/b/c",
        "/abs",
        "a/",
        "/b",
        "../x",
        "a/..",
        "a/../b",
        "a/b..c",
        ".a/b",
        "a/.b",
        "a/-b",
        "a b/c",
        "a/b c",
        "a/b:",
        "a/b:..",
        "a/b:Q4/K",
        "a/b:Q4.K",
        "a/b:_Q4",
        "a/b:-Q4",
        "a\\b/c",
        "a/b\n",
        "a/b:Q4_K_M:x",
        "a/\xc3\xa9",
        "a/"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "b",
        "a/b:Q12345678901234567890123456789012",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        store_ref r;
        kn_err e = {0};
        if (store_ref_parse(BAD[i], &r, &e) != KN_EINVAL) fail_msg("accepted '%s'", BAD[i]);
        assert_true(strlen(e.msg) > 0);
    }
    store_ref r;
    assert_int_equal(store_ref_parse(NULL, &r, NULL), KN_EINVAL);
}

static void test_quant_labels(void **state) {
    (void)state;
    static const struct {
        const char *file, *label; /* NULL: no label */
    } CASES[] = {
        {"llama-2-7b.Q4_K_M.gguf", "Q4_K_M"},
        {"Llama-3.2-1B-Instruct-Q8_0.gguf", "Q8_0"},
        {"qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"},
        {"model-f16.gguf", "F16"},
        {"model-BF16.gguf", "BF16"},
        {"model_f32.gguf", "F32"},
        {"Phi-3-mini-4k-instruct-IQ4_XS.gguf", "IQ4_XS"},
        {"x-IQ2_XXS.gguf", "IQ2_XXS"},
        {"x-TQ1_0.gguf", "TQ1_0"},
        {"x-Q4_0_4_4.gguf", "Q4_0_4_4"},
        {"gpt-oss-20b-MXFP4.gguf", "MXFP4"},
        {"gpt-oss-120b-mxfp4_moe.gguf", "MXFP4_MOE"},
        {"x-MXFP4x.gguf", NULL},
        {"x-Q4_K_M-imatrix.gguf", "Q4_K_M"},
        {"x-Q4_K_M_imatrix.gguf", "Q4_K_M"},
        {"sub/dir/Q6_K.gguf", "Q6_K"},
        {"Q5_K_S/model-Q5_K_S.gguf", "Q5_K_S"},
        {"stories260K.gguf", NULL},
        {"Qwen2-7B.gguf", NULL},
        {"modelq4_k_m.gguf", NULL},
        {"x-Q.gguf", NULL},
        {"x-Q4x.gguf", NULL},
        {"BF16x.gguf", NULL},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char q[STORE_MAX_QUANT + 1] = "";
        bool got = store_quant_of_name(CASES[i].file, q, sizeof q);
        if (!CASES[i].label) {
            if (got) fail_msg("%s: label %s, expected none", CASES[i].file, q);
        } else if (!got || strcmp(q, CASES[i].label)) {
            fail_msg("%s: label '%s', expected %s", CASES[i].file, got ? q : "(none)", CASES[i].label);
        }
    }
    char tiny[4];
    assert_false(store_quant_of_name("x-Q4_K_M.gguf", tiny, sizeof tiny));
}

static void test_quant_match(void **state) {
    (void)state;
    static const struct {
        const char *file, *quant;
        bool match;
    } CASES[] = {
        {"m-Q4_K_M.gguf", "Q4_K_M", true},
        {"m.Q4_K_M.gguf", "q4_k_m", true},
        {"m-q4_k_m.gguf", "Q4_K_M", true},
        {"m-q4_k_m-v2.gguf", "Q4_K_M", true},
        {"m-Q4_K_M.gguf", "Q4_K", false},
        {"m-IQ4_0.gguf", "Q4_0", false},
        {"m-Q4_0_4_4.gguf", "Q4_0", false},
        {"m-Q4_0.gguf", "Q4_0", true},
        {"m-BF16.gguf", "F16", false},
        {"m-f16.gguf", "F16", true},
        {"m-UD-Q4_K_XL.gguf", "UD-Q4_K_XL", true},
        {"m-UD-Q4_K_XL.gguf", "Q4_K_XL", true},
        {"Q4_K_M/m.gguf", "Q4_K_M", false},
        {"m-Q4_K_M.gguf", "", false},
        {"m-Q4_K_M_imatrix.gguf", "Q4_K_M", true},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        if (store_name_has_quant(CASES[i].file, CASES[i].quant) != CASES[i].match)
            fail_msg("%s vs %s: expected %s", CASES[i].file, CASES[i].quant,
                     CASES[i].match ? "match" : "no match");
}

static void test_skipped(void **state) {
    (void)state;
    assert_false(store_name_skipped("m-Q4_K_M.gguf"));
    assert_false(store_name_skipped("m-Q4_K_M.GGUF"));
    assert_false(store_name_skipped("dir/m-Q4_K_M.gguf"));
    assert_true(store_name_skipped("README.md"));
    assert_true(store_name_skipped("m.gguf.part"));
    assert_true(store_name_skipped("mmproj-model-f16.gguf"));
    assert_true(store_name_skipped("dir/mmproj-f16.gguf"));
    assert_true(store_name_skipped("m-Q8_0-00001-of-00003.gguf"));
    assert_true(store_name_skipped("m-Q8_0-00003-of-00003.gguf"));
    assert_false(store_name_skipped("m-Q8_0-0001-of-0003.gguf"));
}

static void write_file(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_list_and_resolve(void **state) {
    (void)state;
    char dir[512], src[1024], p[1024];
    tu_tmpdir(dir, sizeof dir);
    write_file(dir, "m-Q4_K_M.gguf", "x");
    write_file(dir, "m.q8_0.gguf", "xy");
    write_file(dir, "odd-Q4_K_M-imatrix.gguf", "xyz");
    write_file(dir, ".hidden.gguf", "x");
    write_file(dir, "notes.txt", "x");
    write_file(dir, "broken.gguf", "not gguf");
    snprintf(p, sizeof p, "%s/sub.gguf", dir);
    assert_int_equal(mkdir(p, 0755), 0); /* a directory is not a model */
    snprintf(p, sizeof p, "%s/stories.gguf", dir);
    assert_int_equal(symlink(tu_shared_path(src, sizeof src, "models/stories260K.gguf"), p), 0);

    store_list l;
    kn_err e = {0};
    assert_int_equal(store_list_dir(dir, &l, &e), KN_OK);
    assert_int_equal(l.n, 5);
    /* sorted by file name */
    static const char *const FILES[] = {"broken.gguf", "m-Q4_K_M.gguf", "m.q8_0.gguf",
                                        "odd-Q4_K_M-imatrix.gguf", "stories.gguf"};
    static const char *const REFS[] = {"broken", "m:Q4_K_M", "m:Q8_0", "odd-Q4_K_M-imatrix", "stories"};
    static const char *const QUANTS[] = {"", "Q4_K_M", "Q8_0", "Q4_K_M", "F32"};
    for (size_t i = 0; i < l.n; i++) {
        assert_string_equal(l.v[i].file, FILES[i]);
        assert_string_equal(l.v[i].ref, REFS[i]);
        assert_string_equal(l.v[i].quant, QUANTS[i]);
    }
    assert_int_equal(l.v[1].size, 1);
    assert_string_equal(l.v[1].name, "m");
    assert_true(l.v[1].quant_from_name);
    assert_false(l.v[4].quant_from_name);
    assert_int_equal(l.v[4].size, 1185376);

    size_t idx = 99;
    assert_int_equal(store_resolve_local(&l, "m:q4_k_m", &idx, &e), KN_OK);
    assert_int_equal(idx, 1);
    assert_int_equal(store_resolve_local(&l, "m:Q8_0", &idx, &e), KN_OK);
    assert_int_equal(idx, 2);
    assert_int_equal(store_resolve_local(&l, "m-Q4_K_M", &idx, &e), KN_OK);
    assert_int_equal(idx, 1);
    assert_int_equal(store_resolve_local(&l, "stories.gguf", &idx, &e), KN_OK);
    assert_int_equal(idx, 4);
    assert_int_equal(store_resolve_local(&l, "odd-Q4_K_M-imatrix", &idx, &e), KN_OK);
    assert_int_equal(idx, 3);
    /* a label in the middle is not a NAME:QUANT form */
    assert_int_equal(store_resolve_local(&l, "odd:Q4_K_M", &idx, &e), KN_ENOTFOUND);
    assert_int_equal(store_resolve_local(&l, "m", &idx, &e), KN_ENOTFOUND);
    assert_non_null(strstr(e.msg, "m:Q4_K_M, m:Q8_0"));
    assert_int_equal(store_resolve_local(&l, "m:Q6_K", &idx, &e), KN_ENOTFOUND);
    static const char *const BAD[] = {"",    "../m-Q4_K_M", "/etc/passwd", ".hidden",
                                      "a/b", "a\\b",        "x:../y",      "a\tb"};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        if (store_resolve_local(&l, BAD[i], &idx, &e) != KN_EINVAL) fail_msg("accepted '%s'", BAD[i]);

    char names[16];
    store_list_names(&l, names, sizeof names);
    assert_true(strlen(names) < sizeof names);
    assert_non_null(strstr(names, "..."));
    store_list_free(&l);
    store_list_free(&l); /* idempotent on a freed list */

    snprintf(p, sizeof p, "%s/none", dir);
    assert_int_equal(store_list_dir(p, &l, &e), KN_EIO);
    assert_non_null(strstr(e.msg, "none"));
    tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_parse_ok), cmocka_unit_test(test_ref_parse_bad),
        cmocka_unit_test(test_quant_labels), cmocka_unit_test(test_quant_match),
        cmocka_unit_test(test_skipped),      cmocka_unit_test(test_list_and_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
