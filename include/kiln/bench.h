/*
 * kiln/bench.h — load generation against an OpenAI-compatible HTTP server
 * (`kiln bench server`): the latency, throughput and load-ramp scenarios,
 * their statistics, and the JSON / text / HTML reports.
 *
 * Owns: the whole client side of a benchmark run. One process, one thread:
 * a libcurl multi handle drives many concurrent streaming POSTs to
 * <url>/v1/completions ("stream": true, "stream_options.include_usage":
 * true); each response is parsed incrementally as Server-Sent Events so the
 * first token and every following token are timed when their bytes arrive.
 * It works with kiln serve, llama-server, vLLM or any server speaking that
 * API; kiln-only extras (GET /cache/stats) are optional.
 *
 * Format read from the network (untrusted, every length bounded):
 *  - SSE: lines ended by "\n" (a trailing "\r" is dropped); "data: X" lines
 *    carry JSON chunks, "data: [DONE]" ends the stream, lines starting with
 *    ":" are comments, other fields (event:, id:, retry:) are ignored. A line
 *    longer than BENCH_MAX_LINE or a body longer than BENCH_MAX_BODY is a
 *    "protocol" error. A chunk counts as one output event when its
 *    choices[0].text (or choices[0].delta.content) is a non-empty string; the
 *    request's output token count is usage.completion_tokens when the server
 *    sends it, else the number of such events.
 *  - An "error" object inside the stream, a stream that ends without
 *    [DONE], or unparsable chunk JSON is a "protocol" error.
 *
 * Timing (seconds, CLOCK_MONOTONIC): a request starts when it is handed to
 * libcurl. TTFT = first output event - start; ITL samples = the gaps between
 * consecutive output events of a request; e2e = end of the transfer - start.
 * A server may put several tokens in one chunk, so ITL is per chunk; TPOT
 * (time per output token) = (e2e - TTFT) / (tokens - 1) uses the token count
 * and is defined for requests with at least 2 tokens.
 * Only successful requests (HTTP 200, clean stream) contribute samples.
 *
 * Scenarios:
 *  - latency: sequential requests, first with "cache": false in the body
 *    (kiln's response cache; other servers ignore the field), then the same
 *    requests again without it. Top-level figures cover both phases; each
 *    phase is also reported on its own.
 *  - throughput: closed loop with `concurrency` requests always in flight.
 *  - ramp: open loop; Poisson arrivals whose rate rises in `ramp_steps`
 *    equal steps from initial_rate to final_rate over ramp_duration. Each
 *    step is summarised on its own (by the arrival time of its requests);
 *    the knee is the first step whose p95 e2e (or TTFT, when that target is
 *    set) or error rate breaks the SLA. A step without requests breaks
 *    nothing.
 *  - prefix (prefix caching): `requests` rounds, each with a fresh prefix of
 *    `prefix_tokens` pseudo-random common words (about one token a word; the
 *    server's usage.prompt_tokens is reported): a cold request (prefix +
 *    suffix A), `between` requests with other prefixes of the same length,
 *    then a warm request (same prefix + suffix B). All carry "cache": false
 *    (kiln's response cache must not answer) and temperature 0. Reports the
 *    medians over rounds of the cold, between and warm TTFT and of the
 *    per-round ratio warm / cold. Record steps: 0 cold, 1 between, 2 warm.
 *  - shared-prefix (KV sharing): `concurrency` streaming requests at once
 *    sharing a `prefix_tokens` system prefix with different endings
 *    (ignore_eos); while they run, GET <base>/metrics every ~50 ms and keep
 *    the peaks of kiln_kv_used_bytes and kiln_kv_logical_bytes. kiln only:
 *    without those series the figures are absent (null), not an error.
 *  - spec (speculative decoding): `requests` sequential greedy requests
 *    (temperature 0, ignore_eos) on a repetitive raw-completion prompt (a
 *    ~60-word paragraph, then "Repeat the paragraph again:"), first with
 *    "speculative": "none" (record step 0) then "ngram" (step 1). Decode
 *    rate of a mode = sum of tokens / sum of (e2e - TTFT); the acceptance
 *    rate = delta of kiln_spec_accepted_tokens_total / delta of
 *    kiln_spec_draft_tokens_total over the ngram phase (absent when /metrics
 *    lacks them); "identical" compares the texts of request i in both modes.
 *  These three PASS when no request failed (the SLA fields are ignored).
 *  - cache (kiln's response cache, issue 9; cache.c): non-streamed greedy
 *    requests (temperature 0) on `requests` distinct prompts, read with
 *    their X-Cache and Server-Timing headers. Phase 1 (step 0) populates
 *    (misses); phase 2 (step 1) sends the same requests sequentially
 *    `rounds` times (L1 hits); phase 3 (step 2), `rounds` times: POST
 *    /cache/clear {"type": "response", "model", "tier": "l1"}, then the
 *    requests once (L2 hits, counted by l2.response.hits of GET
 *    /cache/stats); phase 4 (step 3) replays them with `concurrency` clients
 *    for duration_s or `requests_total` requests (L1 hits/s). Then the L1
 *    memory per entry from /cache/stats. Server-side latency = the
 *    `Server-Timing: total;dur=MS` header. Needs a kiln server with the
 *    response cache on (else bench_run fails, naming why). PASSes when every
 *    request succeeded, every answer of phases 2-4 was a hit with the text
 *    of the populate answer; the latency goals (L1 p99 < 1 ms, L2 p99 < 5 ms
 *    server-side) are reported, not enforced.
 *
 * /metrics (Prometheus text, untrusted, at most 4 MiB read): a series is
 * `name{label="v",...} value` or `name value`; '#' lines are comments. A
 * metric's value for the run's model is the series whose model label equals
 * the requested model, else the only series of that name if there is exactly
 * one (kiln may label by file id), else absent.
 *
 * SLA: the run passes when, over all its requests, p95 e2e <= sla_p95_s,
 * p95 TTFT <= sla_ttft_p95_s (when > 0) and errors / requests <=
 * sla_max_error_rate. A request "meets the SLA" (goodput) when it succeeded
 * with e2e <= sla_p95_s and TTFT <= sla_ttft_p95_s (when set).
 */
