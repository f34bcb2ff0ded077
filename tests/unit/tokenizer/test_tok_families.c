/*
 * test_tok_families.c — the vocabularies of the model families, against
 * llama.cpp: for every $KILN_SHARED/reference/families/<model>.<prompt>.json,
 * the tokenizer of models/<model>.gguf (<model> is the file name up to its
 * first '.') must turn the file's "prompt" (with its "add_special", special
 * text not parsed) into exactly its "prompt_tokens".
 *
 * Only the tokenizer is loaded from each GGUF (no weights), so the test
 * does not depend on the model module knowing the architecture. The
 * families: gemma4 (tiny-gemma3), phi-3's SPM (tiny-phi3), qwen2
 * (tiny-qwen3, tiny-qwen3moe), llama-bpe (tiny-gptoss), llama's SPM
 * (tiny-llama31).
 */
#include "testutil.h"

#include "kiln/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static tok_vocab *load_vocab(const char *model) {
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "models/%s.gguf", model);
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

/* Checks one reference file with v; returns the number of problems. */
static int check_file(const tok_vocab *v, const char *path, const char *name) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(stderr, "%s: line %d: %s\n", name, je.line, je.text);
        return 1;
    }
    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *add = json_object_get(root, "add_special");
    const json_t *want = json_object_get(root, "prompt_tokens");
    if (!json_is_string(prompt) || !json_is_boolean(add) || !json_is_array(want)) {
        fprintf(stderr, "%s: needs \"prompt\", \"add_special\" and \"prompt_tokens\"\n", name);
        json_decref(root);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    kn_err err = {0};
    kn_status st = tok_encode_alloc(v, json_string_value(prompt), json_string_length(prompt),
                                    json_is_true(add), false, &ids, &n, &err);
    int bad = 0;
    if (st != KN_OK) {
        fprintf(stderr, "%s: tokenize: %s\n", name, err.msg);
        bad = 1;
    } else {
        size_t nw = json_array_size(want), first = SIZE_MAX;
        for (size_t i = 0; i < nw && i < n && first == SIZE_MAX; i++)
            if (json_integer_value(json_array_get(want, i)) != ids[i]) first = i;
        if (first == SIZE_MAX && nw != n) first = nw < n ? nw : n;
        if (first != SIZE_MAX) {
            bad = 1;
            fprintf(stderr, "%s: %zu ids, %zu expected; first difference at %zu:\n  want:", name, n, nw,
                    first);
            for (size_t i = first; i < nw && i < first + 12; i++)
                fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
            fprintf(stderr, "\n  got: ");
            for (size_t i = first; i < n && i < first + 12; i++)
                fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        } else {
            printf("%-36s %5zu ids match\n", name, n);
        }
    }
    free(ids);
    json_decref(root);
    return bad;
}

static void test_family_prompts(void **state) {
    (void)state;
    char dir[1024];
    tu_shared_path(dir, sizeof dir, "reference/families");
    DIR *d = opendir(dir);
    assert_non_null(d);
    /* sorted, so that each model's files are adjacent and its vocab loads once */
    char *names[256];
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t ln = strlen(de->d_name);
        if (ln < 6 || strcmp(de->d_name + ln - 5, ".json") || !strchr(de->d_name, '.')) continue;
        assert_true(nn < sizeof names / sizeof names[0]);
        names[nn++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof names[0], cmp_str);
    int bad = 0, checked = 0;
    char model[256] = "";
    tok_vocab *v = NULL;
    for (size_t i = 0; i < nn; i++) {
        const char *dot = strchr(names[i], '.');
        char m[256];
        snprintf(m, sizeof m, "%.*s", (int)(dot - names[i]), names[i]);
        if (strcmp(m, model)) {
            tok_vocab_destroy(v);
            v = load_vocab(m);
            snprintf(model, sizeof model, "%s", m);
            if (v)
                printf("%s: %s tokenizer, pre %s, %d tokens\n", m, tok_family_name(tok_vocab_family(v)),
                       tok_vocab_pre(v), tok_n_vocab(v));
        }
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        bad += v ? check_file(v, path, names[i]) : 1;
        checked++;
        free(names[i]);
    }
    tok_vocab_destroy(v);
    printf("family reference prompts: %d checked, %d differ\n", checked, bad);
    assert_true(checked >= 24);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_prompts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
