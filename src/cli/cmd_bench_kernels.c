/*
 * cmd_bench_kernels.c — `kiln bench kernels`: matvec (decode) and 512-column
 * matmul (prefill) throughput of every hot weight type under every kernel
 * set this CPU supports, on model-sized matrices, reported in GB/s of
 * weights and GFLOP/s, each as a fraction of the read bandwidth and compute
 * peak measured in the same run. Benchmarks measure; they never assert.
 *
 * Decode figures rotate over enough copies of the weights (>= 256 MiB) that
 * they come from memory, not from the last-level cache, as in a real model.
 */
#include "cli.h"

#include "kiln/core.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const q_type DEFAULT_TYPES[] = {Q_TYPE_Q4_K,  Q_TYPE_Q5_K, Q_TYPE_Q6_K,  Q_TYPE_Q8_0, Q_TYPE_Q4_0,
                                       Q_TYPE_MXFP4, Q_TYPE_F16,  Q_TYPE_BF16, Q_TYPE_F32};
#define N_DEFAULT_TYPES (int)(sizeof DEFAULT_TYPES / sizeof DEFAULT_TYPES[0])

typedef struct shape {
    int64_t M, K;
} shape;
static const shape SHAPES[] = {{4096, 4096}, {4096, 11008}};

typedef struct kernels_opts {
    bool json, quick;
    int threads;
    q_type types[Q_TYPE_COUNT];
    int n_types;
    kn_cpu_level sets[KN_CPU_LEVEL_COUNT];
    int n_sets;
} kernels_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln bench kernels [--json] [-t N] [--types LIST] [--sets LIST] [--quick]\n"
            "       kiln bench kernels --check-cpu SET\n\n"
            "Measures matvec (decode, 1 column) and matmul (prefill, 512 columns; 32 for the\n"
            "generic set) on 4096x4096 and 4096x11008 (rows x K) weights of each type, under\n"
            "each kernel set, against the read bandwidth and compute peak measured in the same run.\n\n"
            "  --json          one JSON object on stdout (progress and logs on stderr)\n"
            "  -t, --threads N threads (default: all CPUs)\n"
            "  --types LIST    comma-separated weight types\n"
            "                  (default Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,MXFP4,F16,BF16,F32)\n"
            "  --sets LIST     comma-separated kernel sets among generic,avx2,avx512 (default: all supported)\n"
            "  --quick         fewer repetitions and only 4096x4096\n"
            "  --check-cpu SET exit 0 if this CPU supports kernel set SET, 1 otherwise\n");
}

/* ---- random weights, quantized in parallel ---- */

typedef struct fill_job {
    q_type t;
    int64_t M, K;
    uint8_t *w;
    float *scratch; /* [nth][K] */
    uint64_t seed;
} fill_job;

static float rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((int64_t)(*s >> 11) - (1ll << 52)) * (1.0f / (float)(1ll << 52));
}

static void fill_worker(void *ctx, int ith, int nth) {
    fill_job *j = ctx;
    int64_t lo, hi;
    kn_split_range(j->M, 1, ith, nth, &lo, &hi);
    const q_traits *tr = q_get_traits(j->t);
    const size_t row = q_row_size(j->t, j->K);
    float *x = j->scratch + (size_t)ith * (size_t)j->K;
    for (int64_t m = lo; m < hi; m++) {
        uint64_t s = j->seed + (uint64_t)m * 0x9E3779B97F4A7C15ull + 1;
        for (int64_t k = 0; k < j->K; k++) x[k] = rnd(&s);
        tr->from_float(x, j->w + (size_t)m * row, j->K);
    }
}

/* ---- timing ---- */

typedef struct run_ctx {
    const tensor_ops *ops;
    kn_pool *pool;
    q_type t;
    uint8_t **copies;
    int n_copies;
    int64_t M, K;
    const void *act;
    int64_t cols;
    float *y;
} run_ctx;

