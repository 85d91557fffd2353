#define _GNU_SOURCE
#include "CJobgovShims.h"
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <signal.h>

int jobgov_bytes_readable(int fd) {
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0) return -1;
    return n;
}

int jobgov_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

int jobgov_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
int jobgov_accept_nonblocking(int listen_fd) {
    return accept4(listen_fd, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

long jobgov_peer_uid(int fd) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return (long)cred.uid;
}

int jobgov_peer_credentials(int fd, int *pid, unsigned *uid, unsigned *gid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int jobgov_signal_is_ignored(int sig) {
    struct sigaction current;
    if (sigaction(sig, 0, &current) != 0) return -1;
    return current.sa_handler == SIG_IGN ? 1 : 0;
}

int jobgov_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#include <errno.h>
#include <sys/wait.h>
#include <string.h>

struct spawn_failure { int stage; int index; int err; };

int jobgov_spawn_into_cgroups(const char *path, char *const argv[], char *const envp[],
                              const char *const procs_files[], int nprocs,
                              const int default_signals[], int ndefault,
                              int *out_pid, int *failed_stage, int *failed_index) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return e;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. */
        struct spawn_failure f = {0, 0, 0};
        char digits[16];
        int n = 0;
        pid_t self = getpid();
        char reversed[16];
        int r = 0;
        do { reversed[r++] = (char)('0' + self % 10); self /= 10; } while (self > 0 && r < 15);
        while (r > 0) digits[n++] = reversed[--r];
        for (int i = 0; i < nprocs; i++) {
            int fd = open(procs_files[i], O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, digits, (size_t)n) != n) {
                f.stage = 1; f.index = i; f.err = errno;
                (void)!write(report[1], &f, sizeof f);
                _exit(127);
            }
            close(fd);
        }
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int i = 0; i < ndefault; i++) sigaction(default_signals[i], &dfl, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, 0);
        execve(path, argv, envp);
        f.stage = 2; f.err = errno;
        (void)!write(report[1], &f, sizeof f);
        _exit(127);
    }
    close(report[1]);
    struct spawn_failure f = {0, 0, 0};
    ssize_t got;
    do { got = read(report[0], &f, sizeof f); } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof f) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *failed_stage = f.stage;
        *failed_index = f.index;
        return f.err ? f.err : EIO;
    }
    *out_pid = pid;
    return 0;
}

/* Swap and page-out: glibc 2.36 has no wrappers for pidfd_open or process_madvise, and Swift cannot call the
 * variadic syscall(2). */
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/swap.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

int jobgov_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

long jobgov_process_madvise(int pidfd, const struct iovec *iov, unsigned long count, int advice) {
    return syscall(SYS_process_madvise, pidfd, iov, count, advice, 0u);
}

int jobgov_swapon(const char *path, int priority) {
    int flags = SWAP_FLAG_PREFER | ((priority << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK);
    return swapon(path, flags);
}

int jobgov_swapoff(const char *path) { return swapoff(path); }
