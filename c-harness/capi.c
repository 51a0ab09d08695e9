/* The C API, looked up at run time (include/leakprobe.h). Run with
 * LEAKPROBE_SAMPLE=1: keeps 10 x 1000 bytes (site_active), turns sampling
 * off, keeps 10 x 2000 (site_inactive: not sampled), frees 5 of the first
 * (still tracked), turns sampling on, dumps to argv[1] and to the dump
 * directory. Without the library it prints "NO LEAKPROBE". */
#include <dlfcn.h>
#include "../include/leakprobe.h"
#include "common.h"

__attribute__((noinline)) static void site_active(void) {
    for (int i = 0; i < 10; i++) keep(malloc(1000));
}

__attribute__((noinline)) static void site_inactive(void) {
    for (int i = 0; i < 10; i++) keep(malloc(2000));
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    leakprobe_dump_fn dump = (leakprobe_dump_fn)dlsym(RTLD_DEFAULT, "leakprobe_dump");
    leakprobe_set_active_fn set_active = (leakprobe_set_active_fn)dlsym(RTLD_DEFAULT, "leakprobe_set_active");
    if (!dump || !set_active) {
        printf("NO LEAKPROBE\n");
        return 0;
    }
    site_active();
    int was = set_active(0);
    site_inactive();
    for (int i = 0; i < 5; i++) free(kept[i]);
    int off = set_active(1);
    printf("ACTIVE %d %d\n", was, off);
    printf("DUMP %d %d %d\n", dump(argv[1]), dump(NULL), dump("/nonexistent/dir/x.heap"));
    return 0;
}
