/*
 * test_sched.c — the scheduler (engine/sched.h) on real models:
 *  - greedy generation of every reference prompt, all submitted at once to
 *    fewer slots than requests (queueing, batched steps mixing prefill and
 *    decode), gives llama.cpp's greedy tokens and text
 *    (../shared/reference/<model>.<prompt>.json: greedy, greedy_text_hex);
 *  - stop strings end the text before the stop string;
 *  - cancellation frees the slot; a full queue refuses with KN_EBUSY;
 *  - embeddings: batched equals alone, equals a mean of the last hidden
 *    states computed directly with model_forward, and is L2-normalized;
 *  - eng_logprobs against a brute-force log-softmax;
 *  - grammars: constrained requests (greedy and seeded) batched with a free
 *    one all match their pattern (POSIX regex, not the grammar module) and
 *    end with stop, the free one equals its text alone; a malformed grammar
 *    is KN_EINVAL with line:column; a state past its bound ends the request
 *    with an error.
 */
#include "testutil.h"
#include "engine/scheduler.h"
#include "kiln/model.h"
#include "kiln/tokenizer.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef tu_compute env;

typedef struct loaded {
    model *m;
    tok_vocab *v;
    eng_sched *s;
} loaded;

static void load(env *e, const char *name, int slots, int ctx, int queue_len, int max_batch, loaded *L) {
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    kn_err err = {0};
    assert_int_equal(model_load(tu_shared_path(path, sizeof path, rel), NULL, &L->m, &err), KN_OK);
    assert_int_equal(tok_vocab_load(L->m->gguf, &L->v, &err), KN_OK);
    eng_sched_opts o = {.n_slots = slots, .n_ctx = ctx, .max_batch = max_batch, .queue_len = queue_len,
                        .queue_timeout_s = 60, .kv_type = MODEL_KV_F16};
    assert_int_equal(eng_sched_create(L->m, L->v, &e->ops, e->pool, &o, &L->s, &err), KN_OK);
}

static void unload(loaded *L) {
    eng_sched_destroy(L->s);
    tok_vocab_destroy(L->v);
    model_destroy(L->m);
}

static eng_gen_params greedy(int n) {
    eng_gen_params p = {.sp = eng_sampler_defaults(), .n_predict = n, .ignore_eos = true, .n_logprobs = 0};
    p.sp.temp = 0;
    return p;
}

/* Reads a request to the end: text (malloc'd) and the token ids. */
static eng_req_result drain(eng_req *r, char **text, size_t *len, int32_t *ids, size_t *n_ids, size_t cap) {
    char buf[512];
    eng_tok_event ev[16];
    size_t tl, ne;
    eng_req_result res;
    *text = NULL;
    *len = 0;
    if (n_ids) *n_ids = 0;
    for (;;) {
        bool done = eng_req_read(r, 1000, buf, sizeof buf, &tl, ev, 16, &ne, &res);
        *text = realloc(*text, *len + tl + 1);
        memcpy(*text + *len, buf, tl);
        *len += tl;
        (*text)[*len] = 0;
        for (size_t i = 0; n_ids && i < ne; i++)
            if (*n_ids < cap) ids[(*n_ids)++] = ev[i].token;
        if (done) return res;
    }
}

static size_t unhex(const char *hex, char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", (unsigned char *)&out[i]);
    return n;
}

