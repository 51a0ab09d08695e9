/* Blocks from the library's bootstrap arena in the program's hands. The
 * program defines dlsym (exported with -rdynamic, so the library's own
 * dlsym calls reach it): when the library looks up the next "malloc" it
 * allocates three blocks, which the library can only serve from its arena
 * since the allocator is not resolved yet. Then it uses them as any block
 * (run with LEAKPROBE_SAMPLE=1):
 *   site_moved: realloc of the 100-byte arena block to 5000 bytes moves it
 *     to the real allocator with its contents (1 block of 5000 bytes live);
 *   the calloc'd arena block is zeroed; free of an arena block is harmless
 *     and its memory is never handed out again.
 * Prints "ARENA ok" (or what is wrong), then READY; exits at end of input. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <string.h>
#include "common.h"

static char *early[3];

typedef void *(*dlsym_fn)(void *, const char *);

static dlsym_fn real_dlsym(void) {
    static dlsym_fn real;
    if (!real) real = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!real) real = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    return real;
}

/* RTLD_NEXT names the objects after the caller: glibc finds the caller
 * from its own return address, which would be ours here, so search the
 * objects after the caller's in load order ourselves, each through a handle
 * of its own. */
void *dlsym(void *handle, const char *name) {
    dlsym_fn real = real_dlsym();
    if (handle != RTLD_NEXT) return real(handle, name);
    if (strcmp(name, "malloc") == 0 && !early[0]) {
        early[0] = malloc(100);
        early[1] = calloc(10, 30);
        early[2] = malloc(200);
        if (early[0]) memset(early[0], 'a', 100);
        if (early[2]) memset(early[2], 'c', 200);
    }
    Dl_info info;
    struct link_map *caller = NULL;
    if (!dladdr1(__builtin_return_address(0), &info, (void **)&caller, RTLD_DL_LINKMAP) || !caller) return NULL;
    for (struct link_map *l = caller->l_next; l; l = l->l_next) {
        void *h = dlopen(l->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (!h) continue;
        /* Not closed: the library interposes dlclose, and looks up the
         * next one through here. */
        void *f = real(h, name);
        if (f) return f;
    }
    return NULL;
}

__attribute__((noinline)) static char *site_moved(char *p) {
    return realloc(p, 5000);  // SITE site_moved
}

static const char *check(char **moved) {
    if (!early[0] || !early[1] || !early[2]) return "dlsym never looked up malloc";
    /* The arena keeps the size asked for; any allocator would round it up. */
    if (malloc_usable_size(early[0]) != 100) return "the blocks are not the arena's";
    for (int i = 0; i < 300; i++)
        if (early[1][i]) return "the calloc'd arena block is not zeroed";
    free(early[2]);
    for (int i = 0; i < 10; i++) {
        char *p = malloc(200);
        if (p == early[2]) return "a freed arena block was handed out again";
        keep(p);
    }
    if (early[2][199] != 'c') return "a freed arena block was written over";
    char *q = site_moved(early[0]);
    if (!q || q == early[0] || malloc_usable_size(q) < 5000) return "realloc did not move the block out of the arena";
    for (int i = 0; i < 100; i++)
        if (q[i] != 'a') return "realloc lost the contents";
    *moved = q;
    return "ok";
}

int main(void) {
    char *moved = NULL;
    printf("ARENA %s\n", check(&moved));
    ready_then_wait("bootstrap");
    free(moved);
    for (int i = 0; i < nkept; i++) free(kept[i]);
    return 0;
}
