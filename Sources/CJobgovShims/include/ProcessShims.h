#ifndef CJOBGOV_PROCESS_SHIMS_H
#define CJOBGOV_PROCESS_SHIMS_H
// pidfd_send_signal(2) by system call number: glibc's wrapper is recent and its header (<sys/pidfd.h>) is not in
// the Glibc module. (jobgov_pidfd_open is in CJobgovShims.h.)

/// Sends `sig` to the process a pidfd names; -1 with errno ESRCH once it has exited.
int jobgov_pidfd_send_signal(int pidfd, int sig);

#endif
