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

int jobgov_signal_is_ignored(int sig) {
    struct sigaction current;
    if (sigaction(sig, 0, &current) != 0) return -1;
    return current.sa_handler == SIG_IGN ? 1 : 0;
}

int jobgov_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
