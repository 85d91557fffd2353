#ifndef CJOBGOV_SHIMS_H
#define CJOBGOV_SHIMS_H
// Calls Swift cannot import directly: ioctl and prctl are variadic in C, and glibc hides pipe2 and the
// signalfd header behind _GNU_SOURCE, which the Glibc module is not built with.
#include <sys/signalfd.h>
#include <signal.h>
#include "FileChangeShims.h"
#include "ProcessShims.h"

/// si_code of a signal the kernel itself raised (for instance a terminal's Ctrl-C).
static const int jobgov_si_kernel = SI_KERNEL;

/// pipe2(fds, O_CLOEXEC).
int jobgov_pipe_cloexec(int fds[2]);

/// Bytes waiting in a pipe or FIFO (ioctl FIONREAD), or -1 with errno set.
int jobgov_bytes_readable(int fd);

/// Makes orphaned descendants re-parent to this process (prctl PR_SET_CHILD_SUBREAPER), so jobgov can see when
/// the processes of a client that died are all gone. Returns 0 or -1 with errno set.
int jobgov_set_child_subreaper(void);

/// Asks the kernel to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG).
int jobgov_set_parent_death_signal(int sig);

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int jobgov_accept_nonblocking(int listen_fd);

/// The user id of a Unix socket's peer (SO_PEERCRED), or -1.
long jobgov_peer_uid(int fd);

/// The pid, user and group of a Unix socket's peer (SO_PEERCRED): 0, or -1 with errno set.
int jobgov_peer_credentials(int fd, int *pid, unsigned *uid, unsigned *gid);

/// 1 when `sig` is set to SIG_IGN in this process, 0 when not, -1 on error.
int jobgov_signal_is_ignored(int sig);

/// Starts `path` like posix_spawn, but the child first writes itself into each of `procs_files` (cgroup.procs
/// files), so the build's first process is in its cgroups before it executes anything and nothing escapes.
/// The child also resets `default_signals` to SIG_DFL and unblocks every signal. Returns 0 and sets *out_pid, or
/// returns an errno; *failed_stage tells what failed: 1 joining a cgroup (failed_index is the file), 2 exec.
int jobgov_spawn_into_cgroups(const char *path, char *const argv[], char *const envp[],
                              const char *const procs_files[], int nprocs,
                              const int default_signals[], int ndefault,
                              int *out_pid, int *failed_stage, int *failed_index);

#include <sys/uio.h>

/// MADV_PAGEOUT (Linux 5.4): reclaim the range now, anonymous pages to swap.
static const int jobgov_madv_pageout = 21;
/// The most iovecs one process_madvise call takes (UIO_MAXIOV).
static const int jobgov_iov_max = 1024;

/// pidfd_open(pid, 0) (syscall 434, Linux 5.3): a descriptor that names this process and no later one with the
/// same number. Returns the descriptor or -1 with errno set.
int jobgov_pidfd_open(int pid);

/// process_madvise(pidfd, iov, count, advice, 0) (syscall 440, Linux 5.10). Returns the bytes advised (fewer than
/// asked when a range failed part way) or -1 with errno set.
long jobgov_process_madvise(int pidfd, const struct iovec *iov, unsigned long count, int advice);

/// swapon(path, SWAP_FLAG_PREFER | priority): the flag word packs the priority, a macro Swift cannot import.
int jobgov_swapon(const char *path, int priority);

/// swapoff(path).
int jobgov_swapoff(const char *path);

#endif