/* Best time of repeated runs, each on the next copy of the weights. */
static double time_runs(run_ctx *r, double min_time, int max_reps) {
    double best = INFINITY, spent = 0;
    int rep = 0, copy = 0;
    tensor_matmul(r->ops, r->pool, r->t, r->copies[0], r->K, r->M, r->act, r->cols, r->y, r->M); /* warm-up */
    while (rep < 2 || (spent < min_time && rep < max_reps)) {
        copy = (copy + 1) % r->n_copies;
        const double t0 = kn_now_s();
        tensor_matmul(r->ops, r->pool, r->t, r->copies[copy], r->K, r->M, r->act, r->cols, r->y, r->M);
        const double dt = kn_now_s() - t0;
        if (dt < best) best = dt;
        spent += dt;
        rep++;
    }
    return best;
}

static bool parse_list_types(const char *s, kernels_opts *o) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    o->n_types = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        q_type t;
        if (!q_type_from_name(tok, &t) || !q_type_supported(t) || !q_get_traits(t)->from_float) {
            fprintf(stderr, "kiln bench kernels: unknown or unsupported type '%s'\n", tok);
            return false;
        }
        if (o->n_types < Q_TYPE_COUNT) o->types[o->n_types++] = t;
    }
    return o->n_types > 0;
}

static bool parse_list_sets(const char *s, kernels_opts *o, const kn_cpu_features *f) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    o->n_sets = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        kn_cpu_level l;
        if (!kn_cpu_level_parse(tok, &l)) {
            fprintf(stderr, "kiln bench kernels: unknown kernel set '%s' (generic, avx2, avx512)\n", tok);
            return false;
        }
        if (!kn_cpu_supports(f, l)) {
            fprintf(stderr, "kiln bench kernels: this CPU does not support kernel set '%s'\n", tok);
            return false;
        }
        if (o->n_sets < KN_CPU_LEVEL_COUNT) o->sets[o->n_sets++] = l;
    }
    return o->n_sets > 0;
}

/* Measures read bandwidth and each set's compute peaks; keeps the maxima. */
static void probe_all(kn_pool *pool, const kernels_opts *o, kn_progress *prog, uint64_t *step, double *bw,
                      double *peak_int8, double *peak_fma) {
    kn_progress_update(prog, (*step)++, "bandwidth");
    const double b = tensor_measure_bandwidth(pool, o->quick ? (size_t)128 << 20 : (size_t)512 << 20);
    if (b > *bw) *bw = b;
    for (int si = 0; si < o->n_sets; si++) {
        const kn_cpu_level l = o->sets[si];
        kn_progress_update(prog, (*step)++, "compute peak");
        const double pi = tensor_measure_peak(pool, l, true), pf = tensor_measure_peak(pool, l, false);
        if (pi > peak_int8[l]) peak_int8[l] = pi;
        if (pf > peak_fma[l]) peak_fma[l] = pf;
    }
}

/* Fills *o from argv (defaults: every hot type, every set this CPU runs).
 * Returns -1 to go on, else the exit status: 2 for a usage error, and
 * --check-cpu's answer (0 or 1). */
