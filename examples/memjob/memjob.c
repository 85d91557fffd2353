/*
 * memjob: a fake compiler job for testing and benchmarking jobgov.
 *
 * It behaves over time the way a compiler or linker does: its resident memory grows (every page is really
 * touched, so the kernel charges it) linearly up to a peak over the ramp time while it burns some CPU and
 * sleeps some of the time, stays at the peak for the hold time, frees everything and writes its output file.
 * make or ninja see a real dependency: the inputs must exist and the output is written at the end.
 *
 *   cc -O2 -o memjob memjob.c
 *   memjob --name foo.o --peak 60 --ramp 1.5 --hold 0.3 --cpu 0.2 --out foo.o foo.c
 *
 * Timeline (without CPU contention): the run is cut into steps of 10 ms of ramp+hold time. Each step
 * allocates its share of the memory, does its share of --cpu (busy work measured in this process's CPU time,
 * so a busy machine stretches the job, as it does a real compiler) and of --wait (sleep, like waiting for
 * I/O), then sleeps for whatever is left of the step. So a job lasts about max(ramp + hold, cpu + wait)
 * seconds on an idle machine, and longer when it has to share a CPU.
 *
 * Peak resident memory is --peak MiB (1 MiB = 1048576 bytes), within about 1%: the memory the process already
 * uses at start (libc, stack) is read from /proc/self/statm where that exists and subtracted.
 *
 * Portable C99 plus POSIX (clock_gettime, nanosleep). No dependencies.
 * Exit status: 0 success, 1 runtime error (missing input, out of memory, cannot write the output), 2 usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)
#define STEP_SECONDS 0.010

static const char *prog = "memjob";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s --name NAME --peak MB [--ramp S] [--hold S] [--cpu S] [--wait S] [--out FILE]\n"
            "              [--chunk KB] [--verbose] [INPUT...]\n"
            "\n"
            "A fake compiler job: grows its resident memory linearly to --peak MiB over --ramp seconds,\n"
            "touching every page, while doing --cpu seconds of busy work and sleeping --wait seconds (both\n"
            "spread evenly over the run), holds the peak for --hold seconds, frees it all, then writes FILE.\n"
            "\n"
            "  --name NAME   job name, used in messages and written into FILE (required)\n"
            "  --peak MB     peak resident memory in MiB, may be fractional; 0 allocates nothing (required)\n"
            "  --ramp S      seconds to grow to the peak (default 1)\n"
            "  --hold S      seconds to stay at the peak (default 0.2)\n"
            "  --cpu S       total seconds of CPU work, spread over ramp and hold (default 0)\n"
            "  --wait S      total seconds of extra sleep, spread the same way (default 0)\n"
            "  --out FILE    output file written at the end (default: none)\n"
            "  --chunk KB    allocation unit in KiB (default 1024)\n"
            "  --verbose     print the job's timeline to stderr\n"
            "  INPUT...      files that must exist (read and checksummed, as a compiler reads its sources)\n"
            "\n"
            "Without CPU contention the job lasts about max(ramp + hold, cpu + wait) seconds.\n"
            "Exit status: 0 success, 1 runtime error, 2 usage error.\n",
            prog);
}

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    exit(2);
}

static double parse_seconds(const char *opt, const char *s)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0) || v > 1e6) {
        fprintf(stderr, "%s: %s needs a non-negative number, not '%s'\nTry '%s --help'.\n", prog, opt, s, prog);
        exit(2);
    }
    return v;
}

static double now(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_for(double s)
{
    struct timespec ts;
    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Busy work until this process has used `s` more seconds of CPU. */
static volatile unsigned long long sink;
static void burn(double s)
{
    double until;
    unsigned long long x = sink | 1;
    int i;
    if (s <= 0)
        return;
    until = now(CLOCK_PROCESS_CPUTIME_ID) + s;
    do {
        for (i = 0; i < 20000; i++) { /* xorshift64: real work the compiler cannot remove */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    } while (now(CLOCK_PROCESS_CPUTIME_ID) < until);
    sink = x;
}

/* Resident bytes right now, from /proc/self/statm (Linux); 0 where that does not exist. */
static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)(page > 0 ? page : 4096);
}

