/*
 * bench.c — the front of src/bench: the names of the scenarios and of the
 * error kinds, the checks of a configuration, the dispatch of bench_run to
 * the file that runs the scenario (run.c: the streamed ones; cache.c: the
 * cache scenario), and the result's destructor. See bench.h.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const ERRKIND_NAMES[BENCH_ERR_COUNT] = {
    "connect", "http_4xx", "http_5xx", "timeout", "network", "protocol", "http_other", "dropped", "other",
};

const char *bench_errkind_name(bench_errkind k) {
    return (unsigned)k < BENCH_ERR_COUNT ? ERRKIND_NAMES[k] : "?";
}

const char *bench_scenario_name(bench_scenario s) {
    switch (s) {
    case BENCH_LATENCY: return "latency";
    case BENCH_THROUGHPUT: return "throughput";
    case BENCH_RAMP: return "ramp";
    case BENCH_PREFIX: return "prefix";
    case BENCH_SHARED_PREFIX: return "shared-prefix";
    case BENCH_SPEC: return "spec";
    case BENCH_CACHE: return "cache";
    }
    return "?";
}

bool bench_scenario_parse(const char *s, bench_scenario *out) {
    for (int i = 0; i <= BENCH_SCENARIO_LAST; i++)
        if (!strcmp(s, bench_scenario_name((bench_scenario)i))) {
            *out = (bench_scenario)i;
            return true;
        }
    return false;
}

void bench_result_destroy(bench_result *r) {
    if (!r) return;
    free(r->recs);
    free(r->itl);
    free(r->itl_step);
    free(r->tok_per_s);
    free(r->steps);
    free(r->x.rounds);
    free(r->x.cache);
    free(r);
}

static kn_status check_config(const bench_config *c, kn_err *err) {
    if (!c->url || strncmp(c->url, "http", 4))
        return kn_fail(err, KN_EINVAL, "--url must be an http:// or https:// URL");
    if (!c->model || !*c->model) return kn_fail(err, KN_EINVAL, "--model is required");
    if (!c->prompts || c->prompts->n == 0) return kn_fail(err, KN_EINVAL, "no prompts");
    if (!(c->timeout_s > 0) || !(c->connect_timeout_s > 0))
        return kn_fail(err, KN_EINVAL, "timeouts must be > 0");
    if (!(c->sla_p95_s > 0) || c->sla_ttft_p95_s < 0)
        return kn_fail(err, KN_EINVAL, "SLA targets must be > 0");
    if (!(c->sla_max_error_rate >= 0 && c->sla_max_error_rate <= 1))
        return kn_fail(err, KN_EINVAL, "the SLA error rate must be in [0, 1]");
    if ((c->scenario == BENCH_THROUGHPUT || c->scenario == BENCH_SHARED_PREFIX) &&
        (c->concurrency < 1 || c->concurrency > BENCH_MAX_INFLIGHT))
        return kn_fail(err, KN_EINVAL, "--concurrency must be in 1..%d", BENCH_MAX_INFLIGHT);
    if (c->scenario != BENCH_RAMP && c->requests <= 0 && !(c->duration_s > 0))
        return kn_fail(err, KN_EINVAL, "give --requests N or --duration S");
    if ((c->scenario == BENCH_PREFIX || c->scenario == BENCH_SPEC) &&
        (c->requests < 1 || c->requests > 100000))
        return kn_fail(err, KN_EINVAL, "%s needs --requests in 1..100000", bench_scenario_name(c->scenario));
    if ((c->scenario == BENCH_PREFIX || c->scenario == BENCH_SHARED_PREFIX) &&
        (c->prefix_tokens < 1 || c->prefix_tokens > 1000000))
        return kn_fail(err, KN_EINVAL, "--prefix-tokens must be in 1..1000000");
    if (c->scenario == BENCH_PREFIX && (c->between < 0 || c->between > 100000))
        return kn_fail(err, KN_EINVAL, "--between must be in 0..100000");
    if (c->scenario == BENCH_CACHE &&
        (c->requests < 1 || c->requests > 1000000 || c->rounds < 1 || c->rounds > 1000 ||
         c->concurrency < 1 || c->concurrency > BENCH_MAX_INFLIGHT || c->requests_total < 0 ||
         (c->requests_total == 0 && !(c->duration_s > 0))))
        return kn_fail(
            err, KN_EINVAL,
            "cache needs --requests in 1..1000000, --rounds in 1..1000, --concurrency in 1..%d and "
            "--duration S or --requests-total N",
            BENCH_MAX_INFLIGHT);
    if (c->scenario == BENCH_RAMP &&
        (!(c->initial_rate > 0) || !(c->final_rate > 0) || !(c->ramp_duration_s > 0) || c->ramp_steps < 1 ||
         c->ramp_steps > 1000 || c->initial_rate > 1e5 || c->final_rate > 1e5))
        return kn_fail(err, KN_EINVAL,
                       "ramp needs rates in (0, 100000] req/s, a duration > 0 and 1..1000 steps");
    return KN_OK;
}

kn_status bench_run(const bench_config *cfg, bench_result **out, kn_err *err) {
    *out = NULL;
    kn_status st = check_config(cfg, err);
    if (st != KN_OK) return st;
    return cfg->scenario == BENCH_CACHE ? bench_cache_run(cfg, out, err) : bench_stream_run(cfg, out, err);
}
