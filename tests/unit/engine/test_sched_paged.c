/*
 * test_sched_paged.c — the scheduler on the paged KV cache (engine/sched.h,
 * kv/kv.h), on real models, greedy throughout. "Alone" outputs come from a
 * fresh scheduler with one slot and no prefix cache running each request
 * by itself, whole prompt in one step; on stories260K they are checked
 * against llama.cpp's greedy tokens (../shared/reference) too.
 *  - concurrency: 1, 4 and 16 requests with different prompts and lengths
 *    on 16 slots and a small token budget (chunked prefill mixed with
 *    decode) give exactly their alone tokens (stories260K, tiny-llama-Q8_0;
 *    tiny-llama-Q8_0 with a Q8_0 KV cache too);
 *  - preemption: a pool of blocks_per_seq + 2 blocks and 4 long requests,
 *    without and with prompt-lookup drafts: the alone tokens, preemptions
 *    counted, and the pool idle afterwards;
 *  - prefix cache across conversations: A, B, then A extended and B
 *    extended reuse every whole block of their history (prefix counters)
 *    and give the tokens of a cold run; 4 concurrent requests sharing a long
 *    prefix hold its blocks once (blocks_logical - blocks_used);
 *  - a forced hash collision (test_const_hash) is counted and never reused:
 *    the tokens stay llama.cpp's;
 *  - cancelled and released requests give back every block;
 *  - speculative decoding (prompt lookup, and a draft model) gives the
 *    plain greedy tokens and accepts drafts; a draft model with another
 *    vocabulary size is refused.
 * After every test the pool's accounting is back at its idle state.
 */
#include "testutil.h"
#include "engine/scheduler.h"
#include "kiln/model.h"
#include "kiln/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUT 256
#define RUN_LIMIT_S 120.0 /* a run_all taking longer is stuck (each takes well under a second here) */

typedef tu_compute env;

typedef struct mdl {
    const char *name;
    model *m;
    tok_vocab *v;
} mdl;

static void mdl_load(const char *name, mdl *M) {
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    kn_err err = {0};
    M->name = name;
    assert_int_equal(model_load(tu_shared_path(path, sizeof path, rel), NULL, &M->m, &err), KN_OK);
    assert_int_equal(tok_vocab_load(M->m->gguf, &M->v, &err), KN_OK);
}

static void mdl_free(mdl *M) {
    tok_vocab_destroy(M->v);
    model_destroy(M->m);
}

/* reference/<model>.<prompt>.json's integer array `key` into out; returns its length */
static size_t ref_ints(const char *model_name, const char *prompt, const char *key, int32_t *out, size_t cap) {
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "reference/%s.%s.json", model_name, prompt);
    json_error_t je;
    json_t *ref = json_load_file(tu_shared_path(path, sizeof path, rel), 0, &je);
    if (!ref) fail_msg("cannot read %s: %s", rel, je.text);
    json_t *a = json_object_get(ref, key);
    assert_true(json_is_array(a));
    size_t n = json_array_size(a);
    if (n > cap) n = cap;
    for (size_t i = 0; i < n; i++) out[i] = (int32_t)json_integer_value(json_array_get(a, i));
    json_decref(ref);
    return n;
}

static eng_sched *mk(env *e, const mdl *M, eng_sched_opts o) {
    if (!o.queue_len) o.queue_len = 64;
    if (o.queue_timeout_s == 0) o.queue_timeout_s = 120;
    eng_sched *s;
    kn_err err = {0};
    kn_status st = eng_sched_create(M->m, M->v, &e->ops, e->pool, &o, &s, &err);
    if (st != KN_OK) fail_msg("eng_sched_create: %s", err.msg);
    return s;
}

typedef struct job {
    const int32_t *prompt;
    size_t n_prompt;
    int n_predict;
    eng_spec_mode spec; /* ENG_SPEC_DEFAULT: the scheduler's */
    eng_req *r;
    int32_t out[MAX_OUT];
    size_t n_out;
    eng_req_result res;
    bool done;
    int32_t want[MAX_OUT]; /* the alone tokens */
    size_t n_want;
} job;