int main(int argc, char **argv)
{
    const char *name = NULL, *out = NULL;
    double peak = -1, ramp = 1.0, hold = 0.2, cpu = 0, wait = 0, chunk_kib = 1024;
    int verbose = 0, i, ninputs = 0;
    char **inputs;
    long page;
    size_t chunk, nchunks_max, nchunks = 0;
    char **chunks;
    double target_bytes, total, steps, start, cpu_start, allocated = 0;
    unsigned long long checksum = 1469598103934665603ULL;
    long step, nsteps;

    if (argc > 0 && argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    inputs = calloc((size_t)argc + 1, sizeof *inputs);
    if (!inputs) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            verbose = 1;
        } else if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++)
                inputs[ninputs++] = argv[i];
        } else if (strcmp(a, "--name") == 0 || strcmp(a, "--peak") == 0 || strcmp(a, "--ramp") == 0 ||
                   strcmp(a, "--hold") == 0 || strcmp(a, "--cpu") == 0 || strcmp(a, "--wait") == 0 ||
                   strcmp(a, "--out") == 0 || strcmp(a, "--chunk") == 0) {
            const char *v;
            if (!has_value)
                die_usage("option %s needs a value", a);
            v = argv[++i];
            if (strcmp(a, "--name") == 0)
                name = v;
            else if (strcmp(a, "--out") == 0)
                out = v;
            else if (strcmp(a, "--peak") == 0)
                peak = parse_seconds(a, v);
            else if (strcmp(a, "--ramp") == 0)
                ramp = parse_seconds(a, v);
            else if (strcmp(a, "--hold") == 0)
                hold = parse_seconds(a, v);
            else if (strcmp(a, "--cpu") == 0)
                cpu = parse_seconds(a, v);
            else if (strcmp(a, "--wait") == 0)
                wait = parse_seconds(a, v);
            else
                chunk_kib = parse_seconds(a, v);
        } else if (a[0] == '-' && a[1] != '\0') {
            die_usage("unknown option %s", a);
        } else {
            inputs[ninputs++] = argv[i];
        }
    }
    if (!name || !*name)
        die_usage("%s", "--name NAME is required");
    if (peak < 0)
        die_usage("%s", "--peak MB is required");
    if (peak > 1024.0 * 1024.0)
        die_usage("%s", "--peak is in MiB and must be at most 1048576");
    if (chunk_kib < 4 || chunk_kib > 1024 * 1024)
        die_usage("%s", "--chunk must be between 4 and 1048576 KiB");

    /* Read every input, as a compiler reads its sources; a missing one is an error, as it is for cc. */
    for (i = 0; i < ninputs; i++) {
        FILE *f = fopen(inputs[i], "rb");
        char buf[65536];
        size_t n, k;
        if (!f) {
            fprintf(stderr, "%s: %s: input %s: %s\n", prog, name, inputs[i], strerror(errno));
            return 1;
        }
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            for (k = 0; k < n; k++)
                checksum = (checksum ^ (unsigned char)buf[k]) * 1099511628211ULL;
        fclose(f);
    }

    page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    chunk = (size_t)(chunk_kib * 1024.0);
    chunk = (chunk + (size_t)page - 1) / (size_t)page * (size_t)page;
    /* Count what is resident already (libc, stack, the read buffer) against the peak. */
    target_bytes = peak * MIB - resident_bytes();
    if (target_bytes < 0)
        target_bytes = 0;
    nchunks_max = (size_t)(target_bytes / (double)chunk) + 2;
    chunks = calloc(nchunks_max, sizeof *chunks);
    if (!chunks) {
        fprintf(stderr, "%s: %s: out of memory\n", prog, name);
        return 1;
    }

    total = ramp + hold;
    steps = total / STEP_SECONDS;
    nsteps = (long)(steps + 0.5);
    if (nsteps < 1)
        nsteps = 1;
    start = now(CLOCK_MONOTONIC);
    cpu_start = now(CLOCK_PROCESS_CPUTIME_ID);
    if (verbose)
        fprintf(stderr, "%s: %s: peak %.1f MiB, ramp %.2f s, hold %.2f s, cpu %.2f s, wait %.2f s, %ld steps\n",
                prog, name, peak, ramp, hold, cpu, wait, nsteps);

    for (step = 0; step < nsteps; step++) {
        double t_end = (double)(step + 1) * total / (double)nsteps; /* this step's end, in ramp+hold time */
        double due = ramp > 0 ? (t_end >= ramp ? 1.0 : t_end / ramp) : 1.0;
        double step_start = now(CLOCK_MONOTONIC), used;
        double want = due * target_bytes;
        /* Allocate whole chunks while we are behind; the last chunk may be partial so the peak is exact. */
        while (allocated + 1 < want && nchunks < nchunks_max) {
            size_t n = chunk, off;
            char *p;
            if (want - allocated < (double)chunk) {
                if (due < 1.0)
                    break; /* wait until a whole chunk is due */
                n = (size_t)(want - allocated);
                n = (n + (size_t)page - 1) / (size_t)page * (size_t)page;
            }
            p = malloc(n);
            if (!p) {
                fprintf(stderr, "%s: %s: cannot allocate memory at %.1f MiB\n", prog, name, allocated / MIB);
                return 1;
            }
            for (off = 0; off < n; off += (size_t)page) /* touch every page so it becomes resident */
                p[off] = (char)(off / (size_t)page + 1);
            p[n - 1] = 1;
            chunks[nchunks++] = p;
            allocated += (double)n;
        }
        burn(cpu / (double)nsteps);
        sleep_for(wait / (double)nsteps);
        used = now(CLOCK_MONOTONIC) - step_start;
        if (total > 0) {
            /* Keep to the schedule of ramp + hold, but never try to catch up lost time: a job slowed by a busy
             * CPU just ends later, like a real compiler. */
            double pad = total / (double)nsteps - used;
            if (pad > 0)
                sleep_for(pad);
        }
    }
    if (verbose)
        fprintf(stderr, "%s: %s: reached %.1f MiB allocated (+%.1f MiB at start) after %.2f s, cpu %.2f s\n", prog,
                name, allocated / MIB, peak - target_bytes / MIB, now(CLOCK_MONOTONIC) - start,
                now(CLOCK_PROCESS_CPUTIME_ID) - cpu_start);

    /* Touch a byte of each chunk so none of it is dead code, then free all of it. */
    while (nchunks > 0) {
        char *p = chunks[--nchunks];
        checksum = (checksum ^ (unsigned char)p[0]) * 1099511628211ULL;
        free(p);
    }
    free(chunks);

    if (out) {
        FILE *f = fopen(out, "w");
        if (!f) {
            fprintf(stderr, "%s: %s: cannot write %s: %s\n", prog, name, out, strerror(errno));
            return 1;
        }
        fprintf(f, "memjob %s peak=%g ramp=%g hold=%g cpu=%g wait=%g inputs=%d checksum=%016llx\n", name, peak,
                ramp, hold, cpu, wait, ninputs, checksum);
        for (i = 0; i < ninputs; i++)
            fprintf(f, "input %s\n", inputs[i]);
        if (fclose(f) != 0) {
            fprintf(stderr, "%s: %s: cannot write %s: %s\n", prog, name, out, strerror(errno));
            return 1;
        }
    }
    if (verbose)
        fprintf(stderr, "%s: %s: done after %.2f s\n", prog, name, now(CLOCK_MONOTONIC) - start);
    free(inputs);
    return 0;
}
