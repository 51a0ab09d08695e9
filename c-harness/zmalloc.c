/* A program with its own allocator wrappers, shaped like redis's zmalloc.c:
 * zmalloc_usable() -> ztrymalloc_usable_internal() -> malloc(), and an
 * app_alloc() wrapper no built-in list knows. Prints READY (the test dumps
 * a baseline); on a line of input keeps 96 MiB through zmalloc_usable from
 * site_dict_add and 32 MiB through app_alloc from site_custom, in 32 KiB
 * blocks, prints GREW, then waits for end of input. */
#include <malloc.h>
#include <string.h>
#include "common.h"

#define BLOCK (32 << 10)

__attribute__((noinline)) static void *ztrymalloc_usable_internal(size_t size, size_t *usable) {
    void *p = malloc(size);
    if (p && usable) *usable = malloc_usable_size(p);
    return p;
}

__attribute__((noinline)) void *zmalloc_usable(size_t size, size_t *usable) {
    void *p = ztrymalloc_usable_internal(size, usable);
    if (!p) exit(2);
    return p;
}

__attribute__((noinline)) void *app_alloc(size_t size) {
    void *p = malloc(size);
    if (!p) exit(2);
    return p;
}

__attribute__((noinline)) static void site_dict_add(void) {
    size_t usable;
    for (int i = 0; i < (96 << 20) / BLOCK; i++) {
        void *p = zmalloc_usable(BLOCK, &usable);
        memset(p, 1, usable);
        keep(p);
    }
}

__attribute__((noinline)) static void site_custom(void) {
    for (int i = 0; i < (32 << 20) / BLOCK; i++) {
        void *p = app_alloc(BLOCK);
        memset(p, 1, BLOCK);
        keep(p);
    }
}

int main(void) {
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 2;
    site_dict_add();
    site_custom();
    printf("GREW\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
