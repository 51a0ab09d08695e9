/* Another preloaded library that installs its own SIGUSR2 handler from its
 * constructor (as a crash reporter or profiler might): with libleakprobe
 * preloaded before or after it, the signals the program sends itself must
 * reach this handler. Counts them in `other_handled`. */
#include <signal.h>
#include <string.h>

volatile int other_handled;

static void on_usr2(int sig) {
    if (sig == SIGUSR2) other_handled++;
}

__attribute__((constructor)) static void install(void) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_usr2;
    sigaction(SIGUSR2, &act, NULL);
}
