// failsockets N PROGRAM [ARGS...]: runs PROGRAM (with this pid) so that the first N socket() calls of it and its
// descendants fail with ENFILE, as in a v1 memory cgroup at its limit with the OOM killer held off.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 125;
    int n = atoi(argv[1]);
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof *filter, filter};
    int listener = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        ? (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog) : -1;
    if (listener < 0) {
        perror("failsockets: seccomp");
        return 125;
    }
    pid_t target = getpid();
    if (fork() == 0) {
        // Answers the notifications until the program ends; holds none of its output open.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != target) _exit(0);
        int null = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; fd++) dup2(null, fd);
        struct seccomp_notif_sizes sizes;
        if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0) _exit(1);
        struct seccomp_notif *req = malloc(sizes.seccomp_notif);
        struct seccomp_notif_resp *resp = malloc(sizes.seccomp_notif_resp);
        for (int failed = 0;;) {
            memset(req, 0, sizes.seccomp_notif);
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
                if (errno == EINTR) continue;
                _exit(0);
            }
            memset(resp, 0, sizes.seccomp_notif_resp);
            resp->id = req->id;
            if (failed < n) {
                resp->error = -ENFILE;
                failed++;
            } else {
                resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
            }
            ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
        }
    }
    close(listener);
    execvp(argv[2], argv + 2);
    perror("failsockets: exec");
    return 127;
}
