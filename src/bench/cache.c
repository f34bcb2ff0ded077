/*
 * cache.c — the cache scenario of `kiln bench server` (issue 9): the
 * server-side latency of response-cache hits from L1 and L2, the hit
 * throughput of concurrent clients, and the L1 memory per entry. See the
 * scenario list in bench.h.
 *
 * Owns its own libcurl handles (one easy handle reused for the sequential
 * phases, a multi handle with `concurrency` easy handles for the throughput
 * phase): these requests are non-streamed JSON answers whose response
 * headers (X-Cache, Server-Timing) carry the figures, unlike the SSE streams
 * of run.c. Every untrusted length is bounded (bodies by BENCH_MAX_BODY,
 * /cache/stats pages by STATS_MAX).
 *
 * The run fails (bench_cache_run returns an error) when the server is not a
 * kiln server with the response cache: GET /cache/stats missing or malformed,
 * its enabled.response false, or an answer without X-Cache or with
 * X-Cache: bypass. A request that fails stops the run; its record and
 * `aborted` say why, and the result does not pass.
 *
 * bench_run (bench.c) calls bench_cache_run; the libcurl plumbing shared
 * with run.c is in http.c.
 */
#include "internal.h"

#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STATS_MAX (1u << 20) /* longest /cache/stats or /cache/clear answer read */

typedef enum xcache { XC_NONE = 0, XC_HIT, XC_MISS, XC_BYPASS, XC_OTHER } xcache;

/* One request in flight (or the sequential handle). */
typedef struct creq {
    CURL *easy;
    char *req;        /* owned: the request body */
    kn_buf body;      /* the response body, at most BENCH_MAX_BODY */
    bool too_big;     /* the body hit the bound */
    xcache xc;        /* X-Cache of the response */
    double server_ms; /* Server-Timing total, < 0 when absent */
    double t_start;   /* kn_now_s when handed to libcurl */
    long long idx;    /* prompt index */
    char curl_err[CURL_ERROR_SIZE];
} creq;

/* A growable array of samples. */
typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

typedef struct cache_run {
    const bench_config *cfg;
    bench_result *res;
    bench_cache_figures *fig; /* == res->x.cache */
    char *base, *endpoint;
    struct curl_slist *hdrs;
    long long n;  /* distinct prompts */
    char **texts; /* [n] owned: the populate answers' texts (NULL when that request failed) */
    size_t cap_recs;
    samples l1s, l1c, l2s, l2c, ths, thc; /* server / client ms of phases 2, 3, 4 */
    double t0;
    bool stop, oom;
    bool refill;     /* phase-0 requests now refill L1 (no L2), not counted as the populate */
    char fatal[400]; /* non-empty: the server is not usable for this scenario */
    kn_progress prog;
    bool prog_on;
    double prog_last;
    uint64_t prog_base; /* progress units done before the current phase */
    const char *phase_note;
} cache_run;

/* ---- small helpers ------------------------------------------------------------ */

static bool samples_add(cache_run *cr, samples *s, double v) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        double *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            cr->oom = true;
            return false;
        }
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = v;
    return true;
}

static char *dup_str(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* Trims spaces and tabs at both ends of [*p, *p + *n). */
static void trim(const char **p, size_t *n) {
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    while (*n &&
           ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t' || (*p)[*n - 1] == '\r' || (*p)[*n - 1] == '\n'))
        (*n)--;
}

bool bench_server_timing(const char *value, size_t len, const char *metric, double *ms) {
    size_t ml = strlen(metric);
    const char *p = value, *end = value + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *me = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(me - p));
        const char *name = p;
        size_t nl = (size_t)((semi ? semi : me) - p);
        trim(&name, &nl);
        if (nl == ml && !strncasecmp(name, metric, ml) && semi) {
            const char *q = semi + 1;
            while (q < me) { /* parameters: ";"-separated name=value */
                const char *qe = memchr(q, ';', (size_t)(me - q));
                if (!qe) qe = me;
                const char *prm = q;
                size_t pl = (size_t)(qe - q);
                trim(&prm, &pl);
                if (pl > 4 && !strncasecmp(prm, "dur=", 4)) {
                    char num[64];
                    size_t k = pl - 4 < sizeof num - 1 ? pl - 4 : sizeof num - 1;
                    memcpy(num, prm + 4, k);
                    num[k] = 0;
                    char *stop = NULL;
                    double v = strtod(num, &stop);
                    if (stop != num && *stop == 0 && isfinite(v) && v >= 0) {
                        *ms = v;
                        return true;
                    }
                    return false;
                }
                q = qe + 1;
            }
        }
        p = me + 1;
    }
    return false;
}

/* ---- libcurl callbacks ----------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    creq *q = user;
    size_t n = size * nmemb;
    if (!kn_buf_add(&q->body, data, n, BENCH_MAX_BODY)) {
        q->too_big = true;
        return 0; /* aborts the transfer */
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *user) {
    creq *q = user;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response (after a 1xx): forget earlier headers */
        q->xc = XC_NONE;
        q->server_ms = -1;
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon) return n;
    const char *name = data, *val = colon + 1;
    size_t nl = (size_t)(colon - data), vl = n - nl - 1;
    trim(&name, &nl);
    trim(&val, &vl);
    if (nl == 7 && !strncasecmp(name, "X-Cache", 7)) {
        q->xc = vl == 3 && !strncasecmp(val, "hit", 3)      ? XC_HIT
                : vl == 4 && !strncasecmp(val, "miss", 4)   ? XC_MISS
                : vl == 6 && !strncasecmp(val, "bypass", 6) ? XC_BYPASS
                                                            : XC_OTHER;
    } else if (nl == 13 && !strncasecmp(name, "Server-Timing", 13)) {
        double ms;
        if (bench_server_timing(val, vl, "total", &ms)) q->server_ms = ms;
    }
    return n;
}

