/* A page mapped with MAP_FIXED over memory already held, and one mapped
 * into a reservation. argv[1]:
 *   block    malloc(1 MiB) (glibc maps the block itself), a page of it
 *            replaced with mmap(MAP_FIXED), then the block freed (glibc's
 *            own munmap, which the library does not see): nothing of it is
 *            live;
 *   reserve  mmap(PROT_NONE) 1 MiB, a page of it committed with
 *            mmap(MAP_FIXED): that page is live anonymous memory.
 * Then "READY" and wait for the end of stdin. */
#include <string.h>
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char *page;
    if (!strcmp(argv[1], "block")) {
        char *block = malloc(1 << 20);
        if (!block) return 3;
        page = (char *)(((unsigned long)block + 8192) & ~4095UL);
        if (mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != page)
            return 4;
        page[0] = 1;
        free(block);
    } else if (!strcmp(argv[1], "reserve")) {
        char *r = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) return 3;
        page = r + 4096;
        if (mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != page)
            return 4;
        page[0] = 1;
    } else {
        return 2;
    }
    ready_then_wait(argv[1]);
    return 0;
}
