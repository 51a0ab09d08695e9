/* Unwinding vs the dynamic loader: one thread dlopen()s and dlclose()s a
 * library in a loop while others allocate with every allocation sampled
 * (LEAKPROBE_SAMPLE=1), so stacks are captured while the loader changes the
 * set of loaded objects. It must simply finish. */
#include <dlfcn.h>
#include <pthread.h>
#include "common.h"

#define ALLOCATORS 2
static volatile int stop;
static const char *plugin_path;

static void *loader(void *arg) {
    (void)arg;
    for (int i = 0; i < 3000; i++) {
        void *h = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            exit(2);
        }
        int (*work)(int) = (int (*)(int))dlsym(h, "plugin_work");
        work(i);
        dlclose(h);
    }
    stop = 1;
    return NULL;
}

__attribute__((noinline)) static void *site_allocator(void *arg) {
    (void)arg;
    long n = 0;
    while (!stop) {
        void *p = malloc(32 + n++ % 1000);
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    plugin_path = argv[1];
    printf("READY dlopen_loop\n");
    fflush(stdout);
    pthread_t l, a[ALLOCATORS];
    for (int i = 0; i < ALLOCATORS; i++) pthread_create(&a[i], NULL, site_allocator, NULL);
    pthread_create(&l, NULL, loader, NULL);
    pthread_join(l, NULL);
    for (int i = 0; i < ALLOCATORS; i++) pthread_join(a[i], NULL);
    printf("DONE\n");
    return 0;
}
