/* System V shared memory attached with shmat, for the shm mapped rows
 * (tests/python/test_mapped.py): prints "TRUTH site bytes" for the bytes
 * each site keeps attached, then READY, then waits for end of input.
 *   site_attach:      8 segments of 4 MiB, touched and kept
 *   site_detached:    4 segments of 2 MiB, detached again (shmdt)
 *   site_odd:         1 MiB + 100 bytes: the kernel maps whole pages
 *   site_hole:        4 MiB with 1 MiB unmapped in the middle (munmap)
 *   site_head_gone:   4 MiB, its head unmapped, then detached
 *   site_remap:       2 MiB attached with SHM_REMAP over the middle of an
 *                     anonymous mapping of 4 MiB (site_under), which keeps 2
 * Every segment is marked for removal once attached (IPC_RMID): it goes when
 * the process does. Prints "SKIP <why>" and exits 0 if System V shared
 * memory cannot be had here. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include "common.h"

#define MIB ((size_t)1 << 20)
#define PAGE ((size_t)4096)

static void truth(const char *site, size_t bytes) { printf("TRUTH %s %zu\n", site, bytes); }

/* A new segment of `size` bytes attached at `at` (NULL: anywhere). */
static char *attach(size_t size, void *at, int flags) {
    int id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    if (id < 0) {
        printf("SKIP shmget: %s\n", strerror(errno));
        exit(0);
    }
    char *p = shmat(id, at, flags);
    shmctl(id, IPC_RMID, NULL);
    if (p == (void *)-1) exit(3);
    return p;
}

__attribute__((noinline)) static char *site_attach(void) { return attach(4 * MIB, NULL, 0); }
__attribute__((noinline)) static char *site_detached(void) { return attach(2 * MIB, NULL, 0); }
__attribute__((noinline)) static char *site_odd(void) { return attach(MIB + 100, NULL, 0); }
__attribute__((noinline)) static char *site_hole(void) { return attach(4 * MIB, NULL, 0); }
__attribute__((noinline)) static char *site_head_gone(void) { return attach(4 * MIB, NULL, 0); }
__attribute__((noinline)) static char *site_under(void) {
    char *p = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(3);
    return p;
}
__attribute__((noinline)) static char *site_remap(char *at) { return attach(2 * MIB, at, SHM_REMAP); }

int main(void) {
    for (int i = 0; i < 8; i++) memset(site_attach(), 1, 4 * MIB);
    truth("site_attach", 32 * MIB);
    for (int i = 0; i < 4; i++)
        if (shmdt(site_detached())) exit(3);
    truth("site_detached", 0);
    site_odd()[MIB] = 1;
    truth("site_odd", MIB + PAGE);
    char *hole = site_hole();
    if (munmap(hole + MIB, MIB)) exit(3);
    truth("site_hole", 3 * MIB);
    char *head = site_head_gone();
    if (munmap(head, MIB) || shmdt(head)) exit(3);
    truth("site_head_gone", 0);
    char *under = site_under();
    if (site_remap(under + MIB) != under + MIB) exit(3);
    truth("site_under", 2 * MIB);
    truth("site_remap", 2 * MIB);
    fflush(stdout);
    ready_then_wait("shm");
    return 0;
}