#ifndef KILN_BENCH_H
#define KILN_BENCH_H

#include "kiln/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_LINE (1u << 20)          /* longest SSE line accepted */
#define BENCH_MAX_BODY (64u << 20)         /* longest response body accepted */
#define BENCH_MAX_ERRBODY 2048u            /* bytes of an error body kept */
#define BENCH_MAX_DATASET (256u << 20)     /* largest --dataset file */
#define BENCH_MAX_INFLIGHT 512             /* concurrent requests, any scenario */

/* ---- statistics ----------------------------------------------------------- */

typedef struct bench_stats {
    size_t n; /* samples; every other field is 0 when n == 0 */
    double p50, p75, p90, p95, p99, p999;
    double min, max, mean, stddev; /* stddev: sample (n - 1) */
} bench_stats;

/* Computes the statistics of v[0..n). Sorts v in place. Percentiles
 * interpolate linearly between order statistics (numpy's default). */
void bench_stats_compute(double *v, size_t n, bench_stats *out);

/* ---- SSE parser ----------------------------------------------------------- */

/* Incremental parser of one OpenAI completion stream. Feed it bytes as they
 * arrive, in pieces of any size; it calls on_output(user) for every chunk
 * carrying non-empty text. Owns its line buffer (grown up to BENCH_MAX_LINE). */
typedef struct bench_sse {
    char *line; /* [cap] owned */
    size_t len, cap;
    size_t body_bytes;
    bool done;              /* saw data: [DONE] */
    bool failed;            /* a protocol error; see msg */
    long long usage_tokens; /* usage.completion_tokens, -1 until seen */
    long long events;       /* chunks with non-empty text */
    char msg[160];
    long long usage_prompt_tokens; /* usage.prompt_tokens, -1 until seen */
    void (*on_output)(void *user);
    /* optional, may be NULL: the text of every output chunk, before on_output */
    void (*on_text)(void *user, const char *text, size_t len);
    void *user;
} bench_sse;

/* Resets p for a new stream, keeping its buffer. */
void bench_sse_reset(bench_sse *p);
/* Parses len bytes. Returns false once the stream is malformed (p->failed
 * and p->msg say why); later calls then return false at once. */
bool bench_sse_feed(bench_sse *p, const char *data, size_t len);
/* Call at end of body: a last line without "\n" is processed. Returns false
 * on a protocol error, including a stream that never sent [DONE]. */
bool bench_sse_finish(bench_sse *p);
void bench_sse_free(bench_sse *p); /* frees the buffer; accepts a zeroed p */

/* ---- configuration ---------------------------------------------------------- */

typedef enum bench_scenario {
    BENCH_LATENCY = 0,
    BENCH_THROUGHPUT,
    BENCH_RAMP,
    BENCH_PREFIX,
    BENCH_SHARED_PREFIX,
    BENCH_SPEC,
    BENCH_CACHE,
} bench_scenario;
#define BENCH_SCENARIO_LAST BENCH_CACHE

const char *bench_scenario_name(bench_scenario s);
bool bench_scenario_parse(const char *s, bench_scenario *out);

/* One prompt of a dataset. */
typedef struct bench_prompt {
    char *text; /* owned by the bench_dataset */
    int max_tokens; /* > 0 */
} bench_prompt;

typedef struct bench_dataset {
    bench_prompt *items; /* [n] owned */
    size_t n;
} bench_dataset;

