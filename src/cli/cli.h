/*
 * cli.h — the `kiln` command-line front end. Each command lives in
 * src/cli/cmd_<name>.c as `int cmd_<name>(int argc, char **argv)` where
 * argv[0] is the command name; it returns the process exit status
 * (0 ok, 1 bad input or failure, 2 usage error). Every command prints its
 * usage for -h/--help. Commands that take --json print only JSON on stdout;
 * logs and errors go to stderr.
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_cache(int argc, char **argv);

/* `kiln bench <scenario>` entry points (argv[0] is the scenario name), one
 * file each: src/cli/cmd_bench_<scenario>.c. They run in process, so they
 * live here and not in src/bench (an HTTP client only). */
int cmd_bench_kernels(int argc, char **argv);
int cmd_bench_tokenizer(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);
int cmd_bench_embed(int argc, char **argv);
int cmd_bench_grammar(int argc, char **argv);
/* Exit status 0 SLA PASS, 2 SLA FAIL, 1 run failed. */
int cmd_bench_server(int argc, char **argv);

/* A row of a dispatch table: `kiln NAME` (main.c) or `kiln bench NAME`
 * (cmd_bench.c). */
typedef struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} cli_command;

/* True when argv holds -h or --help. */
bool cli_wants_help(int argc, char **argv);
/* Parses a whole decimal integer in [lo, hi]; false otherwise. */
bool cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* Parses a finite float; false otherwise. */
bool cli_parse_float(const char *s, double *out);
/* Mean and sample standard deviation of v[0..n) (n >= 1; sd 0 when n is 1),
 * for the repetitions of a benchmark. */
typedef struct cli_stats {
    double mean, sd;
} cli_stats;
cli_stats cli_stats_of(const double *v, int n);
/* For flag parsing: returns argv[*i + 1] and advances *i, or prints
 * "kiln CMD: FLAG needs a value" and returns NULL. */
const char *cli_flag_value(const char *cmd, int argc, char **argv, int *i);
/* For an integer flag: its value (as cli_flag_value) parsed into *out within
 * [lo, hi], else prints "kiln CMD: FLAG expects an integer in [LO, HI], got
 * 'V'". False on either error (a usage error). */
bool cli_int_flag(const char *cmd, int argc, char **argv, int *i, long long lo, long long hi, long long *out);
/* kn_read_file(path, max_bytes): the whole file into *out (the caller
 * frees); on failure prints "kiln CMD: <why>" (the message names the file)
 * and returns false. */
bool cli_read_file(const char *cmd, const char *path, size_t max_bytes, char **out, size_t *len);
/* The model directory: `given` (--models DIR) when not NULL, else
 * $KILN_MODELS; "./models" when that is unset or empty. */
const char *cli_models_dir(const char *given);

#endif
