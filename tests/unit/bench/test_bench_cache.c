/* test_bench_cache.c — the parts of the cache scenario that need no server:
 * the Server-Timing reader (bench_server_timing) on well-formed, spaced,
 * multi-metric and malformed values, and the "cache" scenario name. The
 * scenario itself runs against the real server in
 * tests/integration/test_bench_cache.py. */
#include "testutil.h"
#include "kiln/bench.h"

#include <string.h>

static bool timing(const char *v, const char *metric, double *ms) {
    return bench_server_timing(v, strlen(v), metric, ms);
}

static void test_server_timing(void **state) {
    (void)state;
    double ms = -1;
    assert_true(timing("total;dur=0.123", "total", &ms));
    assert_true(ms == 0.123);
    assert_true(timing("  TOTAL ; dur=12 \r\n", "total", &ms)); /* names case-insensitive, spaces trimmed */
    assert_true(ms == 12);
    assert_true(
        timing("db;dur=3.5, total;desc=\"all\";dur=7.25", "total", &ms)); /* not the first metric or param */
    assert_true(ms == 7.25);
    assert_true(timing("db;dur=3.5,total;dur=1e-3", "db", &ms));
    assert_true(ms == 3.5);
    ms = -1;
    assert_false(timing("totals;dur=1", "total", &ms)); /* another name */
    assert_false(timing("total", "total", &ms));        /* no duration */
    assert_false(timing("total;dur=", "total", &ms));
    assert_false(timing("total;dur=abc", "total", &ms));
    assert_false(timing("total;dur=5ms", "total", &ms));
    assert_false(timing("total;dur=-1", "total", &ms));
    assert_false(timing("total;dur=nan", "total", &ms));
    assert_false(timing("", "total", &ms));
    assert_true(ms == -1); /* untouched by failures */
    /* the length bounds the value: nothing past it is read */
    const char v[] = "total;dur=42.5junk";
    assert_true(bench_server_timing(v, strlen("total;dur=42.5"), "total", &ms));
    assert_true(ms == 42.5);
}

static void test_cache_scenario_name(void **state) {
    (void)state;
    bench_scenario s;
    assert_true(bench_scenario_parse("cache", &s) && s == BENCH_CACHE);
    assert_string_equal(bench_scenario_name(BENCH_CACHE), "cache");
    assert_int_equal(BENCH_SCENARIO_LAST, BENCH_CACHE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_timing),
        cmocka_unit_test(test_cache_scenario_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
