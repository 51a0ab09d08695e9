/* Frame shapes for the unwinder. Built -O2, so most frames find their CFA
 * from %rsp with no frame pointer; on the way to its allocation each site
 * also passes through a frame whose CFA is %rbp-based (alloca), one built
 * with a frame pointer, recursion, and a function whose call follows an
 * early-return epilogue (DW_CFA_remember_state / restore_state). The sites:
 *   site_chain      20 x 1000 B  main -> shapes -> ... -> site_chain
 *   site_deep       20 x 1100 B  under 150 recursive frames (past the cap)
 *   site_thread     20 x 1200 B  the same shapes on a second thread
 *   site_signal     20 x 1300 B  in a signal handler (a signal frame)
 * All are kept live. Prints READY, then waits for end of input. */
#include <alloca.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include "common.h"

#define N 20

/* The compiler may not merge or tail-call these: each allocation keeps its
 * own frame and return address. */
#define NOINLINE __attribute__((noinline, noclone))

NOINLINE void *site_chain(void) {
    void *p = malloc(1000);  // SITE site_chain
    keep(p);
    return p;
}

NOINLINE void *site_deep(void) {
    void *p = malloc(1100);  // SITE site_deep
    keep(p);
    return p;
}

NOINLINE void *site_thread(void) {
    void *p = malloc(1200);  // SITE site_thread
    keep(p);
    return p;
}

NOINLINE void *site_signal(void) {
    void *p = malloc(1300);  // SITE site_signal
    keep(p);
    return p;
}

typedef void *(*site_fn)(void);
static volatile int sink;

NOINLINE static int early_return(site_fn site, int x) {
    if (x < 0) return -1;
    void *p = site();
    sink = ((char *)p)[0] = (char)x;
    return x + 1;
}

__attribute__((optimize("no-omit-frame-pointer"))) NOINLINE static int with_frame_pointer(site_fn site, int x) {
    int r = early_return(site, x);
    sink = r;
    return r + 1;
}

NOINLINE static int with_alloca(site_fn site, int n) {
    char *buf = alloca(n + 16);
    memset(buf, n, n + 16);
    int r = with_frame_pointer(site, buf[n]);
    sink = buf[0];
    return r + buf[1];
}

NOINLINE static int recurse(site_fn site, int depth) {
    volatile char pad[24];
    pad[0] = (char)depth;
    int r = depth == 0 ? with_alloca(site, 40 + pad[0]) : recurse(site, depth - 1);
    return r + pad[0];
}

static void shapes(site_fn site, int depth) {
    for (int i = 0; i < N; i++) sink = recurse(site, depth);
}

static void *thread_main(void *arg) {
    (void)arg;
    shapes(site_thread, 3);
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    site_signal();
}

int main(void) {
    shapes(site_chain, 3);
    shapes(site_deep, 150);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0) return 3;
    pthread_join(t, NULL);
    signal(SIGUSR1, on_signal);
    for (int i = 0; i < N; i++) raise(SIGUSR1);
    ready_then_wait("unwind_shapes");
    return 0;
}
