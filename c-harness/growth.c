/* Three kinds of growth, for `leakprobe summary`: prints READY (the test
 * dumps a baseline), and on a line of input grows, prints GREW (the test
 * dumps again), then waits for end of input.
 *   leak:      keeps 200 MiB in 4 KiB blocks (site_leak)
 *   retention: 4 threads each allocate 1M x 128 B and free all but every
 *              32nd block: 16 MiB stay live, one in every 4 KiB page or
 *              jemalloc slab, so the ~500 MiB freed stay with the allocator
 *   mmap:      maps and touches 256 MiB with mmap(), never unmapped
 * Built against glibc (growth) and linked with jemalloc (growth_jemalloc). */
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include "common.h"

#define THREADS 4
#define PER_THREAD (1 << 20)
#define BLOCK 128

static void *leaked[51200];
static void **pinned[THREADS];

__attribute__((noinline)) static void site_leak(void) {
    for (int i = 0; i < 51200; i++) {
        leaked[i] = malloc(4096);
        memset(leaked[i], 1, 4096);
    }
}

/* Index arrays from mmap: not part of the heap being measured. */
static void **table(size_t n) {
    void *p = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(3);
    return p;
}

static void *fragment(void *arg) {
    int t = (int)(long)arg;
    void **all = table(PER_THREAD);
    pinned[t] = table(PER_THREAD / 32);
    for (int i = 0; i < PER_THREAD; i++) {
        all[i] = malloc(BLOCK);
        memset(all[i], 1, BLOCK);
    }
    for (int i = 0; i < PER_THREAD; i++) {
        if (i % 32 == 0) pinned[t][i / 32] = all[i];
        else free(all[i]);
    }
    munmap(all, PER_THREAD * sizeof(void *));
    return NULL;
}

__attribute__((noinline)) static void site_retention(void) {
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, fragment, (void *)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
}

__attribute__((noinline)) static void site_mmap(void) {
    size_t size = (size_t)256 << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(3);
    memset(p, 1, size);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 2;
    if (!strcmp(argv[1], "leak")) site_leak();
    else if (!strcmp(argv[1], "retention")) site_retention();
    else if (!strcmp(argv[1], "mmap")) site_mmap();
    else return 2;
    printf("GREW\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
