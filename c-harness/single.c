/* A single-threaded program (tests/single.rs). Keeps 64 blocks of 4000 bytes
 * from site_kept, prints "READY <glibc single-threaded flag>", then by mode:
 *   read, epoll_wait, pause: blocks in that call (read and epoll_wait on
 *     stdin, until the test closes it; pause for good). A call that returns
 *     any other way prints "CUT <call> <errno>".
 *   loop: mallocs and frees 100 bytes from site_churn (at most one such
 *     block live at a time) until stdin is closed.
 *   thread: on the line "thread", starts a thread that keeps 32 blocks of
 *     3000 bytes from site_thread, joins it, prints "JOINED"; ends at EOF.
 *   fork: forks; the child prints "CHILD <pid> <flag>" and blocks in read
 *     as the parent does.
 * At the end: "END <flag>". */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include "common.h"

extern char __libc_single_threaded;

__attribute__((noinline)) static void site_kept(void) {
    for (int i = 0; i < 64; i++) keep(malloc(4000));
}

__attribute__((noinline)) static void site_churn(void) {
    char *p = malloc(100);
    p[0] = 1;
    free(p);
}

__attribute__((noinline)) static void *site_thread(void *arg) {
    for (int i = 0; i < 32; i++) keep(malloc(3000));
    return arg;
}

static int stdin_ready(void) {
    struct pollfd p = {0, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

static void block_in(const char *call) {
    char buf[64];
    ssize_t n;
    if (!strcmp(call, "read")) {
        while ((n = read(0, buf, sizeof buf)) > 0) {
        }
        if (n < 0) printf("CUT read %d\n", errno);
    } else if (!strcmp(call, "epoll_wait")) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
        for (;;) {
            int rc = epoll_wait(ep, &ev, 1, -1);
            if (rc < 0) {
                printf("CUT epoll_wait %d\n", errno);
                break;
            }
            if ((n = read(0, buf, sizeof buf)) <= 0) break;
        }
    } else if (!strcmp(call, "pause")) {
        pause();
        printf("CUT pause %d\n", errno);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "read";
    site_kept();
    printf("READY %d\n", __libc_single_threaded);
    fflush(stdout);
    if (!strcmp(mode, "loop")) {
        while (!stdin_ready())
            for (int i = 0; i < 1000; i++) site_churn();
    } else if (!strcmp(mode, "thread")) {
        char line[64];
        while (fgets(line, sizeof line, stdin)) {
            if (!strcmp(line, "thread\n")) {
                pthread_t t;
                pthread_create(&t, NULL, site_thread, NULL);
                pthread_join(t, NULL);
                printf("JOINED\n");
                fflush(stdout);
            }
        }
    } else if (!strcmp(mode, "fork")) {
        pid_t pid = fork();
        if (pid == 0) {
            printf("CHILD %d %d\n", getpid(), __libc_single_threaded);
            fflush(stdout);
        }
        block_in("read");
    } else {
        block_in(mode);
    }
    printf("END %d\n", __libc_single_threaded);
    fflush(stdout);
    return 0;
}