static void submit(eng_sched *s, job *j) {
    eng_gen_params p = {.sp = eng_sampler_defaults(), .n_predict = j->n_predict, .ignore_eos = true,
                        .n_logprobs = 0, .spec = j->spec};
    p.sp.temp = 0;
    kn_err err = {0};
    assert_true(j->n_predict <= MAX_OUT);
    if (eng_req_create_gen(s, j->prompt, j->n_prompt, &p, &j->r, &err) != KN_OK) fail_msg("create: %s", err.msg);
    if (eng_sched_submit(s, j->r, &err) != KN_OK) fail_msg("submit: %s", err.msg);
    j->n_out = 0;
    j->done = false;
}

/* Takes what request j has ready (waiting up to timeout_ms); true once finished. */
static bool pump(job *j, int timeout_ms) {
    if (j->done) return true;
    char text[1024];
    eng_tok_event ev[64];
    size_t tl, ne;
    j->done = eng_req_read(j->r, timeout_ms, text, sizeof text, &tl, ev, 64, &ne, &j->res);
    for (size_t i = 0; i < ne; i++) {
        assert_true(j->n_out < MAX_OUT);
        j->out[j->n_out++] = ev[i].token;
    }
    if (j->done) {
        eng_req_release(j->r);
        j->r = NULL;
    }
    return j->done;
}

/* What a probe sees while requests run. */
typedef struct probe {
    int max_shared; /* max of blocks_logical - blocks_used */
} probe;

/* Submits every job at once and reads them all round-robin (so that no
 * request's output ring fills and pauses it) until each finished. */
static void run_all(eng_sched *s, job *js, int n, probe *pr) {
    for (int i = 0; i < n; i++) submit(s, &js[i]);
    double t0 = kn_now_s();
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) left += !pump(&js[i], 1);
        if (pr) {
            eng_sched_stats st;
            eng_sched_stats_get(s, &st);
            int sh = st.kv.blocks_logical - st.kv.blocks_used;
            if (sh > pr->max_shared) pr->max_shared = sh;
        }
        if (!left) break;
        if (kn_now_s() - t0 > RUN_LIMIT_S) {
            size_t got = 0;
            for (int i = 0; i < n; i++) got += js[i].n_out;
            fail_msg("%d of %d requests still unfinished after %.0f s (%zu tokens out): the scheduler makes no "
                     "progress",
                     left, n, RUN_LIMIT_S, got);
        }
    }
    for (int i = 0; i < n; i++) {
        if (js[i].res.finish != ENG_FINISH_LENGTH)
            fail_msg("request %d finished with %s (%s)", i, eng_finish_name(js[i].res.finish), js[i].res.err);
        assert_int_equal(js[i].n_out, (size_t)js[i].n_predict);
        assert_int_equal(js[i].res.n_gen, (size_t)js[i].n_predict);
    }
}

/* The alone tokens of every job: a fresh one-slot scheduler without prefix
 * cache, each request by itself, the whole prompt in one step. */
static void run_alone_kv(env *e, const mdl *M, int n_ctx, model_kv_type kvt, job *js, int n) {
    eng_sched *s = mk(e, M,
                      (eng_sched_opts){.n_slots = 1, .n_ctx = n_ctx, .max_batch = 512, .no_prefix_cache = true,
                                       .kv_type = kvt});
    for (int i = 0; i < n; i++) {
        eng_spec_mode sp = js[i].spec;
        js[i].spec = ENG_SPEC_NONE;
        run_all(s, &js[i], 1, NULL);
        js[i].spec = sp;
        memcpy(js[i].want, js[i].out, js[i].n_out * sizeof *js[i].out);
        js[i].n_want = js[i].n_out;
    }
    eng_sched_destroy(s);
}