static kn_status req_init(cache_run *cr, creq *q, kn_err *err) {
    void *e = NULL;
    kn_status st = bench_easy_post(&e, cr->cfg, cr->endpoint, cr->hdrs, on_body, on_header, q, q->curl_err, err);
    q->easy = e;
    return st;
}

static void req_free(creq *q) {
    if (q->easy) curl_easy_cleanup(q->easy);
    free(q->req);
    kn_buf_free(&q->body);
}

/* The body of prompt idx: greedy, not streamed. Prompts past the dataset's
 * end get a "<round>. " prefix so that all n stay distinct. Caller frees. */
static char *make_request(const cache_run *cr, long long idx) {
    const bench_config *c = cr->cfg;
    const bench_prompt *p = &c->prompts->items[(size_t)idx % c->prompts->n];
    long long lap = idx / (long long)c->prompts->n;
    char *prompt = NULL, *s = NULL;
    if (lap > 0) {
        size_t l = strlen(p->text) + 32;
        prompt = malloc(l);
        if (!prompt) return NULL;
        snprintf(prompt, l, "%lld. %s", lap, p->text);
    }
    json_t *o = json_object();
    if (!o) goto done;
    bool bad = json_object_set_new(o, "model", json_string(c->model)) ||
               json_object_set_new(o, "prompt", json_string(prompt ? prompt : p->text)) ||
               json_object_set_new(o, "max_tokens", json_integer(p->max_tokens)) ||
               json_object_set_new(o, "temperature", json_real(0)) ||
               json_object_set_new(o, "stream", json_false()) ||
               (c->ignore_eos && json_object_set_new(o, "ignore_eos", json_true()));
    if (!bad) s = json_dumps(o, JSON_COMPACT);
done:
    json_decref(o);
    free(prompt);
    return s;
}

/* Prepares q for prompt idx (its body built and set). False when out of memory. */
static bool req_prepare(cache_run *cr, creq *q, long long idx) {
    free(q->req);
    q->req = make_request(cr, idx);
    if (!q->req) {
        cr->oom = true;
        return false;
    }
    q->idx = idx;
    q->body.n = 0;
    if (q->body.p) q->body.p[0] = 0;
    q->too_big = false;
    q->xc = XC_NONE;
    q->server_ms = -1;
    q->curl_err[0] = 0;
    return curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(q->req)) == CURLE_OK &&
           curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, q->req) == CURLE_OK;
}

static void push_record(cache_run *cr, const bench_record *rec) {
    bench_result *res = cr->res;
    if (res->n_recs == cr->cap_recs) {
        size_t nc = cr->cap_recs ? cr->cap_recs * 2 : 256;
        bench_record *nr = realloc(res->recs, nc * sizeof *nr);
        if (!nr) {
            cr->oom = true;
            return;
        }
        res->recs = nr;
        cr->cap_recs = nc;
    }
    res->recs[res->n_recs++] = *rec;
}

static void fail_run(cache_run *cr, bench_errkind k, const char *detail) {
    bench_result *res = cr->res;
    if (!res->first_error[0])
        snprintf(res->first_error, sizeof res->first_error, "%s: %s", bench_errkind_name(k), detail);
    if (!cr->stop)
        snprintf(res->aborted, sizeof res->aborted,
                 "a request failed (%s), so the cache figures would be wrong", bench_errkind_name(k));
    cr->stop = true;
}

static const char *xcache_name(xcache x) {
    switch (x) {
    case XC_HIT: return "hit";
    case XC_MISS: return "miss";
    case XC_BYPASS: return "bypass";
    case XC_OTHER: return "an unknown value";
    case XC_NONE: break;
    }
    return "absent";
}

/* Accounts a finished request of `phase` (0 populate, 1 L1, 2 L2, 3
 * throughput): its record, its samples, the checks of its X-Cache and text. */
