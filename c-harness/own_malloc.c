/* A program with its own malloc (a statically linked allocator, reduced to
 * a bump allocator): its allocations cannot reach the library, which must
 * say so. Keeps 100 x 1000 bytes, prints READY, waits for end of input. */
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include "common.h"

static char *arena, *next_free;

void *malloc(size_t n) {
    if (!arena) next_free = arena = mmap(NULL, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    n = (n + 15) & ~(size_t)15;
    void *p = next_free;
    next_free += n + 16;
    return p;
}
void free(void *p) { (void)p; }
void *calloc(size_t n, size_t s) { return memset(malloc(n * s), 0, n * s); }
void *realloc(void *p, size_t n) {
    void *q = malloc(n);
    if (p) memcpy(q, p, n); /* the bump arena is contiguous: reading on is safe */
    return q;
}

int main(void) {
    for (int i = 0; i < 100; i++) keep(malloc(1000));
    ready_then_wait("own_malloc");
    return 0;
}
