/*
 * test_model_mem.c — the memory estimate (model_read_shape,
 * model_estimate_bytes, model_kv_bytes_per_token) against what the real
 * objects allocate.
 *
 * For every ../shared/models/<m>.gguf that loads (globbed, so a new family's
 * models are checked as soon as they load): the shape read from metadata
 * alone agrees with the loaded model's hyper-parameters; then, for several
 * sizings, the model, a KV pool sized as the engine sizes it and a
 * model_ctx are created, and
 *  - the estimate is not below the bytes they hold (the weights as copied
 *    at load, the layer table, the KV pool, the scratch): a budget built on
 *    it cannot be overrun by them;
 *  - it is not above twice those bytes plus the engine's own buffers
 *    (logits, hidden states, batch tables, as src/engine/sched.c allocates
 *    them, and 64 bytes a vocabulary entry for the tokenizer, which this
 *    test does not build): an estimate far above would refuse loads that
 *    fit;
 *  - a decoder's KV bytes per token times the block size are exactly the
 *    pool's block bytes, and only the KV term moves with the context.
 */
#include "testutil.h"
#include "kiln/model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef tu_compute env;

/* A sizing, as the runtime hands it to the engine. */
static const model_mem_opts SIZINGS[] = {
    {.n_ctx = 128, .n_slots = 1, .max_batch = 1},
    {.n_ctx = 512, .n_slots = 4, .max_batch = 64, .block_size = 16, .spec_max = 4},
    {.n_ctx = 2048, .n_slots = 2, .max_batch = 512, .kv_type = MODEL_KV_Q8_0, .cache_bytes = 1 << 20},
    {.n_ctx = 0 /* the trained context, at most 8192 */,
     .n_slots = 8,
     .max_batch = 32,
     .block_size = 64,
     .cache_bytes = 4 << 20,
     .spec_max = 8},
    {.n_ctx = 1024, .n_slots = 3, .max_batch = 16, .kv_blocks = 500},
};

/* The bytes the load holds: the data section copied into memory, the layer table. */
static uint64_t weights_held(const model *m) {
    return gguf_file_size(m->gguf) - gguf_data_offset(m->gguf) +
           (uint64_t)m->hp.n_layer * sizeof(model_layer);
}

/* What the engine allocates besides the model's objects (src/engine/sched.c:
 * logits of every slot and draft token, hidden states and batch tables of
 * max_batch tokens; for an encoder its per-input tables and pooled vectors
 * of enc_cap tokens), plus 64 bytes a vocabulary entry for the tokenizer. */
static double engine_bytes(const model *m, const model_mem_opts *o, int B) {
    const double V = m->hp.n_vocab, E = m->hp.n_embd;
    model_shape sh;
    kn_err err = {0};
    assert_int_equal(model_read_shape(m->gguf, &sh, &err), KN_OK);
    const double tok = (double)model_tokenizer_bytes(&sh);
    if (model_is_encoder(m)) return (double)B * (4 * E + 4 + 8 + 8 + 4) + tok;
    return 4.0 * o->n_slots * (1 + o->spec_max) * V + (double)B * (4 * E + 13) + tok;
}

/* The engine's KV pool for this sizing (sched.c). NULL for an encoder. */
static model_kv *engine_kv(const model *m, const model_mem_opts *o) {
    kv_geom g;
    kn_err err = {0};
    assert_int_equal(model_kv_geom(m, o->kv_type, &g, &err), KN_OK);
    kv_opts ko = {.n_seq = o->n_slots,
                  .n_ctx = o->n_ctx,
                  .block_size = o->block_size ? o->block_size : 32,
                  .n_blocks = (int)o->kv_blocks,
                  .prefix_cache = true};
    if (ko.n_blocks == 0) {
        uint64_t block =
            2ull * (uint64_t)g.n_layer * (uint64_t)g.n_head_kv * (uint64_t)ko.block_size * g.row_bytes;
        ko.n_blocks = (int)kv_pool_blocks(o->n_slots, o->n_ctx, ko.block_size, block, o->cache_bytes);
    }
    model_kv *kv = NULL;
    kn_status st = kv_cache_create(&g, &ko, &kv, &err);
    if (st) fprintf(stderr, "kv: %s\n", err.msg);
    assert_int_equal(st, KN_OK);
    return kv;
}

static void check_shape(const model *m, const model_shape *s) {
    const model_hparams *hp = &m->hp;
    assert_true(s->supported);
    assert_int_equal(s->arch, hp->arch);
    assert_int_equal(s->encoder, model_is_encoder(m));
    assert_int_equal(s->n_layer, hp->n_layer);
    assert_int_equal(s->n_embd, hp->n_embd);
    assert_int_equal(s->n_ff, hp->n_ff);
    assert_int_equal(s->n_head, hp->n_head);
    assert_int_equal(s->n_head_kv, hp->n_head_kv);
    assert_int_equal(s->head_dim, hp->head_dim);
    assert_int_equal(s->n_vocab, hp->n_vocab);
    assert_int_equal(s->ctx_train, hp->n_ctx_train);
    assert_int_equal(s->weight_bytes, m->weight_bytes);
}

