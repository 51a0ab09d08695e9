// Exactness harness: known allocation sites, run with LEAKPROBE_SAMPLE=1.
// Each line marked SITE performs the allocations the test expects to find
// live, attributed to that function and line. The truth is in tests/exact.rs.
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include "common.h"

struct Big {
    char bytes[700];
};

extern "C" {
__attribute__((noinline)) void site_malloc() {
    for (int i = 0; i < 100; i++) keep(malloc(1000));  // SITE site_malloc
}

__attribute__((noinline)) void site_calloc() {
    for (int i = 0; i < 50; i++) keep(calloc(20, 64));  // SITE site_calloc
}

__attribute__((noinline)) void site_realloc() {
    for (int i = 0; i < 30; i++) {
        void *p = malloc(100);
        p = realloc(realloc(p, 200), 400);
        keep(realloc(p, 800));  // SITE site_realloc
    }
}

__attribute__((noinline)) void site_reallocarray() {
    for (int i = 0; i < 20; i++) keep(reallocarray(NULL, 10, 90));  // SITE site_reallocarray
}

__attribute__((noinline)) void site_posix_memalign() {
    for (int i = 0; i < 10; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 2048) == 0) keep(p);  // SITE site_posix_memalign
    }
}

__attribute__((noinline)) void site_aligned_alloc() {
    for (int i = 0; i < 10; i++) keep(aligned_alloc(256, 4096));  // SITE site_aligned_alloc
}

__attribute__((noinline)) void site_memalign() {
    for (int i = 0; i < 10; i++) keep(memalign(128, 512));  // SITE site_memalign
}

__attribute__((noinline)) void site_valloc() {
    for (int i = 0; i < 5; i++) keep(valloc(3000));  // SITE site_valloc
}

__attribute__((noinline)) void site_new_array() {
    for (int i = 0; i < 25; i++) keep(new char[600]);  // SITE site_new_array
}

__attribute__((noinline)) void site_new_object() {
    for (int i = 0; i < 25; i++) keep(new Big);  // SITE site_new_object
}

__attribute__((noinline)) void site_churn() {
    for (int i = 0; i < 1000; i++) free(malloc(700));  // SITE site_churn
}

static void *cross[200];

__attribute__((noinline)) void site_cross_thread() {
    for (int i = 0; i < 200; i++) cross[i] = malloc(3000);  // SITE site_cross_thread
}

static void *free_evens(void *) {
    for (int i = 0; i < 200; i += 2) free(cross[i]);
    for (int i = 1; i < 200; i += 2) keep(cross[i]);
    return NULL;
}

__attribute__((noinline)) void *site_handover() {
    return malloc(6000);  // SITE site_handover
}

// A thread whose very first allocator call is free().
__attribute__((noinline)) void *site_first_free_thread(void *handed) {
    free(handed);
    for (int i = 0; i < 40; i++) keep(malloc(5000));  // SITE site_first_free_thread
    return NULL;
}
}

int main() {
    site_malloc();
    site_calloc();
    site_realloc();
    site_reallocarray();
    site_posix_memalign();
    site_aligned_alloc();
    site_memalign();
    site_valloc();
    site_new_array();
    site_new_object();
    site_churn();
    site_cross_thread();
    pthread_t t;
    pthread_create(&t, NULL, free_evens, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, site_first_free_thread, site_handover());
    pthread_join(t, NULL);
    if (malloc_usable_size(kept[0]) < 1000) return 3;
    ready_then_wait("exact");
    for (int i = 0; i < nkept; i++) free(kept[i]);
    return 0;
}
