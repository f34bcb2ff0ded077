/*
 * report.c — the reports of a benchmark run: the JSON document, the text
 * summary with its PASS/FAIL line, and a self-contained HTML page with
 * inline SVG plots (no scripts, no external resources). The cache
 * scenario has reports of its own (cache.c); these hand over to them.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON -------------------------------------------------------------------- */

static json_t *num_or_null(bool have, double v) {
    return have && isfinite(v) ? json_real(v) : json_null();
}

static json_t *stats_json(const bench_stats *s) {
    json_t *o = json_object();
    bool h = s->n > 0;
    json_object_set_new(o, "p50", num_or_null(h, s->p50));
    json_object_set_new(o, "p75", num_or_null(h, s->p75));
    json_object_set_new(o, "p90", num_or_null(h, s->p90));
    json_object_set_new(o, "p95", num_or_null(h, s->p95));
    json_object_set_new(o, "p99", num_or_null(h, s->p99));
    json_object_set_new(o, "p999", num_or_null(h, s->p999));
    json_object_set_new(o, "min", num_or_null(h, s->min));
    json_object_set_new(o, "max", num_or_null(h, s->max));
    json_object_set_new(o, "mean", num_or_null(h, s->mean));
    json_object_set_new(o, "stddev", num_or_null(h, s->stddev));
    json_object_set_new(o, "n", json_integer((json_int_t)s->n));
    return o;
}

static json_t *errors_json(const bench_summary *s) {
    json_t *o = json_object();
    for (int k = 0; k < BENCH_ERR_COUNT; k++)
        if (s->errors[k]) json_object_set_new(o, bench_errkind_name((bench_errkind)k), json_integer(s->errors[k]));
    return o;
}

/* The figures of one summary, in the order of the top-level document. */
static void summary_into(json_t *o, const bench_summary *s) {
    json_object_set_new(o, "requests", json_integer(s->requests));
    json_object_set_new(o, "ok", json_integer(s->ok));
    json_object_set_new(o, "errors", errors_json(s));
    json_object_set_new(o, "ttft_s", stats_json(&s->ttft));
    json_object_set_new(o, "itl_s", stats_json(&s->itl));
    json_object_set_new(o, "e2e_s", stats_json(&s->e2e));
    json_object_set_new(o, "tpot_s", stats_json(&s->tpot));
    json_object_set_new(o, "output_tok_s", json_real(s->output_tok_s));
    json_object_set_new(o, "requests_s", json_real(s->requests_s));
}

/* A count (bytes, tokens) as a JSON integer, or null. */
static json_t *count_or_null(bool have, double v) {
    return have && isfinite(v) && fabs(v) < 9e15 ? json_integer((json_int_t)llround(v)) : json_null();
}

static json_t *ttft_or_null(double v) {
    return num_or_null(v >= 0, v);
}