static void test_greedy_matches_reference(void **state) {
    env *e = *state;
    const char *models[] = {"stories260K", "stories260K-Q8_0"};
    const char *prompts[] = {"story", "code", "mixed"};
    for (size_t mi = 0; mi < 2; mi++) {
        loaded L;
        load(e, models[mi], 2, 128, 16, 24, &L); /* 2 slots, 3 requests; small batch forces chunked prefill */
        eng_req *reqs[3];
        json_t *refs[3];
        for (size_t pi = 0; pi < 3; pi++) {
            char path[1024], rel[256];
            snprintf(rel, sizeof rel, "reference/%s.%s.json", models[mi], prompts[pi]);
            json_error_t je;
            refs[pi] = json_load_file(tu_shared_path(path, sizeof path, rel), 0, &je);
            assert_non_null(refs[pi]);
            json_t *pt = json_object_get(refs[pi], "prompt_tokens");
            size_t n = json_array_size(pt);
            int32_t *toks = malloc(n * sizeof *toks);
            for (size_t i = 0; i < n; i++) toks[i] = (int32_t)json_integer_value(json_array_get(pt, i));
            size_t n_greedy = json_array_size(json_object_get(refs[pi], "greedy"));
            eng_gen_params p = greedy((int)n_greedy);
            kn_err err = {0};
            assert_int_equal(eng_req_create_gen(L.s, toks, n, &p, &reqs[pi], &err), KN_OK);
            assert_int_equal(eng_sched_submit(L.s, reqs[pi], &err), KN_OK);
            free(toks);
        }
        for (size_t pi = 0; pi < 3; pi++) {
            char *text;
            size_t len, n_ids;
            int32_t ids[256];
            eng_req_result res = drain(reqs[pi], &text, &len, ids, &n_ids, 256);
            assert_int_equal(res.finish, ENG_FINISH_LENGTH);
            json_t *g = json_object_get(refs[pi], "greedy");
            assert_int_equal(n_ids, json_array_size(g));
            assert_int_equal(res.n_gen, json_array_size(g));
            for (size_t i = 0; i < n_ids; i++) {
                if (ids[i] != json_integer_value(json_array_get(g, i)))
                    fail_msg("%s/%s: token %zu is %d, llama.cpp's greedy is %lld", models[mi], prompts[pi], i, ids[i],
                             (long long)json_integer_value(json_array_get(g, i)));
            }
            char want[4096];
            size_t wl = unhex(json_string_value(json_object_get(refs[pi], "greedy_text_hex")), want);
            if (wl != len || memcmp(want, text, len))
                fail_msg("%s/%s: text '%.*s' differs from the reference '%.*s'", models[mi], prompts[pi], (int)len,
                         text, (int)wl, want);
            free(text);
            eng_req_release(reqs[pi]);
            json_decref(refs[pi]);
        }
        eng_sched_stats st;
        eng_sched_stats_get(L.s, &st);
        assert_int_equal(st.slots_busy, 0);
        assert_int_equal(st.waiting, 0);
        unload(&L);
    }
}

static void test_stop_string(void **state) {
    env *e = *state;
    loaded L;
    load(e, "stories260K", 2, 128, 4, 64, &L);
    char path[1024];
    json_error_t je;
    json_t *ref = json_load_file(tu_shared_path(path, sizeof path, "reference/stories260K.story.json"), 0, &je);
    assert_non_null(ref);
    char want[4096];
    size_t wl = unhex(json_string_value(json_object_get(ref, "greedy_text_hex")), want);
    want[wl] = 0;
    const char *stop = strstr(want, "Lily");
    assert_non_null(stop);
    json_t *pt = json_object_get(ref, "prompt_tokens");
    int32_t toks[64];
    size_t n = json_array_size(pt);
    for (size_t i = 0; i < n; i++) toks[i] = (int32_t)json_integer_value(json_array_get(pt, i));
    const char *stops[] = {"Lily"};
    eng_gen_params p = greedy(24);
    p.stops = stops;
    p.n_stops = 1;
    eng_req *r;
    kn_err err = {0};
    assert_int_equal(eng_req_create_gen(L.s, toks, n, &p, &r, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, r, &err), KN_OK);
    char *text;
    size_t len;
    eng_req_result res = drain(r, &text, &len, NULL, NULL, 0);
    assert_int_equal(res.finish, ENG_FINISH_STOP);
    assert_int_equal(len, (size_t)(stop - want));
    assert_memory_equal(text, want, len);
    free(text);
    eng_req_release(r);
    json_decref(ref);
    unload(&L);
}

