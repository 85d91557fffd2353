/*
 * memjob: a fake compiler job for testing and benchmarking jobgov.
 *
 * It behaves over time the way a compiler or linker does: its resident memory grows (every page is really
 * touched, so the kernel charges it) up to a peak while it burns some CPU and sleeps some of the time, frees
 * everything at the end and writes its output file. make or ninja see a real dependency: the inputs must exist
 * and the output is written at the end.
 *
 *   cc -O2 -o memjob memjob.c
 *   memjob --name foo.o --peak 60 --ramp 1.5 --hold 0.3 --cpu 0.2 --out foo.o foo.c
 *   memjob --name big.o --peak 400 --ramp 8 --hold 0 --shape early --out big.o big.c
 *
 * Memory over the run (--shape; T = ramp + hold is the job's length, t the time since it started, f the share
 * of the peak it holds at t; every shape only grows, and all memory is freed at the end):
 *
 *   linear   (default) f = t / ramp up to the peak at t = ramp, then the peak for the hold time.
 *   early    concave over the ramp, like a g++ -O2 compile of template-heavy C++: with u = t / ramp, f is
 *            piecewise linear through (u, f) = (0, 0), (0.15, 0.50), (0.60, 0.90), (1, 1), then the peak for
 *            the hold time. With --hold 0 that is 50% of the peak at 15% of the run and 90% at 60%. (Measured
 *            on a g++ 12 compile of 706 MiB: 50% at 16% of its run, 90% at 81%.)
 *   plateau  like a linker that maps its inputs first: rises linearly to the peak over the first 15% of T and
 *            holds it to the end (f = min(1, t / (0.15 T))). --ramp and --hold only set T.
 *   spike    a late heavy function: rises linearly to 28% of the peak over the first 10% of T, stays there
 *            until 85% of T, rises linearly to the peak at 95% of T and holds it for the last 5%. --ramp and
 *            --hold only set T.
 *   steps    three equal plateaus: 30% of the peak from the start, 60% from T/3, 100% from 2T/3 to the end;
 *            each rise as fast as the pages can be touched. --ramp and --hold only set T.
 *
 * Timeline (without CPU contention): the run is cut into steps of 10 ms of ramp+hold time. Each step
 * allocates what the shape says is due by its end, does its share of --cpu (busy work measured in this
 * process's CPU time, so a busy machine stretches the job, as it does a real compiler; the CPU time spent
 * filling pages counts towards it) and of --wait (sleep, like waiting for I/O), then sleeps for whatever is
 * left of the step. So a job lasts about max(ramp + hold, cpu + wait) seconds on an idle machine, and longer
 * when it has to share a CPU.
 *
 * Page contents (--fill): every page is filled with data shaped like a compiler's heap, so that compressed
 * swap (zram, zswap) sees realistic pages rather than pages of zeros. The page is cut into 64-byte records
 * like IR nodes: a small kind and flags word, one to three pointer-like words (the address of a nearby record
 * of the same allocation, or NULL), a small integer, and in one record of eight a random 64-bit word (a hash);
 * the rest zeros. A fast xorshift64 generator, seeded from the job's name, picks them. Per 4 KiB page (the unit
 * zram compresses) this compresses about 3.0x with lz4 and 3.35x with lzo1x-1 (a real cc1plus heap sampled
 * here: 3.9x and 4.2x); filling costs about 0.3 s of CPU per GiB, on top of the page faults. --fill touch
 * writes one byte per page instead (pages of almost nothing but zeros, as memjob did before).
 *
 * Peak resident memory is --peak MiB (1 MiB = 1048576 bytes), within about 1%: the memory the process already
 * uses at start (libc, stack) is read from /proc/self/statm where that exists and subtracted.
 *
 * Portable C99 plus POSIX (clock_gettime, nanosleep). No dependencies.
 * Exit status: 0 success, 1 runtime error (missing input, out of memory, cannot write the output), 2 usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)
#define STEP_SECONDS 0.010

static const char *prog = "memjob";

enum shape { SHAPE_LINEAR, SHAPE_EARLY, SHAPE_PLATEAU, SHAPE_SPIKE, SHAPE_STEPS };
static const char *const shape_names[] = {"linear", "early", "plateau", "spike", "steps"};
#define NSHAPES (sizeof shape_names / sizeof shape_names[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s --name NAME --peak MB [--ramp S] [--hold S] [--shape NAME] [--cpu S] [--wait S]\n"
            "              [--out FILE] [--chunk KB] [--fill data|touch] [--verbose] [INPUT...]\n"
            "\n"
            "A fake compiler job: grows its resident memory to --peak MiB (linearly over --ramp seconds by\n"
            "default), touching every page, while doing --cpu seconds of busy work and sleeping --wait seconds\n"
            "(both spread evenly over the run), holds the peak for --hold seconds, frees it all, then writes FILE.\n"
            "\n"
            "  --name NAME   job name, used in messages and written into FILE (required)\n"
            "  --peak MB     peak resident memory in MiB, may be fractional; 0 allocates nothing (required)\n"
            "  --ramp S      seconds to grow to the peak (default 1)\n"
            "  --hold S      seconds to stay at the peak (default 0.2)\n"
            "  --shape NAME  memory over the run (default linear), see below\n"
            "  --cpu S       total seconds of CPU work, spread over ramp and hold (default 0); the CPU time\n"
            "                spent filling pages counts towards it\n"
            "  --wait S      total seconds of extra sleep, spread the same way (default 0)\n"
            "  --out FILE    output file written at the end (default: none)\n"
            "  --chunk KB    allocation unit in KiB (default 1024)\n"
            "  --fill data   fill every page with compiler-heap-like data: 64-byte records of small integers,\n"
            "                pointer-like words (or NULL), zeros and one random word in eight records; about\n"
            "                3x compressible per page with lz4 (default). 'touch' writes one byte per page.\n"
            "  --verbose     print the job's timeline to stderr\n"
            "  INPUT...      files that must exist (read and checksummed, as a compiler reads its sources)\n"
            "\n"
            "Shapes (T = ramp + hold, t = time since start, f = share of the peak held; memory only grows and\n"
            "is all freed at the end):\n"
            "  linear   f = t/ramp up to the peak at t = ramp, then the peak for --hold.\n"
            "  early    concave over the ramp, like a g++ -O2 compile: with u = t/ramp, f is piecewise linear\n"
            "           through (u,f) = (0,0) (0.15,0.5) (0.6,0.9) (1,1), then the peak for --hold. With\n"
            "           --hold 0: 50%% of the peak at 15%% of the run, 90%% at 60%%.\n"
            "  plateau  a linker mapping its inputs: linear to the peak over the first 15%% of T, then the peak\n"
            "           to the end.\n"
            "  spike    a late heavy function: linear to 28%% over the first 10%% of T, 28%% until 85%% of T,\n"
            "           linear to the peak at 95%% of T, the peak for the last 5%%.\n"
            "  steps    three equal plateaus: 30%% from the start, 60%% from T/3, 100%% from 2T/3 to the end.\n"
            "  plateau, spike and steps use --ramp and --hold only for the length T.\n"
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

/* Busy work until this process's CPU clock reaches `until` (allocation and filling count towards it). */
static volatile unsigned long long sink;
static void burn_until(double until)
{
    unsigned long long x = sink | 1;
    int i;
    if (now(CLOCK_PROCESS_CPUTIME_ID) >= until)
        return;
    do {
        for (i = 0; i < 20000; i++) { /* xorshift64: real work the compiler cannot remove */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    } while (now(CLOCK_PROCESS_CPUTIME_ID) < until);
    sink = x;
}

/* Share of the peak due at time t of a run of ramp + hold seconds (see the header comment). */
static double shape_due(int shape, double t, double ramp, double hold)
{
    double total = ramp + hold, s = total > 0 ? t / total : 1.0, u = ramp > 0 ? t / ramp : 1.0;
    if (s > 1.0)
        s = 1.0;
    switch (shape) {
    case SHAPE_EARLY:
        if (u >= 1.0)
            return 1.0;
        if (u < 0.15)
            return 0.5 * u / 0.15;
        if (u < 0.60)
            return 0.5 + 0.4 * (u - 0.15) / 0.45;
        return 0.9 + 0.1 * (u - 0.60) / 0.40;
    case SHAPE_PLATEAU:
        return s >= 0.15 ? 1.0 : s / 0.15;
    case SHAPE_SPIKE:
        if (s < 0.10)
            return 0.28 * s / 0.10;
        if (s < 0.85)
            return 0.28;
        if (s < 0.95)
            return 0.28 + 0.72 * (s - 0.85) / 0.10;
        return 1.0;
    case SHAPE_STEPS:
        /* s is a fraction of ramp + hold; the last step's end may round to just below 1. */
        return s >= 2.0 / 3.0 - 1e-9 ? 1.0 : s >= 1.0 / 3.0 - 1e-9 ? 0.6 : 0.3;
    default:
        return u >= 1.0 ? 1.0 : u;
    }
}

/* Page contents shaped like a compiler's heap: 64-byte records (IR nodes) of a small kind and flags word,
 * pointer-like words into the same allocation (or NULL), a small integer, a random word in one record of eight,
 * zeros. About 3x compressible per 4 KiB page with lz4, 3.35x with lzo1x-1. xorshift64: a few ns per record. */
static uint64_t fill_state = 88172645463325252ULL;
static void fill_data(char *p, size_t n)
{
    uint64_t base = (uint64_t)(uintptr_t)p, x = fill_state;
    size_t off;
    for (off = 0; off + 64 <= n; off += 64) {
        uint64_t w[8], r;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r = x;
        w[0] = (r & 0x3f) | ((r >> 6) & 0x3) << 16;
        w[1] = base + ((r >> 8) & 0xfff) * 64;
        w[2] = (r >> 20) & 1 ? base + ((r >> 21) & 0xfff) * 64 : 0;
        w[3] = (r >> 33) & 0x3ff;
        if (((r >> 43) & 7) == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w[4] = x;
        } else {
            w[4] = 0;
        }
        w[5] = (r >> 50) & 3 ? 0 : base + ((r >> 52) & 0xfff) * 64;
        w[6] = 0;
        w[7] = 0;
        memcpy(p + off, w, sizeof w);
    }
    fill_state = x;
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
    int verbose = 0, i, ninputs = 0, shape = SHAPE_LINEAR, fill = 1;
    char **inputs;
    long page;
    size_t chunk, nchunks_max, nchunks = 0;
    char **chunks;
    double target_bytes, total, steps, start, cpu_start, allocated = 0;
    unsigned long long checksum = 1469598103934665603ULL;
    long step, nsteps;
    int reported = 0; /* tenths of the peak reported so far (--verbose) */

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
                   strcmp(a, "--out") == 0 || strcmp(a, "--chunk") == 0 || strcmp(a, "--shape") == 0 ||
                   strcmp(a, "--fill") == 0) {
            const char *v;
            if (!has_value)
                die_usage("option %s needs a value", a);
            v = argv[++i];
            if (strcmp(a, "--name") == 0)
                name = v;
            else if (strcmp(a, "--out") == 0)
                out = v;
            else if (strcmp(a, "--shape") == 0) {
                size_t k;
                for (k = 0; k < NSHAPES && strcmp(v, shape_names[k]) != 0; k++) {
                }
                if (k == NSHAPES)
                    die_usage("unknown --shape %s (linear, early, plateau, spike, steps)", v);
                shape = (int)k;
            } else if (strcmp(a, "--fill") == 0) {
                if (strcmp(v, "data") == 0)
                    fill = 1;
                else if (strcmp(v, "touch") == 0)
                    fill = 0;
                else
                    die_usage("unknown --fill %s (data, touch)", v);
            }
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
    /* A different but reproducible page filling per job. */
    {
        uint64_t h = 1469598103934665603ULL;
        const char *c;
        for (c = name; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        fill_state = h ? h : 1;
    }
    start = now(CLOCK_MONOTONIC);
    cpu_start = now(CLOCK_PROCESS_CPUTIME_ID);
    if (verbose)
        fprintf(stderr, "%s: %s: peak %.1f MiB, shape %s, ramp %.2f s, hold %.2f s, cpu %.2f s, wait %.2f s, "
                "%ld steps, fill %s\n", prog, name, peak, shape_names[shape], ramp, hold, cpu, wait, nsteps,
                fill ? "data" : "touch");

    for (step = 0; step < nsteps; step++) {
        double t_end = (double)(step + 1) * total / (double)nsteps; /* this step's end, in ramp+hold time */
        double due = step == nsteps - 1 ? 1.0 : shape_due(shape, t_end, ramp, hold);
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
            if (fill) { /* write every page, so it becomes resident and holds heap-like data */
                fill_data(p, n);
            } else {
                for (off = 0; off < n; off += (size_t)page) /* touch every page so it becomes resident */
                    p[off] = (char)(off / (size_t)page + 1);
                p[n - 1] = 1;
            }
            chunks[nchunks++] = p;
            allocated += (double)n;
        }
        if (verbose && target_bytes > 0 && allocated / target_bytes >= (double)(reported + 1) / 10.0) {
            while (allocated / target_bytes >= (double)(reported + 1) / 10.0 - 1e-9 && reported < 10)
                reported++;
            fprintf(stderr, "%s: %s: %3d%% of the peak (%.1f MiB) at %.2f s, step %ld of %ld\n", prog, name,
                    reported * 10, allocated / MIB, now(CLOCK_MONOTONIC) - start, step + 1, nsteps);
        }
        if (cpu > 0)
            burn_until(cpu_start + cpu * (double)(step + 1) / (double)nsteps);
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
        if (shape == SHAPE_LINEAR)
            fprintf(f, "memjob %s peak=%g ramp=%g hold=%g cpu=%g wait=%g inputs=%d checksum=%016llx\n", name, peak,
                    ramp, hold, cpu, wait, ninputs, checksum);
        else
            fprintf(f, "memjob %s peak=%g ramp=%g hold=%g shape=%s cpu=%g wait=%g inputs=%d checksum=%016llx\n",
                    name, peak, ramp, hold, shape_names[shape], cpu, wait, ninputs, checksum);
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
