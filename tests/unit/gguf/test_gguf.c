/*
 * test_gguf.c — the GGUF reader against llama.cpp-written files in
 * $KILN_SHARED, the writer by round trip (and through the independent Python
 * reader shared/tools/ggufio.py), and hostile files: each must give an error
 * that names the problem, and no crash (run under ASan in the sanitizer
 * build; every hostile buffer is an exact-size heap copy so over-reads are
 * caught).
 */
#include "testutil.h"

#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint64_t get_u64(const gguf_ctx *g, const char *key) {
    uint64_t v = 0;
    kn_status st = gguf_get_u64(g, key, &v);
    if (st) fail_msg("key %s: %s", key, kn_status_str(st));
    return v;
}

static bool str_is(const gguf_ctx *g, const char *key, const char *want) {
    gguf_str s;
    if (gguf_get_str(g, key, &s)) return false;
    return gguf_str_eq(s, want);
}

static uint64_t arr_len(const gguf_ctx *g, const char *key) {
    gguf_type et;
    uint64_t n = 0;
    const void *d;
    assert_int_equal(gguf_get_arr(g, key, &et, &n, &d), KN_OK);
    return n;
}

static gguf_ctx *open_shared(const char *rel) {
    char p[1024];
    tu_shared_path(p, sizeof p, rel);
    gguf_ctx *g = NULL;
    kn_err err = {0};
    kn_status st = gguf_open(p, &g, &err);
    if (st) fail_msg("%s: %s", p, err.msg);
    return g;
}

/* ---- real files ---- */

static void check_all_tensors(const gguf_ctx *g) {
    uint64_t data = gguf_data_offset(g), size = gguf_file_size(g);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        assert_non_null(t);
        const q_traits *tr = q_get_traits(t->type);
        assert_non_null(tr);
        assert_int_equal(t->nbytes, t->nelements / (uint64_t)tr->blck_size * tr->type_size);
        assert_true(data + t->offset + t->nbytes <= size);
        assert_int_equal(t->offset % gguf_alignment(g), 0);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        assert_ptr_equal(gguf_find_tensor(g, name), t);
    }
}

static void test_every_shared_file_opens(void **state) {
    (void)state;
    const char *dirs[] = {"models", "tokenizers"};
    int n_files = 0;
    for (int d = 0; d < 2; d++) {
        char dir[1024];
        tu_shared_path(dir, sizeof dir, dirs[d]);
        DIR *dp = opendir(dir);
        assert_non_null(dp);
        struct dirent *e;
        while ((e = readdir(dp))) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 5, ".gguf")) continue;
            char rel[512];
            snprintf(rel, sizeof rel, "%s/%s", dirs[d], e->d_name);
            gguf_ctx *g = open_shared(rel);
            assert_true(gguf_version(g) == 3 || gguf_version(g) == 2);
            assert_int_equal(gguf_alignment(g), 32);
            assert_true(gguf_find_key(g, "general.architecture") >= 0);
            /* every key readable through the generic getters */
            for (int64_t i = 0; i < gguf_n_kv(g); i++) {
                gguf_type t = gguf_kv_type(g, i);
                if (t == GGUF_TYPE_ARRAY) {
                    gguf_type et;
                    uint64_t n;
                    const void *data;
                    assert_int_equal(gguf_kv_get_arr(g, i, &et, &n, &data), KN_OK);
                    if (et == GGUF_TYPE_STRING && n) {
                        gguf_str s;
                        assert_int_equal(gguf_kv_arr_str(g, i, n - 1, &s), KN_OK);
                        assert_int_equal(gguf_kv_arr_str(g, i, n, &s), KN_ERANGE);
                    }
                } else {
                    assert_int_equal(gguf_kv_scalar(g, i, NULL, NULL, NULL, NULL), KN_OK);
                }
            }
            if (d == 1) {
                assert_int_equal(gguf_n_tensors(g), 0);
                assert_true(arr_len(g, "tokenizer.ggml.tokens") > 1000);
            } else {
                assert_true(gguf_n_tensors(g) > 0);
            }
            check_all_tensors(g);
            gguf_close(g);
            n_files++;
        }
        closedir(dp);
    }
    assert_true(n_files >= 20);
}

