/*
 * cmd_bench.c — `kiln bench <scenario>`: dispatches to the benchmark
 * scenarios. Benchmarks measure; they never assert speed.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const cli_command SCENARIOS[] = {
    {"kernels", cmd_bench_kernels, "matvec/matmul GB/s and GFLOP/s per type and kernel set"},
    {"model", cmd_bench_model, "prefill, decode and batched decode tok/s of a model, vs the bandwidth roofline"},
    {"embed", cmd_bench_embed, "texts/s and tokens/s of an embedding (encoder) model, single and batched"},
    {"tokenizer", cmd_bench_tokenizer, "encode/decode MB/s of a model's tokenizer"},
    {"grammar", cmd_bench_grammar, "constrained decoding: schema compile, token mask time, decode tok/s vs free"},
    {"server", cmd_bench_server, "latency, throughput and load ramp of an OpenAI-compatible server (SLA verdict)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: kiln bench <scenario> [options]   (kiln bench <scenario> --help)\n\nscenarios:\n");
    for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++)
        fprintf(f, "  %-10s %s\n", SCENARIOS[i].name, SCENARIOS[i].summary);
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++)
        if (!strcmp(argv[1], SCENARIOS[i].name)) return SCENARIOS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kiln bench: unknown scenario '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
