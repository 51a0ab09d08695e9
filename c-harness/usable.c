/* Known usable sizes: 1000 blocks of 100 bytes (glibc gives 104 usable bytes
 * each, jemalloc 112) and 4 of 1 MiB (glibc maps each, jemalloc has a size
 * class for it). Prints each site's sum of malloc_usable_size(), the
 * allocator's answer, then waits (READY). Built for glibc (usable) and
 * against jemalloc (usable_jemalloc); tests/usable.rs. */
#include <malloc.h>
#include "common.h"

__attribute__((noinline)) static size_t site_small(void) {
    size_t usable = 0;
    for (int i = 0; i < 1000; i++) {
        keep(malloc(100));  // SITE site_small
        usable += malloc_usable_size(kept[nkept - 1]);
    }
    return usable;
}

__attribute__((noinline)) static size_t site_large(void) {
    size_t usable = 0;
    for (int i = 0; i < 4; i++) {
        keep(malloc(1 << 20));  // SITE site_large
        usable += malloc_usable_size(kept[nkept - 1]);
    }
    return usable;
}

int main(void) {
    printf("usable site_small %zu\n", site_small());
    printf("usable site_large %zu\n", site_large());
    ready_then_wait("usable");
    for (int i = 0; i < nkept; i++) free(kept[i]);
    return 0;
}