static void run_alone(env *e, const mdl *M, int n_ctx, job *js, int n) { run_alone_kv(e, M, n_ctx, MODEL_KV_F16, js, n); }

static void expect_alone(const char *what, const job *js, int n) {
    for (int i = 0; i < n; i++) {
        assert_int_equal(js[i].n_out, js[i].n_want);
        for (size_t t = 0; t < js[i].n_out; t++)
            if (js[i].out[t] != js[i].want[t])
                fail_msg("%s: request %d (prompt %zu tokens): token %zu is %d, alone it is %d", what, i, js[i].n_prompt,
                         t, js[i].out[t], js[i].want[t]);
    }
}

/* Waits until nothing runs or waits, then checks that every block is back
 * (free or cached) and no sequence holds any. */
static void expect_idle(eng_sched *s) {
    eng_sched_stats st;
    for (int i = 0; i < 5000; i++) {
        eng_sched_stats_get(s, &st);
        if (st.running == 0 && st.waiting == 0 && st.slots_busy == 0) break;
        kn_sleep_ms(1);
    }
    assert_int_equal(st.running, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.slots_busy, 0);
    if (st.kv.blocks_used != 0 || st.kv.blocks_logical != 0 ||
        st.kv.blocks_free + st.kv.blocks_cached != st.kv.blocks_total)
        fail_msg("pool not idle: used %d logical %d free %d cached %d total %d", st.kv.blocks_used,
                 st.kv.blocks_logical, st.kv.blocks_free, st.kv.blocks_cached, st.kv.blocks_total);
}

/* ---- concurrency ---------------------------------------------------------- */

/* 16 jobs over the model's reference prompts: job i takes a prefix of
 * prompt i % n_base, shorter for larger i, and a different length. */
static void concurrency_case(env *e, const char *name, const char *const *bases, int n_base, size_t cap, int n_ctx,
                             model_kv_type kvt, bool check_llama) {
    mdl M;
    mdl_load(name, &M);
    int32_t base[4][256];
    size_t nb[4];
    for (int b = 0; b < n_base; b++) nb[b] = ref_ints(name, bases[b], "prompt_tokens", base[b], cap);
    job js[16];
    memset(js, 0, sizeof js);
    for (int i = 0; i < 16; i++) {
        int b = i % n_base, step = i / n_base, steps = 16 / n_base;
        js[i].prompt = base[b];
        js[i].n_prompt = 2 + (nb[b] - 2) * (size_t)(steps - step) / (size_t)steps;
        js[i].n_predict = step == 0 ? 24 : 5 + (i * 7) % 19;
    }
    run_alone_kv(e, &M, n_ctx, kvt, js, 16);
    if (check_llama) /* the alone runs themselves are right: llama.cpp's greedy tokens */
        for (int b = 0; b < n_base; b++) {
            int32_t g[64];
            size_t ng = ref_ints(name, bases[b], "greedy", g, 64);
            assert_int_equal(js[b].n_prompt, nb[b]);
            assert_true(ng >= 24);
            for (size_t t = 0; t < 24; t++)
                if (js[b].want[t] != g[t])
                    fail_msg("%s/%s alone: token %zu is %d, llama.cpp's greedy is %d", name, bases[b], t, js[b].want[t],
                             g[t]);
        }
    const int ks[] = {1, 4, 16};
    for (int ki = 0; ki < 3; ki++) {
        eng_sched *s = mk(e, &M,
                          (eng_sched_opts){.n_slots = 16, .n_ctx = n_ctx, .max_batch = 24, .block_size = 16,
                                           .kv_type = kvt});
        run_all(s, js, ks[ki], NULL);
        char what[128];
        snprintf(what, sizeof what, "%s (%s KV), %d concurrent", name, kvt == MODEL_KV_Q8_0 ? "Q8_0" : "F16", ks[ki]);
        expect_alone(what, js, ks[ki]);
        expect_idle(s);
        eng_sched_destroy(s);
    }
    mdl_free(&M);
}