static void settle(cache_run *cr, creq *q, CURLcode rc, double t_end, int phase) {
    bench_cache_figures *fig = cr->fig;
    long status = 0;
    curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
    bench_record rec = {.t_start = q->t_start - cr->t0,
                        .t_end = t_end - cr->t0,
                        .step = phase,
                        .ttft = -1,
                        .tpot = -1,
                        .prompt_tokens = -1};
    bench_errkind kind = BENCH_ERR_COUNT;
    char detail[320];
    detail[0] = 0;
    json_t *doc = NULL;
    const char *text = NULL;
    size_t text_len = 0;
    if (rc == CURLE_OK && status == 200) {
        json_error_t je;
        doc = json_loadb(q->body.p ? q->body.p : "", q->body.n, 0, &je);
        json_t *ch = json_array_get(json_object_get(doc, "choices"), 0);
        json_t *t = json_object_get(ch, "text");
        if (!json_is_string(t)) {
            kind = BENCH_ERR_PROTOCOL;
            snprintf(detail, sizeof detail, "the answer is not a completion with choices[0].text%s%.200s",
                     doc ? "" : ": ", doc ? "" : je.text);
        } else {
            text = json_string_value(t);
            text_len = json_string_length(t);
            json_t *u = json_object_get(doc, "usage");
            json_t *ct = json_object_get(u, "completion_tokens"), *pt = json_object_get(u, "prompt_tokens");
            rec.out_tokens = json_is_integer(ct) ? (long long)json_integer_value(ct) : 0;
            if (json_is_integer(pt)) rec.prompt_tokens = (long long)json_integer_value(pt);
        }
    } else if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && !q->too_big && status != 0 && status != 200)) {
        kind = bench_classify_status(status);
        snprintf(detail, sizeof detail, "HTTP %ld: %.200s", status, q->body.p ? q->body.p : "");
    } else if (q->too_big) {
        kind = BENCH_ERR_PROTOCOL;
        snprintf(detail, sizeof detail, "the answer is longer than %u bytes", BENCH_MAX_BODY);
    } else {
        kind = bench_classify_curl(rc, q->easy);
        snprintf(detail, sizeof detail, "%s", q->curl_err[0] ? q->curl_err : curl_easy_strerror(rc));
    }
    if (kind != BENCH_ERR_COUNT) {
        rec.err = (int8_t)kind;
        push_record(cr, &rec);
        fail_run(cr, kind, detail);
        json_decref(doc);
        return;
    }
    rec.ok = rec.met_sla = true;
    rec.e2e = t_end - q->t_start;
    push_record(cr, &rec);
    if (q->xc == XC_NONE || q->xc == XC_BYPASS || q->xc == XC_OTHER) {
        if (!cr->fatal[0])
            snprintf(cr->fatal, sizeof cr->fatal,
                     q->xc == XC_BYPASS
                         ? "the server answered X-Cache: bypass to a greedy request: its response "
                           "cache is off (start kiln serve with --response-cache=true)"
                         : "not a kiln server with the response cache (X-Cache header %s in the "
                           "answer to POST /v1/completions)",
                     xcache_name(q->xc));
        cr->stop = true;
        json_decref(doc);
        return;
    }
    if (q->server_ms < 0) fig->no_timing++;
    double client_ms = rec.e2e * 1000;
    if (phase == 0) {
        if (!cr->refill) {
            if (q->xc == XC_MISS)
                fig->populate_misses++;
            else
                fig->populate_hits++;
        }
        free(cr->texts[q->idx]);
        cr->texts[q->idx] = dup_str(text, text_len);
        if (!cr->texts[q->idx]) cr->oom = true;
    } else if (q->xc != XC_HIT) {
        fig->not_hits[phase - 1]++;
    } else {
        const char *want = cr->texts[q->idx];
        if (!want || strlen(want) != text_len || memcmp(want, text, text_len)) fig->mismatched++;
        samples *ss = phase == 1 ? &cr->l1s : phase == 2 ? &cr->l2s : &cr->ths;
        samples *cs = phase == 1 ? &cr->l1c : phase == 2 ? &cr->l2c : &cr->thc;
        if (q->server_ms >= 0) samples_add(cr, ss, q->server_ms);
        samples_add(cr, cs, client_ms);
        if (phase == 3) fig->thr_hits++;
    }
    json_decref(doc);
}

/* ---- progress -------------------------------------------------------------------- */

static void progress(cache_run *cr, uint64_t in_phase, bool force) {
    if (!cr->prog_on) return;
    double t = kn_now_s();
    if (!force && t - cr->prog_last < 0.25) return;
    cr->prog_last = t;
    uint64_t done = cr->prog_base + in_phase;
    if (done > cr->prog.total) done = cr->prog.total;
    char note[160];
    snprintf(note, sizeof note, "%s, %zu requests", cr->phase_note, cr->res->n_recs);
    kn_progress_update(&cr->prog, done, note);
}

/* ---- side requests: /cache/stats and /cache/clear ------------------------------- */

static size_t on_side_body(char *data, size_t size, size_t nmemb, void *user) {
    size_t n = size * nmemb;
    return kn_buf_add(user, data, n, STATS_MAX) ? n : 0;
}

/* GET (post == NULL) or POST <base><path>. Returns the parsed JSON answer
 * (caller decrefs) or NULL; *status is the HTTP status (0: no answer). */
static json_t *side_request(const cache_run *cr, const char *path, const char *post, long *status) {
    *status = 0;
    CURL *e = curl_easy_init();
    kn_buf b = {0};
    json_t *o = NULL;
    size_t ul = strlen(cr->base) + strlen(path) + 1;
    char *url = malloc(ul);
    if (!e || !url) goto done;
    snprintf(url, ul, "%s%s", cr->base, path);
    long tmo = (long)(cr->cfg->timeout_s * 1000.0 + 0.5);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, tmo > 0 ? tmo : 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(cr->cfg->connect_timeout_s * 1000.0 + 0.5));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, cr->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_side_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (post) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
    }
    if (curl_easy_perform(e) != CURLE_OK) goto done;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    if (b.p) o = json_loadb(b.p, b.n, 0, NULL);
done:
    kn_buf_free(&b);
    free(url);
    if (e) curl_easy_cleanup(e);
    return o;
}

static bool get_int(json_t *o, const char *k, long long *v) {
    json_t *x = json_object_get(o, k);
    if (json_is_integer(x))
        *v = (long long)json_integer_value(x);
    else if (json_is_real(x) && isfinite(json_real_value(x)))
        *v = (long long)llround(json_real_value(x));
    else
        return false;
    return true;
}

/* /cache/stats -> <tier>.response.<field>. */
static bool stat_of(json_t *st, const char *tier, const char *field, long long *v) {
    return get_int(json_object_get(json_object_get(st, tier), "response"), field, v);
}

