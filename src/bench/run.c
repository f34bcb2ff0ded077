/*
 * run.c — the load generator: one libcurl multi handle driving streaming
 * completion requests, the three scenarios (latency, throughput, ramp), and
 * the summaries of their records; the kiln-oriented scenarios (prefix,
 * shared-prefix, spec) and the /metrics reader they use. See bench.h.
 *
 * Single-threaded: the loop hands requests to libcurl, waits in
 * curl_multi_poll, and timestamps output events inside the write callback as
 * their bytes arrive. Every request carries a connect timeout and a total
 * timeout, so a server that stops answering produces errors, not a hang; a
 * long run of consecutive failures ends the run early (see `aborted`).
 *
 * bench_run (bench.c) calls bench_stream_run for every scenario but cache
 * (cache.c); the libcurl plumbing shared with cache.c is in http.c.
 */
#include "internal.h"

#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- state ------------------------------------------------------------------ */

typedef struct run run;

typedef struct slot {
    CURL *easy;
    run *r;
    char *body; /* owned, json_dumps of the request */
    bench_sse sse;
    double t_start, t_first, t_last; /* absolute kn_now_s */
    double *gaps; /* [n_gaps] owned, this request's inter-token gaps */
    size_t n_gaps, cap_gaps;
    char *text; /* [text_len + 1] owned, the output text when the run captures it */
    size_t text_len, text_cap;
    int step;
    long status; /* HTTP status, 0 until known */
    bool oom;
    char errbody[BENCH_MAX_ERRBODY + 1];
    size_t errlen;
    char curl_err[CURL_ERROR_SIZE];
} slot;

struct run {
    const bench_config *cfg;
    bench_result *res;
    CURLM *multi;
    struct curl_slist *hdrs;
    char *endpoint, *base;
    slot *slots; /* [n_slots] owned */
    int n_slots;
    int *free_ids; /* stack of idle slot indices */
    int n_free;
    int inflight;
    double t0;
    size_t cap_recs, cap_itl, cap_itl_step, cap_secs;
    long long consecutive_err, abort_after;
    bool stop; /* stop issuing */
    bool oom;
    kn_progress prog;
    double prog_last;
    uint64_t prog_total;
    double prog_scale; /* progress units: requests (scale 0) or tenths of seconds */
    int cur_step;
    bool capture_text; /* keep each request's output text (spec) */
    char *last_text;   /* owned: the text of the last request that finished */
};

static double now_rel(const run *r) {
    return kn_now_s() - r->t0;
}

/* ---- growable arrays --------------------------------------------------------- */

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

static void count_event_second(run *r, double t_abs) {
    double t = t_abs - r->t0;
    if (t < 0) t = 0;
    size_t sec = (size_t)t;
    bench_result *res = r->res;
    if (sec >= res->n_secs) {
        if (sec > 1000000 || !grow((void **)&res->tok_per_s, &r->cap_secs, sec + 1, sizeof(double))) {
            r->oom = true;
            return;
        }
        for (size_t i = res->n_secs; i <= sec; i++) res->tok_per_s[i] = 0;
        res->n_secs = sec + 1;
    }
    res->tok_per_s[sec] += 1;
}

/* ---- libcurl callbacks ------------------------------------------------------- */

static void on_output(void *user) {
    slot *s = user;
    double t = kn_now_s();
    if (s->sse.events == 1) {
        s->t_first = t;
    } else {
        if (!grow((void **)&s->gaps, &s->cap_gaps, s->n_gaps + 1, sizeof(double))) s->oom = true;
        else s->gaps[s->n_gaps++] = t - s->t_last;
    }
    s->t_last = t;
    count_event_second(s->r, t);
}

static void on_text(void *user, const char *t, size_t n) {
    slot *s = user;
    if (!s->r->capture_text) return;
    if (!grow((void **)&s->text, &s->text_cap, s->text_len + n + 1, 1)) {
        s->oom = true;
        return;
    }
    memcpy(s->text + s->text_len, t, n);
    s->text_len += n;
    s->text[s->text_len] = 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *user) {
    slot *s = user;
    size_t n = size * nmemb;
    if (s->status == 0) curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200) { /* keep the start of an error body for the message */
        size_t room = BENCH_MAX_ERRBODY - s->errlen, take = n < room ? n : room;
        memcpy(s->errbody + s->errlen, data, take);
        s->errlen += take;
        s->errbody[s->errlen] = 0;
        return n;
    }
    return bench_sse_feed(&s->sse, data, n) ? n : 0; /* 0 aborts the transfer */
}

/* ---- requests ------------------------------------------------------------------ */

static kn_status slot_init(run *r, slot *s, kn_err *err) {
    s->r = r;
    s->sse.on_output = on_output;
    s->sse.on_text = on_text;
    s->sse.user = s;
    void *e = NULL;
    kn_status st = bench_easy_post(&e, r->cfg, r->endpoint, r->hdrs, on_write, NULL, s, s->curl_err, err);
    s->easy = e;
    return st;
}

static void slot_free(slot *s) {
    if (s->easy) curl_easy_cleanup(s->easy);
    free(s->body);
    free(s->gaps);
    free(s->text);
    bench_sse_free(&s->sse);
}

typedef struct body_opts {
    const char *prompt;
    int max_tokens;
    long long seed;
    bool ignore_eos, cache_off;
    bool greedy;      /* "temperature": 0 */
    const char *spec; /* "speculative" mode, or NULL */
} body_opts;

