// jobgov-shell: the SHELL jobgov gives make, so that a recipe the kernel's OOM killer ended can run again.
//
// make runs every recipe line as `$(SHELL) -c LINE`. This program runs the real shell ($JOBGOV_SHELL, else
// /bin/sh) with the same arguments and waits. If the line fails in any way (a nonzero exit or a signal), it asks
// jobgov (over $JOBGOV_CONTROL) whether the OOM killer caused it: `rerun PID STATUS`, its own pid and the raw wait
// status. Not only a SIGKILL of the shell counts: the victim is usually a child (gcc's cc1plus, lto1, ld), and its
// parent then exits 1, "compilation terminated". jobgov, which saw the kill, answers "no ..." at once when nothing
// in that recipe was an OOM victim, else "wait" until memory allows the job alone, then "go", and the line runs once
// more. Otherwise (and when jobgov cannot be reached) it ends exactly as the shell did (same status, same signal),
// so make reports as usual. A success asks nothing. The kernel being short of memory for the question is not
// jobgov being unreachable: see short_of_memory.
//
// It is started once per recipe line, so it must cost next to nothing (a build of 3000 `@true` recipes pays it
// 3000 times). Hence:
// - On x86_64 and aarch64 it is built without libc (-nostdlib -static -ffreestanding: its own _start and system
//   calls, a few KB). Starting a dynamically linked program costs the loader and libc's start-up, several times
//   the exec itself; elsewhere it is built against libc, from the same code.
// - The child starts with clone(CLONE_VM | CLONE_VFORK) (vfork in the libc build), as posix_spawn does: no page
//   tables to copy.
// - A simple recipe line runs without a shell, as make itself does when SHELL is /bin/sh, so that a recipe costs
//   two executions (this and the command), as plain make has one.
// - Nothing else runs on the common path: one pass over the environment, no socket unless the recipe failed.
#ifndef FREESTANDING  // -DFREESTANDING=0 builds against libc anywhere (tests do, to try that build too)
#if defined(__x86_64__) || defined(__aarch64__)
#define FREESTANDING 1
#else
#define FREESTANDING 0
#endif
#endif

static int run(char **argv, char **envp);
static void end_by_signal(int sig);
#define sys1(n, a) sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

#if FREESTANDING
// What libc's headers would give; these numbers are the same on both architectures unless marked.
typedef unsigned long size_t;
#define ENOENT 2
#define EINTR 4
#define EAGAIN 11
#define ENOMEM 12
#define EACCES 13
#define ENOTDIR 20
#define ENFILE 23
#define EPIPE 32
#define ENAMETOOLONG 36
#define ENOBUFS 105
#define SIGCHLD 17
#define SIG_UNBLOCK 1
#define AF_UNIX 1
#define SOCK_STREAM 1
#define SOCK_CLOEXEC 02000000
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
#define RLIMIT_CORE 4
#if defined(__x86_64__)
enum { SYS_read = 0, SYS_write = 1, SYS_close = 3, SYS_rt_sigaction = 13, SYS_rt_sigprocmask = 14, SYS_getpid = 39,
       SYS_socket = 41, SYS_connect = 42, SYS_clone = 56, SYS_execve = 59, SYS_exit = 60, SYS_wait4 = 61,
       SYS_kill = 62, SYS_clock_nanosleep = 230, SYS_prlimit64 = 302 };
#else
enum { SYS_read = 63, SYS_write = 64, SYS_close = 57, SYS_rt_sigaction = 134, SYS_rt_sigprocmask = 135,
       SYS_clock_nanosleep = 115, SYS_getpid = 172, SYS_socket = 198, SYS_connect = 203, SYS_clone = 220,
       SYS_execve = 221, SYS_exit = 93, SYS_wait4 = 260, SYS_kill = 129, SYS_prlimit64 = 261 };
#endif

