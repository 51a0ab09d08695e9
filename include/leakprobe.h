/* leakprobe's C API, for programs that want to ask for a dump themselves.
 *
 * The functions exist only while libleakprobe.so is preloaded. Look them up
 * at run time, so the program works with and without it:
 *
 *     #include <dlfcn.h>
 *     #include "leakprobe.h"
 *
 *     leakprobe_dump_fn dump = (leakprobe_dump_fn)dlsym(RTLD_DEFAULT, "leakprobe_dump");
 *     if (dump && dump("/var/tmp/before-reload.heap") != 0) { ... }
 */
#ifndef LEAKPROBE_H
#define LEAKPROBE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Writes a dump now and waits (up to 10 s) until it is written. With a path,
 * the dump is written there (atomically: a temporary file renamed into
 * place, mode 0600); with NULL, as leakprobe.<pid>.<n>.heap in the dump
 * directory, like a dump on signal. Returns 0 when written, -1 otherwise
 * (the reason is one line on stderr and in the log file). Safe to call from
 * any thread, not from a signal handler. */
int leakprobe_dump(const char *path_or_null);

/* Turns the taking of new samples off (0) or on (non-zero). While off,
 * allocations are not sampled, but frees of blocks sampled before are still
 * tracked, so dumps stay correct. Returns the previous setting (1 or 0). */
int leakprobe_set_active(int active);

typedef int (*leakprobe_dump_fn)(const char *path_or_null);
typedef int (*leakprobe_set_active_fn)(int active);

#ifdef __cplusplus
}
#endif
#endif