/* One streamed completion body. Caller frees the result (NULL when out of memory). */
static char *body_json(const run *r, const body_opts *b) {
    json_t *o = json_object(), *so = json_object();
    char *s = NULL;
    if (!o || !so) {
        json_decref(so);
        goto done;
    }
    /* json_object_set_new takes the value's reference even when it fails */
    bool bad = json_object_set_new(o, "stream_options", so) ||
               json_object_set_new(so, "include_usage", json_true()) ||
               json_object_set_new(o, "model", json_string(r->cfg->model)) ||
               json_object_set_new(o, "prompt", json_string(b->prompt)) ||
               json_object_set_new(o, "max_tokens", json_integer(b->max_tokens)) ||
               json_object_set_new(o, "stream", json_true()) ||
               (b->greedy && json_object_set_new(o, "temperature", json_real(0))) ||
               json_object_set_new(o, "seed", json_integer((json_int_t)(b->seed & 0x7fffffff))) ||
               (b->ignore_eos && json_object_set_new(o, "ignore_eos", json_true())) ||
               (b->cache_off && json_object_set_new(o, "cache", json_false())) ||
               (b->spec && json_object_set_new(o, "speculative", json_string(b->spec)));
    if (!bad) s = json_dumps(o, JSON_COMPACT);
done:
    json_decref(o);
    return s;
}

/* The JSON body of request `idx` (the prompt and seed depend only on idx, so
 * the latency scenario's second phase repeats the first exactly). */
static char *make_body(const run *r, long long idx, bool cache_off) {
    const bench_config *c = r->cfg;
    const bench_prompt *p = &c->prompts->items[(size_t)idx % c->prompts->n];
    body_opts b = {.prompt = p->text, .max_tokens = p->max_tokens, .seed = (long long)(c->seed + (uint64_t)idx),
                   .ignore_eos = c->ignore_eos, .cache_off = cache_off};
    return body_json(r, &b);
}

static void push_record(run *r, const bench_record *rec) {
    bench_result *res = r->res;
    if (!grow((void **)&res->recs, &r->cap_recs, res->n_recs + 1, sizeof *rec)) {
        r->oom = true;
        return;
    }
    res->recs[res->n_recs++] = *rec;
}

static void note_failure(run *r, bench_errkind k, const char *detail) {
    if (!r->res->first_error[0])
        snprintf(r->res->first_error, sizeof r->res->first_error, "%s: %s", bench_errkind_name(k), detail);
    /* A ramp measures overload: its 503s and drops are data, not a reason to stop. */
    bool counts = k != BENCH_ERR_DROPPED && !(r->cfg->scenario == BENCH_RAMP && k == BENCH_ERR_HTTP_5XX);
    if (counts && ++r->consecutive_err >= r->abort_after && !r->stop) {
        r->stop = true;
        snprintf(r->res->aborted, sizeof r->res->aborted, "%lld consecutive failed requests (last: %s)",
                 r->consecutive_err, bench_errkind_name(k));
    }
}

/* Starts the request whose JSON body is `body` (taken over; NULL counts as
 * out of memory); a request that cannot start is recorded as an error. */
static void launch_body(run *r, char *body, int step) {
    bench_record rec = {.t_start = now_rel(r), .step = step, .ttft = -1, .tpot = -1, .prompt_tokens = -1};
    if (r->n_free == 0) {
        free(body);
        rec.t_end = rec.t_start;
        rec.err = BENCH_ERR_DROPPED;
        push_record(r, &rec);
        note_failure(r, BENCH_ERR_DROPPED, "too many requests in flight");
        return;
    }
    int id = r->free_ids[r->n_free - 1];
    slot *s = &r->slots[id];
    kn_err err = {0};
    free(s->body);
    s->body = body;
    if (!s->easy && slot_init(r, s, &err) != KN_OK) goto fail;
    if (!s->body) goto fail;
    s->text_len = 0;
    if (s->text) s->text[0] = 0;
    bench_sse_reset(&s->sse);
    s->n_gaps = 0;
    s->status = 0;
    s->errlen = 0;
    s->errbody[0] = 0;
    s->curl_err[0] = 0;
    s->oom = false;
    s->step = step;
    if (curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body)) != CURLE_OK ||
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body) != CURLE_OK)
        goto fail;
    s->t_start = kn_now_s();
    if (curl_multi_add_handle(r->multi, s->easy) != CURLM_OK) goto fail;
    r->n_free--;
    r->inflight++;
    return;
fail:
    rec.t_end = rec.t_start;
    rec.err = BENCH_ERR_OTHER;
    push_record(r, &rec);
    note_failure(r, BENCH_ERR_OTHER, err.msg[0] ? err.msg : "could not start a request (out of memory?)");
}

/* Starts request idx of the prompt list. */
static void launch(run *r, long long idx, bool cache_off, int step) {
    launch_body(r, make_body(r, idx, cache_off), step);
}

