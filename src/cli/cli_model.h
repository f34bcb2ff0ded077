/*
 * cli_model.h — the steps and flags shared by the commands that load a
 * model or a vocabulary (embed, eval, tokenize, detokenize and the in-process
 * benchmarks): the kernel set, a model, a vocabulary, --kv-type, and the
 * flags `kiln embed` and `kiln eval` have in common. Commands that touch no
 * model include only cli.h.
 *
 * Every helper prints its own one-line error as "kiln CMD: ..." (CMD is the
 * command's name, e.g. "eval" or "bench model") and reports failure to the
 * caller, which picks the exit status: 2 for a flag, 1 for the rest.
 */
#ifndef KILN_CLI_MODEL_H
#define KILN_CLI_MODEL_H

#include "kiln/model.h"
#include "kiln/tokenizer.h"

#include <stdbool.h>

/* Picks the kernel set (KILN_CPU or the best this CPU runs) into *lvl and
 * fills *ops for it. On failure prints "kiln CMD: <why>" and returns false. */
bool cli_kernels(const char *cmd, kn_cpu_level *lvl, tensor_ops *ops);

/* model_load(path, o); on failure prints "kiln CMD: PATH: <why>" and returns
 * false. *out is the caller's (model_destroy). */
bool cli_model_load(const char *cmd, const char *path, const model_load_opts *o, model **out);

/* The vocabulary of model m (loaded from path); on failure prints "kiln CMD:
 * PATH: tokenizer: <why>" and returns false. *out is the caller's. */
bool cli_model_vocab(const char *cmd, const char *path, const model *m, tok_vocab **out);

/* Opens the GGUF file at path, loads its vocabulary and closes the file
 * (model files and vocab-only files alike). *load_s, when not NULL, gets the
 * seconds tok_vocab_load took. On failure prints "kiln CMD: PATH: <why>" and
 * returns false. *out is the caller's (tok_vocab_destroy). */
bool cli_vocab_open(const char *cmd, const char *path, tok_vocab **out, double *load_s);

/* For `--kv-type T` at argv[*i]: reads T (advancing *i) and parses it. On a
 * missing or bad value prints the error and returns false (a usage error). */
bool cli_kv_type_flag(const char *cmd, int argc, char **argv, int *i, model_kv_type *out);

/* The flags `kiln embed` and `kiln eval` share. */
typedef struct cli_model_args {
    const char *model, *file; /* -m/--model FILE, -f/--file FILE; borrowed from argv */
    long long threads;        /* -t/--threads N, 1..1024 (default: online CPUs) */
    long long batch;          /* -b/--batch-size N, 1..65536 (the caller sets the default) */
    bool json;                /* --json */
    model_load_opts load;     /* --mmap */
} cli_model_args;

/* Takes argv[*i] when it is one of the flags above (advancing *i past a
 * value): returns 1 when it took it, 0 when argv[*i] is not one of them, -1
 * on a missing or bad value (printed as "kiln CMD: FLAG expects an integer
 * in [LO, HI], got 'V'"; a usage error). */
int cli_model_arg(const char *cmd, int argc, char **argv, int *i, cli_model_args *a);

#endif