static void test_concurrent_equals_alone(void **state) {
    const char *st[] = {"story", "code", "mixed"};
    concurrency_case(*state, "stories260K", st, 3, 256, 128, MODEL_KV_F16, true);
    const char *tl[] = {"story", "code", "mixed", "long"};
    concurrency_case(*state, "tiny-llama-Q8_0", tl, 4, 160, 192, MODEL_KV_F16, false);
    /* a Q8_0 KV cache (it needs head_dim % 32 == 0: not stories260K): batched
     * equals alone just the same (alone also in Q8_0) */
    concurrency_case(*state, "tiny-llama-Q8_0", tl, 4, 160, 192, MODEL_KV_Q8_0, false);
}

/* ---- preemption ----------------------------------------------------------- */

static void test_preemption(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    int32_t code[128], mixed[128], story[16];
    size_t nc = ref_ints(M.name, "code", "prompt_tokens", code, 128);
    size_t nm = ref_ints(M.name, "mixed", "prompt_tokens", mixed, 128);
    size_t ns = ref_ints(M.name, "story", "prompt_tokens", story, 16);
    assert_true(nc > 40 && nm > 30 && ns > 5);
    const int n_ctx = 128, bs = 16;
    job js[4] = {{.prompt = story, .n_prompt = ns},
                 {.prompt = code, .n_prompt = 40},
                 {.prompt = mixed, .n_prompt = 30},
                 {.prompt = code + 7, .n_prompt = 20}};
    for (int i = 0; i < 4; i++) js[i].n_predict = 120 - (int)js[i].n_prompt - i; /* long: the pool holds about one */
    run_alone(e, &M, n_ctx, js, 4);
    /* plain, then with prompt-lookup drafts also taking blocks */
    for (int pass = 0; pass < 2; pass++) {
        met_registry *mr = met_registry_create();
        met_family *fp = met_counter(mr, "preempt_total", "p", 0, NULL);
        int per_seq = (n_ctx + bs - 1) / bs;
        eng_sched *s = mk(e, &M,
                          (eng_sched_opts){.n_slots = 4, .n_ctx = n_ctx, .max_batch = 24, .block_size = bs,
                                           .kv_blocks = per_seq + 2, .spec = pass ? ENG_SPEC_NGRAM : ENG_SPEC_NONE,
                                           .spec_max = 8, .metrics = {.preemptions = met_get(fp, NULL)}});
        eng_sched_stats st0;
        eng_sched_stats_get(s, &st0);
        assert_int_equal(st0.kv.blocks_total, per_seq + 2);
        run_all(s, js, 4, NULL);
        expect_alone(pass ? "preemption with drafts" : "preemption", js, 4);
        expect_idle(s);
        eng_sched_stats st;
        eng_sched_stats_get(s, &st);
        assert_int_equal(st.kv.blocks_total, st0.kv.blocks_total);
        eng_sched_destroy(s);
        double pre = met_value(met_get(fp, NULL));
        met_registry_destroy(mr);
        if (pre <= 0) fail_msg("4 long sequences in a pool of %d blocks and no preemption counted", per_seq + 2);
    }
    mdl_free(&M);
}

/* ---- prefix cache --------------------------------------------------------- */

