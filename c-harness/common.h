/* Shared by the harness programs: the READY / wait-for-EOF protocol the
 * tests drive, and a place to keep allocations live until the end. */
#ifndef HARNESS_COMMON_H
#define HARNESS_COMMON_H
#include <errno.h>
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
#endif
