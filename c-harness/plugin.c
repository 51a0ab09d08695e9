/* A tiny shared object that dlopen_loop.c loads and unloads in a loop. */
#include <stdlib.h>
#include <string.h>

int plugin_work(int n) {
    char *p = malloc(64 + n % 512);
    memset(p, n, 64);
    int r = p[0];
    free(p);
    return r;
}