/* The "prefix", "shared_prefix" or "spec" object of those scenarios. */
static void extra_json(json_t *o, const bench_result *r) {
    const bench_config *c = &r->cfg;
    const bench_extra *x = &r->x;
    if (c->scenario == BENCH_PREFIX) {
        json_t *p = json_object(), *rounds = json_array();
        json_object_set_new(p, "prefix_tokens", json_integer(c->prefix_tokens));
        json_object_set_new(p, "prompt_tokens", x->prefix_prompt_tokens >= 0 ? json_integer(x->prefix_prompt_tokens)
                                                                              : json_null());
        json_object_set_new(p, "between", json_integer(c->between));
        json_object_set_new(p, "cold_ttft_s", ttft_or_null(x->cold_ttft));
        json_object_set_new(p, "between_ttft_s", ttft_or_null(x->between_ttft));
        json_object_set_new(p, "warm_ttft_s", ttft_or_null(x->warm_ttft));
        json_object_set_new(p, "warm_cold_ratio", ttft_or_null(x->ratio));
        json_object_set_new(p, "target_ratio", json_real(0.03));
        for (int i = 0; i < x->n_rounds; i++) {
            const bench_prefix_round *rd = &x->rounds[i];
            json_t *ro = json_object();
            json_object_set_new(ro, "cold_ttft_s", ttft_or_null(rd->cold_ttft));
            json_object_set_new(ro, "between_ttft_s", ttft_or_null(rd->between_ttft_p50));
            json_object_set_new(ro, "warm_ttft_s", ttft_or_null(rd->warm_ttft));
            json_object_set_new(ro, "warm_cold_ratio", ttft_or_null(rd->ratio));
            json_object_set_new(ro, "prompt_tokens", rd->prompt_tokens >= 0 ? json_integer(rd->prompt_tokens) : json_null());
            json_array_append_new(rounds, ro);
        }
        json_object_set_new(p, "rounds", rounds);
        json_object_set_new(o, "prefix", p);
    } else if (c->scenario == BENCH_SHARED_PREFIX) {
        json_t *p = json_object();
        json_object_set_new(p, "concurrency", json_integer(c->concurrency));
        json_object_set_new(p, "prefix_tokens", json_integer(c->prefix_tokens));
        json_object_set_new(p, "kv_used_bytes_peak", count_or_null(x->has_kv, x->kv_used_peak));
        json_object_set_new(p, "kv_logical_bytes_peak", count_or_null(x->has_kv, x->kv_logical_peak));
        json_object_set_new(p, "kv_used_bytes_at_logical_peak", count_or_null(x->has_kv, x->kv_used_at_logical_peak));
        json_object_set_new(p, "used_logical_ratio",
                            num_or_null(x->has_kv && x->kv_logical_peak > 0, x->kv_used_peak / x->kv_logical_peak));
        json_object_set_new(p, "metrics_polls", json_integer(x->kv_polls));
        json_object_set_new(o, "shared_prefix", p);
    } else if (c->scenario == BENCH_SPEC) {
        json_t *p = json_object();
        json_object_set_new(p, "decode_tok_s_none", num_or_null(x->has_spec_rate[0], x->spec_tok_s[0]));
        json_object_set_new(p, "decode_tok_s_ngram", num_or_null(x->has_spec_rate[1], x->spec_tok_s[1]));
        json_object_set_new(p, "speedup", num_or_null(x->has_spec_rate[0] && x->has_spec_rate[1] && x->spec_tok_s[0] > 0,
                                                      x->spec_tok_s[1] / x->spec_tok_s[0]));
        json_object_set_new(p, "draft_tokens", count_or_null(x->has_accept, x->spec_draft));
        json_object_set_new(p, "accepted_tokens", count_or_null(x->has_accept, x->spec_accepted));
        json_object_set_new(p, "acceptance_rate", num_or_null(x->has_accept, x->spec_accept_rate));
        json_object_set_new(p, "identical", x->spec_identical < 0 ? json_null() : json_boolean(x->spec_identical == 1));
        json_object_set_new(o, "spec", p);
    }
}

json_t *bench_result_json(const bench_result *r) {
    if (r->cfg.scenario == BENCH_CACHE) return bench_cache_json(r);
    const bench_config *c = &r->cfg;
    const bench_summary *a = &r->all;
    json_t *o = json_object();
    json_object_set_new(o, "scenario", json_string(bench_scenario_name(c->scenario)));
    summary_into(o, a);
    json_object_set_new(o, "cache_hit_rate", r->has_cache_rate ? json_real(r->cache_hit_rate) : json_null());
    json_object_set_new(o, "goodput", json_real(a->goodput));
    json_t *sla = json_object();
    json_object_set_new(sla, "p95_target_s", json_real(c->sla_p95_s));
    json_object_set_new(sla, "ttft_p95_target_s", c->sla_ttft_p95_s > 0 ? json_real(c->sla_ttft_p95_s) : json_null());
    json_object_set_new(sla, "max_error_rate", json_real(c->sla_max_error_rate));
    json_object_set_new(sla, "pass", json_boolean(a->sla_pass));
    json_object_set_new(o, "sla", sla);
    if (c->scenario == BENCH_RAMP) {
        json_t *steps = json_array();
        for (int k = 0; k < r->n_steps; k++) {
            const bench_step *st = &r->steps[k];
            json_t *so = json_object();
            json_object_set_new(so, "offered_rate", json_real(st->rate));
            json_object_set_new(so, "t0_s", json_real(st->t0));
            json_object_set_new(so, "t1_s", json_real(st->t1));
            summary_into(so, &st->s);
            json_object_set_new(so, "goodput", json_real(st->s.goodput));
            json_object_set_new(so, "error_rate", json_real(st->s.error_rate));
            json_object_set_new(so, "sla_pass", st->s.requests ? json_boolean(!st->breaks_sla) : json_null());
            json_array_append_new(steps, so);
        }
        json_object_set_new(o, "steps", steps);
        if (r->knee >= 0) {
            json_t *k = json_object();
            json_object_set_new(k, "step", json_integer(r->knee));
            json_object_set_new(k, "offered_rate", json_real(r->steps[r->knee].rate));
            json_object_set_new(o, "knee", k);
        } else {
            json_object_set_new(o, "knee", json_null());
        }
    }
    if (c->scenario == BENCH_LATENCY) {
        json_t *ph = json_object();
        for (int k = 0; k < r->n_steps && k < 2; k++) {
            json_t *so = json_object();
            summary_into(so, &r->steps[k].s);
            json_object_set_new(so, "goodput", json_real(r->steps[k].s.goodput));
            json_object_set_new(ph, k == 0 ? "cache_off" : "cache_on", so);
        }
        json_object_set_new(o, "phases", ph);
    }
    extra_json(o, r);
    json_object_set_new(o, "output_tokens", json_integer(a->out_tokens));
    json_object_set_new(o, "duration_s", json_real(a->duration_s));
    json_object_set_new(o, "error_rate", json_real(a->error_rate));
    json_object_set_new(o, "aborted", r->aborted[0] ? json_string(r->aborted) : json_null());
    json_object_set_new(o, "first_error", r->first_error[0] ? json_string(r->first_error) : json_null());
    json_t *cfg = json_object();
    json_object_set_new(cfg, "url", json_string(c->url));
    json_object_set_new(cfg, "model", json_string(c->model));
    json_object_set_new(cfg, "endpoint", json_string("/v1/completions"));
    json_object_set_new(cfg, "prompts", json_integer((json_int_t)c->prompts->n));
    json_object_set_new(cfg, "max_tokens", json_integer(c->prompts->items[0].max_tokens));
    json_object_set_new(cfg, "ignore_eos", json_boolean(c->ignore_eos));
    json_object_set_new(cfg, "seed", json_integer((json_int_t)(c->seed & 0x7fffffffffffffffull)));
    if (c->scenario == BENCH_THROUGHPUT || c->scenario == BENCH_SHARED_PREFIX)
        json_object_set_new(cfg, "concurrency", json_integer(c->concurrency));
    if (c->scenario == BENCH_PREFIX || c->scenario == BENCH_SHARED_PREFIX)
        json_object_set_new(cfg, "prefix_tokens", json_integer(c->prefix_tokens));
    if (c->scenario == BENCH_PREFIX) json_object_set_new(cfg, "between", json_integer(c->between));
    if (c->scenario == BENCH_RAMP) {
        json_object_set_new(cfg, "initial_rate", json_real(c->initial_rate));
        json_object_set_new(cfg, "final_rate", json_real(c->final_rate));
        json_object_set_new(cfg, "ramp_duration_s", json_real(c->ramp_duration_s));
        json_object_set_new(cfg, "ramp_steps", json_integer(c->ramp_steps));
    } else {
        json_object_set_new(cfg, "requests", c->requests > 0 ? json_integer(c->requests) : json_null());
        json_object_set_new(cfg, "duration_s", c->duration_s > 0 ? json_real(c->duration_s) : json_null());
    }
    json_object_set_new(cfg, "timeout_s", json_real(c->timeout_s));
    json_object_set_new(o, "config", cfg);
    return o;
}

