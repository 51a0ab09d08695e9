/* A process whose heap changes in steps, for `diff` and `trend`. Each line on
 * stdin runs one step, then it prints "STEP <n>":
 *   site_leak:  16 MiB more kept every step, in 64 KiB blocks (a steady leak)
 *   site_cache: 24 MiB added in each of the first two steps, then held
 *               (a cache that fills and plateaus)
 *   site_churn: 32 MiB allocated and freed every step, in 16 KiB blocks
 * At end of input it frees everything and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (64 << 10)
#define LEAK_PER_STEP ((16 << 20) / BLOCK)
#define CACHE_PER_STEP ((24 << 20) / BLOCK)
#define MAX_BLOCKS 8192

static void *blocks[MAX_BLOCKS];
static int nblocks;

static void hold(void *p) {
    if (!p || nblocks == MAX_BLOCKS) exit(2);
    memset(p, 1, 64);
    blocks[nblocks++] = p;
}

__attribute__((noinline)) static void site_leak(void) {
    for (int i = 0; i < LEAK_PER_STEP; i++) hold(malloc(BLOCK));
}

__attribute__((noinline)) static void site_cache(int step) {
    if (step > 2) return;
    for (int i = 0; i < CACHE_PER_STEP; i++) hold(malloc(BLOCK));
}

__attribute__((noinline)) static void site_churn(void) {
    for (int i = 0; i < 2048; i++) {
        char *volatile p = malloc(16 << 10);
        p[0] = 1;
        free(p);
    }
}

int main(void) {
    char line[64];
    int step = 0;
    printf("READY series\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        step++;
        site_leak();
        site_cache(step);
        site_churn();
        printf("STEP %d\n", step);
        fflush(stdout);
    }
    for (int i = 0; i < nblocks; i++) free(blocks[i]);
    return 0;
}
