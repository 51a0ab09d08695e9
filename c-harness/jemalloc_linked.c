/* A program linked against libjemalloc that allocates through jemalloc's
 * extended API. Run with LEAKPROBE_SAMPLE=1: the truth is in
 * tests/jemalloc.rs. It checks that its memory really comes from jemalloc
 * (sallocx works on it, stats.allocated grows) and prints how much
 * stats.allocated grew. */
#include <jemalloc/jemalloc.h>
#include <stdint.h>
#include "common.h"

static size_t allocated(void) {
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    mallctl("epoch", &epoch, &len, &epoch, len);
    size_t n = 0;
    len = sizeof n;
    if (mallctl("stats.allocated", &n, &len, NULL, 0) != 0) return 0;
    return n;
}

__attribute__((noinline)) static void site_mallocx(void) {
    for (int i = 0; i < 100; i++) keep(mallocx(2000, 0));  // SITE site_mallocx
}

__attribute__((noinline)) static void site_mallocx_aligned(void) {
    for (int i = 0; i < 10; i++) keep(mallocx(3000, MALLOCX_ALIGN(256) | MALLOCX_ZERO));  // SITE site_mallocx_aligned
}

__attribute__((noinline)) static void site_rallocx(void) {
    for (int i = 0; i < 20; i++) {
        void *p = mallocx(100, 0);
        keep(rallocx(p, 4000, 0));  // SITE site_rallocx
    }
}

__attribute__((noinline)) static void site_sdallocx(void) {
    for (int i = 0; i < 50; i++) sdallocx(mallocx(1200, 0), 1200, 0);  // SITE site_sdallocx
}

__attribute__((noinline)) static void site_plain_malloc(void) {
    for (int i = 0; i < 30; i++) keep(malloc(1500));  // SITE site_plain_malloc
}

int main(void) {
    size_t before = allocated();
    site_mallocx();
    site_mallocx_aligned();
    site_rallocx();
    site_sdallocx();
    site_plain_malloc();
    for (int i = 0; i < nkept; i++) {
        if (sallocx(kept[i], 0) == 0) return 4; /* not a jemalloc block */
    }
    size_t grew = allocated() - before;
    if (((uintptr_t)kept[100] & 255) != 0) return 5;
    printf("jemalloc stats.allocated grew by %zu\n", grew);
    ready_then_wait("jemalloc");
    for (int i = 0; i < nkept; i++) dallocx(kept[i], 0);
    return 0;
}