static void test_prefix_across_conversations(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    const int bs = 16, n_ctx = 256, gen = 24;
    int32_t a[256], b[256], story[16];
    size_t na = ref_ints(M.name, "code", "prompt_tokens", a, 256);
    size_t nb = ref_ints(M.name, "mixed", "prompt_tokens", b, 256);
    size_t ns = ref_ints(M.name, "story", "prompt_tokens", story, 16);
    met_registry *mr = met_registry_create();
    met_family *fq = met_counter(mr, "q_total", "q", 0, NULL), *fh = met_counter(mr, "h_total", "h", 0, NULL);
    met_series *q = met_get(fq, NULL), *h = met_get(fh, NULL);
    eng_sched *s = mk(e, &M,
                      (eng_sched_opts){.n_slots = 2, .n_ctx = n_ctx, .max_batch = 64, .block_size = bs,
                                       .metrics = {.prefix_queried = q, .prefix_hit = h}});
    /* conversation A, then B */
    job ja = {.prompt = a, .n_prompt = na, .n_predict = gen}, jb = {.prompt = b, .n_prompt = nb, .n_predict = gen};
    run_all(s, &ja, 1, NULL);
    run_all(s, &jb, 1, NULL);
    /* A's next turn: its history (prompt + reply) and a new user message
     * (the story prompt without BOS); then B's next turn likewise */
    size_t nae = na, nbe = nb;
    memcpy(a + nae, ja.out, gen * sizeof *a), nae += gen;
    memcpy(a + nae, story + 1, (ns - 1) * sizeof *a), nae += ns - 1;
    memcpy(b + nbe, jb.out, gen * sizeof *b), nbe += gen;
    memcpy(b + nbe, story + 2, (ns - 2) * sizeof *b), nbe += ns - 2;
    job ext[2] = {{.prompt = a, .n_prompt = nae, .n_predict = 20}, {.prompt = b, .n_prompt = nbe, .n_predict = 20}};
    size_t hist[2] = {na + gen - 1, nb + gen - 1}; /* the KV a finished request leaves: all but its last token */
    for (int k = 0; k < 2; k++) {
        double h0 = met_value(h), q0 = met_value(q);
        run_all(s, &ext[k], 1, NULL);
        double want_hit = (double)(hist[k] / bs * bs);
        if (fabs(met_value(h) - h0 - want_hit) > 0.5)
            fail_msg("conversation %c's next turn reused %.0f prompt tokens, its %zu cached history tokens hold %.0f "
                     "in whole blocks",
                     'A' + k, met_value(h) - h0, hist[k], want_hit);
        assert_true(fabs(met_value(q) - q0 - (double)ext[k].n_prompt) < 0.5);
    }
    expect_idle(s);
    eng_sched_destroy(s);
    /* the same turns cold */
    run_alone(e, &M, n_ctx, ext, 2);
    expect_alone("prefix hit vs cold", ext, 2);
    met_registry_destroy(mr);
    mdl_free(&M);
}

static void test_shared_prefix_memory(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    const int bs = 16, n_ctx = 160;
    int32_t pre[128], mixed[128], prompts[4][128];
    size_t np = ref_ints(M.name, "code", "prompt_tokens", pre, 128);
    size_t nm = ref_ints(M.name, "mixed", "prompt_tokens", mixed, 128);
    assert_true(nm > 40);
    job js[4];
    memset(js, 0, sizeof js);
    for (int i = 0; i < 4; i++) {
        memcpy(prompts[i], pre, np * sizeof *pre);
        memcpy(prompts[i] + np, mixed + 1 + 8 * i, 6 * sizeof *pre); /* a different question after the shared prefix */
        js[i] = (job){.prompt = prompts[i], .n_prompt = np + 6, .n_predict = 40};
    }
    run_alone(e, &M, n_ctx, js, 4);
    eng_sched *s = mk(e, &M, (eng_sched_opts){.n_slots = 4, .n_ctx = n_ctx, .max_batch = 64, .block_size = bs});
    probe pr = {0};
    run_all(s, js, 4, &pr);
    expect_alone("shared prefix", js, 4);
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    int shared_blocks = (int)(np / bs); /* whole blocks of the common prefix */
    if (pr.max_shared < 3 * shared_blocks)
        fail_msg("4 requests sharing %d prefix blocks: at most %d blocks were shared (blocks_logical - blocks_used), "
                 "want %d (dedups %llu)",
                 shared_blocks, pr.max_shared, 3 * shared_blocks, (unsigned long long)st.kv.dedups);
    expect_idle(s);
    eng_sched_destroy(s);
    mdl_free(&M);
}

/* ---- collisions ----------------------------------------------------------- */

