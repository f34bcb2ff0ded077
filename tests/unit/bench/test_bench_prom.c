/* test_bench_prom.c — the /metrics reader of the shared-prefix and spec
 * scenarios (bench_metric_value): series selection by the model label, the
 * single-series fallback, name boundaries, label escapes, malformed lines;
 * the SSE parser's text and prompt-token outputs those scenarios rely on; the
 * new scenario names. */
#include "testutil.h"
#include "kiln/bench.h"

#include <string.h>

static const char PAGE[] =
    "# HELP kiln_kv_used_bytes Bytes of the KV blocks in use\n"
    "# TYPE kiln_kv_used_bytes gauge\n"
    "kiln_kv_used_bytes{model=\"a\"} 1024\n"
    "kiln_kv_used_bytes{model=\"b\",x=\"q\\\"uo,te}\"} 2048 1700000000000\n"
    "kiln_kv_used_bytes_extra{model=\"a\"} 7\n"
    "kiln_kv_logical_bytes{model=\"only-file-id\"} 4.5e3\n"
    "kiln_spec_draft_tokens_total 12\n"
    "kiln_bad{model=\"a\" 3\n"
    "kiln_bad2{model=\"a\"} NaN\n"
    "kiln_two{model=\"a\"} 1\n"
    "kiln_two{model=\"b\"} 2\n";

static void test_metric_select(void **state) {
    (void)state;
    double v = -1;
    assert_true(bench_metric_value(PAGE, "kiln_kv_used_bytes", "a", &v));
    assert_true(v == 1024);
    assert_true(bench_metric_value(PAGE, "kiln_kv_used_bytes", "b", &v)); /* label after an escaped quote */
    assert_true(v == 2048);
    /* two series, neither matches: absent */
    assert_false(bench_metric_value(PAGE, "kiln_kv_used_bytes", "c", &v));
    assert_false(bench_metric_value(PAGE, "kiln_two", "z", &v));
    /* exactly one series: taken whatever its label (kiln may label by file id) */
    assert_true(bench_metric_value(PAGE, "kiln_kv_logical_bytes", "requested-name", &v));
    assert_true(v == 4500);
    assert_true(bench_metric_value(PAGE, "kiln_spec_draft_tokens_total", "a", &v));
    assert_true(v == 12);
    /* name prefix of another metric: not confused */
    assert_true(bench_metric_value(PAGE, "kiln_kv_used_bytes_extra", "zz", &v));
    assert_true(v == 7);
    /* malformed label set, non-finite value, absent name */
    assert_false(bench_metric_value(PAGE, "kiln_bad", "a", &v));
    assert_false(bench_metric_value(PAGE, "kiln_bad2", "a", &v));
    assert_false(bench_metric_value(PAGE, "kiln_nothing", "a", &v));
    assert_false(bench_metric_value("", "kiln_kv_used_bytes", "a", &v));
    /* no trailing newline, CRLF */
    assert_true(bench_metric_value("m{model=\"a\"} 5\r\nm{model=\"b\"} 6", "m", "b", &v));
    assert_true(v == 6);
}

typedef struct sink {
    char text[256];
    size_t len;
    int outputs;
} sink;

static void on_text(void *user, const char *t, size_t n) {
    sink *s = user;
    assert_true(s->len + n < sizeof s->text);
    memcpy(s->text + s->len, t, n);
    s->len += n;
    s->text[s->len] = 0;
}

static void on_output(void *user) {
    ((sink *)user)->outputs++;
}

static void test_sse_text(void **state) {
    (void)state;
    static const char S[] = "data: {\"choices\":[{\"text\":\"Once\"}]}\n\n"
                            "data: {\"choices\":[{\"text\":\"\"}]}\n\n"
                            "data: {\"choices\":[{\"delta\":{\"content\":\" upon\"}}]}\n\n"
                            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2}}\n\n"
                            "data: [DONE]\n\n";
    sink s = {0};
    bench_sse p = {.on_text = on_text, .on_output = on_output, .user = &s};
    bench_sse_reset(&p);
    for (size_t i = 0; i < sizeof S - 1; i += 7) assert_true(bench_sse_feed(&p, S + i, i + 7 <= sizeof S - 1 ? 7 : sizeof S - 1 - i));
    assert_true(bench_sse_finish(&p));
    assert_string_equal(s.text, "Once upon");
    assert_int_equal(s.outputs, 2);
    assert_int_equal(p.usage_prompt_tokens, 11);
    assert_int_equal(p.usage_tokens, 2);
    bench_sse_reset(&p);
    assert_int_equal(p.usage_prompt_tokens, -1);
    bench_sse_free(&p);
}

static void test_scenario_names(void **state) {
    (void)state;
    bench_scenario s;
    assert_true(bench_scenario_parse("prefix", &s) && s == BENCH_PREFIX);
    assert_true(bench_scenario_parse("shared-prefix", &s) && s == BENCH_SHARED_PREFIX);
    assert_true(bench_scenario_parse("spec", &s) && s == BENCH_SPEC);
    assert_false(bench_scenario_parse("shared_prefix", &s));
    for (int i = 0; i <= BENCH_SCENARIO_LAST; i++) {
        assert_true(bench_scenario_parse(bench_scenario_name((bench_scenario)i), &s));
        assert_int_equal((int)s, i);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metric_select),
        cmocka_unit_test(test_sse_text),
        cmocka_unit_test(test_scenario_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
