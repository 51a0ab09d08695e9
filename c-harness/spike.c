/* A transient spike: prints READY; on a line of input allocates 500 MiB in
 * 1 MiB blocks (site_spike) and prints HELD; on the next line frees it all,
 * prints DONE and waits for end of input. With LEAKPROBE_PEAK=1 the peak
 * dump must show the spike although it is gone by the time of any later
 * dump. The test frees once the peak dump has been written: how long the
 * collector takes to notice is not the question. */
#include <string.h>
#include "common.h"

static void *blocks[500];

__attribute__((noinline)) static void site_spike(void) {
    for (int i = 0; i < 500; i++) {
        blocks[i] = malloc(1 << 20);
        memset(blocks[i], 1, 4096);
    }
}

int main(void) {
    printf("READY\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 2;
    site_spike();
    printf("HELD\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 2;
    for (int i = 0; i < 500; i++) free(blocks[i]);
    printf("DONE\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