/* ---- text ---------------------------------------------------------------------- */

static void print_stats(FILE *f, const char *name, const bench_stats *s, double scale, const char *unit) {
    if (!s->n) {
        fprintf(f, "  %-5s (no samples)\n", name);
        return;
    }
    fprintf(f, "  %-5s p50 %.1f  p75 %.1f  p90 %.1f  p95 %.1f  p99 %.1f  p99.9 %.1f  min %.1f  max %.1f  mean %.1f  sd %.1f %s\n",
            name, s->p50 * scale, s->p75 * scale, s->p90 * scale, s->p95 * scale, s->p99 * scale, s->p999 * scale,
            s->min * scale, s->max * scale, s->mean * scale, s->stddev * scale, unit);
}

static void print_errors(FILE *f, const bench_summary *s) {
    bool any = false;
    for (int k = 0; k < BENCH_ERR_COUNT; k++)
        if (s->errors[k]) {
            fprintf(f, "%s%s %lld", any ? ", " : " (", bench_errkind_name((bench_errkind)k), s->errors[k]);
            any = true;
        }
    fprintf(f, "%s", any ? ")" : "");
}

static void print_summary(FILE *f, const bench_summary *s) {
    fprintf(f, "  requests %lld: ok %lld, errors %lld", s->requests, s->ok, s->requests - s->ok);
    print_errors(f, s);
    fprintf(f, "\n");
    print_stats(f, "ttft", &s->ttft, 1000, "ms");
    print_stats(f, "itl", &s->itl, 1000, "ms");
    print_stats(f, "e2e", &s->e2e, 1000, "ms");
    print_stats(f, "tpot", &s->tpot, 1000, "ms");
    fprintf(f, "  output %.1f tok/s, %.2f req/s, goodput %.2f req/s over %.1f s\n", s->output_tok_s, s->requests_s,
            s->goodput, s->duration_s);
}

static void ms_or_na(FILE *f, const char *label, double v) {
    if (v >= 0) fprintf(f, "%s %.1f ms", label, v * 1000);
    else fprintf(f, "%s n/a", label);
}

