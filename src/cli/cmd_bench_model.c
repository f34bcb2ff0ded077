/*
 * cmd_bench_model.c — `kiln bench model`: prefill (pp), single-stream decode
 * (tg) and batched decode throughput of a model, llama-bench style, with the
 * memory bandwidth measured in the same run and tg as a fraction of the
 * bandwidth roofline (weight bytes read per token).
 */
#include "cli.h"
#include "model/model.h"

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
               "fraction of the bandwidth roofline (weight bytes per token).\n\n"
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

typedef struct rig {
    model *m;
    model_ctx *ctx;
    model_kv *kv;
    float *logits; /* [max_batch][n_vocab] */
    int32_t *tok, *pos, *seq;
    uint8_t *want;
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

int cmd_bench_model(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *path = NULL, *blist = "1,4,8,16";
    long long threads = kn_default_threads(), np = 512, ng = 128, reps = 3, bp = 128;
    bool json = false;
    model_kv_type kv_type = MODEL_KV_F16;
    model_load_opts load_opts = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long *dst = NULL, hi = 0;
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--mmap")) { load_opts.mmap_weights = true; continue; }
        if (!strcmp(a, "--kv-type")) {
            if (!(v = cli_flag_value("bench model", argc, argv, &i))) return 2;
            if (!model_kv_type_parse(v, &kv_type)) {
                fprintf(stderr, "kiln bench model: --kv-type expects f16 or q8_0, got '%s'\n", v);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "-b")) {
            if (!(v = cli_flag_value("bench model", argc, argv, &i))) return 2;
            if (a[1] == 'm') path = v;
            else blist = v;
            continue;
        }
        if (!strcmp(a, "-t")) dst = &threads, hi = 1024;
        else if (!strcmp(a, "-p")) dst = &np, hi = 65536;
        else if (!strcmp(a, "-n")) dst = &ng, hi = 65536;
        else if (!strcmp(a, "-r")) dst = &reps, hi = 1000;
        else if (!strcmp(a, "--bp")) dst = &bp, hi = 65536;
        else {
            fprintf(stderr, "kiln bench model: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!(v = cli_flag_value("bench model", argc, argv, &i))) return 2;
        if (!cli_parse_int(v, dst == &reps || dst == &threads || dst == &bp ? 1 : 0, hi, dst)) {
            fprintf(stderr, "kiln bench model: %s expects an integer, got '%s'\n", a, v);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "kiln bench model: needs -m FILE (see --help)\n");
        return 2;
    }
    int seqs[16], n_seqs = 0;
    for (const char *s = blist; *s;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 256 || n_seqs == 16) {
            fprintf(stderr, "kiln bench model: -b expects a list like 1,4,16 (each 1..256)\n");
            return 2;
        }
        seqs[n_seqs++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    if (ng == 0) n_seqs = 0;

    int rc = 1;
    kn_err err = {0};
    kn_cpu_level lvl;
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln bench model: %s\n", err.msg);
        return 1;
    }
    tensor_ops ops;
    tensor_ops_init(&ops, lvl);
    kn_pool *pool = kn_pool_create((int)threads);
    rig b = {.rng = 1234};
    json_t *root = NULL;
    if (!pool) goto done;
    if (model_load(path, &load_opts, &b.m, &err) != KN_OK) {
        fprintf(stderr, "kiln bench model: %s: %s\n", path, err.msg);
        goto done;
    }
    const int prompt_b = (int)bp;
    int max_seq = 1, max_batch = np > 0 ? (int)np : 1;
    for (int i = 0; i < n_seqs; i++)
        if (seqs[i] > max_seq) max_seq = seqs[i];
    if (max_batch < 512) max_batch = 512; /* batched prompts go in chunks of up to this */
    if (max_batch < max_seq) max_batch = max_seq;
    int n_ctx = (int)(np > ng + prompt_b ? np : ng + prompt_b) + 1;
    const int V = b.m->hp.n_vocab;
    if (model_kv_create(b.m, max_seq, n_ctx, kv_type, &b.kv, &err) != KN_OK ||
        model_ctx_create(b.m, &ops, pool, max_batch, &b.ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln bench model: %s\n", err.msg);
        goto done;
    }
    b.logits = malloc((size_t)max_seq * V * sizeof(float));
    b.tok = malloc((size_t)max_batch * sizeof(int32_t));
    b.pos = malloc((size_t)max_batch * sizeof(int32_t));
    b.seq = malloc((size_t)max_batch * sizeof(int32_t));
    b.want = calloc((size_t)max_batch, 1);
    if (!b.logits || !b.tok || !b.pos || !b.seq || !b.want) goto done;

    uint64_t steps = (uint64_t)reps * (1 + (np > 0) + (ng > 0) + (uint64_t)n_seqs);
    kn_progress prog;
    kn_progress_begin(&prog, "bench model", steps);
    uint64_t done_steps = 0;
    double bw = tensor_measure_bandwidth(pool, 512u << 20);
    kn_progress_update(&prog, ++done_steps, "bandwidth");
    /* warm-up: one prefill chunk and a few decode steps, not measured */
    for (int i = 0; i < 16 && i < max_batch; i++) b.tok[i] = rand_tok(&b), b.pos[i] = i, b.seq[i] = 0, b.want[i] = i == 15;
    kv_seq_truncate(b.kv, 0, 0);
    if (run(&b, max_batch < 16 ? max_batch : 16, &err) != KN_OK) {
        fprintf(stderr, "kiln bench model: %s\n", err.msg);
        goto done;
    }
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    double *bt = calloc((size_t)reps * (n_seqs ? n_seqs : 1), sizeof(double));
    if (!pp || !tg || !bt) goto done_free;
    for (int r = 0; r < reps; r++) {
        if (np > 0) {
            kv_seq_truncate(b.kv, 0, 0);
            for (int i = 0; i < np; i++) b.tok[i] = rand_tok(&b), b.pos[i] = i, b.seq[i] = 0, b.want[i] = 0;
            b.want[np - 1] = 1;
            double t0 = kn_now_s();
            if (run(&b, (int)np, &err) != KN_OK) goto fail;
            pp[r] = (double)np / (kn_now_s() - t0);
            kn_progress_update(&prog, ++done_steps, "pp");
        }
        if (ng > 0) {
            kv_seq_truncate(b.kv, 0, 0);
            b.seq[0] = 0, b.want[0] = 1;
            double t0 = kn_now_s();
            for (int i = 0; i < ng; i++) {
                b.tok[0] = rand_tok(&b), b.pos[0] = i;
                if (run(&b, 1, &err) != KN_OK) goto fail;
            }
            tg[r] = (double)ng / (kn_now_s() - t0);
            kn_progress_update(&prog, ++done_steps, "tg");
        }
        for (int si = 0; si < n_seqs; si++) {
            const int S = seqs[si];
            for (int s = 0; s < S; s++) kv_seq_truncate(b.kv, s, 0);
            int k = 0;
            for (int s = 0; s < S; s++)
                for (int i = 0; i < prompt_b; i++) {
                    b.tok[k] = rand_tok(&b), b.pos[k] = i, b.seq[k] = s, b.want[k] = i == prompt_b - 1;
                    if (++k == max_batch) {
                        if (run(&b, k, &err) != KN_OK) goto fail;
                        k = 0;
                    }
                }
            if (k > 0 && run(&b, k, &err) != KN_OK) goto fail;
            double t0 = kn_now_s();
            for (int step = 0; step < ng; step++) {
                for (int s = 0; s < S; s++)
                    b.tok[s] = rand_tok(&b), b.pos[s] = prompt_b + step, b.seq[s] = s, b.want[s] = 1;
                if (run(&b, S, &err) != KN_OK) goto fail;
            }
            bt[(size_t)si * reps + r] = (double)(S * ng) / (kn_now_s() - t0);
            kn_progress_update(&prog, ++done_steps, "batched");
        }
    }
    kn_progress_end(&prog);
    cli_stats spp = cli_stats_of(pp, (int)reps), stg = cli_stats_of(tg, (int)reps);
    double model_bytes = (double)b.m->weight_bytes;
    double roof = bw / model_bytes, frac = ng > 0 ? stg.mean / roof : 0.0;
    if (json) {
        root = json_object();
        json_object_set_new(root, "model", json_string(path));
        json_object_set_new(root, "threads", json_integer(threads));
        json_object_set_new(root, "kernel_set", json_string(kn_cpu_level_name(lvl)));
        json_object_set_new(root, "model_bytes", json_integer((json_int_t)b.m->weight_bytes));
        json_object_set_new(root, "pp_tokens", json_integer(np));
        json_object_set_new(root, "tg_tokens", json_integer(ng));
        json_object_set_new(root, "pp_tok_s", np > 0 ? json_real(spp.mean) : json_null());
        json_object_set_new(root, "pp_tok_s_sd", np > 0 ? json_real(spp.sd) : json_null());
        json_object_set_new(root, "tg_tok_s", ng > 0 ? json_real(stg.mean) : json_null());
        json_object_set_new(root, "tg_tok_s_sd", ng > 0 ? json_real(stg.sd) : json_null());
        json_t *ba = json_array();
        for (int si = 0; si < n_seqs; si++) {
            cli_stats s = cli_stats_of(bt + (size_t)si * reps, (int)reps);
            json_t *o = json_object();
            json_object_set_new(o, "seqs", json_integer(seqs[si]));
            json_object_set_new(o, "prompt_tokens", json_integer(bp));
            json_object_set_new(o, "tok_s", json_real(s.mean));
            json_object_set_new(o, "tok_s_sd", json_real(s.sd));
            json_array_append_new(ba, o);
        }
        json_object_set_new(root, "batched", ba);
        json_object_set_new(root, "bandwidth_gb_s", json_real(bw / 1e9));
        json_object_set_new(root, "tg_roofline_tok_s", json_real(roof));
        json_object_set_new(root, "tg_roofline_frac", ng > 0 ? json_real(frac) : json_null());
        json_dumpf(root, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        printf("model: %s (%.1f MiB of weights), %lld threads, kernel set %s\n", path, model_bytes / 1048576.0,
               threads, kn_cpu_level_name(lvl));
        printf("bandwidth: %.1f GB/s measured -> decode roofline %.1f tok/s\n", bw / 1e9, roof);
        if (np > 0) printf("pp%-5lld %10.1f +- %.1f tok/s\n", np, spp.mean, spp.sd);
        if (ng > 0) printf("tg%-5lld %10.1f +- %.1f tok/s  (%.0f%% of the bandwidth roofline)\n", ng, stg.mean, stg.sd,
                           100.0 * frac);
        for (int si = 0; si < n_seqs; si++) {
            cli_stats s = cli_stats_of(bt + (size_t)si * reps, (int)reps);
            printf("b%-6d %10.1f +- %.1f tok/s total (%d sequences x %lld tokens)\n", seqs[si], s.mean, s.sd,
                   seqs[si], ng);
        }
    }
    rc = 0;
    goto done_free;
fail:
    fprintf(stderr, "kiln bench model: %s\n", err.msg);
done_free:
    free(pp);
    free(tg);
    free(bt);
done:
    json_decref(root);
    free(b.logits);
    free(b.tok);
    free(b.pos);
    free(b.seq);
    free(b.want);
    model_ctx_destroy(b.ctx);
    kv_cache_destroy(b.kv);
    model_destroy(b.m);
    kn_pool_destroy(pool);
    return rc;
}
