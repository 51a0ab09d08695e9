// One caller per allocator entry point, each keeping what it allocates:
// mallocx (jemalloc), calloc and operator new[]. The library records every
// sample under its own function for the kind of allocation (mallocx's under
// malloc); `pprof --keep-allocator-frames` and `report` name the function the
// program called. Prints READY once allocated, then waits for end of input.
#include <jemalloc/jemalloc.h>
#include <cstring>
#include "common.h"

#define EACH (8 << 20)
#define BLOCK (32 << 10)

__attribute__((noinline)) static void site_mallocx() {
    for (int i = 0; i < EACH / BLOCK; i++) keep(mallocx(BLOCK, 0));
}

__attribute__((noinline)) static void site_calloc() {
    for (int i = 0; i < EACH / BLOCK; i++) keep(calloc(1, BLOCK));
}

__attribute__((noinline)) static void site_new_array() {
    for (int i = 0; i < EACH / BLOCK; i++) {
        char *p = new char[BLOCK];
        std::memset(p, 1, 64);
        keep(p);
    }
}

int main() {
    site_mallocx();
    site_calloc();
    site_new_array();
    ready_then_wait("entry_points");
    return 0;
}
