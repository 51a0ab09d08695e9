/* Linked against libversioned.so.1, a symlink to libversioned.so.1.0 (the
 * loader's name and the mapped file differ, as for most distribution
 * libraries): keeps 20 blocks from plugin_leak() there, then waits (READY). */
#include "common.h"

void plugin_leak(void **out, int n);

int main(void) {
    void *blocks[20];
    plugin_leak(blocks, 20);
    ready_then_wait("versioned");
    for (int i = 0; i < 20; i++) free(blocks[i]);
    return 0;
}
