/*
 * quantize.c — `kiln quantize` as a library: llama.cpp's per-tensor type
 * mixes and a streaming quantizer (see kiln/gguf.h).
 */
#include "kiln/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct ftype_entry {
    const char *name;
    gguf_ftype ft;
    q_type base;
} ftype_entry;

static const ftype_entry FTYPES[] = {
    {"F16", GGUF_FTYPE_F16, Q_TYPE_F16},         {"BF16", GGUF_FTYPE_BF16, Q_TYPE_BF16},
    {"Q8_0", GGUF_FTYPE_Q8_0, Q_TYPE_Q8_0},      {"Q4_0", GGUF_FTYPE_Q4_0, Q_TYPE_Q4_0},
    {"Q4_1", GGUF_FTYPE_Q4_1, Q_TYPE_Q4_1},      {"Q5_0", GGUF_FTYPE_Q5_0, Q_TYPE_Q5_0},
    {"Q5_1", GGUF_FTYPE_Q5_1, Q_TYPE_Q5_1},      {"Q2_K", GGUF_FTYPE_Q2_K, Q_TYPE_Q2_K},
    {"Q3_K_M", GGUF_FTYPE_Q3_K_M, Q_TYPE_Q3_K},  {"Q4_K_S", GGUF_FTYPE_Q4_K_S, Q_TYPE_Q4_K},
    {"Q4_K_M", GGUF_FTYPE_Q4_K_M, Q_TYPE_Q4_K},  {"Q5_K_S", GGUF_FTYPE_Q5_K_S, Q_TYPE_Q5_K},
    {"Q5_K_M", GGUF_FTYPE_Q5_K_M, Q_TYPE_Q5_K},  {"Q6_K", GGUF_FTYPE_Q6_K, Q_TYPE_Q6_K},
};
#define N_FTYPES (sizeof FTYPES / sizeof FTYPES[0])

bool gguf_ftype_parse(const char *name, gguf_ftype *out) {
    for (size_t i = 0; i < N_FTYPES; i++) {
        if (!strcasecmp(name, FTYPES[i].name)) {
            *out = FTYPES[i].ft;
            return true;
        }
    }
    return false;
}

const char *gguf_ftype_names(void) {
    return "F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_M, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K";
}

const char *gguf_ftype_name(gguf_ftype ft) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (FTYPES[i].ft == ft) return FTYPES[i].name;
    return "?";
}

q_type gguf_ftype_base_type(gguf_ftype ft) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (FTYPES[i].ft == ft) return FTYPES[i].base;
    return Q_TYPE_F32;
}

/* ---- the type chooser ---- */

static int64_t arch_int(const gguf_ctx *in, const char *arch, const char *suffix) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    if (gguf_get_i64(in, key, &v) == KN_OK && v >= 0 && v <= 1 << 20) return v;
    /* per-layer arrays: take the first element */
    int64_t k = gguf_find_key(in, key);
    if (k >= 0 && gguf_arr_get_i64(in, k, 0, &v) == KN_OK && v >= 0 && v <= 1 << 20) return v;
    return 0;
}

void gguf_quant_model_init(gguf_quant_model *m, const gguf_ctx *in) {
    memset(m, 0, sizeof *m);
    char arch[128] = "";
    gguf_str a;
    if (gguf_get_str(in, "general.architecture", &a) == KN_OK && a.len < sizeof arch && !memchr(a.data, 0, a.len)) {
        memcpy(arch, a.data, a.len);
        arch[a.len] = 0;
    }
    m->n_layer = (int)arch_int(in, arch, "block_count");
    m->n_head = (int)arch_int(in, arch, "attention.head_count");
    m->n_head_kv = (int)arch_int(in, arch, "attention.head_count_kv");
    if (m->n_head_kv == 0) m->n_head_kv = m->n_head;
    m->n_expert = (int)arch_int(in, arch, "expert_count");
    m->has_output = gguf_find_tensor(in, "output.weight") != NULL;
    m->is_falcon = !strcmp(arch, "falcon");
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

bool gguf_quant_should_quantize(const char *name, uint32_t n_dims) {
    static const char *const never[] = {
        "_norm.weight",   "ffn_gate_inp.weight", "altup",           "laurel",
        "per_layer_model_proj", "ssm_conv1d.weight", "shortconv.conv.weight",
        "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
        "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
        "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
    };
    if (!ends_with(name, "weight") || n_dims < 2) return false;
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (has(name, never[i])) return false;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight")) return false;
    return true;
}

static bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The layer index from "blk.N." (or -1). */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    int v = 0, digits = 0;
    for (const char *p = name + 4; *p >= '0' && *p <= '9'; p++) {
        if (v > 1000000) return -1;
        v = v * 10 + (*p - '0');
        digits++;
    }
    return digits ? v : -1;
}