/* GET /cache/stats; a page without l1.response.hits sets cr->fatal. */
static json_t *get_stats(cache_run *cr) {
    long status;
    json_t *st = side_request(cr, "/cache/stats", NULL, &status);
    long long v;
    if (status == 200 && json_is_object(st) && stat_of(st, "l1", "hits", &v)) return st;
    json_decref(st);
    if (!cr->fatal[0]) {
        if (status == 0)
            snprintf(cr->fatal, sizeof cr->fatal,
                     "GET %.200s/cache/stats: no answer (is the server running?)", cr->base);
        else if (status == 200)
            snprintf(
                cr->fatal, sizeof cr->fatal,
                "not a kiln server with the response cache (GET /cache/stats has no l1.response counters)");
        else
            snprintf(cr->fatal, sizeof cr->fatal,
                     "not a kiln server with the response cache (GET /cache/stats: HTTP %ld)", status);
    }
    cr->stop = true;
    return NULL;
}

/* ---- phases ------------------------------------------------------------------------ */

/* One sequential request of prompt idx on q. */
static void seq_one(cache_run *cr, creq *q, long long idx, int phase) {
    if (!req_prepare(cr, q, idx)) return;
    q->t_start = kn_now_s();
    CURLcode rc = curl_easy_perform(q->easy);
    settle(cr, q, rc, kn_now_s(), phase);
}

/* The n prompts once, in order, as `phase`. */
static void seq_pass(cache_run *cr, creq *q, int phase) {
    for (long long i = 0; i < cr->n && !cr->stop && !cr->oom; i++) {
        seq_one(cr, q, i, phase);
        progress(cr, (uint64_t)i + 1, false);
    }
    cr->prog_base += (uint64_t)cr->n;
}

/* Phase 3: rounds x (clear L1 of the model's responses, the n prompts once). */
static void l2_phase(cache_run *cr, creq *q) {
    bench_cache_figures *fig = cr->fig;
    const bench_config *c = cr->cfg;
    json_t *st = get_stats(cr);
    long long l2e = 0;
    if (!st) return;
    /* L2 writes are asynchronous: a clear flushes them, so count after one. */
    json_t *body = json_pack("{s:s, s:s, s:s}", "type", "response", "model", c->model, "tier", "l1");
    char *clear = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    json_decref(st);
    if (!clear) {
        cr->oom = true;
        return;
    }
    fig->has_l2 = true;
    for (int round = 0; round < c->rounds && !cr->stop && !cr->oom; round++) {
        long status;
        json_t *ans = side_request(cr, "/cache/clear", clear, &status);
        bool ok = status == 200 && json_is_integer(json_object_get(ans, "cleared"));
        json_decref(ans);
        if (!ok) {
            snprintf(
                cr->fatal, sizeof cr->fatal,
                "POST /cache/clear {\"type\": \"response\", \"model\": \"%.100s\", \"tier\": \"l1\"}: %s%ld "
                "(a kiln server with the response cache answers 200 {\"cleared\": N})",
                c->model, status ? "HTTP " : "no answer", status);
            cr->stop = true;
            break;
        }
        long long h0 = 0, h1 = 0;
        st = get_stats(cr);
        if (!st) break;
        bool have0 = stat_of(st, "l2", "hits", &h0) && stat_of(st, "l2", "entries", &l2e);
        json_decref(st);
        if (round == 0 && have0 && l2e == 0) {
            /* A server without L2 (--cache-disk-size 0): refill L1 for the throughput phase. */
            fig->has_l2 = false;
            cr->refill = true;
            cr->phase_note = "no L2: refilling L1";
            seq_pass(cr, q, 0);
            break;
        }
        seq_pass(cr, q, 2);
        fig->l2_requests += cr->n;
        st = get_stats(cr);
        if (have0 && st && stat_of(st, "l2", "hits", &h1)) fig->l2_hits += h1 - h0;
        json_decref(st);
    }
    free(clear);
}

/* Phase 4: `concurrency` clients replaying the prompts for duration_s or
 * requests_total requests. */
