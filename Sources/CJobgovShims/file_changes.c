#define _GNU_SOURCE
#include "FileChangeShims.h"
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <sys/fanotify.h>
#include <sys/vfs.h>

int jobgov_fanotify_init(unsigned int flags, unsigned int event_flags) { return fanotify_init(flags, event_flags); }

int jobgov_fanotify_mark(int fd, unsigned int flags, uint64_t mask, const char *path) {
    return fanotify_mark(fd, flags, mask, AT_FDCWD, path);
}

int jobgov_open_path_by_handle(int mount_fd, const void *handle) {
    // The event's handle is not aligned for struct file_handle: copy it.
    struct file_handle head;
    memcpy(&head, handle, sizeof head);
    struct file_handle *h = malloc(sizeof head + head.handle_bytes);
    if (!h) return -1;
    memcpy(h, handle, sizeof head + head.handle_bytes);
    int fd = open_by_handle_at(mount_fd, h, O_PATH | O_CLOEXEC);
    free(h);
    return fd;
}

int jobgov_filesystem_id(int fd, uint64_t *fsid) {
    struct statfs st;
    if (fstatfs(fd, &st) != 0) return -1;
    memcpy(fsid, &st.f_fsid, sizeof *fsid);
    return 0;
}
