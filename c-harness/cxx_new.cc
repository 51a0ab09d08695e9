// Every form of operator new and delete, run with LEAKPROBE_SAMPLE=1; the
// truth is in tests/cxx.rs. Also checks that C++ semantics survive the
// interposition: bad_alloc propagates, new_handler runs, nothrow returns null.
#include <cstdio>
#include <cstdlib>
#include <new>
#include "common.h"

struct alignas(64) Wide {
    char bytes[192];
};

static int handler_calls;

static void on_out_of_memory() {
    handler_calls++;
    std::set_new_handler(nullptr);  // the next failure throws
}

extern "C" {
__attribute__((noinline)) void site_new() {
    for (int i = 0; i < 40; i++) keep(new long[100]);  // SITE site_new
}

__attribute__((noinline)) void site_new_scalar() {
    for (int i = 0; i < 30; i++) keep(new char(1));  // SITE site_new_scalar
}

__attribute__((noinline)) void site_new_nothrow() {
    for (int i = 0; i < 20; i++) keep(new (std::nothrow) char[333]);  // SITE site_new_nothrow
}

__attribute__((noinline)) void site_new_aligned() {
    for (int i = 0; i < 10; i++) keep(new Wide);  // SITE site_new_aligned
}

__attribute__((noinline)) void site_new_aligned_array() {
    for (int i = 0; i < 10; i++) keep(new Wide[3]);  // SITE site_new_aligned_array
}

__attribute__((noinline)) void site_deleted() {
    for (int i = 0; i < 50; i++) {
        Wide *w = new Wide;           // aligned, then sized aligned delete
        delete w;
        long *a = new long[10];       // array, array delete
        delete[] a;
        char *c = new char[5];
        ::operator delete[](c, std::nothrow);
    }
}
}

int main() {
    site_new();
    site_new_scalar();
    site_new_nothrow();
    site_new_aligned();
    site_new_aligned_array();
    site_deleted();
    for (int i = 0; i < nkept; i++)
        if ((i >= 90 && i < 110) && ((unsigned long)kept[i] % 64) != 0) return 3;

    bool threw = false;
    try {
        volatile size_t huge = (size_t)1 << 62;
        keep(new char[huge]);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    std::set_new_handler(on_out_of_memory);
    bool threw_after_handler = false;
    try {
        volatile size_t huge = (size_t)1 << 62;
        keep(new char[huge]);
    } catch (const std::bad_alloc &) {
        threw_after_handler = true;
    }
    volatile size_t huge = (size_t)1 << 62;
    char *none = new (std::nothrow) char[huge];
    printf("BAD_ALLOC %s HANDLER %d NOTHROW %s\n", threw && threw_after_handler ? "ok" : "missing", handler_calls,
           none == nullptr ? "null" : "non-null");
    ready_then_wait("cxx_new");
    // Objects from new[] of a type without destructor: delete[] is free-like.
    return 0;
}
