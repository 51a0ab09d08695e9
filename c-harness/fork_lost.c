/* A fork while the collector holds its state: the collector is blocked on
 * its "wrote" line to a full stderr pipe (see fill_stderr), so the fork's
 * prepare handler gives up waiting for the state and the child must treat
 * the stacks of its inherited samples as lost (run with LEAKPROBE_SAMPLE=1).
 *   fork_lost <dir>: keeps 50 x 700 bytes (site_inherited), prints READY;
 *   on "fill" fills stderr and prints FULL; on "go" forks and prints
 *   "FORKED <pid>". The child keeps 20 x 300 bytes (site_child), writes
 *   <dir>/child.heap with leakprobe_dump and exits 0 (5 if the dump failed).
 *   The parent then prints "CHILD <exit status>" and exits at end of input. */
#include <dlfcn.h>
#include <string.h>
#include <sys/wait.h>
#include "common.h"
#include "../include/leakprobe.h"

__attribute__((noinline)) static void site_inherited(void) {
    for (int i = 0; i < 50; i++) keep(malloc(700));  // SITE site_inherited
}

__attribute__((noinline)) static void site_child(void) {
    for (int i = 0; i < 20; i++) keep(malloc(300));  // SITE site_child
}

static void await(const char *word) {
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, word, strlen(word)) != 0) exit(3);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    leakprobe_dump_fn dump = (leakprobe_dump_fn)dlsym(RTLD_DEFAULT, "leakprobe_dump");
    if (!dump) return 3;
    site_inherited();
    printf("READY fork_lost\n");
    fflush(stdout);
    await("fill");
    fill_stderr();
    printf("FULL\n");
    fflush(stdout);
    await("go");
    pid_t pid = fork();
    if (pid == 0) {
        site_child();
        char path[4096];
        snprintf(path, sizeof path, "%s/child.heap", argv[1]);
        _exit(dump(path) == 0 ? 0 : 5);
    }
    printf("FORKED %d\n", (int)pid);
    fflush(stdout);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 4;
    printf("CHILD %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