// A system call: the result, or -errno.
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#else
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c,
                  x3 __asm__("x3") = d, x4 __asm__("x4") = e, x5 __asm__("x5") = f;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
#endif
}

// clone_run(flags, stack_top, fn, arg): a child that calls fn(arg) on its own stack and exits with its result.
// With CLONE_VM | CLONE_VFORK it shares this process's memory, and this process sleeps until the child has
// called execve or exited (so the child may use static memory). Written in assembly because after clone the
// child must not return into a C frame.
long clone_run(long flags, void *stack_top, int (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".pushsection .text\n.type clone_run,@function\nclone_run:\n"
        "  and $-16, %rsi\n  sub $16, %rsi\n"
        "  mov %rdx, (%rsi)\n  mov %rcx, 8(%rsi)\n"          // fn and arg on the child's stack
        "  xor %edx, %edx\n  xor %r10d, %r10d\n  xor %r8d, %r8d\n"
        "  mov $56, %eax\n  syscall\n"                         // clone(flags, stack, 0, 0, 0)
        "  test %rax, %rax\n  jnz 1f\n"
        "  xor %ebp, %ebp\n  pop %rax\n  pop %rdi\n  call *%rax\n"  // child: fn(arg)
        "  mov %eax, %edi\n  mov $60, %eax\n  syscall\n  hlt\n"    // exit(result)
        "1: ret\n.popsection\n");
#else
__asm__(".pushsection .text\n.type clone_run,%function\nclone_run:\n"
        "  and x1, x1, #-16\n  stp x2, x3, [x1, #-16]!\n"     // fn and arg on the child's stack
        "  mov x2, xzr\n  mov x3, xzr\n  mov x4, xzr\n"
        "  mov x8, #220\n  svc 0\n"                            // clone(flags, stack, 0, 0, 0)
        "  cbnz x0, 1f\n"
        "  ldp x1, x0, [sp], #16\n  mov x29, xzr\n  blr x1\n"  // child: fn(arg)
        "  mov x8, #93\n  svc 0\n"                             // exit(result)
        "1: ret\n.popsection\n");
#endif

// The kernel starts here: argc, then argv and the environment, on the stack.
void start_c(long *sp);
void start_c(long *sp) {
    char **argv = (char **)(sp + 1);
    int status = run(argv, argv + sp[0] + 1);
    sys6(SYS_exit, status, 0, 0, 0, 0, 0);
}
#if defined(__x86_64__)
__asm__(".pushsection .text\n.global _start\n_start:\n"
        "  xor %ebp, %ebp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n  hlt\n.popsection\n");
#else
__asm__(".pushsection .text\n.global _start\n_start:\n  mov x29, xzr\n  mov x0, sp\n  bl start_c\n  brk #0\n.popsection\n");
#endif

// The compiler may emit calls to these for struct copies and zeroing, even freestanding.
void *memset(void *d, int c, size_t n) {
    for (unsigned char *p = d; n--;) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    for (const unsigned char *q = s; n--;) *p++ = *q++;
    return d;
}

// Ends this program by the signal that ended the recipe: the signal's default action, unblocked, and no core dump
// of this program (it would overwrite the recipe's own core).
static void end_by_signal(int sig) {
    struct { long handler, flags, restorer, mask; } dfl = {0, 0, 0, 0};
    unsigned long mask = 1UL << (sig - 1);
    struct { unsigned long soft, hard; } limit;
    if (sys4(SYS_prlimit64, 0, RLIMIT_CORE, 0, &limit) == 0) {
        limit.soft = 0;
        sys4(SYS_prlimit64, 0, RLIMIT_CORE, &limit, 0);
    }
    sys4(SYS_rt_sigaction, sig, &dfl, 0, 8);
    sys4(SYS_rt_sigprocmask, SIG_UNBLOCK, &mask, 0, 8);
    sys3(SYS_kill, sys1(SYS_getpid, 0), sig, 0);
}

#else // against libc, for other architectures
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CLONE_VM 0
#define CLONE_VFORK 0
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
// vfork, like the clone above: the child only runs fn, which ends in execve or _exit, and never returns here.
static long clone_run(long flags, void *stack_top, int (*fn)(void *), void *arg) {
    (void)flags, (void)stack_top;
    pid_t pid = vfork();
    if (pid == 0) _exit(fn(arg));
    return pid < 0 ? -errno : pid;
}
static void end_by_signal(int sig) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_CORE, &limit) == 0) {
        limit.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &limit);
    }
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(sig, &dfl, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, 0);
    kill(getpid(), sig);
}
int main(int argc, char **argv, char **envp) {
    (void)argc;
    return run(argv, envp);
}
#endif

