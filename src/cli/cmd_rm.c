/*
 * cmd_rm.c — `kiln rm NAME... [--models DIR]`: deletes model files of the
 * model directory. NAME is a name `kiln ls` shows: NAME:QUANT for
 * NAME-QUANT.gguf, or a file stem for NAME.gguf. Only files found in the
 * directory listing can be named, so nothing outside it is reachable.
 */
#include "cli.h"
#include "kiln/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln rm NAME... [--models DIR]\n\n"
            "Removes models from DIR (default $KILN_MODELS, else ./models). NAME is as `kiln ls` prints it:\n"
            "NAME:QUANT removes NAME-QUANT.gguf (QUANT case-insensitive), NAME removes NAME.gguf.\n"
            "An unknown name is an error that lists the models present; nothing is removed then.\n");
}

int cmd_rm(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *dir = NULL;
    const char **names = calloc((size_t)argc, sizeof *names);
    size_t n = 0;
    if (!names) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models")) {
            if (!(dir = cli_flag_value("rm", argc, argv, &i))) goto usage_err;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "kiln rm: unknown option %s\n", argv[i]);
            usage(stderr);
            goto usage_err;
        } else
            names[n++] = argv[i];
    }
    if (!n) {
        usage(stderr);
        goto usage_err;
    }
    dir = cli_models_dir(dir);
    kn_err err = {0};
    store_list l;
    if (store_list_dir(dir, &l, &err)) {
        fprintf(stderr, "kiln rm: %s\n", err.msg);
        free(names);
        return 1;
    }
    int rc = 0;
    size_t *idx = calloc(n, sizeof *idx);
    if (!idx) rc = 1;
    for (size_t k = 0; k < n && !rc; k++) /* resolve every name before removing any */
        if (store_resolve_local(&l, names[k], &idx[k], &err)) {
            fprintf(stderr, "kiln rm: %s\n", err.msg);
            rc = 1;
        }
    for (size_t k = 0; k < n && !rc; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, l.v[idx[k]].file);
        if (unlink(path) && errno != ENOENT) {
            fprintf(stderr, "kiln rm: cannot remove %s: %s\n", path, strerror(errno));
            rc = 1;
        } else
            fprintf(stderr, "kiln rm: removed %s\n", path);
    }
    free(idx);
    store_list_free(&l);
    free(names);
    return rc;
usage_err:
    free(names);
    return 2;
}