/* Reads a JSONL file: one {"prompt": string, "max_tokens": int (optional,
 * else default_max_tokens)} per non-empty line. Errors name the line. */
kn_status bench_dataset_load(const char *path, int default_max_tokens, bench_dataset *out, kn_err *err);
/* Makes n prompts of `words` pseudo-random English words each (seeded). */
kn_status bench_dataset_synth(size_t n, int words, int max_tokens, uint64_t seed, bench_dataset *out, kn_err *err);
void bench_dataset_free(bench_dataset *d); /* accepts a zeroed d */

typedef struct bench_config {
    const char *url;     /* base URL, e.g. http://127.0.0.1:8080 (a trailing /v1 is accepted) */
    const char *model;   /* "model" of every request */
    const char *api_key; /* NULL: no Authorization header */
    bench_scenario scenario;
    const bench_dataset *prompts; /* borrowed; cycled through; n >= 1 */
    bool ignore_eos;
    uint64_t seed;       /* request i carries "seed": seed + i; also seeds the arrivals */
    double duration_s;   /* > 0: stop issuing after this long (latency: per phase) */
    long long requests;  /* > 0: stop after this many (latency: per phase) */
    int concurrency;     /* throughput, shared-prefix: requests in flight */
    int prefix_tokens;   /* prefix, shared-prefix: words of the shared prefix (>= 1) */
    int between;         /* prefix: other conversations between cold and warm (>= 0) */
    double initial_rate, final_rate, ramp_duration_s; /* ramp, requests/s */
    int ramp_steps;      /* ramp: >= 1 */
    double sla_p95_s;    /* > 0 */
    double sla_ttft_p95_s;     /* 0: no TTFT target */
    double sla_max_error_rate; /* in [0, 1] */
    double timeout_s;          /* per request, > 0 */
    double connect_timeout_s;  /* > 0 */
    bool progress;             /* progress line on stderr */
    int rounds;                /* cache: passes of the L1 and of the L2 phase (1..1000) */
    long long requests_total;  /* cache: throughput-phase requests (0: for duration_s) */
} bench_config;

/* ---- results -------------------------------------------------------------- */

typedef enum bench_errkind {
    BENCH_ERR_CONNECT = 0, /* connection refused / unreachable / connect timeout */
    BENCH_ERR_HTTP_4XX,
    BENCH_ERR_HTTP_5XX,
    BENCH_ERR_TIMEOUT,  /* the per-request timeout */
    BENCH_ERR_NETWORK,  /* connection reset or closed mid-response */
    BENCH_ERR_PROTOCOL, /* bad SSE, missing [DONE], error chunk, oversized data */
    BENCH_ERR_HTTP_OTHER, /* 1xx/3xx or other non-200 status */
    BENCH_ERR_DROPPED,  /* ramp: arrival while BENCH_MAX_INFLIGHT were in flight */
    BENCH_ERR_OTHER,    /* any other libcurl failure */
    BENCH_ERR_COUNT
} bench_errkind;

const char *bench_errkind_name(bench_errkind k);

/* One finished request. */
typedef struct bench_record {
    double t_start, t_end; /* seconds since the run began */
    double ttft, e2e; /* valid when ok (ttft < 0: no output event) */
    double tpot;      /* valid when ok and >= 0 (see above) */
    long long out_tokens;
    long long prompt_tokens; /* usage.prompt_tokens, -1 when not sent */
    int step;  /* ramp step, latency phase (0 cache off, 1 cache on), prefix
                  (0 cold, 1 between, 2 warm), spec (0 none, 1 ngram), else 0 */
    bool ok;
    bool met_sla;
    int8_t err; /* bench_errkind when !ok */
} bench_record;

/* Figures over a set of records. */
typedef struct bench_summary {
    long long requests, ok, errors[BENCH_ERR_COUNT];
    bench_stats ttft, itl, e2e, tpot;
    long long out_tokens;
    double duration_s; /* first start to last end */
    double output_tok_s, requests_s, goodput, error_rate;
    bool sla_pass;
} bench_summary;

typedef struct bench_step {
    double rate;       /* offered requests/s */
    double t0, t1;     /* window of arrivals, seconds since the run began */
    bench_summary s;
    bool breaks_sla;
} bench_step;

/* prefix scenario: one round (TTFTs in seconds, < 0 when that request failed) */
typedef struct bench_prefix_round {
    double cold_ttft, warm_ttft, between_ttft_p50, ratio; /* ratio < 0 unless both succeeded */
    long long prompt_tokens; /* usage.prompt_tokens of the cold request, -1 if unknown */
} bench_prefix_round;