static size_t length(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}
// s after the prefix, or NULL.
static const char *after(const char *s, const char *prefix) {
    while (*prefix) {
        if (*s++ != *prefix++) return 0;
    }
    return s;
}
static void say(const char *a, const char *b, const char *c) {
    const char *parts[] = {a, b, c, "\n"};
    for (int i = 0; i < 4; i++) sys3(SYS_write, 2, parts[i], length(parts[i]));
}

// What the child runs: `words` when the line needs no shell, else (or if those cannot run) the shell.
struct command {
    const char *shell;
    char **argv;   // as make gave it, argv[0] replaced by the shell
    char **words;  // a simple line split into words, or NULL
    const char *path;
    char **envp;
};

static char path_buffer[4096];

// In the child: runs the command like the shell's PATH search (execvp); if that fails (not found, not
// executable, a script without #!), the shell runs the line instead and says why, in its own words.
static int child(void *arg) {
    struct command *c = arg;
    if (c->words) {
        const char *name = c->words[0];
        for (const char *s = name; *s; s++) {
            if (*s == '/') {
                sys3(SYS_execve, name, c->words, c->envp);
                goto shell;
            }
        }
        size_t name_length = length(name);
        for (const char *dir = c->path; dir; ) {
            const char *end = dir;
            while (*end && *end != ':') end++;
            size_t n = (size_t)(end - dir);
            if (n + 1 + name_length < sizeof path_buffer) {
                char *p = path_buffer;
                for (size_t i = 0; i < n; i++) *p++ = dir[i];
                if (n > 0) *p++ = '/';  // an empty entry is the current directory
                for (size_t i = 0; i <= name_length; i++) *p++ = name[i];
                long err = sys3(SYS_execve, path_buffer, c->words, c->envp);
                if (err != -ENOENT && err != -ENOTDIR && err != -EACCES) break;
            }
            dir = *end ? end + 1 : 0;
        }
    }
shell:
    sys3(SYS_execve, c->shell, c->argv, c->envp);
    say("jobgov-shell: cannot run ", c->shell, "");
    return 127;
}

// make runs a simple recipe line (no shell syntax, no builtin) without a shell when SHELL is /bin/sh; this does
// the same. The rules are make's own (job.c: sh_chars, sh_cmds), a little stricter.
static char **simple_command(const char *shell, char **argv) {
    static char *words[16384];
    static char copy[131072];  // the kernel's limit for one argument (MAX_ARG_STRLEN)
    const char *line = argv[1] && argv[2] && !argv[3] && same(argv[1], "-c") ? argv[2] : 0;
    if (!line || !same(shell, "/bin/sh")) return 0;
    static const unsigned char special[256] = {
        ['#'] = 1, [';'] = 1, ['"'] = 1, ['*'] = 1, ['?'] = 1, ['['] = 1, [']'] = 1, ['&'] = 1, ['|'] = 1,
        ['<'] = 1, ['>'] = 1, ['('] = 1, [')'] = 1, ['{'] = 1, ['}'] = 1, ['$'] = 1, ['`'] = 1, ['\''] = 1,
        ['\\'] = 1, ['^'] = 1, ['~'] = 1, ['!'] = 1, ['='] = 1, ['\n'] = 1, ['%'] = 1};
    int n = 0;
    char *out = copy;
    for (const char *s = line; *s; s++) {
        if (special[(unsigned char)*s] || out >= copy + sizeof copy - 1) return 0;
        if (*s == ' ' || *s == '\t') {
            *out++ = 0;
            continue;
        }
        if (out == copy || out[-1] == 0) {
            if ((size_t)n == sizeof words / sizeof *words - 1) return 0;
            words[n++] = out;
        }
        *out++ = *s;
    }
    *out = 0;
    if (n == 0) return 0;
    words[n] = 0;
    static const char *builtins[] = {".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "echo",
        "eval", "exec", "exit", "export", "fc", "fg", "for", "getopts", "hash", "if", "jobs", "kill", "login",
        "logout", "read", "readonly", "return", "set", "shift", "test", "times", "trap", "type", "ulimit", "umask",
        "unalias", "unset", "until", "wait", "while", "[", 0};
    for (const char **b = builtins; *b; b++) {
        if (same(words[0], *b)) return 0;
    }
    return words;
}

