/* cmd_tokenize.c — placeholder until the module behind `kiln tokenize` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln tokenize: unavailable in this build\n"); return 1; }