static bool matches(const char *pattern, const char *text) {
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static void test_grammar(void **state) {
    env *e = *state;
    loaded L;
    load(e, "stories260K", 4, 256, 8, 64, &L);
    static const int32_t toks[] = {1, 403, 407, 261, 378}; /* BOS "Once upon a time" */
    const int32_t nt = 5;
    kn_err err = {0};
    /* the free request alone */
    eng_gen_params fp = greedy(40);
    eng_req *r;
    assert_int_equal(eng_req_create_gen(L.s, toks, (size_t)nt, &fp, &r, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, r, &err), KN_OK);
    char *alone;
    size_t alone_len;
    assert_int_equal(drain(r, &alone, &alone_len, NULL, NULL, 0).finish, ENG_FINISH_LENGTH);
    eng_req_release(r);
    assert_false(matches("^[0-9]{3}-[0-9]{4}$", alone)); /* the model does not say it on its own */
    /* three constrained requests and the free one in the same steps */
    struct {
        const char *grammar, *pattern;
        float temp;
    } cases[] = {
        {"root ::= [0-9]{3} \"-\" [0-9]{4}", "^[0-9]{3}-[0-9]{4}$", 0.0f},
        {"root ::= \"yes\" | \"no\"", "^(yes|no)$", 1.0f},
        {"root ::= \"{\\\"a\\\": \" [1-9] [0-9]{0,2} \"}\"", "^\\{\"a\": [1-9][0-9]{0,2}\\}$", 0.9f},
    };
    eng_req *rs[4];
    for (int k = 0; k < 3; k++) {
        eng_gen_params p = greedy(48);
        p.ignore_eos = false;
        p.sp.temp = cases[k].temp;
        p.sp.seed = 11 + (uint64_t)k;
        p.grammar = cases[k].grammar;
        assert_int_equal(eng_req_create_gen(L.s, toks, (size_t)nt, &p, &rs[k], &err), KN_OK);
    }
    assert_int_equal(eng_req_create_gen(L.s, toks, (size_t)nt, &fp, &rs[3], &err), KN_OK);
    for (int k = 0; k < 4; k++) assert_int_equal(eng_sched_submit(L.s, rs[k], &err), KN_OK);
    for (int k = 0; k < 4; k++) {
        char *text;
        size_t len;
        eng_req_result res = drain(rs[k], &text, &len, NULL, NULL, 0);
        if (k < 3) {
            if (!matches(cases[k].pattern, text)) fail_msg("grammar %s gave '%s'", cases[k].grammar, text);
            assert_int_equal(res.finish, ENG_FINISH_STOP);
        } else {
            assert_int_equal(res.finish, ENG_FINISH_LENGTH);
            assert_int_equal(len, alone_len);
            assert_memory_equal(text, alone, len);
        }
        free(text);
        eng_req_release(rs[k]);
    }
    free(alone);
    /* a malformed grammar is refused at creation, naming line:column */
    eng_gen_params bp = greedy(8);
    bp.grammar = "root ::= \"a\"\nitem ::= foo";
    assert_int_equal(eng_req_create_gen(L.s, toks, (size_t)nt, &bp, &r, &err), KN_EINVAL);
    assert_null(r);
    assert_non_null(strstr(err.msg, "2:10"));
    /* a state that outgrows GRAM_MAX_STACKS: the request ends with an error */
    bp = greedy(200);
    bp.grammar = "root ::= s\ns ::= \"a\" s \"a\" | \"a\" s \"a\" \"a\" | \"a\"";
    assert_int_equal(eng_req_create_gen(L.s, toks, (size_t)nt, &bp, &r, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, r, &err), KN_OK);
    char *text;
    size_t len;
    eng_req_result res = drain(r, &text, &len, NULL, NULL, 0);
    assert_int_equal(res.finish, ENG_FINISH_ERROR);
    assert_int_equal(res.status, KN_ERANGE);
    assert_non_null(strstr(res.err, "parse stacks"));
    assert_true(matches("^a*$", text));
    free(text);
    eng_req_release(r);
    unload(&L);
}

static void test_cancel_and_queue_limit(void **state) {
    env *e = *state;
    loaded L;
    load(e, "stories260K", 1, 256, 1, 64, &L);
    int32_t toks[] = {1, 403, 407, 261, 378};
    eng_gen_params p = greedy(200);
    kn_err err = {0};
    eng_req *a, *b, *c;
    assert_int_equal(eng_req_create_gen(L.s, toks, 5, &p, &a, &err), KN_OK);
    assert_int_equal(eng_req_create_gen(L.s, toks, 5, &p, &b, &err), KN_OK);
    assert_int_equal(eng_req_create_gen(L.s, toks, 5, &p, &c, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, a, &err), KN_OK);
    /* wait until a holds the only slot, so that b waits and c finds the queue full */
    eng_sched_stats st;
    for (int i = 0; i < 1000; i++) {
        eng_sched_stats_get(L.s, &st);
        if (st.slots_busy == 1) break;
        kn_sleep_ms(1);
    }
    assert_int_equal(eng_sched_submit(L.s, b, &err), KN_OK);
    /* b waits for the slot: a read with a timeout really waits (a deadline on
     * the wrong clock would return at once and make consumers spin) */
    {
        char tb[8];
        size_t tn;
        eng_req_result rr;
        double t0 = kn_now_s();
        assert_false(eng_req_read(b, 200, tb, sizeof tb, &tn, NULL, 0, NULL, &rr));
        assert_int_equal(tn, 0);
        assert_true(kn_now_s() - t0 >= 0.15);
    }
    assert_int_equal(eng_sched_submit(L.s, c, &err), KN_EBUSY);
    assert_non_null(strstr(err.msg, "overloaded"));
    eng_req_release(c);
    /* cancel a mid-generation: it finishes cancelled and b gets the slot */
    char buf[64];
    size_t tl;
    eng_req_result res;
    eng_req_read(a, 1000, buf, sizeof buf, &tl, NULL, 0, NULL, &res);
    eng_req_cancel(a);
    char *text;
    size_t len;
    res = drain(a, &text, &len, NULL, NULL, 0);
    free(text);
    assert_int_equal(res.finish, ENG_FINISH_CANCELLED);
    assert_true(res.n_gen < 200);
    eng_req_release(a);
    /* b runs to its end; releasing it early would cancel it, so drain */
    res = drain(b, &text, &len, NULL, NULL, 0);
    free(text);
    assert_int_equal(res.finish, ENG_FINISH_LENGTH);
    assert_int_equal(res.n_gen, 200);
    eng_req_release(b);
    eng_sched_stats_get(L.s, &st);
    assert_int_equal(st.slots_busy, 0);
    assert_int_equal(st.waiting, 0);
    /* a prompt that fills the context is refused with both counts */
    int32_t *big = calloc(256, sizeof *big);
    for (int i = 0; i < 256; i++) big[i] = 300;
    eng_req *d;
    assert_int_equal(eng_req_create_gen(L.s, big, 256, &p, &d, &err), KN_ERANGE);
    assert_non_null(strstr(err.msg, "256 tokens"));
    free(big);
    unload(&L);
}

/* Mean of the final-normed hidden states, computed directly. */
static void direct_embedding(env *e, loaded *L, const int32_t *toks, int n, float *out) {
    model_kv *kv;
    model_ctx *c;
    kn_err err = {0};
    assert_int_equal(model_kv_create(L->m, 1, n, MODEL_KV_F16, &kv, &err), KN_OK);
    assert_int_equal(model_ctx_create(L->m, &e->ops, e->pool, n, &c, &err), KN_OK);
    int E = L->m->hp.n_embd;
    int32_t pos[64], seq[64] = {0};
    uint8_t flags[64];
    float *h = malloc((size_t)n * E * sizeof *h);
    for (int i = 0; i < n; i++) pos[i] = i, flags[i] = MODEL_OUT_EMBD;
    model_batch b = {.n_tokens = n, .token = toks, .pos = pos, .seq = seq, .logits = flags, .embd = h};
    assert_int_equal(model_forward(c, kv, &b, NULL, &err), KN_OK);
    double ss = 0;
    for (int d = 0; d < E; d++) {
        double acc = 0;
        for (int i = 0; i < n; i++) acc += h[(size_t)i * E + d];
        out[d] = (float)(acc / n);
        ss += (double)out[d] * out[d];
    }
    for (int d = 0; d < E; d++) out[d] = (float)(out[d] / sqrt(ss));
    free(h);
    model_ctx_destroy(c);
    kv_cache_destroy(kv);
}

static void test_embeddings(void **state) {
    env *e = *state;
    loaded L;
    load(e, "stories260K", 2, 64, 4, 16, &L);
    int32_t a[] = {1, 403, 407, 261, 378, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314};
    int32_t b[] = {1, 50, 60};
    int32_t c[] = {1, 70, 80, 90, 100, 110, 120};
    const int32_t *in3[] = {a, b, c};
    size_t lens3[] = {20, 3, 7};
    kn_err err = {0};
    eng_req *r3, *r1;
    assert_int_equal(eng_req_create_embed(L.s, in3, lens3, 3, true, &r3, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, r3, &err), KN_OK);
    const int32_t *in1[] = {c};
    assert_int_equal(eng_req_create_embed(L.s, in1, &lens3[2], 1, true, &r1, &err), KN_OK);
    assert_int_equal(eng_sched_submit(L.s, r1, &err), KN_OK);
    eng_req_result res;
    char *t;
    size_t tl;
    drain(r3, &t, &tl, NULL, NULL, 0);
    free(t);
    res = drain(r1, &t, &tl, NULL, NULL, 0);
    free(t);
    assert_int_equal(res.finish, ENG_FINISH_STOP);
    size_t n3, n1, ntok;
    int E;
    const float *e3 = eng_req_embeddings(r3, &n3, &E, &ntok);
    const float *e1 = eng_req_embeddings(r1, &n1, NULL, NULL);
    assert_int_equal(n3, 3);
    assert_int_equal(ntok, 30);
    float *ref = malloc((size_t)E * sizeof *ref);
    for (int k = 0; k < 3; k++) {
        direct_embedding(e, &L, in3[k], (int)lens3[k], ref);
        double ss = 0, md = 0;
        for (int d = 0; d < E; d++) {
            float v = e3[(size_t)k * E + d];
            ss += (double)v * v;
            md = fmax(md, fabs(v - ref[d]));
        }
        assert_true(fabs(ss - 1.0) < 1e-4);
        if (md > 1e-4) fail_msg("input %d: batched embedding differs from the direct one by %g", k, md);
    }
    for (int d = 0; d < E; d++) assert_true(fabsf(e1[d] - e3[2 * (size_t)E + d]) < 1e-5f);
    free(ref);
    eng_req_release(r3);
    eng_req_release(r1);
    unload(&L);
}

/* Prefix caching: the same prompt again, the prompt extended by the first
 * greedy tokens (a partial-block hit), and a prompt ending exactly on a
 * block boundary (a whole-prompt hit: the last block is copied on write)
 * reuse cached KV blocks and still give llama.cpp's greedy continuation;
 * the prefix counters count whole blocks. */
static void test_prefix_reuse(void **state) {
    env *e = *state;
    char path[1024];
    kn_err err = {0};
    loaded L;
    assert_int_equal(model_load(tu_shared_path(path, sizeof path, "models/stories260K.gguf"), NULL, &L.m, &err), KN_OK);
    assert_int_equal(tok_vocab_load(L.m->gguf, &L.v, &err), KN_OK);
    met_registry *mr = met_registry_create();
    met_family *fq = met_counter(mr, "q_total", "q", 0, NULL), *fh = met_counter(mr, "h_total", "h", 0, NULL);
    const int bs = 16;
    eng_sched_opts o = {.n_slots = 1, .n_ctx = 128, .max_batch = 64, .queue_len = 4, .queue_timeout_s = 60,
                        .block_size = bs,
                        .metrics = {.prefix_queried = met_get(fq, NULL), .prefix_hit = met_get(fh, NULL)}};
    assert_int_equal(eng_sched_create(L.m, L.v, &e->ops, e->pool, &o, &L.s, &err), KN_OK);
    json_error_t je;
    json_t *ref = json_load_file(tu_shared_path(path, sizeof path, "reference/stories260K.story.json"), 0, &je);
    assert_non_null(ref);
    json_t *pt = json_object_get(ref, "prompt_tokens"), *g = json_object_get(ref, "greedy");
    size_t np = json_array_size(pt), ng = json_array_size(g);
    int32_t toks[128], want[64];
    for (size_t i = 0; i < np; i++) toks[i] = (int32_t)json_integer_value(json_array_get(pt, i));
    for (size_t i = 0; i < ng; i++) want[i] = (int32_t)json_integer_value(json_array_get(g, i));
    const size_t ext = 5, whole = (np / bs + 1) * bs;
    assert_true(whole - np < ng && whole - np != ext);
    for (size_t i = 0; i < ng; i++) toks[np + i] = want[i];
    struct {
        size_t n_prompt, skip;
    } runs[] = {{np, 0}, {np, 0}, {np + ext, ext}, {whole, whole - np}};
    double hits = 0, queried = 0;
    size_t cached = 0; /* tokens whose KV earlier runs computed: blocks of them are cached */
    for (size_t k = 0; k < 4; k++) {
        size_t n = runs[k].n_prompt < cached ? runs[k].n_prompt : cached, hit = n / bs * bs;
        if (hit >= runs[k].n_prompt) hit = runs[k].n_prompt - 1;
        eng_gen_params p = greedy((int)(ng - runs[k].skip));
        eng_req *r;
        assert_int_equal(eng_req_create_gen(L.s, toks, runs[k].n_prompt, &p, &r, &err), KN_OK);
        assert_int_equal(eng_sched_submit(L.s, r, &err), KN_OK);
        char *text;
        size_t len, n_ids;
        int32_t ids[64];
        drain(r, &text, &len, ids, &n_ids, 64);
        free(text);
        eng_req_release(r);
        assert_int_equal(n_ids, ng - runs[k].skip);
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] != want[runs[k].skip + i])
                fail_msg("run %zu: token %zu is %d, llama.cpp's greedy is %d", k, i, ids[i], want[runs[k].skip + i]);
        hits += (double)hit;
        queried += (double)runs[k].n_prompt;
        if (runs[k].n_prompt + n_ids - 1 > cached) cached = runs[k].n_prompt + n_ids - 1;
        assert_true(fabs(met_value(met_get(fh, NULL)) - hits) < 0.5);
        assert_true(fabs(met_value(met_get(fq, NULL)) - queried) < 0.5);
    }
    json_decref(ref);
    unload(&L);
    met_registry_destroy(mr);
}

