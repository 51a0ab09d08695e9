/* Memory mapped outside malloc, for the mapped-memory rows (tests/python/
 * test_mapped.py). Each mode prints its truth, then READY, then waits for
 * end of input (grow: READY, a line of input, the growth, GREW).
 *   grow:      maps 256 MiB anonymously in 4 MiB pieces (site_map), touched
 *              and kept
 *   shapes:    partial unmaps, mremap grow/shrink/move, MAP_FIXED over a
 *              mapping, a file mapping, a reservation, a large malloc; the
 *              bytes left under each site are printed as "TRUTH site bytes"
 *   threads:   200 threads never joined (site_unjoined), 50 joined, 50
 *              detached, 10 detached after they exited, 10 on stacks of
 *              their own: only the first keep stacks
 *   bigmalloc: 64 blocks of 4 MiB from malloc, kept (site_big_mallocs): heap,
 *              never mapped rows (glibc maps them internally, jemalloc
 *              through the mmap symbol)
 * Built against glibc (mapped) and linked with jemalloc (mapped_jemalloc). */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include "common.h"

#define MIB ((size_t)1 << 20)
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static char *map(size_t size) {
    char *p = mmap(NULL, size, RW, ANON, -1, 0);
    if (p == MAP_FAILED) exit(3);
    return p;
}

__attribute__((noinline)) static void site_map(void) {
    for (int i = 0; i < 64; i++) {
        char *p = mmap(NULL, 4 * MIB, RW, ANON, -1, 0);
        if (p == MAP_FAILED) exit(3);
        memset(p, 1, 4 * MIB);
    }
}

static void truth(const char *site, size_t bytes) { printf("TRUTH %s %zu\n", site, bytes); }

__attribute__((noinline)) static char *site_partial(void) { return map(8 * MIB); }
__attribute__((noinline)) static char *site_grow(void) { return map(2 * MIB); }
__attribute__((noinline)) static char *site_grow_remap(char *p) { return mremap(p, 2 * MIB, 6 * MIB, MREMAP_MAYMOVE); }
__attribute__((noinline)) static char *site_shrink(void) { return map(6 * MIB); }
__attribute__((noinline)) static char *site_shrink_remap(char *p) { return mremap(p, 6 * MIB, 2 * MIB, 0); }
__attribute__((noinline)) static char *site_move(void) { return map(3 * MIB); }
__attribute__((noinline)) static char *site_move_remap(char *p, char *to) {
    return mremap(p, 3 * MIB, 3 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED, to);
}
__attribute__((noinline)) static char *site_fixed_old(void) { return map(4 * MIB); }
__attribute__((noinline)) static char *site_fixed_new(char *at) {
    return mmap(at, 2 * MIB, RW, ANON | MAP_FIXED, -1, 0);
}
__attribute__((noinline)) static char *site_freed(void) { return map(4 * MIB); }
__attribute__((noinline)) static char *site_reserve(void) {
    return mmap(NULL, 64 * MIB, PROT_NONE, ANON | MAP_NORESERVE, -1, 0);
}
__attribute__((noinline)) static char *site_file(int fd) { return mmap(NULL, MIB, RW, MAP_SHARED, fd, 0); }
__attribute__((noinline)) static void *site_big_malloc(void) { return malloc(64 * MIB); }

static void shapes(void) {
    char *p = site_partial();
    munmap(p, MIB);                  /* head */
    munmap(p + 7 * MIB, MIB);        /* tail */
    munmap(p + 3 * MIB, MIB);        /* middle */
    truth("site_partial", 5 * MIB);
    if (site_grow_remap(site_grow()) == MAP_FAILED) exit(3);
    truth("site_grow", 0);
    truth("site_grow_remap", 6 * MIB);
    if (site_shrink_remap(site_shrink()) == MAP_FAILED) exit(3);
    truth("site_shrink", 0);
    truth("site_shrink_remap", 2 * MIB);
    char *to = site_reserve(); /* also the move's destination */
    if (to == MAP_FAILED || site_move_remap(site_move(), to) != to) exit(3);
    truth("site_move", 0);
    truth("site_move_remap", 3 * MIB);
    truth("site_reserve", 0);
    char *old = site_fixed_old();
    if (site_fixed_new(old + MIB) != old + MIB) exit(3);
    truth("site_fixed_old", 2 * MIB);
    truth("site_fixed_new", 2 * MIB);
    munmap(site_freed(), 4 * MIB);
    truth("site_freed", 0);
    FILE *f = tmpfile();
    if (!f || ftruncate(fileno(f), MIB) != 0 || site_file(fileno(f)) == MAP_FAILED) exit(3);
    truth("site_file", MIB);
    keep(site_big_malloc());
    truth("site_big_malloc", 0);
}

static void *quit(void *arg) { return arg; }

static int tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) exit(3);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Until every thread that ran has left the kernel (exit handlers done). */
static void wait_tasks(int n) {
    while (tasks() > n) sched_yield();
}

__attribute__((noinline)) static void site_unjoined(pthread_t *t) {
    if (pthread_create(t, NULL, quit, NULL)) exit(3);
}
__attribute__((noinline)) static void site_joined(pthread_t *t) {
    if (pthread_create(t, NULL, quit, NULL)) exit(3);
}
__attribute__((noinline)) static void site_detached(void) {
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, quit, NULL)) exit(3);
    pthread_attr_destroy(&a);
}
__attribute__((noinline)) static void site_detach_late(pthread_t *t) {
    if (pthread_create(t, NULL, quit, NULL)) exit(3);
}
__attribute__((noinline)) static void site_own_stack(pthread_t *t) {
    static char stacks[10][256 << 10] __attribute__((aligned(4096)));
    static int n;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstack(&a, stacks[n++], sizeof stacks[0]);
    if (pthread_create(t, &a, quit, NULL)) exit(3);
    pthread_attr_destroy(&a);
}

static void threads(void) {
    static pthread_t unjoined[200], joined[50], late[10], own[10];
    int before = tasks();
    for (int i = 0; i < 200; i++) site_unjoined(&unjoined[i]);
    for (int i = 0; i < 50; i++) site_joined(&joined[i]);
    for (int i = 0; i < 50; i++) pthread_join(joined[i], NULL);
    for (int i = 0; i < 50; i++) site_detached();
    for (int i = 0; i < 10; i++) site_detach_late(&late[i]);
    for (int i = 0; i < 10; i++) site_own_stack(&own[i]);
    for (int i = 0; i < 10; i++) pthread_join(own[i], NULL);
    wait_tasks(before);
    for (int i = 0; i < 10; i++) pthread_detach(late[i]);
    pthread_attr_t a;
    size_t size = 0;
    pthread_attr_init(&a);
    pthread_attr_getstacksize(&a, &size);
    truth("site_unjoined", 200 * size);
    truth("site_joined", 0);
    truth("site_detached", 0);
    truth("site_detach_late", 0);
    truth("site_own_stack", 0);
}

__attribute__((noinline)) static void site_big_mallocs(void) {
    for (int i = 0; i < 64; i++) {
        void *p = malloc(4 * MIB);
        memset(p, 1, 4 * MIB);
        keep(p);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "grow")) {
        printf("READY\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 2;
        site_map();
        printf("GREW\n");
        fflush(stdout);
        while (fgets(line, sizeof line, stdin)) {
        }
        return 0;
    }
    if (!strcmp(argv[1], "shapes")) shapes();
    else if (!strcmp(argv[1], "threads")) threads();
    else if (!strcmp(argv[1], "bigmalloc")) site_big_mallocs();
    else return 2;
    fflush(stdout);
    ready_then_wait(argv[1]);
    return 0;
}
