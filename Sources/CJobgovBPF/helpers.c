#include "jobgov_bpf.h"

#include <bpf/libbpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct bpf_object *jg_open_object(const void *data, size_t size, const char *name)
{
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name);
    return bpf_object__open_mem(data, size, &opts);
}

/* One loader per process at a time (BuildProbes is not Sendable); the buffer needs no lock beyond that. */
static char log_buffer[16384];
static size_t log_used;
static int log_echo;
static int log_verbose;

static int capture(enum libbpf_print_level level, const char *format, va_list args)
{
    if (level == LIBBPF_DEBUG && !log_verbose)
        return 0;
    char line[1024];
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(line, sizeof(line), format, copy);
    va_end(copy);
    if (n < 0)
        return n;
    size_t len = strlen(line);
    if (len >= sizeof(log_buffer))
        len = sizeof(log_buffer) - 1;
    if (log_used + len >= sizeof(log_buffer)) {
        /* keep the newer half */
        size_t keep = sizeof(log_buffer) / 2;
        if (log_used > keep) {
            memmove(log_buffer, log_buffer + log_used - keep, keep);
            log_used = keep;
        }
        if (log_used + len >= sizeof(log_buffer))
            log_used = 0;
    }
    memcpy(log_buffer + log_used, line, len);
    log_used += len;
    log_buffer[log_used] = 0;
    if (log_echo)
        fputs(line, stderr);
    return n;
}

void jg_capture_libbpf_log(int echo, int verbose)
{
    log_echo = echo;
    log_verbose = verbose;
    libbpf_set_print(capture);
}

const char *jg_libbpf_log(void) { return log_buffer; }

void jg_clear_libbpf_log(void)
{
    log_used = 0;
    log_buffer[0] = 0;
}
