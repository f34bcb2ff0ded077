/*
 * internal.h — what the files of src/bench share and nothing outside
 * includes: the libcurl plumbing both scenario files use (http.c), the
 * scenario files' entry points that bench_run dispatches to (bench.c), and
 * the cache scenario's reports that report.c hands over to.
 *
 * The files: bench.c checks a configuration and dispatches; run.c runs the
 * streamed scenarios (latency, throughput, ramp, prefix, shared-prefix,
 * spec); cache.c runs the cache scenario and reports it; http.c is the HTTP
 * client code both scenario files use; report.c, stats.c, sse.c, dataset.c
 * and prom.c as their names say. Neither scenario file uses the other.
 */
#ifndef KILN_BENCH_INTERNAL_H
#define KILN_BENCH_INTERNAL_H

#include "kiln/bench.h"

#include <stdbool.h>
#include <stddef.h>

struct curl_slist;

/* ---- http.c ----------------------------------------------------------------- */

/* Splits a --url into *base (without trailing "/" or a final "/v1") and
 * *endpoint (base + "/v1/completions"), both malloc'd for the caller to
 * free (also on failure). False when memory runs out. */
bool bench_urls(const char *url, char **base, char **endpoint);

/* The headers of every request of a run: "Content-Type: application/json",
 * then `accept` (a whole "Accept: ..." line) when not NULL, "Expect:" (no
 * 100-continue), and "Authorization: Bearer KEY" when api_key is not NULL.
 * NULL when memory runs out; free with curl_slist_free_all. */
struct curl_slist *bench_headers(const char *accept, const char *api_key);

/* Sets up a libcurl easy handle (a CURL *, passed as void * so that this
 * header does not need curl.h) for POSTs to url with hdrs: c's timeouts,
 * HTTP/1.1, TCP_NODELAY, no signals, http and https only. The body goes to
 * write_fn(user), the headers to header_fn(user) when it is non-NULL,
 * CURLOPT_PRIVATE is user, and libcurl's messages go to errbuf
 * (CURL_ERROR_SIZE bytes). url, hdrs and errbuf must outlive the handle.
 * On failure *out is NULL. */
typedef size_t (*bench_curl_cb)(char *data, size_t size, size_t nmemb, void *user);
kn_status bench_easy_post(void **out, const bench_config *c, const char *url, const void *hdrs,
                          bench_curl_cb write_fn, bench_curl_cb header_fn, void *user, char *errbuf,
                          kn_err *err);

/* The error kind of a failed libcurl transfer (code: a CURLcode; handle:
 * the CURL * that failed, for its connect time). */
bench_errkind bench_classify_curl(int code, void *handle);
/* The error kind of an answer with HTTP status `status` (not 200). */
bench_errkind bench_classify_status(long status);

/* ---- the scenario files, called by bench_run (bench.c) after check_config ---- */

/* latency, throughput, ramp, prefix, shared-prefix, spec (run.c). Same
 * contract as bench_run. */
kn_status bench_stream_run(const bench_config *cfg, bench_result **out, kn_err *err);
/* cache (cache.c). Same contract as bench_run. */
kn_status bench_cache_run(const bench_config *cfg, bench_result **out, kn_err *err);

/* The reports of the cache scenario (cache.c); bench_result_json,
 * bench_result_print and bench_report_html (report.c) hand over to them. */
json_t *bench_cache_json(const bench_result *r);
void bench_cache_print(const bench_result *r, FILE *f);
kn_status bench_cache_html(const bench_result *r, const char *path, kn_err *err);

#endif