static kn_status throughput_phase(cache_run *cr, kn_err *err) {
    const bench_config *c = cr->cfg;
    bench_cache_figures *fig = cr->fig;
    int conc = c->concurrency;
    kn_status st = KN_OK;
    creq *qs = calloc((size_t)conc, sizeof *qs);
    CURLM *multi = curl_multi_init();
    if (!qs || !multi) {
        st = kn_fail(err, KN_ENOMEM, "out of memory for %d clients", conc);
        goto done;
    }
    for (int i = 0; i < conc; i++)
        if ((st = req_init(cr, &qs[i], err)) != KN_OK) goto done;
    long long issued = 0;
    int inflight = 0;
    double t_begin = kn_now_s(), first = INFINITY, last = -INFINITY;
    int *idle = malloc((size_t)conc * sizeof *idle), n_idle = 0;
    if (!idle) {
        st = kn_fail(err, KN_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = conc - 1; i >= 0; i--)
        idle[n_idle++] = i;
    for (;;) {
        double now = kn_now_s();
        bool more = !cr->stop && !cr->oom &&
                    (c->requests_total > 0 ? issued < c->requests_total : now - t_begin < c->duration_s);
        while (more && n_idle > 0) {
            creq *q = &qs[idle[--n_idle]];
            if (!req_prepare(cr, q, issued % cr->n) ||
                (q->t_start = kn_now_s(), curl_multi_add_handle(multi, q->easy) != CURLM_OK)) {
                cr->oom = true;
                idle[n_idle++] = (int)(q - qs);
                break;
            }
            if (q->t_start < first) first = q->t_start;
            issued++;
            inflight++;
            more = c->requests_total > 0 ? issued < c->requests_total : true;
        }
        if (inflight == 0 && !more) break;
        int still = 0, left = 0;
        curl_multi_perform(multi, &still);
        CURLMsg *m;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            CURL *e = m->easy_handle;
            CURLcode rc = m->data.result;
            char *priv = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
            creq *q = (creq *)priv;
            curl_multi_remove_handle(multi, e);
            double t_end = kn_now_s();
            if (t_end > last) last = t_end;
            fig->thr_requests++;
            settle(cr, q, rc, t_end, 3);
            inflight--;
            idle[n_idle++] = (int)(q - qs);
        }
        progress(
            cr, c->requests_total > 0 ? (uint64_t)fig->thr_requests : (uint64_t)((kn_now_s() - t_begin) * 10),
            false);
        if (inflight > 0) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    if (last > first) fig->thr_duration_s = last - first;
    if (fig->thr_duration_s > 0) fig->hits_per_s = (double)fig->thr_hits / fig->thr_duration_s;
    free(idle);
done:
    if (qs)
        for (int i = 0; i < conc; i++) {
            if (qs[i].easy && multi) curl_multi_remove_handle(multi, qs[i].easy);
            req_free(&qs[i]);
        }
    free(qs);
    if (multi) curl_multi_cleanup(multi);
    return st;
}

/* Phase 5: the L1 figures of /cache/stats. */
static void memory_phase(cache_run *cr) {
    bench_cache_figures *fig = cr->fig;
    json_t *st = get_stats(cr);
    if (!st) return;
    fig->has_mem = stat_of(st, "l1", "entries", &fig->entries) && stat_of(st, "l1", "bytes", &fig->bytes) &&
                   get_int(st, "l1_entry_overhead_bytes", &fig->entry_overhead);
    json_decref(st);
    double sum = 0;
    long long k = 0;
    for (long long i = 0; i < cr->n; i++)
        if (cr->texts[i]) sum += (double)strlen(cr->texts[i]), k++;
    fig->text_bytes = k ? sum / (double)k : 0;
}

/* The response cache must be on: enabled.response of /cache/stats. */
static void check_server(cache_run *cr) {
    json_t *st = get_stats(cr);
    if (!st) return;
    json_t *en = json_object_get(json_object_get(st, "enabled"), "response");
    if (json_is_false(en)) {
        snprintf(cr->fatal, sizeof cr->fatal,
                 "the server's response cache is off (GET /cache/stats: enabled.response is false); start "
                 "kiln serve "
                 "with --response-cache=true");
        cr->stop = true;
    }
    json_decref(st);
}

/* ---- the run ------------------------------------------------------------------------- */

static void summarize(cache_run *cr) {
    bench_result *res = cr->res;
    bench_summary *a = &res->all;
    memset(a, 0, sizeof *a);
    double t_first = INFINITY, t_last = -INFINITY;
    double *tmp = res->n_recs ? malloc(res->n_recs * sizeof *tmp) : NULL;
    size_t n = 0;
    for (size_t i = 0; i < res->n_recs; i++) {
        const bench_record *rec = &res->recs[i];
        a->requests++;
        if (rec->t_start < t_first) t_first = rec->t_start;
        if (rec->t_end > t_last) t_last = rec->t_end;
        if (!rec->ok) {
            a->errors[rec->err]++;
            continue;
        }
        a->ok++;
        a->out_tokens += rec->out_tokens;
        if (tmp) tmp[n++] = rec->e2e;
    }
    if (tmp)
        bench_stats_compute(tmp, n, &a->e2e);
    else if (res->n_recs)
        cr->oom = true;
    free(tmp);
    a->duration_s = a->requests ? t_last - t_first : 0;
    if (a->duration_s > 0) {
        a->requests_s = (double)a->ok / a->duration_s;
        a->output_tok_s = (double)a->out_tokens / a->duration_s;
        a->goodput = a->requests_s;
    }
    a->error_rate = a->requests ? (double)(a->requests - a->ok) / (double)a->requests : 0;
    const bench_cache_figures *f = cr->fig;
    a->sla_pass = a->ok > 0 && a->ok == a->requests && !res->aborted[0] && !f->not_hits[0] &&
                  !f->not_hits[1] && !f->not_hits[2] && !f->mismatched &&
                  (!f->has_l2 || f->l2_hits == f->l2_requests);
}

kn_status bench_cache_run(const bench_config *cfg, bench_result **out, kn_err *err) {
    *out = NULL;
    kn_status st = KN_OK;
    cache_run cr = {.cfg = cfg, .n = cfg->requests, .phase_note = "checking the server"};
    creq seq = {0};
    bench_result *res = calloc(1, sizeof *res);
    bench_cache_figures *fig = calloc(1, sizeof *fig);
    cr.texts = calloc((size_t)cr.n, sizeof *cr.texts);
    bool urls_ok = bench_urls(cfg->url, &cr.base, &cr.endpoint);
    if (!res || !fig || !cr.texts || !urls_ok) {
        free(fig);
        st = kn_fail(err, KN_ENOMEM, "out of memory for %lld prompts", cr.n);
        goto fail;
    }
    res->cfg = *cfg;
    res->knee = -1;
    res->x.cache = fig;
    cr.res = res;
    cr.fig = fig;
    if (!(cr.hdrs = bench_headers(NULL, cfg->api_key))) {
        st = kn_fail(err, KN_ENOMEM, "out of memory");
        goto fail;
    }
    if ((st = req_init(&cr, &seq, err)) != KN_OK) goto fail;

    uint64_t n = (uint64_t)cr.n, r = (uint64_t)cfg->rounds;
    uint64_t thr = cfg->requests_total > 0 ? (uint64_t)cfg->requests_total : (uint64_t)(cfg->duration_s * 10);
    cr.prog_on = cfg->progress;
    cr.t0 = kn_now_s();
    if (cr.prog_on) kn_progress_begin(&cr.prog, "bench server cache", n * (1 + 2 * r) + thr);

    check_server(&cr);
    cr.phase_note = "populate (misses)";
    if (!cr.stop) seq_pass(&cr, &seq, 0);
    for (int k = 0; k < cfg->rounds && !cr.stop && !cr.oom; k++) {
        cr.phase_note = "L1 hits";
        seq_pass(&cr, &seq, 1);
    }
    cr.phase_note = "L2 hits";
    if (!cr.stop && !cr.oom) l2_phase(&cr, &seq);
    if (!fig->has_l2) cr.prog_base = n * (1 + 2 * r);
    cr.phase_note = "throughput";
    if (!cr.stop && !cr.oom && (st = throughput_phase(&cr, err)) != KN_OK) {
        if (cr.prog_on) kn_progress_end(&cr.prog);
        goto fail;
    }
    cr.prog_base = n * (1 + 2 * r) + thr;
    cr.phase_note = "memory";
    if (!cr.stop && !cr.oom) memory_phase(&cr);
    progress(&cr, 0, true);
    if (cr.prog_on) kn_progress_end(&cr.prog);
    if (cr.fatal[0]) {
        st = kn_fail(err, KN_EUNSUPPORTED, "%s", cr.fatal);
        goto fail;
    }

    bench_stats_compute(cr.l1s.v, cr.l1s.n, &fig->l1_server_ms);
    bench_stats_compute(cr.l1c.v, cr.l1c.n, &fig->l1_client_ms);
    bench_stats_compute(cr.l2s.v, cr.l2s.n, &fig->l2_server_ms);
    bench_stats_compute(cr.l2c.v, cr.l2c.n, &fig->l2_client_ms);
    bench_stats_compute(cr.ths.v, cr.ths.n, &fig->thr_server_ms);
    bench_stats_compute(cr.thc.v, cr.thc.n, &fig->thr_client_ms);
    summarize(&cr);
    if (cr.oom) {
        st = kn_fail(err, KN_ENOMEM, "out of memory while recording results");
        goto fail;
    }
    *out = res;
    res = NULL;
fail:
    req_free(&seq);
    bench_result_destroy(res);
    if (cr.texts)
        for (long long i = 0; i < cr.n; i++)
            free(cr.texts[i]);
    free(cr.texts);
    samples *all[6] = {&cr.l1s, &cr.l1c, &cr.l2s, &cr.l2c, &cr.ths, &cr.thc};
    for (int i = 0; i < 6; i++)
        free(all[i]->v);
    curl_slist_free_all(cr.hdrs);
    free(cr.base);
    free(cr.endpoint);
    return st;
}

/* ---- reports --------------------------------------------------------------------------- */

static json_t *ms_json(const bench_stats *s, bool have) {
    if (!have || !s->n) return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "p50", json_real(s->p50));
    json_object_set_new(o, "p90", json_real(s->p90));
    json_object_set_new(o, "p99", json_real(s->p99));
    json_object_set_new(o, "max", json_real(s->max));
    json_object_set_new(o, "min", json_real(s->min));
    json_object_set_new(o, "mean", json_real(s->mean));
    json_object_set_new(o, "n", json_integer((json_int_t)s->n));
    return o;
}

