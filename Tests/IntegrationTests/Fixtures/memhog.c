/* A memory hog for `jobgov guard`'s root test: grows its anonymous memory by 4 MiB every 100 ms up to a cap,
 * while reading a file larger than what its cgroup leaves for the page cache over and over, so that its cgroup
 * reclaims on nearly every page it charges. The first pass drops the file from the page cache, so that its pages are
 * read again and charged to the hog's cgroup, not to whoever wrote the file. Usage: memhog FILE CAP_MIB */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long cap = atol(argv[2]) << 20, held = 0;
    static char buf[1 << 16];
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (int pass = 0;; pass++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0) return 1;
        if (pass == 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        }
        while (read(fd, buf, sizeof buf) > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
            if (ms >= 100 && held < cap) {
                char *p = malloc(4 << 20);
                if (p) { memset(p, 1, 4 << 20); held += 4 << 20; }
                last = now;
            }
        }
        close(fd);
    }
}