/* One sizing: builds the objects, checks the bounds; returns the estimate. */
static uint64_t check_sizing(env *e, const char *name, const model *m, const model_shape *s,
                             model_mem_opts o) {
    const bool enc = model_is_encoder(m);
    if (o.n_ctx == 0) o.n_ctx = m->hp.n_ctx_train < 8192 ? m->hp.n_ctx_train : 8192;
    if (o.n_ctx > m->hp.n_ctx_train) o.n_ctx = m->hp.n_ctx_train;
    if (o.kv_type == MODEL_KV_Q8_0 && m->hp.head_dim % 32) o.kv_type = MODEL_KV_F16;
    /* the engine: a decoder's batch holds at least a token per slot; an
     * encoder's scratch holds the token budget or one whole input */
    const int B = enc ? (o.max_batch > o.n_ctx ? o.max_batch : o.n_ctx)
                      : (o.max_batch > o.n_slots ? o.max_batch : o.n_slots);
    kn_err err = {0};
    model_ctx *c = NULL;
    assert_int_equal(model_ctx_create(m, &e->ops, e->pool, B, &c, &err), KN_OK);
    model_kv *kv = enc ? NULL : engine_kv(m, &o);
    const uint64_t kvb = kv ? kv_bytes(kv) : 0, ctxb = model_ctx_bytes(c), wb = weights_held(m);
    const uint64_t held = wb + kvb + ctxb;
    const uint64_t est = model_estimate_bytes(s, &o);
    const double bound = 2.0 * (double)held + engine_bytes(m, &o, B);
    fprintf(stderr,
            "%-26s ctx %5d slots %d batch %4d %s: weights %9llu kv %10llu scratch %9llu -> held %10llu, "
            "estimate %10llu (%.2fx, bound %.0f)\n",
            name, o.n_ctx, o.n_slots, B, model_kv_type_name(o.kv_type), (unsigned long long)wb,
            (unsigned long long)kvb, (unsigned long long)ctxb, (unsigned long long)held,
            (unsigned long long)est, (double)est / (double)held, bound);
    assert_true(est >= held);
    assert_true((double)est <= bound);
    if (kv) {
        /* the per-token figure is the pool's, exactly */
        const int bs = kv_block_size(kv);
        assert_true(model_kv_bytes_per_token(s, o.kv_type) * bs == (double)kv_block_bytes(kv));
        /* only the KV term moves with the context: one more block per slot
         * (with the cache room clamped the same way) */
        if (o.kv_blocks == 0 && o.cache_bytes == 0) {
            model_mem_opts o2 = o;
            o2.n_ctx = o.n_ctx + bs;
            assert_int_equal(model_estimate_bytes(s, &o2) - est, (uint64_t)o.n_slots * kv_block_bytes(kv));
        }
    } else {
        assert_true(model_kv_bytes_per_token(s, o.kv_type) == 0.0);
    }
    kv_cache_destroy(kv);
    model_ctx_destroy(c);
    return est;
}

static void test_estimate_vs_allocation(void **state) {
    env *e = *state;
    char dir[1024];
    tu_shared_path(dir, sizeof dir, "models");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int decoders = 0, encoders = 0;
    while ((de = readdir(d))) {
        const size_t ln = strlen(de->d_name);
        if (ln < 6 || strcmp(de->d_name + ln - 5, ".gguf")) continue;
        char path[1300];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        model *m = NULL;
        kn_err err = {0};
        if (model_load(path, NULL, &m, &err) != KN_OK) {
            fprintf(stderr, "%-26s skipped: %s\n", de->d_name, err.msg);
            continue;
        }
        model_shape s;
        assert_int_equal(model_read_shape(m->gguf, &s, &err), KN_OK);
        check_shape(m, &s);
        for (size_t i = 0; i < sizeof SIZINGS / sizeof SIZINGS[0]; i++)
            check_sizing(e, de->d_name, m, &s, SIZINGS[i]);
        if (model_is_encoder(m))
            encoders++;
        else
            decoders++;
        model_destroy(m);
    }
    closedir(d);
    fprintf(stderr, "checked %d decoders, %d encoders\n", decoders, encoders);
    /* stories260K (2), tiny-llama-* (8), tiny-qwen2; tiny-bert-* (3) */
    assert_true(decoders >= 11);
    assert_true(encoders >= 3);
}

/* A shape is read without loading: a file the loader refuses still has
 * one when its keys are there, and the failures say which kind. */
static void test_read_shape_errors(void **state) {
    (void)state;
    char path[1024];
    kn_err err = {0};
    gguf_ctx *g = NULL;
    model_shape s;
    /* an architecture with no row: estimated as a plain decoder, flagged */
    char tmp[] = "/tmp/kiln-shape-XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    close(fd);
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    const char *toks[] = {"a", "b", "c"};
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "mamba"), KN_OK);
    assert_int_equal(gguf_writer_set_u32(w, "mamba.block_count", 2), KN_OK);
    assert_int_equal(gguf_writer_set_u32(w, "mamba.embedding_length", 64), KN_OK);
    assert_int_equal(gguf_writer_set_u32(w, "mamba.context_length", 128), KN_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), KN_OK);
    assert_int_equal(gguf_writer_write_file(w, tmp, &err), KN_OK);
    gguf_writer_destroy(w);
    assert_int_equal(gguf_open(tmp, &g, &err), KN_OK);
    assert_int_equal(model_read_shape(g, &s, &err), KN_OK);
    assert_false(s.supported);
    assert_false(s.encoder);
    assert_int_equal(s.arch, MODEL_ARCH_LLAMA);
    assert_true(s.n_layer == 2 && s.n_vocab == 3);
    gguf_close(g);
    unlink(tmp);
    /* no <arch>.block_count and friends */
    tu_shared_path(path, sizeof path, "models/quant-zoo.gguf");
    assert_int_equal(gguf_open(path, &g, &err), KN_OK);
    assert_int_equal(model_read_shape(g, &s, &err), KN_EFORMAT);
    assert_string_equal(err.msg, "the model's hyper-parameters are missing or invalid");
    gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_shape_errors),
        cmocka_unit_test(test_estimate_vs_allocation),
    };
    return cmocka_run_group_tests(tests, tu_compute_setup, tu_compute_teardown);
}