/* Figures of the kiln-oriented scenarios; a `has_*` flag false means absent. */
typedef struct bench_extra {
    /* prefix: medians over the rounds that have them */
    bench_prefix_round *rounds; /* [n_rounds] owned */
    int n_rounds;
    bool has_prefix;
    double cold_ttft, warm_ttft, between_ttft, ratio;
    long long prefix_prompt_tokens; /* median over rounds, -1 if unknown */
    /* shared-prefix */
    bool has_kv;
    double kv_used_peak, kv_logical_peak, kv_used_at_logical_peak; /* bytes */
    int kv_polls; /* successful /metrics reads that had both series */
    /* spec: [0] "none", [1] "ngram" */
    bool has_spec_rate[2];
    double spec_tok_s[2];
    bool has_accept;
    double spec_draft, spec_accepted, spec_accept_rate;
    int spec_identical; /* 1 same texts, 0 differ, -1 unknown (a request failed) */
    /* cache: see bench_cache_figures */
    struct bench_cache_figures *cache; /* owned, NULL for other scenarios */
} bench_extra;

/* Figures of the cache scenario. Latencies in milliseconds; a bench_stats
 * with n == 0 means no sample. */
typedef struct bench_cache_figures {
    long long populate_misses, populate_hits; /* X-Cache of phase 1 (hits: cached by an earlier run) */
    bench_stats l1_server_ms, l1_client_ms;   /* phase 2, answers that were hits */
    bool has_l2;                              /* false: the server has no L2 (phase 3 skipped) */
    bench_stats l2_server_ms, l2_client_ms;   /* phase 3 */
    long long l2_requests;                    /* phase 3 requests sent */
    long long l2_hits;                        /* growth of l2.response.hits over phase 3 */
    bench_stats thr_server_ms, thr_client_ms; /* phase 4 */
    long long thr_requests, thr_hits;
    double thr_duration_s, hits_per_s; /* first start to last end of phase 4; hits / that */
    long long not_hits[3];  /* phases 2, 3, 4: answers that were not X-Cache hit */
    long long mismatched;   /* hits whose text differs from the populate answer */
    long long no_timing;    /* 200 answers without a Server-Timing total */
    bool has_mem;           /* the L1 figures below, from /cache/stats after phase 4 */
    long long entries, bytes, entry_overhead; /* l1.response entries, bytes; l1_entry_overhead_bytes */
    double text_bytes;      /* mean bytes of the populate answers' text */
} bench_cache_figures;

typedef struct bench_result {
    bench_config cfg; /* copy; its pointers stay borrowed from the caller */
    bench_record *recs; /* [n_recs] owned */
    size_t n_recs;
    double *itl;  /* [n_itl] owned, every inter-token gap */
    int *itl_step; /* [n_itl] owned, the step/phase of each gap */
    size_t n_itl;
    double *tok_per_s; /* [n_secs] owned: output events in each second of the run */
    size_t n_secs;
    bench_summary all;
    bench_step *steps; /* [n_steps] owned: ramp steps, or the 2 latency phases */
    int n_steps;
    int knee; /* ramp: index of the first step that breaks the SLA, or -1 */
    bool has_cache_rate;
    double cache_hit_rate;
    char aborted[200]; /* non-empty when the run stopped early, and why */
    char first_error[300]; /* the first failure seen, for the log */
    bench_extra x; /* prefix, shared-prefix, spec */
} bench_result;

/* Runs the scenario. On KN_OK *out is a result the caller frees with
 * bench_result_destroy; individual request failures are part of the result,
 * not a failure of the call. Fails on bad configuration or libcurl setup.
 * curl_global_init must have been called by the program. */
kn_status bench_run(const bench_config *cfg, bench_result **out, kn_err *err);
void bench_result_destroy(bench_result *r); /* accepts NULL */

/* Reads the dur= parameter (milliseconds, finite, >= 0) of `metric` in a
 * Server-Timing header value of len bytes (e.g. "total;dur=0.42, db;dur=3";
 * names compare case-insensitively). False when absent or malformed. */
bool bench_server_timing(const char *value, size_t len, const char *metric, double *ms);

/* The value of metric `name` for `model` in a Prometheus text page (see
 * the top comment for the rule); false when absent or unparsable. */
bool bench_metric_value(const char *page, const char *name, const char *model, double *out);

/* ---- reports -------------------------------------------------------------- */

/* The JSON document (see docs/performance.md); caller owns the reference. */
json_t *bench_result_json(const bench_result *r);
/* A human summary ending in "SLA: PASS ..." or "SLA: FAIL ..." (prefix,
 * shared-prefix, spec: "RESULT: PASS ..." or "RESULT: FAIL ..."). */
void bench_result_print(const bench_result *r, FILE *f);
/* Writes a self-contained HTML file with inline SVG plots. */
kn_status bench_report_html(const bench_result *r, const char *path, kn_err *err);

#endif
