/* cmd_detokenize.c — placeholder until the module behind `kiln detokenize` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_detokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln detokenize: unavailable in this build\n"); return 1; }
