/*
 * cmd_bench_grammar.c — `kiln bench grammar -m FILE.gguf --schema FILE
 * [--grammar FILE]`: what constrained decoding costs on a model's
 * vocabulary. Reports the JSON Schema -> GBNF conversion plus compile time
 * (median of repeats), the token trie build, the per-token mask over a
 * random valid walk of the grammar (mean, p50, p99 of a full gram_mask at
 * each step, and of gram_token_ok, the sample-first fast path), and decode
 * tok/s of the same model, prompt and n, constrained against free, through
 * the engine session (as `kiln run`). Measures only; asserts nothing.
 */
#include "cli.h"
#include "cli_model.h"
#include "kiln/engine.h"
#include "kiln/grammar.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CMD "bench grammar"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln bench grammar -m FILE.gguf (--schema FILE | --grammar FILE) [options]\n\n"
            "Cost of constrained decoding on the model's vocabulary:\n"
            "  compile    JSON Schema -> GBNF + gram_compile (median of --repeats)\n"
            "  trie       gram_vocab_create over the vocabulary\n"
            "  mask       gram_mask at each step of a random walk through the grammar\n"
            "             (mean, p50, p99), and gram_token_ok on the token taken\n"
            "  decode     tok/s constrained vs free, same prompt and n (greedy)\n"
            "compile, trie and mask times are the thread's CPU time; decode is wall time.\n\n"
            "options:\n"
            "  -m, --model FILE     GGUF model\n"
            "      --schema FILE    JSON Schema (converted with gram_schema_to_gbnf)\n"
            "      --grammar FILE   GBNF grammar; used for the walk and the decode instead of the schema's\n"
            "  -n, --n-predict N    tokens to generate in each decode run (default 128)\n"
            "  -p, --prompt TEXT    decode prompt (default: a request for a JSON object)\n"
            "  -t, --threads N      threads (default: online CPUs)\n"
            "  -r, --repeats N      compile repeats and decode runs per mode (default 20 and 3)\n"
            "      --walk N         mask steps in the walk (default 400)\n"
            "      --seed S         walk seed (default 1)\n"
            "      --no-decode      skip the decode runs (no weights loaded)\n"
            "      --json           machine-readable output on stdout\n\n"
            "example:\n"
            "  kiln bench grammar -m tiny-llama3-Q8_0.gguf --schema bench/schemas/person.json\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of v[0..n), sorting v. */
static double quantile(double *v, size_t n, double q) {
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t k = (size_t)ceil(q * (double)n);
    return v[k ? k - 1 : 0];
}

static double mean_of(const double *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return n ? s / (double)n : 0;
}

/* The calling thread's CPU time: the mask work is single-threaded, and on a
 * shared machine wall time would count other processes' turns. */
static double cpu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The vocabulary as the engine gives it to the grammar (src/engine/sched.c). */
static kn_status make_vocab(const tok_vocab *v, gram_vocab **out, kn_err *err) {
    int32_t nv = tok_n_vocab(v);
    gram_token *toks = calloc((size_t)nv, sizeof *toks);
    if (!toks) return kn_fail(err, KN_ENOMEM, "out of memory");
    for (int32_t id = 0; id < nv; id++) {
        toks[id].kind = GRAM_TOK_CONTROL;
        if (tok_is_eog(v, id)) {
            toks[id].kind = GRAM_TOK_EOG;
            continue;
        }
        if (tok_is_control(v, id) || tok_token_type(v, id) == TOK_TYPE_UNUSED) continue;
        size_t len = 0;
        const char *piece = tok_token_piece(v, id, false, &len);
        if (!piece || len == 0 || len > GRAM_MAX_TOKEN_BYTES) continue;
        toks[id] = (gram_token){.bytes = piece, .len = (uint32_t)len, .kind = GRAM_TOK_TEXT};
    }
    kn_status st = gram_vocab_create(toks, (size_t)nv, out, err);
    free(toks);
    return st;
}

