/*
 * cmd_run.c — `kiln run`: one generation through the same session the
 * server uses (kiln/engine.h): the model is served from a registry of
 * one file with one slot, the prompt goes through the chat template or
 * the tokenizer there, and the text streams to stdout as the engine
 * produces it. There is no token loop here.
 */
#include "cli.h"
#include "kiln/engine.h"
#include "kiln/model.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln run -m FILE.gguf (-p TEXT | -f FILE) [options]\n\n"
            "Generates text from a prompt and streams it (not the prompt) to stdout.\n"
            "Timings go to stderr.\n\n"
            "options:\n"
            "  -m, --model FILE       GGUF model\n"
            "  -p, --prompt TEXT      prompt text\n"
            "  -f, --file FILE        read the prompt from a file (verbatim)\n"
            "  -n, --n-predict N      tokens to generate (default 128; -1 = until EOS or context end)\n"
            "  -c, --ctx-size N       context size (default: the model's, at most 4096)\n"
            "  -t, --threads N        threads (default: online CPUs)\n"
            "  -b, --batch-size N     prefill chunk size (default 512)\n"
            "      --kv-type T        KV cache type: f16 (default) or q8_0 (8-bit, 59%% of the memory)\n"
            "      --mmap             compute from the file mapping instead of a copy in huge pages\n"
            "                         (less memory and faster load; slower decode)\n"
            "      --temp T           temperature (default 0.8; 0 = greedy)\n"
            "      --top-k K          top-k (default 40; 0 = off)\n"
            "      --top-p P          top-p (default 0.95; 1 = off)\n"
            "      --min-p P          min-p (default 0.05; 0 = off)\n"
            "      --typical P        typical-p (default 1 = off)\n"
            "      --repeat-penalty X repetition penalty (default 1 = off)\n"
            "      --repeat-last-n N  tokens the penalties look back on (default 64)\n"
            "      --presence-penalty X, --frequency-penalty X\n"
            "  -s, --seed S           RNG seed (default 0x5eed)\n"
            "      --chat             format the prompt with the model's chat template, as one user message\n"
            "      --stop TEXT        stop when TEXT is generated (not printed); repeatable, up to 16\n"
            "      --ignore-eos       keep generating past end-of-generation tokens\n"
            "      --grammar FILE     constrain the output to the GBNF grammar in FILE (docs/grammar.md);\n"
            "                         generation stops when the grammar is complete\n"
            "      --json-schema FILE constrain the output to JSON valid against the JSON Schema in FILE\n"
            "                         (docs/grammar.md, JSON Schema)\n");
}


typedef struct run_opts {
    const char *model_path, *prompt, *prompt_file, *grammar_file, *schema_file;
    long long n_predict, n_ctx, threads, batch;
    bool ignore_eos, chat;
    model_kv_type kv_type;
    bool mmap;
    const char *stops[ENG_STOP_MAX + 1];
    size_t n_stops;
    eng_sampler_params sp;
} run_opts;