static int parse_opts(int argc, char **argv, const kn_cpu_features *feat, kernels_opts *o) {
    *o = (kernels_opts){.threads = kn_default_threads()};
    for (int i = 0; i < N_DEFAULT_TYPES; i++) o->types[o->n_types++] = DEFAULT_TYPES[i];
    for (int l = 0; l < KN_CPU_LEVEL_COUNT; l++)
        if (kn_cpu_supports(feat, (kn_cpu_level)l)) o->sets[o->n_sets++] = (kn_cpu_level)l;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check-cpu")) {
            const char *v = cli_flag_value("bench kernels", argc, argv, &i);
            if (!v) return 2;
            kn_cpu_level l;
            if (!kn_cpu_level_parse(v, &l)) {
                fprintf(stderr, "kiln bench kernels: unknown kernel set '%s' (generic, avx2, avx512)\n", v);
                return 1;
            }
            return kn_cpu_supports(feat, l) ? 0 : 1;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--quick")) {
            o->quick = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            const char *v = cli_flag_value("bench kernels", argc, argv, &i);
            long long n;
            if (!v) return 2;
            if (!cli_parse_int(v, 1, 1024, &n)) {
                fprintf(stderr, "kiln bench kernels: bad thread count '%s'\n", v);
                return 2;
            }
            o->threads = (int)n;
        } else if (!strcmp(a, "--types")) {
            const char *v = cli_flag_value("bench kernels", argc, argv, &i);
            if (!v || !parse_list_types(v, o)) return 2;
        } else if (!strcmp(a, "--sets")) {
            const char *v = cli_flag_value("bench kernels", argc, argv, &i);
            if (!v || !parse_list_sets(v, o, feat)) return 2;
        } else {
            fprintf(stderr, "kiln bench kernels: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* One shape of one type: the weights (copies to rotate through) and the
 * activations, in and out. */
typedef struct weights {
    q_type t;
    int64_t M, K;
    size_t wbytes; /* of one copy */
    uint8_t **copies;
    int n_copies;
    float *x, *y;  /* [max_cols][K], [max_cols][M] */
    float *scratch; /* [threads][K], for the fill */
    void *act;     /* x quantized for t */
} weights;

#define MAX_COLS 512

static void weights_free(weights *w) {
    for (int c = 0; w->copies && c < w->n_copies; c++) kn_free_aligned(w->copies[c]);
    free(w->copies);
    free(w->x);
    free(w->y);
    free(w->scratch);
    free(w->act);
}

/* Allocates enough copies of an M x K matrix of type t to cover
 * rotate_bytes (at least 2), fills them with the same random weights
 * (seeded) and x with random activations. False when memory runs out. */
static bool weights_make(weights *w, kn_pool *pool, q_type t, int64_t M, int64_t K, size_t rotate_bytes,
                         uint64_t seed) {
    *w = (weights){.t = t, .M = M, .K = K, .wbytes = q_row_size(t, K) * (size_t)M};
    w->n_copies = (int)((rotate_bytes + w->wbytes - 1) / w->wbytes);
    if (w->n_copies < 2) w->n_copies = 2;
    w->copies = calloc((size_t)w->n_copies, sizeof *w->copies);
    w->x = malloc(sizeof(float) * (size_t)(K * MAX_COLS));
    w->y = malloc(sizeof(float) * (size_t)(M * MAX_COLS));
    w->scratch = malloc(sizeof(float) * (size_t)K * (size_t)kn_pool_size(pool));
    w->act = malloc(tensor_act_bytes(t, K, MAX_COLS));
    bool ok = w->copies && w->x && w->y && w->scratch && w->act;
    for (int c = 0; ok && c < w->n_copies; c++) ok = (w->copies[c] = kn_alloc_aligned(w->wbytes)) != NULL;
    if (!ok) return false;
    fill_job fj = {t, M, K, w->copies[0], w->scratch, seed};
    kn_pool_run(pool, fill_worker, &fj);
    for (int c = 1; c < w->n_copies; c++) memcpy(w->copies[c], w->copies[0], w->wbytes);
    uint64_t s = 99;
    for (int64_t i = 0; i < K * MAX_COLS; i++) w->x[i] = rnd(&s);
    return true;
}

/* Times matvec and matmul of w under kernel set l; appends a result
 * object for each to results. */
static void measure_set(weights *w, kn_pool *pool, kn_cpu_level l, const kernels_opts *o, json_t *results) {
    const double min_time = o->quick ? 0.1 : 0.4;
    const int max_reps = o->quick ? 5 : 30;
    tensor_ops ops;
    tensor_ops_init(&ops, l);
    const bool is_float = !q_get_traits(w->t)->is_quantized;
    for (int op = 0; op < 2; op++) {
        const int64_t cols = op == 0 ? 1 : (l == KN_CPU_GENERIC ? 32 : MAX_COLS);
        tensor_act_quantize(&ops, w->t, w->x, w->K, w->K, cols, w->act);
        run_ctx rc = {&ops, pool, w->t, w->copies, op == 0 ? w->n_copies : 1, w->M, w->K, w->act, cols, w->y};
        const double sec = time_runs(&rc, min_time, l == KN_CPU_GENERIC && op ? 2 : max_reps);
        const double gbs = (double)w->wbytes / sec / 1e9;
        const double gflops = 2.0 * (double)w->M * (double)w->K * (double)cols / sec / 1e9;
        json_t *e = json_object();
        json_object_set_new(e, "set", json_string(kn_cpu_level_name(l)));
        json_object_set_new(e, "type", json_string(q_type_name(w->t)));
        json_object_set_new(e, "op", json_string(op == 0 ? "matvec" : "matmul"));
        json_object_set_new(e, "rows", json_integer(w->M));
        json_object_set_new(e, "k", json_integer(w->K));
        json_object_set_new(e, "cols", json_integer(cols));
        json_object_set_new(e, "weight_bytes", json_integer((json_int_t)w->wbytes));
        json_object_set_new(e, "seconds", json_real(sec));
        json_object_set_new(e, "gbs", json_real(gbs));
        json_object_set_new(e, "gflops", json_real(gflops));
        json_object_set_new(e, "peak_kind", json_string(is_float ? "fma" : "int8"));
        json_array_append_new(results, e);
    }
}

/* Every shape x type x set; returns the exit status (1 when memory ran out). */
static int measure_all(kn_pool *pool, const kernels_opts *o, kn_progress *prog, uint64_t *step,
                       json_t *results) {
    const int n_shapes = o->quick ? 1 : 2;
    const size_t rotate_bytes = (size_t)256 << 20;
    for (int shi = 0; shi < n_shapes; shi++) {
        const int64_t M = SHAPES[shi].M, K = SHAPES[shi].K;
        for (int ti = 0; ti < o->n_types; ti++) {
            const q_type t = o->types[ti];
            if (q_row_size(t, K) * (size_t)M == 0) continue;
            weights w;
            if (!weights_make(&w, pool, t, M, K, rotate_bytes, 1234 + (uint64_t)ti)) {
                fprintf(stderr, "kiln bench kernels: out of memory for %s %lldx%lld\n", q_type_name(t),
                        (long long)M, (long long)K);
                weights_free(&w);
                return 1;
            }
            for (int si = 0; si < o->n_sets; si++) {
                const kn_cpu_level l = o->sets[si];
                char note[64];
                snprintf(note, sizeof note, "%s %s %lldx%lld", kn_cpu_level_name(l), q_type_name(t),
                         (long long)M, (long long)K);
                kn_progress_update(prog, (*step)++, note);
                measure_set(&w, pool, l, o, results);
            }
            weights_free(&w);
        }
    }
    return 0;
}

/* Adds to every result its fractions of the bandwidth and of its set's peak. */
static void add_fractions(json_t *results, double bw, const double *peak_int8, const double *peak_fma) {
    size_t ri;
    json_t *re;
    json_array_foreach(results, ri, re) {
        kn_cpu_level l = KN_CPU_GENERIC;
        kn_cpu_level_parse(json_string_value(json_object_get(re, "set")), &l);
        const bool is_float = !strcmp(json_string_value(json_object_get(re, "peak_kind")), "fma");
        const double peak = is_float ? peak_fma[l] : peak_int8[l];
        const double gbs = json_real_value(json_object_get(re, "gbs"));
        const double gflops = json_real_value(json_object_get(re, "gflops"));
        json_object_set_new(re, "bandwidth_fraction", json_real(bw > 0 ? gbs * 1e9 / bw : 0));
        json_object_set_new(re, "peak_fraction", peak > 0 ? json_real(gflops * 1e9 / peak) : json_null());
    }
}

static void print_text(const kernels_opts *o, double bw, const double *peak_int8, const double *peak_fma,
                       json_t *results) {
    printf("kiln bench kernels: %d thread(s), read bandwidth %.1f GB/s\n", o->threads, bw / 1e9);
    for (int si = 0; si < o->n_sets; si++)
        if (o->sets[si] != KN_CPU_GENERIC)
            printf("  %-7s peak: int8 %.0f GOP/s, fp32 FMA %.0f GFLOP/s\n", kn_cpu_level_name(o->sets[si]),
                   peak_int8[o->sets[si]] / 1e9, peak_fma[o->sets[si]] / 1e9);
    printf("\n%-7s %-5s %-11s %-6s %4s %10s %8s %6s %9s %7s\n", "set", "type", "rows x K", "op", "cols",
           "time(ms)", "GB/s", "%BW", "GFLOP/s", "%peak");
    size_t i;
    json_t *e;
    json_array_foreach(results, i, e) {
        char shp[32];
        snprintf(shp, sizeof shp, "%lldx%lld", (long long)json_integer_value(json_object_get(e, "rows")),
                 (long long)json_integer_value(json_object_get(e, "k")));
        json_t *pf = json_object_get(e, "peak_fraction");
        char pfs[16] = "-";
        if (json_is_real(pf))
            snprintf(pfs, sizeof pfs, "%.1f%%", 100 * json_real_value(pf));
        printf("%-7s %-5s %-11s %-6s %4lld %10.3f %8.1f %5.0f%% %9.1f %7s\n",
               json_string_value(json_object_get(e, "set")), json_string_value(json_object_get(e, "type")),
               shp, json_string_value(json_object_get(e, "op")),
               (long long)json_integer_value(json_object_get(e, "cols")),
               1e3 * json_real_value(json_object_get(e, "seconds")),
               json_real_value(json_object_get(e, "gbs")),
               100 * json_real_value(json_object_get(e, "bandwidth_fraction")),
               json_real_value(json_object_get(e, "gflops")), pfs);
    }
}

int cmd_bench_kernels(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    kn_cpu_features feat;
    kn_cpu_features_detect(&feat);
    kernels_opts o;
    int status = parse_opts(argc, argv, &feat, &o);
    if (status >= 0) return status;

    kn_pool *pool = kn_pool_create(o.threads);
    if (!pool) {
        fprintf(stderr, "kiln bench kernels: cannot create %d threads\n", o.threads);
        return 1;
    }
    const int n_shapes = o.quick ? 1 : 2;
    kn_progress prog;
    kn_progress_begin(&prog, "bench kernels",
                      (uint64_t)(2 * (1 + o.n_sets) + n_shapes * o.n_types * o.n_sets));
    /* Bandwidth and peaks are probed before and after the kernels and the
     * best is kept, as the kernels keep their best run: on a busy machine
     * both sides of each fraction then see its quiet moments. */
    double bw = 0, peak_int8[KN_CPU_LEVEL_COUNT] = {0}, peak_fma[KN_CPU_LEVEL_COUNT] = {0};
    uint64_t step = 0;
    probe_all(pool, &o, &prog, &step, &bw, peak_int8, peak_fma);

    json_t *root = json_object(), *results = json_array();
    json_object_set_new(root, "threads", json_integer(o.threads));
    status = measure_all(pool, &o, &prog, &step, results);
    if (!status) probe_all(pool, &o, &prog, &step, &bw, peak_int8, peak_fma);
    kn_progress_end(&prog);
    json_object_set_new(root, "read_bandwidth_gbs", json_real(bw / 1e9));
    json_t *peaks = json_object();
    for (int si = 0; si < o.n_sets; si++) {
        json_t *p = json_object();
        json_object_set_new(p, "int8_gops", json_real(peak_int8[o.sets[si]] / 1e9));
        json_object_set_new(p, "fma_gflops", json_real(peak_fma[o.sets[si]] / 1e9));
        json_object_set_new(peaks, kn_cpu_level_name(o.sets[si]), p);
    }
    json_object_set_new(root, "compute_peak", peaks);
    add_fractions(results, bw, peak_int8, peak_fma);
    json_object_set_new(root, "results", results);

    if (!status && o.json) {
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        if (s) printf("%s\n", s);
        free(s);
    } else if (!status) {
        print_text(&o, bw, peak_int8, peak_fma, results);
    }
    json_decref(root);
    kn_pool_destroy(pool);
    return status;
}
