/* A process whose heap changes in steps, for `diff`, `trend` and `summary`.
 * Each line on stdin runs one step, then it prints "STEP <n>". argv[1] picks
 * the shape (default: all but sawtooth):
 *   leak:     site_leak:  16 MiB more kept every step, in 64 KiB blocks (a steady leak)
 *   cache:    site_cache: 24 MiB added in each of the first two steps, then held
 *             (a cache that fills and plateaus)
 *   sawtooth: site_sawtooth: 32 MiB allocated on odd steps, all of it freed on
 *             even steps (grows, is freed, grows)
 *   all:      leak, cache, and site_churn: 32 MiB allocated and freed every
 *             step, in 16 KiB blocks
 * At end of input it frees everything and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (64 << 10)
#define LEAK_PER_STEP ((16 << 20) / BLOCK)
#define CACHE_PER_STEP ((24 << 20) / BLOCK)
#define SAW_BLOCKS ((32 << 20) / BLOCK)
#define MAX_BLOCKS 8192

static void *blocks[MAX_BLOCKS];
static int nblocks;
static void *saw[SAW_BLOCKS];

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

__attribute__((noinline)) static void site_sawtooth(int step) {
    for (int i = 0; i < SAW_BLOCKS; i++) {
        if (step % 2) {
            saw[i] = malloc(BLOCK);
            if (!saw[i]) exit(2);
            memset(saw[i], 1, 64);
        } else {
            free(saw[i]);
            saw[i] = NULL;
        }
    }
}

__attribute__((noinline)) static void site_churn(void) {
    for (int i = 0; i < 2048; i++) {
        char *volatile p = malloc(16 << 10);
        p[0] = 1;
        free(p);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    int all = !strcmp(mode, "all");
    if (!all && strcmp(mode, "leak") && strcmp(mode, "cache") && strcmp(mode, "sawtooth")) return 2;
    char line[64];
    int step = 0;
    printf("READY series %s\n", mode);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        step++;
        if (all || !strcmp(mode, "leak")) site_leak();
        if (all || !strcmp(mode, "cache")) site_cache(step);
        if (!strcmp(mode, "sawtooth")) site_sawtooth(step);
        if (all) site_churn();
        printf("STEP %d\n", step);
        fflush(stdout);
    }
    for (int i = 0; i < nblocks; i++) free(blocks[i]);
    for (int i = 0; i < SAW_BLOCKS; i++) free(saw[i]);
    return 0;
}
