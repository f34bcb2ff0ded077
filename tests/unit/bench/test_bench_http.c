/* test_bench_http.c — the libcurl plumbing both scenario files share
 * (src/bench/http.c): the base URL and endpoint taken from --url, the
 * request headers in their order, and the error kind of an HTTP status. */
#include "testutil.h"
#include "bench/internal.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

static void expect_urls(const char *url, const char *base, const char *endpoint) {
    char *b = NULL, *e = NULL;
    assert_true(bench_urls(url, &b, &e));
    assert_string_equal(b, base);
    assert_string_equal(e, endpoint);
    free(b);
    free(e);
}

static void test_urls(void **state) {
    (void)state;
    expect_urls("http://127.0.0.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/completions");
    expect_urls("http://h:1/", "http://h:1", "http://h:1/v1/completions");
    expect_urls("http://h:1///", "http://h:1", "http://h:1/v1/completions");
    expect_urls("http://h:1/v1", "http://h:1", "http://h:1/v1/completions");
    expect_urls("http://h:1/v1/", "http://h:1", "http://h:1/v1/completions");
    expect_urls("https://h/api/v1", "https://h/api", "https://h/api/v1/completions");
    expect_urls("http://h/v1/v1", "http://h/v1", "http://h/v1/v1/completions"); /* one /v1 only */
    expect_urls("http://h/xv1", "http://h/xv1", "http://h/xv1/v1/completions"); /* not a /v1 segment */
    expect_urls("", "", "/v1/completions");
}

/* The headers of a list, one string joined by "|". */
static void expect_headers(const struct curl_slist *h, const char *want) {
    char got[512] = "";
    for (; h; h = h->next) {
        if (got[0]) strcat(got, "|");
        strcat(got, h->data);
    }
    assert_string_equal(got, want);
}

static void test_headers(void **state) {
    (void)state;
    struct curl_slist *h = bench_headers(NULL, NULL);
    assert_non_null(h);
    expect_headers(h, "Content-Type: application/json|Expect:");
    curl_slist_free_all(h);
    h = bench_headers("Accept: text/event-stream", "sk-1");
    assert_non_null(h);
    expect_headers(
        h, "Content-Type: application/json|Accept: text/event-stream|Expect:|Authorization: Bearer sk-1");
    curl_slist_free_all(h);
    h = bench_headers(NULL, "");
    assert_non_null(h);
    expect_headers(h, "Content-Type: application/json|Expect:|Authorization: Bearer ");
    curl_slist_free_all(h);
}

static void test_classify_status(void **state) {
    (void)state;
    assert_int_equal(bench_classify_status(400), BENCH_ERR_HTTP_4XX);
    assert_int_equal(bench_classify_status(429), BENCH_ERR_HTTP_4XX);
    assert_int_equal(bench_classify_status(499), BENCH_ERR_HTTP_4XX);
    assert_int_equal(bench_classify_status(500), BENCH_ERR_HTTP_5XX);
    assert_int_equal(bench_classify_status(503), BENCH_ERR_HTTP_5XX);
    assert_int_equal(bench_classify_status(599), BENCH_ERR_HTTP_5XX);
    assert_int_equal(bench_classify_status(100), BENCH_ERR_HTTP_OTHER);
    assert_int_equal(bench_classify_status(302), BENCH_ERR_HTTP_OTHER);
    assert_int_equal(bench_classify_status(600), BENCH_ERR_HTTP_OTHER);
    assert_int_equal(bench_classify_status(0), BENCH_ERR_HTTP_OTHER);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_classify_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
