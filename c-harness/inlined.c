/* Inlined frames: the allocation sits in a function inlined into another
 * inlined function, so one return address stands for three source frames.
 * Run with LEAKPROBE_SAMPLE=1: 64 objects of 512 bytes stay live. */
#include "common.h"

static inline __attribute__((always_inline)) void *new_node(void) {
    return malloc(512);  // SITE new_node
}

static inline __attribute__((always_inline)) void *grow_list(void) {
    return new_node();  // SITE grow_list
}

__attribute__((noinline)) void build_lists(void) {
    for (int i = 0; i < 64; i++) keep(grow_list());  // SITE build_lists
}

int main(void) {
    build_lists();
    ready_then_wait("inlined");
    for (int i = 0; i < nkept; i++) free(kept[i]);
    return 0;
}
