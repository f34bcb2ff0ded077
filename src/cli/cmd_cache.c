/*
 * cmd_cache.c — `kiln cache stats|clear`: the disk (L2) response and
 * embedding cache, offline (no server needed; safe while one runs, LMDB
 * serializes the writers). stats opens the store read-only, so it never
 * creates one; clear refuses a directory without a store.
 */
#include "cli.h"
#include "kiln/cache.h"
#include "kiln/server.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(
        f, "usage: kiln cache stats [--cache-dir DIR] [--json]\n"
           "       kiln cache clear [--cache-dir DIR] [--type response|embedding|all] [--model ID]\n\n"
           "The server's disk cache (L2: LMDB, zstd, checksummed), offline.\n\n"
           "  stats   per type: entries, bytes, and the store's lifetime hits, misses, hit_rate,\n"
           "          evictions, expirations and corrupt records\n"
           "  clear   removes entries and prints how many\n\n"
           "options:\n"
           "      --cache-dir DIR   the store (default $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln)\n"
           "      --json            stats: print {\"dir\", \"l2\": {\"response\": {...}, \"embedding\": "
           "{...}}}\n"
           "                        with the keys of the server's GET /cache/stats\n"
           "      --type TYPE       clear: response, embedding or all (default all)\n"
           "      --model ID        clear: only this model's entries. ID is the model's file id, the file's\n"
           "                        path under the models directory without .gguf (e.g. tiny-llama-Q4_K_M):\n"
           "                        the \"id\" of GET /api/ps, or the \"file\" of `kiln ls --json`\n");
}

static void human(uint64_t b, char *out, size_t cap) {
    static const char *const U[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 4)
        v /= 1024.0, u++;
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", v, U[u]);
}

static double hit_rate(const rc_stats *s) {
    uint64_t n = s->hits + s->misses;
    return n ? (double)s->hits / (double)n : 0.0;
}

static int do_stats(const char *dir, bool json) {
    rc_stats s[RC_NTYPES];
    kn_err err = {0};
    if (rc_disk_stats(dir, s, &err)) {
        fprintf(stderr, "kiln cache stats: %s\n", err.msg);
        return 1;
    }
    if (json) {
        json_t *l2 = json_object(), *root = json_pack("{s:s, s:o}", "dir", dir, "l2", l2);
        int bad = !root;
        for (int t = 0; !bad && t < RC_NTYPES; t++) {
            json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I}", "entries",
                                  (json_int_t)s[t].entries, "bytes", (json_int_t)s[t].bytes, "hits",
                                  (json_int_t)s[t].hits, "misses", (json_int_t)s[t].misses, "hit_rate",
                                  hit_rate(&s[t]), "evictions", (json_int_t)s[t].evictions, "expirations",
                                  (json_int_t)s[t].expirations, "corrupt", (json_int_t)s[t].corrupt);
            bad = !o || json_object_set_new(l2, rc_type_name((rc_type)t), o);
        }
        char *txt = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (!txt) {
            fprintf(stderr, "kiln cache stats: out of memory\n");
            return 1;
        }
        printf("%s\n", txt);
        free(txt);
        return 0;
    }
    printf("cache dir: %s\n", dir);
    printf("%-10s %10s %24s %10s %10s %8s %10s %11s %8s\n", "TYPE", "ENTRIES", "BYTES", "HITS", "MISSES",
           "HIT_RATE", "EVICTIONS", "EXPIRATIONS", "CORRUPT");
    for (int t = 0; t < RC_NTYPES; t++) {
        char h[32], bytes[64];
        human(s[t].bytes, h, sizeof h);
        snprintf(bytes, sizeof bytes, "%s (%llu)", h, (unsigned long long)s[t].bytes);
        printf("%-10s %10llu %24s %10llu %10llu %8.3f %10llu %11llu %8llu\n", rc_type_name((rc_type)t),
               (unsigned long long)s[t].entries, bytes, (unsigned long long)s[t].hits,
               (unsigned long long)s[t].misses, hit_rate(&s[t]), (unsigned long long)s[t].evictions,
               (unsigned long long)s[t].expirations, (unsigned long long)s[t].corrupt);
    }
    return 0;
}

static int do_clear(const char *dir, const char *type, const char *model) {
    bool all = !type || !strcmp(type, "all");
    rc_type t = RC_RESPONSE;
    if (!all && !rc_type_parse(type, &t)) {
        fprintf(stderr, "kiln cache clear: --type must be response, embedding or all, not '%s'\n", type);
        return 1;
    }
    char id[1024];
    uint64_t tag = 0;
    if (model) {
        size_t n = strlen(model);
        if (n > 5 && !strcmp(model + n - 5, ".gguf")) n -= 5; /* the file name is accepted too */
        if (!n || n >= sizeof id) {
            fprintf(stderr, "kiln cache clear: --model: empty or too long\n");
            return 1;
        }
        if (strchr(model, ':')) {
            fprintf(
                stderr,
                "kiln cache clear: --model takes the model's file id (e.g. tiny-llama-Q4_K_M: the \"id\" of "
                "/api/ps, the file name `kiln ls --json` shows without .gguf), not '%s'\n",
                model);
            return 1;
        }
        memcpy(id, model, n);
        id[n] = 0;
        tag = rc_model_tag(id);
    }
    /* a missing store is an error, not something to create */
    uint64_t removed = 0;
    kn_err err = {0};
    if (rc_disk_clear(dir, all, t, tag, &removed, &err)) {
        fprintf(stderr, "kiln cache clear: %s\n", err.msg);
        return 1;
    }
    printf("removed %llu entries (type %s%s%s) from %s\n", (unsigned long long)removed,
           all ? "all" : rc_type_name(t), model ? ", model " : "", model ? id : "", dir);
    return 0;
}

int cmd_cache(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    bool is_stats = !strcmp(sub, "stats"), is_clear = !strcmp(sub, "clear");
    if (!is_stats && !is_clear) {
        fprintf(stderr, "kiln cache: unknown subcommand '%s' (stats or clear)\n", sub);
        return 2;
    }
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *dir = NULL, *type = NULL, *model = NULL;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--cache-dir")) {
            if (!(dir = cli_flag_value("cache", argc, argv, &i))) return 2;
        } else if (is_stats && !strcmp(a, "--json")) {
            json = true;
        } else if (is_clear && !strcmp(a, "--type")) {
            if (!(type = cli_flag_value("cache", argc, argv, &i))) return 2;
        } else if (is_clear && !strcmp(a, "--model")) {
            if (!(model = cli_flag_value("cache", argc, argv, &i))) return 2;
        } else {
            fprintf(stderr, "kiln cache %s: unknown argument '%s' (see kiln cache --help)\n", sub, a);
            return 2;
        }
    }
    char *def = NULL;
    if (!dir || !*dir) {
        if (!(def = srv_default_cache_dir())) {
            fprintf(stderr,
                    "kiln cache %s: no --cache-dir, and neither XDG_CACHE_HOME nor HOME is an absolute "
                    "path\n",
                    sub);
            return 1;
        }
        dir = def;
    }
    int rc = is_stats ? do_stats(dir, json) : do_clear(dir, type, model);
    free(def);
    return rc;
}
