/* Signals the program sends itself, with libleakprobe preloaded (dump
 * signal SIGUSR2). One shape per argument:
 *  none     no handler of its own: raise, pthread_kill(self), tgkill(self),
 *           kill(getpid()) in turn, each followed by "SENT <form>" and a
 *           wait for a line on stdin (the test answers once it saw the
 *           dump); then "END".
 *  handler  its own handler: the four forms, then "HANDLED <n>" (n == 4
 *           when each reached it, as without the library).
 *  other    no handler of its own, another preloaded library's
 *           (libother_handler.so, installed from its constructor): the
 *           four forms, then "HANDLED <n>", that library's count.
 *  ask300   a leaking workload that asks for its own dump
 *           (kill(getpid())) and exits 300 ms later.
 *  ask0     the same, exiting at once (exit()): the request is still
 *           pending when the exit handlers run.
 *  sleep1   bytehound's dlopen.c shape: sleeps 1 s and exits (the test
 *           signals it at 0.5 s).
 *  serve    "READY", then allocates (leaks) until stdin closes.
 *  fork     forks: the child prints "CHILD <pid>" and waits for the end
 *           of stdin; the parent waits for it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

static volatile sig_atomic_t handled;

static void on_usr2(int sig) {
    if (sig == SIGUSR2) handled++;
}

static void send_form(int form) {
    switch (form) {
    case 0: raise(SIGUSR2); break;
    case 1: pthread_kill(pthread_self(), SIGUSR2); break;
    case 2: tgkill(getpid(), gettid(), SIGUSR2); break;
    default: kill(getpid(), SIGUSR2); break;
    }
}

static const char *const FORMS[] = {"raise", "pthread_kill", "tgkill", "kill"};

static void leak_some(void) {
    for (int i = 0; i < 64; i++) keep(malloc(4000));
}

int main(int argc, char **argv) {
    const char *shape = argc > 1 ? argv[1] : "none";
    if (!strcmp(shape, "none")) {
        leak_some();
        for (int f = 0; f < 4; f++) {
            send_form(f);
            printf("SENT %s\n", FORMS[f]);
            fflush(stdout);
            char line[16];
            if (!fgets(line, sizeof line, stdin)) return 2;
        }
        printf("END\n");
        return 0;
    }
    if (!strcmp(shape, "handler") || !strcmp(shape, "other")) {
        volatile int *count = &handled;
        if (!strcmp(shape, "handler")) {
            struct sigaction act;
            memset(&act, 0, sizeof act);
            act.sa_handler = on_usr2;
            sigaction(SIGUSR2, &act, NULL);
        } else {
            count = dlsym(RTLD_DEFAULT, "other_handled");
            if (!count) return 3;
        }
        for (int f = 0; f < 4; f++) {
            int before = *count;
            send_form(f);
            /* raise, pthread_kill and tgkill to itself run the handler
             * before they return; so does kill(getpid()) when this thread
             * is the one that takes it. */
            if (*count == before) printf("MISSED %s\n", FORMS[f]);
        }
        printf("HANDLED %d\n", *count);
        return 0;
    }
    if (!strcmp(shape, "ask0")) {
        leak_some();
        kill(getpid(), SIGUSR2);
        exit(0);
    }
    if (!strcmp(shape, "ask300")) {
        leak_some();
        kill(getpid(), SIGUSR2);
        struct timespec t = {0, 300 * 1000 * 1000};
        while (nanosleep(&t, &t) < 0 && errno == EINTR) {
        }
        return 0;
    }
    if (!strcmp(shape, "sleep1")) {
        leak_some();
        sleep(1);
        return 0;
    }
    if (!strcmp(shape, "fork")) {
        pid_t child = fork();
        if (child < 0) return 4;
        if (child == 0) {
            printf("CHILD %d\n", (int)getpid());
            fflush(stdout);
            ready_then_wait("child");
            return 0;
        }
        int status;
        return waitpid(child, &status, 0) == child && WIFEXITED(status) ? WEXITSTATUS(status) : 5;
    }
    if (!strcmp(shape, "serve")) {
        printf("READY\n");
        fflush(stdout);
        int flags = fcntl(0, F_GETFL);
        fcntl(0, F_SETFL, flags | O_NONBLOCK);
        char buf[64];
        for (;;) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EAGAIN)) return 0;
            if (nkept < KEEP_MAX) keep(malloc(100));
            struct timespec t = {0, 100 * 1000};
            nanosleep(&t, NULL);
        }
    }
    return 1;
}
