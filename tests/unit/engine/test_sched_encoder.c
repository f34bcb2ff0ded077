/*
 * test_sched_encoder.c — the scheduler on encoder models (engine/sched.h,
 * micro-batched embeddings) with the shared tiny-bert models:
 *  - requests submitted together are gathered into ONE model_encode call
 *    (the batch closes when the waiting tokens reach the budget, long before
 *    batch_wait_ms), and each request gets exactly its own vectors: equal
 *    (cosine >= 0.99999) to model_encode of the input alone, L2-normalized
 *    only when asked; the metrics count one forward, all requests and
 *    tokens;
 *  - a smaller budget splits the same requests into several forwards of at
 *    most the budget each, a request spanning two of them included, with
 *    the same vectors;
 *  - batch_wait_ms 0 serves a lone request at once;
 *  - the reference vectors of ../shared/reference/<model>.embed.json come
 *    back through the scheduler (cosine >= 0.9995);
 *  - cancellation of a waiting request, the queue limit (KN_EBUSY),
 *    generation refused (KN_EUNSUPPORTED), an over-long input (KN_ERANGE),
 *    and the stats of a scheduler without KV.
 */
#include "testutil.h"
#include "engine/scheduler.h"
#include "kiln/metrics.h"
#include "kiln/model.h"
#include "kiln/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef tu_compute env;

static const char *const TEXTS[] = {
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors!",
    "Hello world",
    "Machine learning models need data, compute, and care.",
    "kiln serves GGUF models on CPUs.",
    "Retrieval runs on small encoder models.",
    "one",
    "Two words",
    "Micro-batching gathers concurrent requests into one forward pass.",
    "The quick brown fox",
    "Search, retrieval and RAG.",
};
#define N_TEXTS (sizeof TEXTS / sizeof *TEXTS)

typedef struct fixture {
    model *m;
    tok_vocab *v;
    int32_t *tok[N_TEXTS];
    size_t len[N_TEXTS];
    size_t total; /* tokens of all texts */
    float *alone; /* [N_TEXTS x n_embd] model_encode of each text alone, unnormalized */
    met_registry *reg;
    met_series *reqs, *toks, *batch, *prompt;
} fixture;

static void fx_load(env *e, const char *name, fixture *F) {
    memset(F, 0, sizeof *F);
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    kn_err err = {0};
    assert_int_equal(model_load(tu_shared_path(path, sizeof path, rel), NULL, &F->m, &err), KN_OK);
    assert_true(model_is_encoder(F->m));
    assert_int_equal(tok_vocab_load(F->m->gguf, &F->v, &err), KN_OK);
    for (size_t i = 0; i < N_TEXTS; i++) {
        assert_int_equal(tok_encode_alloc(F->v, TEXTS[i], strlen(TEXTS[i]), true, false, &F->tok[i], &F->len[i], &err),
                         KN_OK);
        F->total += F->len[i];
    }
    const int E = F->m->hp.n_embd;
    F->alone = malloc(N_TEXTS * (size_t)E * sizeof *F->alone);
    model_ctx *c = NULL;
    assert_int_equal(model_ctx_create(F->m, &e->ops, e->pool, 512, &c, &err), KN_OK);
    for (size_t i = 0; i < N_TEXTS; i++) {
        const int32_t *t = F->tok[i];
        assert_int_equal(model_encode(c, &t, &F->len[i], 1, false, F->alone + i * (size_t)E, &err), KN_OK);
    }
    model_ctx_destroy(c);
    F->reg = met_registry_create();
    const double bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    F->reqs = met_get(met_histogram(F->reg, "t_requests", "requests per forward", 0, NULL, bounds, 11), NULL);
    F->toks = met_get(met_histogram(F->reg, "t_tokens", "tokens per forward", 0, NULL, bounds, 11), NULL);
    F->batch = met_get(met_histogram(F->reg, "t_batch", "inputs per forward", 0, NULL, bounds, 11), NULL);
    F->prompt = met_get(met_counter(F->reg, "t_prompt_total", "tokens", 0, NULL), NULL);
    assert_non_null(F->reqs);
    assert_non_null(F->prompt);
}

