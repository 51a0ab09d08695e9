/* Allocate+free pairs of 64..127 bytes through one entry point each, for
 * instruction counts beside workloads.c's `pairs` (malloc+free) and
 * cxx_workload.cc's `cxx_pairs`: `entry_pairs <name> [scale]`, 1 M pairs at
 * scale 1, printing a checksum.
 *   calloc:  calloc(1, n) + free
 *   realloc: malloc + realloc 16 bytes larger + free
 *   posix_memalign, aligned_alloc, memalign: 64-byte aligned, + free
 *   mallocx: jemalloc's mallocx + sdallocx, looked up at run time (exits 3
 *            when the allocator has none)
 *   rallocx: mallocx + rallocx 16 bytes larger + sdallocx (the same)
 *   new:     operator new + sized operator delete (what `delete p` is)
 *   mmap:    an anonymous private page mapped and unmapped
 *   usable:  malloc + malloc_usable_size + free (redis asks after every
 *            allocation and before every free, for its accounting) */
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

typedef void *(*Mallocx)(size_t, int);
typedef void (*Sdallocx)(void *, size_t, int);
typedef void *(*Rallocx)(void *, size_t, int);

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long ops = (long)(1e6 * (argc > 2 ? atof(argv[2]) : 1.0));
    const char *w = argv[1];
    Mallocx mallocx = (Mallocx)dlsym(RTLD_DEFAULT, "mallocx");
    Sdallocx sdallocx = (Sdallocx)dlsym(RTLD_DEFAULT, "sdallocx");
    Rallocx rallocx = (Rallocx)dlsym(RTLD_DEFAULT, "rallocx");
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        size_t n = 64 + (i & 63);
        void *volatile p;
        if (!strcmp(w, "calloc")) {
            p = calloc(1, n);
            free(p);
        } else if (!strcmp(w, "realloc")) {
            p = malloc(n);
            p = realloc(p, n + 16);
            free(p);
        } else if (!strcmp(w, "posix_memalign")) {
            void *q;
            if (posix_memalign(&q, 64, n)) return 1;
            p = q;
            free(p);
        } else if (!strcmp(w, "aligned_alloc")) {
            p = aligned_alloc(64, n);
            free(p);
        } else if (!strcmp(w, "memalign")) {
            p = memalign(64, n);
            free(p);
        } else if (!strcmp(w, "rallocx")) {
            if (!mallocx || !rallocx || !sdallocx) return 3;
            p = mallocx(n, 0);
            p = rallocx(p, n + 16, 0);
            sdallocx(p, n + 16, 0);
        } else if (!strcmp(w, "mmap")) {
            p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return 1;
            munmap(p, 4096);
        } else if (!strcmp(w, "mallocx")) {
            if (!mallocx || !sdallocx) return 3;
            p = mallocx(n, 0);
            sdallocx(p, n, 0);
        } else if (!strcmp(w, "usable")) {
            p = malloc(n);
            sum += malloc_usable_size(p) & 1;
            free(p);
        } else if (!strcmp(w, "new")) {
            p = ::operator new(n);
            ::operator delete(p, n);
        } else {
            return 2;
        }
        sum += (uintptr_t)p & 1;
    }
    printf("%s %llu\n", w, (unsigned long long)sum);
    return 0;
}
