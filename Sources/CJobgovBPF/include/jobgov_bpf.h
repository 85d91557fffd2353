/* What Swift sees of jobgov's BPF side: the interface header shared with bpf/jobgov.bpf.c, plus C helpers for
 * what Swift cannot call directly (libbpf's variadic print callback, the LIBBPF_OPTS macro). */
#ifndef JOBGOV_BPF_H
#define JOBGOV_BPF_H

#include <stddef.h>
#include <sys/vfs.h> /* statfs, for telling a cgroup v2 directory (Glibc does not export it) */
#include "../../../bpf/jobgov_probes.h"

struct bpf_object;

/* bpf_object__open_mem with an object name (LIBBPF_OPTS is a macro Swift cannot expand). NULL and errno on error. */
struct bpf_object *jg_open_object(const void *data, size_t size, const char *name);

/* Keeps libbpf's messages (warnings and, with verbose, debug) in a buffer instead of printing them to stderr; when
 * echo is 1 they are also written to stderr. Call once before opening. */
void jg_capture_libbpf_log(int echo, int verbose);
/* The messages since the last jg_clear_libbpf_log (the tail, if they overflowed the buffer). */
const char *jg_libbpf_log(void);
void jg_clear_libbpf_log(void);

#endif
