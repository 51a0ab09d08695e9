/* The program break moved by the program itself, for the brk mapped rows
 * (tests/python/test_mapped.py). Prints "TRUTH site bytes" for the bytes
 * each site keeps, then READY, then waits for end of input.
 *   program: site_sbrk grows it by 3 MiB + 100 bytes; site_sbrk_shrink by
 *            2 MiB, then gives 1 MiB back (sbrk(-1 MiB)); site_brk sets it
 *            1 MiB higher; site_brk_back 2 MiB higher, then back (brk). No
 *            malloc in between: the program's own regions stay on top.
 *   malloc:  64 MiB from malloc in blocks of 16 KiB, below glibc's mmap
 *            threshold (site_heap): glibc grows its heap with internal brk
 *            calls, so heap rows, never brk rows. */
#define _GNU_SOURCE
#include <string.h>
#include "common.h"

#define MIB ((size_t)1 << 20)

__attribute__((noinline)) static char *site_sbrk(void) { return sbrk(3 * MIB + 100); }
__attribute__((noinline)) static char *site_sbrk_shrink(void) {
    char *p = sbrk(2 * MIB);
    if (p == (void *)-1 || sbrk(-(intptr_t)MIB) == (void *)-1) exit(3);
    return p;
}
__attribute__((noinline)) static char *site_brk(void) {
    char *p = sbrk(0);
    return brk(p + MIB) ? (void *)-1 : p;
}
__attribute__((noinline)) static char *site_brk_back(void) {
    char *p = sbrk(0);
    if (brk(p + 2 * MIB)) exit(3);
    memset(p, 1, 2 * MIB);
    return brk(p) ? (void *)-1 : p;
}

__attribute__((noinline)) static void site_heap(void) {
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(16 << 10);
        if (!p) exit(3);
        memset(p, 1, 16 << 10);
        keep(p);
    }
}

/* The site kept `size` bytes at `p`, on top: nothing else moved the break
 * (the library must not, on these calls: exit 4). */
static void check(char *p, size_t size) {
    if (p == (void *)-1) exit(3);
    if ((char *)sbrk(0) != p + size) exit(4);
    memset(p, 1, size);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "program")) {
        check(site_sbrk(), 3 * MIB + 100);
        check(site_sbrk_shrink(), MIB);
        check(site_brk(), MIB);
        check(site_brk_back(), 0);
        printf("TRUTH site_sbrk %zu\nTRUTH site_sbrk_shrink %zu\n", 3 * MIB + 100, MIB);
        printf("TRUTH site_brk %zu\nTRUTH site_brk_back 0\n", MIB);
    } else if (!strcmp(argv[1], "malloc")) {
        site_heap();
        printf("TRUTH site_heap %zu\n", 64 * MIB);
    } else {
        return 2;
    }
    fflush(stdout);
    ready_then_wait(argv[1]);
    return 0;
}
