/*
 * cmd_ls.c — `kiln ls [--models DIR] [--json]`: the GGUF models of the model
 * directory with their quantization (from the file name suffix, else from
 * general.file_type or the dominant tensor type), size and modification time.
 */
#include "cli.h"
#include "kiln/store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kiln ls [--models DIR] [--json]\n\n"
        "Lists the *.gguf models of DIR (default $KILN_MODELS, else ./models): the name `kiln rm` takes\n"
        "(NAME:QUANT for files named NAME-QUANT.gguf), the quantization, the size and the modification\n"
        "time.\n\n"
        "  --models DIR   model directory\n"
        "  --json         print {\"models\": [{\"name\", \"model\", \"file\", \"quantization\", \"size\",\n"
        "                 \"modified\", \"mtime\"}]} instead of a table\n");
}

static void human_size(uint64_t b, char *out, size_t cap) {
    static const char *const U[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", v, U[u]);
}

int cmd_ls(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *dir = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models")) {
            if (!(dir = cli_flag_value("ls", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "kiln ls: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    dir = cli_models_dir(dir);
    kn_err err = {0};
    store_list l;
    if (store_list_dir(dir, &l, &err)) {
        fprintf(stderr, "kiln ls: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *arr = json_array(), *root = json_pack("{s:s, s:o}", "dir", dir, "models", arr);
        for (size_t i = 0; root && i < l.n; i++) {
            const store_entry *e = &l.v[i];
            char when[32];
            struct tm tm;
            gmtime_r(&e->mtime, &tm);
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:I, s:s, s:I}", "name", e->ref, "model",
                                  e->name, "file", e->file, "quantization", e->quant[0] ? e->quant : NULL,
                                  "quantization_source", e->quant_from_name ? "name" : "gguf", "size",
                                  (json_int_t)e->size, "modified", when, "mtime", (json_int_t)e->mtime);
            if (!o || json_array_append_new(arr, o)) {
                rc = 1;
                break;
            }
        }
        char *s = root && !rc ? json_dumps(root, JSON_INDENT(2)) : NULL;
        if (s)
            printf("%s\n", s);
        else {
            fprintf(stderr, "kiln ls: out of memory\n");
            rc = 1;
        }
        free(s);
        json_decref(root);
    } else {
        size_t w = 4;
        for (size_t i = 0; i < l.n; i++)
            if (strlen(l.v[i].ref) > w) w = strlen(l.v[i].ref);
        printf("%-*s  %-8s  %10s  %s\n", (int)w, "NAME", "QUANT", "SIZE", "MODIFIED");
        for (size_t i = 0; i < l.n; i++) {
            const store_entry *e = &l.v[i];
            char size[32], when[32];
            struct tm tm;
            localtime_r(&e->mtime, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
            human_size(e->size, size, sizeof size);
            printf("%-*s  %-8s  %10s  %s\n", (int)w, e->ref, e->quant[0] ? e->quant : "?", size, when);
        }
        if (!l.n) fprintf(stderr, "kiln ls: no models in %s\n", dir);
    }
    store_list_free(&l);
    return rc;
}
