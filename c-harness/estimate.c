/* Estimation harness, run at the default sample period (512 KiB):
 *   site_big_leak:   1 GiB kept live in 1 KiB blocks (~2048 samples expected)
 *   site_small_leak: 128 MiB kept live in 48-byte blocks (~256 samples)
 *   site_churn:      1 GiB allocated in 4 KiB blocks, each freed at once
 * Sizes are chosen so the expected sample counts keep the test reliable
 * (see tests/estimate.rs). */
#include <stdint.h>
#include <string.h>
#include "common.h"

#define BIG_N (1u << 20)
#define SMALL_N ((128u << 20) / 48)

static void **big, **small;

__attribute__((noinline)) static void site_big_leak(unsigned i) {
    big[i] = malloc(1024);
}

__attribute__((noinline)) static void site_small_leak(unsigned i) {
    small[i] = malloc(48);
}

__attribute__((noinline)) static void site_churn(void) {
    volatile char *p = malloc(4096);
    p[0] = 1;
    free((void *)p);
}

int main(void) {
    big = calloc(BIG_N, sizeof *big);
    small = calloc(SMALL_N, sizeof *small);
    /* Interleave the sites, as a real program would. */
    for (unsigned i = 0; i < BIG_N; i++) {
        site_big_leak(i);
        if (i % 16 == 0) for (int k = 0; k < 4; k++) site_churn();
    }
    for (unsigned i = 0; i < SMALL_N; i++) site_small_leak(i);
    ready_then_wait("estimate");
    for (unsigned i = 0; i < BIG_N; i++) free(big[i]);
    for (unsigned i = 0; i < SMALL_N; i++) free(small[i]);
    free(big);
    free(small);
    return 0;
}
