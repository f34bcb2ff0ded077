/*
 * test_quantize.c — `kiln quantize`: the type mixes against the files
 * llama.cpp quantized in $KILN_SHARED/models, every mix on the real
 * stories260K model (dequantized output close to the input), and the binary
 * on an F16 model from tools/synth_gguf.py quantized to Q4_K_M (type mix,
 * general.file_type, metadata copied, every tensor close to the F16 one).
 */
#include "testutil.h"

#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gguf_ctx *open_path(const char *p) {
    gguf_ctx *g = NULL;
    kn_err err = {0};
    if (gguf_open(p, &g, &err)) fail_msg("%s: %s", p, err.msg);
    return g;
}

static void tname(const gguf_tensor_info *t, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s", (int)t->name.len, t->name.data);
}

/* Relative RMS error of a tensor against a reference tensor of the same
 * shape (any types with to_float). */
static double rel_rms(const gguf_tensor_info *ref, const gguf_tensor_info *got) {
    int64_t ne0 = (int64_t)ref->ne[0], nrows = (int64_t)(ref->nelements / ref->ne[0]);
    const q_traits *rt = q_get_traits(ref->type), *gt = q_get_traits(got->type);
    assert_non_null(rt->to_float);
    assert_non_null(gt->to_float);
    size_t rrow = q_row_size((q_type)ref->type, ne0), grow = q_row_size((q_type)got->type, ne0);
    float *a = malloc((size_t)ne0 * sizeof *a), *b = malloc((size_t)ne0 * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    double num = 0, den = 0;
    for (int64_t r = 0; r < nrows; r++) {
        rt->to_float((const uint8_t *)ref->data + (size_t)r * rrow, a, ne0);
        gt->to_float((const uint8_t *)got->data + (size_t)r * grow, b, ne0);
        for (int64_t i = 0; i < ne0; i++) {
            double d = (double)b[i] - (double)a[i];
            num += d * d;
            den += (double)a[i] * (double)a[i];
        }
    }
    free(a);
    free(b);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Bound on the relative RMS error of quantizing (near-)Gaussian weights. */
static double bound_for(uint32_t type) {
    switch (type) {
    case Q_TYPE_F32: return 0;
    case Q_TYPE_F16: return 1e-3;
    case Q_TYPE_BF16: return 5e-3;
    case Q_TYPE_Q8_0: return 0.01;
    case Q_TYPE_Q6_K: return 0.03;
    case Q_TYPE_Q5_0: case Q_TYPE_Q5_1: case Q_TYPE_Q5_K: return 0.06;
    case Q_TYPE_Q4_0: case Q_TYPE_Q4_1: case Q_TYPE_Q4_K: return 0.12;
    case Q_TYPE_Q3_K: return 0.22;
    case Q_TYPE_Q2_K: return 0.45;
    default: fail_msg("unexpected type %u", type);
    }
    return 0;
}

/* Metadata: every input key is in the output with the same value, except
 * the two the quantizer sets. */
static void check_metadata_copied(const gguf_ctx *in, const gguf_ctx *out, uint32_t want_ftype) {
    for (int64_t i = 0; i < gguf_n_kv(in); i++) {
        gguf_str k = gguf_kv_key(in, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.data);
        if (!strcmp(key, "general.file_type") || !strcmp(key, "general.quantization_version")) continue;
        int64_t j = gguf_find_key(out, key);
        if (j < 0) fail_msg("key %s not copied", key);
        gguf_type t = gguf_kv_type(in, i);
        assert_int_equal(gguf_kv_type(out, j), t);
        if (t == GGUF_TYPE_ARRAY) {
            gguf_type e1, e2;
            uint64_t n1, n2;
            const void *d1, *d2;
            assert_int_equal(gguf_kv_get_arr(in, i, &e1, &n1, &d1), KN_OK);
            assert_int_equal(gguf_kv_get_arr(out, j, &e2, &n2, &d2), KN_OK);
            assert_int_equal(e1, e2);
            assert_int_equal(n1, n2);
            if (e1 == GGUF_TYPE_STRING) {
                for (uint64_t x = 0; x < n1; x++) {
                    gguf_str s1, s2;
                    assert_int_equal(gguf_kv_arr_str(in, i, x, &s1), KN_OK);
                    assert_int_equal(gguf_kv_arr_str(out, j, x, &s2), KN_OK);
                    assert_int_equal(s1.len, s2.len);
                    assert_memory_equal(s1.data, s2.data, s1.len);
                }
            } else if (n1) {
                assert_memory_equal(d1, d2, n1 * gguf_type_size(e1));
            }
        } else {
            int64_t i1 = 0, i2 = 0;
            uint64_t u1 = 0, u2 = 0;
            double f1 = 0, f2 = 0;
            gguf_str s1 = {0, ""}, s2 = {0, ""};
            assert_int_equal(gguf_kv_scalar(in, i, &i1, &u1, &f1, &s1), KN_OK);
            assert_int_equal(gguf_kv_scalar(out, j, &i2, &u2, &f2, &s2), KN_OK);
            assert_true(i1 == i2 && u1 == u2 && f1 == f2 && s1.len == s2.len);
            if (s1.len) assert_memory_equal(s1.data, s2.data, s1.len);
        }
    }
    uint32_t ft;
    assert_int_equal(gguf_get_u32(out, "general.file_type", &ft), KN_OK);
    assert_int_equal(ft, want_ftype);
    assert_int_equal(gguf_get_u32(out, "general.quantization_version", &ft), KN_OK);
    assert_int_equal(ft, 2);
}

/* Every output tensor: same name/shape/order as the input, and close to it. */
static void check_tensors_close(const gguf_ctx *in, const gguf_ctx *out, const char *label) {
    assert_int_equal(gguf_n_tensors(in), gguf_n_tensors(out));
    for (int64_t i = 0; i < gguf_n_tensors(in); i++) {
        const gguf_tensor_info *a = gguf_tensor(in, i), *b = gguf_tensor(out, i);
        assert_int_equal(a->name.len, b->name.len);
        assert_memory_equal(a->name.data, b->name.data, a->name.len);
        assert_int_equal(a->n_dims, b->n_dims);
        assert_memory_equal(a->ne, b->ne, sizeof a->ne);
        double e = rel_rms(a, b), bound = bound_for(b->type);
        if (b->type == a->type) bound = 0; /* copied */
        char name[128];
        tname(a, name, sizeof name);
        if (!(e <= bound)) fail_msg("%s: %s %s->%s: relative RMS error %g > %g", label, name, q_type_name(a->type),
                                    q_type_name(b->type), e, bound);
        /* quantized output must actually differ from F32 input by some noise */
        if (b->type != a->type && b->type != Q_TYPE_F16 && b->type != Q_TYPE_BF16) assert_true(e > 1e-5);
    }
}

/* ---- the mix rules against llama.cpp's files ---- */

static void check_mix_matches(const char *rel) {
    char p[1024];
    tu_shared_path(p, sizeof p, rel);
    gguf_ctx *g = open_path(p);
    uint32_t ft;
    assert_int_equal(gguf_get_u32(g, "general.file_type", &ft), KN_OK);
    gguf_quant_model m;
    gguf_quant_model_init(&m, g);
    int n_q = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        char name[128];
        tname(t, name, sizeof name);
        /* the source was F32: quantizable tensors start from F32 */
        q_type in = gguf_quant_should_quantize(name, t->n_dims) ? Q_TYPE_F32 : (q_type)t->type;
        q_type got = gguf_quant_choose_type(&m, (gguf_ftype)ft, name, t->n_dims, t->ne, in, NULL);
        if (got != (q_type)t->type)
            fail_msg("%s: %s: kiln chooses %s, llama.cpp wrote %s", rel, name, q_type_name(got), q_type_name(t->type));
        n_q += got != in;
    }
    assert_true(n_q > 0);
    gguf_close(g);
}

static void test_mix_matches_llama_cpp(void **state) {
    (void)state;
    check_mix_matches("models/tiny-llama-Q4_K_M.gguf");
    check_mix_matches("models/tiny-llama-Q5_K_M.gguf");
    check_mix_matches("models/tiny-llama-Q6_K.gguf");
    check_mix_matches("models/tiny-llama-Q4_0.gguf");
    check_mix_matches("models/tiny-llama-Q8_0.gguf");
    check_mix_matches("models/tiny-qwen2-Q4_K_M.gguf"); /* tied embeddings, Q5_0/Q8_0 fallbacks */
    check_mix_matches("models/tiny-llama3-Q8_0.gguf");
    check_mix_matches("models/stories260K-Q8_0.gguf"); /* rows of 172 fall back to F16 */
    check_mix_matches("models/tiny-bert-mean-Q8_0.gguf");
}

static void test_mix_rules(void **state) {
    (void)state;
    gguf_quant_model m = {.n_layer = 32, .n_head = 32, .n_head_kv = 8, .has_output = true};
    uint64_t sq[2] = {4096, 4096}, wide[2] = {4096, 32000}, odd[2] = {11008 + 32, 4096}, v1[1] = {4096};
    bool fb;
    /* Q4_K_M over 32 layers: use_more_bits picks 16 layers */
    int n6 = 0;
    for (int l = 0; l < 32; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        q_type t = gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, name, 2, sq, Q_TYPE_F16, NULL);
        assert_true(t == Q_TYPE_Q6_K || t == Q_TYPE_Q4_K);
        n6 += t == Q_TYPE_Q6_K;
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, name, 2, sq, Q_TYPE_F16, NULL), t);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, name, 2, sq, Q_TYPE_F16, NULL), Q_TYPE_Q4_K);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_S, name, 2, sq, Q_TYPE_F16, NULL),
                         l < 4 ? Q_TYPE_Q5_K : Q_TYPE_Q4_K);
        assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q3_K_M, name, 2, sq, Q_TYPE_F16, NULL),
                         l < 2 ? Q_TYPE_Q5_K : Q_TYPE_Q4_K);
        assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q5_K_S, name, 2, sq, Q_TYPE_F16, NULL), Q_TYPE_Q5_K);
    }
    assert_int_equal(n6, 16);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.0.attn_v.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q6_K);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.4.attn_v.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q4_K);
    /* Q2_K: attn_v by GQA ratio, ffn_down/attn_output Q3_K */
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q2_K, "blk.3.attn_v.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q4_K);
    m.n_head_kv = 32;
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q2_K, "blk.3.attn_v.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q3_K);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q2_K, "blk.3.attn_output.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q3_K);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q2_K, "blk.3.attn_q.weight", 2, sq, Q_TYPE_F16, NULL),
                     Q_TYPE_Q2_K);
    /* output / embeddings */
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_S, "output.weight", 2, wide, Q_TYPE_F16, NULL),
                     Q_TYPE_Q6_K);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q5_1, "output.weight", 2, wide, Q_TYPE_F16, NULL),
                     Q_TYPE_Q6_K);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q8_0, "output.weight", 2, wide, Q_TYPE_F16, NULL),
                     Q_TYPE_Q8_0);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "token_embd.weight", 2, wide, Q_TYPE_F16, NULL),
                     Q_TYPE_Q4_K);
    m.has_output = false; /* tied: the embeddings are the output */
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "token_embd.weight", 2, wide, Q_TYPE_F16, NULL),
                     Q_TYPE_Q6_K);
    /* fallbacks for rows that are not whole super-blocks */
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.9.ffn_up.weight", 2, odd, Q_TYPE_F16, &fb),
                     Q_TYPE_Q5_0);
    assert_true(fb);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q5_K_S, "blk.9.ffn_up.weight", 2, odd, Q_TYPE_F16, NULL),
                     Q_TYPE_Q5_1);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q6_K, "blk.9.ffn_up.weight", 2, odd, Q_TYPE_F16, NULL),
                     Q_TYPE_Q8_0);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q2_K, "blk.9.ffn_up.weight", 2, odd, Q_TYPE_F16, NULL),
                     Q_TYPE_Q4_0);
    uint64_t tiny[2] = {100, 8};
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.9.ffn_up.weight", 2, tiny, Q_TYPE_F16, NULL),
                     Q_TYPE_F16);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_0, "blk.9.ffn_up.weight", 2, tiny, Q_TYPE_F32, NULL),
                     Q_TYPE_F16);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.9.ffn_up.weight", 2, sq, Q_TYPE_F16, &fb),
                     Q_TYPE_Q4_K);
    assert_false(fb);
    /* kept as they are: 1-D, norms, position embeddings; F16/BF16 mixes */
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.0.attn_norm.weight", 1, v1, Q_TYPE_F32, NULL),
                     Q_TYPE_F32);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "blk.0.attn_q.bias", 1, v1, Q_TYPE_F32, NULL),
                     Q_TYPE_F32);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_Q4_K_M, "position_embd.weight", 2, sq, Q_TYPE_F32, NULL),
                     Q_TYPE_F32);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_F16, "output.weight", 2, wide, Q_TYPE_F32, NULL), Q_TYPE_F16);
    assert_int_equal(gguf_quant_choose_type(&m, GGUF_FTYPE_BF16, "blk.0.ffn_down.weight", 2, odd, Q_TYPE_F32, NULL),
                     Q_TYPE_BF16);
    /* names */
    gguf_ftype ft;
    assert_true(gguf_ftype_parse("q4_k_m", &ft));
    assert_int_equal(ft, 15);
    assert_false(gguf_ftype_parse("Q4_K", &ft));
    assert_false(gguf_ftype_parse("Q3_K_S", &ft));
    assert_string_equal(gguf_ftype_name(GGUF_FTYPE_Q5_K_S), "Q5_K_S");
}