static void print_extra(FILE *f, const bench_result *r) {
    const bench_config *c = &r->cfg;
    const bench_extra *x = &r->x;
    if (c->scenario == BENCH_PREFIX) {
        fprintf(f, "  prefix: %d words", c->prefix_tokens);
        if (x->prefix_prompt_tokens >= 0) fprintf(f, " (%lld prompt tokens with the suffix)", x->prefix_prompt_tokens);
        fprintf(f, ", %d between, %d round(s), medians:\n  ", c->between, x->n_rounds);
        ms_or_na(f, "cold TTFT", x->cold_ttft);
        ms_or_na(f, ", between TTFT", x->between_ttft);
        ms_or_na(f, ", warm TTFT", x->warm_ttft);
        if (x->ratio >= 0) fprintf(f, "\n  warm/cold %.2f%% (target <= 3%%)\n", x->ratio * 100);
        else fprintf(f, "\n  warm/cold n/a\n");
    } else if (c->scenario == BENCH_SHARED_PREFIX) {
        fprintf(f, "  shared prefix: %d concurrent requests, %d-word prefix\n", c->concurrency, c->prefix_tokens);
        if (x->has_kv)
            fprintf(f, "  KV peak in use %.2f MiB vs %.2f MiB for private copies (logical): ratio %.3f (%d polls)\n",
                    x->kv_used_peak / 1048576.0, x->kv_logical_peak / 1048576.0,
                    x->kv_logical_peak > 0 ? x->kv_used_peak / x->kv_logical_peak : 0.0, x->kv_polls);
        else fprintf(f, "  KV bytes: n/a (no kiln_kv_used_bytes / kiln_kv_logical_bytes in /metrics)\n");
    } else if (c->scenario == BENCH_SPEC) {
        fprintf(f, "  speculative decoding: decode ");
        if (x->has_spec_rate[0]) fprintf(f, "%.1f tok/s (none)", x->spec_tok_s[0]);
        else fprintf(f, "n/a (none)");
        if (x->has_spec_rate[1]) fprintf(f, " vs %.1f tok/s (ngram)", x->spec_tok_s[1]);
        else fprintf(f, " vs n/a (ngram)");
        if (x->has_spec_rate[0] && x->has_spec_rate[1] && x->spec_tok_s[0] > 0)
            fprintf(f, ": speedup %.2fx", x->spec_tok_s[1] / x->spec_tok_s[0]);
        fprintf(f, "\n  acceptance: ");
        if (x->has_accept && x->spec_draft > 0)
            fprintf(f, "%.1f%% (%.0f of %.0f draft tokens)", x->spec_accept_rate * 100, x->spec_accepted, x->spec_draft);
        else if (x->has_accept) fprintf(f, "n/a (no draft tokens)");
        else fprintf(f, "n/a (no kiln_spec_* counters in /metrics)");
        fprintf(f, "; outputs identical: %s\n", x->spec_identical < 0 ? "n/a" : x->spec_identical ? "yes" : "NO");
    }
}

void bench_result_print(const bench_result *r, FILE *f) {
    if (r->cfg.scenario == BENCH_CACHE) {
        bench_cache_print(r, f);
        return;
    }
    const bench_config *c = &r->cfg;
    fprintf(f, "kiln bench server: %s against %s (model %s)\n", bench_scenario_name(c->scenario), c->url, c->model);
    print_summary(f, &r->all);
    if (c->scenario == BENCH_LATENCY)
        for (int k = 0; k < r->n_steps; k++) {
            fprintf(f, "phase %s:\n", k == 0 ? "cache off" : "cache on");
            print_summary(f, &r->steps[k].s);
        }
    if (c->scenario == BENCH_RAMP) {
        fprintf(f, "  %-5s %9s %6s %6s %9s %9s %9s %9s %8s\n", "step", "offered", "ok", "errors", "p50 ms",
                "p95 ms", "ttft95 ms", "goodput", "SLA");
        for (int k = 0; k < r->n_steps; k++) {
            const bench_step *st = &r->steps[k];
            fprintf(f, "  %-5d %7.2f/s %6lld %6lld %9.1f %9.1f %9.1f %7.2f/s %8s\n", k, st->rate, st->s.ok,
                    st->s.requests - st->s.ok, st->s.e2e.p50 * 1000, st->s.e2e.p95 * 1000, st->s.ttft.p95 * 1000,
                    st->s.goodput, !st->s.requests ? "no reqs" : st->breaks_sla ? "broken" : "ok");
        }
        if (r->knee >= 0) fprintf(f, "  knee: step %d at %.2f req/s offered\n", r->knee, r->steps[r->knee].rate);
        else fprintf(f, "  knee: not reached (no step broke the SLA)\n");
    }
    print_extra(f, r);
    fprintf(f, "  cache hit rate: ");
    if (r->has_cache_rate) fprintf(f, "%.1f%%\n", r->cache_hit_rate * 100);
    else fprintf(f, "n/a (no /cache/stats)\n");
    if (r->aborted[0]) fprintf(f, "  run stopped early: %s\n", r->aborted);
    if (r->first_error[0]) fprintf(f, "  first error: %s\n", r->first_error);
    const bench_summary *a = &r->all;
    if (c->scenario >= BENCH_PREFIX) {
        fprintf(f, "RESULT: %s (%lld of %lld requests failed)\n", a->sla_pass ? "PASS" : "FAIL", a->requests - a->ok,
                a->requests);
        return;
    }
    fprintf(f, "SLA: %s (p95 e2e %.3f s, target %.3f s", a->sla_pass ? "PASS" : "FAIL", a->e2e.p95, c->sla_p95_s);
    if (c->sla_ttft_p95_s > 0) fprintf(f, "; p95 ttft %.3f s, target %.3f s", a->ttft.p95, c->sla_ttft_p95_s);
    fprintf(f, "; errors %.1f%%, max %.1f%%)\n", a->error_rate * 100, c->sla_max_error_rate * 100);
}