static void finish(run *r, CURL *e, CURLcode rc) {
    char *priv = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    slot *s = (slot *)priv;
    curl_multi_remove_handle(r->multi, e);
    double t_end = kn_now_s();
    if (s->status == 0) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &s->status);
    bench_record rec = {.t_start = s->t_start - r->t0, .t_end = t_end - r->t0, .step = s->step, .ttft = -1, .tpot = -1,
                        .prompt_tokens = -1};
    bench_errkind kind = BENCH_ERR_COUNT;
    char detail[320];
    detail[0] = 0;
    if (rc == CURLE_OK && s->status == 200) {
        if (!bench_sse_finish(&s->sse)) {
            kind = BENCH_ERR_PROTOCOL;
            snprintf(detail, sizeof detail, "%s", s->sse.msg);
        }
    } else if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && s->status != 200 && s->status != 0)) {
        kind = bench_classify_status(s->status);
        snprintf(detail, sizeof detail, "HTTP %ld: %.200s", s->status, s->errbody);
    } else if (rc == CURLE_WRITE_ERROR && s->sse.failed) {
        kind = BENCH_ERR_PROTOCOL;
        snprintf(detail, sizeof detail, "%s", s->sse.msg);
    } else {
        kind = bench_classify_curl(rc, e);
        snprintf(detail, sizeof detail, "%s", s->curl_err[0] ? s->curl_err : curl_easy_strerror(rc));
    }
    if (kind == BENCH_ERR_COUNT && s->oom) {
        kind = BENCH_ERR_OTHER;
        snprintf(detail, sizeof detail, "out of memory for the token gaps or the text");
    }
    if (kind == BENCH_ERR_COUNT) {
        bench_result *res = r->res;
        rec.ok = true;
        rec.e2e = t_end - s->t_start;
        rec.ttft = s->sse.events > 0 ? s->t_first - s->t_start : -1;
        rec.out_tokens = s->sse.usage_tokens >= 0 ? s->sse.usage_tokens : s->sse.events;
        rec.prompt_tokens = s->sse.usage_prompt_tokens;
        rec.tpot = rec.ttft >= 0 && rec.out_tokens >= 2 ? (rec.e2e - rec.ttft) / (double)(rec.out_tokens - 1) : -1;
        const bench_config *c = r->cfg;
        rec.met_sla = rec.e2e <= c->sla_p95_s &&
                      !(c->sla_ttft_p95_s > 0 && rec.ttft >= 0 && rec.ttft > c->sla_ttft_p95_s);
        size_t need = res->n_itl + s->n_gaps;
        if (!grow((void **)&res->itl, &r->cap_itl, need, sizeof(double)) ||
            !grow((void **)&res->itl_step, &r->cap_itl_step, need, sizeof(int))) {
            r->oom = true;
        } else {
            for (size_t i = 0; i < s->n_gaps; i++) {
                res->itl[res->n_itl + i] = s->gaps[i];
                res->itl_step[res->n_itl + i] = s->step;
            }
            res->n_itl += s->n_gaps;
        }
        r->consecutive_err = 0;
    } else {
        rec.err = (int8_t)kind;
        note_failure(r, kind, detail);
    }
    push_record(r, &rec);
    if (r->capture_text) { /* hand the text over; the slot starts a new buffer */
        free(r->last_text);
        r->last_text = s->text;
        if (!r->last_text) r->last_text = calloc(1, 1);
        if (!r->last_text) r->oom = true;
        s->text = NULL;
        s->text_len = s->text_cap = 0;
    }
    r->free_ids[r->n_free++] = (int)(s - r->slots);
    r->inflight--;
}

static void drain(run *r) {
    int still = 0, left = 0;
    curl_multi_perform(r->multi, &still);
    CURLMsg *m;
    while ((m = curl_multi_info_read(r->multi, &left)))
        if (m->msg == CURLMSG_DONE) finish(r, m->easy_handle, m->data.result);
}

/* ---- progress -------------------------------------------------------------- */

static void progress(run *r, const char *extra, bool force) {
    if (!r->cfg->progress) return;
    double t = kn_now_s();
    if (!force && t - r->prog_last < 0.25) return;
    r->prog_last = t;
    long long ok = 0, bad = 0;
    for (size_t i = 0; i < r->res->n_recs; i++) r->res->recs[i].ok ? ok++ : bad++;
    uint64_t done = r->prog_scale > 0 ? (uint64_t)((t - r->t0) * r->prog_scale) : (uint64_t)(ok + bad);
    if (done > r->prog_total) done = r->prog_total;
    char note[160];
    snprintf(note, sizeof note, "ok %lld, errors %lld, in flight %d%s", ok, bad, r->inflight, extra ? extra : "");
    kn_progress_update(&r->prog, done, note);
}

/* ---- scenarios ----------------------------------------------------------------- */

/* Closed loop: keeps `conc` requests in flight until `max_req` were issued
 * (<= 0: no limit) or `dur` seconds passed since `t_begin` (<= 0: no limit).
 * Returns the number issued. */
