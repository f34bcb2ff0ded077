/*
 * cmd_quantize.c — `kiln quantize IN.gguf OUT.gguf TYPE [--threads N]`:
 * rewrites a model with one of llama.cpp's quantization mixes (the rules
 * live in src/gguf/quantize.c, see kiln/gguf.h), streaming tensors to
 * the output, with a progress line and a size summary on stderr.
 */
#include "cli.h"

#include "kiln/gguf.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln quantize IN.gguf OUT.gguf TYPE [--threads N]\n\n"
            "Quantizes a GGUF model (F32/F16/BF16 weights; quantized inputs are requantized\n"
            "with a warning) using llama.cpp's type mixes: the _M mixes keep output.weight\n"
            "and part of attn_v/ffn_down at higher precision, rows that do not divide into\n"
            "256-wide super-blocks fall back to a legacy type, 1-D tensors are kept.\n\n"
            "  TYPE          one of: %s\n"
            "  --threads N   worker threads (default: all CPUs)\n",
            gguf_ftype_names());
}

int cmd_quantize(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    long long threads = kn_default_threads();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") || !strcmp(argv[i], "-t")) {
            const char *v = cli_flag_value("quantize", argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_int(v, 1, 1024, &threads)) {
                fprintf(stderr, "kiln quantize: --threads wants an integer in 1..1024, got '%s'\n", v);
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "kiln quantize: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "kiln quantize: too many arguments\n");
            usage(stderr);
            return 2;
        }
    }
    if (npos != 3) {
        usage(stderr);
        return 2;
    }
    gguf_ftype ft;
    if (!gguf_ftype_parse(pos[2], &ft)) {
        fprintf(stderr, "kiln quantize: unknown TYPE '%s'; expected one of: %s\n", pos[2], gguf_ftype_names());
        return 2;
    }
    gguf_quantize_stats st;
    kn_err err = {0};
    double t0 = kn_now_s();
    if (gguf_quantize_file(pos[0], pos[1], ft, (int)threads, true, &st, &err) != KN_OK) {
        fprintf(stderr, "kiln quantize: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "kiln quantize: %s -> %s (%s): %lld tensors, %lld quantized", pos[0], pos[1], gguf_ftype_name(ft),
            (long long)st.n_tensors, (long long)st.n_quantized);
    if (st.n_fallback) fprintf(stderr, " (%lld with fallback types)", (long long)st.n_fallback);
    if (st.n_requantized) fprintf(stderr, ", %lld requantized from quantized input", (long long)st.n_requantized);
    fprintf(stderr, ", %.1fs\n  size %.2f MiB -> %.2f MiB (%.1f%%)\n  types:", kn_now_s() - t0,
            (double)st.in_bytes / 1048576.0, (double)st.out_bytes / 1048576.0,
            st.in_bytes ? 100.0 * (double)st.out_bytes / (double)st.in_bytes : 0.0);
    for (int t = 0; t < Q_TYPE_COUNT; t++)
        if (st.type_counts[t]) fprintf(stderr, " %s:%llu", q_type_name((uint32_t)t), (unsigned long long)st.type_counts[t]);
    fputc('\n', stderr);
    return 0;
}