static void fx_free(fixture *F) {
    for (size_t i = 0; i < N_TEXTS; i++) free(F->tok[i]);
    free(F->alone);
    met_registry_destroy(F->reg);
    tok_vocab_destroy(F->v);
    model_destroy(F->m);
}

static eng_sched *sched_new(env *e, fixture *F, int max_batch, int wait_ms, int slots, int queue_len) {
    eng_sched_opts o = {.n_slots = slots, .n_ctx = 4096, .max_batch = max_batch, .queue_len = queue_len,
                        .queue_timeout_s = 60, .batch_wait_ms = wait_ms,
                        .metrics = {.embed_batch_requests = F->reqs, .embed_batch_tokens = F->toks,
                                    .batch_size = F->batch, .prompt_tokens = F->prompt}};
    eng_sched *s = NULL;
    kn_err err = {0};
    assert_int_equal(eng_sched_create(F->m, F->v, &e->ops, e->pool, &o, &s, &err), KN_OK);
    return s;
}

static eng_req_result wait_done(eng_req *r) {
    eng_req_result res;
    size_t tl;
    char tb[1];
    while (!eng_req_read(r, 1000, tb, 0, &tl, NULL, 0, NULL, &res)) {
    }
    return res;
}

static double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb);
}

static double norm(const float *a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

/* Request k embeds texts first_of(k) .. first_of(k)+count_of(k)-1 (1 to 3
 * inputs, overlapping): N_REQ requests in all. */
#define N_REQ 8
static size_t first_of(int k) { return (size_t)(k * 3 + 1) % N_TEXTS; }
static size_t count_of(int k) { return (size_t)(k % 3) + 1; }

/* Submits the N_REQ requests back to back, waits for all, checks every
 * vector against the text embedded alone; returns the total tokens. */
static size_t run_requests(eng_sched *s, fixture *F, bool normalize_odd) {
    const int E = F->m->hp.n_embd;
    eng_req *r[N_REQ];
    size_t tokens = 0;
    kn_err err = {0};
    for (int k = 0; k < N_REQ; k++) {
        const int32_t *in[3];
        size_t lens[3];
        for (size_t j = 0; j < count_of(k); j++) {
            size_t t = (first_of(k) + j) % N_TEXTS;
            in[j] = F->tok[t];
            lens[j] = F->len[t];
            tokens += lens[j];
        }
        assert_int_equal(eng_req_create_embed(s, in, lens, count_of(k), normalize_odd && (k & 1), &r[k], &err), KN_OK);
        assert_int_equal(eng_sched_submit(s, r[k], &err), KN_OK);
    }
    for (int k = 0; k < N_REQ; k++) {
        eng_req_result res = wait_done(r[k]);
        assert_int_equal(res.finish, ENG_FINISH_STOP);
        size_t n_in = 0, n_tok = 0;
        int ne = 0;
        const float *v = eng_req_embeddings(r[k], &n_in, &ne, &n_tok);
        assert_int_equal(n_in, count_of(k));
        assert_int_equal(ne, E);
        for (size_t j = 0; j < n_in; j++) {
            size_t t = (first_of(k) + j) % N_TEXTS;
            const float *got = v + j * (size_t)E, *want = F->alone + t * (size_t)E;
            double c = cosine(got, want, E);
            if (c < 0.99999) fail_msg("request %d input %zu (text %zu): cosine %.7f with the text alone", k, j, t, c);
            double ng = norm(got, E), nw = norm(want, E);
            if (normalize_odd && (k & 1)) assert_true(fabs(ng - 1.0) < 1e-4);
            else if (fabs(ng - nw) > 1e-4 * nw) fail_msg("request %d input %zu: norm %g, alone %g", k, j, ng, nw);
        }
        eng_req_release(r[k]);
    }
    return tokens;
}

static size_t req_tokens(fixture *F) {
    size_t tokens = 0;
    for (int k = 0; k < N_REQ; k++)
        for (size_t j = 0; j < count_of(k); j++) tokens += F->len[(first_of(k) + j) % N_TEXTS];
    return tokens;
}

static void test_one_forward(void **state) {
    env *e = *state;
    fixture F;
    fx_load(e, "tiny-bert-mean-f16", &F);
    size_t tokens = req_tokens(&F);
    /* the budget is exactly the tokens of all requests: the batch closes when
     * the last one arrives, long before the 20 s wait */
    eng_sched *s = sched_new(e, &F, (int)tokens, 20000, 4, 64);
    double t0 = kn_now_s();
    assert_int_equal(run_requests(s, &F, true), tokens);
    assert_true(kn_now_s() - t0 < 10);
    assert_int_equal(met_hist_count(F.reqs, NULL), 1);
    assert_true(met_value(F.reqs) == N_REQ);
    assert_true(met_value(F.toks) == (double)tokens);
    assert_true(met_value(F.prompt) == (double)tokens);
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.kv_bytes, 0);
    assert_int_equal(st.n_ctx, F.m->hp.n_ctx_train); /* capped: positions end there */
    eng_sched_destroy(s);
    fx_free(&F);
}