static long long closed_loop(run *r, int conc, long long max_req, double dur, bool cache_off, int step) {
    double t_begin = now_rel(r);
    long long issued = 0;
    for (;;) {
        drain(r);
        double t = now_rel(r);
        bool more = !r->stop && !r->oom && (max_req <= 0 || issued < max_req) && (dur <= 0 || t - t_begin < dur);
        while (more && r->inflight < conc) {
            launch(r, issued++, cache_off, step);
            more = !r->stop && !r->oom && (max_req <= 0 || issued < max_req);
        }
        if (!more && r->inflight == 0) break;
        progress(r, NULL, false);
        curl_multi_poll(r->multi, NULL, 0, 100, NULL);
    }
    return issued;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double exp_gap(uint64_t *s, double rate) {
    double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    return -log(u) / rate;
}

/* Open loop: Poisson arrivals, step k lasting ramp_duration / steps at rate
 * initial + (final - initial) * k / (steps - 1). */
static void ramp_loop(run *r) {
    const bench_config *c = r->cfg;
    bench_result *res = r->res;
    int ns = c->ramp_steps;
    double step_len = c->ramp_duration_s / ns;
    for (int k = 0; k < ns; k++) {
        bench_step *st = &res->steps[k];
        st->rate = ns == 1 ? c->initial_rate : c->initial_rate + (c->final_rate - c->initial_rate) * k / (ns - 1);
        st->t0 = k * step_len;
        st->t1 = (k + 1) * step_len;
    }
    uint64_t rng = c->seed ^ 0x5bd1e995u;
    double t_begin = now_rel(r);
    double next = t_begin + exp_gap(&rng, res->steps[0].rate);
    long long issued = 0;
    for (;;) {
        drain(r);
        double t = now_rel(r);
        while (!r->stop && !r->oom && next <= t) {
            int k = (int)((next - t_begin) / step_len);
            if (k >= ns) {
                r->stop = true; /* the ramp is over */
                break;
            }
            launch(r, issued++, false, k);
            next += exp_gap(&rng, res->steps[k].rate);
            if ((int)((next - t_begin) / step_len) >= ns) next = t_begin + ns * step_len;
        }
        if (t - t_begin >= ns * step_len) r->stop = true;
        if (r->stop && r->inflight == 0) break;
        int k = (int)((t - t_begin) / step_len);
        if (k >= ns) k = ns - 1;
        char extra[64];
        snprintf(extra, sizeof extra, ", step %d/%d at %.2f req/s", k + 1, ns, res->steps[k].rate);
        progress(r, r->stop ? ", finishing" : extra, false);
        double wait_ms = r->stop ? 100 : (next - now_rel(r)) * 1000.0;
        if (wait_ms > 100) wait_ms = 100;
        if (wait_ms < 0) wait_ms = 0;
        curl_multi_poll(r->multi, NULL, 0, (int)wait_ms, NULL);
    }
}

/* ---- summaries ---------------------------------------------------------------- */

/* Summarises the records of `step` (-1: all). */
static void summarize(const bench_config *c, const bench_result *res, int step, double *tmp, bench_summary *s) {
    memset(s, 0, sizeof *s);
    double t_first = INFINITY, t_last = -INFINITY;
    long long met = 0;
    size_t n = 0;
    for (size_t i = 0; i < res->n_recs; i++) {
        const bench_record *rec = &res->recs[i];
        if (step >= 0 && rec->step != step) continue;
        s->requests++;
        if (rec->t_start < t_first) t_first = rec->t_start;
        if (rec->t_end > t_last) t_last = rec->t_end;
        if (!rec->ok) {
            s->errors[rec->err]++;
            continue;
        }
        s->ok++;
        s->out_tokens += rec->out_tokens;
        met += rec->met_sla;
        tmp[n++] = rec->e2e;
    }
    bench_stats_compute(tmp, n, &s->e2e);
    n = 0;
    for (size_t i = 0; i < res->n_recs; i++) {
        const bench_record *rec = &res->recs[i];
        if ((step < 0 || rec->step == step) && rec->ok && rec->ttft >= 0) tmp[n++] = rec->ttft;
    }
    bench_stats_compute(tmp, n, &s->ttft);
    n = 0;
    for (size_t i = 0; i < res->n_recs; i++) {
        const bench_record *rec = &res->recs[i];
        if ((step < 0 || rec->step == step) && rec->ok && rec->tpot >= 0) tmp[n++] = rec->tpot;
    }
    bench_stats_compute(tmp, n, &s->tpot);
    /* ITL: tmp is too small for the gaps; use a dedicated copy. */
    size_t ni = 0;
    for (size_t i = 0; i < res->n_itl; i++) ni += step < 0 || res->itl_step[i] == step;
    double *g = ni ? malloc(ni * sizeof *g) : NULL;
    if (g) {
        size_t j = 0;
        for (size_t i = 0; i < res->n_itl; i++)
            if (step < 0 || res->itl_step[i] == step) g[j++] = res->itl[i];
        bench_stats_compute(g, j, &s->itl);
        free(g);
    }
    s->duration_s = s->requests ? t_last - t_first : 0;
    if (s->duration_s > 0) {
        s->output_tok_s = (double)s->out_tokens / s->duration_s;
        s->requests_s = (double)s->ok / s->duration_s;
        s->goodput = (double)met / s->duration_s;
    }
    s->error_rate = s->requests ? (double)(s->requests - s->ok) / (double)s->requests : 0;
    s->sla_pass = s->ok > 0 && s->e2e.p95 <= c->sla_p95_s && s->error_rate <= c->sla_max_error_rate &&
                  !(c->sla_ttft_p95_s > 0 && s->ttft.n > 0 && s->ttft.p95 > c->sla_ttft_p95_s);
}

/* ---- the cache hit counters of GET /cache/stats ---------------------------------- */

#define GET_MAX (4u << 20) /* longest /cache/stats or /metrics page read */

static size_t collect(char *data, size_t size, size_t nmemb, void *user) {
    char **buf = user;
    size_t n = size * nmemb, have = *buf ? strlen(*buf) : 0;
    if (n > GET_MAX - have) return 0;
    char *nb = realloc(*buf, have + n + 1);
    if (!nb) return 0;
    memcpy(nb + have, data, n);
    nb[have + n] = 0;
    *buf = nb;
    return n;
}

static bool get_hits(json_t *o, double *hits, double *misses) {
    json_t *h = json_object_get(o, "hits"), *m = json_object_get(o, "misses");
    if (json_is_number(h) && json_is_number(m)) {
        *hits = json_number_value(h);
        *misses = json_number_value(m);
        return true;
    }
    return false;
}

/* GET <base><path> (blocking, short timeouts). Returns the body (caller
 * frees) on HTTP 200, else NULL. */
static char *http_get(const run *r, const char *path, long timeout_ms) {
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    char *url = malloc(strlen(r->base) + strlen(path) + 1), *buf = NULL;
    long status = 0;
    if (!url) goto done;
    sprintf(url, "%s%s", r->base, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 3000 ? timeout_ms : 3000L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &buf);
    if (curl_easy_perform(e) != CURLE_OK || !buf) goto fail;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) goto fail;
    goto done;
fail:
    free(buf);
    buf = NULL;
done:
    free(url);
    curl_easy_cleanup(e);
    return buf;
}

