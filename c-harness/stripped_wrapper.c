/* The application over libwrapped.so (c-harness/wrapped_lib.c): each line
 * on stdin keeps 16 MiB more from app_cache_fill() through isc__mem_get()
 * (a steady leak, in 64 KiB blocks) and prints STEP <n>; READY first. */
#include <string.h>
#include "common.h"

void *isc__mem_get(void *ctx, size_t size);

#define BLOCK (64 << 10)

__attribute__((noinline)) static void app_cache_fill(void) {
    for (int i = 0; i < (16 << 20) / BLOCK; i++) {
        void *p = isc__mem_get(NULL, BLOCK);
        memset(p, 1, 64);
        keep(p);
    }
}

int main(void) {
    char line[64];
    int step = 0;
    printf("READY\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        app_cache_fill();
        printf("STEP %d\n", ++step);
        fflush(stdout);
    }
    return 0;
}
