/* Address-space exhaustion (run under RLIMIT_AS): allocates blocks of 64 KiB,
 * then 4 KiB, then 64 bytes until malloc returns NULL each time, so no free
 * memory is left to anyone in the process; prints READY <blocks>. Then, per
 * line on stdin: "free" frees everything and prints FREED. At EOF it exits 0:
 * a dump requested meanwhile must not have killed it. */
#include <string.h>
#include "common.h"

struct block {
    struct block *next;
};

static struct block *held;

__attribute__((noinline)) static long fill(size_t size) {
    long n = 0;
    for (struct block *b; (b = malloc(size)) != NULL; n++) {
        b->next = held;
        held = b;
    }
    return n;
}

int main(void) {
    long n = fill(65536) + fill(4096) + fill(64);
    printf("READY %ld\n", n);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strcmp(line, "free\n") == 0) {
            while (held) {
                struct block *next = held->next;
                free(held);
                held = next;
            }
            printf("FREED\n");
            fflush(stdout);
        }
    }
    return 0;
}
