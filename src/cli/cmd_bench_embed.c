/*
 * cmd_bench_embed.c — `kiln bench embed`: embedding throughput of an encoder
 * (bert) model in process, through model_encode: texts/s and tokens/s for
 * single requests (one text per forward) and for batches of 8, 32 and 128
 * texts per forward, with the matmul and attention work of a forward as a
 * fraction of the fp32 (FMA) and int8 (dot-product) compute peaks measured
 * in the same run. Benchmarks measure; they never assert speed.
 */
#include "cli.h"
#include "cli_model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZES 8

/* Texts of retrieval-like lengths (a title to a paragraph); inputs cycle
 * through them, each with its own number so that no two are equal. */
static const char *const TEXTS[] = {
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Embedding models map sentences to vectors so that similar meanings end up close together.",
    "Kiln is an inference server for GGUF models written in C, with its own CPU kernels.",
    "Retrieval-augmented generation first searches a document store for passages relevant to the "
    "question, then gives them to a language model as context for its answer.",
    "Paris",
    "Best practices for indexing large collections of technical documentation",
    "A bank may refer to a financial institution or to the land alongside a river; context decides.",
    "Vector databases compare embeddings by cosine similarity or inner product, often with approximate "
    "nearest neighbour indexes such as HNSW or IVF, trading a little recall for a lot of speed.",
    "What is the capital of Australia?",
    "Install the package, set the API key in the environment, then run the example script.",
    "Micro-batching gathers concurrent requests into one forward pass to use the matrix units better.",
};
#define N_TEXTS (sizeof TEXTS / sizeof *TEXTS)

static void usage(FILE *f) {
    fprintf(f, "usage: kiln bench embed -m FILE.gguf [--batch N] [-n TEXTS] [-t THREADS] [-r 3] [--json]\n\n"
               "Embedding throughput of an encoder (bert) model, in process through model_encode:\n"
               "  single  one text per forward (what a lone request costs)\n"
               "  bN      N texts per forward (what a micro-batch of N requests costs)\n"
               "for batches of 8, 32 and 128 (or only --batch N), over -n texts of retrieval-like\n"
               "lengths, as texts/s and tokens/s (mean +- stddev over -r repetitions). The matmul\n"
               "and attention work per forward is reported as GFLOP/s and as a fraction of this\n"
               "machine's fp32 FMA and int8 dot-product peaks, measured in the same run.\n\n"
               "options:\n"
               "  -m FILE      GGUF encoder model (general.architecture bert)\n"
               "  --batch N    only this batch size (1..1024) besides single\n"
               "  -n N         texts per measurement (default 128; rounded up to a whole batch)\n"
               "  -t N         threads (default: online CPUs)\n"
               "  -r N         repetitions (default 3)\n"
               "  --json       one JSON object on stdout\n");
}

/* Multiply-adds x 2 of one input of len tokens: the weight matmuls of every
 * layer (q, k, v, output, ffn up and down) and the attention (QK^T and AV). */
static double flops_of(const model_hparams *hp, size_t len) {
    double E = hp->n_embd, F = hp->n_ff, Hq = (double)hp->n_head * hp->head_dim, L = (double)len;
    double per_tok = 2.0 * (E * Hq * 2 + E * (double)hp->n_head_kv * hp->head_dim * 2 + 2 * E * F);
    double attn = 2.0 * 2.0 * L * L * Hq;
    return hp->n_layer * (per_tok * L + attn);
}

typedef struct opts {
    const char *path;
    long long threads, reps, only, n_texts; /* -t -r --batch -n */
    bool json;
    int sizes[MAX_SIZES], n_sizes; /* texts per forward: 1, then --batch or 8, 32, 128 */
    size_t N;                      /* texts measured: -n rounded up to a whole largest batch */
} opts;

/* Fills *o from argv. Returns -1 to go on, else the exit status (2). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){.threads = kn_default_threads(), .reps = 3, .n_texts = 128};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long long *dst = NULL, hi = 0;
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "-m")) {
            if (!(o->path = cli_flag_value("bench embed", argc, argv, &i))) return 2;
            continue;
        }
        if (!strcmp(a, "-t")) dst = &o->threads, hi = 1024;
        else if (!strcmp(a, "-r")) dst = &o->reps, hi = 1000;
        else if (!strcmp(a, "--batch")) dst = &o->only, hi = 1024;
        else if (!strcmp(a, "-n")) dst = &o->n_texts, hi = 100000;
        else {
            fprintf(stderr, "kiln bench embed: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!cli_int_flag("bench embed", argc, argv, &i, 1, hi, dst)) return 2;
    }
    if (!o->path) {
        fprintf(stderr, "kiln bench embed: needs -m FILE (see --help)\n");
        return 2;
    }
    o->sizes[o->n_sizes++] = 1;
    if (o->only > 1) o->sizes[o->n_sizes++] = (int)o->only;
    else if (o->only == 0)
        o->sizes[o->n_sizes++] = 8, o->sizes[o->n_sizes++] = 32, o->sizes[o->n_sizes++] = 128;
    int max_b = o->sizes[o->n_sizes - 1];
    o->N = (size_t)((o->n_texts + max_b - 1) / max_b * max_b);
    return -1;
}

/* The N inputs, tokenized, with their totals. */
typedef struct inputs {
    int32_t **toks; /* [N] owned */
    size_t *lens;   /* [N] */
    size_t N;
    size_t total_tok;
    double total_flops; /* of one pass over all N */
} inputs;