static void test_stories260k_facts(void **state) {
    (void)state;
    gguf_ctx *g = open_shared("models/stories260K.gguf");
    assert_true(str_is(g, "general.architecture", "llama"));
    assert_int_equal(get_u64(g, "llama.embedding_length"), 64);
    assert_int_equal(get_u64(g, "llama.block_count"), 5);
    assert_int_equal(get_u64(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_u64(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(get_u64(g, "llama.feed_forward_length"), 172);
    assert_int_equal(get_u64(g, "llama.context_length"), 2048);
    assert_int_equal(arr_len(g, "tokenizer.ggml.tokens"), 512);
    assert_true(str_is(g, "tokenizer.ggml.model", "llama"));
    assert_int_equal(get_u64(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(get_u64(g, "tokenizer.ggml.eos_token_id"), 2);
    gguf_str s;
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &s), KN_OK);
    assert_true(gguf_str_eq(s, "<unk>"));
    /* scores are f32, token types i32 */
    gguf_type et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data), KN_OK);
    assert_int_equal(et, GGUF_TYPE_FLOAT32);
    assert_int_equal(n, 512);
    assert_non_null(data);
    double sc;
    assert_int_equal(gguf_arr_get_f64(g, gguf_find_key(g, "tokenizer.ggml.scores"), 511, &sc), KN_OK);
    assert_int_equal(gguf_arr_get_f64(g, gguf_find_key(g, "tokenizer.ggml.scores"), 512, &sc), KN_ERANGE);
    int64_t tt;
    assert_int_equal(gguf_arr_get_i64(g, gguf_find_key(g, "tokenizer.ggml.token_type"), 0, &tt), KN_OK);
    assert_int_equal(tt, 2); /* <unk> is UNKNOWN */

    /* typed getters report mismatches instead of aborting */
    uint32_t u32;
    float f;
    bool b;
    assert_int_equal(gguf_get_u32(g, "general.architecture", &u32), KN_ETYPE);
    assert_int_equal(gguf_get_f32(g, "llama.block_count", &f), KN_ETYPE);
    assert_int_equal(gguf_get_bool(g, "llama.block_count", &b), KN_ETYPE);
    assert_int_equal(gguf_get_str(g, "llama.block_count", &s), KN_ETYPE);
    assert_int_equal(gguf_get_u32(g, "no.such.key", &u32), KN_ENOTFOUND);
    assert_int_equal(gguf_get_arr(g, "llama.block_count", &et, &n, &data), KN_ETYPE);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.scores", 0, &s), KN_ETYPE);
    assert_int_equal(gguf_find_key(g, "no.such.key"), -1);

    assert_int_equal(gguf_n_tensors(g), 48);
    const gguf_tensor_info *t = gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->type, Q_TYPE_F32);
    assert_null(gguf_find_tensor(g, "token_embd.weigh"));
    t = gguf_find_tensor(g, "blk.4.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 172);
    assert_int_equal(t->ne[1], 64);
    gguf_close(g);
}

static void test_other_model_facts(void **state) {
    (void)state;
    gguf_ctx *g = open_shared("models/tiny-qwen2-Q4_K_M.gguf");
    assert_true(str_is(g, "general.architecture", "qwen2"));
    double theta;
    assert_int_equal(gguf_get_f64(g, "qwen2.rope.freq_base", &theta), KN_OK);
    assert_true(theta == 1e6);
    assert_int_equal(get_u64(g, "qwen2.attention.head_count_kv"), 2);
    assert_int_equal(arr_len(g, "tokenizer.ggml.tokens"), 151936);
    assert_int_equal(get_u64(g, "general.file_type"), 15);
    assert_true(gguf_find_key(g, "tokenizer.chat_template") >= 0);
    gguf_close(g);

    g = open_shared("models/tiny-llama-Q4_K_M.gguf");
    assert_int_equal(get_u64(g, "llama.feed_forward_length"), 768);
    assert_int_equal(gguf_find_tensor(g, "output.weight")->type, Q_TYPE_Q6_K);
    assert_int_equal(gguf_find_tensor(g, "blk.0.attn_q.weight")->type, Q_TYPE_Q4_K);
    assert_int_equal(gguf_find_tensor(g, "blk.1.ffn_down.weight")->type, Q_TYPE_Q6_K);
    gguf_close(g);
}

static void test_quant_zoo(void **state) {
    (void)state;
    gguf_ctx *g = open_shared("models/quant-zoo.gguf");
    const char *names[] = {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
    assert_int_equal(gguf_n_tensors(g), 12);
    for (int i = 0; i < 12; i++) {
        const gguf_tensor_info *t = gguf_find_tensor(g, names[i]);
        assert_non_null(t);
        assert_string_equal(q_type_name(t->type), names[i]);
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->ne[0], 256);
        assert_int_equal(t->ne[1], 16);
        assert_int_equal(t->nelements, 4096);
        assert_int_equal(t->nbytes, q_row_size(t->type, 256) * 16);
    }
    gguf_close(g);
}

/* ---- writer round trip ---- */

static const char *const STRS[] = {"", "hello", "w\xc3\xb6rld", "a\nb"};

static void fill_writer(gguf_writer *w, float *f32, uint16_t *f16, block_q8_0 *q8) {
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "test"), KN_OK);
    assert_int_equal(gguf_writer_set_u8(w, "v.u8", 250), KN_OK);
    assert_int_equal(gguf_writer_set_i8(w, "v.i8", -120), KN_OK);
    assert_int_equal(gguf_writer_set_u16(w, "v.u16", 65000), KN_OK);
    assert_int_equal(gguf_writer_set_i16(w, "v.i16", -32000), KN_OK);
    assert_int_equal(gguf_writer_set_u32(w, "v.u32", 4000000000u), KN_OK);
    assert_int_equal(gguf_writer_set_i32(w, "v.i32", -2000000000), KN_OK);
    assert_int_equal(gguf_writer_set_f32(w, "v.f32", 1.5f), KN_OK);
    assert_int_equal(gguf_writer_set_bool(w, "v.bool", true), KN_OK);
    assert_int_equal(gguf_writer_set_str(w, "v.str", "text"), KN_OK);
    assert_int_equal(gguf_writer_set_u64(w, "v.u64", UINT64_MAX), KN_OK);
    assert_int_equal(gguf_writer_set_i64(w, "v.i64", INT64_MIN), KN_OK);
    assert_int_equal(gguf_writer_set_f64(w, "v.f64", 0.1), KN_OK);
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 64), KN_OK);
    /* replacing keeps one key */
    assert_int_equal(gguf_writer_set_str(w, "v.str", "replaced"), KN_OK);
    int32_t ia[5] = {1, -2, 3, -4, 5};
    assert_int_equal(gguf_writer_set_arr(w, "a.i32", GGUF_TYPE_INT32, ia, 5), KN_OK);
    double da[3] = {0.5, -1e300, 2};
    assert_int_equal(gguf_writer_set_arr(w, "a.f64", GGUF_TYPE_FLOAT64, da, 3), KN_OK);
    uint8_t ba[3] = {1, 0, 1};
    assert_int_equal(gguf_writer_set_arr(w, "a.bool", GGUF_TYPE_BOOL, ba, 3), KN_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.empty", GGUF_TYPE_UINT16, NULL, 0), KN_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "a.str", STRS, 4), KN_OK);
    assert_int_equal(gguf_writer_set_arr(w, "a.bad", GGUF_TYPE_ARRAY, ia, 1), KN_EINVAL);

    for (int i = 0; i < 64 * 3; i++) f32[i] = (float)i * 0.25f - 7.0f;
    for (int i = 0; i < 32; i++) f16[i] = q_f32_to_f16((float)i);
    memset(q8, 0, 2 * sizeof *q8);
    q8[0].d = q_f32_to_f16(0.5f);
    q8[1].qs[3] = -7;
    kn_err err;
    uint64_t ne_a[2] = {64, 3}, ne_b[1] = {32}, ne_c[3] = {32, 1, 2};
    assert_int_equal(gguf_writer_add_tensor(w, "a", 2, ne_a, Q_TYPE_F32, f32, &err), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "b", 1, ne_b, Q_TYPE_F16, f16, &err), 1);
    assert_int_equal(gguf_writer_add_tensor(w, "c", 3, ne_c, Q_TYPE_Q8_0, q8, &err), 2);
    /* bad tensors are refused with a message */
    assert_int_equal(gguf_writer_add_tensor(w, "a", 1, ne_b, Q_TYPE_F32, f32, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate"));
    uint64_t ne_bad[1] = {33};
    assert_int_equal(gguf_writer_add_tensor(w, "d", 1, ne_bad, Q_TYPE_Q8_0, q8, &err), -1);
    assert_non_null(strstr(err.msg, "block size"));
    assert_int_equal(gguf_writer_add_tensor(w, "e", 1, ne_b, 77, q8, &err), -1);
    assert_non_null(strstr(err.msg, "77"));
}

static void check_roundtrip(const gguf_ctx *g, const float *f32, const uint16_t *f16, const block_q8_0 *q8) {
    uint64_t u;
    int64_t i;
    double d;
    float f;
    bool b;
    gguf_str s;
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_alignment(g), 64);
    assert_int_equal(gguf_data_offset(g) % 64, 0);
    assert_int_equal(gguf_n_kv(g), 19);
    assert_int_equal(gguf_get_u64(g, "v.u8", &u), KN_OK);
    assert_int_equal(u, 250);
    assert_int_equal(gguf_get_i64(g, "v.i8", &i), KN_OK);
    assert_int_equal(i, -120);
    assert_int_equal(gguf_get_u64(g, "v.i8", &u), KN_ERANGE);
    assert_int_equal(gguf_get_u64(g, "v.u16", &u), KN_OK);
    assert_int_equal(u, 65000);
    assert_int_equal(gguf_get_i64(g, "v.i16", &i), KN_OK);
    assert_int_equal(i, -32000);
    uint32_t u32;
    assert_int_equal(gguf_get_u32(g, "v.u32", &u32), KN_OK);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(gguf_get_i64(g, "v.i32", &i), KN_OK);
    assert_int_equal(i, -2000000000);
    assert_int_equal(gguf_get_f32(g, "v.f32", &f), KN_OK);
    assert_true(f == 1.5f);
    assert_int_equal(gguf_get_bool(g, "v.bool", &b), KN_OK);
    assert_true(b);
    assert_int_equal(gguf_get_str(g, "v.str", &s), KN_OK);
    assert_true(gguf_str_eq(s, "replaced"));
    assert_int_equal(gguf_get_u64(g, "v.u64", &u), KN_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(gguf_get_i64(g, "v.u64", &i), KN_ERANGE);
    assert_int_equal(gguf_get_u32(g, "v.u64", &u32), KN_ERANGE);
    assert_int_equal(gguf_get_i64(g, "v.i64", &i), KN_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(gguf_get_f64(g, "v.f64", &d), KN_OK);
    assert_true(d == 0.1);
    /* key order is kept */
    assert_true(gguf_str_eq(gguf_kv_key(g, 0), "general.architecture"));
    assert_true(gguf_str_eq(gguf_kv_key(g, 1), "v.u8"));
    int64_t ki = 1; /* v.u8 .. v.f64 in type order */
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (t == GGUF_TYPE_ARRAY) continue;
        assert_int_equal(gguf_kv_type(g, ki++), t);
    }

    gguf_type et;
    uint64_t n;
    const void *data;
    int64_t k = gguf_find_key(g, "a.i32");
    assert_int_equal(gguf_kv_get_arr(g, k, &et, &n, &data), KN_OK);
    assert_int_equal(et, GGUF_TYPE_INT32);
    assert_int_equal(n, 5);
    assert_int_equal(gguf_arr_get_i64(g, k, 3, &i), KN_OK);
    assert_int_equal(i, -4);
    k = gguf_find_key(g, "a.f64");
    assert_int_equal(gguf_arr_get_f64(g, k, 1, &d), KN_OK);
    assert_true(d == -1e300);
    assert_int_equal(gguf_arr_get_i64(g, k, 1, &i), KN_ETYPE);
    k = gguf_find_key(g, "a.bool");
    assert_int_equal(gguf_arr_get_i64(g, k, 2, &i), KN_OK);
    assert_int_equal(i, 1);
    assert_int_equal(gguf_get_arr(g, "a.empty", &et, &n, &data), KN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(et, GGUF_TYPE_UINT16);
    assert_int_equal(gguf_get_arr(g, "a.str", &et, &n, &data), KN_OK);
    assert_int_equal(et, GGUF_TYPE_STRING);
    assert_int_equal(n, 4);
    assert_null(data);
    for (uint64_t j = 0; j < 4; j++) {
        assert_int_equal(gguf_get_arr_str(g, "a.str", j, &s), KN_OK);
        assert_true(gguf_str_eq(s, STRS[j]));
    }

    assert_int_equal(gguf_n_tensors(g), 3);
    const gguf_tensor_info *ta = gguf_find_tensor(g, "a"), *tb = gguf_find_tensor(g, "b"), *tc = gguf_find_tensor(g, "c");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_non_null(tc);
    assert_int_equal(ta->n_dims, 2);
    assert_int_equal(ta->ne[1], 3);
    assert_int_equal(tc->n_dims, 3);
    assert_int_equal(tc->ne[2], 2);
    assert_int_equal(tc->type, Q_TYPE_Q8_0);
    assert_memory_equal(ta->data, f32, 64 * 3 * 4);
    assert_memory_equal(tb->data, f16, 64);
    assert_memory_equal(tc->data, q8, 2 * sizeof *q8);
    assert_int_equal(tb->offset % 64, 0);
    assert_int_equal(tc->offset % 64, 0);
    check_all_tensors(g);
}

static void test_writer_roundtrip(void **state) {
    (void)state;
    char dir[512], path[1024], path2[1024];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/rt.gguf", dir);
    snprintf(path2, sizeof path2, "%s/rt2.gguf", dir);
    float f32[64 * 3];
    uint16_t f16[32];
    block_q8_0 q8[2];
    kn_err err;

    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    fill_writer(w, f32, f16, q8);
    assert_int_equal(gguf_writer_write_file(w, path, &err), KN_OK);
    gguf_writer_destroy(w);

    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    check_roundtrip(g, f32, f16, q8);

    /* streamed, in chunks, copying every key from the reader */
    w = gguf_writer_create();
    for (int64_t i = 0; i < gguf_n_kv(g); i++) assert_int_equal(gguf_writer_copy_kv(w, g, i), KN_OK);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        assert_int_equal(gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, NULL, &err), i);
    }
    assert_int_equal(gguf_writer_open(w, path2, &err), KN_OK);
    assert_int_equal(gguf_writer_put_data(w, 1, f16, 64, &err), KN_EINVAL); /* out of order */
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        uint64_t half = t->nbytes / 2;
        assert_int_equal(gguf_writer_put_data(w, i, t->data, half, &err), KN_OK);
        assert_int_equal(gguf_writer_put_data(w, i, (const uint8_t *)t->data + half, t->nbytes - half, &err), KN_OK);
    }
    assert_int_equal(gguf_writer_finish(w, &err), KN_OK);
    gguf_writer_destroy(w);
    gguf_ctx *g2 = NULL;
    if (gguf_open(path2, &g2, &err)) fail_msg("%s", err.msg);
    check_roundtrip(g2, f32, f16, q8);
    /* identical bytes */
    assert_int_equal(gguf_file_size(g), gguf_file_size(g2));
    size_t l1, l2;
    char *b1 = slurp(path, &l1), *b2 = slurp(path2, &l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);
    gguf_close(g2);
    gguf_close(g);

    /* an independent reader (shared/tools/ggufio.py) reads our output */
    char cmd[4096], out[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys; sys.path.insert(0, '%s/tools'); import ggufio; "
             "r = ggufio.Reader('%s'); print(len(r.kv), [(t[0], t[1], t[2], t[3]) for t in r.tensors], "
             "r.kv['a.str'][1], r.kv['v.i64'][1])\"",
             getenv("KILN_SHARED") ? getenv("KILN_SHARED") : "../shared", path);
    assert_int_equal(tu_run(cmd, out, sizeof out), 0);
    assert_string_equal(out, "19 [('a', [64, 3], 0, 0), ('b', [32], 1, 768), ('c', [32, 1, 2], 8, 832)] "
                             "['', 'hello', 'w\xc3\xb6rld', 'a\\nb'] -9223372036854775808\n");

    /* an unfinished writer leaves no file behind */
    w = gguf_writer_create();
    assert_int_equal(gguf_writer_add_tensor(w, "x", 1, (uint64_t[]){32}, Q_TYPE_F32, NULL, &err), 0);
    snprintf(path2, sizeof path2, "%s/never.gguf", dir);
    assert_int_equal(gguf_writer_open(w, path2, &err), KN_OK);
    assert_int_equal(gguf_writer_finish(w, &err), KN_EINVAL);
    gguf_writer_destroy(w);
    FILE *f = fopen(path2, "rb");
    assert_null(f);
    tu_rmdir(dir);
}

