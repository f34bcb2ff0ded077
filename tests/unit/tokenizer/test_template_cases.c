/* test_template_cases.c — every case of every $KILN_SHARED/chat_templates/<name>.json
 * renders byte for byte to `expected` (or raises exactly `error`) with the
 * case's messages, add_generation_prompt, bos/eos tokens and tools, and
 * strftime_now pinned at 2024-07-26T12:00:00; and each built-in fallback
 * renders the simple cases (no tools) of its family's real template as
 * that template does. */
#include "testutil.h"
#include "kiln/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints where two renderings first differ, with some context. */
static void show_diff(const char *file, const char *cname, const char *exp, size_t en, const char *got, size_t gn) {
    size_t i = 0;
    while (i < en && i < gn && exp[i] == got[i]) i++;
    size_t from = i > 60 ? i - 60 : 0;
    fprintf(stderr, "MISMATCH %s / %s at byte %zu (expected %zu bytes, got %zu)\n", file, cname, i, en, gn);
    fprintf(stderr, "  expected: ...%.*s|>>%.*s\n", (int)(i - from), exp + from, (int)((en - i) > 80 ? 80 : en - i), exp + i);
    fprintf(stderr, "  got:      ...%.*s|>>%.*s\n", (int)(i - from), got + from, (int)((gn - i) > 80 ? 80 : gn - i), got + i);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_all_shared_cases(void **state) {
    (void)state;
    char dir[1024];
    tu_shared_path(dir, sizeof dir, "chat_templates");
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nn < 256) {
        size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".json")) names[nn++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof names[0], cmp_names);
    assert_true(nn >= 8);
    struct tm now = {.tm_year = 2024 - 1900, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_wday = 5, .tm_yday = 207, .tm_isdst = -1};
    int total = 0, failed = 0;
    for (size_t f = 0; f < nn; f++) {
        char path[1400], jpath[1400];
        snprintf(jpath, sizeof jpath, "%s/%s", dir, names[f]);
        snprintf(path, sizeof path, "%s/%.*s.jinja", dir, (int)(strlen(names[f]) - 5), names[f]);
        json_error_t je;
        json_t *doc = json_load_file(jpath, 0, &je);
        assert_non_null(doc);
        char *src;
        size_t n;
        kn_err err;
        assert_int_equal(kn_read_file(path, 1 << 20, &src, &n, &err), KN_OK);
        tok_tmpl *t = tok_tmpl_create(src, n, &err);
        if (!t) fprintf(stderr, "%s: %s\n", names[f], err.msg);
        assert_non_null(t);
        json_t *cases = json_object_get(doc, "cases");
        int ok = 0, cnt = 0;
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *c = json_array_get(cases, i);
            const char *cname = json_string_value(json_object_get(c, "name"));
            tok_tmpl_inputs in = {
                .messages = json_object_get(c, "messages"),
                .tools = json_object_get(c, "tools"),
                .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
                .bos_token = json_string_value(json_object_get(c, "bos_token")),
                .eos_token = json_string_value(json_object_get(c, "eos_token")),
                .now = &now,
            };
            char *out = NULL;
            size_t len = 0;
            bool raised = false;
            kn_status st = tok_tmpl_render(t, &in, &out, &len, &raised, &err);
            json_t *exp = json_object_get(c, "expected"), *experr = json_object_get(c, "error");
            bool good;
            cnt++;
            if (exp) {
                const char *e = json_string_value(exp);
                size_t el = json_string_length(exp);
                good = st == KN_OK && len == el && !memcmp(out, e, el);
                if (st != KN_OK) fprintf(stderr, "FAIL %s / %s: unexpected error: %s\n", names[f], cname, err.msg);
                else if (!good) show_diff(names[f], cname, e, el, out, len);
            } else {
                const char *e = json_string_value(experr);
                good = st != KN_OK && raised && !strcmp(err.msg, e);
                if (!good)
                    fprintf(stderr, "FAIL %s / %s: expected error \"%s\", got %s \"%s\"\n", names[f], cname, e,
                            st == KN_OK ? "output" : "error", st == KN_OK ? out : err.msg);
            }
            ok += good;
            free(out);
        }
        fprintf(stderr, "%-50s %d/%d cases\n", names[f], ok, cnt);
        total += cnt;
        failed += cnt - ok;
        tok_tmpl_destroy(t);
        free(src);
        json_decref(doc);
        free(names[f]);
    }
    fprintf(stderr, "chat templates: %d cases, %d failed\n", total, failed);
    assert_true(total > 0);
    assert_int_equal(failed, 0);
}

