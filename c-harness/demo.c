/* The demo: a toy request loop with a leak. Each request parses its headers
 * into a 4 KiB buffer that parse_headers() means to cache but leaks, and
 * uses a scratch buffer that is freed. Runs until SIGTERM, then says how
 * much it leaked (the truth to compare the profile with). */
#include <signal.h>
#include <string.h>
#include <time.h>
#include "common.h"

__attribute__((noinline)) static char *parse_headers(int id) {
    char *headers = malloc(4096); /* leaked: never freed */
    memset(headers, 'h', 4096);
    headers[0] = (char)id;
    return headers;
}

__attribute__((noinline)) static void render_response(int id) {
    char *scratch = malloc(16384);
    memset(scratch, 'r', 16384);
    scratch[0] = (char)id;
    free(scratch);
}

static volatile sig_atomic_t requests;

static void on_term(int sig) {
    (void)sig;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "demo: handled %d requests, leaked %.1f MiB in parse_headers\n", (int)requests,
                     requests * 4096.0 / (1 << 20));
    if (write(1, msg, n) < 0) _exit(1);
    _exit(0);
}

static void handle_request(int id) {
    parse_headers(id);
    render_response(id);
}

int main(void) {
    printf("demo: pid %d serving requests\n", (int)getpid());
    fflush(stdout);
    signal(SIGTERM, on_term);
    struct timespec pause = {0, 100000};
    for (int id = 0;; id++) {
        handle_request(id);
        requests = id + 1;
        nanosleep(&pause, NULL);
    }
}
