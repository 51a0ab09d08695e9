/* Frame shapes for the unwinder. Built -O2, so most frames find their CFA
 * from %rsp with no frame pointer; on the way to its allocation each site
 * also passes through a frame whose CFA is %rbp-based (alloca), one built
 * with a frame pointer, recursion, and a function whose call follows an
 * early-return epilogue (DW_CFA_remember_state / restore_state). The sites:
 *   site_chain      20 x 1000 B  main -> shapes -> ... -> site_chain
 *   site_deep       20 x 1100 B  under 150 recursive frames (past the cap)
 *   site_thread     20 x 1200 B  the same shapes on a second thread
 *   site_signal     20 x 1300 B  in a signal handler (through a signal frame)
 *   site_altstack   20 x 1500 B  in a signal handler on a signal stack
 *   site_realigned  20 x 1400 B  under a frame that realigns its stack (its
 *                                CFA is a DWARF expression)
 * All are kept live. With the argument "register" it first registers an
 * (empty) unwind table at run time, as JIT compilers do. Prints READY, then
 * waits for end of input. */
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

NOINLINE void *site_altstack(void) {
    void *p = malloc(1500);  // SITE site_altstack
    keep(p);
    return p;
}

NOINLINE void *site_realigned(void) {
    void *p = malloc(1400);  // SITE site_realigned
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

/* Realigning the stack with a variable-length array makes GCC describe the
 * CFA with an expression (through a saved stack pointer). */
__attribute__((force_align_arg_pointer)) NOINLINE static int realigned(int n) {
    char buf[n];
    memset(buf, n, n);
    sink = buf[n - 1];
    return site_realigned() != NULL;
}

void __register_frame_info(const void *table, void *object);

static void shapes(site_fn site, int depth) {
    for (int i = 0; i < N; i++) sink = recurse(site, depth);
}

static void *thread_main(void *arg) {
    (void)arg;
    shapes(site_thread, 3);
    return NULL;
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) site_signal();
    else site_altstack();
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "register") == 0) {
        /* An empty table: libgcc keeps nothing, but the call is made. */
        static const unsigned empty_table[1];
        static void *object[16];
        __register_frame_info(empty_table, object);
    }
    shapes(site_chain, 3);
    shapes(site_deep, 150);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0) return 3;
    pthread_join(t, NULL);
    signal(SIGUSR1, on_signal);
    for (int i = 0; i < N; i++) raise(SIGUSR1);
    stack_t alt = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
    struct sigaction on_alt = {.sa_handler = on_signal, .sa_flags = SA_ONSTACK};
    if (!alt.ss_sp || sigaltstack(&alt, NULL) != 0 || sigaction(SIGWINCH, &on_alt, NULL) != 0) return 4;
    for (int i = 0; i < N; i++) raise(SIGWINCH);
    for (int i = 0; i < N; i++) sink = realigned(40 + i);
    ready_then_wait("unwind_shapes");
    return 0;
}
