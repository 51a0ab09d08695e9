/* One leak, 1000 x 4096 bytes from `leak_here`, built in each shape a
 * program can call malloc in (Makefile: FRAME0_SHAPES): PIE or not, through
 * the PLT or not (-fno-plt), directly or (-DPOINTER) through a pointer.
 * main takes malloc's address, so a non-PIE build has a canonical PLT entry
 * for it, which every other object's references to `malloc` resolve to.
 * Run with LEAKPROBE_SAMPLE=1 LEAKPROBE_DUMP_AT_EXIT=1 (tests/frame_zero.rs). */
#include <stdlib.h>
void *(*volatile allocate)(size_t);
void *volatile last;
__attribute__((noinline)) void leak_here(void) {
#ifdef POINTER
    for (int i = 0; i < 1000; i++) last = allocate(4096);
#else
    for (int i = 0; i < 1000; i++) last = malloc(4096);
#endif
}
int main(void) { allocate = malloc; leak_here(); return 0; }
