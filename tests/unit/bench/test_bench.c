/* test_bench.c — the pieces of `kiln bench server` that need no server: the
 * incremental SSE parser (any split of the bytes gives the same events; the
 * bounds; malformed streams), the statistics (against numpy's percentile
 * and std(ddof=1) on the same sample) and the prompt sets. The load loop
 * itself is tested against a real server in
 * tests/integration/test_bench_server.py. */
#include "testutil.h"
#include "kiln/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stream shaped like kiln's and OpenAI's: role-less completion chunks, an
 * empty-text finish chunk, a usage chunk, [DONE]; plus a comment, an event:
 * field and an empty text that must not count, and a NUL character (a
 * random-weight model's <0x00> byte token, escaped as \u0000 by the server). */
static const char STREAM[] =
    ": keep-alive\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\"Once\",\"finish_reason\":null}],\"usage\":null}\n\n"
    "event: message\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\" upon a\",\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}]}\n\n"
    "data:{\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\" time \\u00e9\",\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\"\\u0000\",\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

typedef struct counter {
    int calls;
} counter;

static void count_cb(void *user) {
    ((counter *)user)->calls++;
}

static void parse_split(const char *s, size_t n, size_t piece, bench_sse *p, counter *c) {
    bench_sse_reset(p);
    p->on_output = count_cb;
    p->user = c;
    c->calls = 0;
    for (size_t i = 0; i < n; i += piece) assert_true(bench_sse_feed(p, s + i, i + piece <= n ? piece : n - i));
}

static void test_sse_any_split(void **state) {
    (void)state;
    bench_sse p = {0};
    counter c;
    size_t n = strlen(STREAM);
    for (size_t piece = 1; piece <= n; piece = piece < 16 ? piece + 1 : piece * 2) {
        parse_split(STREAM, n, piece, &p, &c);
        assert_true(bench_sse_finish(&p));
        assert_true(p.done);
        assert_int_equal(p.events, 4);
        assert_int_equal(c.calls, 4);
        assert_int_equal(p.usage_tokens, 7);
    }
    /* CRLF line endings, chat deltas, no usage chunk, no final newline */
    const char *chat = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n"
                       "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n"
                       "data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\r\n\r\n"
                       "data: [DONE]";
    parse_split(chat, strlen(chat), 5, &p, &c);
    assert_true(bench_sse_finish(&p));
    assert_int_equal(p.events, 2);
    assert_int_equal(p.usage_tokens, -1);
    bench_sse_free(&p);
}

static void expect_fail(const char *s, const char *msg_part, bool at_finish) {
    bench_sse p = {0};
    bench_sse_reset(&p);
    bool ok = bench_sse_feed(&p, s, strlen(s));
    if (at_finish) {
        assert_true(ok);
        assert_false(bench_sse_finish(&p));
    } else {
        assert_false(ok);
        assert_false(bench_sse_feed(&p, "data: [DONE]\n", 13)); /* stays failed */
    }
    assert_true(p.failed);
    if (!strstr(p.msg, msg_part)) fail_msg("message '%s' lacks '%s'", p.msg, msg_part);
    bench_sse_free(&p);
}

static void test_sse_malformed(void **state) {
    (void)state;
    expect_fail("data: {\"choices\":[{\"text\":\"a\"}]}\n\n", "without data: [DONE]", true);
    expect_fail("data: {\"choices\":[{\"text\":\"a\"}\n\n", "not a JSON object", false);
    expect_fail("data: [1, 2]\n\n", "not a JSON object", false);
    expect_fail("data: {\"error\":{\"message\":\"engine exploded\"}}\n\n", "engine exploded", false);
    expect_fail("data: [DONE]\n\ndata: {\"choices\":[]}\n\n", "after [DONE]", false);
}

static void test_sse_bounds(void **state) {
    (void)state;
    bench_sse p = {0};
    bench_sse_reset(&p);
    /* a line one byte over the limit, fed in pieces, without a newline */
    char *big = malloc(BENCH_MAX_LINE + 1);
    assert_non_null(big);
    memset(big, 'a', BENCH_MAX_LINE + 1);
    assert_true(bench_sse_feed(&p, big, BENCH_MAX_LINE));
    assert_false(bench_sse_feed(&p, big, 1));
    assert_non_null(strstr(p.msg, "line over the limit"));
    assert_true(p.cap <= BENCH_MAX_LINE + 1);
    /* a body over the limit made of short comment lines */
    bench_sse_reset(&p);
    for (size_t i = 0; i < BENCH_MAX_LINE; i++) big[i] = (i % 64 == 63) ? '\n' : ':';
    size_t fed = 0;
    bool ok = true;
    while (ok && fed <= BENCH_MAX_BODY) {
        ok = bench_sse_feed(&p, big, BENCH_MAX_LINE);
        fed += BENCH_MAX_LINE;
    }
    assert_false(ok);
    assert_true(fed > BENCH_MAX_BODY);
    assert_non_null(strstr(p.msg, "body over the limit"));
    free(big);
    bench_sse_free(&p);
    bench_sse_free(&p); /* idempotent */
}

static void test_stats_numpy(void **state) {
    (void)state;
    /* numpy: np.percentile(v, [50, 75, 90, 95, 99, 99.9]), v.mean(), v.std(ddof=1) */
    double v[] = {0.31, 0.02, 1.7, 0.45, 0.45, 0.9, 0.12, 3.3, 0.05, 0.61, 0.77};
    bench_stats s;
    bench_stats_compute(v, sizeof v / sizeof v[0], &s);
    assert_int_equal(s.n, 11);
    assert_float_equal(s.p50, 0.45, 1e-12);
    assert_float_equal(s.p75, 0.835, 1e-12);
    assert_float_equal(s.p90, 1.7, 1e-12);
    assert_float_equal(s.p95, 2.5, 1e-12);
    assert_float_equal(s.p99, 3.1400000000000006, 1e-12);
    assert_float_equal(s.p999, 3.284000000000003, 1e-12);
    assert_float_equal(s.min, 0.02, 0);
    assert_float_equal(s.max, 3.3, 0);
    assert_float_equal(s.mean, 0.7890909090909091, 1e-12);
    assert_float_equal(s.stddev, 0.9604213090665424, 1e-12);
    double one = 0.25;
    bench_stats_compute(&one, 1, &s);
    assert_true(s.p50 == 0.25 && s.p999 == 0.25 && s.stddev == 0);
    bench_stats_compute(NULL, 0, &s);
    assert_int_equal(s.n, 0);
}

static void test_dataset(void **state) {
    (void)state;
    bench_dataset a, b, c;
    kn_err err = {0};
    assert_int_equal(bench_dataset_synth(4, 10, 32, 7, &a, &err), KN_OK);
    assert_int_equal(bench_dataset_synth(4, 10, 32, 7, &b, &err), KN_OK);
    assert_int_equal(bench_dataset_synth(4, 10, 32, 8, &c, &err), KN_OK);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(a.items[i].text, b.items[i].text);
        int spaces = 0;
        for (const char *p = a.items[i].text; *p; p++) spaces += *p == ' ';
        assert_int_equal(spaces, 9);
        assert_int_equal(a.items[i].max_tokens, 32);
    }
    assert_string_not_equal(a.items[0].text, a.items[1].text);
    assert_string_not_equal(a.items[0].text, c.items[0].text);
    bench_dataset_free(&a);
    bench_dataset_free(&b);
    bench_dataset_free(&c);

    char dir[256], path[300];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/d.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"prompt\": \"hello\", \"max_tokens\": 3}\n\n  \r\n{\"prompt\": \"w\\u00f6rld\"}", f);
    fclose(f);
    assert_int_equal(bench_dataset_load(path, 9, &a, &err), KN_OK);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.items[0].text, "hello");
    assert_int_equal(a.items[0].max_tokens, 3);
    assert_string_equal(a.items[1].text, "w\xc3\xb6rld");
    assert_int_equal(a.items[1].max_tokens, 9);
    bench_dataset_free(&a);

    f = fopen(path, "w");
    fputs("{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"max_tokens\": 0}\n", f);
    fclose(f);
    assert_int_equal(bench_dataset_load(path, 9, &a, &err), KN_EFORMAT);
    assert_non_null(strstr(err.msg, "d.jsonl:2"));
    assert_non_null(strstr(err.msg, "max_tokens"));
    f = fopen(path, "w");
    fclose(f);
    assert_int_equal(bench_dataset_load(path, 9, &a, &err), KN_EFORMAT);
    assert_non_null(strstr(err.msg, "no prompts"));
    tu_rmdir(dir);
}

static void test_names(void **state) {
    (void)state;
    bench_scenario s;
    assert_true(bench_scenario_parse("ramp", &s) && s == BENCH_RAMP);
    assert_true(bench_scenario_parse("latency", &s) && s == BENCH_LATENCY);
    assert_false(bench_scenario_parse("Ramp", &s));
    assert_string_equal(bench_errkind_name(BENCH_ERR_HTTP_5XX), "http_5xx");
    assert_string_equal(bench_errkind_name(BENCH_ERR_CONNECT), "connect");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_any_split), cmocka_unit_test(test_sse_malformed), cmocka_unit_test(test_sse_bounds),
        cmocka_unit_test(test_stats_numpy),   cmocka_unit_test(test_dataset),       cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