static void test_budget_splits(void **state) {
    env *e = *state;
    fixture F;
    fx_load(e, "tiny-bert-cls-f16", &F);
    size_t tokens = req_tokens(&F);
    const int budget = 24; /* a few inputs per forward; requests span forwards */
    eng_sched *s = sched_new(e, &F, budget, 200, 4, 64); /* the tail batch closes by the wait */
    assert_int_equal(run_requests(s, &F, false), tokens);
    uint64_t forwards = met_hist_count(F.toks, NULL);
    uint64_t buckets[12];
    met_hist_count(F.toks, buckets);
    assert_true(forwards >= (tokens + budget - 1) / budget);
    assert_true(forwards < tokens);
    assert_true(met_value(F.toks) == (double)tokens);
    /* every forward held at most the budget: nothing above the 32 bucket except
     * none (bounds 1..1024: index 5 is (16, 32], budget 24 fits) */
    for (int b = 6; b < 12; b++) assert_int_equal(buckets[b], 0);
    assert_true(met_value(F.reqs) > N_REQ); /* some requests were in two forwards */
    eng_sched_destroy(s);
    fx_free(&F);
}

static void test_no_wait(void **state) {
    env *e = *state;
    fixture F;
    fx_load(e, "tiny-bert-mean-Q8_0", &F);
    eng_sched *s = sched_new(e, &F, 512, 0, 1, 4);
    const int E = F.m->hp.n_embd;
    kn_err err = {0};
    eng_req *r = NULL;
    const int32_t *in = F.tok[3];
    assert_int_equal(eng_req_create_embed(s, &in, &F.len[3], 1, true, &r, &err), KN_OK);
    assert_int_equal(eng_sched_submit(s, r, &err), KN_OK);
    eng_req_result res = wait_done(r);
    assert_int_equal(res.finish, ENG_FINISH_STOP);
    assert_int_equal(res.n_prompt, F.len[3]);
    const float *v = eng_req_embeddings(r, NULL, NULL, NULL);
    assert_true(cosine(v, F.alone + 3 * (size_t)E, E) >= 0.99999);
    assert_true(fabs(norm(v, E) - 1.0) < 1e-4);
    eng_req_release(r);
    eng_sched_destroy(s);
    fx_free(&F);
}

