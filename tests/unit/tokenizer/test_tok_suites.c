/*
 * test_tok_suites.c — llama.cpp's tokenizer suites in $KILN_SHARED/tokenizers:
 * every string of every ggml-vocab-*.gguf.inp must tokenize (no BOS/EOS, no
 * special parsing) to the ids on the same line of .out, and the two files
 * must hold the same number of cases. The vocab is ggml-vocab-<name>.gguf,
 * but for gemma-4, whose vocab is the one inside models/tiny-gemma3-Q8_0.gguf.
 * Also round trips decode(encode(x)) == x for the SPM and BPE suites, and
 * the real models' prompts against $KILN_SHARED/reference/<model>.<prompt>.json.
 */
#include "testutil.h"

#include "kiln/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEP "\n__ggml_vocab_test__\n"

static const struct {
    const char *name;
    const char *vocab; /* NULL: tokenizers/ggml-vocab-<name>.gguf */
} SUITES[] = {
    {"bert-bge", NULL}, {"deepseek-coder", NULL}, {"gemma-4", "models/tiny-gemma3-Q8_0.gguf"},
    {"gpt-2", NULL},    {"llama-bpe", NULL},      {"llama-spm", NULL},
    {"qwen2", NULL},    {"qwen35", NULL},         {"refact", NULL},
};

static tok_vocab *load_vocab(const char *rel) {
    char path[1024];
    tu_shared_path(path, sizeof path, rel);
    gguf_ctx *g = NULL;
    kn_err err = {0};
    if (gguf_open(path, &g, &err) != KN_OK) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return NULL;
    }
    tok_vocab *v = NULL;
    if (tok_vocab_load(g, &v, &err) != KN_OK) fprintf(stderr, "%s: %s\n", path, err.msg);
    gguf_close(g);
    return v;
}

static char *read_all(const char *rel, size_t *len) {
    char path[1024];
    tu_shared_path(path, sizeof path, rel);
    char *buf = NULL;
    kn_err err;
    if (kn_read_file(path, 64u << 20, &buf, len, &err) != KN_OK) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return NULL;
    }
    return buf;
}

/* Runs one suite; returns the number of mismatches (and the case count). */
static int run_suite(const char *name, const char *vocab, int *n_cases, int *n_roundtrip_fail) {
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf", name);
    tok_vocab *v = load_vocab(vocab ? vocab : rel);
    assert_non_null(v);
    size_t inl, outl;
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf.inp", name);
    char *inp = read_all(rel, &inl);
    snprintf(rel, sizeof rel, "tokenizers/ggml-vocab-%s.gguf.out", name);
    char *outp = read_all(rel, &outl);
    assert_non_null(inp);
    assert_non_null(outp);
    tok_encoder *e = tok_encoder_create(v);
    assert_non_null(e);
    bool roundtrip = tok_vocab_family(v) != TOK_FAMILY_WPM;
    int bad = 0, cases = 0, rt_bad = 0;
    char *ip = inp, *op = outp;
    /* as llama.cpp's test-tokenizer-0 reads them: .inp is split on SEP (the
     * text after the last one, if any, is a case too); .out has one line
     * per case */
    for (;;) {
        if (!*ip) break;
        char *sep = strstr(ip, SEP);
        if (!sep) sep = ip + strlen(ip);
        char *nl = strchr(op, '\n');
        if (!nl) {
            fprintf(stderr, "[%s] .out has no line for case %d\n", name, cases);
            bad++;
            break;
        }
        bool last = !*sep;
        *sep = 0;
        *nl = 0;
        size_t tl = (size_t)(sep - ip);
        /* expected */
        int32_t exp[4096];
        size_t ne = 0;
        for (char *t = strtok(op, " \t"); t && ne < 4096; t = strtok(NULL, " \t")) exp[ne++] = (int32_t)atol(t);
        size_t n = 0;
        kn_err err = {0};
        kn_status st = tok_encoder_encode(e, ip, tl, false, false, NULL, 0, &n, &err);
        size_t got_n;
        const int32_t *got = tok_encoder_ids(e, &got_n);
        bool ok = st == KN_OK && got_n == ne && (ne == 0 || memcmp(got, exp, ne * sizeof(int32_t)) == 0);
        if (!ok) {
            bad++;
            fprintf(stderr, "[%s] case %d mismatch for \"%.*s\"\n  want:", name, cases, (int)(tl > 80 ? 80 : tl), ip);
            for (size_t k = 0; k < ne && k < 40; k++) fprintf(stderr, " %d", exp[k]);
            fprintf(stderr, "\n  got: ");
            for (size_t k = 0; k < got_n && k < 40; k++) fprintf(stderr, " %d", got[k]);
            fprintf(stderr, "\n");
        }
        if (roundtrip && st == KN_OK) {
            tok_decoder_opts o = {.special = false, .strip_space = true};
            char *txt = NULL;
            size_t txl = 0;
            int32_t *copy = malloc((got_n + 1) * sizeof(int32_t));
            memcpy(copy, got, got_n * sizeof(int32_t));
            assert_int_equal(tok_decode_all(v, copy, got_n, &o, &txt, &txl, &err), KN_OK);
            /* SPM adds a space prefix that decoding strips; a leading space of
             * the input itself is therefore kept by the prefix rule. */
            if (txl != tl || memcmp(txt, ip, tl) != 0) {
                rt_bad++;
                fprintf(stderr, "[%s] round trip %d differs: \"%.*s\" -> \"%.*s\"\n", name, cases, (int)(tl > 60 ? 60 : tl),
                        ip, (int)(txl > 60 ? 60 : txl), txt);
            }
            free(txt);
            free(copy);
        }
        cases++;
        ip = last ? sep : sep + strlen(SEP);
        op = nl + 1;
    }
    if (*op) {
        fprintf(stderr, "[%s] .out has more lines than .inp has cases (%d)\n", name, cases);
        bad++;
    }
    tok_encoder_destroy(e);
    free(inp);
    free(outp);
    tok_vocab_destroy(v);
    *n_cases = cases;
    *n_roundtrip_fail = rt_bad;
    return bad;
}

