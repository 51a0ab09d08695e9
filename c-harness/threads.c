/* Thread churn: WAVES waves of PER_WAVE threads. Each thread's first
 * allocator call is a free() of a block handed to it; it then allocates
 * three blocks, keeps one (site_thread_keep, 100 bytes) and frees two, and
 * exits. With LEAKPROBE_SAMPLE=1 the dump holds exactly WAVES*PER_WAVE
 * blocks at site_thread_keep. Prints STARTED first, READY when done, then
 * waits for end of input. */
#include <pthread.h>
#include "common.h"

#define WAVES 50
#define PER_WAVE 100

static void *kept_blocks[WAVES * PER_WAVE];

__attribute__((noinline)) static void *site_thread_keep(void) {
    return malloc(100);
}

static void *worker(void *arg) {
    void **slot = arg;
    free(*slot);
    void *a = malloc(300), *b = calloc(1, 200);
    *slot = site_thread_keep();
    free(a);
    free(b);
    return NULL;
}

int main(void) {
    printf("STARTED\n");
    fflush(stdout);
    pthread_t threads[PER_WAVE];
    for (int w = 0; w < WAVES; w++) {
        for (int t = 0; t < PER_WAVE; t++) {
            void **slot = &kept_blocks[w * PER_WAVE + t];
            *slot = malloc(50);
            if (pthread_create(&threads[t], NULL, worker, slot) != 0) return 3;
        }
        for (int t = 0; t < PER_WAVE; t++) pthread_join(threads[t], NULL);
    }
    ready_then_wait("threads");
    for (int i = 0; i < WAVES * PER_WAVE; i++) free(kept_blocks[i]);
    return 0;
}