/* ---- HTML + SVG ------------------------------------------------------------------ */

static void html_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A "nice" axis maximum (1, 2, 2.5, 5 x 10^k) >= v. */
static double nice_max(double v) {
    if (!(v > 0) || !isfinite(v)) return 1;
    double e = pow(10, floor(log10(v)));
    static const double m[] = {1, 2, 2.5, 5, 10};
    for (int i = 0; i < 5; i++)
        if (m[i] * e >= v * 0.999999) return m[i] * e;
    return 10 * e;
}

enum { W = 640, H = 300, ML = 64, MR = 16, MT = 28, MB = 44 };

typedef struct plot {
    double xmax, ymax;
} plot;

static double px(const plot *p, double x) {
    return ML + (W - ML - MR) * (x / p->xmax);
}
static double py(const plot *p, double y) {
    return H - MB - (H - MT - MB) * (y / p->ymax);
}

static void axes(FILE *f, const plot *p, const char *title, const char *xlabel, const char *ylabel) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"16\" font-size=\"13\" font-weight=\"bold\">", ML);
    html_text(f, title);
    fprintf(f, "</text>\n");
    for (int i = 0; i <= 5; i++) {
        double y = p->ymax * i / 5, x = p->xmax * i / 5;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", ML, W - MR, py(p, y), py(p, y));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>", ML - 4, py(p, y) + 4, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.4g</text>\n", px(p, x), H - MB + 14, x);
    }
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>", ML, W - MR, H - MB, H - MB);
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n", ML, ML, MT, H - MB);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (ML + W - MR) / 2, H - 8);
    html_text(f, xlabel);
    fprintf(f, "</text><text transform=\"translate(14 %d) rotate(-90)\" text-anchor=\"middle\">", (MT + H - MB) / 2);
    html_text(f, ylabel);
    fprintf(f, "</text>\n");
}

static void polyline(FILE *f, const plot *p, const double *x, const double *y, int n, const char *color,
                     const char *name, int legend_row) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
    for (int i = 0; i < n; i++) fprintf(f, "%.1f,%.1f ", px(p, x[i]), py(p, y[i]));
    fprintf(f, "\"/>\n");
    for (int i = 0; i < n; i++) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", px(p, x[i]), py(p, y[i]), color);
    fprintf(f, "\n<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n",
            W - MR - 110, MT + 4 + 14 * legend_row, color, W - MR - 96, MT + 13 + 14 * legend_row, name);
}

/* Latency percentiles (p50/p95/p99 e2e, p95 TTFT) against offered load. */
static void plot_ramp(FILE *f, const bench_result *r) {
    int n = r->n_steps;
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * 4 * sizeof *y);
    if (!x || !y) goto done;
    double xm = 0, ym = r->cfg.sla_p95_s;
    int m = 0; /* steps with successful requests; the others have no latency to show */
    for (int k = 0; k < n; k++) {
        const bench_step *st = &r->steps[k];
        if (st->rate > xm) xm = st->rate;
        if (!st->s.e2e.n) continue;
        x[m] = st->rate;
        y[m] = st->s.e2e.p50, y[n + m] = st->s.e2e.p95, y[2 * n + m] = st->s.e2e.p99, y[3 * n + m] = st->s.ttft.p95;
        if (st->s.e2e.p99 > ym) ym = st->s.e2e.p99;
        m++;
    }
    plot p = {nice_max(xm), nice_max(ym)};
    axes(f, &p, "End-to-end latency percentiles vs offered load", "offered load (requests/s)", "seconds");
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>"
               "<text x=\"%d\" y=\"%.1f\" fill=\"#c00\">SLA p95 %.3g s</text>\n",
            ML, W - MR, py(&p, r->cfg.sla_p95_s), py(&p, r->cfg.sla_p95_s), ML + 4, py(&p, r->cfg.sla_p95_s) - 4,
            r->cfg.sla_p95_s);
    polyline(f, &p, x, y, m, "#1f77b4", "e2e p50", 0);
    polyline(f, &p, x, y + n, m, "#ff7f0e", "e2e p95", 1);
    polyline(f, &p, x, y + 2 * n, m, "#d62728", "e2e p99", 2);
    polyline(f, &p, x, y + 3 * n, m, "#2ca02c", "ttft p95", 3);
    if (r->knee >= 0) {
        double kx = px(&p, r->steps[r->knee].rate);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#888\" stroke-dasharray=\"2 3\"/>"
                   "<text x=\"%.1f\" y=\"%d\" fill=\"#555\">knee</text>\n",
                kx, kx, MT, H - MB, kx + 3, MT + 10);
    }
    fprintf(f, "</svg>\n");