/* Parses the flags into o; 0 when fine, else the exit status (2). */
static int parse_flags(int argc, char **argv, run_opts *o) {
    *o = (run_opts){.n_predict = 128, .threads = kn_default_threads(), .batch = 512, .kv_type = MODEL_KV_F16,
                    .sp = eng_sampler_defaults()};
    eng_sampler_params sp = o->sp;
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *grammar_file = NULL, *schema_file = NULL;
    long long n_predict = o->n_predict, n_ctx = 0, threads = o->threads, batch = o->batch;
    bool ignore_eos = false, chat = false;
    model_kv_type kv_type = MODEL_KV_F16;
    bool mmap = false;
    const char **stops = o->stops;
    size_t n_stops = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long iv;
        double fv;
#define VAL()                                                                                                  \
    do {                                                                                                       \
        if (!(v = cli_flag_value("run", argc, argv, &i))) return 2;                                            \
    } while (0)
#define INT(lo, hi, dst)                                                                                       \
    do {                                                                                                       \
        VAL();                                                                                                 \
        if (!cli_parse_int(v, lo, hi, &iv)) {                                                                  \
            fprintf(stderr, "kiln run: %s expects an integer in [%lld, %lld], got '%s'\n", a, (long long)(lo), \
                    (long long)(hi), v);                                                                       \
            return 2;                                                                                          \
        }                                                                                                      \
        dst = iv;                                                                                              \
    } while (0)
#define FLT(dst)                                                                                               \
    do {                                                                                                       \
        VAL();                                                                                                 \
        if (!cli_parse_float(v, &fv)) {                                                                        \
            fprintf(stderr, "kiln run: %s expects a number, got '%s'\n", a, v);                                \
            return 2;                                                                                          \
        }                                                                                                      \
        dst = (float)fv;                                                                                       \
    } while (0)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model_path = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); prompt_file = v; }
        else if (!strcmp(a, "--grammar")) { VAL(); grammar_file = v; }
        else if (!strcmp(a, "--json-schema")) { VAL(); schema_file = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) INT(-1, 1 << 24, n_predict);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) INT(0, 1 << 24, n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT(1, 1024, threads);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) INT(1, 65536, batch);
        else if (!strcmp(a, "--temp")) FLT(sp.temp);
        else if (!strcmp(a, "--top-k")) INT(0, 1 << 24, sp.top_k);
        else if (!strcmp(a, "--top-p")) FLT(sp.top_p);
        else if (!strcmp(a, "--min-p")) FLT(sp.min_p);
        else if (!strcmp(a, "--typical")) FLT(sp.typical_p);
        else if (!strcmp(a, "--repeat-penalty")) FLT(sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n")) INT(0, 1 << 20, sp.penalty_last_n);
        else if (!strcmp(a, "--presence-penalty")) FLT(sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty")) FLT(sp.frequency_penalty);
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) { INT(0, INT64_MAX, iv); sp.seed = (uint64_t)iv; }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = true;
        else if (!strcmp(a, "--chat")) chat = true;
        else if (!strcmp(a, "--mmap")) mmap = true;
        else if (!strcmp(a, "--stop")) {
            VAL();
            if (n_stops == ENG_STOP_MAX) {
                fprintf(stderr, "kiln run: at most %d --stop strings\n", ENG_STOP_MAX);
                return 2;
            }
            stops[n_stops++] = v;
        }
        else if (!strcmp(a, "--kv-type")) {
            VAL();
            if (!model_kv_type_parse(v, &kv_type)) {
                fprintf(stderr, "kiln run: --kv-type expects f16 or q8_0, got '%s'\n", v);
                return 2;
            }
        }
        else {
            fprintf(stderr, "kiln run: unknown option '%s' (see kiln run --help)\n", a);
            return 2;
        }
#undef VAL
#undef INT
#undef FLT
    }
    if (!model_path || (!prompt && !prompt_file) || (prompt && prompt_file)) {
        fprintf(stderr, "kiln run: needs -m FILE and one of -p TEXT or -f FILE (see kiln run --help)\n");
        return 2;
    }
    o->model_path = model_path, o->prompt = prompt, o->prompt_file = prompt_file, o->grammar_file = grammar_file;
    o->schema_file = schema_file;
    o->n_predict = n_predict, o->n_ctx = n_ctx, o->threads = threads, o->batch = batch;
    o->ignore_eos = ignore_eos, o->chat = chat, o->kv_type = kv_type, o->mmap = mmap;
    o->n_stops = n_stops;
    o->sp = sp;
    return 0;
}

/* The context: -c, else the model's, at most 4096; never past the model's. */
static int choose_ctx(eng_service *svc, const run_opts *o, kn_err *err) {
    const rt_front *f = NULL;
    kn_status st = rt_front_acquire(eng_service_registry(svc), eng_service_default_model(svc), &f, err);
    if (st != KN_OK) return -1;
    long long train = f->ctx_train, n_ctx = o->n_ctx;
    if (f->chat && o->chat) KN_INFO("chat template: %s", f->chat_source ? f->chat_source : "model");
    bool chat_ok = f->chat != NULL || !o->chat;
    if (!chat_ok) kn_fail(err, KN_EINVAL, "chat template: %s", f->chat_err);
    rt_front_release(eng_service_registry(svc), f);
    if (!chat_ok) return -1;
    if (n_ctx == 0) n_ctx = train > 0 && train < 4096 ? train : 4096;
    if (train > 0 && n_ctx > train) {
        KN_WARN("context %lld exceeds the model's trained context %lld; using %lld", n_ctx, train, train);
        n_ctx = train;
    }
    return (int)n_ctx;
}

/* Streams the answer to stdout; false on a failed generation. */
static bool stream_out(eng_gen *g, eng_req_result *res) {
    char last = '\n';
    bool wrote = false;
    for (;;) {
        const char *text;
        size_t n, nev;
        const eng_tok_event *ev;
        eng_read_status rs = eng_gen_read(g, &text, &n, &ev, &nev, res);
        if (rs == ENG_READ_DONE) break;
        if (rs == ENG_READ_NONE) {
            eng_gen_wait(g, -1);
            continue;
        }
        if (n) {
            fwrite(text, 1, n, stdout);
            fflush(stdout);
            last = text[n - 1];
            wrote = true;
        }
    }
    if (wrote && last != '\n') fputc('\n', stdout);
    fflush(stdout);
    return res->finish == ENG_FINISH_STOP || res->finish == ENG_FINISH_LENGTH;
}

