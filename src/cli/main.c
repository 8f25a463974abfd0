/* Placeholder entry point until the trainer lands (issue 3). */
#include <stdio.h>

#include "engine/engine.h"

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("thinkscale (element type %s): no commands yet\n", TS_REAL_NAME);
    return 0;
}