typedef struct walk_stats {
    double mask_mean, mask_p50, mask_p99, mask_max, ok_mean, ok_p99, allowed_mean;
    size_t steps, restarts;
} walk_stats;

/* A random walk: at each step the full mask (timed), then one allowed token
 * picked at random (its gram_token_ok timed) and taken; when the grammar can
 * end, the walk restarts with probability 1/2, and when it picks an
 * end-of-generation token. */
static bool walk(const gram *g, const gram_vocab *voc, const tok_vocab *v, size_t steps, uint64_t seed,
                 walk_stats *ws, kn_err *err) {
    size_t nv = gram_vocab_size(voc);
    uint8_t *mask = malloc(nv);
    uint32_t *allowed = malloc(nv * sizeof *allowed);
    double *tm = malloc(steps * sizeof *tm), *tok = malloc(steps * sizeof *tok);
    gram_state *s = NULL;
    bool ok = mask && allowed && tm && tok && gram_state_create(g, &s, err) == KN_OK;
    double n_allowed = 0;
    *ws = (walk_stats){0};
    for (size_t i = 0; ok && i < steps; i++) {
        double t0 = cpu_now_s();
        if (gram_mask(s, voc, mask, err) != KN_OK) {
            ok = false;
            break;
        }
        tm[i] = cpu_now_s() - t0;
        size_t na = 0;
        for (size_t id = 0; id < nv; id++)
            if (mask[id]) allowed[na++] = (uint32_t)id;
        n_allowed += (double)na;
        bool restart = na == 0 || (gram_can_end(s) && (rng_next(&seed) & 1));
        uint32_t pick = na ? allowed[rng_next(&seed) % na] : 0;
        t0 = cpu_now_s();
        bool tok_ok = na ? gram_token_ok(s, voc, pick) : true;
        tok[i] = cpu_now_s() - t0;
        if (!tok_ok) {
            ok = false;
            kn_fail(err, KN_EINVAL, "mask and gram_token_ok disagree on token %u", pick);
            break;
        }
        if (!restart && tok_is_eog(v, (int32_t)pick)) restart = true; /* the end, taken */
        if (restart) {
            gram_state_reset(s);
            ws->restarts++;
            continue;
        }
        if (!gram_accept_token(s, voc, pick)) {
            ok = false;
            kn_fail(err, KN_EINVAL, "the mask allowed token %u but the state refused it", pick);
        }
    }
    if (ok) {
        ws->steps = steps;
        ws->allowed_mean = n_allowed / (double)steps;
        ws->mask_mean = mean_of(tm, steps);
        ws->mask_p50 = quantile(tm, steps, 0.5);
        ws->mask_p99 = quantile(tm, steps, 0.99);
        ws->mask_max = tm[steps - 1];
        ws->ok_mean = mean_of(tok, steps);
        ws->ok_p99 = quantile(tok, steps, 0.99);
    } else if (err && !err->msg[0]) {
        kn_fail(err, KN_ENOMEM, "out of memory");
    }
    gram_state_destroy(s);
    free(mask);
    free(allowed);
    free(tm);
    free(tok);
    return ok;
}

typedef struct decode_stats {
    double tps_free, tps_con;
    size_t n_free, n_con;
} decode_stats;