q_type gguf_quant_choose_type(const gguf_quant_model *m, gguf_ftype ft, const char *name, uint32_t n_dims,
                              const uint64_t *ne, q_type in_type, bool *fallback) {
    if (fallback) *fallback = false;
    if (!gguf_quant_should_quantize(name, n_dims)) return in_type;
    q_type base = gguf_ftype_base_type(ft);
    q_type t = base;
    const q_traits *btr = q_get_traits(base);
    if (btr && btr->is_quantized) {
        int n = m->n_layer > 0 ? m->n_layer : 1;
        int il = layer_of(name);
        if (il < 0 || il >= n) il = 0;
        int n_gqa = m->n_head_kv > 0 ? m->n_head / m->n_head_kv : 1;
        bool is_output = !strcmp(name, "output.weight") || (!m->has_output && !strcmp(name, "token_embd.weight"));
        if (is_output) {
            if (m->is_falcon || ne[0] % (uint64_t)btr->blck_size)
                t = Q_TYPE_Q8_0;
            else if (t != Q_TYPE_Q8_0)
                t = Q_TYPE_Q6_K;
        } else if (!strcmp(name, "token_embd.weight")) {
            /* the mix type (llama.cpp changes it only for IQ mixes) */
        } else if (has(name, "attn_v.weight")) {
            if (ft == GGUF_FTYPE_Q2_K) t = n_gqa >= 4 ? Q_TYPE_Q4_K : Q_TYPE_Q3_K;
            else if (ft == GGUF_FTYPE_Q3_K_M) t = il < 2 ? Q_TYPE_Q5_K : Q_TYPE_Q4_K;
            else if ((ft == GGUF_FTYPE_Q4_K_M || ft == GGUF_FTYPE_Q5_K_M) && use_more_bits(il, n)) t = Q_TYPE_Q6_K;
            else if (ft == GGUF_FTYPE_Q4_K_S && il < 4) t = Q_TYPE_Q5_K;
            if (m->n_expert == 8) t = Q_TYPE_Q8_0;
        } else if (has(name, "attn_k.weight")) {
            if (m->n_expert == 8) t = Q_TYPE_Q8_0;
        } else if (has(name, "ffn_down")) {
            if (ft == GGUF_FTYPE_Q2_K) t = Q_TYPE_Q3_K;
            else if (ft == GGUF_FTYPE_Q3_K_M)
                t = il < n / 16 ? Q_TYPE_Q5_K : (!m->is_falcon || use_more_bits(il, n)) ? Q_TYPE_Q4_K : Q_TYPE_Q3_K;
            else if (ft == GGUF_FTYPE_Q4_K_M) {
                if (m->is_falcon)
                    t = il < n / 16 ? Q_TYPE_Q6_K : use_more_bits(il, n) ? Q_TYPE_Q5_K : Q_TYPE_Q4_K;
                else if (use_more_bits(il, n))
                    t = Q_TYPE_Q6_K;
            } else if (ft == GGUF_FTYPE_Q5_K_M && use_more_bits(il, n))
                t = Q_TYPE_Q6_K;
            else if (ft == GGUF_FTYPE_Q4_K_S && !m->is_falcon && il < n / 8)
                t = Q_TYPE_Q5_K;
        } else if (has(name, "attn_output.weight")) {
            if (!m->is_falcon) {
                if (m->n_expert == 8) {
                    if (ft == GGUF_FTYPE_Q2_K || ft == GGUF_FTYPE_Q3_K_M || ft == GGUF_FTYPE_Q4_K_S ||
                        ft == GGUF_FTYPE_Q4_K_M)
                        t = Q_TYPE_Q5_K;
                } else {
                    if (ft == GGUF_FTYPE_Q2_K) t = Q_TYPE_Q3_K;
                    else if (ft == GGUF_FTYPE_Q3_K_M) t = Q_TYPE_Q4_K;
                }
            }
        } else if (has(name, "attn_qkv.weight")) {
            if (ft == GGUF_FTYPE_Q3_K_M) t = Q_TYPE_Q4_K;
            else if (ft == GGUF_FTYPE_Q4_K_M) t = Q_TYPE_Q5_K;
            else if (ft == GGUF_FTYPE_Q5_K_M) t = Q_TYPE_Q6_K;
        }
    }
    /* rows that do not divide into the type's blocks */
    const q_traits *tr = q_get_traits(t);
    if (ne[0] % (uint64_t)tr->blck_size) {
        if (fallback) *fallback = true;
        switch (t) {
        case Q_TYPE_Q2_K:
        case Q_TYPE_Q3_K: t = Q_TYPE_Q4_0; break;
        case Q_TYPE_Q4_K: t = Q_TYPE_Q5_0; break;
        case Q_TYPE_Q5_K: t = Q_TYPE_Q5_1; break;
        case Q_TYPE_Q6_K: t = Q_TYPE_Q8_0; break;
        default: t = Q_TYPE_F16; break;
        }
        if (ne[0] % (uint64_t)q_get_traits(t)->blck_size) t = Q_TYPE_F16;
    }
    return t;
}