// Whether a failed system call (its -errno) only says that the kernel is short of memory for now. jobgov ends a
// job early, and its recipe asks to run again, when the build sits at its hard limit; on cgroup v1, where jobgov
// holds the OOM killer off meanwhile, the kernel then refuses what it would charge to the build: socket() fails
// with ENFILE (measured on Linux 6.18), other calls with ENOMEM, ENOBUFS or EAGAIN, until memory is freed. Taken
// for "jobgov is gone", it would end the recipe with its own SIGKILL, which make reports as "Killed", and the build
// would fail for want of an answer; so it is waited out, a pause at a time.
static int short_of_memory(long err) {
    return err == -ENFILE || err == -ENOMEM || err == -ENOBUFS || err == -EAGAIN;
}
// A shortage is waited out for at most SHORT_TRIES pauses of 200 ms in a row (5 minutes).
#define SHORT_TRIES 1500
static void pause_briefly(void) {
    struct { long sec, nsec; } pause = {0, 200 * 1000 * 1000};
    sys4(SYS_clock_nanosleep, 1, 0, &pause, 0);  // CLOCK_MONOTONIC
}

static char child_stack[16384] __attribute__((aligned(16)));

// Runs the command to its end; its wait status.
static int run_child(struct command *c) {
    long pid;
    for (int tries = 1; (pid = clone_run(CLONE_VM | CLONE_VFORK | SIGCHLD, child_stack + sizeof child_stack, child, c)) < 0
                        && short_of_memory(pid) && tries < SHORT_TRIES; tries++) {
        pause_briefly();
    }
    if (pid < 0) {
        say("jobgov-shell: cannot start ", c->shell, "");
        return 127 << 8;
    }
    int status;
    long r;
    while ((r = sys4(SYS_wait4, pid, &status, 0, 0)) == -EINTR) {}
    return r < 0 ? 127 << 8 : status;
}

// The system call that failed in the last ask, for the message.
static const char *failed_call = "";

// One request, one reply line ("go", "wait", "no ..."): 1 with the reply, 0 when jobgov closed the connection
// without one, -errno when a system call failed (failed_call names it).
static long ask(const char *socket_path, const char *request, char *reply, size_t size) {
    struct { unsigned short family; char path[108]; } addr = {AF_UNIX, {0}};
    size_t n = length(socket_path);
    failed_call = "connect";
    if (n >= sizeof addr.path) return -ENAMETOOLONG;
    for (size_t i = 0; i < n; i++) addr.path[i] = socket_path[i];
    long fd = sys3(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        failed_call = "socket";
        return fd;
    }
    long err = sys3(SYS_connect, fd, &addr, sizeof addr);
    size_t got = 0, len = length(request), off = 0;
    while (err == 0 && off < len) {
        long w = sys3(SYS_write, fd, request + off, len - off);
        if (w == -EINTR) continue;
        if (w <= 0) {
            failed_call = "write";
            err = w < 0 ? w : -EPIPE;
        } else {
            off += (size_t)w;
        }
    }
    if (err == 0) failed_call = "read";  // an end of file here is "read: no reply", not connect's
    while (err == 0 && got + 1 < size) {
        long r = sys3(SYS_read, fd, reply + got, size - 1 - got);
        if (r == -EINTR) continue;
        if (r < 0) err = r;
        if (r <= 0) break;
        got += (size_t)r;
        if (reply[got - 1] == '\n') break;
    }
    sys1(SYS_close, fd);
    reply[got] = 0;
    return err < 0 ? err : got > 0;
}

