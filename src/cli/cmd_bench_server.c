/*
 * cmd_bench_server.c — `kiln bench server`: drives an OpenAI-compatible server
 * (kiln or another) with streaming completions and reports latency,
 * throughput, goodput and an SLA verdict (src/bench does the work).
 *
 * Also the kiln-oriented scenarios prefix (prefix-cache TTFT), shared-prefix
 * (KV bytes of concurrent requests sharing a system prompt) and spec
 * (speculative decoding speedup and acceptance), and cache (kiln's response
 * cache: L1 / L2 hit latency from Server-Timing, hits/s, memory per entry).
 *
 * Exit status: 0 SLA PASS, 2 SLA FAIL, 1 the run failed (bad options, no
 * request succeeded, an output file could not be written). Usage errors are
 * 1 here, not 2, so that 2 always means an SLA failure. prefix,
 * shared-prefix and spec PASS unless a request failed. cache exits 0 unless
 * the run failed (1): its latency goals are informational.
 */
#include "kiln/bench.h"
#include "cli.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln bench server --url URL --model NAME --scenario SCENARIO [options]\n\n"
            "Drives an OpenAI-compatible server with streaming POST /v1/completions requests\n"
            "(libcurl multi, one process) and reports TTFT, inter-token and end-to-end latency\n"
            "(p50/p75/p90/p95/p99/p99.9, min, max, mean, stddev), output tok/s, requests/s,\n"
            "goodput (requests/s meeting the SLA), errors by kind and a PASS/FAIL line.\n\n"
            "scenarios:\n"
            "  latency     sequential: the requests once with \"cache\": false, then again with the cache allowed\n"
            "  throughput  --concurrency requests always in flight, no rate limit\n"
            "  ramp        open-loop Poisson arrivals rising from --initial-rate to --final-rate over\n"
            "              --ramp-duration in --ramp-steps steps; reports the knee where the SLA breaks\n"
            "  prefix      prefix caching: per round (--requests, default 3) a cold request with a fresh\n"
            "              --prefix-tokens prefix, --between other conversations, then a warm request with\n"
            "              the same prefix and another suffix; reports the median cold, between and warm\n"
            "              TTFT and warm/cold (kiln's issue target: <= 3%%). All with \"cache\": false,\n"
            "              temperature 0, ignore_eos, max_tokens default 8\n"
            "  shared-prefix  --concurrency (default 16) streaming requests at once sharing a\n"
            "              --prefix-tokens system prompt; polls GET /metrics every ~50 ms for the peaks of\n"
            "              kiln_kv_used_bytes and kiln_kv_logical_bytes (kiln only; null elsewhere);\n"
            "              ignore_eos, max_tokens default 64\n"
            "  spec        speculative decoding: --requests (default 3) greedy requests repeating a\n"
            "              paragraph, with \"speculative\": \"none\" then \"ngram\"; reports decode tok/s\n"
            "              (tokens / (e2e - TTFT)) of both, the speedup, the acceptance rate from /metrics\n"
            "              (kiln_spec_*_tokens_total deltas; null elsewhere) and whether the texts are\n"
            "              identical; ignore_eos, max_tokens default 128\n"
            "  prefix, shared-prefix and spec PASS unless a request failed (--sla-* do not apply)\n"
            "  cache       kiln's response cache, non-streamed greedy requests on --requests (default 200)\n"
            "              distinct prompts: populate (misses), --rounds (default 3) sequential passes of\n"
            "              L1 hits, --rounds x (POST /cache/clear of L1, one pass of L2 hits), then\n"
            "              --concurrency (default 16) clients replaying them for --duration (default 10)\n"
            "              or --requests-total; reports server-side (Server-Timing) and client latency\n"
            "              p50/p90/p99/max, hits/s and L1 bytes per entry, with the goals L1 p99 < 1 ms\n"
            "              and L2 p99 < 5 ms as informational PASS/FAIL lines; max_tokens default 32.\n"
            "              Fails (exit 1) on a server without the response cache, a failed request, or\n"
            "              an expected hit that was not one\n\n"
            "options:\n"
            "  --url URL              server base URL, e.g. http://127.0.0.1:8080 (required)\n"
            "  --model NAME           model name sent in each request (required)\n"
            "  --scenario S           latency, throughput, ramp, prefix, shared-prefix, spec or cache (required)\n"
            "  --requests N           latency, throughput: requests to send (latency: per phase; default 10);\n"
            "                         prefix: rounds; spec: requests per mode (default 3);\n"
            "                         cache: distinct prompts (default 200)\n"
            "  --duration S           latency, throughput: or send for S seconds (default 30 for throughput);\n"
            "                         cache: length of the concurrent phase (default 10)\n"
            "  --concurrency N        throughput: requests in flight (default 4, max %d);\n"
            "                         shared-prefix, cache: concurrent requests (default 16)\n"
            "  --rounds N             cache: passes of the L1 and of the L2 phase (default 3)\n"
            "  --requests-total N     cache: the concurrent phase sends N requests instead of --duration\n"
            "  --prefix-tokens N      prefix, shared-prefix: words of the shared prefix, about one token\n"
            "                         each on common tokenizers (default 1000)\n"
            "  --between K            prefix: other conversations between cold and warm (default 30)\n"
            "  --initial-rate R       ramp: first step, requests/s (default 1)\n"
            "  --final-rate R         ramp: last step, requests/s (default 10)\n"
            "  --ramp-duration S      ramp: total seconds (default 60)\n"
            "  --ramp-steps N         ramp: number of steps (default 5)\n"
            "  --prompt-words N       synthetic prompts of N words (default 64)\n"
            "  --max-tokens N         tokens to generate per request (default 64; prefix 8, spec 128, cache 32)\n"
            "  --dataset FILE.jsonl   prompts, one {\"prompt\": ..., \"max_tokens\": ...} per line\n"
            "  --ignore-eos           ask the server to ignore end-of-sequence (fixed-length outputs)\n"
            "  --seed N               seeds the prompts, the arrivals and each request (default 42)\n"
            "  --sla-p95 S            SLA: p95 end-to-end latency target (default 2)\n"
            "  --sla-ttft-p95 S       SLA: p95 time-to-first-token target (default none)\n"
            "  --sla-max-errors F     SLA: largest error fraction (default 0.01)\n"
            "  --api-key KEY          sends Authorization: Bearer KEY\n"
            "  --timeout S            per-request timeout (default 60)\n"
            "  --connect-timeout S    connect timeout (default 10, at most --timeout)\n"
            "                         (a run also stops early after a long series of failed requests)\n"
            "  --output FILE.json     write the JSON result\n"
            "  --report FILE.html     write an HTML report with SVG plots\n"
            "  --json                 print the JSON result on stdout instead of the text summary\n"
            "  --quiet                no progress line on stderr\n\n"
            "exit status: 0 SLA PASS, 2 SLA FAIL, 1 the run failed (cache: 0 or 1 only)\n",
            BENCH_MAX_INFLIGHT);
}