/* ---- hostile files ---- */

typedef struct buf {
    uint8_t b[8192];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n) {
    assert_true(b->n + n <= sizeof b->b);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_hdr(buf *b, uint64_t n_tensors, uint64_t n_kv) {
    put_u32(b, GGUF_MAGIC);
    put_u32(b, 3);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void pad_data(buf *b, size_t data_bytes) {
    while (b->n % 32) b->b[b->n++] = 0;
    assert_true(b->n + data_bytes <= sizeof b->b);
    memset(b->b + b->n, 0x11, data_bytes);
    b->n += data_bytes;
}

/* Opens an exact-size heap copy; returns the status and the message. */
static kn_status try_open(const void *data, size_t n, kn_err *err) {
    void *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, data, n);
    gguf_ctx *g = NULL;
    memset(err, 0, sizeof *err);
    kn_status st = gguf_open_mem(copy, n, &g, err);
    if (st == KN_OK) {
        /* walk everything */
        for (int64_t i = 0; i < gguf_n_kv(g); i++) gguf_kv_scalar(g, i, NULL, NULL, NULL, NULL);
        gguf_close(g);
    } else {
        assert_null(g);
        assert_true(strlen(err->msg) > 0);
    }
    free(copy);
    return st;
}

static void expect_error(const buf *b, const char *needle) {
    kn_err err;
    kn_status st = try_open(b->b, b->n, &err);
    if (st == KN_OK) fail_msg("expected an error containing '%s', got success", needle);
    if (!strstr(err.msg, needle)) fail_msg("expected '%s' in: %s", needle, err.msg);
}

static void test_truncated_at_every_offset(void **state) {
    (void)state;
    char dir[512], path[1024];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/small.gguf", dir);
    float f32[64 * 3];
    uint16_t f16[32];
    block_q8_0 q8[2];
    kn_err err;
    gguf_writer *w = gguf_writer_create();
    fill_writer(w, f32, f16, q8);
    assert_int_equal(gguf_writer_write_file(w, path, &err), KN_OK);
    gguf_writer_destroy(w);
    size_t len;
    char *data = slurp(path, &len);
    /* the last byte any tensor needs */
    gguf_ctx *g = NULL;
    assert_int_equal(gguf_open_mem(data, len, &g, &err), KN_OK);
    uint64_t need = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        uint64_t end = gguf_data_offset(g) + t->offset + t->nbytes;
        if (end > need) need = end;
    }
    gguf_close(g);
    assert_true(need <= len && len < 4096);
    for (size_t cut = 0; cut < len; cut++) {
        kn_status st = try_open(data, cut, &err);
        if (cut < need && st == KN_OK) fail_msg("truncated at %zu of %zu: accepted", cut, len);
    }
    /* a file cut inside the header says it is truncated */
    try_open(data, 100, &err);
    if (!strstr(err.msg, "truncated") && !strstr(err.msg, "bytes left in the file")) fail_msg("%s", err.msg);
    try_open(data, 12, &err);
    assert_string_equal(err.msg, "truncated file: tensor count at offset 8 needs 8 bytes, 4 left");
    try_open(data, need - 1, &err);
    assert_non_null(strstr(err.msg, "extends past end of file"));
    free(data);
    tu_rmdir(dir);
}