// Writes n in decimal at p; the end of the digits.
static char *decimal(char *p, unsigned long n) {
    char digits[24];
    int k = 0;
    do digits[k++] = (char)('0' + n % 10); while ((n /= 10) > 0);
    while (k > 0) *p++ = digits[--k];
    return p;
}

// The recipe failed (wait status `status`): asks jobgov whether to run it again; the final wait status. A run
// again that fails is asked about too: jobgov may have ended it early a second time (or the OOM killer may have),
// and only jobgov knows; it answers "no" to an ordinary failure at once.
static int maybe_rerun(const char *control, struct command *c, int status) {
    for (;;) {
        char request[64] = "rerun ", reply[256];
        char *p = decimal(request + 6, (unsigned long)sys1(SYS_getpid, 0));
        *p++ = ' ';
        p = decimal(p, (unsigned)status);
        *p++ = '\n';
        *p = 0;
        int go = 0;
        for (int short_tries = 0;;) {
            long asked = ask(control, request, reply, sizeof reply);
            if (asked > 0) {
                short_tries = 0;
                if (after(reply, "go")) go = 1;
                if (!after(reply, "wait")) break;
            } else if (!short_of_memory(asked) || ++short_tries >= SHORT_TRIES) {
                // jobgov is gone (or the shortage outlasted every try): the failure stands, and says why here, as
                // make's report of it cannot.
                char why[48], *end = why;
                for (const char *s = failed_call; *s; s++) *end++ = *s;
                for (const char *s = asked == 0 ? ": no reply" : ": errno "; *s; s++) *end++ = *s;
                if (asked < 0) end = decimal(end, (unsigned long)-asked);
                *end = 0;
                say("jobgov-shell: cannot ask jobgov whether to run the failed line again (", why, ")");
                break;
            }
            pause_briefly();
        }
        if (!go) return status;
        status = run_child(c);
        if (status == 0) return 0;
    }
}

static int run(char **argv, char **envp) {
    const char *shell = 0, *control = 0, *path = 0;
    int no_rerun = 0;
    for (char **e = envp; *e; e++) {
        const char *v;
        if (**e == 'J') {
            if ((v = after(*e, "JOBGOV_SHELL="))) shell = v;
            else if ((v = after(*e, "JOBGOV_CONTROL="))) control = v;
            else if (after(*e, "JOBGOV_NO_RERUN=")) no_rerun = 1;
        } else if (**e == 'P' && (v = after(*e, "PATH="))) {
            path = v;
        }
    }
    if (!shell || !*shell) shell = "/bin/sh";
    if (!argv[0]) return 127;  // no arguments at all (argc 0): nothing to pass on
    argv[0] = (char *)shell;
    struct command c = {shell, argv, simple_command(shell, argv),
                        path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", envp};
    int status = run_child(&c);
    if (status != 0 && control && *control && !no_rerun) status = maybe_rerun(control, &c, status);
    int sig = status & 0x7f;  // WTERMSIG; 0 for a normal exit
    if (sig != 0) {
        // End the way the shell ended, so that make reports "Killed" as it would have.
        end_by_signal(sig);
        return 128 + sig;
    }
    return (status >> 8) & 0xff;
}
