/*
 * cli_model.c — the steps and flags shared by the commands that load a model
 * or a vocabulary; see cli_model.h.
 */
#include "kiln/gguf.h"
#include "cli_model.h"

#include "cli.h"

#include <stdio.h>
#include <string.h>

bool cli_kernels(const char *cmd, kn_cpu_level *lvl, tensor_ops *ops) {
    kn_err err = {0};
    if (kn_cpu_select(lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln %s: %s\n", cmd, err.msg);
        return false;
    }
    tensor_ops_init(ops, *lvl);
    return true;
}

bool cli_model_load(const char *cmd, const char *path, const model_load_opts *o, model **out) {
    kn_err err = {0};
    if (model_load(path, o, out, &err) != KN_OK) {
        fprintf(stderr, "kiln %s: %s: %s\n", cmd, path, err.msg);
        return false;
    }
    return true;
}

bool cli_model_vocab(const char *cmd, const char *path, const model *m, tok_vocab **out) {
    kn_err err = {0};
    if (tok_vocab_load(m->gguf, out, &err) != KN_OK) {
        fprintf(stderr, "kiln %s: %s: tokenizer: %s\n", cmd, path, err.msg);
        return false;
    }
    return true;
}

bool cli_vocab_open(const char *cmd, const char *path, tok_vocab **out, double *load_s) {
    kn_err err = {0};
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, &err) != KN_OK) {
        fprintf(stderr, "kiln %s: %s: %s\n", cmd, path, err.msg);
        return false;
    }
    double t0 = kn_now_s();
    kn_status st = tok_vocab_load(g, out, &err);
    if (load_s) *load_s = kn_now_s() - t0;
    gguf_close(g);
    if (st != KN_OK) {
        fprintf(stderr, "kiln %s: %s: %s\n", cmd, path, err.msg);
        return false;
    }
    return true;
}

bool cli_kv_type_flag(const char *cmd, int argc, char **argv, int *i, model_kv_type *out) {
    const char *v = cli_flag_value(cmd, argc, argv, i);
    if (!v) return false;
    if (!model_kv_type_parse(v, out)) {
        fprintf(stderr, "kiln %s: --kv-type expects f16 or q8_0, got '%s'\n", cmd, v);
        return false;
    }
    return true;
}

int cli_model_arg(const char *cmd, int argc, char **argv, int *i, cli_model_args *a) {
    const char *f = argv[*i];
    if (!strcmp(f, "-m") || !strcmp(f, "--model"))
        return (a->model = cli_flag_value(cmd, argc, argv, i)) ? 1 : -1;
    if (!strcmp(f, "-f") || !strcmp(f, "--file"))
        return (a->file = cli_flag_value(cmd, argc, argv, i)) ? 1 : -1;
    if (!strcmp(f, "-t") || !strcmp(f, "--threads"))
        return cli_int_flag(cmd, argc, argv, i, 1, 1024, &a->threads) ? 1 : -1;
    if (!strcmp(f, "-b") || !strcmp(f, "--batch-size"))
        return cli_int_flag(cmd, argc, argv, i, 1, 65536, &a->batch) ? 1 : -1;
    if (!strcmp(f, "--json"))
        a->json = true;
    else if (!strcmp(f, "--mmap"))
        a->load.mmap_weights = true;
    else
        return 0;
    return 1;
}