/* ---- every mix on the real stories260K model (F32) ---- */

static void test_every_mix_on_stories260k(void **state) {
    (void)state;
    char dir[512], in_path[1024], out_path[1024];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    tu_shared_path(in_path, sizeof in_path, "models/stories260K.gguf");
    snprintf(out_path, sizeof out_path, "%s/out.gguf", dir);
    gguf_ctx *in = open_path(in_path);
    static const char *const mixes[] = {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                        "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"};
    for (size_t k = 0; k < sizeof mixes / sizeof mixes[0]; k++) {
        gguf_ftype ft;
        assert_true(gguf_ftype_parse(mixes[k], &ft));
        gguf_quantize_stats st;
        kn_err err = {0};
        if (gguf_quantize_file(in_path, out_path, ft, 2, false, &st, &err)) fail_msg("%s: %s", mixes[k], err.msg);
        gguf_ctx *out = open_path(out_path);
        check_metadata_copied(in, out, (uint32_t)ft);
        check_tensors_close(in, out, mixes[k]);
        assert_int_equal(st.out_bytes, gguf_file_size(out));
        assert_true(st.out_bytes < st.in_bytes);
        /* dims 64 and 172 are not whole super-blocks: K mixes fall back */
        const gguf_tensor_info *down = gguf_find_tensor(out, "blk.0.ffn_down.weight");
        const gguf_tensor_info *q = gguf_find_tensor(out, "blk.0.attn_q.weight");
        assert_int_equal(gguf_find_tensor(out, "blk.0.attn_norm.weight")->type, Q_TYPE_F32);
        if (ft == GGUF_FTYPE_F16 || ft == GGUF_FTYPE_BF16) {
            assert_int_equal(down->type, gguf_ftype_base_type(ft));
        } else {
            assert_int_equal(down->type, Q_TYPE_F16); /* 172 divides into nothing */
            q_type want_q = gguf_ftype_base_type(ft);
            if (want_q == Q_TYPE_Q4_K) want_q = Q_TYPE_Q5_0;
            if (want_q == Q_TYPE_Q5_K) want_q = Q_TYPE_Q5_1;
            if (want_q == Q_TYPE_Q6_K) want_q = Q_TYPE_Q8_0;
            if (want_q == Q_TYPE_Q2_K || want_q == Q_TYPE_Q3_K) want_q = Q_TYPE_Q4_0;
            assert_int_equal(q->type, want_q);
        }
        gguf_close(out);
    }
    /* the Q8_0 mix gives exactly llama.cpp's types for this model */
    gguf_ftype ft = GGUF_FTYPE_Q8_0;
    kn_err err;
    assert_int_equal(gguf_quantize_file(in_path, out_path, ft, 1, false, NULL, &err), KN_OK);
    char ref_path[1024];
    tu_shared_path(ref_path, sizeof ref_path, "models/stories260K-Q8_0.gguf");
    gguf_ctx *out = open_path(out_path), *ref = open_path(ref_path);
    for (int64_t i = 0; i < gguf_n_tensors(ref); i++) {
        const gguf_tensor_info *r = gguf_tensor(ref, i);
        char name[128];
        tname(r, name, sizeof name);
        const gguf_tensor_info *o = gguf_find_tensor(out, name);
        assert_non_null(o);
        assert_int_equal(o->type, r->type);
        /* Q8_0 is deterministic round-to-nearest: same bytes as llama.cpp */
        if (r->type == Q_TYPE_Q8_0) assert_memory_equal(o->data, r->data, r->nbytes);
    }
    gguf_close(ref);
    gguf_close(out);
    /* threads do not change the bytes */
    snprintf(ref_path, sizeof ref_path, "%s/out1.gguf", dir);
    assert_int_equal(gguf_quantize_file(in_path, ref_path, GGUF_FTYPE_Q4_0, 1, false, NULL, &err), KN_OK);
    assert_int_equal(gguf_quantize_file(in_path, out_path, GGUF_FTYPE_Q4_0, 3, false, NULL, &err), KN_OK);
    out = open_path(out_path);
    ref = open_path(ref_path);
    assert_int_equal(gguf_file_size(out), gguf_file_size(ref));
    for (int64_t i = 0; i < gguf_n_tensors(ref); i++)
        assert_memory_equal(gguf_tensor(out, i)->data, gguf_tensor(ref, i)->data, gguf_tensor(ref, i)->nbytes);
    gguf_close(ref);
    gguf_close(out);

    /* bad input names the file */
    snprintf(ref_path, sizeof ref_path, "%s/missing.gguf", dir);
    assert_int_not_equal(gguf_quantize_file(ref_path, out_path, GGUF_FTYPE_Q4_0, 1, false, NULL, &err), KN_OK);
    assert_non_null(strstr(err.msg, "missing.gguf: cannot open"));
    gguf_close(in);
    tu_rmdir(dir);
}