static void test_forced_collisions(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    const char *names[] = {"code", "mixed", "story"};
    int32_t p[3][128], g[3][64];
    size_t n[3];
    job js[6];
    memset(js, 0, sizeof js);
    for (int i = 0; i < 3; i++) {
        n[i] = ref_ints(M.name, names[i], "prompt_tokens", p[i], 128);
        assert_int_equal(ref_ints(M.name, names[i], "greedy", g[i], 64), 24);
    }
    /* one after the other: code, mixed, story; then all three at once */
    for (int i = 0; i < 6; i++) js[i] = (job){.prompt = p[i % 3], .n_prompt = n[i % 3], .n_predict = 24};
    for (int i = 0; i < 6; i++) {
        memcpy(js[i].want, g[i % 3], 24 * sizeof *g[0]);
        js[i].n_want = 24;
    }
    eng_sched *s = mk(e, &M,
                      (eng_sched_opts){.n_slots = 3, .n_ctx = 128, .max_batch = 32, .block_size = 16,
                                       .test_const_hash = true});
    for (int i = 0; i < 3; i++) run_all(s, &js[i], 1, NULL);
    run_all(s, &js[3], 3, NULL);
    expect_alone("forced collisions (want: llama.cpp's greedy)", js, 6);
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    if (st.kv.collisions == 0) fail_msg("every block hashes alike, yet no collision was counted");
    expect_idle(s);
    eng_sched_destroy(s);
    mdl_free(&M);
}

/* ---- cancellation --------------------------------------------------------- */

static void test_cancel_releases_blocks(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    int32_t code[128], mixed[128];
    size_t nc = ref_ints(M.name, "code", "prompt_tokens", code, 128);
    size_t nm = ref_ints(M.name, "mixed", "prompt_tokens", mixed, 128);
    eng_sched *s = mk(e, &M, (eng_sched_opts){.n_slots = 4, .n_ctx = 256, .max_batch = 32, .block_size = 16});
    eng_sched_stats st0;
    eng_sched_stats_get(s, &st0);
    job js[6];
    memset(js, 0, sizeof js);
    for (int i = 0; i < 6; i++)
        js[i] = (job){.prompt = i % 2 ? code : mixed, .n_prompt = (i % 2 ? nc : nm) - (size_t)i, .n_predict = 150};
    for (int i = 0; i < 6; i++) submit(s, &js[i]);
    /* let the first ones generate a while */
    while (js[0].n_out < 8 || js[1].n_out < 8) {
        pump(&js[0], 5);
        pump(&js[1], 5);
        assert_false(js[0].done || js[1].done);
    }
    eng_sched_stats st;
    eng_sched_stats_get(s, &st);
    assert_true(st.kv.blocks_used > 0);
    /* cancel two (and read them to the end), drop the others unread: running
     * or still queued, releasing cancels them */
    eng_req_cancel(js[0].r);
    eng_req_cancel(js[1].r);
    for (int i = 2; i < 6; i++) eng_req_release(js[i].r);
    for (int k = 0; k < 2; k++) {
        while (!pump(&js[k], 100)) {
        }
        assert_int_equal(js[k].res.finish, ENG_FINISH_CANCELLED);
        assert_true(js[k].n_out < 150);
    }
    expect_idle(s);
    eng_sched_stats_get(s, &st);
    assert_int_equal(st.kv.blocks_total, st0.kv.blocks_total);
    /* the pool still serves: a request afterwards gives its alone tokens */
    job j = {.prompt = code, .n_prompt = nc, .n_predict = 24};
    run_alone(e, &M, 256, &j, 1);
    run_all(s, &j, 1, NULL);
    expect_alone("after cancellations", &j, 1);
    expect_idle(s);
    eng_sched_destroy(s);
    mdl_free(&M);
}

/* ---- speculative decoding ------------------------------------------------- */

static const char REPEAT[] = "Once upon a time, there was a little girl named Lily. She loved to play in the park "
                             "with her big red ball. ";