/* Per-entry memory figures; false when /cache/stats gave none. */
static bool per_entry(const bench_cache_figures *f, double *bytes_per, double *value_per, double *overhead) {
    if (!f->has_mem || f->entries <= 0) return false;
    *bytes_per = (double)f->bytes / (double)f->entries;
    *value_per = *bytes_per - (double)f->entry_overhead;
    *overhead = *bytes_per - f->text_bytes;
    return true;
}

static const double GOAL_L1_MS = 1, GOAL_L2_MS = 5;

json_t *bench_cache_json(const bench_result *r) {
    const bench_config *c = &r->cfg;
    const bench_cache_figures *f = r->x.cache;
    const bench_summary *a = &r->all;
    json_t *o = json_object();
    json_object_set_new(o, "scenario", json_string("cache"));
    json_object_set_new(o, "requests", json_integer(a->requests));
    json_object_set_new(o, "ok", json_integer(a->ok));
    json_t *errs = json_object();
    for (int k = 0; k < BENCH_ERR_COUNT; k++)
        if (a->errors[k])
            json_object_set_new(errs, bench_errkind_name((bench_errkind)k), json_integer(a->errors[k]));
    json_object_set_new(o, "errors", errs);
    json_object_set_new(o, "populate_misses", json_integer(f->populate_misses));
    json_object_set_new(o, "populate_hits", json_integer(f->populate_hits));
    json_object_set_new(o, "l1_server_ms", ms_json(&f->l1_server_ms, true));
    json_object_set_new(o, "l1_client_ms", ms_json(&f->l1_client_ms, true));
    json_object_set_new(o, "l2", json_boolean(f->has_l2));
    json_object_set_new(o, "l2_server_ms", ms_json(&f->l2_server_ms, f->has_l2));
    json_object_set_new(o, "l2_client_ms", ms_json(&f->l2_client_ms, f->has_l2));
    json_object_set_new(o, "l2_requests", json_integer(f->l2_requests));
    json_object_set_new(o, "l2_hits", f->has_l2 ? json_integer(f->l2_hits) : json_null());
    json_object_set_new(o, "concurrency", json_integer(c->concurrency));
    json_object_set_new(o, "throughput_requests", json_integer(f->thr_requests));
    json_object_set_new(o, "throughput_hits", json_integer(f->thr_hits));
    json_object_set_new(o, "throughput_duration_s", json_real(f->thr_duration_s));
    json_object_set_new(o, "hits_per_s", json_real(f->hits_per_s));
    json_object_set_new(o, "throughput_server_ms", ms_json(&f->thr_server_ms, true));
    json_object_set_new(o, "throughput_client_ms", ms_json(&f->thr_client_ms, true));
    double bpe = 0, vpe = 0, ovh = 0;
    bool mem = per_entry(f, &bpe, &vpe, &ovh);
    json_object_set_new(o, "entries", f->has_mem ? json_integer(f->entries) : json_null());
    json_object_set_new(o, "bytes", f->has_mem ? json_integer(f->bytes) : json_null());
    json_object_set_new(o, "bytes_per_entry", mem ? json_real(bpe) : json_null());
    json_object_set_new(o, "entry_overhead_bytes",
                        f->has_mem ? json_integer(f->entry_overhead) : json_null());
    json_object_set_new(o, "value_bytes_per_entry", mem ? json_real(vpe) : json_null());
    json_object_set_new(o, "text_bytes_per_entry", json_real(f->text_bytes));
    json_object_set_new(o, "overhead_per_entry", mem ? json_real(ovh) : json_null());
    json_object_set_new(o, "goal_l1_p99_ms", json_integer((json_int_t)GOAL_L1_MS));
    json_object_set_new(o, "goal_l2_p99_ms", json_integer((json_int_t)GOAL_L2_MS));
    json_object_set_new(o, "goal_l1_pass",
                        f->l1_server_ms.n ? json_boolean(f->l1_server_ms.p99 < GOAL_L1_MS) : json_null());
    json_object_set_new(o, "goal_l2_pass",
                        f->has_l2 && f->l2_server_ms.n ? json_boolean(f->l2_server_ms.p99 < GOAL_L2_MS)
                                                       : json_null());
    json_t *nh = json_object();
    json_object_set_new(nh, "l1", json_integer(f->not_hits[0]));
    json_object_set_new(nh, "l2", json_integer(f->not_hits[1]));
    json_object_set_new(nh, "throughput", json_integer(f->not_hits[2]));
    json_object_set_new(o, "not_hits", nh);
    json_object_set_new(o, "mismatched", json_integer(f->mismatched));
    json_object_set_new(o, "no_server_timing", json_integer(f->no_timing));
    json_object_set_new(o, "pass", json_boolean(a->sla_pass));
    json_object_set_new(o, "duration_s", json_real(a->duration_s));
    json_object_set_new(o, "aborted", r->aborted[0] ? json_string(r->aborted) : json_null());
    json_object_set_new(o, "first_error", r->first_error[0] ? json_string(r->first_error) : json_null());
    json_t *cfg = json_object();
    json_object_set_new(cfg, "url", json_string(c->url));
    json_object_set_new(cfg, "model", json_string(c->model));
    json_object_set_new(cfg, "endpoint", json_string("/v1/completions"));
    json_object_set_new(cfg, "requests", json_integer(c->requests));
    json_object_set_new(cfg, "rounds", json_integer(c->rounds));
    json_object_set_new(cfg, "concurrency", json_integer(c->concurrency));
    json_object_set_new(cfg, "duration_s", c->requests_total > 0 ? json_null() : json_real(c->duration_s));
    json_object_set_new(cfg, "requests_total",
                        c->requests_total > 0 ? json_integer(c->requests_total) : json_null());
    json_object_set_new(cfg, "max_tokens", json_integer(c->prompts->items[0].max_tokens));
    json_object_set_new(cfg, "ignore_eos", json_boolean(c->ignore_eos));
    json_object_set_new(cfg, "seed", json_integer((json_int_t)(c->seed & 0x7fffffffffffffffull)));
    json_object_set_new(cfg, "timeout_s", json_real(c->timeout_s));
    json_object_set_new(o, "config", cfg);
    return o;
}

