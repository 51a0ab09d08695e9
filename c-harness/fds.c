/* A program that owns its descriptors, as daemons do. Mode
 *   close-all <data>: closes 2..1023 (the library's too), opens <data>, which
 *                     becomes fd 2, then <data>.1 .. <data>.8 on the numbers
 *                     the library had;
 *   dup2 <data>:      puts <data> on fd 2, keeping everything else;
 * after printing "READY before" and reading one line from stdin (the test
 * asks for a first dump then, so the library has its log open); then prints
 * "READY after" and waits for EOF on stdin; at the end appends "end" to fd 2,
 * exits 0 only if fd 2 is still <data>. The test asks for a dump meanwhile:
 * no library line may land in any of these files. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include "common.h"

static int open_data(const char *path) {
    return open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    printf("READY before\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2;
    int fd;
    if (strcmp(argv[1], "close-all") == 0) {
        for (int i = 2; i < 1024; i++) close(i);
        fd = open_data(argv[2]);
        if (fd != 2) return 3;
        char name[4096];
        for (int i = 1; i <= 8; i++) {
            snprintf(name, sizeof name, "%s.%d", argv[2], i);
            if (open_data(name) < 0) return 3;
        }
    } else if (strcmp(argv[1], "dup2") == 0) {
        fd = open_data(argv[2]);
        if (fd < 0 || dup2(fd, 2) != 2) return 3;
        close(fd);
    } else {
        return 2;
    }
    struct stat before, after;
    if (stat(argv[2], &before) != 0) return 3;
    ready_then_wait("after");
    if (write(2, "end\n", 4) != 4 || fstat(2, &after) != 0) return 4;
    return before.st_ino == after.st_ino && before.st_dev == after.st_dev ? 0 : 5;
}