static void test_logprobs(void **state) {
    (void)state;
    tu_rng rng = {42};
    float lg[300];
    for (int i = 0; i < 300; i++) lg[i] = tu_rng_normal(&rng) * 3;
    lg[17] = lg[18]; /* a tie: the lower id comes first */
    eng_tok_event ev;
    eng_logprobs(lg, 300, 5, 20, &ev);
    double mx = -1e30, sum = 0;
    for (int i = 0; i < 300; i++) mx = fmax(mx, lg[i]);
    for (int i = 0; i < 300; i++) sum += exp(lg[i] - mx);
    double lse = mx + log(sum);
    assert_true(fabs(ev.logprob - (lg[5] - lse)) < 1e-4);
    assert_int_equal(ev.n_top, 20);
    for (int k = 0; k < 20; k++) {
        int better = 0;
        for (int i = 0; i < 300; i++) better += lg[i] > lg[ev.top_id[k]];
        assert_true(better <= k);
        assert_true(fabs(ev.top_lp[k] - (lg[ev.top_id[k]] - lse)) < 1e-4);
        if (k) assert_true(ev.top_lp[k] <= ev.top_lp[k - 1]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_reference), cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_cancel_and_queue_limit),   cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_logprobs),                 cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_grammar),
    };
    return cmocka_run_group_tests(tests, tu_compute_setup, tu_compute_teardown);
}
