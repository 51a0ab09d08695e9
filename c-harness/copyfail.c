/* A single-threaded program whose process copies fail (tests/single_failures.rs):
 * the library, in single-threaded mode, writes a dump on signal from a copy
 * of the process made with clone. Keeps 64 blocks of 4000 bytes from
 * site_kept, installs the seccomp filter argv[1] names, on every thread
 * (TSYNC: the library's helper, which makes the copies, included), prints
 * "READY <glibc single-threaded flag>", then waits in poll for lines on
 * stdin:
 *   "alloc": keeps 16 blocks of 1000 bytes from site_more, prints "ALLOCATED";
 *   "release" (hold): lets the held copy and every later one go on.
 * At EOF: "END <flag> <polls cut short (EINTR)>", exit 0.
 * Filters:
 *   noclone: clone, clone3, fork and vfork fail with EPERM: no thread, no
 *     process can be made;
 *   noprocess: threads can be made, processes cannot (as in sandboxes):
 *     clone without CLONE_THREAD, fork and vfork fail with EPERM, clone3
 *     with ENOSYS (its flags are out of a filter's sight; glibc then uses
 *     clone);
 *   hold: prctl(PR_SET_PDEATHSIG), which the library's copy calls first and
 *     this program never does, waits for this program (a seccomp listener),
 *     which prints "COPY <pid>" and holds it until "release": the copy hangs
 *     until then, or until it is killed. */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include "common.h"

extern char __libc_single_threaded;

#define LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
#define JEQ(value, jt, jf) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (value), (jt), (jf))
#define RET(action) BPF_STMT(BPF_RET | BPF_K, (action))
#define ALLOW RET(SECCOMP_RET_ALLOW)
/* Not x86-64 (the library's single-threaded mode is x86-64 only): allowed. */
#define ARCH LOAD(arch), JEQ(AUDIT_ARCH_X86_64, 1, 0), ALLOW

static struct sock_filter noclone[] = {
    ARCH,
    LOAD(nr),
    JEQ(__NR_clone, 4, 0),
    JEQ(__NR_clone3, 3, 0),
    JEQ(__NR_fork, 2, 0),
    JEQ(__NR_vfork, 1, 0),
    ALLOW,
    RET(SECCOMP_RET_ERRNO | EPERM),
};

static struct sock_filter noprocess[] = {
    ARCH,
    LOAD(nr),
    JEQ(__NR_clone3, 8, 0),
    JEQ(__NR_fork, 6, 0),
    JEQ(__NR_vfork, 5, 0),
    JEQ(__NR_clone, 1, 0),
    ALLOW,
    LOAD(args[0]), /* the flags' low half */
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
    ALLOW,
    RET(SECCOMP_RET_ERRNO | EPERM),
    RET(SECCOMP_RET_ERRNO | ENOSYS),
};

static struct sock_filter hold[] = {
    ARCH,
    LOAD(nr),
    JEQ(__NR_prctl, 1, 0),
    ALLOW,
    LOAD(args[0]),
    JEQ(PR_SET_PDEATHSIG, 0, 1),
    RET(SECCOMP_RET_USER_NOTIF),
    ALLOW,
};

/* The listener's descriptor (hold), or -1. */
static int install(const char *name) {
    struct sock_fprog prog;
    unsigned long flags = SECCOMP_FILTER_FLAG_TSYNC;
    if (!strcmp(name, "noclone")) {
        prog = (struct sock_fprog){sizeof noclone / sizeof *noclone, noclone};
    } else if (!strcmp(name, "noprocess")) {
        prog = (struct sock_fprog){sizeof noprocess / sizeof *noprocess, noprocess};
    } else if (!strcmp(name, "hold")) {
        prog = (struct sock_fprog){sizeof hold / sizeof *hold, hold};
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    } else {
        fprintf(stderr, "copyfail: unknown filter %s\n", name);
        exit(2);
    }
    long rc = -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
        rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (rc < 0) {
        fprintf(stderr, "copyfail: cannot install the %s filter: %s\n", name, strerror(errno));
        exit(2);
    }
    return flags & SECCOMP_FILTER_FLAG_NEW_LISTENER ? (int)rc : -1;
}

__attribute__((noinline)) static void site_kept(void) {
    for (int i = 0; i < 64; i++) keep(malloc(4000));
}

__attribute__((noinline)) static void site_more(void) {
    for (int i = 0; i < 16; i++) keep(malloc(1000));
}

/* Lets a held copy's prctl go on. */
static void let_go(int listener, __u64 id) {
    struct seccomp_notif_resp resp = {.id = id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp); /* ENOENT: it was killed */
}

static void say(const char *line) {
    printf("%s\n", line);
    fflush(stdout);
}

int main(int argc, char **argv) {
    site_kept();
    int listener = install(argc > 1 ? argv[1] : "noclone");
    printf("READY %d\n", __libc_single_threaded);
    fflush(stdout);
    int released = 0, cut = 0;
    __u64 held = 0;
    char line[256];
    size_t len = 0;
    for (;;) {
        struct pollfd fds[2] = {{0, POLLIN, 0}, {listener, POLLIN, 0}};
        if (poll(fds, listener >= 0 ? 2 : 1, -1) < 0) {
            cut++;
            continue;
        }
        if (fds[1].revents & POLLIN) {
            struct seccomp_notif req;
            memset(&req, 0, sizeof req);
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) == 0) {
                if (released) {
                    let_go(listener, req.id);
                } else {
                    held = req.id;
                    printf("COPY %u\n", req.pid);
                    fflush(stdout);
                }
            }
        }
        if (!(fds[0].revents & (POLLIN | POLLHUP))) continue;
        ssize_t n = read(0, line + len, sizeof line - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        char *end;
        while ((end = memchr(line, '\n', len))) {
            *end = 0;
            if (!strcmp(line, "alloc")) {
                site_more();
                say("ALLOCATED");
            } else if (!strcmp(line, "release")) {
                released = 1;
                if (held) let_go(listener, held);
                say("RELEASED");
            }
            len -= (size_t)(end + 1 - line);
            memmove(line, end + 1, len);
        }
    }
    printf("END %d %d\n", __libc_single_threaded, cut);
    fflush(stdout);
    return 0;
}
