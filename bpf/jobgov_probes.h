/* The one interface between jobgov's BPF programs (bpf/jobgov.bpf.c) and Swift (module CJobgovBPF → BPFProbes).
 * Event records, map value layouts, enums and constants live here only, so the two sides cannot drift.
 * Compiled twice: by clang -target bpf (where __bpf__ is defined and kernel_types.h provides __u32 & co.) and by
 * Swift's C importer (where <linux/types.h> does). Kernel-only parts sit under #ifdef __bpf__. */
#ifndef JOBGOV_PROBES_H
#define JOBGOV_PROBES_H

#ifndef __bpf__
#include <linux/types.h>
#endif

enum jg_limits {
    JG_COMM_LEN = 16,
    /* The command line captured at exec: argv, NUL-separated, truncated to this many bytes. */
    JG_ARGS_LEN = 256,
    /* log2 histogram slots: slot i counts values in [2^i, 2^(i+1)) of the histogram's unit; slot 0 also holds 0. */
    JG_HIST_SLOTS = 32,
    JG_RINGBUF_BYTES = 1 << 20,
    /* Routine records wake the reader only once this much waits (gate and OOM records always do). */
    JG_RINGBUF_WAKE_BYTES = 1 << 17,
    JG_MAX_PROCS = 16384,
};

/* What a ring buffer record is; the first field of every record. */
enum jg_event_kind {
    JG_EV_FORK = 1,     /* pid = parent tgid, aux = child pid */
    JG_EV_EXEC = 2,     /* pid, ppid, comm, args[args_len] */
    JG_EV_EXIT = 3,     /* pid, aux = exit_code (wait status: code << 8 | signal), value = peak RSS bytes */
    JG_EV_OOM = 4,      /* pid = victim, comm, value = victim's cgroup v2 id (0 if unknown), aux = 1 if in build */
    JG_EV_STALL = 5,    /* pid, aux = enum jg_stall_kind, value = nanoseconds */
    JG_EV_GATE = 6,     /* pid stopped by the exec gate, comm, aux = its job (the pid of the job's root) */
    NR_JG_EV
};

enum jg_stall_kind {
    JG_STALL_DIRECT = 0, /* vmscan:mm_vmscan_direct_reclaim_begin/end: the machine is short of memory */
    JG_STALL_MEMCG = 1,  /* vmscan:mm_vmscan_memcg_reclaim_begin/end: a cgroup at its limit (or memory.high) */
    NR_JG_STALL
};

enum jg_histogram {
    JG_HIST_BLOCK_IO = 0, /* block_rq_issue → block_rq_complete, microseconds, whole machine */
    JG_HIST_RUNQ = 1,     /* sched_wakeup → sched_switch (and preempted → switched in), microseconds, build only */
    NR_JG_HIST
};

enum jg_counter {
    JG_CNT_DROPPED = 0,  /* ring buffer full: records lost */
    JG_CNT_STALL_DIRECT_NS = 1,
    JG_CNT_STALL_MEMCG_NS = 2,
    JG_CNT_GATE_STOPS = 3,  /* processes the exec gate stopped */
    JG_CNT_GATE_GONE = 4,   /* of those, ended before user space let them go */
    JG_CNT_GATE_ADMITS = 5, /* jobs the kernel admitted by itself */
    JG_CNT_GATE_ENDS = 6,   /* admitted jobs that ended, whoever admitted them */
    NR_JG_CNT
};

/* One ring buffer record. Records other than JG_EV_EXEC end at `args` (JG_EVENT_SHORT bytes). */
struct jg_event {
    __u32 kind;
    __u32 pid;
    __u32 ppid;
    __u32 aux;
    __u64 time_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
    __u64 value;
    char comm[JG_COMM_LEN];
    __u32 args_len;
    __u32 reserved;
    char args[JG_ARGS_LEN];
};
#define JG_EVENT_SHORT (__builtin_offsetof(struct jg_event, args))

/* Settings fixed for the programs' life: the read-only global jg_load (`const volatile`, in .rodata), which Swift
 * writes into the opened object before it is loaded; the verifier then knows them as constants. */
struct jg_load_settings {
    __u64 build_cgroup_id; /* cgroup v2 id (inode number) of the build's cgroup */
    __u32 build_level;     /* its depth below the v2 root (root = 0) */
    __u32 page_shift;      /* log2 of the page size (rss counters are in pages) */
};

/* The single entry of map jg_config: switches user space turns while the programs run. Swift writes it whole. */
struct jg_config {
    __u64 min_stall_ns;    /* reclaim stalls shorter than this are only summed, not reported one by one */
    __u32 gate_on;         /* 1: the exec gate admits the build tool's new jobs (see jg_exec) */
    __u32 gate_supervisor; /* jobgov's tgid: its child in the build is the build tool, whose children are jobs */
    __u32 gate_tool;       /* the build tool's tgid (0 until known: then whichever child of jobgov's) */
    __u32 reserved;
    __s64 gate_credit;     /* the kernel admits a job while JG_CNT_GATE_ADMITS - JG_CNT_GATE_ENDS stays below this */
    __u64 gate_resumed;    /* processes the gate stopped that user space let go (the rest are still held) */
};

/* Value of map jg_gated (key: the tgid of a process the exec gate stopped). */
struct jg_gated {
    __u64 since;           /* when it stopped (bpf_ktime_get_ns) */
    __u32 job;             /* its job: the tgid of the build tool's child it descends from (or is) */
    __u32 reserved;
};

/* Per process (tgid) in map jg_procs: memory and reclaim stall. Bytes and nanoseconds. */
struct jg_proc {
    __u64 rss_file;
    __u64 rss_anon;
    __u64 rss_shmem;
    __u64 rss_peak;
    __u64 stall_ns[NR_JG_STALL];
    __u32 exited; /* the process ended; the entry stays until user space reads it */
    __u32 epoch;  /* programs it executed: a per-CPU cache of an earlier one no longer writes here */
    __u64 mm;     /* which address space the rss values belong to (kernel pointer, an identity only) */
    __u64 owner;  /* ticket of the per-CPU cache that took the process over last: only it writes current values */
};

#endif