static void test_hostile_headers(void **state) {
    (void)state;
    buf b = {0};
    kn_err err;
    assert_int_not_equal(try_open("", 0, &err), KN_OK);

    put(&b, "GGUX", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    expect_error(&b, "bad magic");

    b.n = 0;
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 1);
    put_u64(&b, 0);
    put_u64(&b, 0);
    expect_error(&b, "version 1");
    b.n = 0;
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 7);
    put_u64(&b, 0);
    put_u64(&b, 0);
    expect_error(&b, "version 7");

    /* minimal valid file: header only */
    b.n = 0;
    put_hdr(&b, 0, 0);
    assert_int_equal(try_open(b.b, b.n, &err), KN_OK);

    b.n = 0;
    put_hdr(&b, 1ull << 60, 0);
    expect_error(&b, "tensor count 1152921504606846976");
    b.n = 0;
    put_hdr(&b, 0, 1ull << 60);
    expect_error(&b, "key count 1152921504606846976");
    b.n = 0;
    put_hdr(&b, UINT64_MAX, UINT64_MAX);
    expect_error(&b, "count");

    /* key length past EOF */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_u64(&b, 1ull << 40);
    put(&b, "abcdefghijklmnop", 16);
    expect_error(&b, "string length 1099511627776");
    /* string value length past EOF */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 1000);
    put(&b, "short", 5);
    expect_error(&b, "key 'k': string value at offset");
    /* 2^60 strings in an array */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 1ull << 60);
    put(&b, "0123456789abcdef", 16);
    expect_error(&b, "array of 1152921504606846976 strings");
    /* 2^62 u32 values: the byte count overflows */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_UINT32);
    put_u64(&b, 1ull << 62);
    put(&b, "0123456789abcdef", 16);
    expect_error(&b, "array of 4611686018427387904 u32 values");
    /* arrays of arrays */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "nested");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, GGUF_TYPE_UINT8);
    put_u64(&b, 1);
    put(&b, "x", 1);
    expect_error(&b, "key 'nested': arrays of arrays");
    /* unknown value type */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    put_u64(&b, 0);
    expect_error(&b, "unknown value type 13");
    /* duplicate keys */
    b.n = 0;
    put_hdr(&b, 0, 2);
    put_str(&b, "dup");
    put_u32(&b, GGUF_TYPE_UINT8);
    put(&b, "x", 1);
    put_str(&b, "dup");
    put_u32(&b, GGUF_TYPE_UINT8);
    put(&b, "y", 1);
    expect_error(&b, "duplicate key 'dup'");
    /* alignment: wrong type, not a power of two */
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_TYPE_UINT32);
    put_u32(&b, 48);
    expect_error(&b, "general.alignment 48 is not a power of two");
    b.n = 0;
    put_hdr(&b, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_TYPE_UINT64);
    put_u64(&b, 64);
    expect_error(&b, "general.alignment has type u64");
}