static void print_ms(FILE *f, const char *label, const bench_stats *s) {
    if (!s->n) {
        fprintf(f, "    %-7s (no samples)\n", label);
        return;
    }
    fprintf(f, "    %-7s p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms (%zu samples)\n", label, s->p50, s->p90,
            s->p99, s->max, s->n);
}

static void print_goal(FILE *f, const char *name, double goal, const bench_stats *s, bool have) {
    if (!have || !s->n)
        fprintf(f, "  goal %s p99 < %g ms (server): n/a\n", name, goal);
    else
        fprintf(f, "  goal %s p99 < %g ms (server): %s (%.3f ms)\n", name, goal,
                s->p99 < goal ? "PASS" : "FAIL", s->p99);
}

void bench_cache_print(const bench_result *r, FILE *f) {
    const bench_config *c = &r->cfg;
    const bench_cache_figures *x = r->x.cache;
    const bench_summary *a = &r->all;
    fprintf(f, "kiln bench server: cache against %s (model %s)\n", c->url, c->model);
    fprintf(f, "  populate: %lld distinct greedy requests: %lld misses", c->requests, x->populate_misses);
    if (x->populate_hits) fprintf(f, ", %lld already cached (an earlier run?)", x->populate_hits);
    fprintf(f, "\n  L1 hits (%d sequential passes):\n", c->rounds);
    print_ms(f, "server", &x->l1_server_ms);
    print_ms(f, "client", &x->l1_client_ms);
    if (x->has_l2) {
        fprintf(f, "  L2 hits (%d x clear L1 + one pass): l2.response.hits grew by %lld for %lld requests\n",
                c->rounds, x->l2_hits, x->l2_requests);
        print_ms(f, "server", &x->l2_server_ms);
        print_ms(f, "client", &x->l2_client_ms);
    } else {
        fprintf(f, "  L2 hits: n/a (the server has no L2: l2.response.entries is 0 after a flush; L1 was "
                   "refilled for the throughput phase)\n");
    }
    fprintf(f, "  throughput: %d clients, %lld hits of %lld requests in %.2f s: %.1f hits/s\n",
            c->concurrency, x->thr_hits, x->thr_requests, x->thr_duration_s, x->hits_per_s);
    print_ms(f, "server", &x->thr_server_ms);
    print_ms(f, "client", &x->thr_client_ms);
    double bpe, vpe, ovh;
    if (per_entry(x, &bpe, &vpe, &ovh))
        fprintf(f,
                "  memory: %lld L1 response entries, %lld bytes: %.1f bytes per entry = %lld bookkeeping + "
                "%.1f stored "
                "value;\n    answer text %.1f bytes: overhead per entry %.1f bytes\n",
                x->entries, x->bytes, bpe, x->entry_overhead, vpe, x->text_bytes, ovh);
    else
        fprintf(f, "  memory: n/a (no l1.response entries in /cache/stats)\n");
    if (x->no_timing) fprintf(f, "  %lld answers had no Server-Timing total\n", x->no_timing);
    print_goal(f, "L1 hit", GOAL_L1_MS, &x->l1_server_ms, true);
    print_goal(f, "L2 hit", GOAL_L2_MS, &x->l2_server_ms, x->has_l2);
    if (r->aborted[0]) fprintf(f, "  run stopped early: %s\n", r->aborted);
    if (r->first_error[0]) fprintf(f, "  first error: %s\n", r->first_error);
    if (a->sla_pass) {
        fprintf(f, "RESULT: PASS (%lld requests, every expected hit was a hit with the populate text)\n",
                a->requests);
        return;
    }
    fprintf(
        f,
        "RESULT: FAIL (%lld of %lld requests failed; not hits: L1 %lld, L2 %lld, throughput %lld; %lld texts "
        "differ",
        a->requests - a->ok, a->requests, x->not_hits[0], x->not_hits[1], x->not_hits[2], x->mismatched);
    if (x->has_l2 && x->l2_hits != x->l2_requests)
        fprintf(f, "; l2 hits %lld for %lld requests", x->l2_hits, x->l2_requests);
    fprintf(f, ")\n");
}