static const char *const CMD = "bench server";

static bool parse_pos(const char *flag, const char *v, double *out) {
    if (!cli_parse_float(v, out) || !(*out > 0)) {
        fprintf(stderr, "kiln bench server: %s expects a number > 0, got '%s'\n", flag, v);
        return false;
    }
    return true;
}

static bool parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    if (!cli_parse_int(v, lo, hi, out)) {
        fprintf(stderr, "kiln bench server: %s expects an integer in %lld..%lld, got '%s'\n", flag, lo, hi,
                v);
        return false;
    }
    return true;
}

static bool write_json(const char *path, json_t *doc) {
    if (json_dump_file(doc, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0) {
        fprintf(stderr, "kiln bench server: %s: cannot write the JSON result\n", path);
        return false;
    }
    return true;
}

/* What the command line asks for beyond the bench_config. */
typedef struct opts {
    bench_config c;
    const char *scenario, *dataset, *output, *report;
    long long prompt_words, max_tokens; /* max_tokens < 0: the scenario's default */
    bool conc_given;                    /* --concurrency was given */
    bool json_out;
} opts;

/* Takes flag a with its value v. False after printing why. */
static bool parse_flag(const char *a, const char *v, opts *o) {
    bench_config *c = &o->c;
    long long v64;
    bool ok = true;
    if (!strcmp(a, "--url")) c->url = v;
    else if (!strcmp(a, "--model")) c->model = v;
    else if (!strcmp(a, "--api-key")) c->api_key = v;
    else if (!strcmp(a, "--scenario")) o->scenario = v;
    else if (!strcmp(a, "--dataset")) o->dataset = v;
    else if (!strcmp(a, "--output")) o->output = v;
    else if (!strcmp(a, "--report")) o->report = v;
    else if (!strcmp(a, "--requests")) ok = parse_int(a, v, 1, 100000000, &c->requests);
    else if (!strcmp(a, "--duration")) ok = parse_pos(a, v, &c->duration_s);
    else if (!strcmp(a, "--concurrency")) {
        ok = parse_int(a, v, 1, BENCH_MAX_INFLIGHT, &v64);
        c->concurrency = (int)v64;
        o->conc_given = true;
    } else if (!strcmp(a, "--prefix-tokens")) {
        ok = parse_int(a, v, 1, 1000000, &v64);
        c->prefix_tokens = (int)v64;
    } else if (!strcmp(a, "--between")) {
        ok = parse_int(a, v, 0, 100000, &v64);
        c->between = (int)v64;
    } else if (!strcmp(a, "--initial-rate")) ok = parse_pos(a, v, &c->initial_rate);
    else if (!strcmp(a, "--final-rate")) ok = parse_pos(a, v, &c->final_rate);
    else if (!strcmp(a, "--ramp-duration")) ok = parse_pos(a, v, &c->ramp_duration_s);
    else if (!strcmp(a, "--ramp-steps")) {
        ok = parse_int(a, v, 1, 1000, &v64);
        c->ramp_steps = (int)v64;
    } else if (!strcmp(a, "--rounds")) {
        ok = parse_int(a, v, 1, 1000, &v64);
        c->rounds = (int)v64;
    } else if (!strcmp(a, "--requests-total")) ok = parse_int(a, v, 1, 1000000000, &c->requests_total);
    else if (!strcmp(a, "--prompt-words")) ok = parse_int(a, v, 1, 100000, &o->prompt_words);
    else if (!strcmp(a, "--max-tokens")) ok = parse_int(a, v, 1, 1000000, &o->max_tokens);
    else if (!strcmp(a, "--seed")) {
        ok = parse_int(a, v, 0, 0x7fffffffffffffffll, &v64);
        c->seed = (uint64_t)v64;
    } else if (!strcmp(a, "--sla-p95")) ok = parse_pos(a, v, &c->sla_p95_s);
    else if (!strcmp(a, "--sla-ttft-p95")) ok = parse_pos(a, v, &c->sla_ttft_p95_s);
    else if (!strcmp(a, "--sla-max-errors")) {
        ok = cli_parse_float(v, &c->sla_max_error_rate) && c->sla_max_error_rate >= 0 &&
             c->sla_max_error_rate <= 1;
        if (!ok)
            fprintf(stderr, "kiln bench server: --sla-max-errors expects a fraction in [0, 1], got '%s'\n",
                    v);
    } else if (!strcmp(a, "--timeout")) ok = parse_pos(a, v, &c->timeout_s);
    else if (!strcmp(a, "--connect-timeout")) ok = parse_pos(a, v, &c->connect_timeout_s);
    else {
        fprintf(stderr, "kiln bench server: unknown option '%s' (see --help)\n", a);
        return false;
    }
    return ok;
}

/* Fills *o from argv. Returns -1 to go on, else the exit status (1: usage
 * errors are 1 here, see the top of the file). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){
        .c = {
            .concurrency = 4,
            .initial_rate = 1,
            .final_rate = 10,
            .ramp_duration_s = 60,
            .ramp_steps = 5,
            .seed = 42,
            .sla_p95_s = 2,
            .sla_max_error_rate = 0.01,
            .timeout_s = 60,
            .connect_timeout_s = 10,
            .progress = true,
            .rounds = 3,
            .prefix_tokens = 1000,
            .between = 30,
        },
        .prompt_words = 64,
        .max_tokens = -1,
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--ignore-eos")) { o->c.ignore_eos = true; continue; }
        if (!strcmp(a, "--json")) { o->json_out = true; continue; }
        if (!strcmp(a, "--quiet")) { o->c.progress = false; continue; }
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "kiln bench server: unexpected argument '%s' (see --help)\n", a);
            return 1;
        }
        if (!(v = cli_flag_value(CMD, argc, argv, &i))) return 1;
        if (!parse_flag(a, v, o)) return 1;
    }
    return -1;
}

/* Checks what the options need together and applies the scenario's
 * defaults. Returns -1 to go on, else the exit status (1). */
static int resolve_opts(opts *o) {
    bench_config *c = &o->c;
    if (!c->url || !c->model || !o->scenario) {
        fprintf(stderr, "kiln bench server: needs --url, --model and --scenario (see --help)\n");
        return 1;
    }
    if (!bench_scenario_parse(o->scenario, &c->scenario)) {
        fprintf(
            stderr,
            "kiln bench server: --scenario expects latency, throughput, ramp, prefix, shared-prefix, spec or "
            "cache, got '%s'\n",
            o->scenario);
        return 1;
    }
    if (c->connect_timeout_s > c->timeout_s) c->connect_timeout_s = c->timeout_s;
    if (o->max_tokens < 0)
        o->max_tokens = c->scenario == BENCH_PREFIX  ? 8
                        : c->scenario == BENCH_SPEC  ? 128
                        : c->scenario == BENCH_CACHE ? 32
                                                     : 64;
    if ((c->scenario == BENCH_SHARED_PREFIX || c->scenario == BENCH_CACHE) && !o->conc_given)
        c->concurrency = 16;
    if (c->scenario == BENCH_CACHE) {
        if (c->requests <= 0) c->requests = 200;
        if (c->requests_total > 0 && c->duration_s > 0) {
            fprintf(stderr, "kiln bench server: give --duration or --requests-total, not both\n");
            return 1;
        }
        if (c->requests_total <= 0 && !(c->duration_s > 0)) c->duration_s = 10;
    } else if (c->requests_total > 0) {
        fprintf(stderr, "kiln bench server: --requests-total applies to --scenario cache only\n");
        return 1;
    }
    if ((c->scenario == BENCH_PREFIX || c->scenario == BENCH_SPEC) && c->requests <= 0) c->requests = 3;
    if (c->scenario >= BENCH_PREFIX && c->scenario != BENCH_CACHE && c->duration_s > 0) {
        fprintf(stderr, "kiln bench server: --duration does not apply to --scenario %s\n", o->scenario);
        return 1;
    }
    if (c->requests <= 0 && !(c->duration_s > 0)) {
        if (c->scenario == BENCH_LATENCY) c->requests = 10;
        else c->duration_s = 30;
    }
    return -1;
}

/* Writes the result where the options ask and returns the exit status:
 * 0 PASS, 2 FAIL (1 for cache), 1 when no request succeeded or a file
 * could not be written. */
static int report(const opts *o, const bench_result *res) {
    kn_err err = {0};
    json_t *doc = bench_result_json(res);
    bool files_ok = true;
    if (o->output) files_ok &= write_json(o->output, doc);
    if (o->report && bench_report_html(res, o->report, &err) != KN_OK) {
        fprintf(stderr, "kiln bench server: %s\n", err.msg);
        files_ok = false;
    }
    if (o->json_out) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
    } else {
        bench_result_print(res, stdout);
    }
    fflush(stdout);
    json_decref(doc);
    if (res->all.ok == 0) {
        fprintf(stderr, "kiln bench server: the run failed: no request succeeded%s%s\n",
                res->first_error[0] ? "; first error: " : "", res->first_error);
        return 1;
    }
    if (!files_ok) return 1;
    if (o->c.scenario == BENCH_CACHE) return res->all.sla_pass ? 0 : 1; /* the goals are informational */
    return res->all.sla_pass ? 0 : 2;
}

int cmd_bench_server(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0) rc = resolve_opts(&o);
    if (rc >= 0) return rc;

    kn_err err = {0};
    bench_dataset ds = {0};
    kn_status st =
        o.dataset ? bench_dataset_load(o.dataset, (int)o.max_tokens, &ds, &err)
                  : bench_dataset_synth(1024, (int)o.prompt_words, (int)o.max_tokens, o.c.seed, &ds, &err);
    if (st != KN_OK) {
        fprintf(stderr, "kiln bench server: %s\n", err.msg);
        return 1;
    }
    o.c.prompts = &ds;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "kiln bench server: curl_global_init failed\n");
        bench_dataset_free(&ds);
        return 1;
    }
    bench_result *res = NULL;
    if (bench_run(&o.c, &res, &err) != KN_OK) {
        fprintf(stderr, "kiln bench server: %s\n", err.msg);
        rc = 1;
    } else {
        rc = report(&o, res);
    }
    bench_result_destroy(res);
    bench_dataset_free(&ds);
    curl_global_cleanup();
    return rc;
}