/* Tokenizes the N texts, each cut to the model's context. False on failure
 * (printed). */
static bool tokenize_inputs(const model *m, const tok_vocab *v, inputs *in) {
    kn_err err = {0};
    for (size_t i = 0; i < in->N; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s (%zu)", TEXTS[i % N_TEXTS], i);
        if (tok_encode_alloc(v, text, strlen(text), true, false, &in->toks[i], &in->lens[i], &err) != KN_OK) {
            fprintf(stderr, "kiln bench embed: tokenizing: %s\n", err.msg);
            return false;
        }
        if (in->lens[i] > (size_t)m->hp.n_ctx_train) in->lens[i] = (size_t)m->hp.n_ctx_train;
        in->total_tok += in->lens[i];
        in->total_flops += flops_of(&m->hp, in->lens[i]);
    }
    return true;
}

/* Tokens of the largest batch of max_b consecutive inputs, at least the
 * model's context: what the scratch must hold. */
static size_t scratch_tokens(const model *m, const inputs *in, int max_b) {
    size_t max_tok = 0;
    for (size_t i = 0; i < in->N; i += (size_t)max_b) {
        size_t t = 0;
        for (size_t j = i; j < i + (size_t)max_b; j++) t += in->lens[j];
        if (t > max_tok) max_tok = t;
    }
    if (max_tok < (size_t)m->hp.n_ctx_train) max_tok = (size_t)m->hp.n_ctx_train;
    return max_tok;
}

/* The compute peaks and, per repetition r and size si, the seconds of a
 * pass over all inputs: secs[si * reps + r]. */
typedef struct figures {
    double peak_fma, peak_i8;
    double *secs;
} figures;

/* Measures the peaks, warms up and times every size in every repetition;
 * out is scratch for max_b vectors. False on failure (printed). */
static bool measure(model_ctx *ctx, kn_pool *pool, kn_cpu_level lvl, const opts *o, const inputs *in,
                    float *out, figures *f) {
    kn_err err = {0};
    const int reps = (int)o->reps, max_b = o->sizes[o->n_sizes - 1];
    const int32_t *const *toks = (const int32_t *const *)in->toks;
    kn_progress prog;
    kn_progress_begin(&prog, "bench embed", 2 + (uint64_t)reps * (uint64_t)o->n_sizes);
    uint64_t steps = 0;
    f->peak_fma = tensor_measure_peak(pool, lvl, false);
    kn_progress_update(&prog, ++steps, "fp32 peak");
    f->peak_i8 = tensor_measure_peak(pool, lvl, true);
    kn_progress_update(&prog, ++steps, "int8 peak");
    /* warm-up (not measured) */
    if (model_encode(ctx, toks, in->lens, (size_t)max_b, false, out, &err) != KN_OK) goto fail;
    for (int r = 0; r < reps; r++)
        for (int si = 0; si < o->n_sizes; si++) {
            const size_t B = (size_t)o->sizes[si];
            double t0 = kn_now_s();
            for (size_t i = 0; i < in->N; i += B)
                if (model_encode(ctx, toks + i, in->lens + i, B, false, out, &err) != KN_OK) goto fail;
            f->secs[(size_t)si * reps + r] = kn_now_s() - t0;
            char note[32];
            snprintf(note, sizeof note, B == 1 ? "single" : "b%zu", B);
            kn_progress_update(&prog, ++steps, note);
        }
    kn_progress_end(&prog);
    return true;
fail:
    kn_progress_end(&prog);
    fprintf(stderr, "kiln bench embed: %s\n", err.msg);
    return false;
}