/* ---- the streaming quantizer ---- */

typedef struct qjob {
    const q_traits *in_tr, *out_tr;
    const uint8_t *in;  /* rows of the input chunk */
    uint8_t *out;       /* rows of the output chunk */
    int64_t ne0, nrows;
    size_t in_row, out_row;
    float *rowbuf;      /* [nth][ne0_max] */
    int64_t ne0_max;
} qjob;

static void qjob_run(void *ctx, int ith, int nth) {
    qjob *j = ctx;
    int64_t lo, hi;
    kn_split_range(j->nrows, 1, ith, nth, &lo, &hi);
    float *f = j->rowbuf + (size_t)ith * (size_t)j->ne0_max;
    for (int64_t r = lo; r < hi; r++) {
        j->in_tr->to_float(j->in + (size_t)r * j->in_row, f, j->ne0);
        j->out_tr->from_float(f, j->out + (size_t)r * j->out_row, j->ne0);
    }
}

#define CHUNK_BYTES ((size_t)8 << 20)

kn_status gguf_quantize_file(const char *in_path, const char *out_path, gguf_ftype ft, int n_threads, bool progress,
                             gguf_quantize_stats *stats, kn_err *err) {
    gguf_quantize_stats st0;
    if (!stats) stats = &st0;
    memset(stats, 0, sizeof *stats);
    if (n_threads < 1) n_threads = 1;
    gguf_ctx *in = NULL;
    gguf_writer *w = NULL;
    kn_pool *pool = NULL;
    float *rowbuf = NULL;
    uint8_t *outbuf = NULL;
    q_type *types = NULL;
    kn_progress pr;
    memset(&pr, 0, sizeof pr);
    kn_status s = gguf_open(in_path, &in, err);
    if (s) {
        kn_err_prefix(err, "%s", in_path);
        return s;
    }
    stats->in_bytes = gguf_file_size(in);
    int64_t nt = gguf_n_tensors(in);
    stats->n_tensors = nt;

    gguf_quant_model m;
    gguf_quant_model_init(&m, in);

    w = gguf_writer_create();
    types = calloc((size_t)(nt ? nt : 1), sizeof *types);
    if (!w || !types) {
        s = kn_fail(err, KN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < gguf_n_kv(in); i++) {
        if ((s = gguf_writer_copy_kv(w, in, i))) {
            kn_fail(err, s, "cannot copy metadata key %lld", (long long)i);
            goto fail;
        }
    }
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    if ((s = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ft))) {
        kn_fail(err, s, "cannot set general.file_type");
        goto fail;
    }

    /* choose types, size the buffers */
    int64_t ne0_max = 1;
    size_t row_max = 1;
    uint64_t total = 0;
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor_info *t = gguf_tensor(in, i);
        char name[512];
        if (t->name.len >= sizeof name || memchr(t->name.data, 0, t->name.len)) {
            s = kn_fail(err, KN_EUNSUPPORTED, "%s: tensor %lld: name too long or contains NUL", in_path, (long long)i);
            goto fail;
        }
        memcpy(name, t->name.data, t->name.len);
        name[t->name.len] = 0;
        bool fb = false;
        q_type ot = gguf_quant_choose_type(&m, ft, name, t->n_dims, t->ne, (q_type)t->type, &fb);
        types[i] = ot;
        if (ot != (q_type)t->type) {
            const q_traits *itr = q_get_traits(t->type), *otr = q_get_traits(ot);
            if (!itr->to_float) {
                s = kn_fail(err, KN_EUNSUPPORTED, "%s: tensor '%s': cannot dequantize type %s", in_path, name, itr->name);
                goto fail;
            }
            if (!otr->from_float) {
                s = kn_fail(err, KN_EUNSUPPORTED, "tensor '%s': no quantizer for type %s", name, otr->name);
                goto fail;
            }
            if ((int64_t)t->ne[0] > ne0_max) ne0_max = (int64_t)t->ne[0];
            size_t ir = q_row_size((q_type)t->type, (int64_t)t->ne[0]), orow = q_row_size(ot, (int64_t)t->ne[0]);
            if (ir > row_max) row_max = ir;
            if (orow > row_max) row_max = orow;
            stats->n_quantized++;
            if (fb) stats->n_fallback++;
            if (itr->is_quantized) {
                stats->n_requantized++;
                KN_WARN("tensor '%s': requantizing from %s to %s loses precision", name, itr->name, otr->name);
            }
        }
        stats->type_counts[ot]++;
        total += t->nbytes;
        if (gguf_writer_add_tensor(w, name, t->n_dims, t->ne, ot, NULL, err) < 0) {
            s = err ? err->status : KN_EINVAL;
            goto fail;
        }
    }

    pool = kn_pool_create(n_threads);
    size_t rb_bytes;
    if (!pool || __builtin_mul_overflow((size_t)n_threads * sizeof(float), (size_t)ne0_max, &rb_bytes)) {
        s = kn_fail(err, KN_ENOMEM, "cannot create %d threads", n_threads);
        goto fail;
    }
    rowbuf = kn_alloc_aligned(rb_bytes);
    size_t out_cap = row_max > CHUNK_BYTES ? row_max : CHUNK_BYTES;
    outbuf = kn_alloc_aligned(out_cap);
    if (!rowbuf || !outbuf) {
        s = kn_fail(err, KN_ENOMEM, "out of memory for quantization buffers (%zu + %zu bytes)", rb_bytes, out_cap);
        goto fail;
    }

    if ((s = gguf_writer_open(w, out_path, err))) goto fail;
    if (progress) kn_progress_begin(&pr, "quantize", total);
    uint64_t done = 0;
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor_info *t = gguf_tensor(in, i);
        char note[128];
        snprintf(note, sizeof note, "%.*s -> %s", (int)(t->name.len > 80 ? 80 : t->name.len), t->name.data,
                 q_type_name(types[i]));
        if (types[i] == (q_type)t->type) {
            if ((s = gguf_writer_put_data(w, i, t->data, t->nbytes, err))) goto fail_open;
        } else {
            qjob j = {0};
            j.in_tr = q_get_traits(t->type);
            j.out_tr = q_get_traits(types[i]);
            j.ne0 = (int64_t)t->ne[0];
            j.ne0_max = ne0_max;
            j.in_row = q_row_size((q_type)t->type, j.ne0);
            j.out_row = q_row_size(types[i], j.ne0);
            j.rowbuf = rowbuf;
            int64_t nrows = (int64_t)(t->nelements / t->ne[0]);
            int64_t chunk = (int64_t)(out_cap / j.out_row);
            if (chunk < 1) chunk = 1;
            for (int64_t r0 = 0; r0 < nrows; r0 += chunk) {
                j.nrows = nrows - r0 < chunk ? nrows - r0 : chunk;
                j.in = (const uint8_t *)t->data + (size_t)r0 * j.in_row;
                j.out = outbuf;
                kn_pool_run(pool, qjob_run, &j);
                if ((s = gguf_writer_put_data(w, i, outbuf, (uint64_t)j.nrows * j.out_row, err))) goto fail_open;
                if (progress) kn_progress_update(&pr, done + (uint64_t)(r0 + j.nrows) * j.in_row, note);
            }
        }
        done += t->nbytes;
        if (progress && types[i] == (q_type)t->type) kn_progress_update(&pr, done, note);
    }
    if (progress) kn_progress_end(&pr);
    if ((s = gguf_writer_finish(w, err))) goto fail;
    struct stat sb;
    if (stat(out_path, &sb) == 0) stats->out_bytes = (uint64_t)sb.st_size;
    s = KN_OK;
    goto done;

fail_open:
    if (progress) kn_progress_end(&pr);
fail:
done:
    kn_free_aligned(outbuf);
    kn_free_aligned(rowbuf);
    kn_pool_destroy(pool);
    gguf_writer_destroy(w); /* removes an unfinished .part file */
    free(types);
    gguf_close(in);
    return s;
}
