/* cmd_info.c — placeholder until the module behind `kiln info` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_info(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln info: unavailable in this build\n"); return 1; }
