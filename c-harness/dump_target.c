/* A target for `leakprobe dump`: keeps 64 blocks of 16 KiB (1 MiB) live,
 * prints "READY dump_target", then waits for the end of its input. Run with
 * LEAKPROBE_SAMPLE=1 its dump holds at least those 64 samples; run without
 * the library, a stray SIGUSR2 would kill it (its default action). */
#include "common.h"

#define BLOCKS 64
#define BLOCK (16 << 10)

__attribute__((noinline)) static void site_kept(void) {
    for (int i = 0; i < BLOCKS; i++) keep(malloc(BLOCK));
}

int main(void) {
    site_kept();
    ready_then_wait("dump_target");
    return 0;
}
