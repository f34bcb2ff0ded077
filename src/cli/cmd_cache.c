/* cmd_cache.c — `kiln cache stats|clear`: placeholder until the L2 helper lands it. */
#include "cli.h"

#include <stdio.h>

int cmd_cache(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kiln cache: not built yet\n");
    return 1;
}
