/* Leaves 10 x 4000 bytes live (site_leaked_at_exit) when it returns from
 * main; everything else it allocated is freed. With LEAKPROBE_DUMP_AT_EXIT=1
 * and LEAKPROBE_SAMPLE=1 the exit dump holds exactly the leak. */
#include <stdlib.h>

static void *leaked[10];

__attribute__((noinline)) static void site_leaked_at_exit(void) {
    for (int i = 0; i < 10; i++) leaked[i] = malloc(4000);
}

__attribute__((noinline)) static void site_freed(void) {
    for (int i = 0; i < 100; i++) free(malloc(5000));
}

int main(void) {
    site_leaked_at_exit();
    site_freed();
    return leaked[9] == NULL;
}