/* Reads hits and misses from GET <base>/cache/stats: top-level "hits" and
 * "misses", else those of a "response" object, else the sum over the
 * object's members that have them. False when the server has no such route. */
static bool cache_counters(const run *r, double *hits, double *misses) {
    char *buf = http_get(r, "/cache/stats", 5000);
    bool ok = false;
    if (!buf) return false;
    json_t *o = json_loads(buf, 0, NULL);
    if (json_is_object(o)) {
        ok = get_hits(o, hits, misses) || get_hits(json_object_get(o, "response"), hits, misses);
        if (!ok) {
            const char *k;
            json_t *v;
            double h = 0, m = 0, hh, mm;
            json_object_foreach(o, k, v) {
                if (json_is_object(v) && get_hits(v, &hh, &mm)) {
                    h += hh, m += mm;
                    ok = true;
                }
            }
            *hits = h, *misses = m;
        }
    }
    json_decref(o);
    free(buf);
    return ok;
}

/* ---- kiln-oriented scenarios: prefix, shared-prefix, spec -------------------------- */

/* A request body for these scenarios: greedy, streamed, cache off. `spec` is
 * NULL or the "speculative" mode. Caller frees the result. */
static char *make_body_ex(const run *r, const char *prompt, int max_tokens, long long seed, const char *spec) {
    body_opts b = {.prompt = prompt, .max_tokens = max_tokens, .seed = seed, .ignore_eos = true, .cache_off = true,
                   .greedy = true, .spec = spec};
    return body_json(r, &b);
}

/* "a" + "b" (+ "c"), freshly allocated; NULL when out of memory. */
static char *cat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) : 0;
    char *s = malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    if (lc) memcpy(s + la + lb, c, lc);
    s[la + lb + lc] = 0;
    return s;
}

/* Runs one request to its end (sequential scenarios). Returns false when it
 * failed; *out is its record. */
static bool run_one(run *r, char *body, int step, bench_record *out) {
    size_t before = r->res->n_recs;
    launch_body(r, body, step);
    while (r->inflight > 0) {
        drain(r);
        if (r->inflight == 0) break;
        progress(r, NULL, false);
        curl_multi_poll(r->multi, NULL, 0, 100, NULL);
    }
    progress(r, NULL, false);
    if (r->res->n_recs == before) {
        memset(out, 0, sizeof *out);
        return false;
    }
    *out = r->res->recs[r->res->n_recs - 1];
    return out->ok;
}

static double median_of(double *v, size_t n) {
    bench_stats st;
    bench_stats_compute(v, n, &st);
    return st.n ? st.p50 : -1;
}

static const char *const SUFFIX_A = "\n\nQuestion: which word comes first in the text above?\nAnswer:";
static const char *const SUFFIX_B = "\n\nQuestion: how many times does the word \"the\" appear above?\nAnswer:";

