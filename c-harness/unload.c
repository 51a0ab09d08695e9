/* Memory allocated by a library that is unloaded before the dump: loads
 * libplugin.so, lets plugin_leak() keep 20 x 777 bytes, dlclose()s it, then
 * waits (READY); its stacks must still name plugin_leak in libplugin.so. */
#include <dlfcn.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *blocks[20];
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) return 3;
    void (*leak)(void **, int) = (void (*)(void **, int))dlsym(h, "plugin_leak");
    leak(blocks, 20);
    if (dlclose(h) != 0) return 4;
    ready_then_wait("unload");
    for (int i = 0; i < 20; i++) free(blocks[i]);
    return 0;
}
