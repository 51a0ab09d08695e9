/* nohup's shape across the execl family: ignores SIGHUP, then starts
 *   /bin/sh -c 'grep -E "^Sig(Blk|Ign)" /proc/self/status; kill -HUP $$; echo ALIVE'
 * with execl, execle (an environment without LD_PRELOAD) or execlp
 * (argv[1]); "long": execl with arguments past the registers. The new program must start with SIGHUP ignored and not
 * blocked, as without the library (LEAKPROBE_SIGNAL=SIGHUP): it prints
 * its mask and ignored set and survives its own hangup. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include "common.h"

#define SCRIPT "grep -E '^Sig(Blk|Ign)' /proc/self/status; kill -HUP $$; echo ALIVE"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    signal(SIGHUP, SIG_IGN);
    fflush(stdout);
    if (!strcmp(argv[1], "execl")) {
        execl("/bin/sh", "sh", "-c", SCRIPT, (char *)NULL);
    } else if (!strcmp(argv[1], "execle")) {
        char *env[] = {"PATH=/usr/bin:/bin", NULL};
        execle("/bin/sh", "sh", "-c", SCRIPT, (char *)NULL, env);
    } else if (!strcmp(argv[1], "execlp")) {
        execlp("sh", "sh", "-c", SCRIPT, (char *)NULL);
    } else if (!strcmp(argv[1], "long")) {
        /* More arguments than registers: sh prints its twelfth. */
        execl("/bin/sh", "sh", "-c", "echo LAST ${12}", "0", "1", "2", "3", "4", "5", "6", "7",
              "8", "9", "10", "11", "12", (char *)NULL);
    }
    printf("EXEC FAILED %d\n", errno);
    return 1;
}
