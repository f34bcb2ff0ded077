/*
 * main.c — `kiln` entry point: dispatches to the command named by argv[1].
 */
#include "cli.h"
#include "kiln/core.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command COMMANDS[] = {
    {"serve", cmd_serve, "serve models over HTTP (OpenAI- and Ollama-compatible APIs)"},
    {"run", cmd_run, "generate text from a prompt with a GGUF model"},
    {"eval", cmd_eval, "teacher-forced top-k logits of a prompt file, as JSON"},
    {"embed", cmd_embed, "embeddings of each line of a file with an encoder (bert) model"},
    {"info", cmd_info, "describe a GGUF file (architecture, quant mix, tokenizer)"},
    {"quantize", cmd_quantize, "quantize a GGUF model to another type (Q4_K_M, Q8_0, ...)"},
    {"tokenize", cmd_tokenize, "print the token ids of stdin"},
    {"detokenize", cmd_detokenize, "print the text of token ids read from stdin"},
    {"template", cmd_template, "render a chat template"},
    {"bench", cmd_bench, "benchmarks: kernels, model, tokenizer, embed, grammar, server"},
    {"pull", cmd_pull, "download a model's GGUF file from a Hugging Face-compatible hub"},
    {"ls", cmd_ls, "list the local models"},
    {"rm", cmd_rm, "remove a local model"},
    {"ps", cmd_ps, "list the models a running server has loaded"},
    {"cache", cmd_cache, "inspect or clear the on-disk response and embedding cache"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: kiln <command> [options]   (kiln <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nenvironment:\n  KILN_CPU=generic|avx2|avx512  force a kernel set\n"
               "  KILN_LOG=debug|info|warn|error  log threshold (default info)\n");
}

bool cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    return false;
}

bool cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

cli_stats cli_stats_of(const double *v, int n) {
    cli_stats s = {0, 0};
    for (int i = 0; i < n; i++) s.mean += v[i];
    s.mean /= n;
    for (int i = 0; i < n; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0.0;
    return s;
}

bool cli_parse_float(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

const char *cli_flag_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "kiln %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool cli_int_flag(const char *cmd, int argc, char **argv, int *i, long long lo, long long hi,
                  long long *out) {
    const char *flag = argv[*i], *v = cli_flag_value(cmd, argc, argv, i);
    if (!v) return false;
    if (!cli_parse_int(v, lo, hi, out)) {
        fprintf(stderr, "kiln %s: %s expects an integer in [%lld, %lld], got '%s'\n", cmd, flag, lo, hi, v);
        return false;
    }
    return true;
}

bool cli_read_file(const char *cmd, const char *path, size_t max_bytes, char **out, size_t *len) {
    kn_err err = {0};
    if (kn_read_file(path, max_bytes, out, len, &err) != KN_OK) {
        fprintf(stderr, "kiln %s: %s\n", cmd, err.msg);
        return false;
    }
    return true;
}

const char *cli_models_dir(const char *given) {
    const char *dir = given ? given : getenv("KILN_MODELS");
    return dir && *dir ? dir : "./models";
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