done:
    free(x);
    free(y);
}

/* Percentiles of e2e and TTFT as bars (latency and throughput scenarios). */
static void plot_percentiles(FILE *f, const bench_result *r) {
    const bench_stats *e = &r->all.e2e, *t = &r->all.ttft;
    double ev[6] = {e->p50, e->p75, e->p90, e->p95, e->p99, e->p999};
    double tv[6] = {t->p50, t->p75, t->p90, t->p95, t->p99, t->p999};
    static const char *const names[6] = {"p50", "p75", "p90", "p95", "p99", "p99.9"};
    double ym = r->cfg.sla_p95_s > e->p999 ? r->cfg.sla_p95_s : e->p999;
    plot p = {6, nice_max(ym)};
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"16\" font-size=\"13\" font-weight=\"bold\">Latency percentiles (s)</text>\n", ML);
    for (int i = 0; i <= 5; i++) {
        double y = p.ymax * i / 5;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                ML, W - MR, py(&p, y), py(&p, y), ML - 4, py(&p, y) + 4, y);
    }
    double bw = (W - ML - MR) / 6.0;
    for (int i = 0; i < 6; i++) {
        double x0 = ML + bw * i;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f77b4\"/>", x0 + bw * 0.1,
                py(&p, ev[i]), bw * 0.38, H - MB - py(&p, ev[i]));
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2ca02c\"/>", x0 + bw * 0.52,
                py(&p, tv[i]), bw * 0.38, H - MB - py(&p, tv[i]));
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x0 + bw / 2, H - MB + 14, names[i]);
    }
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>"
               "<text x=\"%d\" y=\"%.1f\" fill=\"#c00\">SLA p95 %.3g s</text>\n",
            ML, W - MR, py(&p, r->cfg.sla_p95_s), py(&p, r->cfg.sla_p95_s), ML + 4, py(&p, r->cfg.sla_p95_s) - 4,
            r->cfg.sla_p95_s);
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>", ML, W - MR, H - MB, H - MB);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"#1f77b4\"/><text x=\"%d\" y=\"%d\">e2e</text>"
               "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"#2ca02c\"/><text x=\"%d\" y=\"%d\">ttft</text>\n",
            W - MR - 110, MT + 4, W - MR - 96, MT + 13, W - MR - 110, MT + 18, W - MR - 96, MT + 27);
    fprintf(f, "</svg>\n");
}

/* Histogram of the TTFT of successful requests (30 bins from 0 to max). */
static void plot_ttft_hist(FILE *f, const bench_result *r) {
    enum { NB = 30 };
    double bins[NB] = {0}, tmax = r->all.ttft.n ? r->all.ttft.max : 0;
    plot p = {nice_max(tmax), 1};
    double bmax = 0;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_record *rec = &r->recs[i];
        if (!rec->ok || rec->ttft < 0) continue;
        int b = (int)(rec->ttft / p.xmax * NB);
        if (b >= NB) b = NB - 1;
        if (b < 0) b = 0;
        if (++bins[b] > bmax) bmax = bins[b];
    }
    p.ymax = nice_max(bmax);
    axes(f, &p, "Time to first token (histogram)", "TTFT (s)", "requests");
    double bw = (W - ML - MR) / (double)NB;
    for (int b = 0; b < NB; b++)
        if (bins[b] > 0)
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2ca02c\"/>\n", ML + bw * b + 0.5,
                    py(&p, bins[b]), bw - 1, H - MB - py(&p, bins[b]));
    fprintf(f, "</svg>\n");
}

/* Output events (tokens) per second of wall time. */
static void plot_tokens(FILE *f, const bench_result *r) {
    size_t n = r->n_secs;
    double ym = 0;
    for (size_t i = 0; i < n; i++)
        if (r->tok_per_s[i] > ym) ym = r->tok_per_s[i];
    plot p = {nice_max(n > 1 ? (double)n : 1), nice_max(ym)};
    axes(f, &p, "Output tokens per second over time", "time since start (s)", "tokens/s (SSE text chunks)");
    if (n) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
        for (size_t i = 0; i < n; i++) fprintf(f, "%.1f,%.1f ", px(&p, (double)i + 0.5), py(&p, r->tok_per_s[i]));
        fprintf(f, "\"/>\n");
    }
    if (r->cfg.scenario == BENCH_RAMP)
        for (int k = 1; k < r->n_steps; k++)
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#aaa\" stroke-dasharray=\"2 3\"/>\n",
                    px(&p, r->steps[k].t0), px(&p, r->steps[k].t0), MT, H - MB);
    fprintf(f, "</svg>\n");
}

