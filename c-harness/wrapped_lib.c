/* libwrapped.so, stripped: shaped like Debian's libisc. The exported
 * isc__mem_get() (on the script's list of allocation wrappers) allocates
 * through a static helper that calls jemalloc's mallocx; stripped, the
 * helper has no name (`libwrapped.so+0x...`), and it sits between the
 * allocator and the known wrapper. */
#include <jemalloc/jemalloc.h>
#include <stdlib.h>

__attribute__((noinline)) static void *mem_get_unlocked(size_t size) {
    void *p = mallocx(size, 0);
    if (!p) abort();
    return p;
}

__attribute__((noinline)) void *isc__mem_get(void *ctx, size_t size) {
    (void)ctx;
    return mem_get_unlocked(size);
}