/* ---- the binary on synth_gguf.py's F16 model ---- */

static void test_kiln_quantize_synth_q4_k_m(void **state) {
    (void)state;
    char dir[512], cmd[4096], out[8192], vocab[1024], tool[1024];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    tu_shared_path(vocab, sizeof vocab, "tokenizers/ggml-vocab-llama-spm.gguf");
    tu_shared_path(tool, sizeof tool, "tools/synth_gguf.py");
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s' --vocab '%s' --dim 256 --layers 2 --heads 4 --kv-heads 2 --ffn 512 --seed 1 "
             "--f16 --out '%s/m.gguf' >/dev/null",
             tool, vocab, dir);
    assert_int_equal(tu_run(cmd, NULL, 0), 0);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s/m.gguf' '%s/q.gguf' Q4_K_M --threads 2 2>&1", tu_kiln_bin(), dir, dir);
    int rc = tu_run(cmd, out, sizeof out);
    if (rc != 0) fail_msg("kiln quantize exited %d: %s", rc, out);
    assert_non_null(strstr(out, "MiB ->")); /* the size summary */

    char p[1024];
    snprintf(p, sizeof p, "%s/m.gguf", dir);
    gguf_ctx *in = open_path(p);
    snprintf(p, sizeof p, "%s/q.gguf", dir);
    gguf_ctx *q = open_path(p);
    check_metadata_copied(in, q, 15);
    check_tensors_close(in, q, "Q4_K_M");
    int n_q6 = 0, n_q4 = 0, n_f32 = 0;
    for (int64_t i = 0; i < gguf_n_tensors(q); i++) {
        const gguf_tensor_info *a = gguf_tensor(in, i), *t = gguf_tensor(q, i);
        char name[128];
        tname(t, name, sizeof name);
        q_type want;
        if (t->n_dims == 1) {
            want = Q_TYPE_F32;
            assert_int_equal(a->type, Q_TYPE_F32);
        } else if (!strcmp(name, "output.weight") || !strcmp(name, "blk.1.attn_v.weight") ||
                   !strcmp(name, "blk.1.ffn_down.weight")) {
            want = Q_TYPE_Q6_K; /* use_more_bits(1, 2): the last layer */
        } else {
            want = Q_TYPE_Q4_K;
            assert_int_equal(a->type, Q_TYPE_F16);
        }
        if (t->type != want) fail_msg("%s: %s, expected %s", name, q_type_name(t->type), q_type_name(want));
        n_q6 += want == Q_TYPE_Q6_K;
        n_q4 += want == Q_TYPE_Q4_K;
        n_f32 += want == Q_TYPE_F32;
    }
    assert_int_equal(n_q6, 3);
    assert_int_equal(n_q4, 13);
    assert_int_equal(n_f32, 5);
    gguf_close(q);
    gguf_close(in);
    tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_rules),
        cmocka_unit_test(test_mix_matches_llama_cpp),
        cmocka_unit_test(test_every_mix_on_stories260k),
        cmocka_unit_test(test_kiln_quantize_synth_q4_k_m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
