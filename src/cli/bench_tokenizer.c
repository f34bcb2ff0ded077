/* bench_tokenizer.c — placeholder until `kiln bench tokenizer` lands (this session). */
#include "cli.h"
#include <stdio.h>
int bench_tokenizer_main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln bench tokenizer: unavailable in this build\n"); return 1; }
