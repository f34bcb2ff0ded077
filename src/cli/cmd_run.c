/* cmd_run.c — placeholder until the module behind `kiln run` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_run(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln run: unavailable in this build\n"); return 1; }
