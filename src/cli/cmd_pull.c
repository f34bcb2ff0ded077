/*
 * cmd_pull.c — `kiln pull OWNER/NAME[:QUANT] [--from URL] [--models DIR]`:
 * downloads the one GGUF file of that quantization from a Hugging
 * Face-compatible hub into the model directory as <NAME>-<QUANT>.gguf
 * (src/store/store.h has the protocol, the checks and the resume rules).
 */
#include "cli.h"
#include "kiln/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kiln pull OWNER/NAME[:QUANT] [--from URL] [--models DIR] [-q]\n\n"
        "Downloads only the GGUF file of quantization QUANT (default " STORE_DEFAULT_QUANT
        ", matched case-insensitively\n"
        "in the repository's file names, e.g. *-Q4_K_M.gguf or *.q4_k_m.gguf) into DIR as NAME-QUANT.gguf.\n"
        "An interrupted download is kept as DIR/.NAME-QUANT.gguf.part and resumed by the next pull (HTTP\n"
        "Range). The file is checked against the hub's sha256 when it gives one, and must open as GGUF;\n"
        "it gets its final name only then.\n\n"
        "  --from URL     hub base URL (default $" STORE_HUB_ENV ", else " STORE_DEFAULT_HUB ")\n"
        "  --models DIR   model directory, created if missing (default $KILN_MODELS, else ./models)\n"
        "  -q, --quiet    no progress line\n\n"
        "Prints the path of the model file on stdout. Exit status: 0 ok, 1 failure, 2 usage error.\n");
}

int cmd_pull(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *refs = NULL, *hub = NULL, *dir = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--from")) {
            if (!(hub = cli_flag_value("pull", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--models")) {
            if (!(dir = cli_flag_value("pull", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln pull: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (refs) {
            fprintf(stderr, "kiln pull: one model at a time (got '%s' and '%s')\n", refs, a);
            return 2;
        } else
            refs = a;
    }
    if (!refs) {
        usage(stderr);
        return 2;
    }
    dir = cli_models_dir(dir);
    kn_err err = {0};
    store_ref ref;
    if (store_ref_parse(refs, &ref, &err)) {
        fprintf(stderr, "kiln pull: %s\n", err.msg);
        return 2;
    }
    if (store_global_init(&err)) {
        fprintf(stderr, "kiln pull: %s\n", err.msg);
        return 1;
    }
    store_pull_opts o = {.hub = hub, .models_dir = dir, .progress = !quiet};
    store_pull_result r;
    kn_status st = store_pull(&ref, &o, &r, &err);
    store_global_cleanup();
    if (st) {
        fprintf(stderr, "kiln pull: %s\n", err.msg);
        return 1;
    }
    if (r.up_to_date)
        fprintf(stderr, "kiln pull: %s:%s is up to date (%s, %s)\n", ref.repo, ref.quant, r.path,
                r.verified ? "sha256 verified" : "same size; the hub gives no sha256");
    else
        fprintf(stderr, "kiln pull: %s:%s -> %s (%s, %.1f MiB%s, %s)\n", ref.repo, ref.quant, r.path,
                r.remote_file, (double)r.size / (1024.0 * 1024.0), r.resumed_from ? ", resumed" : "",
                r.verified ? "sha256 verified" : "not verified: the hub gives no sha256");
    printf("%s\n", r.path);
    return 0;
}
