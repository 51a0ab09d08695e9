/* Benchmark workloads: `workloads <name> [scale]`. Each is deterministic
 * (fixed seeds) and prints a checksum so a broken allocator is noticed.
 *   churn:   one thread, mixed sizes 16 B..4 KiB, a working set of 10k
 *            objects replaced at random
 *   xthread: two threads; each allocates and hands its blocks to the other,
 *            which frees them (every free is a cross-thread free); a thread
 *            that can neither send nor receive yields, so a thread the
 *            scheduler took away does not leave the other spinning
 *   json:    builds ~40k small objects with strings, serializes them through
 *            a realloc-doubling buffer of several MB, frees everything;
 *            repeated (the pattern of named's statistics channel)
 *   realloc: buffers grown and shrunk by small steps
 *   pairs:   malloc+free pairs of 64..127 bytes (for instruction counts) */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes 16..4096, small ones more often (log-uniform). */
static size_t mixed_size(uint64_t *s) {
    unsigned shift = 4 + next_rand(s) % 9;
    return ((size_t)1 << shift) + next_rand(s) % ((size_t)1 << shift);
}

static uint64_t churn(long ops) {
    enum { SET = 10000 };
    static char *set[SET];
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        unsigned k = next_rand(&rng) % SET;
        free(set[k]);
        size_t n = mixed_size(&rng);
        set[k] = malloc(n);
        set[k][0] = (char)i;
        sum += (unsigned char)set[k][0] + n;
    }
    for (int k = 0; k < SET; k++) free(set[k]);
    return sum;
}

/* Two threads exchange blocks through single-producer rings. */
enum { RING = 1024 };
struct ring {
    _Atomic unsigned long head, tail;
    void *slot[RING];
};
static struct ring rings[2];
static long xthread_ops;

static void *exchanger(void *arg) {
    int me = (int)(intptr_t)arg;
    struct ring *out = &rings[me], *in = &rings[1 - me];
    uint64_t s = 0x1234567ull * (me + 1), sum = 0;
    long sent = 0, received = 0;
    while (sent < xthread_ops || received < xthread_ops) {
        int progress = 0;
        unsigned long tail = atomic_load_explicit(&out->tail, memory_order_relaxed);
        if (sent < xthread_ops && tail - atomic_load_explicit(&out->head, memory_order_acquire) < RING) {
            progress = 1;
            size_t n = mixed_size(&s);
            char *p = malloc(n);
            p[0] = (char)n;
            out->slot[tail % RING] = p;
            atomic_store_explicit(&out->tail, tail + 1, memory_order_release);
            sent++;
        }
        unsigned long head = atomic_load_explicit(&in->head, memory_order_relaxed);
        if (head != atomic_load_explicit(&in->tail, memory_order_acquire)) {
            progress = 1;
            char *p = in->slot[head % RING];
            sum += (unsigned char)p[0];
            free(p);
            atomic_store_explicit(&in->head, head + 1, memory_order_release);
            received++;
        }
        if (!progress) sched_yield();
    }
    return (void *)(uintptr_t)sum;
}

static uint64_t xthread(long ops) {
    xthread_ops = ops;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, exchanger, (void *)(intptr_t)i);
    uint64_t sum = 0;
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    return sum;
}

struct item {
    char *key, *value;
    long number;
};

static uint64_t json(long rounds) {
    enum { ITEMS = 40000 };
    uint64_t sum = 0;
    for (long r = 0; r < rounds; r++) {
        struct item *items = malloc(ITEMS * sizeof *items);
        for (int i = 0; i < ITEMS; i++) {
            char text[48];
            int n = snprintf(text, sizeof text, "counter-%d-%ld", i, r);
            items[i].key = strdup(text);
            items[i].value = malloc(n + 8);
            memcpy(items[i].value, text, n + 1);
            items[i].number = i * r;
        }
        size_t cap = 256, len = 0;
        char *out = malloc(cap);
        for (int i = 0; i < ITEMS; i++) {
            char line[160];
            int n = snprintf(line, sizeof line, "\"%s\":{\"v\":\"%s\",\"n\":%ld},", items[i].key, items[i].value,
                             items[i].number);
            while (len + n + 1 > cap) {
                cap *= 2;
                out = realloc(out, cap);
            }
            memcpy(out + len, line, n + 1);
            len += n;
        }
        sum += len;
        free(out);
        for (int i = 0; i < ITEMS; i++) {
            free(items[i].key);
            free(items[i].value);
        }
        free(items);
    }
    return sum;
}

static uint64_t reallocs(long ops) {
    enum { BUFS = 64 };
    char *buf[BUFS] = {0};
    size_t size[BUFS] = {0};
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        unsigned k = next_rand(&rng) % BUFS;
        size_t n = next_rand(&rng) % 4 == 0 ? 16 : size[k] + 16 + next_rand(&rng) % 256;
        if (n > 65536) n = 16;
        buf[k] = realloc(buf[k], n);
        buf[k][n - 1] = (char)i;
        size[k] = n;
        sum += n;
    }
    for (int k = 0; k < BUFS; k++) free(buf[k]);
    return sum;
}

static uint64_t pairs(long ops) {
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        void *volatile p = malloc(64 + (i & 63));
        sum += (uintptr_t)p & 1;
        free(p);
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    const char *w = argv[1];
    uint64_t sum;
    if (!strcmp(w, "churn")) sum = churn((long)(12e6 * scale));
    else if (!strcmp(w, "xthread")) sum = xthread((long)(4e6 * scale));
    else if (!strcmp(w, "json")) sum = json((long)(100 * scale));
    else if (!strcmp(w, "realloc")) sum = reallocs((long)(15e6 * scale));
    else if (!strcmp(w, "pairs")) sum = pairs((long)(1e6 * scale));
    else return 2;
    printf("%s %llu\n", w, (unsigned long long)sum);
    return 0;
}
