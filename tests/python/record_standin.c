/* A stand-in for libleakprobe.so that does nothing but publish the record
 * `leakprobe dump` reads (/work/team/record-contract.md), for the tests of the
 * script's reader (test_dump_trust.py compiles it as libleakprobe.so): the
 * directory, signal, refusal and pid from STANDIN_* variables (the pid: its
 * own by default). It answers no dump. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct record {
    uint64_t magic, seq;
    uint32_t length, version;
    char body[4096 - 24];
};
__attribute__((visibility("default"))) struct record leakprobe_published;

__attribute__((constructor)) static void publish(void) {
    const char *dir = getenv("STANDIN_DIR"), *sig = getenv("STANDIN_SIGNAL");
    const char *refusal = getenv("STANDIN_REFUSAL"), *pid = getenv("STANDIN_PID");
    char *p = leakprobe_published.body, *end = p + sizeof leakprobe_published.body;
    p += snprintf(p, end - p, "dir ");
    for (const char *c = dir ? dir : "/tmp"; *c && p + 3 < end; c++) p += snprintf(p, end - p, "%02x", (unsigned char)*c);
    p += snprintf(p, end - p, "\nsignal %s\n", sig ? sig : "12");
    if (pid) p += snprintf(p, end - p, "pid %s\n", pid);
    else p += snprintf(p, end - p, "pid %d\n", (int)getpid());
    if (refusal) p += snprintf(p, end - p, "refusal %s\n", refusal);
    leakprobe_published.length = p - leakprobe_published.body;
    leakprobe_published.version = 1;
    leakprobe_published.seq = 2;
    leakprobe_published.magic = 0x4c45414b50524f42ull;
}