static void test_hostile_tensors(void **state) {
    (void)state;
    buf b = {0};
    kn_err err;
    uint64_t ne32[1] = {32}, ne64[1] = {64};

    /* valid: two F32 tensors back to back */
    put_hdr(&b, 2, 0);
    put_tensor(&b, "t0", 1, ne32, Q_TYPE_F32, 0);
    put_tensor(&b, "t1", 1, ne32, Q_TYPE_F32, 128);
    pad_data(&b, 256);
    assert_int_equal(try_open(b.b, b.n, &err), KN_OK);

    /* overlapping */
    b.n = 0;
    put_hdr(&b, 2, 0);
    put_tensor(&b, "t0", 1, ne64, Q_TYPE_F32, 0);
    put_tensor(&b, "t1", 1, ne32, Q_TYPE_F32, 128);
    pad_data(&b, 512);
    expect_error(&b, "overlaps tensor 't0'");
    /* a big tensor covering two others */
    b.n = 0;
    put_hdr(&b, 3, 0);
    put_tensor(&b, "big", 1, (uint64_t[]){256}, Q_TYPE_F32, 0);
    put_tensor(&b, "a", 1, ne32, Q_TYPE_F32, 256);
    put_tensor(&b, "c", 1, ne32, Q_TYPE_F32, 512);
    pad_data(&b, 1024);
    expect_error(&b, "overlaps tensor 'big'");

    /* dims whose product overflows */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "huge", 3, (uint64_t[]){1ull << 32, 1ull << 32, 1ull << 32}, Q_TYPE_F32, 0);
    pad_data(&b, 64);
    expect_error(&b, "tensor 'huge': shape [4294967296, 4294967296, 4294967296, 1]: element count overflows");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "huge", 1, (uint64_t[]){UINT64_MAX}, Q_TYPE_F32, 0);
    pad_data(&b, 64);
    expect_error(&b, "too large");
    /* byte size overflows (fits int64 elements, not bytes) */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "huge", 2, (uint64_t[]){1ull << 31, 1ull << 31}, Q_TYPE_F32, 0);
    pad_data(&b, 64);
    expect_error(&b, "tensor 'huge'");

    /* misaligned data */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "t0", 1, ne32, Q_TYPE_F32, 4);
    pad_data(&b, 256);
    expect_error(&b, "tensor 't0': data offset 4 is not a multiple of the alignment 32");

    /* unknown types, by number */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "t0", 1, ne32, 99, 0);
    pad_data(&b, 256);
    expect_error(&b, "tensor 't0': unknown tensor type 99");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "t0", 1, ne32, 4, 0); /* removed Q4_2 */
    pad_data(&b, 256);
    expect_error(&b, "unknown tensor type 4");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "t0", 1, ne32, 0x80000000u, 0);
    pad_data(&b, 256);
    expect_error(&b, "unknown tensor type 2147483648");

    /* duplicate names */
    b.n = 0;
    put_hdr(&b, 2, 0);
    put_tensor(&b, "same", 1, ne32, Q_TYPE_F32, 0);
    put_tensor(&b, "same", 1, ne32, Q_TYPE_F32, 128);
    pad_data(&b, 256);
    expect_error(&b, "duplicate tensor name 'same'");

    /* data past the end of the file */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "blk.0.attn_q.weight", 1, ne64, Q_TYPE_F32, 0);
    pad_data(&b, 100);
    expect_error(&b, "tensor 'blk.0.attn_q.weight': data [96, 352) extends past end of file (size 196)");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "t", 1, ne32, Q_TYPE_F32, UINT64_MAX - 31);
    pad_data(&b, 100);
    expect_error(&b, "overflows");

    /* rows not a whole number of blocks; bad dim counts */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "q", 1, (uint64_t[]){48}, Q_TYPE_Q4_0, 0);
    pad_data(&b, 256);
    expect_error(&b, "tensor 'q': row length 48 is not a multiple of the Q4_0 block size 32");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "d", 5, (uint64_t[]){1, 1, 1, 1, 1}, Q_TYPE_F32, 0);
    pad_data(&b, 64);
    expect_error(&b, "tensor 'd': 5 dimensions");
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "d", 0, NULL, Q_TYPE_F32, 0);
    pad_data(&b, 64);
    expect_error(&b, "tensor 'd': 0 dimensions");

    /* names with control bytes are printed safely */
    b.n = 0;
    put_hdr(&b, 1, 0);
    put_tensor(&b, "a\x1b[2Jb", 1, ne32, 99, 0);
    pad_data(&b, 256);
    expect_error(&b, "tensor 'a?[2Jb': unknown tensor type 99");
}

