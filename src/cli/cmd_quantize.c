/* cmd_quantize.c — placeholder until the module behind `kiln quantize` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_quantize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln quantize: unavailable in this build\n"); return 1; }
