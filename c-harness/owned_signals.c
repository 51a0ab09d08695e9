/* A program that owns SIGUSR2 (the dump signal) in one way, chosen by
 * argv[1]; without the library it would get exactly this, and so it must
 * with it:
 *   sigwait | signalfd  blocks SIGUSR2 and takes it synchronously: prints
 *                       "GOT <n>" per signal received.
 *   ignore-exec         sets SIG_IGN, then execs a shell that sends itself
 *                       SIGUSR2 and prints "alive" (SIG_IGN is inherited).
 *   exec-mask | system-mask | spawn-mask
 *                       starts a program that prints its blocked-signal mask
 *                       (SigBlk): SIGUSR2 must not be in it.
 *   handler-self        has a handler; a worker thread kill()s its own
 *                       process and a child process kill()s its parent:
 *                       both reach the handler ("HANDLED 2").
 *   handler-rounds      300 rounds of: install a handler, block SIGUSR2, a child kill()s
 *                       its parent and is reaped, sigsuspend until
 *                       handled, back to SIG_DFL; prints "ELSEWHERE 0":
 *                       no handler ran on a thread other than the one that
 *                       unblocked the signal (one that did could leave a
 *                       sigsuspend waiting for ever). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

extern char **environ;
static volatile sig_atomic_t handled;

static volatile pid_t handled_on;

static void on_usr2(int sig) {
    (void)sig;
    handled++;
    handled_on = gettid();
}

static void *self_kill(void *arg) {
    (void)arg;
    kill(getpid(), SIGUSR2);
    return NULL;
}

static void take_synchronously(int use_fd) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int fd = use_fd ? signalfd(-1, &set, SFD_CLOEXEC) : -1;
    /* Declares the wait before READY: a signal sent before a program's first
     * sigwait is taken by the library as a dump request (as documented). */
    struct timespec zero = {0, 0};
    if (!use_fd) sigtimedwait(&set, NULL, &zero);
    printf("READY owned\n");
    fflush(stdout);
    for (int n = 1; n <= 6; n++) {
        int sig = 0;
        if (use_fd) {
            struct signalfd_siginfo si;
            if (read(fd, &si, sizeof si) != sizeof si) exit(3);
            sig = (int)si.ssi_signo;
        } else if (sigwait(&set, &sig) != 0) {
            exit(3);
        }
        printf("GOT %d %s\n", n, sig == SIGUSR2 ? "SIGUSR2" : "other");
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    char *mask_cmd[] = {"grep", "SigBlk", "/proc/self/status", NULL};
    if (!strcmp(mode, "sigwait") || !strcmp(mode, "signalfd")) {
        take_synchronously(!strcmp(mode, "signalfd"));
    } else if (!strcmp(mode, "ignore-exec")) {
        signal(SIGUSR2, SIG_IGN);
        char *sh[] = {"sh", "-c", "kill -USR2 $$; echo alive", NULL};
        execv("/bin/sh", sh);
        return 4;
    } else if (!strcmp(mode, "exec-mask")) {
        execvp("grep", mask_cmd);
        return 4;
    } else if (!strcmp(mode, "system-mask")) {
        return system("grep SigBlk /proc/self/status") == 0 ? 0 : 4;
    } else if (!strcmp(mode, "spawn-mask")) {
        pid_t pid;
        int status;
        if (posix_spawnp(&pid, "grep", NULL, NULL, mask_cmd, environ) != 0) return 4;
        waitpid(pid, &status, 0);
        return 0;
    } else if (!strcmp(mode, "handler-self")) {
        signal(SIGUSR2, on_usr2);
        pthread_t t;
        pthread_create(&t, NULL, self_kill, NULL);
        pthread_join(t, NULL);
        pid_t child = fork();
        if (child == 0) {
            kill(getppid(), SIGUSR2);
            _exit(0);
        }
        /* Reaped only once handled: a sender that is gone cannot be told
         * from an outside one (documented). */
        sigset_t usr2, old;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &usr2, &old);
        while (handled < 2) sigsuspend(&old);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        waitpid(child, NULL, 0);
        printf("HANDLED %d\n", (int)handled);
        fflush(stdout);
        ready_then_wait("handler-self");
        printf("HANDLED %d\n", (int)handled);
    } else if (!strcmp(mode, "handler-rounds")) {
        int elsewhere = 0;
        for (int round = 0; round < 300; round++) {
            sigset_t usr2, old;
            sigemptyset(&usr2);
            sigaddset(&usr2, SIGUSR2);
            handled = 0;
            handled_on = 0;
            signal(SIGUSR2, on_usr2);
            pthread_sigmask(SIG_BLOCK, &usr2, &old);
            pid_t child = fork();
            if (child == 0) {
                kill(getppid(), SIGUSR2);
                _exit(0);
            }
            /* Sent while this thread blocks it: pending until sigsuspend. */
            waitpid(child, NULL, 0);
            while (handled < 1) sigsuspend(&old);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (handled_on != gettid()) elsewhere++;
            signal(SIGUSR2, SIG_DFL);
        }
        printf("ELSEWHERE %d\n", elsewhere);
    } else {
        return 2;
    }
    return 0;
}