int cmd_run(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    run_opts o;
    int urc = parse_flags(argc, argv, &o);
    if (urc) return urc;
    int rc = 1;
    kn_err err = {0};
    char *file_prompt = NULL, *grammar = NULL;
    size_t prompt_len = 0, grammar_len = 0;
    eng_service *svc = NULL;
    eng_gen *g = NULL;
    json_t *msgs = NULL, *schema = NULL;
    if (o.prompt_file) {
        if (kn_read_file(o.prompt_file, 64u << 20, &file_prompt, &prompt_len, &err) != KN_OK) {
            fprintf(stderr, "kiln run: %s\n", err.msg);
            return 1;
        }
        o.prompt = file_prompt;
    } else {
        prompt_len = strlen(o.prompt);
    }
    if (o.grammar_file) {
        if (kn_read_file(o.grammar_file, 1u << 20, &grammar, &grammar_len, &err) != KN_OK) {
            fprintf(stderr, "kiln run: %s\n", err.msg);
            goto done;
        }
        if (strlen(grammar) != grammar_len) {
            fprintf(stderr, "kiln run: %s: the grammar contains a NUL byte\n", o.grammar_file);
            goto done;
        }
    }
    if (o.schema_file) {
        json_error_t je;
        if (!(schema = json_load_file(o.schema_file, JSON_REJECT_DUPLICATES, &je))) {
            fprintf(stderr, "kiln run: %s:%d:%d: %s\n", o.schema_file, je.line, je.column, je.text);
            goto done;
        }
    }
    kn_cpu_level lvl;
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s\n", err.msg);
        goto done;
    }
    tensor_ops ops;
    tensor_ops_init(&ops, lvl);
    eng_service_opts so = {.model_file = o.model_path, .ops = &ops, .default_max_tokens = (int32_t)o.n_predict,
                           .rt = {.threads = (int)o.threads, .n_slots = 1, .max_batch = (int)o.batch,
                                  .kv_type = o.kv_type, .mmap_weights = o.mmap, .keep_alive_s = -1,
                                  .spec = ENG_SPEC_NONE}};
    if (eng_service_create(&so, &svc, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s\n", err.msg);
        goto done;
    }
    int n_ctx = choose_ctx(svc, &o, &err);
    if (n_ctx < 0) {
        fprintf(stderr, "kiln run: %s: %s\n", o.model_path, err.msg);
        goto done;
    }
    if (o.chat && !(msgs = json_pack("[{s:s, s:s%}]", "role", "user", "content", o.prompt, prompt_len))) goto done;
    eng_gen_request q = {.messages = msgs, .prompt = o.prompt, .prompt_len = prompt_len, .add_special = true,
                         .prompt_param = "prompt", .sp = o.sp, .seed_set = true, .n_predict = (int32_t)o.n_predict,
                         .n_predict_set = true, .ignore_eos = o.ignore_eos, .stops = o.stops, .n_stops = o.n_stops,
                         .n_logprobs = -1, .num_ctx = n_ctx, .keep_alive_s = NAN, .spec = ENG_SPEC_NONE,
                         .t_origin = kn_now_s(), .grammar = grammar, .json_schema = schema,
                         .json_schema_param = "--json-schema"};
    eng_error e;
    if (!eng_gen_start(svc, &q, &g, &e)) {
        if (!strcmp(e.param, "grammar") && o.grammar_file) fprintf(stderr, "kiln run: %s: %s\n", o.grammar_file, e.msg);
        else if (!strcmp(e.param, "--json-schema")) fprintf(stderr, "kiln run: %s: %s\n", o.schema_file, e.msg);
        else fprintf(stderr, "kiln run: %s\n", e.msg);
        goto done;
    }
    eng_req_result res;
    if (!stream_out(g, &res)) {
        fprintf(stderr, "\nkiln run: %s\n", res.err[0] ? res.err : "generation failed");
        goto done;
    }
    double t_prompt = res.t_first > res.t_start ? res.t_first - res.t_start : 0;
    double t_gen = res.t_end > res.t_first && res.t_first > 0 ? res.t_end - res.t_first : 0;
    fprintf(stderr,
            "kiln run: load %.2f s | prompt %zu tokens in %.3f s (%.1f tok/s) | generated %zu tokens in %.3f s "
            "(%.1f tok/s)\n",
            eng_gen_get_info(g)->load_s, res.n_prompt, t_prompt, t_prompt > 0 ? (double)res.n_prompt / t_prompt : 0.0,
            res.n_gen, t_gen, t_gen > 0 ? (double)res.n_gen / t_gen : 0.0);
    rc = 0;
done:
    eng_gen_close(g);
    json_decref(msgs);
    json_decref(schema);
    eng_service_destroy(svc);
    free(file_prompt);
    free(grammar);
    return rc;
}
