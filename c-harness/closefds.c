/* A daemon that closes every descriptor it did not open (the library's
 * too: 2..1023; stdin and stdout stay, they are the test's), lowers
 * RLIMIT_NOFILE to 16 and prints "READY". Then, for each line on stdin (the
 * test asks for a dump before each), opens /dev/null 8 times, closes them
 * and prints "FDS <open descriptors> <open() failures so far>". The library
 * must leave the count where it was however many dumps it writes. */
#include <dirent.h>
#include <string.h>
#include <sys/resource.h>
#include "common.h"

static int open_count(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

int main(void) {
    for (int i = 2; i < 1024; i++) close(i);
    struct rlimit lim = {16, 16};
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return 2;
    printf("READY\n");
    fflush(stdout);
    char line[64];
    int failures = 0;
    while (fgets(line, sizeof line, stdin)) {
        int fds[8];
        for (int i = 0; i < 8; i++) {
            fds[i] = open("/dev/null", O_RDONLY);
            failures += fds[i] < 0;
        }
        for (int i = 0; i < 8; i++)
            if (fds[i] >= 0) close(fds[i]);
        printf("FDS %d %d\n", open_count(), failures);
        fflush(stdout);
    }
    return 0;
}
