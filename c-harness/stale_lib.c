/* A shared library that tests/python/test_names.py builds twice, as a
 * distribution upgrade would replace it: the first build leaks through
 * lib_leak; the rebuild (-DREBUILT) puts 8 KiB of padding_function first, so
 * a return address recorded in the first build's lib_leak falls inside
 * padding_function in the second. */
#include <stdlib.h>

#ifdef REBUILT
__attribute__((noinline)) void padding_function(void) {
    __asm__ volatile(".fill 8192, 1, 0x90");
}
#endif

__attribute__((noinline)) void *lib_leak(size_t size) {
    void *p = malloc(size); /* SITE lib_leak */
    return p;
}
