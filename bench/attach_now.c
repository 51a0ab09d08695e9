/* Attaches leakprobe from a constructor the way `scripts/leakprobe attach`'s
 * stub does in a running program (dlopen, then leakprobe_attach): the pairs
 * that follow go through GOT entries the library rewrote, as in an attached
 * process, and callgrind can count them (it cannot follow a ptrace attach).
 * Preloaded only to run early; it interposes nothing. Without
 * ATTACH_NOW_LIBRARY it does nothing (the bare baseline). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor)) static void attach_now(void) {
  const char *library = getenv("ATTACH_NOW_LIBRARY");
  if (library == NULL)
    return;
  void *handle = dlopen(library, RTLD_NOW);
  if (handle == NULL) {
    fprintf(stderr, "attach_now: %s\n", dlerror());
    abort();
  }
  long (*attach)(const char *, const void *) =
      (long (*)(const char *, const void *))dlsym(handle, "leakprobe_attach");
  /* Settings as `attach` passes them: NAME=value lines. */
  long tid = attach ? attach(getenv("ATTACH_NOW_SETTINGS"), NULL) : -100;
  if (tid <= 0) {
    fprintf(stderr, "attach_now: leakprobe_attach returned %ld\n", tid);
    abort();
  }
}
