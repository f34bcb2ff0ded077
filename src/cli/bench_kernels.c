/* bench_kernels.c — placeholder until `kiln bench kernels` lands (this session). */
#include "cli.h"
#include <stdio.h>
int bench_kernels_main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln bench kernels: unavailable in this build\n"); return 1; }
