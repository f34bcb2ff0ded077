/*
 * cmd_bench_model.c — `kiln bench model`: prefill (pp), single-stream decode
 * (tg) and batched decode throughput of a model, llama-bench style, with the
 * memory bandwidth measured in the same run and tg as a fraction of the
 * bandwidth roofline (weight bytes read per token; of a mixture of experts,
 * only the experts a token uses: model_decode_bytes).
 */
#include "cli.h"
#include "cli_model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln bench model -m FILE.gguf [-t THREADS] [-p 512] [-n 128] [-b 1,4,8,16] [--bp 128] [-r 3]\n"
               "                        [--json]\n\n"
               "Measures, over -r repetitions (mean +- stddev):\n"
               "  pp  prefill of -p tokens in one batch\n"
               "  tg  decode of -n tokens, one sequence\n"
               "  bN  decode of N sequences at once (each after a --bp-token prompt), total tok/s\n"
               "      (llama-batched-bench's S_TG with -npp BP -ntg N -npl LIST)\n"
               "plus the read bandwidth of this machine measured in the same run, and tg as a\n"
               "fraction of the bandwidth roofline (weight bytes per token; for a mixture of\n"
               "experts only the experts a token is routed to).\n\n"
               "options:\n"
               "  -m FILE       GGUF model\n"
               "  -t N          threads (default: online CPUs)\n"
               "  -p N          prompt tokens for pp (default 512; 0 = skip)\n"
               "  -n N          generated tokens for tg and batched decode (default 128; 0 = skip)\n"
               "  -b LIST       batched decode sequence counts (default 1,4,8,16; \"\" = skip)\n"
               "  --bp N        prompt tokens of each batched sequence (default 128)\n"
               "  -r N          repetitions (default 3)\n"
               "  --kv-type T   KV cache type: f16 (default) or q8_0\n"
               "  --mmap        compute from the file mapping (no copy into huge pages)\n"
               "  --json        one JSON object on stdout\n");
}

#define MAX_SEQS 16 /* entries of -b */

typedef struct opts {
    const char *path;
    long long threads, np, ng, reps, bp; /* -t -p -n -r --bp */
    int seqs[MAX_SEQS], n_seqs;          /* -b; none when -n is 0 */
    bool json;
    model_kv_type kv_type;
    model_load_opts load;
} opts;

