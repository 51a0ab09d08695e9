/* Waits that SA_RESTART does not restart (signal(7)): each must block its
 * full time while the test sends dump requests, first on the main thread,
 * then on a worker. Prints "WAIT <call> <thread> ok" or "... FAILED ..." per
 * call, "WAITING" before the first (the test starts its storm), "DONE" after
 * the last. A call cut short returns early, with EINTR or time left. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include "common.h"

#define WAIT_MS 150

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const struct timespec wait_ts = {0, WAIT_MS * 1000000L};

static int do_wait(const char *call) {
    struct timeval tv = {0, WAIT_MS * 1000};
    if (!strcmp(call, "sleep")) return (int)sleep(1) ? -1 : 0; /* 1 s: sleep's unit */
    if (!strcmp(call, "usleep")) return usleep(WAIT_MS * 1000);
    if (!strcmp(call, "nanosleep")) return nanosleep(&wait_ts, NULL);
    if (!strcmp(call, "clock_nanosleep")) return clock_nanosleep(CLOCK_MONOTONIC, 0, &wait_ts, NULL) ? -1 : 0;
    if (!strcmp(call, "poll")) return poll(NULL, 0, WAIT_MS);
    if (!strcmp(call, "ppoll")) {
        sigset_t none;
        sigemptyset(&none);
        return ppoll(NULL, 0, &wait_ts, &none);
    }
    if (!strcmp(call, "select")) return select(0, NULL, NULL, NULL, &tv);
    if (!strcmp(call, "pselect")) {
        sigset_t none;
        sigemptyset(&none);
        return pselect(0, NULL, NULL, NULL, &wait_ts, &none);
    }
    if (!strcmp(call, "epoll_wait") || !strcmp(call, "epoll_pwait")) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev;
        sigset_t none;
        sigemptyset(&none);
        int rc = call[6] == 'p' ? epoll_pwait(ep, &ev, 1, WAIT_MS, &none) : epoll_wait(ep, &ev, 1, WAIT_MS);
        int e = errno;
        close(ep);
        errno = e;
        return rc;
    }
    if (!strcmp(call, "sigtimedwait")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGURG);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        int rc = sigtimedwait(&set, NULL, &wait_ts);
        return rc < 0 && errno == EAGAIN ? 0 : -1;
    }
    if (!strcmp(call, "sem_timedwait")) {
        sem_t s;
        sem_init(&s, 0, 0);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += WAIT_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        int rc = sem_timedwait(&s, &until);
        return rc < 0 && errno == ETIMEDOUT ? 0 : -1;
    }
    if (!strcmp(call, "recv_timeout")) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char c;
        ssize_t n = recv(sv[0], &c, 1, 0);
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        errno = e;
        return n < 0 && (e == EAGAIN || e == EWOULDBLOCK) ? 0 : -1;
    }
    fprintf(stderr, "unknown call %s\n", call);
    exit(2);
}

static const char *calls[] = {"sleep", "usleep", "nanosleep", "clock_nanosleep", "poll", "ppoll",
                              "select", "pselect", "epoll_wait", "epoll_pwait", "sigtimedwait",
                              "sem_timedwait", "recv_timeout"};

static void *run_all(void *thread_name) {
    for (size_t i = 0; i < sizeof calls / sizeof *calls; i++) {
        double full = strcmp(calls[i], "sleep") ? WAIT_MS / 1000.0 : 1.0;
        double t0 = now();
        errno = 0;
        int rc = do_wait(calls[i]);
        int e = errno;
        double took = now() - t0;
        if (rc == 0 && took >= full * 0.98)
            printf("WAIT %s %s ok\n", calls[i], (char *)thread_name);
        else
            printf("WAIT %s %s FAILED rc=%d errno=%s after %.3f s of %.3f\n", calls[i], (char *)thread_name, rc,
                   strerror(e), took, full);
        fflush(stdout);
    }
    return NULL;
}

int main(void) {
    printf("WAITING\n");
    fflush(stdout);
    run_all("main");
    pthread_t t;
    pthread_create(&t, NULL, run_all, "worker");
    pthread_join(t, NULL);
    printf("DONE\n");
    fflush(stdout);
    ready_then_wait("waits");
    return 0;
}