/* Random byte flips of a valid file never crash and every failure has a
 * message (a cheap in-suite cousin of the fuzzer). */
static void test_random_corruption(void **state) {
    (void)state;
    buf b = {0};
    put_hdr(&b, 2, 2);
    put_str(&b, "general.architecture");
    put_u32(&b, GGUF_TYPE_STRING);
    put_str(&b, "llama");
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 3);
    put_str(&b, "a");
    put_str(&b, "bb");
    put_str(&b, "ccc");
    put_tensor(&b, "t0", 2, (uint64_t[]){32, 2}, Q_TYPE_Q8_0, 0);
    put_tensor(&b, "t1", 1, (uint64_t[]){256}, Q_TYPE_Q4_K, 96);
    pad_data(&b, 96 + 144);
    kn_err err;
    assert_int_equal(try_open(b.b, b.n, &err), KN_OK);
    tu_rng rng = {42};
    int n_ok = 0;
    for (int it = 0; it < 20000; it++) {
        buf c = b;
        int flips = 1 + (int)(tu_rng_u64(&rng) % 4);
        for (int k = 0; k < flips; k++) c.b[tu_rng_u64(&rng) % c.n] ^= (uint8_t)(1u << (tu_rng_u64(&rng) % 8));
        if (try_open(c.b, c.n, &err) == KN_OK) n_ok++;
    }
    assert_true(n_ok > 0 && n_ok < 20000);
}


