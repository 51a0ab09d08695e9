/* Privilege drop and chroot under the library; starts as root, run with
 * LEAKPROBE_SAMPLE=1. Keeps 10 x 1000 bytes (site_before), then either
 *   setuid <uid>: drops group and user to <uid>, or
 *   chroot <dir>: chroot(<dir>) and chdir("/"), so /proc is gone,
 * then keeps 10 x 2000 bytes (site_after), prints READY, waits for EOF. */
#include <grp.h>
#include <string.h>
#include "common.h"

__attribute__((noinline)) static void site_before(void) {
    for (int i = 0; i < 10; i++) keep(malloc(1000));
}

__attribute__((noinline)) static void site_after(void) {
    for (int i = 0; i < 10; i++) keep(malloc(2000));
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    site_before();
    if (strcmp(argv[1], "setuid") == 0) {
        uid_t id = (uid_t)atoi(argv[2]);
        if (setgroups(0, NULL) != 0 || setgid(id) != 0 || setuid(id) != 0) return 3;
    } else if (strcmp(argv[1], "chroot") == 0) {
        if (chroot(argv[2]) != 0 || chdir("/") != 0) return 3;
    } else {
        return 2;
    }
    site_after();
    ready_then_wait(argv[1]);
    return 0;
}