static int32_t *repetitive_prompt(const mdl *M, size_t *n) {
    char text[1024] = "";
    for (int i = 0; i < 3; i++) strcat(text, REPEAT);
    text[strlen(text) - 1] = 0; /* no trailing space: the prompt ends on an n-gram seen before */
    int32_t *ids;
    kn_err err = {0};
    assert_int_equal(tok_encode_alloc(M->v, text, strlen(text), true, false, &ids, n, &err), KN_OK);
    assert_true(*n > 30);
    return ids;
}

typedef struct spec_counters {
    met_registry *mr;
    met_series *draft, *accepted;
} spec_counters;

static void counters_init(spec_counters *c) {
    c->mr = met_registry_create();
    c->draft = met_get(met_counter(c->mr, "d_total", "d", 0, NULL), NULL);
    c->accepted = met_get(met_counter(c->mr, "a_total", "a", 0, NULL), NULL);
}

/* Runs js (spec per job) on a scheduler with the given speculative options:
 * each equals its plain alone tokens; returns drafts fed and accepted. */
static void spec_run(env *e, const mdl *M, int n_ctx, eng_spec_mode def, const model *draft, job *js, int n,
                     const char *what, double *fed, double *acc) {
    spec_counters c;
    counters_init(&c);
    eng_sched *s = mk(e, M,
                      (eng_sched_opts){.n_slots = 4, .n_ctx = n_ctx, .max_batch = 48, .block_size = 16, .spec = def,
                                       .spec_max = 8, .draft = draft,
                                       .metrics = {.spec_draft = c.draft, .spec_accepted = c.accepted}});
    run_all(s, js, n, NULL);
    expect_alone(what, js, n);
    expect_idle(s);
    eng_sched_destroy(s); /* joins the engine thread: its last step's counts are in */
    *fed = met_value(c.draft);
    *acc = met_value(c.accepted);
    met_registry_destroy(c.mr);
    if (*acc > *fed) fail_msg("%s: %.0f drafts accepted of %.0f fed", what, *acc, *fed);
}

static void test_spec_ngram(void **state) {
    env *e = *state;
    mdl M;
    mdl_load("stories260K", &M);
    size_t nr;
    int32_t *rep = repetitive_prompt(&M, &nr);
    int32_t code[128], story[16];
    size_t nc = ref_ints(M.name, "code", "prompt_tokens", code, 128);
    size_t ns = ref_ints(M.name, "story", "prompt_tokens", story, 16);
    const int n_ctx = 256;
    job js[3] = {{.prompt = rep, .n_prompt = nr, .n_predict = 64},
                 {.prompt = code, .n_prompt = nc, .n_predict = 48},
                 {.prompt = story, .n_prompt = ns, .n_predict = 80}};
    run_alone(e, &M, n_ctx, js, 3);
    double fed, acc;
    /* the scheduler's default: the repetitive prompt alone, then all three together */
    spec_run(e, &M, n_ctx, ENG_SPEC_NGRAM, NULL, js, 1, "ngram, alone", &fed, &acc);
    if (fed <= 0 || acc <= 0) fail_msg("prompt lookup on a thrice-repeated text: %.0f drafts fed, %.0f accepted", fed, acc);
    spec_run(e, &M, n_ctx, ENG_SPEC_NGRAM, NULL, js, 3, "ngram, 3 concurrent", &fed, &acc);
    assert_true(fed > 0 && acc > 0);
    /* per request, on a scheduler whose default is none */
    for (int i = 0; i < 3; i++) js[i].spec = ENG_SPEC_NGRAM;
    spec_run(e, &M, n_ctx, ENG_SPEC_NONE, NULL, js, 3, "ngram per request", &fed, &acc);
    assert_true(fed > 0 && acc > 0);
    /* and the other way: the default is ngram, a request says none */
    for (int i = 0; i < 3; i++) js[i].spec = ENG_SPEC_NONE;
    spec_run(e, &M, n_ctx, ENG_SPEC_NGRAM, NULL, js, 3, "none per request", &fed, &acc);
    assert_true(fed == 0);
    free(rep);
    mdl_free(&M);
}

