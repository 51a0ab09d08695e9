/* Shared by the harness programs: the READY / wait-for-EOF protocol the
 * tests drive, and a place to keep allocations live until the end. */
#ifndef HARNESS_COMMON_H
#define HARNESS_COMMON_H
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Tell the test we are ready to be signalled, then wait until it closes our
 * standard input. */
static inline void ready_then_wait(const char *what) {
    printf("READY %s\n", what);
    fflush(stdout);
    char buf[64];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    }
}

#define KEEP_MAX 8192
static void *kept[KEEP_MAX];
static int nkept;

static inline void keep(void *p) {
    if (!p || nkept == KEEP_MAX) {
        fprintf(stderr, "harness: allocation failed or keep list full\n");
        exit(2);
    }
    kept[nkept++] = p;
}

/* Fills fd 2 (a pipe the test does not read yet) so that the next write
 * blocks: the library's collector then stalls on its next message. Big
 * writes, then single bytes, until the pipe refuses even one. */
static inline void fill_stderr(void) {
    int flags = fcntl(2, F_GETFL);
    fcntl(2, F_SETFL, flags | O_NONBLOCK);
    static char chunk[4096];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = 'x';
    while (write(2, chunk, sizeof chunk) > 0) {
    }
    while (write(2, chunk, 1) > 0) {
    }
    fcntl(2, F_SETFL, flags);
}
#endif