/* prefix: per round a cold request, `between` others, a warm one. */
static kn_status prefix_loop(run *r, kn_err *err) {
    const bench_config *c = r->cfg;
    bench_extra *x = &r->res->x;
    int rounds = (int)c->requests, k_between = c->between, mt = c->prompts->items[0].max_tokens;
    size_t per = (size_t)k_between + 1;
    bench_dataset ds = {0};
    kn_status st = bench_dataset_synth((size_t)rounds * per, c->prefix_tokens, mt, c->seed ^ 0x70726566u, &ds, err);
    if (st != KN_OK) return st;
    double *tmp = malloc(((size_t)k_between + (size_t)rounds + 1) * sizeof *tmp);
    x->rounds = calloc((size_t)rounds, sizeof *x->rounds);
    if (!tmp || !x->rounds) {
        st = kn_fail(err, KN_ENOMEM, "out of memory for %d rounds", rounds);
        goto done;
    }
    long long seq = 0;
    for (int i = 0; i < rounds && !r->stop && !r->oom; i++) {
        bench_prefix_round *rd = &x->rounds[x->n_rounds++];
        rd->cold_ttft = rd->warm_ttft = rd->between_ttft_p50 = rd->ratio = -1;
        rd->prompt_tokens = -1;
        const char *prefix = ds.items[(size_t)i * per].text;
        bench_record rec;
        char *p = cat3(prefix, SUFFIX_A, NULL);
        if (run_one(r, p ? make_body_ex(r, p, mt, (long long)c->seed + seq++, NULL) : NULL, 0, &rec)) {
            rd->cold_ttft = rec.ttft;
            rd->prompt_tokens = rec.prompt_tokens;
        }
        free(p);
        size_t nb = 0;
        for (int k = 0; k < k_between && !r->stop && !r->oom; k++) {
            p = cat3(ds.items[(size_t)i * per + 1 + (size_t)k].text, SUFFIX_A, NULL);
            if (run_one(r, p ? make_body_ex(r, p, mt, (long long)c->seed + seq++, NULL) : NULL, 1, &rec) &&
                rec.ttft >= 0)
                tmp[nb++] = rec.ttft;
            free(p);
        }
        rd->between_ttft_p50 = median_of(tmp, nb);
        if (r->stop || r->oom) break;
        p = cat3(prefix, SUFFIX_B, NULL);
        if (run_one(r, p ? make_body_ex(r, p, mt, (long long)c->seed + seq++, NULL) : NULL, 2, &rec))
            rd->warm_ttft = rec.ttft;
        free(p);
        if (rd->cold_ttft > 0 && rd->warm_ttft >= 0) rd->ratio = rd->warm_ttft / rd->cold_ttft;
    }
    /* medians over the rounds that have each figure */
    double *fields[4] = {&x->cold_ttft, &x->warm_ttft, &x->between_ttft, &x->ratio};
    for (int f = 0; f < 4; f++) {
        size_t n = 0;
        for (int i = 0; i < x->n_rounds; i++) {
            const bench_prefix_round *rd = &x->rounds[i];
            double v = f == 0 ? rd->cold_ttft : f == 1 ? rd->warm_ttft : f == 2 ? rd->between_ttft_p50 : rd->ratio;
            if (v >= 0) tmp[n++] = v;
        }
        *fields[f] = median_of(tmp, n);
    }
    size_t n = 0;
    for (int i = 0; i < x->n_rounds; i++)
        if (x->rounds[i].prompt_tokens >= 0) tmp[n++] = (double)x->rounds[i].prompt_tokens;
    x->prefix_prompt_tokens = n ? (long long)(median_of(tmp, n) + 0.5) : -1;
    x->has_prefix = x->ratio >= 0;
done:
    free(tmp);
    bench_dataset_free(&ds);
    return st;
}

/* One /metrics read for shared-prefix: updates the peaks. */
static void poll_kv(run *r) {
    bench_extra *x = &r->res->x;
    char *page = http_get(r, "/metrics", 2000);
    double used, logical;
    if (page && bench_metric_value(page, "kiln_kv_used_bytes", r->cfg->model, &used) &&
        bench_metric_value(page, "kiln_kv_logical_bytes", r->cfg->model, &logical)) {
        if (!x->has_kv || used > x->kv_used_peak) x->kv_used_peak = used;
        if (!x->has_kv || logical > x->kv_logical_peak) {
            x->kv_logical_peak = logical;
            x->kv_used_at_logical_peak = used;
        }
        x->has_kv = true;
        x->kv_polls++;
    }
    free(page);
}

/* shared-prefix: `concurrency` requests at once, /metrics every ~50 ms. */
static kn_status shared_prefix_loop(run *r, kn_err *err) {
    const bench_config *c = r->cfg;
    int n = c->concurrency, mt = c->prompts->items[0].max_tokens;
    bench_dataset pre = {0}, ends = {0};
    kn_status st = bench_dataset_synth(1, c->prefix_tokens, mt, c->seed ^ 0x73797374u, &pre, err);
    if (st == KN_OK) st = bench_dataset_synth((size_t)n, 16, mt, c->seed ^ 0x656e6473u, &ends, err);
    if (st != KN_OK) goto done;
    char *sys = cat3("System: ", pre.items[0].text, "\n\nUser ");
    if (!sys) {
        st = kn_fail(err, KN_ENOMEM, "out of memory for the shared prefix");
        goto done;
    }
    poll_kv(r);
    for (int i = 0; i < n && !r->oom; i++) {
        char tail[64];
        snprintf(tail, sizeof tail, "%d: ", i + 1);
        char *head = cat3(sys, tail, ends.items[i].text);
        char *p = head ? cat3(head, "\nAssistant:", NULL) : NULL;
        launch_body(r, p ? make_body_ex(r, p, mt, (long long)c->seed + i, NULL) : NULL, 0);
        free(head);
        free(p);
    }
    free(sys);
    double next_poll = 0;
    while (r->inflight > 0) {
        drain(r);
        double t = now_rel(r);
        if (t >= next_poll) {
            poll_kv(r);
            next_poll = now_rel(r) + 0.05;
        }
        if (r->inflight == 0) break;
        progress(r, NULL, false);
        double w = (next_poll - now_rel(r)) * 1000;
        curl_multi_poll(r->multi, NULL, 0, w > 50 ? 50 : w < 1 ? 1 : (int)w, NULL);
    }
done:
    bench_dataset_free(&pre);
    bench_dataset_free(&ends);
    return st;
}

/* A ~60-word paragraph to repeat (a raw completion prompt, no template). */
static const char *const SPEC_PARAGRAPH =
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, polished the "
    "great glass lens, and wound the clockwork that turned the light. Ships far out at sea watched for its steady "
    "beam, and sailors told stories about the quiet man who never missed a night, even when the winter storms "
    "shook the tower to its stones.";

static bool spec_counters(const run *r, double *draft, double *acc) {
    char *page = http_get(r, "/metrics", 5000);
    bool ok = page && bench_metric_value(page, "kiln_spec_draft_tokens_total", r->cfg->model, draft) &&
              bench_metric_value(page, "kiln_spec_accepted_tokens_total", r->cfg->model, acc);
    free(page);
    return ok;
}

