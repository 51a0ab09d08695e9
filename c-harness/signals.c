/* The dump signal shared with the program. With libleakprobe preloaded
 * (dump signal SIGUSR2), every check prints "CHECK <name> ok" or exits 1.
 * First, with no handler of its own, it waits for "go" on stdin while the
 * test requests a dump: the read must not fail with EINTR. Then:
 * signals the process sends itself reach its handler with its flags and
 * mask; queries return its own handler; SA_RESETHAND, SIG_IGN and SA_RESTART
 * behave. Then READY: the test's external kill -USR2 must produce a dump and
 * must not reach the handler (checked after end of input: "HANDLED <n>"). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

static volatile sig_atomic_t handled, usr1_blocked_inside;

static void check(int ok, const char *name) {
    if (!ok) {
        printf("CHECK %s FAILED\n", name);
        exit(1);
    }
    printf("CHECK %s ok\n", name);
    fflush(stdout);
}

static void on_usr2(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    usr1_blocked_inside = sigismember(&now, SIGUSR1);
    if (sig == SIGUSR2 && info) handled++;
}

static void plain(int sig) {
    (void)sig;
    handled++;
}

static int pipe_fds[2];

/* Whether the main thread sleeps (state S in /proc: blocked in a call). */
static int main_thread_asleep(void) {
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    int fd = open(path, O_RDONLY);
    if (fd < 0) exit(2);
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0) exit(2);
    stat[n] = 0;
    /* "tid (comm) state ...": comm may hold anything but ends at the last ')'. */
    char *end = strrchr(stat, ')');
    return end && end[1] == ' ' && end[2] == 'S';
}

/* Interrupts the main thread's read of the pipe (once it is blocked in it),
 * and writes to the pipe once the handler has run: the read must go on. */
static void *interrupt_then_write(void *main_thread) {
    while (!main_thread_asleep()) usleep(1000);
    int before = handled;
    pthread_kill(*(pthread_t *)main_thread, SIGUSR2);
    while (handled == before) usleep(1000);
    if (write(pipe_fds[1], "x", 1) != 1) exit(2);
    return NULL;
}

int main(void) {
    /* Before the program has a handler: a dump request (the test's kill)
     * must not interrupt a blocking read. */
    printf("READY0\n");
    fflush(stdout);
    char go[8];
    ssize_t got = read(0, go, 3);
    check(got == 3 && memcmp(go, "go\n", 3) == 0, "dump_request_does_not_interrupt_read");

    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_usr2;
    act.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, SIGUSR1);
    check(sigaction(SIGUSR2, &act, &old) == 0 && old.sa_handler == SIG_DFL, "first_install_sees_default");
    check(sigaction(SIGUSR2, NULL, &old) == 0 && old.sa_sigaction == on_usr2 && (old.sa_flags & SA_SIGINFO) &&
              sigismember(&old.sa_mask, SIGUSR1),
          "query_returns_own_handler");

    for (int i = 0; i < 5; i++) pthread_kill(pthread_self(), SIGUSR2);
    raise(SIGUSR2);
    check(handled == 6, "self_sent_signals_reach_handler");
    check(usr1_blocked_inside == 1, "handler_mask_applied");

    /* SA_RESTART: a read interrupted by the signal is restarted. */
    if (pipe(pipe_fds) != 0) return 2;
    pthread_t me = pthread_self(), helper;
    pthread_create(&helper, NULL, interrupt_then_write, &me);
    char c;
    ssize_t n = read(pipe_fds[0], &c, 1);
    pthread_join(helper, NULL);
    check(n == 1 && handled == 7, "sa_restart_restarts_read");

    /* SA_RESETHAND: one delivery, then the disposition is SIG_DFL again. */
    act.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigaction(SIGUSR2, &act, NULL);
    raise(SIGUSR2);
    sigaction(SIGUSR2, NULL, &old);
    check(handled == 8 && old.sa_handler == SIG_DFL, "sa_resethand_is_one_shot");

    /* SIG_IGN: a self-sent signal is ignored, and signal() returns it. */
    check(signal(SIGUSR2, SIG_IGN) == SIG_DFL, "signal_returns_previous");
    raise(SIGUSR2);
    check(handled == 8, "sig_ign_ignores");
    check(signal(SIGUSR2, plain) == SIG_IGN, "signal_returns_sig_ign");
    raise(SIGUSR2);
    check(handled == 9, "signal_handler_called");
    check(sysv_signal(SIGUSR2, plain) == plain, "sysv_signal_returns_previous");
    raise(SIGUSR2);
    sigaction(SIGUSR2, NULL, &old);
    check(handled == 10 && old.sa_handler == SIG_DFL, "sysv_signal_is_one_shot");

    sigaction(SIGUSR2, &(struct sigaction){.sa_sigaction = on_usr2, .sa_flags = SA_SIGINFO | SA_RESTART}, NULL);
    int before = handled;
    ready_then_wait("signals");
    printf("HANDLED %d\n", handled - before);
    return 0;
}
