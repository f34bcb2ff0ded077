/*
 * cmd_detokenize.c — `kiln detokenize -m FILE.gguf`: reads whitespace-
 * separated token ids on stdin and writes the text's raw bytes (control
 * tokens render as nothing, no U+FFFD replacement, no space clean-up). Works
 * on vocab-only GGUF files. A bad id is an error (exit 1).
 */
#include "cli.h"
#include "cli_model.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln detokenize -m FILE.gguf [--special] [--keep-space]\n\n"
               "Reads whitespace-separated token ids on stdin and writes the decoded bytes.\n\n"
               "  -m, --model FILE  a GGUF model or vocab-only file\n"
               "  --special         render control tokens (e.g. <s>) as their text\n"
               "  --keep-space      keep the leading space SentencePiece adds (default: removed)\n");
}

int cmd_detokenize(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { usage(stdout); return 0; }
    const char *model = NULL;
    tok_decoder_opts o = {.special = false, .strip_space = true, .replace_invalid = false};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model = cli_flag_value("detokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--special")) {
            o.special = true;
        } else if (!strcmp(argv[i], "--keep-space")) {
            o.strip_space = false;
        } else {
            fprintf(stderr, "kiln detokenize: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "kiln detokenize: -m FILE.gguf is required\n"); usage(stderr); return 2; }
    kn_err err = {0};
    tok_vocab *v = NULL;
    if (!cli_vocab_open("detokenize", model, &v, NULL)) return 1;
    tok_decoder *d = tok_decoder_create(v, &o);
    if (!d) { fprintf(stderr, "kiln detokenize: out of memory\n"); tok_vocab_destroy(v); return 1; }
    int rc = 0;
    char word[64];
    size_t wl = 0;
    size_t index = 0;
    for (;;) {
        int c = getchar();
        if (c != EOF && !isspace(c)) {
            if (wl + 1 >= sizeof word) { fprintf(stderr, "kiln detokenize: token %zu: not an id\n", index); rc = 1; break; }
            word[wl++] = (char)c;
            continue;
        }
        if (wl) {
            word[wl] = 0;
            long long id;
            if (!cli_parse_int(word, 0, INT32_MAX, &id) || id >= tok_n_vocab(v)) {
                fprintf(stderr, "kiln detokenize: token %zu: '%s' is not a token id of this vocab (0..%d)\n", index, word,
                        tok_n_vocab(v) - 1);
                rc = 1;
                break;
            }
            const char *p;
            size_t pl;
            if (tok_decoder_feed(d, (int32_t)id, &p, &pl, &err) != KN_OK) { fprintf(stderr, "kiln detokenize: %s\n", err.msg); rc = 1; break; }
            fwrite(p, 1, pl, stdout);
            wl = 0;
            index++;
        }
        if (c == EOF) break;
    }
    if (!rc) {
        const char *p;
        size_t pl;
        tok_decoder_flush(d, &p, &pl);
        fwrite(p, 1, pl, stdout);
    }
    if (fflush(stdout) != 0) rc = 1;
    tok_decoder_destroy(d);
    tok_vocab_destroy(v);
    return rc;
}