static void test_spec_draft_model(void **state) {
    env *e = *state;
    mdl M, D, X;
    mdl_load("stories260K", &M);
    mdl_load("stories260K-Q8_0", &D);
    size_t nr;
    int32_t *rep = repetitive_prompt(&M, &nr);
    int32_t mixed[128], story[16];
    size_t nm = ref_ints(M.name, "mixed", "prompt_tokens", mixed, 128);
    size_t ns = ref_ints(M.name, "story", "prompt_tokens", story, 16);
    const int n_ctx = 256;
    job js[3] = {{.prompt = rep, .n_prompt = nr, .n_predict = 64},
                 {.prompt = mixed, .n_prompt = nm, .n_predict = 40},
                 {.prompt = story, .n_prompt = ns, .n_predict = 80}};
    run_alone(e, &M, n_ctx, js, 3);
    double fed, acc;
    spec_run(e, &M, n_ctx, ENG_SPEC_DRAFT, D.m, js, 1, "draft model, alone", &fed, &acc);
    if (fed <= 0 || acc <= 0) fail_msg("the Q8_0 twin as draft: %.0f drafts fed, %.0f accepted", fed, acc);
    spec_run(e, &M, n_ctx, ENG_SPEC_DRAFT, D.m, js, 3, "draft model, 3 concurrent", &fed, &acc);
    assert_true(fed > 0 && acc > 0);
    /* a draft with another vocabulary is refused */
    mdl_load("tiny-llama-Q8_0", &X);
    eng_sched_opts o = {.n_slots = 2, .n_ctx = 64, .max_batch = 32, .spec = ENG_SPEC_DRAFT, .spec_max = 4,
                        .draft = X.m};
    eng_sched *s = NULL;
    kn_err err = {0};
    assert_int_equal(eng_sched_create(M.m, M.v, &e->ops, e->pool, &o, &s, &err), KN_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "vocab"));
    /* a random-weight model with a 32k vocabulary, its Q4_0 twin as draft
     * (some drafts rejected): identical output */
    {
        mdl Q;
        mdl_load("tiny-llama-Q4_0", &Q);
        size_t nt;
        int32_t *rept = repetitive_prompt(&X, &nt), code[64];
        size_t nc = ref_ints(X.name, "code", "prompt_tokens", code, 64);
        job jt[2] = {{.prompt = rept, .n_prompt = nt, .n_predict = 40}, {.prompt = code, .n_prompt = nc, .n_predict = 30}};
        run_alone(e, &X, 192, jt, 2);
        spec_run(e, &X, 192, ENG_SPEC_DRAFT, Q.m, jt, 2, "tiny-llama-Q8_0 drafted by its Q4_0 twin", &fed, &acc);
        assert_true(fed > 0);
        free(rept);
        mdl_free(&Q);
    }
    mdl_free(&X);
    /* the model itself as its own draft: every draft fed is accepted (and
     * counted as accepted, the request's last step included) */
    spec_run(e, &M, n_ctx, ENG_SPEC_DRAFT, M.m, js, 3, "self draft", &fed, &acc);
    if (fed <= 0 || acc != fed) fail_msg("the model as its own draft: %.0f of %.0f drafts accepted", acc, fed);
    free(rep);
    mdl_free(&D);
    mdl_free(&M);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_equals_alone), cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_prefix_across_conversations), cmocka_unit_test(test_shared_prefix_memory),
        cmocka_unit_test(test_forced_collisions),     cmocka_unit_test(test_cancel_releases_blocks),
        cmocka_unit_test(test_spec_ngram),            cmocka_unit_test(test_spec_draft_model),
    };
    return cmocka_run_group_tests(tests, tu_compute_setup, tu_compute_teardown);
}
