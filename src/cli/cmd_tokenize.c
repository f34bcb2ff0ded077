/*
 * cmd_tokenize.c — `kiln tokenize -m FILE.gguf [--raw]`: reads stdin verbatim
 * to EOF and prints the token ids on one line, separated by spaces. Without
 * --raw the model's add-BOS/EOS rules apply and special-token text is parsed;
 * with --raw neither. Works on vocab-only GGUF files.
 */
#include "cli.h"
#include "cli_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln tokenize -m FILE.gguf [--raw]\n\n"
               "Reads stdin to EOF (every byte, no newline stripped) and prints the token ids\n"
               "on one line, separated by spaces.\n\n"
               "  -m, --model FILE  a GGUF model or vocab-only file\n"
               "  --raw             no BOS/EOS added and special-token text not parsed\n");
}

/* Reads all of stdin into a malloc'd buffer (bounded by TOK_MAX_INPUT). */
static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            if (cap >= TOK_MAX_INPUT) { free(buf); return NULL; }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
    }
    if (ferror(stdin)) { free(buf); return NULL; }
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { usage(stdout); return 0; }
    const char *model = NULL;
    bool raw = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model = cli_flag_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--raw")) {
            raw = true;
        } else {
            fprintf(stderr, "kiln tokenize: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "kiln tokenize: -m FILE.gguf is required\n"); usage(stderr); return 2; }
    kn_err err = {0};
    tok_vocab *v = NULL;
    if (!cli_vocab_open("tokenize", model, &v, NULL)) return 1;
    size_t len = 0;
    char *text = read_stdin(&len);
    if (!text) { fprintf(stderr, "kiln tokenize: cannot read stdin (error or more than %zu bytes)\n", TOK_MAX_INPUT); tok_vocab_destroy(v); return 1; }
    tok_encoder *e = tok_encoder_create(v);
    size_t n = 0;
    int rc = 0;
    if (!e || tok_encoder_encode(e, text, len, !raw, !raw, NULL, 0, &n, &err) != KN_OK) {
        fprintf(stderr, "kiln tokenize: %s\n", e ? err.msg : "out of memory");
        rc = 1;
    } else {
        const int32_t *ids = tok_encoder_ids(e, &n);
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (fflush(stdout) != 0) rc = 1;
    }
    tok_encoder_destroy(e);
    free(text);
    tok_vocab_destroy(v);
    return rc;
}