static void test_suites(void **state) {
    (void)state;
    int total_bad = 0, total_rt = 0;
    for (size_t s = 0; s < sizeof SUITES / sizeof SUITES[0]; s++) {
        int cases = 0, rt = 0;
        int bad = run_suite(SUITES[s].name, SUITES[s].vocab, &cases, &rt);
        printf("suite %-16s %3d/%3d cases match; round trip failures: %d\n", SUITES[s].name, cases - bad, cases,
               rt);
        assert_true(cases >= 40);
        total_bad += bad;
        total_rt += rt;
    }
    assert_int_equal(total_bad, 0);
    assert_int_equal(total_rt, 0);
}

/* Real models: prompt_tokens of reference/<model>.<prompt>.json. */
static void test_reference_prompts(void **state) {
    (void)state;
    static const char *const MODELS[] = {"stories260K", "tiny-llama-Q8_0", "tiny-qwen2-Q4_K_M", "tiny-llama3-Q8_0"};
    static const char *const PROMPTS[] = {"story", "code", "mixed", "long"};
    int checked = 0;
    for (size_t m = 0; m < sizeof MODELS / sizeof MODELS[0]; m++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/%s.gguf", MODELS[m]);
        tok_vocab *v = load_vocab(rel);
        assert_non_null(v);
        for (size_t p = 0; p < sizeof PROMPTS / sizeof PROMPTS[0]; p++) {
            char path[1024];
            snprintf(rel, sizeof rel, "reference/%s.%s.json", MODELS[m], PROMPTS[p]);
            tu_shared_path(path, sizeof path, rel);
            json_error_t je;
            json_t *root = json_load_file(path, 0, &je);
            if (!root) continue; /* not every model has every prompt */
            snprintf(rel, sizeof rel, "reference/prompts/%s.txt", PROMPTS[p]);
            size_t tl;
            char *text = read_all(rel, &tl);
            assert_non_null(text);
            size_t n = 0;
            kn_err err = {0};
            assert_int_equal(tok_encode(v, text, tl, true, false, NULL, 0, &n, &err), KN_OK);
            int32_t *ids = malloc((n + 1) * sizeof(int32_t));
            assert_int_equal(tok_encode(v, text, tl, true, false, ids, n, &n, &err), KN_OK);
            json_t *want = json_object_get(root, "prompt_tokens");
            assert_true(json_is_array(want));
            size_t nw = json_array_size(want);
            size_t mism = nw == n ? 0 : 1;
            for (size_t i = 0; i < nw && i < n; i++)
                if (json_integer_value(json_array_get(want, i)) != ids[i]) mism++;
            if (mism) fprintf(stderr, "%s.%s: %zu ids vs %zu expected, %zu differ\n", MODELS[m], PROMPTS[p], n, nw, mism);
            assert_int_equal(mism, 0);
            checked++;
            free(ids);
            free(text);
            json_decref(root);
        }
        tok_vocab_destroy(v);
    }
    printf("reference prompts checked: %d\n", checked);
    assert_true(checked >= 12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suites),
        cmocka_unit_test(test_reference_prompts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