static void html_esc(FILE *f, const char *s) {
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

static void html_ms_row(FILE *f, const char *name, const bench_stats *s, bool have) {
    fprintf(f, "<tr><td>%s</td>", name);
    if (have && s->n)
        fprintf(f, "<td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%zu</td></tr>\n", s->p50, s->p90,
                s->p99, s->max, s->n);
    else
        fprintf(f, "<td colspan=\"5\">n/a</td></tr>\n");
}

kn_status bench_cache_html(const bench_result *r, const char *path, kn_err *err) {
    FILE *f = fopen(path, "w");
    if (!f) return kn_fail(err, KN_EIO, "%s: cannot create the report", path);
    const bench_config *c = &r->cfg;
    const bench_cache_figures *x = r->x.cache;
    fprintf(f,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kiln bench server: cache</title>\n"
            "<style>body{font-family:sans-serif;margin:24px;max-width:980px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
            ".pass{color:#080;font-weight:bold}.fail{color:#c00;font-weight:bold}</style></head><body>\n"
            "<h1>kiln bench server: response cache</h1>\n<p>Server <code>");
    html_esc(f, c->url);
    fprintf(f, "</code>, model <code>");
    html_esc(f, c->model);
    fprintf(f, "</code>, %lld distinct prompts, %d rounds, %d clients.</p>\n", c->requests, c->rounds,
            c->concurrency);
    fprintf(f, "<p class=\"%s\">Result %s: %lld of %lld requests failed.</p>\n",
            r->all.sla_pass ? "pass" : "fail", r->all.sla_pass ? "PASS" : "FAIL", r->all.requests - r->all.ok,
            r->all.requests);
    fprintf(f, "<table><tr><th>ms</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>n</th></tr>\n");
    html_ms_row(f, "L1 hit, server", &x->l1_server_ms, true);
    html_ms_row(f, "L1 hit, client", &x->l1_client_ms, true);
    html_ms_row(f, "L2 hit, server", &x->l2_server_ms, x->has_l2);
    html_ms_row(f, "L2 hit, client", &x->l2_client_ms, x->has_l2);
    html_ms_row(f, "under load, server", &x->thr_server_ms, true);
    html_ms_row(f, "under load, client", &x->thr_client_ms, true);
    fprintf(f, "</table>\n<p>Throughput: %.1f hits/s with %d clients. ", x->hits_per_s, c->concurrency);
    double bpe, vpe, ovh;
    if (per_entry(x, &bpe, &vpe, &ovh))
        fprintf(
            f,
            "Memory: %.1f bytes per L1 entry (%lld bookkeeping), overhead beyond the answer text %.1f bytes.",
            bpe, x->entry_overhead, ovh);
    fprintf(f, "</p>\n<p>Goals (server-side p99): L1 &lt; %g ms %s, L2 &lt; %g ms %s.</p>\n</body></html>\n",
            GOAL_L1_MS,
            !x->l1_server_ms.n                 ? "n/a"
            : x->l1_server_ms.p99 < GOAL_L1_MS ? "PASS"
                                               : "FAIL",
            GOAL_L2_MS,
            !x->has_l2 || !x->l2_server_ms.n   ? "n/a"
            : x->l2_server_ms.p99 < GOAL_L2_MS ? "PASS"
                                               : "FAIL");
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) return kn_fail(err, KN_EIO, "%s: write failed", path);
    return KN_OK;
}
