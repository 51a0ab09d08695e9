/* Multi-threaded stress: THREADS threads each do OPS mixed operations
 * (malloc, calloc, realloc, free; sizes 1..4096) and hand a share of their
 * blocks to other threads through a mailbox, so frees cross threads. Every
 * block carries a pattern checked before it is freed. At the end each thread
 * keeps KEEP blocks of KEEP_SIZE bytes from site_keep and nothing else, so an
 * exact dump (LEAKPROBE_SAMPLE=1) has exactly THREADS*KEEP live blocks there
 * and none at site_work. Prints "DONE ok" or "DONE corrupt". */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "common.h"

#define THREADS 8
#define KEEP 500
#define KEEP_SIZE 512
#define SLOTS 64
#define MAILBOX 256

static long ops = 200000;
static int corrupt;
static pthread_mutex_t mailbox_lock = PTHREAD_MUTEX_INITIALIZER;
static void *mailbox[MAILBOX];
static void *keep_blocks[THREADS][KEEP];

struct block {
    uint32_t size;
    uint32_t tag;
};

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void stamp(struct block *b, uint32_t size) {
    b->size = size;
    b->tag = size * 2654435761u;
}

static void check_and_free(struct block *b) {
    if (!b) return;
    if (b->tag != b->size * 2654435761u) __atomic_store_n(&corrupt, 1, __ATOMIC_RELAXED);
    free(b);
}

__attribute__((noinline)) static struct block *site_work(uint64_t *rng, struct block *old) {
    uint32_t size = sizeof(struct block) + next_rand(rng) % 4096;
    struct block *b;
    switch (next_rand(rng) % 3) {
    case 0:
        check_and_free(old);
        b = malloc(size);
        break;
    case 1:
        check_and_free(old);
        b = calloc(1, size);
        break;
    default:
        if (old && old->tag != old->size * 2654435761u) __atomic_store_n(&corrupt, 1, __ATOMIC_RELAXED);
        b = realloc(old, size);
        break;
    }
    if (!b) abort();
    stamp(b, size);
    return b;
}

/* Swap a block with the mailbox: another thread will free it. */
static struct block *trade(uint64_t *rng, struct block *b) {
    unsigned i = next_rand(rng) % MAILBOX;
    pthread_mutex_lock(&mailbox_lock);
    void *theirs = mailbox[i];
    mailbox[i] = b;
    pthread_mutex_unlock(&mailbox_lock);
    return theirs;
}

__attribute__((noinline)) static void site_keep(int t) {
    for (int i = 0; i < KEEP; i++) keep_blocks[t][i] = malloc(KEEP_SIZE);
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (t + 1);
    struct block *slots[SLOTS] = {0};
    for (long n = 0; n < ops; n++) {
        unsigned i = next_rand(&rng) % SLOTS;
        slots[i] = site_work(&rng, slots[i]);
        if (next_rand(&rng) % 8 == 0) {
            check_and_free(trade(&rng, slots[i]));
            slots[i] = NULL;
        }
    }
    for (int i = 0; i < SLOTS; i++) check_and_free(slots[i]);
    site_keep(t);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) ops = atol(argv[1]);
    printf("READY stress\n");
    fflush(stdout);
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    for (int i = 0; i < MAILBOX; i++) check_and_free(mailbox[i]);
    printf("DONE %s\n", corrupt ? "corrupt" : "ok");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < KEEP; i++) free(keep_blocks[t][i]);
    return corrupt;
}
