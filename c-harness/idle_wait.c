/* Started without the library, for `leakprobe attach` on an idle process:
 * after "READY" no thread allocates or calls through a GOT entry of the
 * allocator until told to, so the attach must load the library on a thread
 * it borrows in a system call. argv[1] is what the two workers wait in:
 * "sleep" (nanosleep, 500 ms at a time: a call the kernel restarts from its
 * restart block), "pipe" (read on a pipe nobody writes until "report") or
 * "epoll" (epoll_wait with a 500 ms timeout on an eventfd nobody writes: a
 * call a ptrace stop makes fail with EINTR), or "handler" (worker 0 reads its
 * pipe inside a signal handler, worker 1 sleeps); each blocks signals of its own
 * and holds a value in xmm0 across its wait. The main thread waits for its
 * commands in epoll_wait on stdin with a 500 ms timeout, in every mode.
 * Every timed wait checks that it returned 0 and no earlier than asked.
 * Commands on stdin, one a line: "leak N" leaks N MiB in 1 MiB blocks from
 * leak_here() (kept: common.h; answers "LEAKED"); "report" stops the workers and prints
 * "WAITS <completed timed or piped waits> EINTR <n> EARLY <n> CLOBBERED <waits
 * whose xmm0 changed> HANDLED <SIGURGs handled>" (SIGURG has a handler without
 * SA_RESTART: a wait it interrupts fails with EINTR, as it must); "quit"
 * exits 0. */
#include "common.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

enum { WORKERS = 2, WAIT_MS = 500 };
static int mode;  // 's', 'p' or 'e'
static atomic_int stop, started;
static atomic_long waits, eintr, early, clobbered, handled;
static int pipes[WORKERS][2];

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One timed wait's outcome: `rc` as the call returned it (0 on timeout). */
static void timed(int rc, int err, long long t0) {
    if (rc < 0 && err == EINTR) atomic_fetch_add(&eintr, 1);
    else if (rc == 0 && now_ns() - t0 < WAIT_MS * 1000000LL) atomic_fetch_add(&early, 1);
    else if (rc == 0) atomic_fetch_add(&waits, 1);
}

/* The worker's wait, made by the syscall instruction itself with a value
 * held in xmm0 across it (the kernel keeps it; so must an attach that runs
 * code on this thread meanwhile): rc as the kernel returned it (-errno). */
static long raw_wait(long nr, long a0, long a1, long a2, long a3, double *held) {
    register long r10 __asm__("r10") = a3;
    register double x0 __asm__("xmm0") = *held;
    long rc;
    __asm__ volatile("syscall"
                     : "=a"(rc), "+x"(x0)
                     : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10)
                     : "rcx", "r11", "memory");
    *held = x0;
    return rc;
}

/* "handler" mode: worker 0 waits in a signal handler (as one that
 * interrupted malloc could), which no attach may borrow. */
static void on_block(int sig) {
    (void)sig;
    char c;
    atomic_fetch_add(&started, 1);
    if (read(pipes[0][0], &c, 1) != 1) abort();
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    if (mode == 'h' && id == 0) {
        pthread_kill(pthread_self(), SIGRTMIN + 2);  // returns once "report" writes its pipe
        return NULL;
    }
    int ep = epoll_create1(0), ev = eventfd(0, 0);
    struct epoll_event e = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
    sigset_t own;  // a mask of its own, to be kept exactly
    sigemptyset(&own);
    sigaddset(&own, SIGWINCH);
    sigaddset(&own, SIGUSR1 + id);
    pthread_sigmask(SIG_BLOCK, &own, NULL);
    const double pattern = 1234.5 + id;
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&stop)) {
        long long t0 = now_ns();
        double held = pattern;
        long rc;
        if (mode == 's' || mode == 'h') {
            struct timespec ts = {0, WAIT_MS * 1000000L}, rem;
            rc = raw_wait(SYS_nanosleep, (long)&ts, (long)&rem, 0, 0, &held);
            timed(rc < 0 ? -1 : (int)rc, (int)-rc, t0);
        } else if (mode == 'e') {
            struct epoll_event got;
            rc = raw_wait(SYS_epoll_wait, ep, (long)&got, 1, WAIT_MS, &held);
            timed(rc < 0 ? -1 : (int)rc, (int)-rc, t0);
        } else {
            char c;
            rc = raw_wait(SYS_read, pipes[id][0], (long)&c, 1, 0, &held);
            if (rc == -EINTR) atomic_fetch_add(&eintr, 1);
            else if (rc == 1) atomic_fetch_add(&waits, 1);
        }
        if (held != pattern) atomic_fetch_add(&clobbered, 1);
    }
    return NULL;
}

__attribute__((noinline)) void leak_here(int mib) {
    for (int i = 0; i < mib; i++) {
        void *p = malloc(1 << 20);
        keep(p);
        memset(p, 1, 1 << 20);
    }
}

static void on_urg(int sig) {
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1][0] : 's';
    struct sigaction sa = {.sa_handler = on_urg};  // no SA_RESTART: a wait it interrupts fails with EINTR
    sigaction(SIGURG, &sa, NULL);
    struct sigaction blocking = {.sa_handler = on_block};
    sigaction(SIGRTMIN + 2, &blocking, NULL);
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        if (pipe(pipes[i]) != 0) abort();
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    }
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
    while (atomic_load(&started) < WORKERS) sched_yield();
    printf("READY\n");  // stdout's buffer allocated here, before any attach
    fflush(stdout);
    static char line[64];
    size_t have = 0;
    int joined = 0;
    for (;;) {
        long long t0 = now_ns();
        struct epoll_event got;
        int rc = epoll_wait(ep, &got, 1, WAIT_MS);
        if (rc <= 0) {
            timed(rc, errno, t0);
            continue;
        }
        ssize_t n = read(0, line + have, sizeof line - 1 - have);
        if (n <= 0) break;
        have += (size_t)n;
        char *end;
        while ((end = memchr(line, '\n', have))) {
            *end = 0;
            int mib;
            if (sscanf(line, "leak %d", &mib) == 1) {
                leak_here(mib);
                printf("LEAKED\n");
            } else if (strcmp(line, "report") == 0 && !joined) {
                atomic_store(&stop, 1);
                for (int i = 0; i < WORKERS; i++) {
                    if (write(pipes[i][1], "x", 1) != 1) abort();
                    pthread_join(t[i], NULL);
                }
                joined = 1;
                printf("WAITS %ld EINTR %ld EARLY %ld CLOBBERED %ld HANDLED %ld\n", atomic_load(&waits),
                       atomic_load(&eintr), atomic_load(&early), atomic_load(&clobbered),
                       atomic_load(&handled));
            } else if (strcmp(line, "quit") == 0) {
                printf("EXIT\n");
                return 0;
            }
            fflush(stdout);
            have -= (size_t)(end + 1 - line);
            memmove(line, end + 1, have);
        }
    }
    return 1;
}