/* Parses -b's comma-separated list into o->seqs. */
static bool parse_seqs(const char *blist, opts *o) {
    o->n_seqs = 0;
    for (const char *s = blist; *s;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 256 || o->n_seqs == MAX_SEQS) {
            fprintf(stderr, "kiln bench model: -b expects a list like 1,4,16 (each 1..256)\n");
            return false;
        }
        o->seqs[o->n_seqs++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return true;
}

/* Fills *o from argv. Returns -1 to go on, else the exit status (2). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){
        .threads = kn_default_threads(), .np = 512, .ng = 128, .reps = 3, .bp = 128, .kv_type = MODEL_KV_F16};
    const char *blist = "1,4,8,16";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long *dst = NULL, hi = 0;
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!strcmp(a, "--mmap")) { o->load.mmap_weights = true; continue; }
        if (!strcmp(a, "--kv-type")) {
            if (!cli_kv_type_flag("bench model", argc, argv, &i, &o->kv_type)) return 2;
            continue;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "-b")) {
            if (!(v = cli_flag_value("bench model", argc, argv, &i))) return 2;
            if (a[1] == 'm') o->path = v;
            else blist = v;
            continue;
        }
        if (!strcmp(a, "-t")) dst = &o->threads, hi = 1024;
        else if (!strcmp(a, "-p")) dst = &o->np, hi = 65536;
        else if (!strcmp(a, "-n")) dst = &o->ng, hi = 65536;
        else if (!strcmp(a, "-r")) dst = &o->reps, hi = 1000;
        else if (!strcmp(a, "--bp")) dst = &o->bp, hi = 65536;
        else {
            fprintf(stderr, "kiln bench model: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!(v = cli_flag_value("bench model", argc, argv, &i))) return 2;
        if (!cli_parse_int(v, dst == &o->reps || dst == &o->threads || dst == &o->bp ? 1 : 0, hi, dst)) {
            fprintf(stderr, "kiln bench model: %s expects an integer, got '%s'\n", a, v);
            return 2;
        }
    }
    if (!o->path) {
        fprintf(stderr, "kiln bench model: needs -m FILE (see --help)\n");
        return 2;
    }
    if (!parse_seqs(blist, o)) return 2;
    if (o->ng == 0) o->n_seqs = 0;
    return -1;
}

/* The model with a KV cache and a context sized for every run of the
 * options, and the batch it feeds model_forward. */
typedef struct rig {
    model *m;
    model_ctx *ctx;
    model_kv *kv;
    int max_batch;             /* tokens a forward call takes */
    float *logits;             /* [max_seq][n_vocab] */
    int32_t *tok, *pos, *seq;  /* [max_batch] */
    uint8_t *want;             /* [max_batch] */
    uint64_t rng;
} rig;

static int32_t rand_tok(rig *b) {
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((b->rng >> 33) % (uint64_t)b->m->hp.n_vocab);
}

static kn_status run(rig *b, int n, kn_err *err) {
    model_batch mb = {.n_tokens = n, .token = b->tok, .pos = b->pos, .seq = b->seq, .logits = b->want};
    return model_forward(b->ctx, b->kv, &mb, b->logits, err);
}

/* Loads the model and sizes the rest for o. False on failure (printed,
 * except when memory runs out). */
static bool rig_open(rig *b, const opts *o, const tensor_ops *ops, kn_pool *pool) {
    kn_err err = {0};
    *b = (rig){.rng = 1234};
    if (!cli_model_load("bench model", o->path, &o->load, &b->m)) return false;
    const int prompt_b = (int)o->bp;
    int max_seq = 1, max_batch = o->np > 0 ? (int)o->np : 1;
    for (int i = 0; i < o->n_seqs; i++)
        if (o->seqs[i] > max_seq) max_seq = o->seqs[i];
    if (max_batch < 512) max_batch = 512; /* batched prompts go in chunks of up to this */
    if (max_batch < max_seq) max_batch = max_seq;
    int n_ctx = (int)(o->np > o->ng + prompt_b ? o->np : o->ng + prompt_b) + 1;
    const int V = b->m->hp.n_vocab;
    if (model_kv_create(b->m, max_seq, n_ctx, o->kv_type, &b->kv, &err) != KN_OK ||
        model_ctx_create(b->m, ops, pool, max_batch, &b->ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln bench model: %s\n", err.msg);
        return false;
    }
    b->max_batch = max_batch;
    b->logits = malloc((size_t)max_seq * V * sizeof(float));
    b->tok = malloc((size_t)max_batch * sizeof(int32_t));
    b->pos = malloc((size_t)max_batch * sizeof(int32_t));
    b->seq = malloc((size_t)max_batch * sizeof(int32_t));
    b->want = calloc((size_t)max_batch, 1);
    return b->logits && b->tok && b->pos && b->seq && b->want;
}

static void rig_close(rig *b) {
    free(b->logits);
    free(b->tok);
    free(b->pos);
    free(b->seq);
    free(b->want);
    model_ctx_destroy(b->ctx);
    kv_cache_destroy(b->kv);
    model_destroy(b->m);
}

/* One forward of 16 tokens, not measured. */
static kn_status warm_up(rig *b, kn_err *err) {
    for (int i = 0; i < 16 && i < b->max_batch; i++)
        b->tok[i] = rand_tok(b), b->pos[i] = i, b->seq[i] = 0, b->want[i] = i == 15;
    kv_seq_truncate(b->kv, 0, 0);
    return run(b, b->max_batch < 16 ? b->max_batch : 16, err);
}

/* pp: np prompt tokens in one forward; *tok_s the tokens per second. */
static kn_status measure_pp(rig *b, int np, double *tok_s, kn_err *err) {
    kv_seq_truncate(b->kv, 0, 0);
    for (int i = 0; i < np; i++) b->tok[i] = rand_tok(b), b->pos[i] = i, b->seq[i] = 0, b->want[i] = 0;
    b->want[np - 1] = 1;
    double t0 = kn_now_s();
    kn_status st = run(b, np, err);
    if (st == KN_OK) *tok_s = (double)np / (kn_now_s() - t0);
    return st;
}

/* tg: ng tokens decoded one at a time by one sequence. */
static kn_status measure_tg(rig *b, int ng, double *tok_s, kn_err *err) {
    kv_seq_truncate(b->kv, 0, 0);
    b->seq[0] = 0, b->want[0] = 1;
    double t0 = kn_now_s();
    for (int i = 0; i < ng; i++) {
        b->tok[0] = rand_tok(b), b->pos[0] = i;
        kn_status st = run(b, 1, err);
        if (st != KN_OK) return st;
    }
    *tok_s = (double)ng / (kn_now_s() - t0);
    return KN_OK;
}

/* bS: S sequences each after a prompt_b-token prompt (prefilled in chunks,
 * not measured), then ng steps decoding one token of each; total tok/s. */
static kn_status measure_batched(rig *b, int S, int prompt_b, int ng, double *tok_s, kn_err *err) {
    kn_status st;
    for (int s = 0; s < S; s++) kv_seq_truncate(b->kv, s, 0);
    int k = 0;
    for (int s = 0; s < S; s++)
        for (int i = 0; i < prompt_b; i++) {
            b->tok[k] = rand_tok(b), b->pos[k] = i, b->seq[k] = s, b->want[k] = i == prompt_b - 1;
            if (++k == b->max_batch) {
                if ((st = run(b, k, err)) != KN_OK) return st;
                k = 0;
            }
        }
    if (k > 0 && (st = run(b, k, err)) != KN_OK) return st;
    double t0 = kn_now_s();
    for (int step = 0; step < ng; step++) {
        for (int s = 0; s < S; s++)
            b->tok[s] = rand_tok(b), b->pos[s] = prompt_b + step, b->seq[s] = s, b->want[s] = 1;
        if ((st = run(b, S, err)) != KN_OK) return st;
    }
    *tok_s = (double)(S * ng) / (kn_now_s() - t0);
    return KN_OK;
}

/* The figures of a run: per repetition r, pp[r], tg[r] and bt[si * reps + r]. */
typedef struct figures {
    double bw; /* measured read bandwidth, bytes/s */
    double *pp, *tg, *bt;
} figures;

/* Measures the bandwidth, warms up and runs every repetition. False on
 * failure (printed, except when memory runs out). */
static bool measure(rig *b, const opts *o, kn_pool *pool, figures *f) {
    kn_err err = {0};
    const int reps = (int)o->reps;
    uint64_t steps = (uint64_t)reps * (1 + (o->np > 0) + (o->ng > 0) + (uint64_t)o->n_seqs);
    kn_progress prog;
    kn_progress_begin(&prog, "bench model", steps);
    uint64_t done_steps = 0;
    f->bw = tensor_measure_bandwidth(pool, 512u << 20);
    kn_progress_update(&prog, ++done_steps, "bandwidth");
    if (warm_up(b, &err) != KN_OK) goto fail;
    f->pp = calloc((size_t)reps, sizeof(double)), f->tg = calloc((size_t)reps, sizeof(double));
    f->bt = calloc((size_t)reps * (o->n_seqs ? o->n_seqs : 1), sizeof(double));
    if (!f->pp || !f->tg || !f->bt) return false;
    for (int r = 0; r < reps; r++) {
        if (o->np > 0) {
            if (measure_pp(b, (int)o->np, &f->pp[r], &err) != KN_OK) goto fail;
            kn_progress_update(&prog, ++done_steps, "pp");
        }
        if (o->ng > 0) {
            if (measure_tg(b, (int)o->ng, &f->tg[r], &err) != KN_OK) goto fail;
            kn_progress_update(&prog, ++done_steps, "tg");
        }
        for (int si = 0; si < o->n_seqs; si++) {
            if (measure_batched(b, o->seqs[si], (int)o->bp, (int)o->ng, &f->bt[(size_t)si * reps + r],
                                &err) != KN_OK)
                goto fail;
            kn_progress_update(&prog, ++done_steps, "batched");
        }
    }
    kn_progress_end(&prog);
    return true;
fail:
    fprintf(stderr, "kiln bench model: %s\n", err.msg);
    return false;
}

static void report_json(const opts *o, const rig *b, kn_cpu_level lvl, const figures *f) {
    const int reps = (int)o->reps;
    cli_stats spp = cli_stats_of(f->pp, reps), stg = cli_stats_of(f->tg, reps);
    double roof = f->bw / (double)model_decode_bytes(b->m), frac = o->ng > 0 ? stg.mean / roof : 0.0;
    json_t *root = json_object();
    json_object_set_new(root, "model", json_string(o->path));
    json_object_set_new(root, "threads", json_integer(o->threads));
    json_object_set_new(root, "kernel_set", json_string(kn_cpu_level_name(lvl)));
    json_object_set_new(root, "model_bytes", json_integer((json_int_t)b->m->weight_bytes));
    json_object_set_new(root, "decode_bytes", json_integer((json_int_t)model_decode_bytes(b->m)));
    json_object_set_new(root, "pp_tokens", json_integer(o->np));
    json_object_set_new(root, "tg_tokens", json_integer(o->ng));
    json_object_set_new(root, "pp_tok_s", o->np > 0 ? json_real(spp.mean) : json_null());
    json_object_set_new(root, "pp_tok_s_sd", o->np > 0 ? json_real(spp.sd) : json_null());
    json_object_set_new(root, "tg_tok_s", o->ng > 0 ? json_real(stg.mean) : json_null());
    json_object_set_new(root, "tg_tok_s_sd", o->ng > 0 ? json_real(stg.sd) : json_null());
    json_t *ba = json_array();
    for (int si = 0; si < o->n_seqs; si++) {
        cli_stats s = cli_stats_of(f->bt + (size_t)si * reps, reps);
        json_t *e = json_object();
        json_object_set_new(e, "seqs", json_integer(o->seqs[si]));
        json_object_set_new(e, "prompt_tokens", json_integer(o->bp));
        json_object_set_new(e, "tok_s", json_real(s.mean));
        json_object_set_new(e, "tok_s_sd", json_real(s.sd));
        json_array_append_new(ba, e);
    }
    json_object_set_new(root, "batched", ba);
    json_object_set_new(root, "bandwidth_gb_s", json_real(f->bw / 1e9));
    json_object_set_new(root, "tg_roofline_tok_s", json_real(roof));
    json_object_set_new(root, "tg_roofline_frac", o->ng > 0 ? json_real(frac) : json_null());
    json_dumpf(root, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(root);
}

static void report_text(const opts *o, const rig *b, kn_cpu_level lvl, const figures *f) {
    const int reps = (int)o->reps;
    cli_stats spp = cli_stats_of(f->pp, reps), stg = cli_stats_of(f->tg, reps);
    double model_bytes = (double)b->m->weight_bytes, step_bytes = (double)model_decode_bytes(b->m);
    double roof = f->bw / step_bytes, frac = o->ng > 0 ? stg.mean / roof : 0.0;
    printf("model: %s (%.1f MiB of weights), %lld threads, kernel set %s\n", o->path, model_bytes / 1048576.0,
           o->threads, kn_cpu_level_name(lvl));
    if (b->m->hp.n_expert > 0)
        printf("experts: %d of %d used per token -> %.1f MiB read per decode step\n", b->m->hp.n_expert_used,
               b->m->hp.n_expert, step_bytes / 1048576.0);
    printf("bandwidth: %.1f GB/s measured -> decode roofline %.1f tok/s\n", f->bw / 1e9, roof);
    if (o->np > 0) printf("pp%-5lld %10.1f +- %.1f tok/s\n", o->np, spp.mean, spp.sd);
    if (o->ng > 0)
        printf("tg%-5lld %10.1f +- %.1f tok/s  (%.0f%% of the bandwidth roofline)\n", o->ng, stg.mean, stg.sd,
               100.0 * frac);
    for (int si = 0; si < o->n_seqs; si++) {
        cli_stats s = cli_stats_of(f->bt + (size_t)si * reps, reps);
        printf("b%-6d %10.1f +- %.1f tok/s total (%d sequences x %lld tokens)\n", o->seqs[si], s.mean, s.sd,
               o->seqs[si], o->ng);
    }
}

int cmd_bench_model(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    kn_cpu_level lvl;
    tensor_ops ops;
    if (!cli_kernels("bench model", &lvl, &ops)) return 1;
    kn_pool *pool = kn_pool_create((int)o.threads);
    rig b = {0};
    figures f = {0};
    rc = 1;
    if (pool && rig_open(&b, &o, &ops, pool) && measure(&b, &o, pool, &f)) {
        if (o.json)
            report_json(&o, &b, lvl, &f);
        else
            report_text(&o, &b, lvl, &f);
        rc = 0;
    }
    free(f.pp);
    free(f.tg);
    free(f.bt);
    rig_close(&b);
    kn_pool_destroy(pool);
    return rc;
}