static void html_row(FILE *f, const char *name, const bench_stats *s) {
    fprintf(f, "<tr><td>%s</td>", name);
    if (!s->n) {
        fprintf(f, "<td colspan=\"10\">no samples</td></tr>\n");
        return;
    }
    double v[10] = {s->p50, s->p75, s->p90, s->p95, s->p99, s->p999, s->min, s->max, s->mean, s->stddev};
    for (int i = 0; i < 10; i++) fprintf(f, "<td>%.1f</td>", v[i] * 1000);
    fprintf(f, "</tr>\n");
}

static void html_ms(FILE *f, double v) {
    if (v >= 0) fprintf(f, "<td>%.1f</td>", v * 1000);
    else fprintf(f, "<td>n/a</td>");
}

/* The table of the prefix, shared-prefix and spec scenarios. */
static void html_extra(FILE *f, const bench_result *r) {
    const bench_config *c = &r->cfg;
    const bench_extra *x = &r->x;
    if (c->scenario == BENCH_PREFIX) {
        fprintf(f, "<h2>Prefix caching (%d-word prefix, %d between)</h2>\n<table><tr><th>round</th><th>cold TTFT ms</th>"
                   "<th>between TTFT p50 ms</th><th>warm TTFT ms</th><th>warm/cold %%</th></tr>\n",
                c->prefix_tokens, c->between);
        for (int i = 0; i <= x->n_rounds; i++) {
            const bench_prefix_round *rd = i < x->n_rounds ? &x->rounds[i] : NULL;
            if (rd) fprintf(f, "<tr><td>%d</td>", i);
            else fprintf(f, "<tr><td>median</td>");
            html_ms(f, rd ? rd->cold_ttft : x->cold_ttft);
            html_ms(f, rd ? rd->between_ttft_p50 : x->between_ttft);
            html_ms(f, rd ? rd->warm_ttft : x->warm_ttft);
            double ratio = rd ? rd->ratio : x->ratio;
            if (ratio >= 0) fprintf(f, "<td>%.2f</td></tr>\n", ratio * 100);
            else fprintf(f, "<td>n/a</td></tr>\n");
        }
        fprintf(f, "</table>\n");
    } else if (c->scenario == BENCH_SHARED_PREFIX) {
        fprintf(f, "<h2>Shared-prefix KV memory (%d concurrent, %d-word prefix)</h2>\n", c->concurrency, c->prefix_tokens);
        if (x->has_kv)
            fprintf(f, "<table><tr><th>KV peak in use MiB</th><th>private copies (logical) MiB</th><th>ratio</th></tr>"
                       "<tr><td>%.2f</td><td>%.2f</td><td>%.3f</td></tr></table>\n",
                    x->kv_used_peak / 1048576.0, x->kv_logical_peak / 1048576.0,
                    x->kv_logical_peak > 0 ? x->kv_used_peak / x->kv_logical_peak : 0.0);
        else fprintf(f, "<p>n/a: the server's /metrics has no kiln_kv_used_bytes / kiln_kv_logical_bytes.</p>\n");
    } else if (c->scenario == BENCH_SPEC) {
        fprintf(f, "<h2>Speculative decoding</h2>\n<table><tr><th>mode</th><th>decode tok/s</th></tr>\n");
        for (int m = 0; m < 2; m++) {
            fprintf(f, "<tr><td>%s</td>", m ? "ngram" : "none");
            if (x->has_spec_rate[m]) fprintf(f, "<td>%.1f</td></tr>\n", x->spec_tok_s[m]);
            else fprintf(f, "<td>n/a</td></tr>\n");
        }
        fprintf(f, "</table>\n<p>Acceptance: ");
        if (x->has_accept && x->spec_draft > 0)
            fprintf(f, "%.1f%% (%.0f of %.0f draft tokens)", x->spec_accept_rate * 100, x->spec_accepted, x->spec_draft);
        else fprintf(f, "n/a");
        fprintf(f, ". Outputs identical: %s.</p>\n", x->spec_identical < 0 ? "n/a" : x->spec_identical ? "yes" : "no");
    }
}

