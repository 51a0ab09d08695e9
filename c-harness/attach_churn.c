/* Started without the library, for `leakprobe attach`: THREADS threads churn
 * malloc, calloc, realloc and posix_memalign (every block freed, a checksum
 * of the contents kept) until told to stop. Commands on stdin, one a line:
 * "leak N" leaks N MiB in 1 MiB blocks from leak_here() (answers "LEAKED"),
 * "rounds" answers "ROUNDS <n>", the 1024-block rounds all threads finished
 * so far (the bench's unit of work), "quit" stops the threads and prints "CHECKSUM <x> BAD <n>": x sums the
 * first FIXED blocks of every thread (the same whether or not the library was
 * attached meanwhile), n counts blocks whose contents were not what was
 * written, over the whole run. Prints "READY" once the threads run,
 * after a few blocks were allocated before any attach and kept to the end
 * (then freed and realloc'ed: pre-attach blocks through the next allocator). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef THREADS
#define THREADS 4
#endif
static atomic_int stop;
static atomic_ulong rounds;
static uint64_t sums[THREADS], bad[THREADS];
enum { FIXED = 1 << 13 };

static void *churn(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t sum = 0, wrong = 0, x = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    for (unsigned long n = 0; !atomic_load(&stop) || n < FIXED; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t size = 16 + (size_t)(x % 4000);
        unsigned char *p;
        switch (n % 4) {
        case 0: p = malloc(size); break;
        case 1: p = calloc(1, size); break;
        case 2: p = realloc(malloc(size / 2), size); break;
        default: {
            void *q = NULL;
            if (posix_memalign(&q, 64, size) != 0) q = NULL;
            p = q;
        }
        }
        if (!p) abort();
        if (n % 4 == 1 && p[size - 1] != 0) wrong++;
        memset(p, (int)(n & 0xff), size);
        wrong += p[0] != (n & 0xff) || p[size / 2] != (n & 0xff);
        if (n < FIXED) sum += p[size - 1] + size;
        free(p);
        if (n % 1024 == 1023) atomic_fetch_add(&rounds, 1);
    }
    sums[id] = sum;
    bad[id] = wrong;
    return NULL;
}

static void *leaked[4096];
static int nleaked;

__attribute__((noinline)) void leak_here(int mib) {
    for (int i = 0; i < mib && nleaked < 4096; i++) {
        leaked[nleaked] = malloc(1 << 20);
        if (!leaked[nleaked]) abort();
        memset(leaked[nleaked++], 1, 1 << 20);
    }
}

int main(void) {
    enum { EARLY = 64 };
    void *early[EARLY];
    for (int i = 0; i < EARLY; i++) early[i] = malloc(100 + i);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, churn, (void *)(intptr_t)i);
    while (atomic_load(&rounds) < THREADS) sched_yield();
    printf("READY\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int mib;
        if (sscanf(line, "leak %d", &mib) == 1) {
            leak_here(mib);
            printf("LEAKED\n");
            fflush(stdout);
        } else if (strncmp(line, "rounds", 6) == 0) {
            printf("ROUNDS %lu\n", atomic_load(&rounds));
            fflush(stdout);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        }
    }
    atomic_store(&stop, 1);
    uint64_t total = 0, wrong = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += sums[i];
        wrong += bad[i];
    }
    for (int i = 0; i < nleaked; i++) {
        const unsigned char *b = leaked[i];
        wrong += b[0] != 1 || b[(1 << 20) - 1] != 1;
    }
    for (int i = 0; i < EARLY; i += 2) early[i] = realloc(early[i], 5000);
    for (int i = 0; i < EARLY; i++) free(early[i]);
    for (int i = 0; i < nleaked; i++) free(leaked[i]);
    printf("CHECKSUM %016llx BAD %llu\n", (unsigned long long)total, (unsigned long long)wrong);
    return 0;
}
