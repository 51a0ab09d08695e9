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

/* Keeps n blocks of 777 bytes for the caller, who outlives this library. */
__attribute__((noinline)) void plugin_leak(void **out, int n) {
    for (int i = 0; i < n; i++) out[i] = malloc(777);
}