/* ---- fuzz seed corpus ----
 * The seeds in tests/fuzz/corpus/gguf/ (*.seed, GGUF files under 4 KB) are
 * written by our own writer here.
 * Regenerate them with:
 *   KILN_WRITE_FUZZ_SEEDS=tests/fuzz/corpus/gguf build/gguf_test_gguf
 * Otherwise they are written to a scratch directory and checked to open. */
static void write_seed(const char *dir, const char *name, gguf_writer *w) {
    char path[1024];
    kn_err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gguf_writer_write_file(w, path, &err)) fail_msg("%s: %s", path, err.msg);
    gguf_writer_destroy(w);
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, &err)) fail_msg("%s: %s", path, err.msg);
    assert_true(gguf_file_size(g) < 4096);
    gguf_close(g);
}

static void test_fuzz_seeds(void **state) {
    (void)state;
    char tmp[512];
    const char *dir = getenv("KILN_WRITE_FUZZ_SEEDS");
    if (!dir) dir = tu_tmpdir(tmp, sizeof tmp);
    assert_non_null(dir);
    static uint8_t data[4096];
    tu_rng rng = {7};
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)tu_rng_u64(&rng);
    kn_err err;

    write_seed(dir, "empty.seed", gguf_writer_create());

    gguf_writer *w = gguf_writer_create();
    float f32[192];
    uint16_t f16[32];
    block_q8_0 q8[2];
    fill_writer(w, f32, f16, q8);
    write_seed(dir, "all-types.seed", w);

    w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.block_count", 1);
    gguf_writer_set_u32(w, "llama.embedding_length", 32);
    gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81the", "a", "b", "<0x0A>", "ab"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 8);
    float scores[8] = {0, 0, 0, -1, -2, -3, -4, -5};
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 8);
    int32_t types[8] = {2, 3, 3, 1, 1, 1, 6, 1};
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 8);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_tensor(w, "output_norm.weight", 1, (uint64_t[]){32}, Q_TYPE_F32, data, &err);
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight", 2, (uint64_t[]){32, 2}, Q_TYPE_Q8_0, data, &err);
    gguf_writer_add_tensor(w, "blk.0.ffn_down.weight", 2, (uint64_t[]){256, 1}, Q_TYPE_Q4_K, data, &err);
    write_seed(dir, "tiny-model.seed", w);

    w = gguf_writer_create();
    gguf_writer_set_u32(w, "general.alignment", 64);
    gguf_writer_add_tensor(w, "h", 3, (uint64_t[]){4, 2, 2}, Q_TYPE_F16, data, &err);
    gguf_writer_add_tensor(w, "b", 4, (uint64_t[]){2, 2, 2, 2}, Q_TYPE_BF16, data, &err);
    gguf_writer_add_tensor(w, "k6", 1, (uint64_t[]){256}, Q_TYPE_Q6_K, data, &err);
    gguf_writer_add_tensor(w, "q50", 1, (uint64_t[]){64}, Q_TYPE_Q5_0, data, &err);
    gguf_writer_add_tensor(w, "q2", 1, (uint64_t[]){256}, Q_TYPE_Q2_K, data, &err);
    write_seed(dir, "align64-types.seed", w);

    if (!getenv("KILN_WRITE_FUZZ_SEEDS")) tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_shared_file_opens),
        cmocka_unit_test(test_stories260k_facts),
        cmocka_unit_test(test_other_model_facts),
        cmocka_unit_test(test_quant_zoo),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_truncated_at_every_offset),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_hostile_tensors),
        cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
