/* cmd_template.c — placeholder until the module behind `kiln template` lands (this session). */
#include "cli.h"
#include <stdio.h>
int cmd_template(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "kiln template: unavailable in this build\n"); return 1; }