kn_status bench_report_html(const bench_result *r, const char *path, kn_err *err) {
    if (r->cfg.scenario == BENCH_CACHE) return bench_cache_html(r, path, err);
    FILE *f = fopen(path, "w");
    if (!f) return kn_fail(err, KN_EIO, "%s: cannot create the report", path);
    const bench_config *c = &r->cfg;
    const bench_summary *a = &r->all;
    fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kiln bench server: %s</title>\n"
               "<style>body{font-family:sans-serif;margin:24px;max-width:980px}table{border-collapse:collapse}"
               "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
               ".pass{color:#080;font-weight:bold}.fail{color:#c00;font-weight:bold}svg{display:block;margin:12px 0}"
               "</style></head><body>\n",
            bench_scenario_name(c->scenario));
    fprintf(f, "<h1>kiln bench server: %s</h1>\n<p>Server <code>", bench_scenario_name(c->scenario));
    html_text(f, c->url);
    fprintf(f, "</code>, model <code>");
    html_text(f, c->model);
    fprintf(f, "</code>, %zu prompt(s), max_tokens %d%s.</p>\n", c->prompts->n, c->prompts->items[0].max_tokens,
            c->ignore_eos ? ", ignore_eos" : "");
    if (c->scenario >= BENCH_PREFIX) {
        fprintf(f, "<p class=\"%s\">Result %s: %lld of %lld requests failed", a->sla_pass ? "pass" : "fail",
                a->sla_pass ? "PASS" : "FAIL", a->requests - a->ok, a->requests);
    } else {
        fprintf(f, "<p class=\"%s\">SLA %s: p95 end-to-end %.3f s (target %.3f s), errors %.1f%% (max %.1f%%)",
                a->sla_pass ? "pass" : "fail", a->sla_pass ? "PASS" : "FAIL", a->e2e.p95, c->sla_p95_s,
                a->error_rate * 100, c->sla_max_error_rate * 100);
        if (c->sla_ttft_p95_s > 0) fprintf(f, ", p95 TTFT %.3f s (target %.3f s)", a->ttft.p95, c->sla_ttft_p95_s);
    }
    fprintf(f, "</p>\n<p>Requests %lld, ok %lld, errors %lld", a->requests, a->ok, a->requests - a->ok);
    for (int k = 0; k < BENCH_ERR_COUNT; k++)
        if (a->errors[k]) fprintf(f, ", %s %lld", bench_errkind_name((bench_errkind)k), a->errors[k]);
    fprintf(f, ". Output %.1f tok/s, %.2f req/s, goodput %.2f req/s over %.1f s. Cache hit rate: ", a->output_tok_s,
            a->requests_s, a->goodput, a->duration_s);
    if (r->has_cache_rate) fprintf(f, "%.1f%%.", r->cache_hit_rate * 100);
    else fprintf(f, "n/a.");
    if (r->aborted[0]) {
        fprintf(f, " Run stopped early: ");
        html_text(f, r->aborted);
        fprintf(f, ".");
    }
    fprintf(f, "</p>\n<table><tr><th>ms</th><th>p50</th><th>p75</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th>"
               "<th>min</th><th>max</th><th>mean</th><th>stddev</th></tr>\n");
    html_row(f, "TTFT", &a->ttft);
    html_row(f, "inter-token", &a->itl);
    html_row(f, "end to end", &a->e2e);
    html_row(f, "per output token", &a->tpot);
    fprintf(f, "</table>\n");
    html_extra(f, r);
    if (c->scenario == BENCH_RAMP) {
        fprintf(f, "<h2>Steps</h2>\n<table><tr><th>step</th><th>offered req/s</th><th>ok</th><th>errors</th>"
                   "<th>e2e p50 ms</th><th>e2e p95 ms</th><th>TTFT p95 ms</th><th>tok/s</th><th>goodput req/s</th>"
                   "<th>SLA</th></tr>\n");
        for (int k = 0; k < r->n_steps; k++) {
            const bench_step *st = &r->steps[k];
            fprintf(f, "<tr><td>%d%s</td><td>%.2f</td><td>%lld</td><td>%lld</td><td>%.1f</td><td>%.1f</td><td>%.1f</td>"
                       "<td>%.1f</td><td>%.2f</td><td>%s</td></tr>\n",
                    k, k == r->knee ? " (knee)" : "", st->rate, st->s.ok, st->s.requests - st->s.ok, st->s.e2e.p50 * 1000,
                    st->s.e2e.p95 * 1000, st->s.ttft.p95 * 1000, st->s.output_tok_s, st->s.goodput,
                    !st->s.requests ? "no requests" : st->breaks_sla ? "broken" : "ok");
        }
        fprintf(f, "</table>\n");
        plot_ramp(f, r);
    } else {
        plot_percentiles(f, r);
    }
    plot_ttft_hist(f, r);
    plot_tokens(f, r);
    fprintf(f, "</body></html>\n");
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) return kn_fail(err, KN_EIO, "%s: write failed", path);
    return KN_OK;
}
