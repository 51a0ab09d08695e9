/* jemalloc's xallocx and a pvalloc jemalloc lacks (Debian's libjemalloc2
 * exports no pvalloc: the library emulates it with jemalloc's
 * posix_memalign, so the block must be a jemalloc block). Run with
 * LEAKPROBE_SAMPLE=1; the truth is in tests/jemalloc.rs.
 *   site_pvalloc: 10 x pvalloc(5000): page-aligned, a page multiple usable,
 *     counted as the 5000 bytes asked for.
 *   site_xallocx: 8 x mallocx(64 KiB), each grown in place with
 *     xallocx(p, 96 KiB, 0, 0) at once (the pages after a fresh extent are
 *     usually free). Whether each grew is jemalloc's call: the program
 *     prints "XALLOCX <grown> <live bytes>" from xallocx's results.
 * Exits 4 if a block is not jemalloc's or pvalloc's contract is broken. */
#include <jemalloc/jemalloc.h>
#include <malloc.h> /* pvalloc */
#include <stdint.h>
#include "common.h"

#define SMALL (64 << 10)
#define LARGE (96 << 10)

__attribute__((noinline)) static void site_pvalloc(void) {
    for (int i = 0; i < 10; i++) keep(pvalloc(5000));  // SITE site_pvalloc
}

__attribute__((noinline)) static void site_xallocx(int *grown, size_t *bytes) {
    for (int i = 0; i < 8; i++) {
        void *p = mallocx(SMALL, 0);  // SITE site_xallocx
        keep(p);
        size_t real = xallocx(p, LARGE, 0, 0);
        if (real >= LARGE) {
            ++*grown;
            *bytes += LARGE;
        } else {
            *bytes += SMALL;
        }
    }
}

int main(void) {
    long page = sysconf(_SC_PAGESIZE);
    site_pvalloc();
    for (int i = 0; i < 10; i++) {
        if ((uintptr_t)kept[i] % page != 0 || sallocx(kept[i], 0) < 8192) return 4;
    }
    int grown = 0;
    size_t bytes = 0;
    site_xallocx(&grown, &bytes);
    for (int i = 0; i < nkept; i++) {
        if (sallocx(kept[i], 0) == 0) return 4;
    }
    printf("XALLOCX %d %zu\n", grown, bytes);
    ready_then_wait("jemalloc_extra");
    for (int i = 0; i < nkept; i++) dallocx(kept[i], 0);
    return 0;
}
