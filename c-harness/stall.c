/* The collector stalled: its stderr is a pipe the test filled and does not
 * read, so the collector blocks writing a dump's "wrote" line while the
 * program goes on allocating (run with LEAKPROBE_SAMPLE=1).
 *   stall <n>: prints READY; on "fill" fills stderr to the last byte and
 *   prints FULL; on "go" keeps n x 1000 bytes (site_stalled) and prints
 *   ALLOCATED; exits at end of input.
 * Between "fill" and ALLOCATED it allocates nothing else, so every sample
 * taken meanwhile is site_stalled's: in a row or counted as dropped. */
#include <string.h>
#include "common.h"

__attribute__((noinline)) static void site_stalled(int n) {
    for (int i = 0; i < n; i++) keep(malloc(1000));  // SITE site_stalled
}

static void say(const char *line) {
    if (write(1, line, strlen(line)) < 0) exit(3);
}

static void await(const char *word) {
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, word, strlen(word)) != 0) exit(3);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4000;
    printf("READY stall\n");
    fflush(stdout);
    await("fill");
    fill_stderr();
    say("FULL\n");
    await("go");
    site_stalled(n);
    say("ALLOCATED\n");
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
