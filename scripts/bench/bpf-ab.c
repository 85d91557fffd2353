/* bpf-ab: the kernel side of jobgov's BPF overhead, without jobgov-probe-bench (see scripts/bench/bpf-ab).
 *   bpf-ab V2DIR LEVEL MEMDIR REPS MODE... -- CMD...
 * MODE is "off" or NAME=OBJECT:PROGRAMS, PROGRAMS being "all" or names joined by "+". Every object is loaded once
 * (jobgov's jg_config and jg_cgroup maps set for V2DIR, as BuildProbes does); a mode's programs are attached only
 * while its run lasts (LEVEL: V2DIR's depth below the v2 root), and its ring buffer is drained after the run, outside the timing, as jobgov's tick would.
 * Each rep runs every mode once, rotating which goes first. CMD runs in V2DIR and MEMDIR ("-" for none).
 * Prints "NAME CPU_US WALL_US" per run: CPU is the rusage of the waited child (its waited descendants included). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../../bpf/jobgov_probes.h"

#define MAX_MODES 16
#define MAX_PROGS 32

struct mode {
    const char *name;
    struct bpf_object *obj;
    struct bpf_program *progs[MAX_PROGS];
    int count;
    struct ring_buffer *events;
};

static int quiet(enum libbpf_print_level level, const char *format, va_list args)
{
    return level == LIBBPF_WARN ? vfprintf(stderr, format, args) : 0;
}

static int ignore(void *ctx, void *data, size_t size) { return 0; }

static int load(struct mode *m, char *spec, unsigned long long cgroup_id, int cgroup_fd, unsigned level)
{
    char *colon = strchr(spec, ':');
    if (!colon)
        return -1;
    *colon = 0;
    const char *programs = colon + 1;
    m->obj = bpf_object__open_file(spec, NULL);
    if (!m->obj)
        return -1;
    struct bpf_program *p;
    bpf_object__for_each_program(p, m->obj) {
        char list[1024], me[128];
        snprintf(list, sizeof(list), "+%s+", programs);
        snprintf(me, sizeof(me), "+%s+", bpf_program__name(p));
        bool on = strcmp(programs, "all") == 0 || strstr(list, me);
        bpf_program__set_autoload(p, on);
        if (on && m->count < MAX_PROGS)
            m->progs[m->count++] = p;
    }
    if (bpf_object__load(m->obj))
        return -1;
    __u32 zero = 0;
    struct bpf_map *map = bpf_object__find_map_by_name(m->obj, "jg_config");
    if (map) {
        struct jg_config c = {.build_cgroup_id = cgroup_id, .build_level = level,
                              .page_shift = __builtin_ctzl(sysconf(_SC_PAGESIZE)), .min_stall_ns = 1000000};
        bpf_map_update_elem(bpf_map__fd(map), &zero, &c, BPF_ANY);
    }
    map = bpf_object__find_map_by_name(m->obj, "jg_cgroup");
    if (map)
        bpf_map_update_elem(bpf_map__fd(map), &zero, &cgroup_fd, BPF_ANY);
    map = bpf_object__find_map_by_name(m->obj, "jg_events");
    if (map)
        m->events = ring_buffer__new(bpf_map__fd(map), ignore, NULL, NULL);
    return 0;
}

static void join(const char *dir)
{
    if (strcmp(dir, "-") == 0)
        return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY);
    if (fd < 0 || dprintf(fd, "%d\n", getpid()) < 0)
        _exit(126);
    close(fd);
}

int main(int argc, char **argv)
{
    int sep = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            sep = i;
            break;
        }
    if (argc < 7 || sep < 6 || sep == argc - 1) {
        fprintf(stderr, "usage: bpf-ab V2DIR LEVEL MEMDIR REPS MODE... -- CMD...\n");
        return 2;
    }
    libbpf_set_print(quiet);
    const char *v2 = argv[1], *memdir = argv[3];
    unsigned level = atoi(argv[2]);
    int reps = atoi(argv[4]);
    struct stat st;
    int cgroup_fd = open(v2, O_RDONLY | O_DIRECTORY);
    if (cgroup_fd < 0 || fstat(cgroup_fd, &st)) {
        perror(v2);
        return 1;
    }

    struct mode modes[MAX_MODES] = {0};
    int n = 0;
    for (int i = 5; i < sep && n < MAX_MODES; i++, n++) {
        char *eq = strchr(argv[i], '=');
        modes[n].name = argv[i];
        if (!eq)
            continue;
        *eq = 0;
        if (load(&modes[n], eq + 1, st.st_ino, cgroup_fd, level)) {
            fprintf(stderr, "bpf-ab: cannot load mode %s\n", modes[n].name);
            return 1;
        }
    }
    char **cmd = argv + sep + 1;
    struct bpf_link *links[MAX_PROGS];
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < n; k++) {
            struct mode *m = &modes[(k + r) % n];
            for (int i = 0; i < m->count; i++)
                links[i] = bpf_program__attach(m->progs[i]);
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            pid_t child = fork();
            if (child == 0) {
                join(v2);
                join(memdir);
                int null = open("/dev/null", O_WRONLY);
                dup2(null, 1);
                execvp(cmd[0], cmd);
                _exit(127);
            }
            int status;
            struct rusage ru;
            wait4(child, &status, 0, &ru);
            clock_gettime(CLOCK_MONOTONIC, &b);
            for (int i = 0; i < m->count; i++)
                if (links[i])
                    bpf_link__destroy(links[i]);
            if (m->events)
                ring_buffer__consume(m->events);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "bpf-ab: the workload failed (status %d)\n", status);
                return 1;
            }
            long cpu = ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000L +
                       ru.ru_stime.tv_usec;
            long wall = ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec)) / 1000;
            printf("%s %ld %ld\n", m->name, cpu, wall);
            fflush(stdout);
        }
    }
    return 0;
}