/* Prints the figures as JSON (o->json) or as a table. */
static void report(const opts *o, const model *m, kn_cpu_level lvl, const inputs *in, const figures *f) {
    const model_hparams *hp = &m->hp;
    const int reps = (int)o->reps;
    const size_t N = in->N;
    json_t *root = o->json ? json_object() : NULL;
    if (root) {
        json_object_set_new(root, "model", json_string(o->path));
        json_object_set_new(root, "arch", json_string(hp->arch_name));
        json_object_set_new(root, "n_embd", json_integer(hp->n_embd));
        json_object_set_new(root, "n_layer", json_integer(hp->n_layer));
        json_object_set_new(root, "threads", json_integer(o->threads));
        json_object_set_new(root, "kernel_set", json_string(kn_cpu_level_name(lvl)));
        json_object_set_new(root, "texts", json_integer((json_int_t)N));
        json_object_set_new(root, "tokens", json_integer((json_int_t)in->total_tok));
        json_object_set_new(root, "gflop_per_pass", json_real(in->total_flops / 1e9));
        json_object_set_new(root, "peak_fp32_gflop_s", json_real(f->peak_fma / 1e9));
        json_object_set_new(root, "peak_int8_gop_s", json_real(f->peak_i8 / 1e9));
    } else {
        printf("model: %s (%s, dim %d, %d layers, %.1f MiB of weights), %lld threads, kernel set %s\n",
               o->path, hp->arch_name, hp->n_embd, hp->n_layer, (double)m->weight_bytes / 1048576.0,
               o->threads, kn_cpu_level_name(lvl));
        printf(
            "%zu texts, %zu tokens (%.1f per text), %.2f GFLOP per pass; peaks measured: fp32 %.0f GFLOP/s, "
            "int8 %.0f GOP/s\n",
            N, in->total_tok, (double)in->total_tok / (double)N, in->total_flops / 1e9, f->peak_fma / 1e9,
            f->peak_i8 / 1e9);
        printf("%-8s %14s %16s %10s %10s %10s\n", "batch", "texts/s", "tokens/s", "GFLOP/s", "% fp32",
               "% int8");
    }
    json_t *arr = root ? json_array() : NULL;
    for (int si = 0; si < o->n_sizes; si++) {
        double rate[1000];
        for (int r = 0; r < reps; r++) rate[r] = (double)N / f->secs[(size_t)si * reps + r];
        cli_stats st = cli_stats_of(rate, reps);
        double tok_s = st.mean * (double)in->total_tok / (double)N;
        double gflop_s = st.mean * in->total_flops / (double)N / 1e9;
        if (arr) {
            json_t *e = json_object();
            json_object_set_new(e, "batch", json_integer(o->sizes[si]));
            json_object_set_new(e, "texts_s", json_real(st.mean));
            json_object_set_new(e, "texts_s_sd", json_real(st.sd));
            json_object_set_new(e, "tokens_s", json_real(tok_s));
            json_object_set_new(e, "gflop_s", json_real(gflop_s));
            json_object_set_new(e, "frac_fp32_peak", json_real(gflop_s * 1e9 / f->peak_fma));
            json_object_set_new(e, "frac_int8_peak", json_real(gflop_s * 1e9 / f->peak_i8));
            json_array_append_new(arr, e);
        } else {
            char name[16];
            snprintf(name, sizeof name, o->sizes[si] == 1 ? "single" : "b%d", o->sizes[si]);
            printf("%-8s %8.1f +- %-4.0f %16.0f %10.1f %9.1f%% %9.1f%%\n", name, st.mean, st.sd, tok_s,
                   gflop_s, 100.0 * gflop_s * 1e9 / f->peak_fma, 100.0 * gflop_s * 1e9 / f->peak_i8);
        }
    }
    if (root) {
        json_object_set_new(root, "results", arr);
        json_dumpf(root, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    }
    json_decref(root);
}

int cmd_bench_embed(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = 1;
    const int max_b = o.sizes[o.n_sizes - 1];
    kn_err err = {0};
    kn_cpu_level lvl;
    tensor_ops ops;
    if (!cli_kernels("bench embed", &lvl, &ops)) return 1;
    kn_pool *pool = kn_pool_create((int)o.threads);
    model *m = NULL;
    tok_vocab *v = NULL;
    model_ctx *ctx = NULL;
    inputs in = {.toks = calloc(o.N, sizeof *in.toks), .lens = calloc(o.N, sizeof *in.lens), .N = o.N};
    float *out = NULL;
    figures f = {0};
    if (!pool || !in.toks || !in.lens) {
        fprintf(stderr, "kiln bench embed: out of memory\n");
        goto done;
    }
    if (!cli_model_load("bench embed", o.path, NULL, &m)) goto done;
    if (!model_is_encoder(m)) {
        fprintf(stderr, "kiln bench embed: %s is a %s model, not an encoder (embedding) model\n", o.path,
                m->hp.arch_name);
        goto done;
    }
    if (tok_vocab_load(m->gguf, &v, &err) != KN_OK) {
        fprintf(stderr, "kiln bench embed: tokenizer: %s\n", err.msg);
        goto done;
    }
    if (!tokenize_inputs(m, v, &in)) goto done;
    size_t max_tok = scratch_tokens(m, &in, max_b);
    out = malloc((size_t)max_b * (size_t)m->hp.n_embd * sizeof *out);
    f.secs = calloc((size_t)o.reps * (size_t)o.n_sizes, sizeof *f.secs);
    if (!out || !f.secs) {
        fprintf(stderr, "kiln bench embed: out of memory\n");
        goto done;
    }
    if (model_ctx_create(m, &ops, pool, (int)max_tok, &ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln bench embed: %s\n", err.msg);
        goto done;
    }
    if (!measure(ctx, pool, lvl, &o, &in, out, &f)) goto done;
    report(&o, m, lvl, &in, &f);
    rc = 0;
done:
    for (size_t i = 0; in.toks && i < in.N; i++) free(in.toks[i]);
    free(in.toks);
    free(in.lens);
    free(out);
    free(f.secs);
    model_ctx_destroy(ctx);
    tok_vocab_destroy(v);
    model_destroy(m);
    kn_pool_destroy(pool);
    return rc;
}
