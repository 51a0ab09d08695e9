/* A reference point for `make bench`: a preloaded library that only starts
 * one thread that sleeps forever, as any profiler with a background thread
 * must. glibc's malloc runs its single-threaded fast paths (no arena lock,
 * no atomic fastbin updates) only while a process has never had a second
 * thread, so this alone shows what the thread costs a single-threaded
 * program. */
#include <pthread.h>
#include <unistd.h>

static void *sleep_forever(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, sleep_forever, NULL) == 0) pthread_detach(t);
}