/* Decode tok/s (first token to last) of one greedy run; grammar NULL: free. */
static bool decode_once(eng_service *svc, const char *prompt, int n, const char *grammar, double *tps,
                        size_t *n_gen, kn_err *err) {
    eng_sampler_params sp = eng_sampler_defaults();
    sp.temp = 0;
    eng_gen_request q = {.prompt = prompt,
                         .prompt_len = strlen(prompt),
                         .add_special = true,
                         .prompt_param = "prompt",
                         .sp = sp,
                         .seed_set = true,
                         .n_predict = n,
                         .n_predict_set = true,
                         .ignore_eos = true,
                         .n_logprobs = -1,
                         .num_ctx = 1024,
                         .keep_alive_s = NAN,
                         .spec = ENG_SPEC_NONE,
                         .t_origin = kn_now_s(),
                         .grammar = grammar};
    eng_gen *g = NULL;
    eng_error e;
    if (!eng_gen_start(svc, &q, &g, &e)) {
        kn_fail(err, KN_EINVAL, "%s%s%s", e.param[0] ? e.param : "", e.param[0] ? ": " : "", e.msg);
        return false;
    }
    eng_req_result res;
    for (;;) {
        const char *text;
        size_t n_text, nev;
        const eng_tok_event *ev;
        eng_read_status rs = eng_gen_read(g, &text, &n_text, &ev, &nev, &res);
        if (rs == ENG_READ_DONE) break;
        if (rs == ENG_READ_NONE) eng_gen_wait(g, -1);
    }
    eng_gen_close(g);
    if (res.finish != ENG_FINISH_STOP && res.finish != ENG_FINISH_LENGTH) {
        kn_fail(err, KN_EINVAL, "generation failed: %s", res.err[0] ? res.err : "?");
        return false;
    }
    double t = res.t_end > res.t_first && res.t_first > 0 ? res.t_end - res.t_first : 0;
    /* tokens after the first, over the time after the first */
    *tps = t > 0 && res.n_gen > 1 ? (double)(res.n_gen - 1) / t : 0;
    *n_gen = res.n_gen;
    return true;
}

static bool decode(const char *model, int threads, const char *prompt, int n, int runs, const char *grammar,
                   decode_stats *ds, kn_err *err) {
    kn_cpu_level lvl;
    if (kn_cpu_select(&lvl, err) != KN_OK) return false;
    tensor_ops ops;
    tensor_ops_init(&ops, lvl);
    eng_service_opts so = {.model_file = model,
                           .ops = &ops,
                           .default_max_tokens = n,
                           .rt = {.threads = threads,
                                  .n_slots = 1,
                                  .max_batch = 512,
                                  .kv_type = MODEL_KV_F16,
                                  .keep_alive_s = -1,
                                  .spec = ENG_SPEC_NONE}};
    eng_service *svc = NULL;
    if (eng_service_create(&so, &svc, err) != KN_OK) return false;
    double *f = calloc((size_t)runs, sizeof *f), *c = calloc((size_t)runs, sizeof *c);
    bool ok = f && c;
    double tps;
    size_t ng;
    /* a warm-up run loads the model and builds the scheduler's trie */
    ok = ok && decode_once(svc, prompt, 8, grammar, &tps, &ng, err);
    for (int i = 0; ok && i < runs; i++) {
        ok = decode_once(svc, prompt, n, NULL, &f[i], &ds->n_free, err) &&
             decode_once(svc, prompt, n, grammar, &c[i], &ds->n_con, err);
    }
    if (ok) {
        ds->tps_free = quantile(f, (size_t)runs, 0.5);
        ds->tps_con = quantile(c, (size_t)runs, 0.5);
    }
    free(f);
    free(c);
    eng_service_destroy(svc);
    return ok;
}

