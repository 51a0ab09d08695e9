/* Leaks 100 x 1000 bytes through libstale (stale_lib.c), then waits; built
 * against the library by tests/python/test_names.py. */
#include "common.h"

void *lib_leak(size_t size);

int main(void) {
    for (int i = 0; i < 100; i++) keep(lib_leak(1000));
    ready_then_wait("stale");
    return 0;
}