/* spec: the same `requests` prompts with "speculative": "none", then "ngram". */
static kn_status spec_loop(run *r, kn_err *err) {
    const bench_config *c = r->cfg;
    bench_extra *x = &r->res->x;
    int n = (int)c->requests, mt = c->prompts->items[0].max_tokens;
    char **texts = calloc((size_t)n * 2, sizeof *texts);
    if (!texts) return kn_fail(err, KN_ENOMEM, "out of memory");
    r->capture_text = true;
    bool all_ok = true;
    double d0 = 0, a0 = 0, d1 = 0, a1 = 0;
    bool have0 = false;
    for (int mode = 0; mode < 2 && !r->stop && !r->oom; mode++) {
        if (mode == 1) have0 = spec_counters(r, &d0, &a0);
        double tok = 0, secs = 0;
        for (int i = 0; i < n && !r->stop && !r->oom; i++) {
            char head[64];
            snprintf(head, sizeof head, "Exercise %d. Here is a paragraph:\n\n", i + 1);
            char *a = cat3(head, SPEC_PARAGRAPH, "\n\nRepeat the paragraph again:\n\n");
            char *p = a ? cat3(a, SPEC_PARAGRAPH, "\n\nRepeat the paragraph again:\n\n") : NULL;
            bench_record rec;
            bool ok = run_one(r, p ? make_body_ex(r, p, mt, (long long)c->seed + i, mode ? "ngram" : "none") : NULL,
                              mode, &rec);
            free(a);
            free(p);
            if (ok && rec.ttft >= 0 && rec.e2e > rec.ttft) {
                tok += (double)rec.out_tokens;
                secs += rec.e2e - rec.ttft;
            }
            if (ok) {
                texts[(size_t)mode * (size_t)n + (size_t)i] = r->last_text;
                r->last_text = NULL;
            } else {
                all_ok = false;
            }
        }
        if (secs > 0) {
            x->has_spec_rate[mode] = true;
            x->spec_tok_s[mode] = tok / secs;
        }
    }
    if (have0 && !r->stop && spec_counters(r, &d1, &a1)) {
        x->has_accept = true;
        x->spec_draft = d1 - d0;
        x->spec_accepted = a1 - a0;
        x->spec_accept_rate = x->spec_draft > 0 ? x->spec_accepted / x->spec_draft : NAN;
    }
    x->spec_identical = -1;
    if (all_ok && !r->stop && !r->oom) {
        x->spec_identical = 1;
        for (int i = 0; i < n; i++) {
            const char *t0 = texts[i], *t1 = texts[(size_t)n + (size_t)i];
            if (!t0 || !t1 || strcmp(t0, t1)) x->spec_identical = 0;
        }
    }
    for (int i = 0; i < 2 * n; i++) free(texts[i]);
    free(texts);
    r->capture_text = false;
    return KN_OK;
}

/* ---- bench_stream_run ------------------------------------------------------------- */

/* Frees what run_open set up (accepts a partly set up r). */
static void run_close(run *r) {
    if (r->slots)
        for (int i = 0; i < r->n_slots; i++) {
            if (r->slots[i].easy && r->multi) curl_multi_remove_handle(r->multi, r->slots[i].easy);
            slot_free(&r->slots[i]);
        }
    free(r->slots);
    free(r->free_ids);
    free(r->last_text);
    if (r->multi) curl_multi_cleanup(r->multi);
    curl_slist_free_all(r->hdrs);
    free(r->base);
    free(r->endpoint);
}

/* Sets r up for cfg and res: URLs, headers, the request slots of the
 * scenario's concurrency, the multi handle, the steps of res. */
static kn_status run_open(run *r, const bench_config *cfg, bench_result *res, kn_err *err) {
    *r = (run){.cfg = cfg, .res = res};
    if (!bench_urls(cfg->url, &r->base, &r->endpoint) ||
        !(r->hdrs = bench_headers("Accept: text/event-stream", cfg->api_key)))
        return kn_fail(err, KN_ENOMEM, "out of memory");
    int conc = cfg->scenario == BENCH_THROUGHPUT || cfg->scenario == BENCH_SHARED_PREFIX ? cfg->concurrency
               : cfg->scenario == BENCH_RAMP                                             ? BENCH_MAX_INFLIGHT
                                                                                         : 1;
    r->n_slots = conc;
    r->slots = calloc((size_t)conc, sizeof *r->slots);
    r->free_ids = malloc((size_t)conc * sizeof *r->free_ids);
    r->multi = curl_multi_init();
    if (!r->slots || !r->free_ids || !r->multi)
        return kn_fail(err, KN_ENOMEM, "out of memory for %d request slots", conc);
    for (int i = 0; i < conc; i++) r->free_ids[r->n_free++] = conc - 1 - i;
    r->abort_after = conc * 2 > 20 ? conc * 2 : 20;
    if (r->abort_after > 200) r->abort_after = 200;

    res->n_steps = cfg->scenario == BENCH_RAMP ? cfg->ramp_steps : cfg->scenario == BENCH_LATENCY ? 2 : 0;
    if (res->n_steps && !(res->steps = calloc((size_t)res->n_steps, sizeof *res->steps)))
        return kn_fail(err, KN_ENOMEM, "out of memory");
    return KN_OK;
}