int cmd_bench_grammar(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *schema_file = NULL, *grammar_file = NULL,
               *prompt = "Write a JSON object that describes a person: name, age, email and tags.\n";
    long long n = 128, threads = kn_default_threads(), repeats = -1, walk_steps = 400, seed = 1;
    bool json = false, no_decode = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = cli_flag_value(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--schema")) {
            if (!(schema_file = cli_flag_value(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--grammar")) {
            if (!(grammar_file = cli_flag_value(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(prompt = cli_flag_value(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!cli_int_flag(CMD, argc, argv, &i, 2, 4096, &n)) return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!cli_int_flag(CMD, argc, argv, &i, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repeats")) {
            if (!cli_int_flag(CMD, argc, argv, &i, 1, 10000, &repeats)) return 2;
        } else if (!strcmp(a, "--walk")) {
            if (!cli_int_flag(CMD, argc, argv, &i, 1, 1000000, &walk_steps)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_int_flag(CMD, argc, argv, &i, 0, INT64_MAX, &seed)) return 2;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-decode")) {
            no_decode = true;
        } else {
            fprintf(stderr, "kiln " CMD ": unknown option '%s' (see kiln bench grammar --help)\n", a);
            return 2;
        }
    }
    if (!model || (!schema_file && !grammar_file)) {
        fprintf(stderr, "kiln " CMD ": needs -m FILE and --schema FILE or --grammar FILE (see --help)\n");
        return 2;
    }
    int rc = 1;
    kn_err err = {0};
    char *schema_text = NULL, *gbnf = NULL, *grammar = NULL;
    size_t len = 0;
    json_t *schema = NULL;
    tok_vocab *v = NULL;
    gram_vocab *voc = NULL;
    gram *g = NULL;
    double t_compile = 0, t_convert = 0, t_trie = 0;
    size_t gbnf_len = 0, n_rules = 0;
    walk_stats ws = {0};
    decode_stats ds = {0};
    int n_rep = repeats > 0 ? (int)repeats : 20;

    /* 1. schema -> GBNF -> compiled, repeated */
    if (schema_file) {
        if (!cli_read_file(CMD, schema_file, 16u << 20, &schema_text, &len)) goto done;
        json_error_t je;
        schema = json_loadb(schema_text, len, 0, &je);
        if (!schema) {
            fprintf(stderr, "kiln " CMD ": %s:%d:%d: %s\n", schema_file, je.line, je.column, je.text);
            goto done;
        }
        double *tc = calloc((size_t)n_rep, sizeof *tc), *tv = calloc((size_t)n_rep, sizeof *tv);
        bool ok = tc && tv;
        for (int i = 0; ok && i < n_rep; i++) {
            free(gbnf);
            gbnf = NULL;
            double t0 = cpu_now_s();
            ok = gram_schema_to_gbnf(schema, &gbnf, &gbnf_len, &err) == KN_OK;
            double t1 = cpu_now_s();
            gram *tmp = NULL;
            ok = ok && gram_compile(gbnf, gbnf_len, NULL, &tmp, &err) == KN_OK;
            tv[i] = t1 - t0;
            tc[i] = cpu_now_s() - t0;
            if (tmp) n_rules = gram_rule_count(tmp);
            gram_destroy(tmp);
        }
        if (ok) {
            t_convert = quantile(tv, (size_t)n_rep, 0.5);
            t_compile = quantile(tc, (size_t)n_rep, 0.5);
        }
        free(tc);
        free(tv);
        if (!ok) {
            fprintf(stderr, "kiln " CMD ": %s: %s\n", schema_file, err.msg[0] ? err.msg : "out of memory");
            goto done;
        }
    }
    if (grammar_file) {
        if (!cli_read_file(CMD, grammar_file, GRAM_MAX_TEXT, &grammar, &len)) goto done;
    } else {
        grammar = gbnf;
        gbnf = NULL;
        len = gbnf_len;
    }
    if (gram_compile(grammar, len, NULL, &g, &err) != KN_OK) {
        fprintf(stderr, "kiln " CMD ": %s: %s\n", grammar_file ? grammar_file : schema_file, err.msg);
        goto done;
    }
    if (!n_rules) n_rules = gram_rule_count(g);

    /* 2. the token trie */
    if (!cli_vocab_open(CMD, model, &v, NULL)) goto done;
    for (int i = 0; i < 3; i++) {
        gram_vocab_destroy(voc);
        voc = NULL;
        double t0 = cpu_now_s();
        if (make_vocab(v, &voc, &err) != KN_OK) {
            fprintf(stderr, "kiln " CMD ": %s: %s\n", model, err.msg);
            goto done;
        }
        double t = cpu_now_s() - t0;
        if (i == 0 || t < t_trie) t_trie = t;
    }

    /* 3. masks along a random walk */
    if (!walk(g, voc, v, (size_t)walk_steps, (uint64_t)seed, &ws, &err)) {
        fprintf(stderr, "kiln " CMD ": walk: %s\n", err.msg);
        goto done;
    }

    /* 4. decode, constrained vs free */
    if (!no_decode &&
        !decode(model, (int)threads, prompt, (int)n, repeats > 0 ? (int)repeats : 3, grammar, &ds, &err)) {
        fprintf(stderr, "kiln " CMD ": decode: %s\n", err.msg);
        goto done;
    }

    double ratio = ds.tps_free > 0 ? ds.tps_con / ds.tps_free : 0;
    if (json) {
        json_t *o = json_pack(
            "{s:s, s:s?, s:s?, s:I, s:I, s:I, s:f, s:f, s:f, s:{s:I, s:f, s:f, s:f, s:f, s:f, "
            "s:f, s:f, s:I}}",
            "model", model, "schema", schema_file, "grammar", grammar_file, "vocab",
            (json_int_t)gram_vocab_size(voc), "gbnf_bytes", (json_int_t)len, "rules", (json_int_t)n_rules,
            "convert_ms", t_convert * 1e3, "compile_ms", t_compile * 1e3, "trie_ms", t_trie * 1e3, "mask",
            "steps", (json_int_t)ws.steps, "mean_us", ws.mask_mean * 1e6, "p50_us", ws.mask_p50 * 1e6,
            "p99_us", ws.mask_p99 * 1e6, "max_us", ws.mask_max * 1e6, "allowed_mean", ws.allowed_mean,
            "token_ok_mean_us", ws.ok_mean * 1e6, "token_ok_p99_us", ws.ok_p99 * 1e6, "restarts",
            (json_int_t)ws.restarts);
        if (o && !no_decode)
            json_object_set_new(o, "decode",
                                json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}", "n_predict", (json_int_t)n,
                                          "n_free", (json_int_t)ds.n_free, "n_constrained",
                                          (json_int_t)ds.n_con, "free_tps", ds.tps_free, "constrained_tps",
                                          ds.tps_con, "ratio", ratio));
        char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("kiln bench grammar: %s, vocabulary %zu tokens\n", model, gram_vocab_size(voc));
        if (schema_file)
            printf("  %-22s %9.3f ms   (convert %.3f ms; %zu bytes of GBNF, %zu rules; median of %d)\n",
                   "schema -> compiled", t_compile * 1e3, t_convert * 1e3, gbnf_len, n_rules, n_rep);
        printf("  %-22s %9.1f ms\n", "token trie", t_trie * 1e3);
        printf("  %-22s %9.1f us mean  %9.1f us p50  %9.1f us p99  %9.1f us max   (%zu steps, %.0f tokens "
               "allowed on average)\n",
               "mask", ws.mask_mean * 1e6, ws.mask_p50 * 1e6, ws.mask_p99 * 1e6, ws.mask_max * 1e6, ws.steps,
               ws.allowed_mean);
        printf("  %-22s %9.2f us mean  %9.2f us p99\n", "gram_token_ok", ws.ok_mean * 1e6, ws.ok_p99 * 1e6);
        if (!no_decode)
            printf(
                "  %-22s %9.1f tok/s free (%zu tokens)  %9.1f tok/s constrained (%zu tokens)  ratio %.3f\n",
                "decode (median)", ds.tps_free, ds.n_free, ds.tps_con, ds.n_con, ratio);
    }
    rc = 0;
done:
    gram_destroy(g);
    gram_vocab_destroy(voc);
    tok_vocab_destroy(v);
    json_decref(schema);
    free(schema_text);
    free(gbnf);
    free(grammar);
    return rc;
}