/* Every reference item through the scheduler, all items as one request. */
static void test_references(void **state) {
    env *e = *state;
    static const char *const names[] = {"tiny-bert-mean-f16", "tiny-bert-cls-f16", "tiny-bert-mean-Q8_0"};
    for (size_t mi = 0; mi < 3; mi++) {
        fixture F;
        fx_load(e, names[mi], &F);
        char path[1024], rel[256];
        snprintf(rel, sizeof rel, "reference/%s.embed.json", names[mi]);
        json_error_t je;
        json_t *ref = json_load_file(tu_shared_path(path, sizeof path, rel), 0, &je);
        assert_non_null(ref);
        json_t *items = json_object_get(ref, "items");
        size_t n = json_array_size(items);
        assert_true(n > 0 && n <= 64);
        int32_t *toks[64];
        size_t lens[64];
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_object_get(json_array_get(items, i), "tokens");
            lens[i] = json_array_size(t);
            toks[i] = malloc(lens[i] * sizeof **toks);
            for (size_t j = 0; j < lens[i]; j++) toks[i][j] = (int32_t)json_integer_value(json_array_get(t, j));
        }
        eng_sched *s = sched_new(e, &F, 512, 2, 2, 8);
        eng_req *r = NULL;
        kn_err err = {0};
        assert_int_equal(eng_req_create_embed(s, (const int32_t *const *)toks, lens, n, false, &r, &err), KN_OK);
        assert_int_equal(eng_sched_submit(s, r, &err), KN_OK);
        assert_int_equal(wait_done(r).finish, ENG_FINISH_STOP);
        int E = 0;
        const float *v = eng_req_embeddings(r, NULL, &E, NULL);
        assert_int_equal(E, (int)json_integer_value(json_object_get(ref, "n_embd")));
        double min_cos = strstr(names[mi], "Q8_0") ? 0.999 : 0.9995;
        for (size_t i = 0; i < n; i++) {
            json_t *want = json_object_get(json_array_get(items, i), "embedding");
            float *w = malloc((size_t)E * sizeof *w);
            for (int d = 0; d < E; d++) w[d] = (float)json_real_value(json_array_get(want, (size_t)d));
            double c = cosine(v + i * (size_t)E, w, E);
            if (c < min_cos) fail_msg("%s item %zu: cosine %.6f with the reference", names[mi], i, c);
            free(w);
            free(toks[i]);
        }
        eng_req_release(r);
        eng_sched_destroy(s);
        json_decref(ref);
        fx_free(&F);
    }
}

static void test_refusals_cancel_queue(void **state) {
    env *e = *state;
    fixture F;
    fx_load(e, "tiny-bert-mean-f16", &F);
    /* a long wait and a large budget: requests stay queued */
    eng_sched *s = sched_new(e, &F, 4096, 30000, 1, 1);
    kn_err err = {0};
    eng_req *r = NULL;
    /* generation is refused */
    eng_gen_params p = {.sp = eng_sampler_defaults(), .n_predict = 4};
    assert_int_equal(eng_req_create_gen(s, F.tok[0], F.len[0], &p, &r, &err), KN_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "embedding"));
    /* an input longer than the model's context (512): both numbers named */
    int32_t *big = malloc(600 * sizeof *big);
    for (int i = 0; i < 600; i++) big[i] = F.tok[1][i % (int)F.len[1]];
    size_t big_len = 600;
    const int32_t *bp = big;
    assert_int_equal(eng_req_create_embed(s, &bp, &big_len, 1, true, &r, &err), KN_ERANGE);
    assert_non_null(strstr(err.msg, "600"));
    assert_non_null(strstr(err.msg, "512"));
    free(big);
    /* the queue holds n_slots + queue_len = 2 requests */
    eng_req *q[3];
    const int32_t *in = F.tok[0];
    for (int k = 0; k < 3; k++) assert_int_equal(eng_req_create_embed(s, &in, &F.len[0], 1, true, &q[k], &err), KN_OK);
    assert_int_equal(eng_sched_submit(s, q[0], &err), KN_OK);
    assert_int_equal(eng_sched_submit(s, q[1], &err), KN_OK);
    assert_int_equal(eng_sched_submit(s, q[2], &err), KN_EBUSY);
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.waiting, 2);
    /* cancelling a waiting request finishes it at once, unbatched */
    double t0 = kn_now_s();
    eng_req_cancel(q[0]);
    assert_int_equal(wait_done(q[0]).finish, ENG_FINISH_CANCELLED);
    assert_true(kn_now_s() - t0 < 5);
    assert_int_equal(met_hist_count(F.reqs, NULL), 0);
    eng_req_release(q[2]); /* never submitted (a release cancels through its scheduler: before destroy) */
    /* shutting down cancels the one still waiting */
    eng_sched_destroy(s);
    assert_int_equal(wait_done(q[1]).finish, ENG_FINISH_CANCELLED);
    eng_req_release(q[0]);
    eng_req_release(q[1]);
    fx_free(&F);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_forward),   cmocka_unit_test(test_budget_splits),
        cmocka_unit_test(test_no_wait),       cmocka_unit_test(test_references),
        cmocka_unit_test(test_refusals_cancel_queue),
    };
    return cmocka_run_group_tests(tests, tu_compute_setup, tu_compute_teardown);
}
