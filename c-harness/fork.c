/* fork() under the library (run with LEAKPROBE_SAMPLE=1).
 *   fork [n]: keeps 50 x 1000 bytes (site_before_fork); a thread churns
 *     sampled allocations (so the library's locks are busy) while the main
 *     thread forks n short-lived children that allocate and exit; then forks
 *     one long-lived child that keeps 30 x 2000 bytes (site_in_child).
 *     Prints STARTED first, "CHILD <pid>" (the child prints "CHILD READY"),
 *     then READY;
 *     both exit at end of input.
 *   timing <forks> <dir>: a thread churns sampled allocations meanwhile;
 *     before each fork the main thread keeps 4 x 400 bytes more
 *     (site_timed) and forks at once, 1 ms later or 100 ms later (the first
 *     three forks; then at once); child i writes <dir>/child.<i>.heap with
 *     leakprobe_dump and exits. Prints "FORKED <n>" when all are done.
 *   daemon <pidfile>: daemonizes (fork, setsid, fork; the parents exit),
 *     keeps 20 x 3000 bytes (site_daemon), writes its pid, waits for SIGTERM. */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include "common.h"
#include "../include/leakprobe.h"

static volatile int stop;

__attribute__((noinline)) static void site_before_fork(void) {
    for (int i = 0; i < 50; i++) keep(malloc(1000));
}

__attribute__((noinline)) static void site_in_child(void) {
    for (int i = 0; i < 30; i++) keep(malloc(2000));
}

__attribute__((noinline)) static void site_daemon(void) {
    for (int i = 0; i < 20; i++) keep(malloc(3000));
}

__attribute__((noinline)) static void site_timed(void) {
    for (int i = 0; i < 4; i++) keep(malloc(400));
}

static void *churn(void *arg) {
    (void)arg;
    while (!stop) free(malloc(64));
    return NULL;
}

static int run_forks(int n) {
    printf("STARTED\n");
    fflush(stdout);
    site_before_fork();
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            free(malloc(128));
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    }
    stop = 1;
    pthread_join(t, NULL);
    pid_t child = fork();
    if (child == 0) {
        site_in_child();
        printf("CHILD READY\n");
        fflush(stdout);
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {
        }
        _exit(0);
    }
    printf("CHILD %d\n", (int)child);
    ready_then_wait("fork");
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int run_timing(int forks, const char *dir) {
    leakprobe_dump_fn dump = (leakprobe_dump_fn)dlsym(RTLD_DEFAULT, "leakprobe_dump");
    if (!dump) return 3;
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    static const long delay_us[] = {0, 1000, 100000};
    for (int i = 0; i < forks; i++) {
        site_timed();
        if (i < 3 && delay_us[i]) usleep(delay_us[i]);
        pid_t pid = fork();
        if (pid == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/child.%d.heap", dir, i);
            _exit(dump(path) == 0 ? 0 : 5);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("FORKED %d\n", forks);
    return 0;
}

static int run_daemon(const char *pidfile) {
    if (fork() != 0) _exit(0);
    setsid();
    if (fork() != 0) _exit(0);
    site_daemon();
    int fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char text[32];
    int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (fd < 0 || write(fd, text, n) != n) return 1;
    close(fd);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL);
    int sig;
    sigwait(&term, &sig);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "daemon") == 0) return run_daemon(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "timing") == 0) return run_timing(atoi(argv[2]), argv[3]);
    return run_forks(argc >= 3 ? atoi(argv[2]) : 30);
}
