/* test_template_cases.c — every case of every $KILN_SHARED/chat_templates/<name>.json
 * renders byte for byte to `expected` (or raises exactly `error`) with the
 * case's messages, add_generation_prompt, bos/eos tokens and tools, and
 * strftime_now pinned at 2024-07-26T12:00:00. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_shared_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
