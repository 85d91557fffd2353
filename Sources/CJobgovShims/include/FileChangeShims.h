#ifndef CJOBGOV_FILE_CHANGE_SHIMS_H
#define CJOBGOV_FILE_CHANGE_SHIMS_H
// fanotify and open_by_handle_at: glibc declares them in headers the Glibc module does not import
// (<sys/fanotify.h>, and <fcntl.h> only under _GNU_SOURCE).
#include <stdint.h>
#include <sys/fanotify.h>

/// fanotify_init(2).
int jobgov_fanotify_init(unsigned int flags, unsigned int event_flags);

/// fanotify_mark(2) on a path.
int jobgov_fanotify_mark(int fd, unsigned int flags, uint64_t mask, const char *path);

/// open_by_handle_at(2) with O_PATH, for a `struct file_handle` laid out as the kernel reports it in an fanotify
/// event (handle_bytes, handle_type, then the bytes). Returns a descriptor or -1 with errno set.
int jobgov_open_path_by_handle(int mount_fd, const void *handle);

/// The filesystem id (statfs f_fsid) of an open file, as fanotify reports it, or -1 with errno set.
int jobgov_filesystem_id(int fd, uint64_t *fsid);

#endif
