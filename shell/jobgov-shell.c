// jobgov-shell: the SHELL jobgov gives make, so that a recipe the kernel's OOM killer ended can run again.
//
// make runs every recipe line as `$(SHELL) -c LINE`. This program runs the real shell ($JOBGOV_SHELL, else
// /bin/sh) with the same arguments and waits. If the shell dies by SIGKILL, it asks jobgov (over $JOBGOV_CONTROL)
// whether that was an OOM kill; jobgov answers "wait" until memory allows the job alone, then "go", and the recipe
// runs once more. Otherwise it ends exactly as the shell did (same status, same signal), so make reports as usual.
// Written in C and kept small: it is started once per recipe line, so it must cost well under a millisecond.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

// One request, one reply line ("go", "wait", "no ..."); NULL when jobgov cannot be reached.
static char *ask(const char *socket_path, const char *request, char *reply, size_t size) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof(addr.sun_path)) { close(fd); return NULL; }
    strcpy(addr.sun_path, socket_path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) { close(fd); return NULL; }
    size_t len = strlen(request), off = 0;
    while (off < len) {
        ssize_t n = write(fd, request + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { close(fd); return NULL; }
        off += (size_t)n;
    }
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = read(fd, reply + got, size - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (memchr(reply, '\n', got)) break;
    }
    close(fd);
    reply[got] = 0;
    return got > 0 ? reply : NULL;
}

// make runs a simple recipe line (no shell syntax, no builtin) without a shell when SHELL is /bin/sh; doing the
// same here keeps a recipe under jobgov-shell at two executions (this and the command), as plain make has one.
// The rules are make's own (job.c: sh_chars, sh_cmds).
static char **simple_command(const char *shell, char **argv) {
    static char *words[256];
    static char copy[8192];
    if (strcmp(shell, "/bin/sh") != 0 || !argv[1] || strcmp(argv[1], "-c") != 0 || !argv[2] || argv[3]) return NULL;
    const char *line = argv[2];
    if (strlen(line) >= sizeof copy || strpbrk(line, "#;\"*?[]&|<>(){}$`'\\^~!=\n%")) return NULL;
    strcpy(copy, line);
    int n = 0;
    for (char *w = strtok(copy, " \t"); w; w = strtok(NULL, " \t")) {
        if (n == 255) return NULL;
        words[n++] = w;
    }
    if (n == 0) return NULL;
    words[n] = NULL;
    static const char *builtins[] = {".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "echo",
        "eval", "exec", "exit", "export", "fc", "fg", "for", "getopts", "hash", "if", "jobs", "kill", "login",
        "logout", "read", "readonly", "return", "set", "shift", "test", "times", "trap", "type", "ulimit", "umask",
        "unalias", "unset", "until", "wait", "while", "[", NULL};
    for (const char **b = builtins; *b; b++) {
        if (strcmp(words[0], *b) == 0) return NULL;
    }
    return words;
}

static int run_shell(const char *shell, char **argv) {
    pid_t pid;
    char **direct = simple_command(shell, argv);
    int err = direct ? posix_spawnp(&pid, direct[0], NULL, NULL, direct, environ)
                     : posix_spawn(&pid, shell, NULL, NULL, argv, environ);
    if (err == ENOENT && direct) {
        fprintf(stderr, "%s: %s: not found\n", shell, direct[0]);
        return 127 << 8;
    }
    if (err != 0) {
        fprintf(stderr, "jobgov-shell: cannot run %s: %s\n", shell, strerror(err));
        return 127 << 8;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return 127 << 8;
    }
    return status;
}

int main(int argc, char **argv) {
    const char *shell = getenv("JOBGOV_SHELL");
    if (!shell || !*shell) shell = "/bin/sh";
    (void)argc;
    argv[0] = (char *)shell;
    int status = run_shell(shell, argv);
    const char *control = getenv("JOBGOV_CONTROL");
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && control && getenv("JOBGOV_NO_RERUN") == NULL) {
        char request[64], reply[256];
        snprintf(request, sizeof request, "rerun %d\n", (int)getpid());
        for (;;) {
            if (!ask(control, request, reply, sizeof reply)) break;
            if (strncmp(reply, "go", 2) == 0) {
                status = run_shell(shell, argv);
                break;
            }
            if (strncmp(reply, "wait", 4) != 0) break;
            struct timespec pause = {0, 200 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    if (WIFSIGNALED(status)) {
        // End the way the shell ended, so make reports "Killed" as it would have.
        signal(WTERMSIG(status), SIG_DFL);
        kill(getpid(), WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