/* The progress line's units: requests (scale 0) or tenths of seconds. */
static void progress_units(run *r) {
    const bench_config *cfg = r->cfg;
    if (cfg->scenario == BENCH_RAMP) {
        r->prog_scale = 10, r->prog_total = (uint64_t)(cfg->ramp_duration_s * 10);
    } else if (cfg->scenario == BENCH_PREFIX) {
        r->prog_scale = 0, r->prog_total = (uint64_t)cfg->requests * (uint64_t)(cfg->between + 2);
    } else if (cfg->scenario == BENCH_SHARED_PREFIX) {
        r->prog_scale = 0, r->prog_total = (uint64_t)cfg->concurrency;
    } else if (cfg->scenario == BENCH_SPEC) {
        r->prog_scale = 0, r->prog_total = (uint64_t)cfg->requests * 2;
    } else if (cfg->requests > 0) {
        r->prog_scale = 0, r->prog_total = (uint64_t)cfg->requests * (cfg->scenario == BENCH_LATENCY ? 2 : 1);
    } else {
        r->prog_scale = 10,
        r->prog_total = (uint64_t)(cfg->duration_s * 10) * (cfg->scenario == BENCH_LATENCY ? 2 : 1);
    }
}

/* Runs the scenario's requests, with the progress line. */
static kn_status run_scenario(run *r, kn_err *err) {
    const bench_config *cfg = r->cfg;
    kn_status st = KN_OK;
    progress_units(r);
    r->t0 = kn_now_s();
    if (cfg->progress) kn_progress_begin(&r->prog, "bench server", r->prog_total ? r->prog_total : 1);
    switch (cfg->scenario) {
    case BENCH_LATENCY: {
        long long n = closed_loop(r, 1, cfg->requests, cfg->duration_s, true, 0);
        if (!r->stop && !r->oom && n > 0) {
            closed_loop(r, 1, n, 0, false, 1); /* the same requests again, cache allowed */
        }
        break;
    }
    case BENCH_THROUGHPUT: closed_loop(r, cfg->concurrency, cfg->requests, cfg->duration_s, false, 0); break;
    case BENCH_RAMP: ramp_loop(r); break;
    case BENCH_PREFIX: st = prefix_loop(r, err); break;
    case BENCH_SHARED_PREFIX: st = shared_prefix_loop(r, err); break;
    case BENCH_SPEC: st = spec_loop(r, err); break;
    case BENCH_CACHE: break; /* cache.c */
    }
    if (st != KN_OK) {
        if (cfg->progress) kn_progress_end(&r->prog);
        return st;
    }
    progress(r, NULL, true);
    if (cfg->progress) kn_progress_end(&r->prog);
    free(r->last_text);
    r->last_text = NULL;
    if (r->oom) return kn_fail(err, KN_ENOMEM, "out of memory while recording results");
    return KN_OK;
}

/* The summaries of res: over all records, then per step (ramp steps get
 * their rates over their arrival windows, and the knee). */
static kn_status summarize_all(const bench_config *cfg, bench_result *res, kn_err *err) {
    double *tmp = res->n_recs ? malloc(res->n_recs * sizeof *tmp) : NULL;
    if (res->n_recs && !tmp) return kn_fail(err, KN_ENOMEM, "out of memory");
    summarize(cfg, res, -1, tmp, &res->all);
    if (cfg->scenario >= BENCH_PREFIX) /* these pass unless a request failed */
        res->all.sla_pass = res->all.ok > 0 && res->all.ok == res->all.requests;
    for (int k = 0; k < res->n_steps; k++) {
        bench_step *s = &res->steps[k];
        summarize(cfg, res, k, tmp, &s->s);
        if (cfg->scenario == BENCH_RAMP) {
            double len = s->t1 - s->t0;
            /* per-step rates over the step's arrival window */
            long long met = 0;
            for (size_t i = 0; i < res->n_recs; i++) met += res->recs[i].step == k && res->recs[i].met_sla;
            s->s.requests_s = len > 0 ? (double)s->s.ok / len : 0;
            s->s.output_tok_s = len > 0 ? (double)s->s.out_tokens / len : 0;
            s->s.goodput = len > 0 ? (double)met / len : 0;
            s->breaks_sla = s->s.requests > 0 && !s->s.sla_pass;
            if (s->breaks_sla && res->knee < 0) res->knee = k;
        }
    }
    free(tmp);
    return KN_OK;
}

kn_status bench_stream_run(const bench_config *cfg, bench_result **out, kn_err *err) {
    *out = NULL;
    run r = {0};
    bench_result *res = calloc(1, sizeof *res);
    if (!res) return kn_fail(err, KN_ENOMEM, "out of memory");
    res->cfg = *cfg;
    res->knee = -1;
    kn_status st = run_open(&r, cfg, res, err);
    double h0 = 0, m0 = 0, h1 = 0, m1 = 0;
    bool have0 = st == KN_OK && cache_counters(&r, &h0, &m0);
    if (st == KN_OK) st = run_scenario(&r, err);
    if (st == KN_OK) {
        /* kiln's response-cache hit rate over the run, from GET /cache/stats */
        bool have1 = have0 && cache_counters(&r, &h1, &m1);
        if (have1 && (h1 - h0) + (m1 - m0) > 0) {
            res->has_cache_rate = true;
            res->cache_hit_rate = (h1 - h0) / ((h1 - h0) + (m1 - m0));
        }
        st = summarize_all(cfg, res, err);
    }
    run_close(&r);
    if (st != KN_OK) {
        bench_result_destroy(res);
        return st;
    }
    *out = res;
    return KN_OK;
}