/* A built-in and the real template of its family. `no_system` is what the
 * real template adds in front when the conversation has no system message
 * (Qwen2.5's default system prompt, which Qwen3 and plain ChatML do not
 * have). Error cases are not compared: the only ones among the simple cases
 * are Gemma 2's refusal of a system message, which the gemma built-in folds
 * into the first user turn as Gemma 3 does. */
static const struct { const char *builtin, *file, *no_system; } FAMILY[] = {
    {"phi3", "microsoft-Phi-3.5-mini-instruct", ""},
    {"harmony", "openai-gpt-oss-120b", ""},
    {"gemma4", "google-gemma-4-31B-it", ""},
    {"gemma", "google-gemma-2-2b-it", ""},
    {"qwen3", "Qwen-Qwen2.5-7B-Instruct",
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"},
    {"chatml", "Qwen-Qwen2.5-7B-Instruct",
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"},
};

static void test_builtins_match_family(void **state) {
    (void)state;
    struct tm now = {.tm_year = 2024 - 1900, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_wday = 5, .tm_yday = 207, .tm_isdst = -1};
    for (size_t f = 0; f < sizeof FAMILY / sizeof FAMILY[0]; f++) {
        char rel[256], path[1400];
        snprintf(rel, sizeof rel, "chat_templates/%s.json", FAMILY[f].file);
        tu_shared_path(path, sizeof path, rel);
        json_error_t je;
        json_t *doc = json_load_file(path, 0, &je);
        assert_non_null(doc);
        const char *src = tok_tmpl_builtin(FAMILY[f].builtin);
        assert_non_null(src);
        kn_err err;
        tok_tmpl *t = tok_tmpl_create(src, strlen(src), &err);
        assert_non_null(t);
        json_t *cases = json_object_get(doc, "cases");
        int compared = 0;
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *c = json_array_get(cases, i), *msgs = json_object_get(c, "messages");
            json_t *exp = json_object_get(c, "expected");
            if (json_object_get(c, "tools") || !exp) continue;
            const char *cname = json_string_value(json_object_get(c, "name"));
            tok_tmpl_inputs in = {
                .messages = msgs,
                .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
                .bos_token = json_string_value(json_object_get(c, "bos_token")),
                .eos_token = json_string_value(json_object_get(c, "eos_token")),
                .now = &now,
            };
            char *out = NULL;
            size_t len = 0;
            bool raised;
            if (tok_tmpl_render(t, &in, &out, &len, &raised, &err) != KN_OK)
                fail_msg("built-in %s / %s %s: %s", FAMILY[f].builtin, FAMILY[f].file, cname, err.msg);
            const char *role0 = json_string_value(json_object_get(json_array_get(msgs, 0), "role"));
            size_t pn = role0 && !strcmp(role0, "system") ? 0 : strlen(FAMILY[f].no_system);
            const char *e = json_string_value(exp);
            size_t el = json_string_length(exp);
            bool good = el == pn + len && !memcmp(e, FAMILY[f].no_system, pn) && !memcmp(e + pn, out, len);
            if (!good) show_diff(FAMILY[f].file, cname, e + (el >= pn ? pn : 0), el >= pn ? el - pn : 0, out, len);
            assert_true(good);
            compared++;
            free(out);
        }
        fprintf(stderr, "built-in %-8s = %-35s on %d simple cases\n", FAMILY[f].builtin, FAMILY[f].file, compared);
        assert_true(compared >= 2);
        tok_tmpl_destroy(t);
        json_decref(doc);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_shared_cases),
        cmocka_unit_test(test_builtins_match_family),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
